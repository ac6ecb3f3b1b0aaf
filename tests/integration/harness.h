// Integration-test harness: a private PostgreSQL 15 and Redis 7 per test binary, on free loopback
// ports in a temporary folder, stopped at the end; plus walstream as a child process and small
// SQL/Redis helpers. No mocks: everything here talks to real servers. A test may start more servers
// of its own (a Postgres with other options, a Redis and its replicas); they stop when destroyed.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <compare>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace harness {

// A loopback port nothing listens on now, from this process's own block of ports (see harness.cpp).
// The servers below retry on another port when theirs is taken by the time they bind.
int free_port();
// Runs a shell command; throws with its output when it fails.
std::string shell(const std::string& command);

class Postgres {
 public:
  Postgres() = default;
  ~Postgres();  // stops a server still running (-m immediate) and removes its folder
  Postgres(const Postgres&) = delete;
  Postgres& operator=(const Postgres&) = delete;

  void start();
  void stop(bool immediate = false);  // immediate: -m immediate, like a crash
  void restart() { stop(); start(); }
  int port() const { return port_; }
  std::string conninfo(const std::string& db = "postgres", const std::string& user = "postgres") const;
  const std::string& dir() const { return dir_; }
  // Terminates every walsender (what a network cut or a killed backend looks like to walstream).
  void kill_walsenders();
  // Appended to the server's options at start, e.g. "-c wal_level=replica" (a later -c wins).
  std::string extra_options;

 private:
  std::string dir_;
  int port_ = 0;
  bool running_ = false;
};

class Redis {
 public:
  Redis() = default;
  ~Redis();  // stops a server still running and removes its folder
  Redis(const Redis&) = delete;
  Redis& operator=(const Redis&) = delete;

  void start(bool aof = true);
  // Starts as a replica of `master` (--replicaof 127.0.0.1 <port>); restart() keeps it one until promote().
  // Returns once it answers; wait_in_sync() waits for the initial synchronisation.
  void start_replica_of(const Redis& master, bool aof = true);
  void stop();
  // kill -9, reaped: a crash. The AOF (appendfsync always) holds every write Redis acknowledged.
  void crash();
  void restart() { stop(); start(aof_); }
  // REPLICAOF NO ONE: this replica becomes a master with the data it has.
  void promote();
  // This replica is connected to its master, not synchronising, and the master lists it online.
  bool in_sync() const;
  bool wait_in_sync(std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;
  // connected_slaves of INFO replication.
  int connected_replicas() const;
  // One field of INFO <section>, e.g. info("replication", "master_link_status"); empty when absent.
  std::string info(const std::string& section, const std::string& field) const;
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  std::string url() const;
  const std::string& dir() const { return dir_; }
  std::string log() const;  // the server's own log (stdout)
  // Appended to the server's arguments at each start, e.g. {"--tls-port", "7001", …}.
  std::vector<std::string> extra_args;

 private:
  void launch();
  std::string log_path() const { return dir_ + "/redis.log"; }
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
  bool aof_ = true;
  int master_port_ = 0;  // a replica of 127.0.0.1:<master_port_> when not 0
};

// Redis Sentinel: `count` redis-sentinel processes (Debian's redis-sentinel), each on a free loopback
// port with its own folder and config file (which Sentinel rewrites), monitoring one master of the
// harness under a name. Stopped and removed when destroyed.
// Certificates for TLS tests, made with the openssl command in a temporary folder (removed at the
// end): a CA ("ca"), a server certificate for IP 127.0.0.1 signed by it ("server"), an expired one
// ("expired"), one for another host ("elsewhere", DNS redis.example.com), a client certificate
// ("client") and an unrelated CA ("other-ca"). path("server.crt"), path("server.key"), …
class TestCertificates {
 public:
  TestCertificates();
  ~TestCertificates();
  TestCertificates(const TestCertificates&) = delete;
  TestCertificates& operator=(const TestCertificates&) = delete;
  std::string path(const std::string& file) const { return dir_ + "/" + file; }
  // redis-server arguments serving `cert` ("server", "expired", …) on tls_port, plain port kept.
  std::vector<std::string> redis_args(int tls_port, const std::string& cert = "server", bool client_certs = false) const;

 private:
  std::string dir_;
};

class Sentinel {
 public:
  Sentinel() = default;
  ~Sentinel();
  Sentinel(const Sentinel&) = delete;
  Sentinel& operator=(const Sentinel&) = delete;

  // `sentinel monitor <name> 127.0.0.1 <master port> <quorum>` (quorum 0: a majority of `count`), with
  // down-after-milliseconds 1000 and failover-timeout 5000. Returns once every sentinel answers as our
  // own child; wait_ready() waits until they know the master's replicas and each other.
  void start(const Redis& master, const std::string& name, int count = 3, int quorum = 0);
  void stop();  // every sentinel (SIGTERM); the folders stay until destruction
  void stop(std::size_t i);
  // Starts sentinel i again on its port, monitoring `master` (after stop(i)).
  void restart(std::size_t i, const Redis& master);
  std::size_t size() const { return nodes_.size(); }
  int port(std::size_t i) const { return nodes_.at(i).port; }
  // redis-sentinel://127.0.0.1:<p1>,127.0.0.1:<p2>,…#<name> (`name` need not be the monitored one).
  std::string url(const std::string& name) const;
  // The master's port as sentinel i names it (SENTINEL GET-MASTER-ADDR-BY-NAME), 0 when it names none.
  int master_port(std::size_t i) const;
  // Every running sentinel names 127.0.0.1:<port> as the master.
  bool wait_master(int port, std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;
  // Every running sentinel lists `replicas` replicas of the master without a down flag, and the
  // other sentinels (so that a failover is possible and its outcome reaches them all).
  bool wait_ready(int replicas, std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;
  // SENTINEL FAILOVER <name> on sentinel 0; retried while it answers NOGOODSLAVE (its view of the
  // replicas is not fresh yet), within `timeout`; throws on another refusal or when it keeps refusing.
  void failover(std::chrono::milliseconds timeout = std::chrono::seconds(20)) const;
  // A SENTINEL subcommand on sentinel i, flattened like redis_command.
  std::vector<std::string> command(std::size_t i, const std::vector<std::string>& argv) const;
  const std::string& name() const { return name_; }
  std::string log(std::size_t i) const;
  std::string logs() const;  // every sentinel's log, headed by its port

 private:
  struct Node {
    std::string dir;
    int port = 0;
    pid_t pid = -1;
  };
  void launch(Node& node, int master_port, int quorum);
  std::vector<Node> nodes_;
  int quorum_ = 1;
 public:
  // Set before start(): lines appended to each sentinel's config (i: the sentinel), e.g. its TLS
  // port and certificates; the port to monitor when not the master's own port() (its TLS port).
  std::function<std::vector<std::string>(std::size_t i)> extra_config;
  int monitor_port = 0;
  std::string name_;
};

// The servers of this test binary, started on first use and stopped at exit.
Postgres& pg();
Redis& redis();

// SQL through libpqxx, autocommit.
void sql(const std::string& conninfo, const std::string& statements);
std::vector<std::vector<std::optional<std::string>>> query(const std::string& conninfo, const std::string& select);
std::string query_one(const std::string& conninfo, const std::string& select);

// Redis through hiredis.
struct Entry {
  std::string id;
  std::map<std::string, std::string> fields;
};
// Without a port: the shared redis() of this binary.
std::vector<Entry> xrange(const std::string& key);
std::vector<std::string> redis_command(const std::vector<std::string>& argv);  // flattened reply
long long xlen(const std::string& key);
std::vector<Entry> xrange(int port, const std::string& key);
std::vector<std::string> redis_command(int port, const std::vector<std::string>& argv);
long long xlen(int port, const std::string& key);
inline std::vector<Entry> xrange(const Redis& r, const std::string& key) { return xrange(r.port(), key); }
inline std::vector<std::string> redis_command(const Redis& r, const std::vector<std::string>& argv) {
  return redis_command(r.port(), argv);
}
inline long long xlen(const Redis& r, const std::string& key) { return xlen(r.port(), key); }

// walstream as a child process; stderr+stdout go to a log file.
class Walstream {
 public:
  explicit Walstream(std::vector<std::string> args, std::map<std::string, std::string> env = {});
  ~Walstream();
  Walstream(const Walstream&) = delete;
  Walstream& operator=(const Walstream&) = delete;

  void signal(int sig);
  // Waits for exit; returns the exit code (128+signal when killed), or -1 on timeout.
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  bool running();
  std::string log() const;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  std::string log_path_;
};

// Runs walstream to completion (for bad-input checks): exit code and output.
struct Outcome {
  int code;
  std::string output;
};
Outcome run_walstream(const std::vector<std::string>& args, std::map<std::string, std::string> env = {},
                      std::chrono::milliseconds timeout = std::chrono::seconds(30));

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout = std::chrono::seconds(30));

// A fresh database, slot name and stream prefix for one test, so tests of a binary never share state.
struct Scope {
  Scope();
  ~Scope();
  std::string db;
  std::string conninfo;
  std::string slot;
  std::string publication = "walstream";
  std::string prefix;
  std::string stream(const std::string& table) const { return prefix + table; }
  // --pg --redis --slot --publication --prefix --status-interval 1
  std::vector<std::string> args() const;
  // The same against another Redis than the shared one.
  std::vector<std::string> args(const Redis& redis) const;
  std::vector<std::string> args(const std::string& redis_url) const;  // a cluster's seeds, a sentinel URL…
  void sql(const std::string& statements) const { harness::sql(conninfo, statements); }
  std::string query_one(const std::string& select) const { return harness::query_one(conninfo, select); }
  // The slot's confirmed_flush_lsn reached the current WAL insert position.
  bool caught_up() const;
  // walstream has started replication on the slot (walsender past 'startup'): every transaction
  // committed from now on is streamed. Before that, one may still fall into the initial snapshot.
  bool streaming() const;
};

// args followed by more (a walstream command line with extra flags).
std::vector<std::string> with(std::vector<std::string> args, std::initializer_list<std::string> more);
// "0/16B3748" -> 23803720; throws on anything that is not an LSN's text form.
std::uint64_t parse_lsn(const std::string& text);

// A stream entry ID as walstream writes it: <commit_lsn>-<seq>.
struct EntryId {
  std::uint64_t lsn = 0;
  std::uint64_t seq = 0;
  auto operator<=>(const EntryId&) const = default;
};
EntryId parse_entry_id(const std::string& id);

// A logical slot a test makes itself (a test_decoding reference beside walstream's), dropped at scope exit.
class TempSlot {
 public:
  TempSlot(const Scope& scope, std::string name, const std::string& plugin);
  ~TempSlot();
  TempSlot(const TempSlot&) = delete;
  TempSlot& operator=(const TempSlot&) = delete;
  const std::string& name() const { return name_; }

 private:
  const Scope& scope_;
  std::string name_;
};

// GET http://127.0.0.1:<port><path> (cpp-httplib's client): status 0 when nothing answered.
struct HttpReply {
  int status = 0;
  std::string body;
};
HttpReply http_get(int port, const std::string& path);
// The value of one series of a Prometheus exposition ("walstream_active",
// "walstream_changes_total{table=\"public.t\"}"), or nullopt when it has no such line.
std::optional<double> series_value(const std::string& exposition, const std::string& series);
// Both: the series from a scrape of walstream's /metrics on port.
std::optional<double> scrape_value(int port, const std::string& series);

// RSS high-water mark of a process in kB (VmHWM), or -1.
long peak_rss_kb(pid_t pid);

}  // namespace harness
