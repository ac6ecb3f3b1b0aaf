// Writes stream entries to Redis: pipelined XADDs with explicit IDs, grouped in MULTI/EXEC chunks,
// with at most one chunk in flight. Knows nothing of PostgreSQL beyond the LSN it acknowledges.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "change_writer.h"
#include "ledger.h"
#include "redis_client.h"
#include "redis_error.h"
#include "redis_url.h"
#include "reply_nodes.h"
#include "resp_buffer.h"
#include "stream_id.h"


namespace walstream {

// Why chunks: a chunk is applied by Redis as one MULTI/EXEC, all or nothing when Redis refuses a
// write (OOM, READONLY, NOAUTH are checked while queueing), and the next chunk is sent only after
// the previous one's EXEC succeeded. So the entries in Redis are always a prefix of what was sent,
// and the per-stream high-water mark read at the next start is a sound replay filter.
class StreamWriter final : public ChangeWriter {
 public:
  struct Options {
    RedisUrl url;
    std::optional<std::uint64_t> maxlen;  // XADD MAXLEN ~ N
    std::string checkpoint_key;           // hash written in every chunk that completes a transaction
    bool cluster_node = false;            // url is a cluster master (ClusterWriter's writers)
    int wait_replicas = 0;                // --redis-wait: WAIT for this many replicas before a position counts
    std::chrono::milliseconds wait_timeout{1000};
    std::size_t chunk_bytes = 1 << 20;    // a chunk closes once its commands reach this size…
    std::size_t chunk_commands = 4096;    // …or this many commands
    // Called with the seconds from sending a chunk to Redis's EXEC answer, for each chunk stored.
    std::function<void(double)> chunk_stored;
  };

  // Connects, authenticates, selects the database and checks the server answers. Throws RedisError.
  explicit StreamWriter(Options options);
  ~StreamWriter() override;
  StreamWriter(const StreamWriter&) = delete;
  StreamWriter& operator=(const StreamWriter&) = delete;

  int fd() const;
  // The node this writer writes to, and how messages name it ("master 'm' at h:p/0" through sentinels).
  const RedisEndpoint& node() const { return node_; }
  std::string display() const override { return socket_->display(); }
  RedisEndpoint master() const override { return node_; }
  void poll_fds(std::vector<pollfd>& fds) const override;
  void on_poll(const pollfd* fds, std::size_t n) override;
  void service() override { on_io(true, true); }
  bool wants_write() const;
  bool wants_read() const;
  // --redis-wait: a stored checkpoint still waits for enough replicas.
  bool waits_pending() const override { return waits_queued_ > 0; }
  // Moves bytes in both directions as far as the socket allows and handles every complete reply.
  void on_io(bool readable, bool writable);

  // PostgreSQL's WAL position (IDENTIFY_SYSTEM, then every WAL end received): no stream last ID
  // walstream wrote can be above it.
  void raise_wal_limit(std::uint64_t lsn) override { ledger_.raise_wal_limit(lsn); }

  // Streams, by key. A stream's high-water mark (its last ID in Redis) must be known before the
  // first entry is added to it in this connection: request it, then wait until it is known.
  Handle stream(std::string_view key) override;
  bool hwm_known(Handle h) const override { return ledger_.hwm_known(h); }
  const std::string& key(Handle h) const override { return streams_[h].key; }
  void request_hwm(Handle h) override;

  // A transaction begins: its commands are kept together in one chunk when they fit.
  void begin_transaction() override;
  // Appends to the chunk being built (nothing is sent yet). Returns false, appending nothing, when
  // the ID is not above the stream's high-water mark: the entry is already stored (a replay).
  bool add_entry(Handle h, StreamId id, Fields fields) override;
  void add_hset(std::string_view key, std::string_view field, std::string_view value) override;
  // Every entry of the transaction ending at end_lsn has been added.
  void mark_commit(std::uint64_t end_lsn) override;
  // A position with nothing to write (a keepalive's WAL end while idle); confirmed once a checkpoint
  // holds it.
  void mark_idle(std::uint64_t lsn) override { ledger_.advance(lsn); }
  // A graceful stop inside a transaction: its part not yet sent is dropped, so subscribers never see
  // half of a transaction that fits in a chunk; PostgreSQL resends it at the next start.
  void drop_open_transaction() override;

  bool chunk_empty() const override { return ledger_.building_commands() == 0; }
  bool chunk_full() const override;
  // A chunk waits for Redis's answer, or (fenced) for the epoch check the next chunk needs.
  bool in_flight() const override { return ledger_.in_flight() || fence_pending_; }
  // From now on every chunk is applied only while `key` still holds `epoch` (WATCH + GET before each
  // MULTI): an instance that lost the slot while paused can never land a chunk after its successor
  // took over. Throws RedisError(Fenced) from on_io() when the epoch moved.
  void fence(std::string key, std::uint64_t epoch) override;
  // Nothing to send but a position that only a checkpoint-only chunk would record.
  bool checkpoint_due() const override { return ledger_.checkpoint_due(); }
  // Sends the chunk being built (cut at the open transaction's start when that keeps it whole), or
  // a checkpoint alone when due; only when nothing is in flight.
  void send_chunk() override;

  // The end LSN of the last transaction whose entries and checkpoint Redis has stored (and, with
  // --redis-wait, replicated): what may be confirmed to PostgreSQL.
  std::uint64_t acked_lsn() const override { return ledger_.acked(); }
  std::uint64_t entries_written() const override { return ledger_.entries_written(); }
  std::uint64_t replays_skipped() const override { return ledger_.replays_skipped(); }
  std::optional<Ledger::ReplayRun> take_replays(bool ended_only = false) override {
    return ledger_.take_replays(ended_only);
  }
  // The last WAIT that found too few replicas since the previous call: the count it found.
  std::optional<long long> take_wait_shortfall() override { return std::exchange(wait_shortfall_, std::nullopt); }
  // WAIT answers that found too few replicas, in this connection.
  std::uint64_t wait_shortfalls() const override { return wait_shortfalls_; }

 private:
  struct Stream {
    std::string key;
    std::string xadd_head;  // "XADD <key> [MAXLEN ~ <n>]" framed once: how every XADD to it starts
  };
  struct Expected {
    enum Kind { Hwm, Chunk, Wait, FenceWatch, FenceGet } kind;
    Handle stream = 0;
    std::uint64_t checkpoint = 0;  // Wait: the newest checkpoint written before it
  };

  // FNV-1a of an entry's `lsn` field: what tells our own entry from a foreign one with the same ID.
  static std::uint32_t fingerprint(std::string_view lsn) {
    std::uint32_t h = 2166136261u;
    for (unsigned char c : lsn) h = (h ^ c) * 16777619u;
    return h;
  }
  void connect();
  void handle_reply(Reply reply);
  void handle_hwm_reply(Handle h, Reply reply);
  void handle_chunk_reply(Reply reply);
  void finish_chunk(Reply exec_reply);
  void send_wait(std::uint64_t checkpoint);
  void send_fence_check();
  [[noreturn]] void fenced(std::string_view why);
  [[noreturn]] void conflict(const Ledger::Outcome& outcome);
  void flush_out();
  void read_in();
  [[noreturn]] void connection_lost(const char* doing, std::string_view why);

  Options options_;
  std::unique_ptr<RedisSocket> socket_;  // the writer sends, receives and parses itself
  RedisEndpoint node_;
  ReplyNodes replies_;
  Ledger ledger_;
  std::vector<Stream> streams_;
  std::unordered_map<std::string, Handle> stream_index_;
  RespBuffer building_;  // MULTI and the commands of the chunk being built
  RespBuffer spare_;
  RespBuffer out_;  // bytes for Redis not yet written to the socket, in the order replies will come
  std::size_t out_pos_ = 0;
  std::deque<Expected> expected_;
  std::vector<std::optional<std::string_view>> results_;
  std::optional<long long> wait_shortfall_;
  std::uint64_t wait_shortfalls_ = 0;
  std::size_t waits_queued_ = 0;
  std::string fence_key_, fence_epoch_;  // empty: not fenced
  bool fence_pending_ = false;           // WATCH + GET sent, GET's answer not yet seen
  std::string maxlen_text_;
  std::string wait_replicas_text_, wait_timeout_text_;
  std::size_t xadd_head_args_ = 0;  // arguments in every Stream::xadd_head
  std::chrono::steady_clock::time_point chunk_sent_at_{};
};

}  // namespace walstream
