// Errors on the PostgreSQL side, translated once where libpq/libpqxx report them.
// Transient: reconnect with backoff and resume from the slot. Fatal: stop with the message.
#pragma once

#include <stdexcept>
#include <string>

namespace walstream {

class PgError : public std::runtime_error {
 public:
  PgError(bool transient, const std::string& what, std::string sqlstate = {})
      : std::runtime_error(what), transient_(transient), sqlstate_(std::move(sqlstate)) {}
  bool transient() const { return transient_; }
  // The server's SQLSTATE when it sent one ("" for a lost connection or a client-side failure).
  const std::string& sqlstate() const { return sqlstate_; }
  // Another walsender holds the slot: this instance is a standby until it is released.
  bool slot_in_use() const { return sqlstate_ == "55006"; }

 private:
  bool transient_;
  std::string sqlstate_;
};

// A setting or a server state walstream cannot work with; the message says how to fix it.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace walstream
