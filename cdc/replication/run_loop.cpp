#include "run_loop.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "byte_reader.h"
#include "backfill.h"
#include "catalog.h"
#include "cluster_writer.h"
#include "copy_protocol.h"
#include "errors.h"
#include "log.h"
#include "metrics.h"
#include "pg_conn.h"
#include "pg_time.h"
#include "pipeline.h"
#include "redis_client.h"
#include "redis_commands.h"
#include "keys.h"
#include "retention.h"
#include "sentinel.h"
#include "snapshot.h"
#include "stop_signal.h"
#include "stream_writer.h"
#include "wal_guard.h"

namespace walstream {
namespace {

using Clock = std::chrono::steady_clock;

// SIGTERM/SIGINT came and Redis did not store what was received within --shutdown-timeout.
struct StopTimeout {};

std::int64_t now_pg_micros() {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch());
  return unix_to_pg_micros(us.count());
}

// The slot as pg_replication_slots shows it, read on one plain SQL connection (the probe) that a
// standby and the WAL guard share.
struct SlotHealth {
  bool active = false;     // a walsender holds it
  std::string wal_status;  // reserved, extended, unreserved, lost ('' when unknown)
  std::optional<long long> safe_wal_size;
  std::optional<long long> lag_bytes;  // pg_current_wal_lsn() - confirmed_flush_lsn
};

// nullopt when the slot does not exist or the probe failed (then the probe reconnects next time).
std::optional<SlotHealth> read_slot(const Config& config, std::optional<PgConnection>& probe) {
  try {
    if (!probe) probe.emplace(PgConnection::open(config.pg, false));
    auto r = probe->exec_params("SELECT active, coalesce(wal_status, ''), safe_wal_size, "
                                "(pg_current_wal_lsn() - confirmed_flush_lsn)::bigint "
                                "FROM pg_replication_slots WHERE slot_name = $1",
                                {config.slot}, PGRES_TUPLES_OK);
    if (PQntuples(r.get()) != 1) return std::nullopt;
    SlotHealth h;
    h.active = std::string_view(PQgetvalue(r.get(), 0, 0)) == "t";
    h.wal_status = PQgetvalue(r.get(), 0, 1);
    if (!PQgetisnull(r.get(), 0, 2)) h.safe_wal_size = std::stoll(PQgetvalue(r.get(), 0, 2));
    if (!PQgetisnull(r.get(), 0, 3)) h.lag_bytes = std::stoll(PQgetvalue(r.get(), 0, 3));
    return h;
  } catch (const PgError& e) {
    log::debug("reading pg_replication_slots: {}", e.what());
    probe.reset();
    return std::nullopt;
  }
}

// What every instance exports about the slot, active or standby.
void export_slot(const SlotHealth& h) {
  auto& m = metrics::registry();
  if (h.lag_bytes) m.lag_bytes.set(static_cast<double>(std::max(*h.lag_bytes, 0LL)));
  m.safe_wal_size.set(h.safe_wal_size ? static_cast<double>(*h.safe_wal_size) : std::nan(""));
  int status = -1;
  for (int i = 0; i < 4; ++i) {
    if (h.wal_status == metrics::Registry::kWalStatuses[i]) status = i;
  }
  m.wal_status.store(status);
}

// One connection pair and its replication stream. Any error ends the session; the slot's
// confirmed_flush_lsn is where the next one resumes, and Redis's high-water marks skip replays.
class Session {
 public:
  Session(const Config& config, RunState& once, std::optional<PgConnection>& probe, Retention* retention)
      : config_(config),
        once_(once),
        probe_(probe),
        guard_(config.lag_warn, config.slot),
        retention_(retention),
        writer_holder_(make_writer(config, cluster_)),
        writer_(*writer_holder_),
        catalog_(config.pg),
        repl_(PgConnection::open(config.pg, true)),
        pipeline_(catalog_, writer_, pipeline_options(config),
                  [this](const std::function<bool()>& done) { wait_until(done); }),
        backfill_(config, catalog_, writer_, [this](const std::function<bool()>& done) { wait_until(done); }) {
    pipeline_.set_backfill(&backfill_);
    if (cluster_) cluster_->set_wait_until([this](const std::function<bool()>& done) { wait_until(done); });
  }

  ~Session() {
    if (cluster_) once_.cluster_nodes = cluster_->nodes();
    log_replays();
    publish_metrics();
    auto& m = metrics::registry();
    if (m.role.load() == metrics::Role::Active) m.role.store(metrics::Role::Retrying);
    m.lag_seconds.set(0);
  }

  // Returns when stopped; throws on any failure.
  void run() {
    // publication_names is a string literal holding a list of identifiers: quote the name as an
    // identifier, then double the literal's quotes.
    std::string publications;
    for (char c : quote_ident(config_.publication)) {
      publications.push_back(c);
      if (c == '\'') publications.push_back('\'');
    }
    // Messages are asked for whatever --messages says: transactional ones take a seq even when not
    // published, so that entry IDs never depend on the flag (pipeline.cpp).
    auto start = fmt::format("START_REPLICATION SLOT {} LOGICAL 0/0 (proto_version '1', publication_names '{}', "
                             "messages 'true')",
                             quote_ident(config_.slot), publications);
    auto system = repl_.exec("IDENTIFY_SYSTEM", PGRES_TUPLES_OK);
    log::debug("PostgreSQL system {} timeline {} at {} database {}", PQgetvalue(system.get(), 0, 0),
               PQgetvalue(system.get(), 0, 1), PQgetvalue(system.get(), 0, 2), PQgetvalue(system.get(), 0, 3));
    // A walstream entry's ID is at most the commit LSN of a transaction the server has written.
    writer_.raise_wal_limit(copy::parse_lsn(PQgetvalue(system.get(), 0, 2)));
    SlotKeeper slots(config_, catalog_, writer_, [this](const std::function<bool()>& done) { wait_until(done); },
                     once_);
    auto checkpoint = slots.prepare(repl_);
    once_.adopt_slot = false;  // honoured at the first start only, never at a reconnect
    log::debug("Redis checkpoint {} for slot '{}'", copy::format_lsn(checkpoint), config_.slot);
    // Never report less than the slot already confirmed: an early keepalive may carry an older WAL end.
    flushed_ = slots.confirmed_flush();
    // On a cluster every group the slot lists must hold what PostgreSQL confirmed too.
    if (cluster_) cluster_->check_groups(flushed_);
    backfill_.resume();
    repl_.start_copy_both(start);
    streaming_ = true;
    once_.streamed = true;
    // This instance holds the slot now: a new epoch, and every chunk from here on is applied only
    // while it stands, so a predecessor that was paused (not dead) can never land a chunk after us.
    {
      const auto key = Keys{config_.prefix, config_.slot, config_.redis_cluster}.epoch();
      auto redis = connect_redis(config_.redis);
      auto epoch = static_cast<std::uint64_t>(redis->checked(key, {"INCR", key}).integer());
      writer_.fence(key, epoch);
      log::debug("slot '{}': active with epoch {}", config_.slot, epoch);
    }
    log::info("streaming from slot '{}' on {} to Redis {}", config_.slot, repl_.describe(), writer_.display());
    metrics::registry().role.store(metrics::Role::Active);
    // Every entry Redis holds below the checkpoint was committed before now.
    if (retention_) retention_->session_started(std::max(checkpoint, flushed_), now_pg_micros());
    next_status_ = Clock::now();
    next_guard_ = Clock::now();
    std::size_t since_io = 0;
    while (!stop_requested()) {
      PgBuffer buf;
      int n = repl_.read_copy(buf);
      if (n > 0) {
        read_since_poll_ += static_cast<std::size_t>(n);
        handle(std::string_view(buf.get(), static_cast<std::size_t>(n)));
        // While a backlog streams in, look at Redis now and then so the next chunk goes out as soon
        // as the previous one is stored, overlapping Redis's work with decoding.
        if (++since_io >= 64) {
          since_io = 0;
          service_redis();
          maybe_send_chunk();
          maybe_send_status(false);
          if (!pipeline_.in_transaction()) backfill_.step();
        }
        continue;
      }
      if (!pipeline_.in_transaction()) backfill_.step();
      maybe_send_chunk();
      maybe_send_status(false);
      poll_once(true);
    }
    shutdown();
  }

  std::uint64_t flushed() const { return flushed_; }

 private:
  void handle(std::string_view bytes) {
    auto message = copy::parse_server_message(bytes);
    if (auto* data = std::get_if<copy::XLogData>(&message)) {
      if (data->wal_end > received_) {
        received_ = data->wal_end;
        writer_.raise_wal_limit(received_);
      }
      keepalive_lsn_ = 0;  // data after the keepalive: its WAL end no longer describes what we hold
      try {
        pipeline_.handle(*data);
      } catch (const DecodeError& e) {
        throw PgError(false, fmt::format("cannot decode the pgoutput message at {}: {}", copy::format_lsn(data->data_start),
                                         e.what()));
      }
      return;
    }
    const auto& ka = std::get<copy::Keepalive>(message);
    if (ka.wal_end > received_) {
      received_ = ka.wal_end;
      writer_.raise_wal_limit(received_);
    }
    // Everything the server sent before this keepalive is either ours (and goes to Redis) or not
    // published. Once nothing received waits for Redis, the slot may advance to the keepalive's WAL
    // end, so WAL does not pile up while the published tables are idle and others are busy.
    keepalive_lsn_ = std::max(keepalive_lsn_, ka.wal_end);
    if (ka.reply_requested) maybe_send_status(true);
  }

  bool idle() const { return !pipeline_.in_transaction() && !writer_.in_flight() && writer_.chunk_empty(); }

  // Chunks leave at transaction boundaries (a full chunk leaves from the pipeline at once), so a
  // transaction that fits is applied by Redis as one MULTI/EXEC and subscribers see it whole.
  // A position with nothing to write (transactions of unpublished tables, a keepalive's WAL end)
  // is recorded by a checkpoint-only chunk, at most every kCheckpointEvery.
  void maybe_send_chunk() {
    if (writer_.in_flight() || pipeline_.in_transaction()) return;
    if (!writer_.chunk_empty()) {
      writer_.send_chunk();
    } else if (writer_.checkpoint_due() && Clock::now() - last_checkpoint_only_ >= kCheckpointEvery) {
      last_checkpoint_only_ = Clock::now();
      writer_.send_chunk();
    }
  }

  // Only what a checkpoint in Redis covers is confirmed: at the next start Redis is compared with
  // the slot, and must not be found behind it.
  std::uint64_t flush_position() {
    if (keepalive_lsn_ != 0 && idle()) writer_.mark_idle(keepalive_lsn_);
    auto acked = std::max(flushed_, writer_.acked_lsn());
    if (!config_.redis.via_sentinel() || acked <= flushed_) return acked;
    return sentinel_vouched(acked);
  }

  // Behind Sentinel, a failover promotes a replica while the old master still takes writes, and the
  // other replicas keep acknowledging WAITs from it until they are moved (seconds later): what the
  // old master took then is lost. A position is confirmed only once the sentinels, asked after Redis
  // acknowledged it, answer in a majority and all name this writer's master, none has a failover of it
  // in progress and none sees it down; when a majority names another, the session ends unconfirmed
  // and reconnects there. Asked at most every kSentinelEvery; a position waits meanwhile.
  std::uint64_t sentinel_vouched(std::uint64_t acked) {
    auto now = Clock::now();
    if (now - sentinel_asked_ < kSentinelEvery) return std::max(flushed_, vouched_);
    sentinel_asked_ = now;
    SentinelView view;
    try {
      view = ask_sentinels(config_.redis, std::chrono::milliseconds(500));
    } catch (const RedisError& e) {
      if (now - sentinel_warned_ >= std::chrono::seconds(10)) {
        sentinel_warned_ = now;
        log::warn("{}; not confirming new positions to PostgreSQL until a sentinel answers (confirmed {})", e.what(),
                  copy::format_lsn(flushed_));
      }
      return std::max(flushed_, vouched_);
    }
    auto j = judge_sentinels(view, writer_.master(), config_.redis.sentinels.size());
    if (j.verdict == SentinelJudgement::Verdict::Moved) {
      throw RedisError(RedisError::Kind::Transient,
                       fmt::format("Redis Sentinel: {}, not where this session writes ({}); not confirming what the "
                                   "old master took after the failover, reconnecting",
                                   j.why, writer_.display()));
    }
    if (j.verdict == SentinelJudgement::Verdict::Hold) {
      if (!sentinel_holding_ || now - sentinel_warned_ >= std::chrono::seconds(10)) {
        sentinel_warned_ = now;
        log::info("Redis Sentinel: {}; not confirming new positions to PostgreSQL until it is over (confirmed {})",
                  j.why, copy::format_lsn(flushed_));
      }
      sentinel_holding_ = true;
      return std::max(flushed_, vouched_);
    }
    sentinel_holding_ = false;
    vouched_ = acked;
    return std::max(flushed_, vouched_);
  }

  void log_replays(bool ended_only = false) {
    if (auto r = writer_.take_replays(ended_only)) {
      log::info("skipped {} entries already in Redis (replayed transactions committed from {} to {})", r->entries,
                copy::format_lsn(r->first_lsn), copy::format_lsn(r->last_lsn));
    }
  }

  void log_wait_shortfall() {
    auto found = writer_.take_wait_shortfall();
    if (!found || Clock::now() - last_wait_warning_ < std::chrono::seconds(5)) return;
    last_wait_warning_ = Clock::now();
    log::warn("WAIT: {} of {} replica(s) acknowledged the last chunk within {} ms; not confirming it to PostgreSQL "
              "yet, retrying (confirmed {})",
              *found, config_.redis_wait, config_.redis_wait_timeout.count(), copy::format_lsn(flushed_));
  }

  // The counters of this session's writer and pipeline, added to the process's as they move.
  void publish_metrics() {
    auto& m = metrics::registry();
    auto step = [](metrics::Counter& c, std::uint64_t now, std::uint64_t& seen) {
      if (now > seen) c.add(now - seen);
      seen = now;
    };
    step(m.entries_written, writer_.entries_written(), seen_.entries);
    step(m.replays_skipped, writer_.replays_skipped(), seen_.replays);
    step(m.wait_shortfalls, writer_.wait_shortfalls(), seen_.shortfalls);
    pipeline_.settle(writer_.acked_lsn());
  }

  // How long ago the oldest transaction received and not yet stored was committed; 0 when none waits.
  double lag_seconds() const {
    auto since = pipeline_.unsettled_since();
    if (!since) return 0;
    auto now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    return std::max(0.0, now - *since);
  }

  // Every kGuardEvery: the slot's lag and wal_status, exported and judged by the WAL guard. A slot
  // lost while streaming stops walstream here with the same line as at start.
  void guard_slot(Clock::time_point now) {
    metrics::registry().lag_seconds.set(lag_seconds());
    if (now < next_guard_) return;
    next_guard_ = now + kGuardEvery;
    auto health = read_slot(config_, probe_);
    if (!health) return;
    export_slot(*health);
    if (health->wal_status == "lost") {
      throw ConfigError(fmt::format("replication slot '{}' was invalidated while streaming (wal_status = lost): "
                                    "PostgreSQL removed WAL it still needed (max_slot_wal_keep_size); start "
                                    "walstream once with --resnapshot to republish every published table's rows "
                                    "under a new slot",
                                    config_.slot));
    }
    WalGuard::Reading reading{health->lag_bytes.value_or(0), lag_seconds(), health->wal_status};
    for (auto& [level, line] : guard_.check(now, reading)) log::write(level, line);
    auto& m = metrics::registry();
    for (std::size_t i = 0; i < WalGuard::kReasons.size(); ++i) {
      m.lag_warning.at(WalGuard::kReasons[i]).set(guard_.holds(static_cast<WalGuard::Reason>(i)) ? 1 : 0);
    }
  }

  void maybe_send_status(bool force) {
    publish_metrics();
    if (!streaming_) return;  // before START_REPLICATION (during the snapshot) there is no stream to report on
    guard_slot(Clock::now());
    log_replays(true);
    if (config_.redis_wait > 0) log_wait_shortfall();
    if (retention_) run_retention();
    auto now = Clock::now();
    std::uint64_t flush = flush_position();
    // Status goes out on the interval, on request, and (at most every 100 ms) when the flush moved,
    // so that PostgreSQL can recycle WAL promptly.
    bool moved = flush > flushed_ && now - last_status_ >= std::chrono::milliseconds(100);
    if (!force && !moved && now < next_status_) return;
    flushed_ = flush;
    copy::StatusUpdate s;
    // Reported as written only once stored: while write < the server's sent position, the walsender
    // keeps sending keepalives, which is what lets the idle slot advance promptly.
    s.written = flush;
    s.flushed = flush;
    s.applied = flush;
    s.send_time = now_pg_micros();
    repl_.send_copy(copy::encode_status_update(s));
    last_status_ = now;
    next_status_ = now + config_.status_interval;
  }

  void service_redis() { writer_.service(); }

  // A slice of the retention pass when one is due (its own blocking connection, a few ms at a time).
  void run_retention() {
    retention_->commit(pipeline_.last_commit_end(), pipeline_.last_commit_time());
    for (const auto& n : retention_->tick(now_pg_micros())) {
      switch (n.level) {
        case RetentionNotice::Level::Debug: log::debug("{}", n.text); break;
        case RetentionNotice::Level::Info: log::info("{}", n.text); break;
        case RetentionNotice::Level::Warn: log::warn("{}", n.text); break;
        case RetentionNotice::Level::Error: log::error("{}", n.text); break;
      }
    }
    // The retention's counters outlive sessions: the process's follow them.
    auto& m = metrics::registry();
    auto follow = [](metrics::Counter& c, std::uint64_t total) {
      if (total > c.value()) c.add(total - c.value());
    };
    follow(m.retention_trimmed, retention_->trimmed());
    follow(m.retention_unread_trimmed, retention_->unread_trimmed());
    follow(m.retention_retain_max_trimmed, retention_->retain_max_trimmed());
  }

  // Wake-up coalescing. walstream decodes faster than the walsender sends, so while a backlog
  // streams in it would wake for every few kilobytes, and in a VM each wake-up (a context switch)
  // costs more than decoding them: ~0.4 µs of CPU per change on the bench backlog. When the last
  // wake-up found a backlog's worth of bytes, poll() waits for as much again, or kCoalesceWait at
  // most. A live trickle never finds that much, so it keeps waking on the first byte.
  static constexpr std::size_t kBacklogBytes = 8 * 1024;  // found at one wake-up: a backlog streams in
  static constexpr int kCoalesceBytes = 64 * 1024;        // then wake when this much waits…
  static constexpr int kCoalesceWaitMs = 2;               // …or after this long

  void coalesce_pg_wakeups(bool on) {
    if (on == coalescing_) return;
    coalescing_ = on;
    repl_.set_receive_low_water(on ? kCoalesceBytes : 1);
  }

  // One wait on both sockets (and the stop pipe), bounded by the next status deadline.
  void poll_once(bool read_pg) {
    if (streaming_ && read_pg) {
      coalesce_pg_wakeups(read_since_poll_ >= kBacklogBytes);
      read_since_poll_ = 0;
    }
    // PostgreSQL, the stop pipe, a backfill's SELECT, then the writer's sockets (one per group on a cluster).
    auto& fds = fds_;
    fds.clear();
    fds.push_back({repl_.socket(),
                   static_cast<short>(streaming_ ? ((read_pg ? POLLIN : 0) | (repl_.flush() ? 0 : POLLOUT)) : 0), 0});
    fds.push_back({stop_pipe_fd(), POLLIN, 0});
    // A backfill chunk's SELECT in PostgreSQL: what it sends is taken in at any time (so that it does
    // not wait on a full socket while walstream waits for Redis), its result used between transactions.
    const int backfill_fd = backfill_.read_fd();
    fds.push_back({backfill_fd, POLLIN, 0});  // a negative fd is ignored by poll()
    constexpr std::size_t kWriterFds = 3;
    writer_.poll_fds(fds);
    // Before streaming there are no status deadlines: wait for Redis (or a signal) alone.
    auto wait = streaming_ ? std::chrono::duration_cast<std::chrono::milliseconds>(next_status_ - Clock::now()).count()
                           : 1000L;
    int timeout = static_cast<int>(std::clamp<long>(wait, 0, coalescing_ && read_pg ? kCoalesceWaitMs : 1000));
    if (retention_ && retention_->busy()) timeout = std::min(timeout, 10);  // a pass goes on between waits
    int r = ::poll(fds.data(), fds.size(), timeout);
    if (r < 0) {
      if (errno == EINTR) return;
      throw PgError(true, "poll failed");
    }
    // A coalescing wait that timed out still takes what arrived meanwhile.
    bool pg_ready = (fds[0].revents & (POLLIN | POLLERR | POLLHUP)) || (coalescing_ && read_pg && r == 0);
    if (streaming_ && pg_ready) repl_.consume_input();
    writer_.on_poll(fds.data() + kWriterFds, fds.size() - kWriterFds);
    if (fds[1].revents & POLLIN) drain_stop_pipe();
    if (backfill_fd >= 0 && fds[2].revents) {
      backfill_.pump();
      if (read_pg && !pipeline_.in_transaction()) backfill_.step();
    }
    maybe_send_status(false);
  }

  // Waits for Redis without reading more from PostgreSQL, while status updates keep the walsender
  // (and wal_sender_timeout) satisfied however slow Redis is.
  void wait_until(const std::function<bool()>& done) {
    while (!done()) {
      if (stop_requested() && Clock::now() > stop_deadline()) throw StopTimeout();
      poll_once(false);
    }
  }

  Clock::time_point stop_deadline() {
    if (!stop_seen_) {
      stop_seen_ = true;
      stop_at_ = Clock::now() + config_.shutdown_timeout;
    }
    return stop_at_;
  }

  void shutdown() {
    metrics::registry().role.store(metrics::Role::Stopping);
    log::info("stopping: storing the transactions received whole");
    // A transaction cut short by the stop is not sent (subscribers never see half of one that fits
    // in a chunk); PostgreSQL resends it whole at the next start.
    if (pipeline_.in_transaction()) writer_.drop_open_transaction();
    drain(writer_, [this](const std::function<bool()>& done) { wait_until(done); });
    // With --redis-wait, what the replicas have not acknowledged is not confirmed: wait for them until
    // --shutdown-timeout (then it is resent at the next start).
    wait_until([this] { return !writer_.waits_pending(); });
    log_replays();
    maybe_send_status(true);
    while (!repl_.flush()) {
      if (Clock::now() > stop_deadline()) throw StopTimeout();
      poll_once(false);
    }
    repl_.end_copy();
    log::info("stopped; received up to {}, confirmed {}", copy::format_lsn(received_), copy::format_lsn(flushed_));
  }

  // One Redis (or Sentinel): a StreamWriter; a cluster: a ClusterWriter, one StreamWriter per group.
  static std::unique_ptr<ChangeWriter> make_writer(const Config& c, ClusterWriter*& cluster) {
    if (!c.redis_cluster) return std::make_unique<StreamWriter>(writer_options(c));
    auto w = std::make_unique<ClusterWriter>(writer_options(c), Keys{c.prefix, c.slot, true});
    cluster = w.get();
    return w;
  }

  static StreamWriter::Options writer_options(const Config& c) {
    StreamWriter::Options o;
    o.chunk_stored = [](double seconds) { metrics::registry().chunk_seconds.observe(seconds); };
    o.url = c.redis;
    o.maxlen = c.maxlen;
    o.checkpoint_key = Keys{c.prefix, c.slot}.checkpoint();
    o.wait_replicas = c.redis_wait;
    o.wait_timeout = c.redis_wait_timeout;
    return o;
  }

  static Pipeline::Options pipeline_options(const Config& c) {
    Pipeline::Options o;
    o.keys = Keys{c.prefix, c.slot, c.redis_cluster};
    o.messages = c.messages;
    o.message_prefixes = c.message_prefixes;
    o.transactions = c.transactions;
    o.outbox_tables = c.outbox_tables;
    o.outbox_columns = c.outbox_columns;
    return o;
  }

  static constexpr auto kCheckpointEvery = std::chrono::milliseconds(200);
  static constexpr auto kSentinelEvery = std::chrono::milliseconds(500);
  Clock::time_point sentinel_asked_{}, sentinel_warned_{};
  std::uint64_t vouched_ = 0;  // the newest acknowledged position the sentinels vouched for
  bool sentinel_holding_ = false;  // said that a failover holds confirmations back
  static constexpr auto kGuardEvery = std::chrono::seconds(5);

  const Config& config_;
  RunState& once_;
  std::optional<PgConnection>& probe_;
  WalGuard guard_;
  Retention* retention_;  // --retention acked; outlives sessions (its time index and counters)
  ClusterWriter* cluster_ = nullptr;  // writer_ on a Redis Cluster
  std::unique_ptr<ChangeWriter> writer_holder_;
  ChangeWriter& writer_;
  Catalog catalog_;
  PgConnection repl_;
  Pipeline pipeline_;
  Backfill backfill_;
  std::uint64_t received_ = 0;
  std::uint64_t flushed_ = 0;
  std::uint64_t keepalive_lsn_ = 0;  // WAL end of the last keepalive with no data after it
  Clock::time_point next_status_{};
  Clock::time_point last_status_{};
  Clock::time_point last_checkpoint_only_{};
  Clock::time_point last_wait_warning_{};
  bool streaming_ = false;
  std::size_t read_since_poll_ = 0;  // bytes of CopyData handled since the last poll
  std::vector<pollfd> fds_;          // poll_once's, kept to spare an allocation per wait
  bool coalescing_ = false;
  bool stop_seen_ = false;
  Clock::time_point stop_at_{};
  Clock::time_point next_guard_{};
  struct {
    std::uint64_t entries = 0, replays = 0, shortfalls = 0;
  } seen_;
};

// Whether another walsender holds the slot now (a standby exports the slot's lag meanwhile). Any
// failure says "not held": the session that follows finds out for itself and reports it.
bool slot_held(const Config& config, std::optional<PgConnection>& probe) {
  auto health = read_slot(config, probe);
  if (health) export_slot(*health);
  if (health && health->active) return true;
  // While another instance sets the slot up (creates it, copies the snapshot) no walsender holds
  // it: its setup lock (snapshot.cpp) says so.
  if (!probe) return false;
  try {
    auto r = probe->exec_params(fmt::format("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                                            "AND classid = {} AND objid = hashtext($1)::oid AND objsubid = 2 AND "
                                            "database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                                            SlotKeeper::kSetupLockClass),
                                {config.slot}, PGRES_TUPLES_OK);
    return std::string_view(PQgetvalue(r.get(), 0, 0)) != "0";
  } catch (const PgError& e) {
    log::debug("reading pg_locks: {}", e.what());
    probe.reset();
    return false;
  }
}

// How often a standby asks for the slot: takeover time is this plus the walsender's exit.
constexpr auto kStandbyPoll = std::chrono::milliseconds(500);
// Retries of a write that met a moving cluster slot: 25, 50, 100, 200, 200… ms.
constexpr auto kMovingFirstBackoff = std::chrono::milliseconds(25);
constexpr auto kMovingMaxBackoff = std::chrono::milliseconds(200);

void sleep_interruptibly(std::chrono::milliseconds d) {
  auto until = Clock::now() + d;
  while (!stop_requested() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

}  // namespace


int run(const Config& given) {
  // On a cluster the seeds grow with the nodes the last session's slot map named (RunState).
  Config config = given;
  metrics::registry().reconnects.at("postgresql");  // both series exist from the start, at 0
  metrics::registry().reconnects.at("redis");
  auto backoff = std::chrono::milliseconds(100);
  auto moving_backoff = kMovingFirstBackoff;
  // The pause before the next attempt, after a session that began at `started`. A cluster's slot on
  // the move (ASK/TRYAGAIN while a migration runs, MOVED just after) is not an outage: retried within a
  // fraction of a second, whatever the outages' backoff has grown to, so a migration stalls the feed for
  // about its own length. A session that ran for a while was healthy: its backoff starts from the bottom.
  auto next_pause = [&](Clock::time_point started, bool slot_moving) {
    auto ran = Clock::now() - started;
    if (ran > std::chrono::seconds(30)) backoff = std::chrono::milliseconds(100);
    if (ran > std::chrono::seconds(5)) moving_backoff = kMovingFirstBackoff;
    auto& b = slot_moving ? moving_backoff : backoff;
    auto pause = b;
    b = std::min(b * 2, slot_moving ? kMovingMaxBackoff : config.max_backoff);
    return pause;
  };
  RunState once{config.resnapshot, config.adopt_slot, false, {}};
  bool failing = false;  // the last session ended with an error that is being retried
  bool standby = false;  // the slot is held by another walsender; said once
  std::optional<PgConnection> probe;  // a standby's look at pg_replication_slots, and the WAL guard's
  auto& m = metrics::registry();
  std::optional<Retention> retention;
  if (config.retention) retention.emplace(config.redis, config.prefix, *config.retention);
  while (!stop_requested()) {
    auto started = Clock::now();
    std::chrono::milliseconds pause{0};
    try {
      if (standby && slot_held(config, probe)) {
        // Asked on one plain SQL connection, not by a new session that PostgreSQL refuses (and logs).
        sleep_interruptibly(kStandbyPoll);
        continue;
      }
      if (!standby) m.role.store(metrics::Role::Starting);
      if (config.redis_cluster && !once.cluster_nodes.empty()) {
        config.redis.seeds = given.redis.seed_nodes();
        for (const auto& n : once.cluster_nodes) {
          if (std::find(config.redis.seeds.begin(), config.redis.seeds.end(), n) == config.redis.seeds.end()) {
            config.redis.seeds.push_back(n);
          }
        }
        if (retention) retention->set_url(config.redis);
      }
      Session session(config, once, probe, retention ? &*retention : nullptr);
      session.run();
      return 0;
    } catch (const StopTimeout&) {
      log::error("stopped before Redis stored everything received (--shutdown-timeout); nothing is lost: "
                 "PostgreSQL resends it at the next start");
      return 1;
    } catch (const RedisError& e) {
      if (e.kind() == RedisError::Kind::Fenced) {
        // Paused or partitioned long enough to lose the slot: the successor is active; this one is
        // its standby now.
        log::warn("{}; becoming a standby", e.what());
        m.role.store(metrics::Role::Standby);
        standby = false;  // the next attempt finds the slot held and says "standby" once, as at start
        once.streamed = false;
        failing = false;
        continue;
      }
      // A conflict (another writer) is fatal: the writer already told a late landing of our own
      // write (transient) from a foreign entry.
      if (!e.transient()) {
        log::error("{}", e.what());
        return 1;
      }
      pause = next_pause(started, e.slot_moving());
      log::warn("{}; retrying in {} ms", e.what(), pause.count());
      m.reconnects.at("redis").add();
      m.role.store(metrics::Role::Retrying);
      failing = true;
    } catch (const PgError& e) {
      if (!e.transient()) {
        log::error("{}", e.what());
        return 1;
      }
      if (e.slot_in_use()) {
        // Active/standby on one slot: PostgreSQL lets one walsender hold it. Say so once, then poll
        // quietly and often, so that a standby takes over within a second or two of the active
        // instance's death (its walsender ends when the connection does).
        if (once.streamed) standby = once.streamed = false;  // was active since: say it again
        if (!standby) log::info("standby: slot '{}' is held by another walstream ({}); waiting", config.slot, e.what());
        standby = true;
        m.role.store(metrics::Role::Standby);
        failing = false;
        backoff = std::chrono::milliseconds(100);
        sleep_interruptibly(kStandbyPoll);
        continue;
      }
      pause = next_pause(started, false);
      log::warn("{}; retrying in {} ms", e.what(), pause.count());
      m.reconnects.at("postgresql").add();
      m.role.store(metrics::Role::Retrying);
      failing = true;
    } catch (const ConfigError& e) {
      log::error("{}", e.what());
      return 1;
    }
    sleep_interruptibly(pause);
  }
  if (failing) {
    // Stopped during an outage: what was received and not stored is resent at the next start.
    log::error("stopped while retrying; nothing is lost: PostgreSQL resends what Redis did not store at the next start");
    return 1;
  }
  return 0;
}

}  // namespace walstream
