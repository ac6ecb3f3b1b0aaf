#include "harness.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
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

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    throw std::runtime_error("bind failed");
  }
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  close(fd);
  return port;
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

void Postgres::start() {
  if (dir_.empty()) {
    dir_ = make_temp_dir("pg");
    shell(fmt::format("mkdir -p {0}/data {0}/sock {0}/log", dir_));
    if (is_root()) shell(fmt::format("chown -R postgres:postgres {0} && chmod 755 {0}", dir_));
    shell(as_postgres(fmt::format("{}/initdb -D {}/data -A trust -U postgres --no-sync", kPgBin, dir_)));
  }
  // A restart keeps the port, like a real server coming back where clients expect it.
  if (port_ == 0) port_ = free_port();
  shell(as_postgres(fmt::format(
      "{}/pg_ctl -D {}/data -l {}/log/postgres.log -w -t 60 start -o \"-c port={} -c listen_addresses=127.0.0.1 "
      "-c unix_socket_directories={}/sock -c wal_level=logical -c max_replication_slots=50 -c max_wal_senders=50 "
      "-c fsync=off -c wal_sender_timeout=60s {}\"",
      kPgBin, dir_, dir_, port_, dir_, extra_options)));
}

void Postgres::stop(bool immediate) {
  if (dir_.empty()) return;
  shell(as_postgres(fmt::format("{}/pg_ctl -D {}/data -m {} -w -t 60 stop", kPgBin, dir_, immediate ? "immediate" : "fast")));
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
  if (port_ == 0) port_ = free_port();
  pid_ = fork();
  if (pid_ == 0) {
    std::string port = std::to_string(port_);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(devnull, 2);
    execlp("redis-server", "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1", "--dir", dir_.c_str(),
           "--save", "", "--appendonly", aof ? "yes" : "no", "--appendfsync", "always", nullptr);
    _exit(127);
  }
  bool up = wait_until(
      [&] {
        try {
          return redis_command({"PING"}) == std::vector<std::string>{"PONG"};
        } catch (...) {
          return false;
        }
      },
      std::chrono::seconds(20));
  if (!up) throw std::runtime_error("redis-server did not start");
}

void Redis::stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string Redis::url() const { return fmt::format("redis://127.0.0.1:{}", port_); }

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

struct RedisConn {
  std::unique_ptr<redisContext, void (*)(redisContext*)> ctx{nullptr, redisFree};
  RedisConn() {
    ctx.reset(redisConnect("127.0.0.1", servers().redis.port()));
    if (!ctx || ctx->err) throw std::runtime_error("cannot connect to the test Redis");
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

}  // namespace

std::vector<std::string> redis_command(const std::vector<std::string>& argv) {
  RedisConn c;
  std::unique_ptr<redisReply, void (*)(void*)> r(command(c, argv), freeReplyObject);
  std::vector<std::string> out;
  flatten(r.get(), out);
  return out;
}

long long xlen(const std::string& key) { return std::stoll(redis_command({"XLEN", key}).at(0)); }

std::vector<Entry> xrange(const std::string& key) {
  RedisConn c;
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

std::vector<std::string> Scope::args() const {
  return {"run",      "--pg",          conninfo, "--redis",           redis().url(), "--slot", slot, "--publication",
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

}  // namespace harness
