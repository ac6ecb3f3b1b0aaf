// latency_probe: end-to-end latency of walstream's entries as a subscriber sees them — arrival time
// minus the entry's `ts` (the transaction's commit time) — measured by a lean C++ reader, so the
// reader's own overhead (a Python thread's GIL, parsing, scheduling) does not inflate the tail.
//
//   latency_probe --port P --streams k1,k2,... --seconds N [--host H] [--out samples.txt]
//
// It resolves each stream's last ID at start (XINFO STREAM last-generated-id, 0-0 for a stream that
// does not exist yet: it is read from its first entry), writes "ready" to stderr, then loops on
// XREAD BLOCK 100 COUNT 1000 STREAMS k1 k2 ... id1 id2 ...; for every entry, latency = the
// CLOCK_REALTIME taken right after the XREAD reply arrived − parse(ts). After N seconds, or at SIGTERM
// or SIGINT (then it first reads, without blocking, what the streams already hold), it prints one line
// of JSON on stdout:
//   {"count":…,"p50_ms":…,"p90_ms":…,"p99_ms":…,"p999_ms":…,"max_ms":…,"min_ms":…,"skipped":…,"cpu_s":…}
// (percentiles by nearest rank; `skipped`: entries without a readable `ts`; `cpu_s`: the probe's own
// CPU time). --out writes one line per entry: "arrival commit latency_ms", times in epoch seconds.
// Exit status 0, or 1 with a message on stderr (bad usage, Redis error, lost connection).
#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

volatile std::sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  std::vector<std::string> streams;
  double seconds = 0;
  std::string out;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "latency_probe: %s\nusage: latency_probe --port P --streams k1,k2,... --seconds N [--host H] "
               "[--out samples.txt]\n",
               why.c_str());
  std::exit(1);
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (i + 1 >= argc) usage(fmt::format("{} needs a value", a));
    std::string v = argv[++i];
    if (a == "--port") {
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), o.port);
      if (ec != std::errc{} || p != v.data() + v.size() || o.port <= 0 || o.port > 65535) usage("bad --port");
    } else if (a == "--host") {
      o.host = v;
    } else if (a == "--streams") {
      std::size_t start = 0;
      while (start <= v.size()) {
        std::size_t comma = v.find(',', start);
        if (comma == std::string::npos) comma = v.size();
        if (comma > start) o.streams.push_back(v.substr(start, comma - start));
        start = comma + 1;
      }
    } else if (a == "--seconds") {
      char* end = nullptr;
      o.seconds = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || !(o.seconds > 0)) usage("bad --seconds");
    } else if (a == "--out") {
      o.out = v;
    } else {
      usage(fmt::format("unknown option {}", a));
    }
  }
  if (o.port == 0) usage("--port is required");
  if (o.streams.empty()) usage("--streams is required");
  if (o.seconds <= 0) usage("--seconds is required");
  return o;
}

// ---------------------------------------------------------------- time

std::int64_t realtime_ns() {
  timespec t{};
  clock_gettime(CLOCK_REALTIME, &t);
  return std::int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec;
}

// Reads exactly `n` digits at s[pos...]; advances pos.
std::optional<int> digits(std::string_view s, std::size_t& pos, std::size_t n) {
  if (pos + n > s.size()) return std::nullopt;
  int v = 0;
  for (std::size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  pos += n;
  return v;
}

bool expect(std::string_view s, std::size_t& pos, char c) {
  if (pos >= s.size() || s[pos] != c) return false;
  ++pos;
  return true;
}

// RFC 3339 "YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)" to nanoseconds since the epoch (walstream writes
// "2026-11-27T01:35:15.123456Z"). Fraction digits beyond nanoseconds are ignored.
std::optional<std::int64_t> parse_rfc3339_ns(std::string_view s) {
  std::size_t pos = 0;
  auto y = digits(s, pos, 4);
  if (!y || !expect(s, pos, '-')) return std::nullopt;
  auto mo = digits(s, pos, 2);
  if (!mo || !expect(s, pos, '-')) return std::nullopt;
  auto d = digits(s, pos, 2);
  if (!d || pos >= s.size() || (s[pos] != 'T' && s[pos] != 't' && s[pos] != ' ')) return std::nullopt;
  ++pos;
  auto h = digits(s, pos, 2);
  if (!h || !expect(s, pos, ':')) return std::nullopt;
  auto mi = digits(s, pos, 2);
  if (!mi || !expect(s, pos, ':')) return std::nullopt;
  auto se = digits(s, pos, 2);
  if (!se || *h > 23 || *mi > 59 || *se > 60) return std::nullopt;
  std::int64_t frac_ns = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    std::size_t n = 0;
    std::int64_t scale = 100'000'000;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (n < 9) frac_ns += (s[pos] - '0') * scale;
      scale /= 10;
      ++n;
      ++pos;
    }
    if (n == 0) return std::nullopt;
  }
  std::int64_t offset_s = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int sign = s[pos] == '-' ? -1 : 1;
    ++pos;
    auto oh = digits(s, pos, 2);
    if (!oh || !expect(s, pos, ':')) return std::nullopt;
    auto om = digits(s, pos, 2);
    if (!om) return std::nullopt;
    offset_s = sign * (*oh * 3600 + *om * 60);
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  using namespace std::chrono;
  year_month_day ymd{year{*y}, month{static_cast<unsigned>(*mo)}, day{static_cast<unsigned>(*d)}};
  if (!ymd.ok()) return std::nullopt;
  std::int64_t days = sys_days{ymd}.time_since_epoch().count();
  std::int64_t secs = days * 86'400 + *h * 3600 + *mi * 60 + *se - offset_s;
  return secs * 1'000'000'000 + frac_ns;
}

// ---------------------------------------------------------------- Redis

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using Context = std::unique_ptr<redisContext, ContextDeleter>;

Reply command(redisContext* c, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  Reply r(static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data())));
  if (!r) throw std::runtime_error(fmt::format("Redis connection: {}", c->err ? c->errstr : "no reply"));
  return r;
}

std::string_view str(const redisReply* r) { return {r->str, r->len}; }

bool is_string(const redisReply* r) {
  return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

// The stream's last-generated-id, or "0-0" if it does not exist.
std::string last_id(redisContext* c, const std::string& key) {
  Reply r = command(c, {"XINFO", "STREAM", key});
  if (r->type == REDIS_REPLY_ERROR) {
    std::string_view e = str(r.get());
    if (e.find("no such key") != std::string_view::npos) return "0-0";
    throw std::runtime_error(fmt::format("XINFO STREAM {}: {}", key, e));
  }
  if (r->type != REDIS_REPLY_ARRAY)
    throw std::runtime_error(fmt::format("XINFO STREAM {}: unexpected reply type {}", key, r->type));
  for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
    const redisReply* k = r->element[i];
    const redisReply* v = r->element[i + 1];
    if (is_string(k) && str(k) == "last-generated-id" && is_string(v)) return std::string(str(v));
  }
  throw std::runtime_error(fmt::format("XINFO STREAM {}: no last-generated-id", key));
}

struct Sample {
  std::int64_t arrival_ns;
  std::int64_t commit_ns;
};

struct Reader {
  std::vector<std::string> keys;
  std::vector<std::string> ids;
  std::vector<Sample> samples;
  std::uint64_t skipped = 0;

  // One XREAD; block_ms < 0: without BLOCK. Returns the number of entries read.
  std::size_t read(redisContext* c, int block_ms) {
    std::vector<std::string> args{"XREAD"};
    if (block_ms >= 0) {
      args.emplace_back("BLOCK");
      args.push_back(std::to_string(block_ms));
    }
    args.emplace_back("COUNT");
    args.emplace_back("1000");
    args.emplace_back("STREAMS");
    args.insert(args.end(), keys.begin(), keys.end());
    args.insert(args.end(), ids.begin(), ids.end());
    Reply r = command(c, args);
    std::int64_t arrival = realtime_ns();
    if (r->type == REDIS_REPLY_NIL) return 0;
    if (r->type == REDIS_REPLY_ERROR) throw std::runtime_error(fmt::format("XREAD: {}", str(r.get())));
    if (r->type != REDIS_REPLY_ARRAY) throw std::runtime_error(fmt::format("XREAD: unexpected reply type {}", r->type));
    // [[key, [[id, [field, value, ...]], ...]], ...]
    std::size_t n = 0;
    for (std::size_t i = 0; i < r->elements; ++i) {
      const redisReply* stream = r->element[i];
      if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2 || !is_string(stream->element[0]) ||
          stream->element[1]->type != REDIS_REPLY_ARRAY)
        throw std::runtime_error("XREAD: malformed reply");
      const redisReply* key = stream->element[0];
      const redisReply* entries = stream->element[1];
      auto it = std::find(keys.begin(), keys.end(), str(key));
      if (it == keys.end()) throw std::runtime_error(fmt::format("XREAD: reply for unknown stream {}", str(key)));
      for (std::size_t j = 0; j < entries->elements; ++j) {
        const redisReply* e = entries->element[j];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || !is_string(e->element[0]))
          throw std::runtime_error("XREAD: malformed entry");
        ids[static_cast<std::size_t>(it - keys.begin())] = std::string(str(e->element[0]));
        ++n;
        const redisReply* fields = e->element[1];
        std::optional<std::int64_t> commit;
        if (fields->type == REDIS_REPLY_ARRAY) {
          for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
            if (is_string(fields->element[f]) && str(fields->element[f]) == "ts" && is_string(fields->element[f + 1])) {
              commit = parse_rfc3339_ns(str(fields->element[f + 1]));
              break;
            }
          }
        }
        if (commit)
          samples.push_back({arrival, *commit});
        else
          ++skipped;
      }
    }
    return n;
  }
};

std::string ms(std::int64_t ns) { return fmt::format("{:.3f}", static_cast<double>(ns) / 1e6); }

int run(const Options& o) {
  timeval tv{10, 0};
  Context c(redisConnectWithTimeout(o.host.c_str(), o.port, tv));
  if (!c || c->err)
    throw std::runtime_error(fmt::format("connecting to {}:{}: {}", o.host, o.port, c ? c->errstr : "out of memory"));
  if (redisSetTimeout(c.get(), tv) != REDIS_OK) throw std::runtime_error("cannot set the socket timeout");

  Reader reader;
  reader.keys = o.streams;
  for (const auto& k : o.streams) reader.ids.push_back(last_id(c.get(), k));
  reader.samples.reserve(1 << 17);

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  std::fprintf(stderr, "ready\n");
  std::fflush(stderr);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.seconds);
  while (!g_stop && std::chrono::steady_clock::now() < deadline) reader.read(c.get(), 100);
  if (g_stop) {
    // Stopped from outside (the producer is done): take what the streams already hold.
    while (reader.read(c.get(), -1) > 0) {
    }
  }

  std::vector<std::int64_t> lat;
  lat.reserve(reader.samples.size());
  for (const auto& s : reader.samples) lat.push_back(s.arrival_ns - s.commit_ns);
  std::sort(lat.begin(), lat.end());
  std::size_t n = lat.size();
  // Nearest rank: the smallest sample with at least permille/1000 of the samples at or below it.
  auto pct = [&](std::size_t permille) -> std::string {
    if (n == 0) return "null";
    std::size_t rank = (permille * n + 999) / 1000;
    return ms(lat[std::clamp<std::size_t>(rank, 1, n) - 1]);
  };
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  double cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;

  if (!o.out.empty()) {
    std::FILE* f = std::fopen(o.out.c_str(), "w");
    if (!f) throw std::runtime_error(fmt::format("{}: {}", o.out, std::strerror(errno)));
    for (const auto& s : reader.samples)
      fmt::print(f, "{}.{:06} {}.{:06} {}\n", s.arrival_ns / 1'000'000'000, s.arrival_ns % 1'000'000'000 / 1000,
                 s.commit_ns / 1'000'000'000, s.commit_ns % 1'000'000'000 / 1000, ms(s.arrival_ns - s.commit_ns));
    if (std::fclose(f) != 0) throw std::runtime_error(fmt::format("{}: {}", o.out, std::strerror(errno)));
  }

  fmt::print("{{\"count\":{},\"p50_ms\":{},\"p90_ms\":{},\"p99_ms\":{},\"p999_ms\":{},\"max_ms\":{},\"min_ms\":{},"
             "\"skipped\":{},\"cpu_s\":{:.3f}}}\n",
             n, pct(500), pct(900), pct(990), pct(999), n ? ms(lat.back()) : "null", n ? ms(lat.front()) : "null",
             reader.skipped, cpu);
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse_options(argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "latency_probe: %s\n", e.what());
    return 1;
  }
}
