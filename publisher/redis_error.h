// Errors from Redis, translated once where hiredis reports them.
// Transient: reconnect and retry from the last confirmed position. Fatal: stop with the message.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace walstream {

class RedisError : public std::runtime_error {
 public:
  // Conflict: a stream already holds an ID at or above one we write. Fenced: another instance took
  // the slot over (its epoch replaced ours): this one must write nothing more and become a standby.
  enum class Kind { Transient, Fatal, Conflict, Fenced };
  RedisError(Kind kind, const std::string& what, bool slot_moving = false)
      : std::runtime_error(what), kind_(kind), slot_moving_(slot_moving) {}
  // Redis answered `reply` (an error reply's text) to `what`: transient if retryable
  // (is_retryable_redis_error), else fatal; slot_moving if it is MOVED, ASK or TRYAGAIN.
  static RedisError refused(const std::string& what, std::string_view reply);
  Kind kind() const { return kind_; }
  bool transient() const { return kind_ == Kind::Transient; }
  // A Redis Cluster answered MOVED, ASK or TRYAGAIN: a slot moved or is moving, which takes a moment,
  // not an outage: retried soon, not after a growing backoff.
  bool slot_moving() const { return slot_moving_; }

 private:
  Kind kind_;
  bool slot_moving_;
};

// Errors that a healthy Redis returns while it cannot take writes for now (out of memory, a replica,
// loading, wrong or missing credentials that an operator can fix): walstream retries them.
bool is_retryable_redis_error(std::string_view message);
// MOVED, ASK or TRYAGAIN: a cluster's slot map changes under the write (RedisError::slot_moving).
bool is_slot_moving_error(std::string_view message);

}  // namespace walstream
