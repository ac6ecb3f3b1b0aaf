// Errors from Redis, translated once where hiredis reports them.
// Transient: reconnect and retry from the last confirmed position. Fatal: stop with the message.
#pragma once

#include <stdexcept>
#include <string>

namespace walstream {

class RedisError : public std::runtime_error {
 public:
  // Conflict: a stream already holds an ID at or above one we write. Fenced: another instance took
  // the slot over (its epoch replaced ours): this one must write nothing more and become a standby.
  enum class Kind { Transient, Fatal, Conflict, Fenced };
  RedisError(Kind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  Kind kind() const { return kind_; }
  bool transient() const { return kind_ == Kind::Transient; }

 private:
  Kind kind_;
};

// Errors that a healthy Redis returns while it cannot take writes for now (out of memory, a replica,
// loading, wrong or missing credentials that an operator can fix): walstream retries them.
bool is_retryable_redis_error(std::string_view message);

}  // namespace walstream
