#include "stream_writer.h"

#include "redis_client.h"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fmt/format.h>

namespace walstream {
namespace {

constexpr StreamWriter::Handle kNoStream = Ledger::kNoStream;

}  // namespace

StreamWriter::StreamWriter(Options options) : options_(std::move(options)) {
  if (options_.maxlen) maxlen_text_ = std::to_string(*options_.maxlen);
  wait_replicas_text_ = std::to_string(options_.wait_replicas);
  wait_timeout_text_ = std::to_string(options_.wait_timeout.count());
  xadd_head_args_ = maxlen_text_.empty() ? 2 : 5;
  connect();
}

StreamWriter::~StreamWriter() = default;

void StreamWriter::connect() {
  // The handshake (connect, TLS, AUTH, SELECT, PING; the sentinels' answer) is synchronous; then the
  // socket (non-blocking, keepalive on) is driven by on_io().
  RedisClient handshake(options_.url, std::chrono::seconds(10), options_.cluster_node);
  handshake.checked({"PING"});
  node_ = handshake.node();
  socket_ = handshake.release();
}

int StreamWriter::fd() const { return socket_->fd(); }

void StreamWriter::poll_fds(std::vector<pollfd>& fds) const {
  fds.push_back({fd(), static_cast<short>((wants_read() ? POLLIN : 0) | (wants_write() ? POLLOUT : 0)), 0});
}

void StreamWriter::on_poll(const pollfd* fds, std::size_t n) {
  if (n == 0 || !fds[0].revents) return;
  bool hup = fds[0].revents & (POLLERR | POLLHUP);
  on_io((fds[0].revents & POLLIN) || hup, (fds[0].revents & POLLOUT) || hup);
}

bool StreamWriter::wants_write() const { return out_pos_ < out_.size() || socket_->read_wants_write(); }
bool StreamWriter::wants_read() const { return !expected_.empty() || socket_->write_wants_read(); }

void StreamWriter::connection_lost(const char* doing, std::string_view why) {
  throw RedisError(RedisError::Kind::Transient,
                   fmt::format("lost the Redis connection to {} while {}: {}", socket_->display(), doing, why));
}

// Our own output buffer rather than hiredis's: a chunk goes to the socket without another copy.
void StreamWriter::flush_out() {
  while (out_pos_ < out_.size()) {
    auto n = socket_->send_some(out_.data() + out_pos_, out_.size() - out_pos_);
    if (n == 0) return;
    out_pos_ += n;
  }
  out_.clear();
  out_pos_ = 0;
}

// One read per call, as much as hiredis would read: its reader moves the unparsed rest of its
// buffer to the front each time 1 kB of it is parsed, so feeding it more at once costs more. Over
// TLS, what OpenSSL already decrypted is read too: poll() would not report it.
void StreamWriter::read_in() {
  char buf[16 * 1024];
  do {
    auto n = socket_->recv_some(buf, sizeof buf);
    if (n == 0) return;
    if (!replies_.feed(buf, n)) connection_lost("reading", replies_.error());
  } while (socket_->buffered());
}

void StreamWriter::on_io(bool readable, bool writable) {
  // Over TLS a write may wait for the socket to be readable, and a read for it to be writable.
  if (writable || (readable && socket_->write_wants_read())) flush_out();
  if (readable || (writable && socket_->read_wants_write())) read_in();
  while (auto reply = replies_.next()) handle_reply(*reply);
  if (replies_.failed()) connection_lost("parsing a reply", replies_.error());
}

StreamWriter::Handle StreamWriter::stream(std::string_view key) {
  auto it = stream_index_.find(std::string(key));
  if (it != stream_index_.end()) return it->second;
  Handle h = streams_.size();
  RespBuffer head;
  head.arg("XADD");
  head.arg(key);
  if (!maxlen_text_.empty()) {
    head.arg("MAXLEN");
    head.arg("~");
    head.arg(maxlen_text_);
  }
  streams_.push_back(Stream{std::string(key), std::string(head.view())});
  ledger_.add_stream();
  stream_index_.emplace(std::string(key), h);
  return h;
}

void StreamWriter::request_hwm(Handle h) {
  auto& s = streams_[h];
  for (const auto& e : expected_) {
    if (e.kind == Expected::Hwm && e.stream == h) return;
  }
  if (ledger_.hwm_known(h)) return;
  // XINFO's last-generated-id is what XADD compares new IDs with, even after the top entry was deleted.
  out_.command(3);
  out_.arg("XINFO");
  out_.arg("STREAM");
  out_.arg(s.key);
  expected_.push_back({Expected::Hwm, h});
  flush_out();
}


void StreamWriter::begin_transaction() { ledger_.begin(building_.size()); }

bool StreamWriter::add_entry(Handle h, StreamId id, Fields fields) {
  if (!ledger_.admit(h, id)) return false;
  const auto& s = streams_[h];
  if (building_.empty()) {
    building_.command(1);
    building_.arg("MULTI");
  }
  const std::size_t start = building_.size();
  // XADD <key> [MAXLEN ~ <n>] <id> <field> <value>…: one copy of the stream's framed head instead
  // of framing its 2 or 5 arguments again for every entry.
  building_.command(xadd_head_args_ + 1 + 2 * fields.size());
  building_.append_framed(s.xadd_head);
  char idbuf[48];
  auto p = std::to_chars(idbuf, idbuf + 24, id.ms).ptr;
  *p++ = '-';
  p = std::to_chars(p, idbuf + sizeof idbuf, id.seq).ptr;
  building_.arg({idbuf, static_cast<std::size_t>(p - idbuf)});
  std::uint32_t print = 0;
  for (const auto& [name, value] : fields) {
    building_.arg(name);
    building_.arg(value);
    if (name.size() == 3 && name == "lsn") print = fingerprint(value);
  }
  ledger_.command(h, id, building_.size() - start, print);
  return true;
}

void StreamWriter::add_hset(std::string_view key, std::string_view field, std::string_view value) {
  if (building_.empty()) {
    building_.command(1);
    building_.arg("MULTI");
  }
  building_.command(4);
  building_.arg("HSET");
  building_.arg(key);
  building_.arg(field);
  building_.arg(value);
  ledger_.command(kNoStream, {});
}

void StreamWriter::mark_commit(std::uint64_t end_lsn) { ledger_.commit(end_lsn); }

void StreamWriter::drop_open_transaction() {
  if (auto keep = ledger_.drop_open_transaction()) building_.truncate(*keep);
  if (ledger_.building_commands() == 0) building_.clear();
}

bool StreamWriter::chunk_full() const {
  return ledger_.full(options_.chunk_commands, options_.chunk_bytes);
}

void StreamWriter::send_chunk() {
  if (ledger_.in_flight()) return;
  if (ledger_.building_commands() == 0 && !ledger_.checkpoint_due()) return;
  auto cut = ledger_.plan_cut();
  std::uint64_t checkpoint = ledger_.next_checkpoint();
  if (cut.commands == 0 && checkpoint == 0) return;
  RespBuffer& chunk = building_;
  if (cut.commands == 0) {
    chunk.command(1);
    chunk.arg("MULTI");
  }
  if (cut.carry) {
    // The open transaction opens the next chunk: move its commands behind a MULTI of their own.
    spare_.clear();
    spare_.command(1);
    spare_.arg("MULTI");
    spare_.append_framed(chunk.view().substr(cut.bytes));
    chunk.truncate(cut.bytes);
  }
  if (checkpoint) {
    chunk.command(4);
    chunk.arg("HSET");
    chunk.arg(options_.checkpoint_key);
    chunk.arg("lsn");
    chunk.arg(format_lsn_text(checkpoint));
  }
  chunk.command(1);
  chunk.arg("EXEC");
  if (out_.empty()) {
    std::swap(out_, chunk);  // the usual case: hand the buffer over, no copy
  } else {
    out_.append(chunk);
  }
  chunk.clear();
  if (cut.carry) std::swap(building_, spare_);
  ledger_.sent(cut, checkpoint);
  chunk_sent_at_ = std::chrono::steady_clock::now();
  expected_.push_back({Expected::Chunk, 0});
  if (options_.wait_replicas > 0) send_wait(ledger_.checkpoint_sent());
  if (!fence_key_.empty()) send_fence_check();
  flush_out();
}

void StreamWriter::fence(std::string key, std::uint64_t epoch) {
  fence_key_ = std::move(key);
  fence_epoch_ = std::to_string(epoch);
  if (!ledger_.in_flight()) send_fence_check();
}

// WATCH stays armed until our next EXEC, which Redis then refuses (nil) if the epoch key changed in
// between; the GET tells whether it changed before. Pipelined right after each EXEC, so the answer is
// usually back before the next chunk is built.
void StreamWriter::send_fence_check() {
  out_.command(2);
  out_.arg("WATCH");
  out_.arg(fence_key_);
  expected_.push_back({Expected::FenceWatch, 0});
  out_.command(2);
  out_.arg("GET");
  out_.arg(fence_key_);
  expected_.push_back({Expected::FenceGet, 0});
  fence_pending_ = true;
  flush_out();
}

void StreamWriter::fenced(std::string_view why) {
  throw RedisError(RedisError::Kind::Fenced,
                   fmt::format("fenced: {} (this instance's epoch {}): another walstream took the slot over; "
                               "writing nothing more",
                               why, fence_epoch_));
}

void StreamWriter::send_wait(std::uint64_t checkpoint) {
  // WAIT covers every write this connection made before it: the chunk just sent.
  out_.command(3);
  out_.arg("WAIT");
  out_.arg(wait_replicas_text_);
  out_.arg(wait_timeout_text_);
  expected_.push_back({Expected::Wait, 0, checkpoint});
  ++waits_queued_;
}

void StreamWriter::handle_reply(Reply reply) {
  if (expected_.empty()) {
    throw RedisError(RedisError::Kind::Fatal, "Redis sent a reply to no command (protocol out of step)");
  }
  auto e = expected_.front();
  switch (e.kind) {
    case Expected::Hwm:
      expected_.pop_front();
      handle_hwm_reply(e.stream, reply);
      break;
    case Expected::Chunk:
      handle_chunk_reply(reply);
      break;
    case Expected::FenceWatch:
      expected_.pop_front();
      if (!reply.is(ReplyType::Status)) {
        auto msg = reply.is(ReplyType::Error) ? std::string(reply.text()) : std::string("unexpected reply");
        throw RedisError::refused(fmt::format("Redis refused WATCH {}: {}", fence_key_, msg), msg);
      }
      break;
    case Expected::FenceGet:
      expected_.pop_front();
      fence_pending_ = false;
      if (!reply.is(ReplyType::String) || reply.text() != fence_epoch_) {
        fenced(fmt::format("{} holds {}", fence_key_,
                           reply.is(ReplyType::String) ? std::string(reply.text()) : std::string("nothing")));
      }
      break;
    case Expected::Wait:
      expected_.pop_front();
      --waits_queued_;
      if (!reply.is(ReplyType::Integer)) {
        // A failed WAIT releases nothing, and a failover answers one (UNBLOCKED, "cannot be used with
        // replica instances"): reconnect, and the next session compares the checkpoint again.
        auto msg = reply.is(ReplyType::Error) ? std::string(reply.text()) : std::string("not a number");
        throw RedisError(RedisError::Kind::Transient,
                         fmt::format("Redis refused WAIT {} {}: {}", wait_replicas_text_, wait_timeout_text_, msg));
      }
      if (reply.integer() >= options_.wait_replicas) {
        ledger_.replicated(e.checkpoint);
      } else {
        // Stored on this Redis but not on enough replicas: not confirmed. A WAIT queued after this
        // one covers it too; without one, ask again. Chunks go on to the master meanwhile.
        wait_shortfall_ = reply.integer();
        ++wait_shortfalls_;
        if (waits_queued_ == 0) {
          send_wait(e.checkpoint);
          flush_out();
        }
      }
      break;
  }
}

void StreamWriter::handle_hwm_reply(Handle h, Reply r) {
  auto& s = streams_[h];
  if (r.is(ReplyType::Error)) {
    auto msg = r.text();
    if (msg.find("no such key") != std::string_view::npos) {
      ledger_.set_hwm(h, {});
      return;
    }
    throw RedisError::refused(fmt::format("Redis refused XINFO STREAM {}: {}", s.key, msg), msg);
  }
  // Field names and values alternate; some values (first-entry, last-entry) are arrays themselves.
  for (std::size_t i = 0; i + 1 < r.size(); i += 2) {
    auto k = r[i];
    auto v = r[i + 1];
    if (k.is(ReplyType::String) && k.text() == "last-generated-id" && v.is(ReplyType::String)) {
      if (auto id = parse_stream_id(v.text())) {
        if (!ledger_.set_hwm(h, *id)) {
          throw RedisError(
              RedisError::Kind::Fatal,
              fmt::format("stream {} has last ID {}, above PostgreSQL's current WAL position {} ({}): walstream "
                          "cannot have written it (an XADD with an automatic ID, or a Redis restored from another "
                          "database); walstream stops rather than take this table's changes for replays: delete or "
                          "rename the stream (or use another --prefix), then start again",
                          s.key, id->str(), format_lsn_text(ledger_.wal_limit()), ledger_.wal_limit()));
        }
        return;
      }
    }
  }
  throw RedisError(RedisError::Kind::Fatal, fmt::format("unexpected reply to XINFO STREAM {}", s.key));
}

void StreamWriter::handle_chunk_reply(Reply r) {
  if (ledger_.queued_seen() < ledger_.queued_expected()) {
    // MULTI's +OK, then +QUEUED per command; a refusal here aborts the whole EXEC.
    bool refused = r.is(ReplyType::Error);
    ledger_.queued(refused, refused ? r.text() : std::string_view());
    return;
  }
  expected_.pop_front();
  finish_chunk(r);
}

void StreamWriter::finish_chunk(Reply r) {
  // With the epoch key WATCHed, a nil EXEC means it changed: nothing of the chunk was applied.
  if (!fence_key_.empty() && r.is(ReplyType::Nil)) fenced(fmt::format("{} changed before EXEC", fence_key_));
  std::optional<std::string_view> exec_error;
  results_.clear();
  if (r.is(ReplyType::Error)) {
    exec_error = r.text();
  } else if (r.is(ReplyType::Nil)) {
    exec_error = "EXEC aborted";
  } else if (r.is(ReplyType::Array)) {
    for (std::size_t i = 0; i < r.size(); ++i) {
      auto e = r[i];
      results_.push_back(e.is(ReplyType::Error) ? std::optional<std::string_view>(e.text()) : std::nullopt);
    }
  }
  auto outcome = ledger_.executed(exec_error, results_);
  using Kind = Ledger::Outcome::Kind;
  auto where = [&] {
    return outcome.stream == kNoStream ? std::string()
                                       : fmt::format(" (XADD {} {})", streams_[outcome.stream].key, outcome.id.str());
  };
  switch (outcome.kind) {
    case Kind::Stored:
      if (options_.chunk_stored) {
        options_.chunk_stored(std::chrono::duration<double>(std::chrono::steady_clock::now() - chunk_sent_at_).count());
      }
      // Without --redis-wait a stored chunk is acknowledged at once; with it, WAIT's reply releases it.
      if (options_.wait_replicas == 0) {
        ledger_.waited(0, 0);
      } else {
        ledger_.release_stored();
      }
      return;
    case Kind::Transient:
      throw RedisError(RedisError::Kind::Transient, fmt::format("Redis refused the write: {}{}", outcome.message, where()),
                       is_slot_moving_error(outcome.message));
    case Kind::Fatal:
      if (outcome.registry) {
        throw RedisError(RedisError::Kind::Fatal,
                         fmt::format("Redis refused a schema registry or checkpoint write: {}", outcome.message));
      }
      throw RedisError(RedisError::Kind::Fatal, fmt::format("Redis refused the write: {}{}", outcome.message, where()));
    case Kind::Conflict:
      conflict(outcome);
  }
}

// Redis says the stream already holds an ID at or above one we write. Our IDs only grow and
// replays are filtered, so either the previous connection's last chunk landed after this one read
// the stream's last ID (Redis was stalled when we reconnected), which left exactly our entry there,
// or someone else wrote to the stream. Only the first may be retried.
void StreamWriter::conflict(const Ledger::Outcome& outcome) {
  // Every refused stream must be ours; the first that is not (or cannot be checked) stops walstream.
  std::optional<RedisClient> check;
  for (const auto& [h, id, print] : outcome.conflicts) {
    const auto& key = streams_[h].key;
    bool ours = false;
    try {
      if (!check) check.emplace(options_.url, std::chrono::seconds(10), options_.cluster_node);
      auto same = check->checked({"XRANGE", key, id.str(), id.str()}).entries();
      // The same ID is not enough: the entry there must carry our `lsn` too.
      bool same_entry = false;
      for (const auto& e : same) {
        for (const auto& [name, value] : e.fields) {
          if (name == "lsn") same_entry = fingerprint(value) == print;
        }
      }
      std::optional<StreamId> last;
      auto fields = check->checked({"XINFO", "STREAM", key}).strings();
      for (std::size_t i = 0; i + 1 < fields.size(); i += 2) {
        if (fields[i] == "last-generated-id") last = parse_stream_id(fields[i + 1]);
      }
      ours = same_entry && last && (ledger_.wal_limit() == 0 || last->ms <= ledger_.wal_limit());
    } catch (const RedisError&) {
      // Cannot tell: treat it as a foreign write (stop) rather than guess.
    }
    if (!ours) {
      throw RedisError(RedisError::Kind::Conflict,
                       fmt::format("stream {} already holds an entry at or above {} that walstream did not write: "
                                   "another writer uses it; walstream stops rather than skip or reorder (delete the "
                                   "stream or use another --prefix, then start again)",
                                   key, id.str()));
    }
  }
  throw RedisError(RedisError::Kind::Transient,
                   fmt::format("stream {} already holds {}: an earlier connection's write landed late; reconnecting "
                               "to read the last IDs again",
                               streams_[outcome.stream].key, outcome.id.str()));
}

}  // namespace walstream
