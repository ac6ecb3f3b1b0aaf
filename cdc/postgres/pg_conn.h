// A libpq connection for the streaming replication protocol (libpqxx keeps its PGconn private).
// One owner per handle: PGconn, PGresult and CopyData buffers are freed by their unique_ptrs.
#pragma once

#include <libpq-fe.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace walstream {

struct PgResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

struct PgBufferDeleter {
  void operator()(char* p) const { PQfreemem(p); }
};
using PgBuffer = std::unique_ptr<char, PgBufferDeleter>;

// The session settings every connection that turns values into text must use: the typed codec
// relies on these exact output formats.
inline constexpr const char* kSessionOptions =
    "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=iso_8601 -c extra_float_digits=3 -c bytea_output=hex";

class PgConnection {
 public:
  // conninfo is a libpq keyword string or URI (empty: libpq's PG* variables and defaults).
  // replication=true opens a walsender connection for the database (replication=database).
  // Throws PgError (transient) when the server cannot be reached, ConfigError when it refuses us.
  static PgConnection open(const std::string& conninfo, bool replication);

  PGconn* get() const { return conn_.get(); }
  // host:port/dbname, never the password.
  std::string describe() const;
  std::string error_message() const;

  // Runs a command and checks its status; throws PgError with the server's message.
  PgResult exec(const std::string& sql, ExecStatusType expected);
  PgResult exec_params(const std::string& sql, const std::vector<std::string>& params, ExecStatusType expected);
  // COPY … TO STDOUT: one row per call (blocking) until it returns false at the end of the copy.
  bool read_copy_row(PgBuffer& out, int& length);

  // CopyBoth streaming, non-blocking after start_copy_both().
  void start_copy_both(const std::string& start_replication);
  int socket() const { return PQsocket(conn_.get()); }
  // >0: one message in `out`; 0: nothing complete yet; -1: the server ended the stream.
  int read_copy(PgBuffer& out);
  void consume_input();
  // poll() reports the socket readable only once this many bytes wait (SO_RCVLOWAT; 1 = any byte).
  void set_receive_low_water(int bytes);
  // Queues one CopyData message and tries to send it; true when all of it left.
  bool send_copy(std::string_view bytes);
  bool flush();  // true when nothing is left to send
  void end_copy();

 private:
  explicit PgConnection(PGconn* c) : conn_(c, PQfinish) {}
  std::unique_ptr<PGconn, void (*)(PGconn*)> conn_;
};

// The first line of a libpq/libpqxx error without its "ERROR:  " prefix: one log line per event.
std::string one_line(std::string message);
// An error a retry can cure (a lost connection, a cancel, a deadlock, a server shutting down…).
bool transient_sqlstate(const PGresult* r);

// Double-quotes an identifier for a replication command or SQL.
std::string quote_ident(std::string_view name);

}  // namespace walstream
