#include "stream_writer.h"

#include "redis_client.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>

#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fmt/format.h>

namespace walstream {
namespace {

constexpr StreamWriter::Handle kNoStream = static_cast<StreamWriter::Handle>(-1);

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

}  // namespace

bool is_retryable_redis_error(std::string_view m) {
  for (std::string_view p : {"OOM", "READONLY", "NOAUTH", "WRONGPASS", "NOPERM", "LOADING", "BUSY", "MASTERDOWN",
                             "TRYAGAIN", "NOREPLICAS", "CLUSTERDOWN", "MISCONF"}) {
    if (starts_with(m, p)) return true;
  }
  return false;
}

std::optional<StreamId> parse_stream_id(std::string_view text) {
  auto dash = text.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  StreamId id;
  auto a = std::from_chars(text.data(), text.data() + dash, id.ms);
  auto b = std::from_chars(text.data() + dash + 1, text.data() + text.size(), id.seq);
  if (a.ec != std::errc() || a.ptr != text.data() + dash || b.ec != std::errc() || b.ptr != text.data() + text.size()) {
    return std::nullopt;
  }
  return id;
}

StreamWriter::StreamWriter(Options options) : options_(std::move(options)), ctx_(nullptr, redisFree) {
  if (options_.maxlen) maxlen_text_ = std::to_string(*options_.maxlen);
  xadd_head_args_ = maxlen_text_.empty() ? 2 : 5;
  connect();
}

StreamWriter::~StreamWriter() = default;

void StreamWriter::connect() {
  // The handshake (connect, AUTH, SELECT, PING) is synchronous; afterwards the socket is
  // non-blocking and driven by on_io().
  RedisClient handshake(options_.url);
  handshake.checked({"PING"});
  ctx_ = handshake.release();
  // A Redis host that vanishes without a reset is noticed by TCP keepalive, not by waiting forever.
  redisEnableKeepAlive(ctx_.get());
  int fd = ctx_->fd;
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    throw RedisError(RedisError::Kind::Transient, "cannot make the Redis socket non-blocking");
  }
}

int StreamWriter::fd() const { return ctx_->fd; }

void StreamWriter::connection_lost(const char* doing, std::string_view why) {
  throw RedisError(RedisError::Kind::Transient,
                   fmt::format("lost the Redis connection to {} while {}: {}", options_.url.display(), doing, why));
}

// Our own output buffer rather than hiredis's: a chunk goes to the socket without another copy.
void StreamWriter::flush_out() {
  while (out_pos_ < out_.size()) {
    ssize_t n = ::send(ctx_->fd, out_.data() + out_pos_, out_.size() - out_pos_, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      connection_lost("writing", std::strerror(errno));
    }
    out_pos_ += static_cast<std::size_t>(n);
  }
  out_.clear();
  out_pos_ = 0;
}

// One read per call, as much as hiredis would read: its reader moves the unparsed rest of its
// buffer to the front each time 1 kB of it is parsed, so feeding it more at once costs more.
void StreamWriter::read_in() {
  char buf[16 * 1024];
  for (;;) {
    ssize_t n = ::recv(ctx_->fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      if (!replies_.feed(buf, static_cast<std::size_t>(n))) connection_lost("reading", replies_.error());
      return;
    }
    if (n == 0) connection_lost("reading", "Server closed the connection");
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    if (errno != EINTR) connection_lost("reading", std::strerror(errno));
  }
}

void StreamWriter::on_io(bool readable, bool writable) {
  if (writable) flush_out();
  if (readable) read_in();
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
  streams_.push_back(Stream{std::string(key), std::string(head.view()), HwmState::Unknown, {}});
  stream_index_.emplace(std::string(key), h);
  return h;
}

void StreamWriter::request_hwm(Handle h) {
  auto& s = streams_[h];
  if (s.state != HwmState::Unknown) return;
  // XINFO's last-generated-id is what XADD compares new IDs with, even after the top entry was deleted.
  out_.command(3);
  out_.arg("XINFO");
  out_.arg("STREAM");
  out_.arg(s.key);
  flush_out();
  s.state = HwmState::Requested;
  expected_.push_back({Expected::Hwm, h});
}


bool StreamWriter::add_entry(Handle h, StreamId id, Fields fields) {
  const auto& s = streams_[h];
  if (id <= s.hwm) {
    ++replays_skipped_;
    return false;
  }
  if (building_.commands == 0) {
    building_.resp.command(1);
    building_.resp.arg("MULTI");
  }
  // XADD <key> [MAXLEN ~ <n>] <id> <field> <value>…: one copy of the stream's framed head instead
  // of framing its 2 or 5 arguments again for every entry.
  building_.resp.command(xadd_head_args_ + 1 + 2 * fields.size());
  building_.resp.append_framed(s.xadd_head);
  char idbuf[48];
  auto p = std::to_chars(idbuf, idbuf + 24, id.ms).ptr;
  *p++ = '-';
  p = std::to_chars(p, idbuf + sizeof idbuf, id.seq).ptr;
  building_.resp.arg({idbuf, static_cast<std::size_t>(p - idbuf)});
  for (const auto& [name, value] : fields) {
    building_.resp.arg(name);
    building_.resp.arg(value);
  }
  ++building_.commands;
  building_.info.push_back({h, id});
  return true;
}

void StreamWriter::add_hset(std::string_view key, std::string_view field, std::string_view value) {
  if (building_.commands == 0) {
    building_.resp.command(1);
    building_.resp.arg("MULTI");
  }
  building_.resp.command(4);
  building_.resp.arg("HSET");
  building_.resp.arg(key);
  building_.resp.arg(field);
  building_.resp.arg(value);
  ++building_.commands;
  building_.info.push_back({kNoStream, {}});
}

void StreamWriter::mark_commit(std::uint64_t end_lsn) {
  if (building_.commands > 0) {
    building_.ack_lsn = end_lsn;
  } else if (inflight_) {
    // Everything of this transaction went out with the chunk in flight.
    inflight_->ack_lsn = end_lsn;
  } else if (end_lsn > acked_lsn_) {
    acked_lsn_ = end_lsn;  // nothing to write (or all replays): acknowledged at once
  }
}

bool StreamWriter::chunk_full() const {
  return building_.commands >= options_.chunk_commands || building_.resp.size() >= options_.chunk_bytes;
}

void StreamWriter::send_chunk() {
  if (inflight_ || building_.commands == 0) return;
  building_.resp.command(1);
  building_.resp.arg("EXEC");
  if (out_.empty()) {
    std::swap(out_, building_.resp);  // the usual case: hand the buffer over, no copy
  } else {
    out_.append(building_.resp);
  }
  building_.resp.clear();
  RespBuffer spare;
  std::swap(spare, building_.resp);  // keep the (cleared) buffer with its capacity for the next chunk
  inflight_ = std::move(building_);
  building_ = Chunk{};
  std::swap(building_.resp, spare);
  expected_.push_back({Expected::Chunk, 0});
  flush_out();
}

void StreamWriter::handle_reply(Reply reply) {
  if (expected_.empty()) {
    throw RedisError(RedisError::Kind::Fatal, "Redis sent a reply to no command (protocol out of step)");
  }
  auto e = expected_.front();
  if (e.kind == Expected::Hwm) {
    expected_.pop_front();
    handle_hwm_reply(e.stream, reply);
  } else {
    handle_chunk_reply(reply);
  }
}

void StreamWriter::handle_hwm_reply(Handle h, Reply r) {
  auto& s = streams_[h];
  if (r.is(ReplyType::Error)) {
    auto msg = r.text();
    if (msg.find("no such key") != std::string_view::npos) {
      s.hwm = {};
      s.state = HwmState::Known;
      return;
    }
    auto kind = is_retryable_redis_error(msg) ? RedisError::Kind::Transient : RedisError::Kind::Fatal;
    throw RedisError(kind, fmt::format("Redis refused XINFO STREAM {}: {}", s.key, msg));
  }
  // Field names and values alternate; some values (first-entry, last-entry) are arrays themselves.
  for (std::size_t i = 0; i + 1 < r.size(); i += 2) {
    auto k = r[i];
    auto v = r[i + 1];
    if (k.is(ReplyType::String) && k.text() == "last-generated-id" && v.is(ReplyType::String)) {
      if (auto id = parse_stream_id(v.text())) {
        s.hwm = *id;
        s.state = HwmState::Known;
        return;
      }
    }
  }
  throw RedisError(RedisError::Kind::Fatal, fmt::format("unexpected reply to XINFO STREAM {}", s.key));
}

void StreamWriter::handle_chunk_reply(Reply r) {
  auto& c = *inflight_;
  std::size_t step = c.replies++;
  bool refused = r.is(ReplyType::Error);
  if (step == 0 && refused) c.multi_refused = true;
  if (step > 0 && step <= c.commands && c.multi_refused) {
    // Without MULTI the commands ran one by one. Stored-then-refused leaves a prefix, which the
    // replay filter handles; refused-then-stored leaves a hole it would step over.
    if (refused) {
      c.refused_outside_multi = true;
    } else if (c.refused_outside_multi) {
      c.hole = true;
    }
  }
  if (step <= c.commands) {
    // MULTI's +OK, then +QUEUED per command; a refusal here aborts the whole EXEC.
    if (refused && c.first_error.empty()) {
      c.first_error = std::string(r.text());
      if (step > 0 && c.info[step - 1].stream != kNoStream) {
        const auto& cmd = c.info[step - 1];
        c.first_error += fmt::format(" (XADD {} {})", streams_[cmd.stream].key, cmd.id.str());
      }
    }
    return;
  }
  expected_.pop_front();
  finish_chunk(r);
}

void StreamWriter::finish_chunk(Reply r) {
  Chunk c = std::move(*inflight_);
  inflight_.reset();
  if (c.hole) {
    throw RedisError(RedisError::Kind::Fatal,
                     fmt::format("Redis refused MULTI ({}) and then stored some of the chunk's writes after refusing "
                                 "others: a stream may have a hole; check the streams before restarting",
                                 c.first_error));
  }
  if (c.multi_refused && c.refused_outside_multi) {
    throw RedisError(is_retryable_redis_error(c.first_error) ? RedisError::Kind::Transient : RedisError::Kind::Fatal,
                     fmt::format("Redis refused the write: {}", c.first_error));
  }
  if (c.multi_refused) {
    // Every command ran and was stored, in order, just not atomically: the chunk is acknowledged.
    entries_written_ += c.commands;
    if (c.ack_lsn > acked_lsn_) acked_lsn_ = c.ack_lsn;
    return;
  }
  if (r.is(ReplyType::Error) || r.is(ReplyType::Nil)) {
    std::string msg = c.first_error.empty() ? std::string(r.is(ReplyType::Nil) ? "EXEC aborted" : r.text())
                                            : c.first_error;
    // Refusals decided at EXEC time (OOM once the queued commands are in, READONLY after a
    // failover) arrive wrapped: classify what is inside.
    constexpr std::string_view wrapped = "EXECABORT Transaction discarded because of: ";
    if (msg.rfind(wrapped, 0) == 0) msg.erase(0, wrapped.size());
    auto kind = is_retryable_redis_error(msg) ? RedisError::Kind::Transient : RedisError::Kind::Fatal;
    throw RedisError(kind, fmt::format("Redis refused the write: {}", msg));
  }
  if (!r.is(ReplyType::Array) || r.size() != c.commands) {
    throw RedisError(RedisError::Kind::Fatal, "unexpected reply to EXEC");
  }
  for (std::size_t i = 0; i < r.size(); ++i) {
    auto e = r[i];
    if (!e.is(ReplyType::Error)) continue;
    const auto& cmd = c.info[i];
    auto msg = e.text();
    if (cmd.stream == kNoStream) {
      throw RedisError(RedisError::Kind::Fatal, fmt::format("Redis refused a schema registry write: {}", msg));
    }
    const auto& key = streams_[cmd.stream].key;
    if (msg.find("equal or smaller") != std::string_view::npos) {
      // Our IDs only grow and replays are filtered, so another writer has used this stream.
      throw RedisError(RedisError::Kind::Conflict,
                       fmt::format("stream {} already holds an entry at or above {}: another writer uses it; "
                                   "walstream will not skip or reorder (delete the stream or use another --prefix)",
                                   key, cmd.id.str()));
    }
    throw RedisError(RedisError::Kind::Fatal, fmt::format("Redis refused XADD {} {}: {}", key, cmd.id.str(), msg));
  }
  for (const auto& cmd : c.info) {
    if (cmd.stream != kNoStream) ++entries_written_;
  }
  if (c.ack_lsn > acked_lsn_) acked_lsn_ = c.ack_lsn;
}

}  // namespace walstream
