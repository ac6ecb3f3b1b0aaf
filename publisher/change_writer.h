// What the change pipeline, the snapshot and the session write through: StreamWriter for one Redis
// (or the master behind Sentinel), ClusterWriter for a Redis Cluster (one StreamWriter per group).
// The exactly-once rules are the ledger's (ledger.h) in both; this only names the operations.
#pragma once

#include <poll.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ledger.h"
#include "redis_url.h"
#include "stream_id.h"

namespace walstream {

class ChangeWriter {
 public:
  using Handle = Ledger::Handle;
  using Fields = std::span<const std::pair<std::string_view, std::string_view>>;
  virtual ~ChangeWriter() = default;

  // The sockets to wait on (appended to `fds`), and their poll results, in the same order.
  virtual void poll_fds(std::vector<pollfd>& fds) const = 0;
  virtual void on_poll(const pollfd* fds, std::size_t n) = 0;
  // Moves bytes both ways on every socket as far as they allow (between polls, under load).
  virtual void service() = 0;
  virtual std::string display() const = 0;
  // The master written to (one Redis, Sentinel); a cluster has several and throws std::logic_error.
  virtual RedisEndpoint master() const = 0;

  virtual void raise_wal_limit(std::uint64_t lsn) = 0;
  virtual Handle stream(std::string_view key) = 0;
  virtual bool hwm_known(Handle h) const = 0;
  virtual const std::string& key(Handle h) const = 0;
  virtual void request_hwm(Handle h) = 0;
  virtual void begin_transaction() = 0;
  virtual bool add_entry(Handle h, StreamId id, Fields fields) = 0;
  virtual void add_hset(std::string_view key, std::string_view field, std::string_view value) = 0;
  virtual void mark_commit(std::uint64_t end_lsn) = 0;
  virtual void mark_idle(std::uint64_t lsn) = 0;
  virtual void drop_open_transaction() = 0;

  virtual bool chunk_empty() const = 0;
  virtual bool chunk_full() const = 0;
  virtual bool in_flight() const = 0;
  virtual bool waits_pending() const = 0;
  virtual void fence(std::string key, std::uint64_t epoch) = 0;
  virtual bool checkpoint_due() const = 0;
  virtual void send_chunk() = 0;

  virtual std::uint64_t acked_lsn() const = 0;
  virtual std::uint64_t entries_written() const = 0;
  virtual std::uint64_t replays_skipped() const = 0;
  virtual std::optional<Ledger::ReplayRun> take_replays(bool ended_only = false) = 0;
  virtual std::optional<long long> take_wait_shortfall() = 0;
  virtual std::uint64_t wait_shortfalls() const = 0;
};

}  // namespace walstream
