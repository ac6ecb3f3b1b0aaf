#include "pg_conn.h"

#include <sys/socket.h>

#include <fmt/format.h>

#include <vector>

#include "errors.h"

namespace walstream {
namespace {

// Errors are classified by SQLSTATE, never by message text (servers speak other languages).
std::string sqlstate_of(const PGresult* r) {
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  return state ? state : "";
}

// The primary message, and the server's detail when it gives one (an invalidated slot says why
// only there), on one line.
std::string result_message(const PGresult* r) {
  const char* primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  if (!primary) return one_line(PQresultErrorMessage(r));
  std::string msg = primary;
  if (const char* detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL)) msg += fmt::format(" ({})", detail);
  return one_line(msg);
}

}  // namespace

// Worth a retry, what a restart, a failover or a walsender still exiting produce:
// 08: connection exceptions; 53: insufficient resources (max_wal_senders, too many connections);
// 55006: object in use ("replication slot … is active for PID n"); 57P01-57P03: shutting down,
// crash recovery, cannot connect now; 57014: a cancelled query (pg_cancel_backend on the walsender);
// 40001/40P01: serialization failure, deadlock. Not 53400 (all replication slots or WAL senders in
// use, a configuration limit): that needs the operator.
// Everything else (42704 a dropped slot or publication, 55000 an invalidated slot, 42501 a missing
// privilege, 58P01 removed WAL…) is fatal: retrying cannot help, and looping would hide it.
bool transient_sqlstate(const PGresult* r) {
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  if (!state) return false;
  std::string_view s(state);
  return s.rfind("08", 0) == 0 || (s.rfind("53", 0) == 0 && s != "53400") || s == "55006" || s == "57P01" ||
         s == "57P02" || s == "57P03" || s == "57014" || s == "40001" || s == "40P01";
}


std::string one_line(std::string s) {
  // libpq prefixes "FATAL:  " / "ERROR:  " and may add a second line of detail: keep one clean line.
  if (auto nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
  for (std::string_view p : {"FATAL:  ", "ERROR:  "}) {
    if (s.rfind(p, 0) == 0) s.erase(0, p.size());
  }
  return s;
}

std::string quote_ident(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

PgConnection PgConnection::open(const std::string& conninfo, bool replication) {
  std::vector<const char*> keys;
  std::vector<const char*> values;
  // Before the user's conninfo, so that a connect_timeout there wins: an unreachable host must not
  // hang a start or a reconnect for the kernel's TCP timeout.
  keys.push_back("connect_timeout");
  values.push_back("10");
  if (!conninfo.empty()) {
    keys.push_back("dbname");
    values.push_back(conninfo.c_str());
  }
  // Later keywords override what the conninfo says: the output formats are not the user's choice.
  keys.push_back("options");
  values.push_back(kSessionOptions);
  keys.push_back("fallback_application_name");
  values.push_back("walstream");
  if (replication) {
    keys.push_back("replication");
    values.push_back("database");
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  PGconn* raw = PQconnectdbParams(keys.data(), values.data(), 1);
  if (!raw) throw PgError(true, "out of memory opening a PostgreSQL connection");
  PgConnection c(raw);
  if (PQstatus(raw) != CONNECTION_OK) {
    std::string msg = one_line(PQerrorMessage(raw));
    if (msg.find("replication role") != std::string::npos || msg.find("REPLICATION attribute") != std::string::npos) {
      throw ConfigError(fmt::format("PostgreSQL role '{}' may not start replication: grant it with ALTER ROLE {} REPLICATION",
                                    PQuser(raw), quote_ident(PQuser(raw))));
    }
    if (msg.find("password authentication failed") != std::string::npos ||
        msg.find("does not exist") != std::string::npos || msg.find("no pg_hba.conf entry") != std::string::npos) {
      throw ConfigError(fmt::format("PostgreSQL refused the connection: {}", msg));
    }
    throw PgError(true, fmt::format("cannot connect to PostgreSQL: {}", msg));
  }
  return c;
}

std::string PgConnection::describe() const {
  auto* c = conn_.get();
  return fmt::format("{}:{}/{}", PQhost(c), PQport(c), PQdb(c));
}

std::string PgConnection::error_message() const { return one_line(PQerrorMessage(conn_.get())); }

PgResult PgConnection::exec(const std::string& sql, ExecStatusType expected) {
  PgResult r(PQexec(conn_.get(), sql.c_str()));
  if (!r || PQresultStatus(r.get()) != expected) {
    bool lost = PQstatus(conn_.get()) != CONNECTION_OK || transient_sqlstate(r.get());
    std::string msg = r ? result_message(r.get()) : error_message();
    throw PgError(lost, msg.empty() ? error_message() : msg, sqlstate_of(r.get()));
  }
  return r;
}

PgResult PgConnection::exec_params(const std::string& sql, const std::vector<std::string>& params,
                                   ExecStatusType expected) {
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p.c_str());
  PgResult r(PQexecParams(conn_.get(), sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                          nullptr, 0));
  if (!r || PQresultStatus(r.get()) != expected) {
    bool lost = PQstatus(conn_.get()) != CONNECTION_OK || transient_sqlstate(r.get());
    std::string msg = r ? result_message(r.get()) : error_message();
    throw PgError(lost, msg.empty() ? error_message() : msg, sqlstate_of(r.get()));
  }
  return r;
}

bool PgConnection::read_copy_row(PgBuffer& out, int& length) {
  char* buf = nullptr;
  int n = PQgetCopyData(conn_.get(), &buf, 0);
  if (n > 0) {
    out.reset(buf);
    length = n;
    return true;
  }
  if (n == -1) {
    PgResult r(PQgetResult(conn_.get()));
    if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
      throw PgError(true, fmt::format("COPY failed: {}", r ? one_line(PQresultErrorMessage(r.get())) : error_message()));
    }
    return false;
  }
  throw PgError(true, fmt::format("COPY failed: {}", error_message()));
}

void PgConnection::start_copy_both(const std::string& start_replication) {
  exec(start_replication, PGRES_COPY_BOTH);
  if (PQsetnonblocking(conn_.get(), 1) != 0) throw PgError(true, "cannot make the replication connection non-blocking");
}

int PgConnection::read_copy(PgBuffer& out) {
  char* buf = nullptr;
  int n = PQgetCopyData(conn_.get(), &buf, 1);
  if (n > 0) {
    out.reset(buf);
    return n;
  }
  if (n == 0) return 0;
  if (n == -1) {
    // The server ended COPY: collect its final result to say why, and whether a retry can help.
    PgResult r(PQgetResult(conn_.get()));
    bool failed = r && PQresultStatus(r.get()) != PGRES_COMMAND_OK;
    std::string why = failed ? result_message(r.get()) : std::string("end of stream");
    bool transient = !failed || PQstatus(conn_.get()) != CONNECTION_OK || !PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) ||
                     transient_sqlstate(r.get());
    throw PgError(transient, fmt::format("PostgreSQL ended replication: {}", why), sqlstate_of(r.get()));
  }
  throw PgError(true, fmt::format("replication connection lost: {}", error_message()));
}

void PgConnection::consume_input() {
  if (PQconsumeInput(conn_.get()) == 0) {
    throw PgError(true, fmt::format("replication connection lost: {}", error_message()));
  }
}

void PgConnection::set_receive_low_water(int bytes) {
  // Only an optimisation: if the kernel refuses, poll() keeps waking on the first byte.
  [[maybe_unused]] int r = setsockopt(socket(), SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof bytes);
}

bool PgConnection::send_copy(std::string_view bytes) {
  if (PQputCopyData(conn_.get(), bytes.data(), static_cast<int>(bytes.size())) != 1) {
    throw PgError(true, fmt::format("cannot send to PostgreSQL: {}", error_message()));
  }
  return flush();
}

bool PgConnection::flush() {
  int r = PQflush(conn_.get());
  if (r < 0) throw PgError(true, fmt::format("cannot send to PostgreSQL: {}", error_message()));
  return r == 0;
}

void PgConnection::end_copy() {
  PQputCopyEnd(conn_.get(), nullptr);
  flush();
}

}  // namespace walstream
