#include "redis_client.h"

#include <hiredis/hiredis.h>

#include <fmt/format.h>

#include "sentinel.h"

namespace walstream {

void RedisReply::Deleter::operator()(redisReply* r) const { freeReplyObject(r); }

RedisReply::RedisReply(redisReply* r) : reply_(r) {}
bool RedisReply::is_nil() const { return reply_->type == REDIS_REPLY_NIL; }
bool RedisReply::is_error() const { return reply_->type == REDIS_REPLY_ERROR; }
bool RedisReply::is_array() const { return reply_->type == REDIS_REPLY_ARRAY; }
std::string_view RedisReply::str() const {
  return reply_->str ? std::string_view(reply_->str, reply_->len) : std::string_view();
}
long long RedisReply::integer() const { return reply_->integer; }
std::size_t RedisReply::size() const { return reply_->type == REDIS_REPLY_ARRAY ? reply_->elements : 0; }

namespace {

std::string text_of(const redisReply* r) { return r->str ? std::string(r->str, r->len) : std::string(); }

std::vector<StreamEntry> entries_of(const redisReply* r) {
  std::vector<StreamEntry> out;
  if (r->type != REDIS_REPLY_ARRAY) return out;
  for (std::size_t i = 0; i < r->elements; ++i) {
    const auto* e = r->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) continue;
    StreamEntry entry;
    entry.id = text_of(e->element[0]);
    const auto* f = e->element[1];
    // An entry deleted while pending in a group comes back with nil fields.
    if (f->type == REDIS_REPLY_ARRAY) {
      for (std::size_t j = 0; j + 1 < f->elements; j += 2) {
        entry.fields.emplace_back(text_of(f->element[j]), text_of(f->element[j + 1]));
      }
    }
    out.push_back(std::move(entry));
  }
  return out;
}

}  // namespace

std::vector<std::optional<std::string>> RedisReply::optional_strings() const {
  std::vector<std::optional<std::string>> out;
  for (std::size_t i = 0; i < size(); ++i) {
    const auto* e = reply_->element[i];
    out.push_back(e->type == REDIS_REPLY_NIL ? std::nullopt : std::optional<std::string>(text_of(e)));
  }
  return out;
}

std::vector<std::string> RedisReply::strings() const {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < size(); ++i) out.push_back(text_of(reply_->element[i]));
  return out;
}

std::vector<StreamEntry> RedisReply::entries() const { return entries_of(reply_.get()); }

std::vector<std::pair<std::string, std::vector<StreamEntry>>> RedisReply::streams() const {
  std::vector<std::pair<std::string, std::vector<StreamEntry>>> out;
  for (std::size_t i = 0; i < size(); ++i) {
    const auto* s = reply_->element[i];
    if (s->type != REDIS_REPLY_ARRAY || s->elements != 2) continue;
    out.emplace_back(text_of(s->element[0]), entries_of(s->element[1]));
  }
  return out;
}

RedisClient::RedisClient(const RedisUrl& url, std::chrono::milliseconds timeout, bool cluster_node)
    : cluster_node_(cluster_node), url_(url), timeout_(timeout), reader_(redisReaderCreate(), redisReaderFree) {
  if (!reader_) throw std::bad_alloc();
  if (!url.via_sentinel()) {
    open();
    return;
  }
  // Asked at every connection: after a failover the next one finds the new master.
  auto node = find_master(url);
  url_ = url.at(node);
  open();
  display_ = fmt::format("master '{}' at {}", url.master_name, url_.display());
  socket_->set_display(display_);
  check_master_role(*this, url, node);
}

void RedisClient::open() {
  // Connect (and the TLS handshake) within 5 s, or within the client's own timeout when shorter
  // (the sentinels are asked with 500 ms).
  auto connect_timeout = std::chrono::milliseconds(5000);
  if (timeout_.count() > 0) connect_timeout = std::min(connect_timeout, timeout_);
  socket_ = std::make_unique<RedisSocket>(url_, connect_timeout);
  display_ = socket_->display();
  if (!url_.password.empty()) {
    if (url_.user.empty()) {
      checked({"AUTH", url_.password});
    } else {
      checked({"AUTH", url_.user, url_.password});
    }
  }
  if (url_.db != 0) checked({"SELECT", std::to_string(url_.db)});
  // A cluster node answers the first multi-stream MULTI/EXEC with CROSSSLOT and other shards' keys
  // with MOVED: a connection meant for one Redis says what it is before anything is written
  // (ClusterClient and ClusterWriter connect with cluster_node).
  if (cluster_node_) return;
  if (!url_.seeds.empty()) {
    throw RedisError(RedisError::Kind::Fatal,
                     fmt::format("the Redis URL names several nodes ({}), the seeds of a Redis Cluster, where one "
                                 "Redis was expected",
                                 url_.display()));
  }
  auto info = command({"INFO", "cluster"});
  if (!info.is_error() && info.str().find("cluster_enabled:1") != std::string_view::npos) {
    throw RedisError(RedisError::Kind::Fatal,
                     fmt::format("Redis at {} is a Redis Cluster node (cluster_enabled:1), where one Redis was "
                                 "expected (behind Sentinel, or the Redis walstream found at start was no cluster: "
                                 "restart walstream to write to it as one)",
                                 display()));
  }
}

RedisClient::~RedisClient() = default;

const std::string& RedisClient::display() const { return socket_ ? socket_->display() : display_; }

void RedisClient::set_timeout(std::chrono::milliseconds timeout) { timeout_ = timeout; }

std::unique_ptr<RedisSocket> RedisClient::release() {
  // Nothing may be left unparsed: the next reader starts at a reply boundary.
  return std::move(socket_);
}

RedisReply RedisClient::command(const std::vector<std::string>& argv) {
  if (!socket_) {
    throw RedisError(RedisError::Kind::Transient,
                     fmt::format("the Redis connection to {} failed earlier and is closed", url_.display()));
  }
  try {
    return exchange(argv);
  } catch (const RedisError&) {
    // A timeout or a broken read may leave a reply in flight: a later command would read it as its
    // own. The connection goes; the next command says so.
    socket_.reset();
    reader_.reset(redisReaderCreate());
    throw;
  }
}

RedisReply RedisClient::exchange(const std::vector<std::string>& argv) {
  out_.clear();
  out_.command(argv.size());
  for (const auto& a : argv) out_.arg(a);
  socket_->send_all(out_.view(), timeout_);
  for (;;) {
    void* reply = nullptr;
    if (redisReaderGetReply(reader_.get(), &reply) != REDIS_OK) {
      throw RedisError(RedisError::Kind::Transient, fmt::format("cannot parse a reply of Redis at {}: {}", display(),
                                                                reader_->errstr));
    }
    if (reply) return RedisReply(static_cast<redisReply*>(reply));
    char buf[16 * 1024];
    auto n = socket_->recv_wait(buf, sizeof buf, timeout_);
    if (redisReaderFeed(reader_.get(), buf, n) != REDIS_OK) {
      throw RedisError(RedisError::Kind::Transient, fmt::format("cannot parse a reply of Redis at {}: {}", display(),
                                                                reader_->errstr));
    }
  }
}

RedisReply RedisClient::checked(const std::vector<std::string>& argv) {
  auto r = command(argv);
  if (r.is_error()) throw_refusal(display(), argv, r.str());
  return r;
}

RedisReply RedisClient::transaction(std::string_view, const std::vector<std::vector<std::string>>& commands) {
  checked({"MULTI"});
  for (const auto& c : commands) {
    auto queued = command(c);
    if (queued.is_error()) {
      command({"DISCARD"});
      throw_refusal(display(), c, queued.str());
    }
  }
  auto exec = checked({"EXEC"});
  // EXEC does not roll back: a command that failed while running leaves the others applied.
  if (exec.is_nil()) throw RedisError(RedisError::Kind::Transient, fmt::format("Redis at {}: EXEC aborted", display()));
  check_exec(display(), commands, exec);
  return exec;
}

}  // namespace walstream
