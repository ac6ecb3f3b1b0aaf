// Redis over TLS (rediss://): walstream owns the socket and runs OpenSSL under hiredis's parser.
// Real redis-server processes with --tls-port and certificates this test makes with the openssl
// command; each server keeps a plain port for the test's own checks.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <fmt/format.h>
#include <memory>
#include <string>
#include <vector>

#include "harness.h"

using namespace harness;
using namespace std::chrono_literals;

namespace {

const TestCertificates& certs() {
  static TestCertificates c;
  return c;
}

// A Redis with a TLS port (and its plain port) serving `cert`.
struct TlsRedis {
  Redis redis;
  int tls_port = 0;
  explicit TlsRedis(const std::string& cert, bool client_certs = false) {
    tls_port = free_port();
    redis.extra_args = certs().redis_args(tls_port, cert, client_certs);
    redis.start(false);
  }
  std::string url(const std::string& host = "127.0.0.1") const { return fmt::format("rediss://{}:{}", host, tls_port); }
};

// Scope's `run` arguments with the Redis URL replaced and more flags.
std::vector<std::string> over(const Scope& s, const std::string& url, std::initializer_list<std::string> more) {
  auto args = s.args();
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--redis") args[i + 1] = url;
  }
  args.insert(args.end(), more);
  return args;
}

std::string ca_flag() { return certs().path("ca.crt"); }

long count_of(const std::string& text, const std::string& what) {
  long n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

// Snapshot, changes, a SIGKILL and a restart, all over TLS: every row once, in order; `tail` and
// `status` read the same server over TLS.
TEST(Tls, StreamsOverTlsExactlyOnceAcrossAKill) {
  TlsRedis r("server");
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'snap' FROM generate_series(1, 100) g");
  const auto key = s.stream("public.t");
  const auto args = over(s, r.url(), {"--redis-tls-ca", ca_flag()});
  auto w = std::make_unique<Walstream>(args);
  ASSERT_TRUE(wait_until([&] { return s.streaming(); }, 30s)) << w->log();
  for (int i = 101; i <= 200; ++i) s.sql(fmt::format("INSERT INTO t VALUES ({}, 'live')", i));
  ASSERT_TRUE(wait_until([&] { return xlen(r.redis, key) == 200 && s.caught_up(); }, 30s)) << w->log();
  w->signal(SIGKILL);
  w->wait();
  for (int i = 201; i <= 250; ++i) s.sql(fmt::format("INSERT INTO t VALUES ({}, 'after')", i));
  w = std::make_unique<Walstream>(args);
  ASSERT_TRUE(wait_until([&] { return xlen(r.redis, key) == 250 && s.caught_up(); }, 30s)) << w->log();
  auto entries = xrange(r.redis, key);
  ASSERT_EQ(entries.size(), 250u);
  for (int i = 0; i < 250; ++i) {
    const char* v = i < 100 ? "snap" : i < 200 ? "live" : "after";
    ASSERT_EQ(entries[i].fields.at("after"), fmt::format(R"({{"id":{},"v":"{}"}})", i + 1, v)) << i;
    ASSERT_EQ(entries[i].fields.at("op"), i < 100 ? "r" : "c") << i;
  }
  EXPECT_EQ(count_of(w->log(), " ERROR "), 0) << w->log();

  auto tail = run_walstream({"tail", "--redis", r.url(), "--redis-tls-ca", ca_flag(), "--prefix", s.prefix,
                             "--from-start", "--count", "3", "public.t"});
  EXPECT_EQ(tail.code, 0) << tail.output;
  EXPECT_NE(tail.output.find(R"("after":{"id":3,"v":"snap"})"), std::string::npos) << tail.output;
  auto status = run_walstream({"status", "--pg", s.conninfo, "--redis", r.url(), "--redis-tls-ca", ca_flag(),
                               "--slot", s.slot, "--prefix", s.prefix, "--json"});
  EXPECT_EQ(status.code, 0) << status.output;
  EXPECT_NE(status.output.find(R"("length":250)"), std::string::npos) << status.output;
  w->signal(SIGTERM);
  EXPECT_EQ(w->wait(), 0) << w->log();
}

// A Redis that requires client certificates (tls-auth-clients yes): refused without one, in one
// line and exit 1; served with one.
TEST(Tls, MutualTlsNeedsTheClientCertificate) {
  TlsRedis r("server", true);
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY)");
  auto refused = run_walstream(over(s, r.url(), {"--redis-tls-ca", ca_flag()}), {}, 30s);
  EXPECT_EQ(refused.code, 1) << refused.output;
  EXPECT_NE(refused.output.find("--redis-tls-cert"), std::string::npos) << refused.output;
  EXPECT_EQ(count_of(refused.output, " ERROR "), 1) << refused.output;
  EXPECT_EQ(count_of(refused.output, " WARN "), 0) << refused.output;

  Walstream w(over(s, r.url(), {"--redis-tls-ca", ca_flag(), "--redis-tls-cert", certs().path("client.crt"),
                                "--redis-tls-key", certs().path("client.key")}));
  ASSERT_TRUE(wait_until([&] { return s.streaming(); }, 30s)) << w.log();
  s.sql("INSERT INTO t VALUES (1), (2)");
  ASSERT_TRUE(wait_until([&] { return xlen(r.redis, s.stream("public.t")) == 2; }, 30s)) << w.log();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

// Every certificate that must not be trusted is one clear line and exit 1, with nothing written:
// a CA that did not sign it, an expired certificate, one for another host, and a plain port.
// --redis-tls-insecure (tests only) accepts the expired one.
TEST(Tls, UntrustedCertificatesAreOneLineAndWriteNothing) {
  TlsRedis good("server");
  TlsRedis expired("expired");
  TlsRedis elsewhere("elsewhere");
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)");
  struct Case {
    std::string name;
    std::vector<std::string> args;
    std::string says;
    const Redis* server;
  };
  const std::vector<Case> cases = {
      {"another CA", over(s, good.url(), {"--redis-tls-ca", certs().path("other-ca.crt")}),
       "fails verification", &good.redis},
      {"no CA given (the system's do not know ours)", over(s, good.url(), {}), "fails verification", &good.redis},
      {"expired", over(s, expired.url(), {"--redis-tls-ca", ca_flag()}), "fails verification: certificate has expired",
       &expired.redis},
      {"another host", over(s, elsewhere.url(), {"--redis-tls-ca", ca_flag()}), "fails verification: IP address mismatch",
       &elsewhere.redis},
      {"a plain port", over(s, fmt::format("rediss://127.0.0.1:{}", good.redis.port()), {"--redis-tls-ca", ca_flag()}),
       "is it a TLS port?", &good.redis},
  };
  for (const auto& c : cases) {
    auto out = run_walstream(c.args, {}, 30s);
    EXPECT_EQ(out.code, 1) << c.name << "\n" << out.output;
    EXPECT_NE(out.output.find(c.says), std::string::npos) << c.name << "\n" << out.output;
    EXPECT_EQ(count_of(out.output, " ERROR "), 1) << c.name << "\n" << out.output;
    EXPECT_EQ(count_of(out.output, " WARN "), 0) << c.name << "\n" << out.output;
    EXPECT_EQ(redis_command(*c.server, {"DBSIZE"}).at(0), "0") << c.name;
  }
  // The same line from tail and status.
  auto tail = run_walstream({"tail", "--redis", expired.url(), "--redis-tls-ca", ca_flag(), "public.t"}, {}, 30s);
  EXPECT_NE(tail.code, 0) << tail.output;
  EXPECT_NE(tail.output.find("certificate has expired"), std::string::npos) << tail.output;
  auto status = run_walstream({"status", "--pg", s.conninfo, "--redis", expired.url(), "--redis-tls-ca", ca_flag(),
                               "--slot", s.slot, "--prefix", s.prefix});
  EXPECT_EQ(status.code, 1) << status.output;
  EXPECT_NE(status.output.find("certificate has expired"), std::string::npos) << status.output;

  Walstream w(over(s, expired.url(), {"--redis-tls-insecure"}));
  ASSERT_TRUE(wait_until([&] { return xlen(expired.redis, s.stream("public.t")) == 1; }, 30s)) << w.log();
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();

  // Flags that cannot apply are usage errors (exit 2).
  EXPECT_EQ(run_walstream(over(s, good.redis.url(), {"--redis-tls-ca", ca_flag()})).code, 2);
  EXPECT_EQ(run_walstream(over(s, good.url(), {"--redis-tls-cert", certs().path("client.crt")})).code, 2);
  EXPECT_EQ(run_walstream(over(s, good.url(), {"--redis-tls-ca", "/nonexistent/ca.crt"})).code, 2);
}
