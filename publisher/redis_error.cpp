#include "redis_error.h"

#include <initializer_list>

namespace walstream {

namespace {

// The error reply's first word is one of `words`, whole: BUSY is not BUSYGROUP.
bool first_word_is_one_of(std::string_view m, std::initializer_list<std::string_view> words) {
  for (auto p : words) {
    if (m.substr(0, p.size()) == p && (m.size() == p.size() || m[p.size()] == ' ')) return true;
  }
  return false;
}

}  // namespace

bool is_retryable_redis_error(std::string_view m) {
  // Whole words: BUSY (a script runs) is retryable, BUSYGROUP and BUSYKEY are not. MOVED and ASK (a
  // Redis Cluster's slot moved, or is moving): the writer's session ends and the next one reads the
  // slot map again.
  return first_word_is_one_of(m, {"OOM", "READONLY", "NOAUTH", "WRONGPASS", "NOPERM", "LOADING", "BUSY", "MASTERDOWN",
                                  "TRYAGAIN", "NOREPLICAS", "CLUSTERDOWN", "MISCONF", "MOVED", "ASK"});
}

bool is_slot_moving_error(std::string_view m) { return first_word_is_one_of(m, {"MOVED", "ASK", "TRYAGAIN"}); }

RedisError RedisError::refused(const std::string& what, std::string_view reply) {
  return RedisError(is_retryable_redis_error(reply) ? Kind::Transient : Kind::Fatal, what, is_slot_moving_error(reply));
}

}  // namespace walstream
