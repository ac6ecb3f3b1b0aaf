// Writes stream entries to Redis: pipelined XADDs with explicit IDs, grouped in MULTI/EXEC chunks,
// with at most one chunk in flight. Knows nothing of PostgreSQL beyond the LSN it acknowledges.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

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
class StreamWriter {
 public:
  struct Options {
    RedisUrl url;
    std::optional<std::uint64_t> maxlen;  // XADD MAXLEN ~ N
    std::size_t chunk_bytes = 1 << 20;    // a chunk closes once its commands reach this size…
    std::size_t chunk_commands = 4096;    // …or this many commands
  };
  using Fields = std::span<const std::pair<std::string_view, std::string_view>>;
  using Handle = std::size_t;

  // Connects, authenticates, selects the database and checks the server answers. Throws RedisError.
  explicit StreamWriter(Options options);
  ~StreamWriter();
  StreamWriter(const StreamWriter&) = delete;
  StreamWriter& operator=(const StreamWriter&) = delete;

  int fd() const;
  bool wants_write() const { return out_pos_ < out_.size(); }
  bool wants_read() const { return !expected_.empty(); }
  // Moves bytes in both directions as far as the socket allows and handles every complete reply.
  void on_io(bool readable, bool writable);

  // Streams, by key. A stream's high-water mark (its last ID in Redis) must be known before the
  // first entry is added to it in this connection: request it, then wait until it is known.
  Handle stream(std::string_view key);
  bool hwm_known(Handle h) const { return streams_[h].state == HwmState::Known; }
  void request_hwm(Handle h);

  // Appends to the chunk being built (nothing is sent yet). Returns false, appending nothing, when
  // the ID is not above the stream's high-water mark: the entry is already stored (a replay).
  bool add_entry(Handle h, StreamId id, Fields fields);
  void add_hset(std::string_view key, std::string_view field, std::string_view value);
  // Every entry of the transaction ending at end_lsn has been added.
  void mark_commit(std::uint64_t end_lsn);

  bool chunk_empty() const { return building_.commands == 0; }
  bool chunk_full() const;
  bool in_flight() const { return inflight_.has_value(); }
  // Sends the chunk being built; only when nothing is in flight.
  void send_chunk();

  // The end LSN of the last transaction whose entries Redis has all acknowledged.
  std::uint64_t acked_lsn() const { return acked_lsn_; }
  std::uint64_t entries_written() const { return entries_written_; }
  std::uint64_t replays_skipped() const { return replays_skipped_; }

 private:
  enum class HwmState { Unknown, Requested, Known };
  struct Stream {
    std::string key;
    std::string xadd_head;  // "XADD <key> [MAXLEN ~ <n>]" framed once: how every XADD to it starts
    HwmState state = HwmState::Unknown;
    StreamId hwm;
  };
  struct Command {
    Handle stream;  // npos for a registry HSET
    StreamId id;
  };
  struct Chunk {
    RespBuffer resp;
    std::size_t commands = 0;
    std::vector<Command> info;
    std::uint64_t ack_lsn = 0;
    std::size_t replies = 0;
    std::string first_error;
    bool multi_refused = false;          // MULTI itself got an error: the commands ran one by one
    bool refused_outside_multi = false;  // …and one of them was refused
    bool hole = false;                   // …and a later one was stored after it
  };
  struct Expected {
    enum Kind { Hwm, Chunk } kind;
    Handle stream = 0;
  };

  void connect();
  void handle_reply(Reply reply);
  void handle_hwm_reply(Handle h, Reply reply);
  void handle_chunk_reply(Reply reply);
  void finish_chunk(Reply exec_reply);
  void flush_out();
  void read_in();
  [[noreturn]] void connection_lost(const char* doing, std::string_view why);

  Options options_;
  RedisContextPtr ctx_;  // only for its socket: the writer sends, receives and parses itself
  ReplyNodes replies_;
  std::vector<Stream> streams_;
  std::unordered_map<std::string, Handle> stream_index_;
  Chunk building_;
  RespBuffer out_;  // bytes for Redis not yet written to the socket, in the order replies will come
  std::size_t out_pos_ = 0;
  std::optional<Chunk> inflight_;
  std::deque<Expected> expected_;
  std::uint64_t acked_lsn_ = 0;
  std::uint64_t entries_written_ = 0;
  std::uint64_t replays_skipped_ = 0;
  std::string maxlen_text_;
  std::size_t xadd_head_args_ = 0;  // arguments in every Stream::xadd_head
};

}  // namespace walstream
