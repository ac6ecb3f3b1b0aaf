#include "harness.h"

#include <regex>

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <pqxx/pqxx>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace harness {
namespace {

const std::string kPgBin = "/usr/lib/postgresql/15/bin";

std::string make_temp_dir(const char* tag) {
  std::string tmpl = fmt::format("/tmp/walstream-{}-XXXXXX", tag);
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

bool is_root() { return geteuid() == 0; }

std::string as_postgres(const std::string& cmd) {
  return is_root() ? "runuser -u postgres -- " + cmd : cmd;
}

struct Servers {
  Postgres pg;
  Redis redis;
  bool pg_started = false;
  bool redis_started = false;
  ~Servers() {
    try {
      if (redis_started) redis.stop();
      if (pg_started) pg.stop();
      for (const auto& dir : {pg.dir(), redis.dir()}) {
        if (!dir.empty() && dir.rfind("/tmp/walstream-", 0) == 0) shell("rm -rf " + dir);
      }
    } catch (...) {
    }
  }
};

Servers& servers() {
  static Servers s;
  return s;
}

std::atomic<int> g_scope_counter{0};

}  // namespace

// Ports. Binding port 0, reading the number the kernel chose and closing the socket (what this did
// before) races: under `ctest -j2` the kernel may give the same ephemeral number to the other test
// binary, or to any process's outgoing connection, before our server binds it. So ports come from
// outside the kernel's ephemeral range (net.ipv4.ip_local_port_range), where no connection gets a
// local port on its own, and each process walks its own block of that range, chosen by a hash of its
// pid, so concurrent test binaries normally never ask for the same numbers. Each candidate is still
// checked with bind() (another process may hold it). Two pids hashed to one block can still race
// for a port, so the servers' start is retried on a new port when the server cannot bind
// (Postgres: "Address already in use" in its log; Redis: the child exits so, or the server answering
// on the port is not our child).
int free_port() {
  static const auto range = [] {
    int low = 32768, high = 60999;
    std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
    in >> low >> high;
    constexpr int kFloor = 10000;  // above the well-known and registered ports services tend to use
    if (low - kFloor >= 4096) return std::pair{kFloor, low - 1};
    return std::pair{high + 1, 65535};
  }();
  static std::atomic<unsigned> next{0};
  constexpr unsigned kBlock = 128;
  const unsigned span = static_cast<unsigned>(range.second - range.first + 1);
  const unsigned blocks = std::max(1u, span / kBlock);
  const unsigned start = static_cast<unsigned>((static_cast<std::uint64_t>(getpid()) * 2654435761u) % blocks) * kBlock;
  for (unsigned tries = 0; tries < span; ++tries) {
    int port = range.first + static_cast<int>((start + next++) % span);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("socket failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    close(fd);
    if (ok) return port;
  }
  throw std::runtime_error(fmt::format("no free port in {}-{}", range.first, range.second));
}

std::string shell(const std::string& command) {
  std::string full = command + " 2>&1";
  FILE* p = popen(full.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed");
  std::string out;
  char buf[4096];
  while (auto n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int rc = pclose(p);
  if (rc != 0) throw std::runtime_error(fmt::format("command failed ({}): {}\n{}", rc, command, out));
  return out;
}

// ---------------------------------------------------------------- PostgreSQL

namespace {

std::streamoff file_size(const std::string& path) {
  std::ifstream in(path, std::ios::ate);
  return in ? static_cast<std::streamoff>(in.tellg()) : 0;
}

std::string slurp(const std::string& path, std::streamoff from = 0) {
  std::ifstream in(path);
  in.seekg(from);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

constexpr int kStartAttempts = 8;  // fresh ports tried when the server finds its port taken

// process_id of INFO server of whatever answers on the port, within a second.
std::string server_pid(int port);

}  // namespace

void Postgres::start() {
  if (dir_.empty()) {
    dir_ = make_temp_dir("pg");
    shell(fmt::format("mkdir -p {0}/data {0}/sock {0}/log", dir_));
    if (is_root()) shell(fmt::format("chown -R postgres:postgres {0} && chmod 755 {0}", dir_));
    shell(as_postgres(fmt::format("{}/initdb -D {}/data -A trust -U postgres --no-sync", kPgBin, dir_)));
  }
  // A restart keeps the port, like a real server coming back where clients expect it.
  const bool fresh = port_ == 0;
  const std::string log = dir_ + "/log/postgres.log";
  for (int attempt = 1;; ++attempt) {
    if (port_ == 0) port_ = free_port();
    auto log_at = file_size(log);
    try {
      shell(as_postgres(fmt::format(
          "{}/pg_ctl -D {}/data -l {} -w -t 60 start -o \"-c port={} -c listen_addresses=127.0.0.1 "
          "-c unix_socket_directories={}/sock -c wal_level=logical -c max_replication_slots=50 -c max_wal_senders=50 "
          "-c fsync=off -c wal_sender_timeout=60s {}\"",
          kPgBin, dir_, log, port_, dir_, extra_options)));
      running_ = true;
      return;
    } catch (const std::exception&) {
      bool port_taken = slurp(log, log_at).find("Address already in use") != std::string::npos;
      if (!fresh || !port_taken || attempt == kStartAttempts) throw;
      port_ = 0;
    }
  }
}

void Postgres::stop(bool immediate) {
  if (dir_.empty()) return;
  shell(as_postgres(fmt::format("{}/pg_ctl -D {}/data -m {} -w -t 60 stop", kPgBin, dir_, immediate ? "immediate" : "fast")));
  running_ = false;
}

Postgres::~Postgres() {
  try {
    if (running_) stop(true);
    if (!dir_.empty() && dir_.rfind("/tmp/walstream-", 0) == 0) shell("rm -rf " + dir_);
  } catch (...) {
  }
}

std::string Postgres::conninfo(const std::string& db, const std::string& user) const {
  return fmt::format("postgresql://{}@127.0.0.1:{}/{}", user, port_, db);
}

void Postgres::kill_walsenders() {
  sql(conninfo(), "SELECT pg_terminate_backend(pid) FROM pg_stat_replication");
}

// ---------------------------------------------------------------- Redis

void Redis::start(bool aof) {
  aof_ = aof;
  if (dir_.empty()) dir_ = make_temp_dir("redis");
  // A restart keeps the port, like a real server coming back where clients expect it.
  const bool fresh = port_ == 0;
  for (int attempt = 1;; ++attempt) {
    if (port_ == 0) port_ = free_port();
    auto log_at = file_size(log_path());
    try {
      launch();
      return;
    } catch (const std::exception&) {
      bool port_taken = slurp(log_path(), log_at).find("Address already in use") != std::string::npos;
      if (!fresh || !port_taken || attempt == kStartAttempts) throw;
      port_ = 0;
    }
  }
}

void Redis::start_replica_of(const Redis& master, bool aof) {
  master_port_ = master.port();
  start(aof);
}

// Starts redis-server on port_ and waits until it answers as our own child: an answer from some
// other process's server on that port does not count.
void Redis::launch() {
  int log_fd = open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::runtime_error("cannot open " + log_path());
  // No delay before a full synchronisation of a new replica (Redis 7 waits 5 s for more replicas).
  std::vector<std::string> args = {"redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1",
                                   "--dir", dir_, "--save", "", "--appendonly", aof_ ? "yes" : "no",
                                   "--appendfsync", "always", "--repl-diskless-sync-delay", "0"};
  if (master_port_ != 0) args.insert(args.end(), {"--replicaof", "127.0.0.1", std::to_string(master_port_)});
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  pid_ = fork();
  if (pid_ == 0) {
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execvp("redis-server", argv.data());
    _exit(127);
  }
  close(log_fd);
  if (pid_ < 0) throw std::runtime_error("fork failed");
  bool exited = false;
  bool up = wait_until(
      [&] {
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
          exited = true;
          return true;
        }
        try {
          // Ours, and done loading its AOF (PING answers LOADING until then).
          return server_pid(port_) == std::to_string(pid_) &&
                 redis_command(port_, {"PING"}) == std::vector<std::string>{"PONG"};
        } catch (...) {
          return false;
        }
      },
      std::chrono::seconds(20));
  if (exited || !up) {
    if (!exited) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
    throw std::runtime_error(fmt::format("redis-server on port {} did not start:\n{}", port_, log()));
  }
}

void Redis::stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

void Redis::crash() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void Redis::promote() {
  redis_command(port_, {"REPLICAOF", "NO", "ONE"});
  master_port_ = 0;
}

std::string Redis::info(const std::string& section, const std::string& field) const {
  auto text = redis_command(port_, {"INFO", section}).at(0);
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > field.size() && line.compare(0, field.size(), field) == 0 && line[field.size()] == ':') {
      return line.substr(field.size() + 1);
    }
  }
  return {};
}

bool Redis::in_sync() const {
  if (master_port_ == 0 || pid_ <= 0) return false;
  try {
    if (info("replication", "master_link_status") != "up" || info("replication", "master_sync_in_progress") != "0") {
      return false;
    }
    // The master's view: slave<n>:ip=127.0.0.1,port=<ours>,state=online,…
    auto text = redis_command(master_port_, {"INFO", "replication"}).at(0);
    return text.find(fmt::format("port={},state=online", port_)) != std::string::npos;
  } catch (...) {
    return false;
  }
}

bool Redis::wait_in_sync(std::chrono::milliseconds timeout) const {
  return wait_until([&] { return in_sync(); }, timeout);
}

int Redis::connected_replicas() const { return std::stoi(info("replication", "connected_slaves")); }

Redis::~Redis() {
  try {
    stop();
    if (!dir_.empty() && dir_.rfind("/tmp/walstream-", 0) == 0) shell("rm -rf " + dir_);
  } catch (...) {
  }
}

std::string Redis::log() const { return slurp(log_path()); }

std::string Redis::url() const { return fmt::format("redis://127.0.0.1:{}", port_); }

// ---------------------------------------------------------------- Redis Sentinel

namespace {

// Flattened key/value pairs (SENTINEL MASTER / REPLICAS replies) -> the value of `key`, or "".
std::string field_of(const std::vector<std::string>& flat, const std::string& key) {
  for (std::size_t i = 0; i + 1 < flat.size(); i += 2) {
    if (flat[i] == key) return flat[i + 1];
  }
  return {};
}

}  // namespace

TestCertificates::TestCertificates() {
  dir_ = make_temp_dir("tls");
  auto in = [&](const std::string& cmd) { shell(fmt::format("cd {} && {} 2>&1", dir_, cmd)); };
  in("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj '/CN=walstream test CA'");
  in("openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt -days 2 -subj '/CN=other CA'");
  auto issue = [&](const std::string& name, const std::string& cn, const std::string& san, int days, int serial) {
    in(fmt::format("openssl req -newkey rsa:2048 -nodes -keyout {0}.key -out {0}.csr -subj '/CN={1}'", name, cn));
    in(fmt::format("printf 'subjectAltName={}\\n' > {}.ext", san, name));
    in(fmt::format("openssl x509 -req -in {0}.csr -CA ca.crt -CAkey ca.key -set_serial {1} -days {2} "
                   "-extfile {0}.ext -out {0}.crt",
                   name, serial, days));
  };
  issue("server", "127.0.0.1", "IP:127.0.0.1", 2, 10);
  issue("expired", "127.0.0.1", "IP:127.0.0.1", -1, 11);  // notAfter is yesterday
  issue("elsewhere", "redis.example.com", "DNS:redis.example.com", 2, 12);
  issue("client", "walstream", "DNS:walstream", 2, 13);
}

TestCertificates::~TestCertificates() {
  try {
    if (dir_.rfind("/tmp/walstream-", 0) == 0) shell("rm -rf " + dir_);
  } catch (...) {
  }
}

std::vector<std::string> TestCertificates::redis_args(int tls_port, const std::string& cert, bool client_certs) const {
  return {"--tls-port",     std::to_string(tls_port), "--tls-cert-file",    path(cert + ".crt"),
          "--tls-key-file", path(cert + ".key"),       "--tls-ca-cert-file", path("ca.crt"),
          "--tls-auth-clients", client_certs ? "yes" : "no"};
}

void Sentinel::start(const Redis& master, const std::string& name, int count, int quorum) {
  if (!nodes_.empty()) throw std::runtime_error("Sentinel::start: already started");
  name_ = name;
  if (quorum <= 0) quorum = count / 2 + 1;
  quorum_ = quorum;
  for (int i = 0; i < count; ++i) {
    Node& node = nodes_.emplace_back();
    node.dir = make_temp_dir("sentinel");
    for (int attempt = 1;; ++attempt) {
      node.port = free_port();
      auto log_at = file_size(node.dir + "/sentinel.log");
      try {
        launch(node, master.port(), quorum);
        break;
      } catch (const std::exception&) {
        bool port_taken = slurp(node.dir + "/sentinel.log", log_at).find("Address already in use") != std::string::npos;
        if (!port_taken || attempt == kStartAttempts) throw;
      }
    }
  }
}

// Writes the config (Sentinel needs a file it can rewrite) and starts redis-sentinel on it; returns
// once it answers as our own child.
void Sentinel::launch(Node& node, int master_port, int quorum) {
  if (monitor_port != 0) master_port = monitor_port;
  const std::size_t index = static_cast<std::size_t>(&node - nodes_.data());
  const std::string conf = node.dir + "/sentinel.conf";
  const std::string log_path = node.dir + "/sentinel.log";
  {
    std::ofstream out(conf, std::ios::trunc);
    out << fmt::format(
        "port {0}\nbind 127.0.0.1\ndir {1}\n"
        "sentinel monitor {2} 127.0.0.1 {3} {4}\n"
        "sentinel down-after-milliseconds {2} 1000\n"
        "sentinel failover-timeout {2} 5000\n",
        node.port, node.dir, name_, master_port, quorum);
    if (extra_config) {
      for (const auto& line : extra_config(index)) out << line << '\n';
    }
    if (!out) throw std::runtime_error("cannot write " + conf);
  }
  int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::runtime_error("cannot open " + log_path);
  node.pid = fork();
  if (node.pid == 0) {
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    execlp("redis-sentinel", "redis-sentinel", conf.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(log_fd);
  if (node.pid < 0) throw std::runtime_error("fork failed");
  bool exited = false;
  bool up = wait_until(
      [&] {
        int status = 0;
        if (waitpid(node.pid, &status, WNOHANG) == node.pid) {
          exited = true;
          return true;
        }
        try {
          return server_pid(node.port) == std::to_string(node.pid) &&
                 redis_command(node.port, {"PING"}) == std::vector<std::string>{"PONG"};
        } catch (...) {
          return false;
        }
      },
      std::chrono::seconds(20));
  if (exited || !up) {
    if (!exited) {
      kill(node.pid, SIGKILL);
      waitpid(node.pid, nullptr, 0);
    }
    node.pid = -1;
    throw std::runtime_error(
        fmt::format("redis-sentinel on port {} did not start (is Debian's redis-sentinel installed?):\n{}", node.port,
                    slurp(log_path)));
  }
}

void Sentinel::stop(std::size_t i) {
  auto& node = nodes_.at(i);
  if (node.pid <= 0) return;
  kill(node.pid, SIGTERM);
  waitpid(node.pid, nullptr, 0);
  node.pid = -1;
}

void Sentinel::restart(std::size_t i, const Redis& master) {
  auto& node = nodes_.at(i);
  if (node.pid > 0) throw std::runtime_error("Sentinel::restart: still running");
  launch(node, master.port(), quorum_);
}

void Sentinel::stop() {
  for (std::size_t i = 0; i < nodes_.size(); ++i) stop(i);
}

Sentinel::~Sentinel() {
  try {
    stop();
    for (const auto& node : nodes_) {
      if (!node.dir.empty() && node.dir.rfind("/tmp/walstream-", 0) == 0) shell("rm -rf " + node.dir);
    }
  } catch (...) {
  }
}

std::string Sentinel::url(const std::string& name) const {
  std::string hosts;
  for (const auto& node : nodes_) hosts += fmt::format("{}127.0.0.1:{}", hosts.empty() ? "" : ",", node.port);
  return fmt::format("redis-sentinel://{}#{}", hosts, name);
}

std::vector<std::string> Sentinel::command(std::size_t i, const std::vector<std::string>& argv) const {
  return redis_command(nodes_.at(i).port, argv);
}

int Sentinel::master_port(std::size_t i) const {
  try {
    auto addr = command(i, {"SENTINEL", "GET-MASTER-ADDR-BY-NAME", name_});
    return addr.size() == 2 ? std::stoi(addr[1]) : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

bool Sentinel::wait_master(int port, std::chrono::milliseconds timeout) const {
  return wait_until(
      [&] {
        for (std::size_t i = 0; i < nodes_.size(); ++i) {
          if (nodes_[i].pid > 0 && master_port(i) != port) return false;
        }
        return true;
      },
      timeout);
}

bool Sentinel::wait_ready(int replicas, std::chrono::milliseconds timeout) const {
  auto running = static_cast<int>(std::count_if(nodes_.begin(), nodes_.end(), [](const Node& n) { return n.pid > 0; }));
  return wait_until(
      [&] {
        try {
          for (std::size_t i = 0; i < nodes_.size(); ++i) {
            if (nodes_[i].pid <= 0) continue;
            auto master = command(i, {"SENTINEL", "MASTER", name_});
            if (field_of(master, "flags") != "master" ||
                field_of(master, "num-other-sentinels") != std::to_string(running - 1)) {
              return false;
            }
            // One flat list of every replica's pairs: count those flagged plain "slave" (not down).
            auto list = command(i, {"SENTINEL", "REPLICAS", name_});
            int healthy = 0;
            for (std::size_t k = 0; k + 1 < list.size(); k += 2) {
              if (list[k] == "flags" && list[k + 1] == "slave") ++healthy;
            }
            if (healthy != replicas) return false;
          }
          return true;
        } catch (const std::exception&) {
          return false;
        }
      },
      timeout);
}

void Sentinel::failover(std::chrono::milliseconds timeout) const {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    try {
      command(0, {"SENTINEL", "FAILOVER", name_});
      return;
    } catch (const std::runtime_error& e) {
      bool stale = std::string(e.what()).find("NOGOODSLAVE") != std::string::npos;
      if (!stale || std::chrono::steady_clock::now() > deadline) {
        throw std::runtime_error(fmt::format("SENTINEL FAILOVER {}: {}", name_, e.what()));
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

std::string Sentinel::log(std::size_t i) const { return slurp(nodes_.at(i).dir + "/sentinel.log"); }

std::string Sentinel::logs() const {
  std::string out;
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    out += fmt::format("---- sentinel {} (port {})\n{}", i, nodes_[i].port, log(i));
  }
  return out;
}

Postgres& pg() {
  auto& s = servers();
  if (!s.pg_started) {
    s.pg.start();
    s.pg_started = true;
  }
  return s.pg;
}

Redis& redis() {
  auto& s = servers();
  if (!s.redis_started) {
    s.redis.start();
    s.redis_started = true;
  }
  return s.redis;
}

// ---------------------------------------------------------------- SQL

void sql(const std::string& conninfo, const std::string& statements) {
  pqxx::connection c(conninfo);
  pqxx::nontransaction tx(c);
  tx.exec(statements);
}

std::vector<std::vector<std::optional<std::string>>> query(const std::string& conninfo, const std::string& select) {
  pqxx::connection c(conninfo);
  pqxx::nontransaction tx(c);
  std::vector<std::vector<std::optional<std::string>>> out;
  for (const auto& row : tx.exec(select)) {
    auto& r = out.emplace_back();
    for (const auto& f : row) r.push_back(f.is_null() ? std::nullopt : std::optional<std::string>(f.c_str()));
  }
  return out;
}

std::string query_one(const std::string& conninfo, const std::string& select) {
  auto rows = query(conninfo, select);
  if (rows.empty() || rows[0].empty() || !rows[0][0]) return {};
  return *rows[0][0];
}

// ---------------------------------------------------------------- Redis helpers

namespace {

// Every connect and reply is bounded: a port held by something that is not Redis (or a frozen
// Redis) must not hang the test.
struct RedisConn {
  std::unique_ptr<redisContext, void (*)(redisContext*)> ctx{nullptr, redisFree};
  explicit RedisConn(int port, std::chrono::seconds timeout = std::chrono::seconds(60)) {
    timeval tv{static_cast<time_t>(timeout.count()), 0};
    ctx.reset(redisConnectWithTimeout("127.0.0.1", port, tv));
    if (!ctx || ctx->err) throw std::runtime_error(fmt::format("cannot connect to the test Redis on port {}", port));
    redisSetTimeout(ctx.get(), tv);
  }
};

void flatten(const redisReply* r, std::vector<std::string>& out) {
  switch (r->type) {
    case REDIS_REPLY_ARRAY:
      for (size_t i = 0; i < r->elements; ++i) flatten(r->element[i], out);
      break;
    case REDIS_REPLY_INTEGER:
      out.push_back(std::to_string(r->integer));
      break;
    case REDIS_REPLY_NIL:
      out.emplace_back("(nil)");
      break;
    case REDIS_REPLY_ERROR:
      throw std::runtime_error(std::string("Redis error: ") + r->str);
    default:
      out.emplace_back(r->str, r->len);
  }
}

redisReply* command(RedisConn& c, const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<size_t> lens;
  for (const auto& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* r = static_cast<redisReply*>(redisCommandArgv(c.ctx.get(), static_cast<int>(args.size()), args.data(), lens.data()));
  if (!r) throw std::runtime_error("Redis connection failed");
  return r;
}

std::string server_pid(int port) {
  RedisConn c(port, std::chrono::seconds(1));
  std::unique_ptr<redisReply, void (*)(void*)> r(command(c, {"INFO", "server"}), freeReplyObject);
  if (r->type != REDIS_REPLY_STRING) return {};
  std::string text(r->str, r->len);
  auto at = text.find("process_id:");
  if (at == std::string::npos) return {};
  at += 11;
  return text.substr(at, text.find_first_of("\r\n", at) - at);
}

}  // namespace

std::vector<std::string> redis_command(const std::vector<std::string>& argv) {
  return redis_command(servers().redis.port(), argv);
}

std::vector<std::string> redis_command(int port, const std::vector<std::string>& argv) {
  RedisConn c(port);
  std::unique_ptr<redisReply, void (*)(void*)> r(command(c, argv), freeReplyObject);
  std::vector<std::string> out;
  flatten(r.get(), out);
  return out;
}

long long xlen(const std::string& key) { return xlen(servers().redis.port(), key); }

long long xlen(int port, const std::string& key) { return std::stoll(redis_command(port, {"XLEN", key}).at(0)); }

std::vector<Entry> xrange(const std::string& key) { return xrange(servers().redis.port(), key); }

std::vector<Entry> xrange(int port, const std::string& key) {
  RedisConn c(port);
  std::vector<Entry> out;
  std::string start = "-";
  for (;;) {
    std::unique_ptr<redisReply, void (*)(void*)> r(command(c, {"XRANGE", key, start, "+", "COUNT", "10000"}),
                                                  freeReplyObject);
    if (r->type == REDIS_REPLY_ERROR) throw std::runtime_error(std::string("XRANGE: ") + r->str);
    if (r->elements == 0) break;
    for (size_t i = 0; i < r->elements; ++i) {
      auto* e = r->element[i];
      Entry entry;
      entry.id.assign(e->element[0]->str, e->element[0]->len);
      auto* f = e->element[1];
      for (size_t j = 0; j + 1 < f->elements; j += 2) {
        entry.fields[std::string(f->element[j]->str, f->element[j]->len)] =
            std::string(f->element[j + 1]->str, f->element[j + 1]->len);
      }
      out.push_back(std::move(entry));
    }
    start = "(" + out.back().id;
  }
  return out;
}

// ---------------------------------------------------------------- walstream process

Walstream::Walstream(std::vector<std::string> args, std::map<std::string, std::string> env) {
  char tmpl[] = "/tmp/walstream-log-XXXXXX";
  int fd = mkstemp(tmpl);
  if (fd < 0) throw std::runtime_error("mkstemp failed");
  log_path_ = tmpl;
  pid_ = fork();
  if (pid_ == 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> argv;
    std::string bin = WALSTREAM_BIN;
    argv.push_back(bin.data());
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  close(fd);
}

Walstream::~Walstream() {
  if (running()) {
    signal(SIGTERM);
    if (wait(std::chrono::seconds(20)) == -1) {
      signal(SIGKILL);
      wait(std::chrono::seconds(5));
    }
  }
  unlink(log_path_.c_str());
}

void Walstream::signal(int sig) {
  if (pid_ > 0 && status_ == -1) kill(pid_, sig);
}

int Walstream::wait(std::chrono::milliseconds timeout) {
  if (status_ != -1) return status_;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int st = 0;
    pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      return status_;
    }
    if (std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

bool Walstream::running() {
  if (status_ != -1) return false;
  return wait(std::chrono::milliseconds(0)) == -1;
}

std::string Walstream::log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Outcome run_walstream(const std::vector<std::string>& args, std::map<std::string, std::string> env,
                      std::chrono::milliseconds timeout) {
  Walstream w(args, std::move(env));
  int code = w.wait(timeout);
  if (code == -1) {
    w.signal(SIGKILL);
    w.wait();
  }
  return {code, w.log()};
}

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

// ---------------------------------------------------------------- per-test scope

Scope::Scope() {
  int n = ++g_scope_counter;
  auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string base = info ? fmt::format("{}_{}", info->test_suite_name(), info->name()) : "test";
  std::string clean;
  for (char c : base) clean += std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::tolower(c)) : '_';
  clean = clean.substr(0, 40);
  db = fmt::format("t{}_{}", n, clean);
  slot = fmt::format("s{}_{}", n, clean);
  prefix = fmt::format("t{}:", n);
  redis();
  harness::sql(pg().conninfo(), fmt::format("CREATE DATABASE {}", db));
  conninfo = pg().conninfo(db);
}

Scope::~Scope() {
  try {
    harness::sql(pg().conninfo(), fmt::format("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                                              "WHERE slot_name = '{}' AND NOT active",
                                              slot));
    harness::sql(pg().conninfo(), fmt::format("DROP DATABASE IF EXISTS {} WITH (FORCE)", db));
  } catch (...) {
  }
}

std::vector<std::string> Scope::args() const { return args(redis()); }

std::vector<std::string> Scope::args(const Redis& r) const { return args(r.url()); }

std::vector<std::string> Scope::args(const std::string& redis_url) const {
  return {"run",      "--pg",          conninfo, "--redis",           redis_url, "--slot", slot, "--publication",
          publication, "--prefix", prefix,   "--status-interval", "1"};
}

bool Scope::caught_up() const {
  auto v = harness::query_one(conninfo,
                              fmt::format("SELECT confirmed_flush_lsn >= pg_current_wal_flush_lsn() FROM "
                                          "pg_replication_slots WHERE slot_name = '{}'",
                                          slot));
  return v == "t";
}

bool Scope::streaming() const {
  auto v = harness::query_one(conninfo, fmt::format("SELECT count(*) FROM pg_replication_slots r JOIN pg_stat_replication w "
                                                    "ON w.pid = r.active_pid WHERE r.slot_name = '{}' AND w.state IN "
                                                    "('catchup', 'streaming')",
                                                    slot));
  return v == "1";
}

long peak_rss_kb(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

std::vector<std::string> with(std::vector<std::string> args, std::initializer_list<std::string> more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

std::uint64_t parse_lsn(const std::string& text) {
  static const std::regex lsn(R"([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8})");
  if (!std::regex_match(text, lsn)) throw std::runtime_error("not an LSN: '" + text + "'");
  auto slash = text.find('/');
  return (std::stoull(text.substr(0, slash), nullptr, 16) << 32) | std::stoull(text.substr(slash + 1), nullptr, 16);
}

EntryId parse_entry_id(const std::string& id) {
  auto dash = id.find('-');
  if (dash == std::string::npos) throw std::runtime_error("bad stream ID " + id);
  return {std::stoull(id.substr(0, dash)), std::stoull(id.substr(dash + 1))};
}

TempSlot::TempSlot(const Scope& scope, std::string name, const std::string& plugin)
    : scope_(scope), name_(std::move(name)) {
  scope_.sql(fmt::format("SELECT pg_create_logical_replication_slot('{}', '{}')", name_, plugin));
}

TempSlot::~TempSlot() {
  try {
    scope_.sql(fmt::format("SELECT pg_drop_replication_slot('{}')", name_));
  } catch (...) {
    // The database may be gone already; the slot goes with the server then.
  }
}

HttpReply http_get(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2);
  client.set_read_timeout(5);
  auto res = client.Get(path.c_str());
  if (!res) return {};
  return {res->status, res->body};
}

std::optional<double> series_value(const std::string& exposition, const std::string& series) {
  std::istringstream lines(exposition);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 && line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return std::nullopt;
}

std::optional<double> scrape_value(int port, const std::string& series) {
  auto r = http_get(port, "/metrics");
  if (r.status != 200) return std::nullopt;
  return series_value(r.body, series);
}

}  // namespace harness
