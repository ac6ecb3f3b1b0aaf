// user_cache_example: an in-memory cache of the `users` table, kept fresh from walstream's stream
// `walstream:public.users` with nothing but hiredis and rapidjson — the record contract is the whole
// interface (docs/design.md), no walstream code is linked.
//
//   user_cache_example [--redis redis://[user:password@]host:port[/db]] [--stream KEY] [--once-caught-up]
//
// It reads the stream from its first entry (walstream's initial snapshot puts every existing row there
// as an `r` record), prints {"caught_up":true,"size":N} once it has read everything, then answers
// commands on stdin, one JSON line each, while it keeps following the stream:
//   get <id>          the user's row, or null
//   email <address>   the row of the user with that email, or null
//   size              {"size":N}
// It exits at the end of stdin. --once-caught-up: do not follow the stream after catching up (a
// consistent answer for scripts and tests: `echo "get 1" | user_cache_example --once-caught-up`).
#include <hiredis/hiredis.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

// ---------------------------------------------------------------- the cache

std::string to_json(const rapidjson::Value& v) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  v.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::optional<std::int64_t> id_in(const rapidjson::Value& object) {
  if (!object.IsObject()) return std::nullopt;
  auto it = object.FindMember("id");
  if (it == object.MemberEnd() || !it->value.IsInt64()) return std::nullopt;
  return it->value.GetInt64();
}

class UserCache {
 public:
  // Applies one stream entry (its field/value pairs). Returns false, with a reason, for an entry it
  // cannot use; the cache is then unchanged.
  bool apply(const std::unordered_map<std::string, std::string>& fields, std::string& why) {
    auto field = [&](const char* name) -> const std::string* {
      auto it = fields.find(name);
      return it == fields.end() ? nullptr : &it->second;
    };
    const std::string* op = field("op");
    if (!op) return (why = "no op field", false);
    std::lock_guard lock(mutex_);
    if (*op == "t") {  // TRUNCATE: every row is gone
      rows_.clear();
      by_email_.clear();
      return true;
    }
    rapidjson::Document key, after, before;
    if (const auto* k = field("key")) key.Parse(k->c_str());
    if (const auto* a = field("after")) after.Parse(a->c_str());
    if (const auto* b = field("before")) before.Parse(b->c_str());
    // The key names the row as it is now; `before` holds the old key when an update changed it.
    auto id = id_in(key);
    if (!id) id = *op == "d" ? id_in(before) : id_in(after);
    if (!id) return (why = "no id in key, after or before", false);

    if (*op == "d") {
      erase(*id);
      return true;
    }
    if (*op != "c" && *op != "u" && *op != "r") return (why = "unknown op " + *op, false);
    if (!after.IsObject()) return (why = "no after row", false);
    if (auto old_id = id_in(before); *op == "u" && old_id && *old_id != *id) erase(*old_id);
    // A TOASTed value the update did not touch is not in the record (listed in `unchanged`): keep
    // the one the cache already has rather than lose it.
    if (const auto* u = field("unchanged")) {
      rapidjson::Document names;
      names.Parse(u->c_str());
      auto old = rows_.find(*id);
      if (names.IsArray() && old != rows_.end()) {
        for (const auto& name : names.GetArray()) {
          if (!name.IsString()) continue;
          auto value = old->second.FindMember(name.GetString());
          if (value == old->second.MemberEnd()) continue;
          rapidjson::Value copy_name(name, after.GetAllocator());
          rapidjson::Value copy_value(value->value, after.GetAllocator());
          after.AddMember(copy_name, copy_value, after.GetAllocator());
        }
      }
    }
    // A profile cache has no business holding credentials.
    after.RemoveMember("password_hash");
    erase(*id);
    if (auto email = after.FindMember("email"); email != after.MemberEnd() && email->value.IsString()) {
      by_email_[email->value.GetString()] = *id;
    }
    rows_[*id] = std::move(after);
    return true;
  }

  std::string get(std::int64_t id) const {
    std::lock_guard lock(mutex_);
    auto it = rows_.find(id);
    return it == rows_.end() ? "null" : to_json(it->second);
  }

  std::string by_email(const std::string& email) const {
    std::lock_guard lock(mutex_);
    auto it = by_email_.find(email);
    if (it == by_email_.end()) return "null";
    auto row = rows_.find(it->second);
    return row == rows_.end() ? "null" : to_json(row->second);
  }

  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return rows_.size();
  }

 private:
  void erase(std::int64_t id) {
    auto it = rows_.find(id);
    if (it == rows_.end()) return;
    if (auto email = it->second.FindMember("email"); email != it->second.MemberEnd() && email->value.IsString()) {
      auto e = by_email_.find(email->value.GetString());
      if (e != by_email_.end() && e->second == id) by_email_.erase(e);
    }
    rows_.erase(it);
  }

  mutable std::mutex mutex_;
  std::unordered_map<std::int64_t, rapidjson::Document> rows_;
  std::unordered_map<std::string, std::int64_t> by_email_;
};

// ---------------------------------------------------------------- Redis

struct Url {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string user, password;
  int db = 0;
};

Url parse_url(std::string_view text) {
  constexpr std::string_view scheme = "redis://";
  if (text.substr(0, scheme.size()) != scheme) throw std::invalid_argument("the Redis URL must start with redis://");
  text.remove_prefix(scheme.size());
  Url url;
  if (auto at = text.rfind('@'); at != std::string_view::npos) {
    auto credentials = text.substr(0, at);
    auto colon = credentials.find(':');
    url.user = std::string(credentials.substr(0, colon));
    if (colon != std::string_view::npos) url.password = std::string(credentials.substr(colon + 1));
    if (colon == std::string_view::npos) std::swap(url.user, url.password);  // redis://secret@host
    text.remove_prefix(at + 1);
  }
  if (auto slash = text.find('/'); slash != std::string_view::npos) {
    if (slash + 1 < text.size()) url.db = std::stoi(std::string(text.substr(slash + 1)));
    text = text.substr(0, slash);
  }
  if (auto colon = text.rfind(':'); colon != std::string_view::npos) {
    url.port = std::stoi(std::string(text.substr(colon + 1)));
    text = text.substr(0, colon);
  }
  if (!text.empty()) url.host = std::string(text);
  return url;
}

using Reply = std::unique_ptr<redisReply, void (*)(void*)>;

class Redis {
 public:
  explicit Redis(const Url& url) : ctx_(redisConnect(url.host.c_str(), url.port), redisFree) {
    if (!ctx_ || ctx_->err) {
      throw std::runtime_error("cannot connect to Redis at " + url.host + ":" + std::to_string(url.port) + ": " +
                               (ctx_ ? ctx_->errstr : "out of memory"));
    }
    if (!url.password.empty()) {
      url.user.empty() ? command({"AUTH", url.password}) : command({"AUTH", url.user, url.password});
    }
    if (url.db != 0) command({"SELECT", std::to_string(url.db)});
  }

  Reply command(const std::vector<std::string>& argv) {
    std::vector<const char*> args;
    std::vector<size_t> lens;
    for (const auto& a : argv) {
      args.push_back(a.data());
      lens.push_back(a.size());
    }
    Reply r(static_cast<redisReply*>(
                redisCommandArgv(ctx_.get(), static_cast<int>(args.size()), args.data(), lens.data())),
            freeReplyObject);
    if (!r) throw std::runtime_error(std::string("lost the Redis connection: ") + ctx_->errstr);
    if (r->type == REDIS_REPLY_ERROR) throw std::runtime_error("Redis refused " + argv[0] + ": " + r->str);
    return r;
  }

 private:
  std::unique_ptr<redisContext, void (*)(redisContext*)> ctx_;
};

std::string text(const redisReply* r) { return r->str ? std::string(r->str, r->len) : std::string(); }

// Reads what the stream holds after `last_id` (waiting up to block_ms for something when > 0), applies
// it, and moves `last_id` on. Returns the number of entries read.
std::size_t read_once(Redis& redis, const std::string& stream, std::string& last_id, UserCache& cache,
                      long block_ms) {
  std::vector<std::string> argv{"XREAD", "COUNT", "1000"};
  if (block_ms > 0) {
    argv.push_back("BLOCK");
    argv.push_back(std::to_string(block_ms));
  }
  argv.insert(argv.end(), {"STREAMS", stream, last_id});
  auto reply = redis.command(argv);
  // [[stream, [[id, [field, value, …]], …]]], or nil when nothing came.
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) return 0;
  const redisReply* entries = reply->element[0]->element[1];
  for (std::size_t i = 0; i < entries->elements; ++i) {
    const redisReply* entry = entries->element[i];
    last_id = text(entry->element[0]);
    std::unordered_map<std::string, std::string> fields;
    const redisReply* pairs = entry->element[1];
    for (std::size_t j = 0; j + 1 < pairs->elements; j += 2) {
      fields[text(pairs->element[j])] = text(pairs->element[j + 1]);
    }
    std::string why;
    if (!cache.apply(fields, why)) std::cerr << "user_cache_example: skipped entry " << last_id << ": " << why << "\n";
  }
  return entries->elements;
}

// ---------------------------------------------------------------- commands

std::string answer(const UserCache& cache, const std::string& line) {
  auto space = line.find(' ');
  std::string verb = line.substr(0, space);
  std::string arg = space == std::string::npos ? "" : line.substr(space + 1);
  if (verb == "get") {
    try {
      std::size_t used = 0;
      auto id = std::stoll(arg, &used);
      if (used == arg.size()) return cache.get(id);
    } catch (const std::exception&) {
    }
    return R"({"error":"get needs a numeric id"})";
  }
  if (verb == "email") return cache.by_email(arg);
  if (verb == "size") return R"({"size":)" + std::to_string(cache.size()) + "}";
  return R"({"error":"unknown command; use get <id>, email <address> or size"})";
}

int usage(const std::string& why) {
  std::cerr << "user_cache_example: " << why
            << "\nusage: user_cache_example [--redis redis://host:port[/db]] [--stream walstream:public.users] "
               "[--once-caught-up]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const char* env = std::getenv("WALSTREAM_REDIS");
  std::string redis_url = env && *env ? env : "redis://127.0.0.1:6379";
  std::string stream = "walstream:public.users";
  bool once = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--once-caught-up") {
      once = true;
    } else if ((arg == "--redis" || arg == "--stream") && i + 1 < argc) {
      (arg == "--redis" ? redis_url : stream) = argv[++i];
    } else {
      return usage("unknown argument '" + arg + "'");
    }
  }

  try {
    Url url;
    try {
      url = parse_url(redis_url);
    } catch (const std::exception& e) {
      return usage(std::string("bad --redis: ") + e.what());
    }
    UserCache cache;
    Redis redis(url);
    // Catch up: everything the stream holds, from its first entry.
    std::string last_id = "0-0";
    while (read_once(redis, stream, last_id, cache, 0) > 0) {
    }
    std::cout << R"({"caught_up":true,"size":)" << cache.size() << "}" << std::endl;

    // Then follow it, while the main thread answers lookups.
    std::atomic<bool> stop{false};
    std::thread follower;
    if (!once) {
      follower = std::thread([&, url] {
        try {
          Redis own(url);  // a blocking XREAD needs a connection of its own
          while (!stop) read_once(own, stream, last_id, cache, 500);
        } catch (const std::exception& e) {
          std::cerr << "user_cache_example: stopped following: " << e.what() << "\n";
        }
      });
    }
    for (std::string line; std::getline(std::cin, line);) {
      if (line.empty()) continue;
      std::cout << answer(cache, line) << std::endl;
    }
    stop = true;
    if (follower.joinable()) follower.join();
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "user_cache_example: " << e.what() << "\n";
    return 1;
  }
}
