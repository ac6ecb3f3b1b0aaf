#include "redis_error.h"

namespace walstream {

bool is_retryable_redis_error(std::string_view m) {
  // Whole words: BUSY (a script runs) is retryable, BUSYGROUP and BUSYKEY are not. MOVED and ASK (a
  // Redis Cluster's slot moved, or is moving): the writer's session ends and the next one reads the
  // slot map again.
  for (std::string_view p : {"OOM", "READONLY", "NOAUTH", "WRONGPASS", "NOPERM", "LOADING", "BUSY", "MASTERDOWN",
                             "TRYAGAIN", "NOREPLICAS", "CLUSTERDOWN", "MISCONF", "MOVED", "ASK"}) {
    if (m.substr(0, p.size()) == p && (m.size() == p.size() || m[p.size()] == ' ')) return true;
  }
  return false;
}

bool is_slot_moving_error(std::string_view m) {
  for (std::string_view p : {"MOVED", "ASK", "TRYAGAIN"}) {
    if (m.substr(0, p.size()) == p && (m.size() == p.size() || m[p.size()] == ' ')) return true;
  }
  return false;
}

}  // namespace walstream
