// Errors on the PostgreSQL side, translated once where libpq/libpqxx report them.
// Transient: reconnect with backoff and resume from the slot. Fatal: stop with the message.
#pragma once

#include <stdexcept>
#include <string>

namespace walstream {

class PgError : public std::runtime_error {
 public:
  PgError(bool transient, const std::string& what) : std::runtime_error(what), transient_(transient) {}
  bool transient() const { return transient_; }

 private:
  bool transient_;
};

// A setting or a server state walstream cannot work with; the message says how to fix it.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace walstream
