// walstream's command line: parse flags (and WALSTREAM_* variables), check the servers, run.
#include <cxxopts.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
#include <iostream>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "backfill.h"
#include "config.h"
#include "pg_conn.h"
#include "errors.h"
#include "log.h"
#include "metrics_server.h"
#include "relation_cache.h"
#include "run_loop.h"
#include "stop_signal.h"
#include "setup.h"
#include "status.h"
#include "tail.h"
#include "redis_commands.h"
#include "stream_writer.h"

namespace {

using walstream::Config;

constexpr const char* kUsage =
    "walstream — PostgreSQL logical replication to Redis Streams, exactly once.\n\n"
    "Usage:\n"
    "  walstream run [options]     stream committed row changes to Redis\n"
    "  walstream tail [<schema.table>...] [--events TYPE] [--messages PREFIX] [--stream KEY] [options]\n"
    "                              print records, events and messages as JSON lines; `walstream tail --help`\n"
    "  walstream status [--json] [options]\n"
    "                              the slot, checkpoint, streams and groups; exit 1 when behind or broken\n"
    "  walstream backfill <schema.table>... [--where SQL] [--chunk-rows N] [options]\n"
    "                              republish tables' current rows as `r` records while streaming goes on\n"
    "  walstream --help            this text; `walstream run --help` lists the options\n"
    "  walstream --version\n";

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// --redis-wait-timeout -> WALSTREAM_REDIS_WAIT_TIMEOUT
std::string env_name(const std::string& flag) {
  std::string env = "WALSTREAM_";
  for (char c : flag) env += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return env;
}

// A flag wins over its WALSTREAM_* variable, which wins over the default.
std::string setting(const cxxopts::ParseResult& r, const std::string& flag, const std::string& fallback) {
  if (r.count(flag)) return r[flag].as<std::string>();
  if (const char* v = std::getenv(env_name(flag).c_str()); v && *v) return v;
  return fallback;
}

// A flag without a value, or its variable set to 1/0 (true/false).
bool switch_setting(const cxxopts::ParseResult& r, const std::string& flag) {
  if (r.count(flag)) return true;
  const auto env = env_name(flag);
  auto v = setting(r, flag, "");
  if (v.empty()) return false;
  if (v != "1" && v != "0" && v != "true" && v != "false") {
    throw UsageError(fmt::format("{} must be 1 or 0, not '{}'", env, v));
  }
  return v == "1" || v == "true";
}

// "a,b," -> {"a", "b", ""}: every piece, empty ones too, for the caller to refuse.
std::vector<std::string> split_commas(const std::string& list) {
  std::vector<std::string> out;
  for (std::size_t start = 0; start <= list.size();) {
    auto end = std::min(list.find(',', start), list.size());
    out.push_back(list.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// A table as its stream is keyed (schema/relation_cache.h), `public` when no schema is given;
// nullopt when the name does not parse.
std::optional<std::string> stream_table_name(const std::string& text) {
  auto name = walstream::parse_qualified_table_name(text);
  if (!name) return std::nullopt;
  return walstream::qualified_table_name(name->first.empty() ? "public" : name->first, name->second);
}

std::uint64_t parse_positive(const std::string& text, const char* what) {
  std::size_t used = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || v == 0 || text.find('-') != std::string::npos) {
    throw UsageError(fmt::format("{} must be a positive integer, not '{}'", what, text));
  }
  return v;
}

std::chrono::milliseconds parse_seconds(const std::string& text, const char* what) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || !(v > 0) || v > 86400) {
    throw UsageError(fmt::format("{} must be a number of seconds between 0 and 86400, not '{}'", what, text));
  }
  return std::chrono::milliseconds(static_cast<long>(v * 1000));
}

// A retention duration: whole seconds, at least one.
std::chrono::seconds parse_duration(const std::string& text, const char* what) {
  auto d = walstream::parse_duration(text);
  if (!d || *d < std::chrono::seconds(1) || d->count() % 1000 != 0) {
    throw UsageError(fmt::format("{}: '{}' is not a duration (30s, 15m, 1h, 7d)", what, text));
  }
  return std::chrono::duration_cast<std::chrono::seconds>(*d);
}

std::optional<walstream::RetentionOptions> parse_retention(const cxxopts::ParseResult& r) {
  auto mode = setting(r, "retention", "none");
  if (mode == "none") {
    for (const char* flag : {"retention-interval", "retain-for", "retain-max"}) {
      if (!setting(r, flag, "").empty()) throw UsageError(fmt::format("--{} needs --retention acked", flag));
    }
    return std::nullopt;
  }
  if (mode != "acked") throw UsageError(fmt::format("--retention must be acked or none, not '{}'", mode));
  walstream::RetentionOptions o;
  o.interval = parse_seconds(setting(r, "retention-interval", "10"), "--retention-interval");
  o.retain_for = parse_duration(setting(r, "retain-for", "1h"), "--retain-for");
  if (auto m = setting(r, "retain-max", ""); !m.empty()) o.retain_max = parse_duration(m, "--retain-max");
  if (o.retain_max && *o.retain_max < o.retain_for) {
    throw UsageError(fmt::format("--retain-max ({}) must not be shorter than --retain-for ({})",
                                 walstream::format_duration(*o.retain_max), walstream::format_duration(o.retain_for)));
  }
  return o;
}

// --redis and --redis-tls-*, the same for every command that talks to Redis.
void add_redis_options(cxxopts::Options& o) {
  o.add_options()
      ("redis", "Redis URL: redis://[user:password@]host:port[/db]; rediss://… over TLS; "
                "redis-sentinel://[user:password@]host:port[,host:port…][/db]#master (rediss-sentinel://… over TLS); "
                "a Redis Cluster: any of its nodes, or several seeds redis://host:port,host:port… (found by itself) "
                "[WALSTREAM_REDIS] (default redis://127.0.0.1:6379)", cxxopts::value<std::string>())
      ("redis-tls-ca", "CA certificates (PEM) a rediss:// server's certificate must chain to (default: the "
                       "system's) [WALSTREAM_REDIS_TLS_CA]", cxxopts::value<std::string>())
      ("redis-tls-cert", "client certificate (PEM) for a Redis that requires one (mutual TLS) "
                         "[WALSTREAM_REDIS_TLS_CERT]", cxxopts::value<std::string>())
      ("redis-tls-key", "the client certificate's private key (PEM) [WALSTREAM_REDIS_TLS_KEY]",
       cxxopts::value<std::string>())
      ("redis-tls-insecure", "do not verify the Redis server's certificate or host name: for tests only "
                             "[WALSTREAM_REDIS_TLS_INSECURE]");
}

walstream::RedisUrl redis_setting(const cxxopts::ParseResult& r) {
  walstream::RedisUrl url;
  try {
    url = walstream::parse_redis_url(setting(r, "redis", "redis://127.0.0.1:6379"));
  } catch (const std::invalid_argument& e) {
    throw UsageError(fmt::format("--redis: {}", e.what()));
  }
  url.tls_files.ca_file = setting(r, "redis-tls-ca", "");
  url.tls_files.cert_file = setting(r, "redis-tls-cert", "");
  url.tls_files.key_file = setting(r, "redis-tls-key", "");
  url.tls_files.insecure = switch_setting(r, "redis-tls-insecure");
  const auto& f = url.tls_files;
  bool any = !f.ca_file.empty() || !f.cert_file.empty() || !f.key_file.empty() || f.insecure;
  if (any && !url.tls) throw UsageError("--redis-tls-* apply to TLS: use a rediss:// (or rediss-sentinel://) URL");
  if (f.cert_file.empty() != f.key_file.empty()) {
    throw UsageError("--redis-tls-cert and --redis-tls-key go together (a client certificate and its key)");
  }
  for (const auto* file : {&f.ca_file, &f.cert_file, &f.key_file}) {
    if (!file->empty() && access(file->c_str(), R_OK) != 0) {
      throw UsageError(fmt::format("cannot read {}: {}", *file, std::strerror(errno)));
    }
  }
  return url;
}

cxxopts::Options run_options() {
  cxxopts::Options o("walstream run", "Stream every committed row change of a publication to Redis Streams.\n"
                                      "Each option can also be set by its WALSTREAM_* variable (e.g. WALSTREAM_PG).\n");
  o.add_options()
      ("pg", "PostgreSQL connection: libpq URI or key=value conninfo; empty uses libpq's PG* variables "
             "[WALSTREAM_PG]", cxxopts::value<std::string>())
      ("slot", "logical replication slot, created (pgoutput) when missing [WALSTREAM_SLOT] (default walstream)",
       cxxopts::value<std::string>())
      ("publication", "publication to stream, created when missing [WALSTREAM_PUBLICATION] (default walstream)",
       cxxopts::value<std::string>())
      ("tables", "comma-separated schema.table list for a publication walstream creates (default: all tables) "
                 "[WALSTREAM_TABLES]", cxxopts::value<std::string>())
      ("prefix", "stream key prefix: streams are <prefix><schema>.<table> [WALSTREAM_PREFIX] (default walstream:)",
       cxxopts::value<std::string>())
      ("snapshot", "initial: when walstream creates the slot, first copy every published table's rows as `r` "
                   "records; never: stream changes only [WALSTREAM_SNAPSHOT] (default initial)",
       cxxopts::value<std::string>())
      ("maxlen", "trim each stream to about N entries (XADD MAXLEN ~ N) [WALSTREAM_MAXLEN] (default: no trimming)",
       cxxopts::value<std::string>())
      ("redis-wait", "before a position is confirmed to PostgreSQL, WAIT until N Redis replicas have the entries "
                     "(not reached: not confirmed, logged, retried) [WALSTREAM_REDIS_WAIT] (default 0)",
       cxxopts::value<std::string>())
      ("redis-wait-timeout", "milliseconds each WAIT may take [WALSTREAM_REDIS_WAIT_TIMEOUT] (default 1000)",
       cxxopts::value<std::string>())
      ("resnapshot", "after Redis lost data or the slot was dropped: drop the slot, create it again and append "
                     "every published table's current rows to the streams as `r` records, then stream "
                     "[WALSTREAM_RESNAPSHOT=1]")
      ("adopt-slot", "the slot was created outside walstream (pg_create_logical_replication_slot) and Redis holds "
                     "no checkpoint for it yet: stream from the slot's position instead of stopping "
                     "[WALSTREAM_ADOPT_SLOT=1]")
      ("messages", "logical messages (pg_logical_emit_message) to publish on <prefix>messages:<message prefix>: "
                   "all, none, or a comma-separated list of message prefixes [WALSTREAM_MESSAGES] (default all)",
       cxxopts::value<std::string>())
      ("outbox", "outbox table(s), schema.table, repeatable or comma-separated: each INSERT becomes an event on "
                 "<prefix>events:<aggregate type>; updates and deletes publish nothing [WALSTREAM_OUTBOX]",
       cxxopts::value<std::vector<std::string>>())
      ("outbox-id-column", "outbox column of the event id [WALSTREAM_OUTBOX_ID_COLUMN] (default id)",
       cxxopts::value<std::string>())
      ("outbox-aggregate-type-column", "outbox column naming the aggregate type, i.e. the events stream "
                                       "[WALSTREAM_OUTBOX_AGGREGATE_TYPE_COLUMN] (default aggregatetype)",
       cxxopts::value<std::string>())
      ("outbox-aggregate-id-column", "outbox column of the aggregate id [WALSTREAM_OUTBOX_AGGREGATE_ID_COLUMN] "
                                     "(default aggregateid)", cxxopts::value<std::string>())
      ("outbox-type-column", "outbox column of the event type [WALSTREAM_OUTBOX_TYPE_COLUMN] (default type)",
       cxxopts::value<std::string>())
      ("outbox-payload-column", "outbox column of the payload [WALSTREAM_OUTBOX_PAYLOAD_COLUMN] (default payload)",
       cxxopts::value<std::string>())
      ("transactions", "write a marker entry per committed transaction on <prefix>transactions, in the same "
                       "MULTI/EXEC as its last entries [WALSTREAM_TRANSACTIONS=1]")
      ("backfill-new-tables", "on: a table added to the publication while walstream streams gets its rows "
                              "published as `r` records (a backfill); off [WALSTREAM_BACKFILL_NEW_TABLES] "
                              "(default on)", cxxopts::value<std::string>())
      ("metrics-listen", "serve /metrics (Prometheus), /healthz and /readyz (200 only while this instance is "
                         "active) on HOST:PORT, e.g. 127.0.0.1:9464 or :9464 [WALSTREAM_METRICS_LISTEN] "
                         "(default: off)", cxxopts::value<std::string>())
      ("lag-warn", "warn (log and walstream_lag_warning) when the slot is this far behind: comma-separated WAL "
                   "size and/or time, e.g. 512MB or 1GiB,10m; 0B or 0s turns one off [WALSTREAM_LAG_WARN] "
                   "(default 1GiB,5m)", cxxopts::value<std::string>())
      ("retention", "acked: every --retention-interval, trim each stream under the prefix up to the oldest entry its "
                    "consumer groups still need, never entries younger than --retain-for; none: only --maxlen trims "
                    "[WALSTREAM_RETENTION] (default none)", cxxopts::value<std::string>())
      ("retention-interval", "seconds between retention passes [WALSTREAM_RETENTION_INTERVAL] (default 10)",
       cxxopts::value<std::string>())
      ("retain-for", "with --retention acked, keep entries younger than this whatever the groups read: 30s, 15m, 1h, "
                     "7d [WALSTREAM_RETAIN_FOR] (default 1h)", cxxopts::value<std::string>())
      ("retain-max", "with --retention acked, trim entries this old even when a group still needs them (abandoned "
                     "groups; logged) [WALSTREAM_RETAIN_MAX] (default: no limit)", cxxopts::value<std::string>())
      ("status-interval", "seconds between status updates to PostgreSQL [WALSTREAM_STATUS_INTERVAL] (default 10)",
       cxxopts::value<std::string>())
      ("shutdown-timeout", "seconds to wait for Redis when stopping [WALSTREAM_SHUTDOWN_TIMEOUT] (default 30)",
       cxxopts::value<std::string>())
      ("max-backoff", "longest pause between reconnection attempts, in seconds [WALSTREAM_MAX_BACKOFF] (default 30)",
       cxxopts::value<std::string>())
      ("log-level", "debug, info, warn or error [WALSTREAM_LOG_LEVEL] (default info)", cxxopts::value<std::string>())
      ("h,help", "show this help");
  add_redis_options(o);
  return o;
}

// cxxopts' own exceptions become one usage line.
cxxopts::ParseResult parse_or_usage(cxxopts::Options& options, int argc, char** argv) {
  try {
    return options.parse(argc, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    throw UsageError(e.what());
  }
}

Config parse_run(int argc, char** argv) {
  auto options = run_options();
  auto r = parse_or_usage(options, argc, argv);
  if (r.count("help")) {
    std::cout << options.help();
    std::exit(0);
  }
  if (!r.unmatched().empty()) throw UsageError(fmt::format("unexpected argument '{}'", r.unmatched().front()));

  Config c;
  c.pg = setting(r, "pg", "");
  c.redis = redis_setting(r);
  c.slot = setting(r, "slot", "walstream");
  if (!std::regex_match(c.slot, std::regex("[a-z0-9_]{1,63}"))) {
    throw UsageError(fmt::format("--slot '{}': a slot name is 1-63 lower-case letters, digits or underscores", c.slot));
  }
  c.publication = setting(r, "publication", "walstream");
  if (c.publication.empty() || c.publication.size() > 63) throw UsageError("--publication must be 1-63 characters");
  auto tables = setting(r, "tables", "");
  for (std::size_t start = 0; start < tables.size();) {
    auto end = tables.find(',', start);
    if (end == std::string::npos) end = tables.size();
    auto t = tables.substr(start, end - start);
    auto name = walstream::parse_qualified_table_name(t);
    if (!name) throw UsageError(fmt::format("--tables: bad table name '{}', expected schema.table", t));
    c.tables.push_back(*name);
    start = end + 1;
  }
  c.prefix = setting(r, "prefix", "walstream:");
  auto snapshot = setting(r, "snapshot", "initial");
  if (snapshot == "initial") {
    c.snapshot = walstream::SnapshotMode::Initial;
  } else if (snapshot == "never") {
    c.snapshot = walstream::SnapshotMode::Never;
  } else {
    throw UsageError(fmt::format("--snapshot must be initial or never, not '{}'", snapshot));
  }
  if (auto m = setting(r, "maxlen", ""); !m.empty()) c.maxlen = parse_positive(m, "--maxlen");
  if (auto w = setting(r, "redis-wait", "0"); w != "0") {
    auto n = parse_positive(w, "--redis-wait");
    if (n > 64) throw UsageError(fmt::format("--redis-wait must be at most 64 replicas, not {}", n));
    c.redis_wait = static_cast<int>(n);
  }
  auto wait_ms = parse_positive(setting(r, "redis-wait-timeout", "1000"), "--redis-wait-timeout");
  if (wait_ms > 600'000) throw UsageError("--redis-wait-timeout must be at most 600000 ms");
  c.redis_wait_timeout = std::chrono::milliseconds(wait_ms);
  c.resnapshot = switch_setting(r, "resnapshot");
  c.adopt_slot = switch_setting(r, "adopt-slot");
  c.transactions = switch_setting(r, "transactions");
  std::vector<std::string> outbox;
  if (r.count("outbox")) {
    outbox = r["outbox"].as<std::vector<std::string>>();
  } else if (const char* v = std::getenv("WALSTREAM_OUTBOX"); v && *v) {
    outbox = split_commas(v);
  }
  for (const auto& t : outbox) {
    auto name = stream_table_name(t);
    if (!name) throw UsageError(fmt::format("--outbox: bad table name '{}', expected schema.table", t));
    c.outbox_tables.push_back(*name);
  }
  auto& oc = c.outbox_columns;
  oc.id = setting(r, "outbox-id-column", oc.id);
  oc.aggregate_type = setting(r, "outbox-aggregate-type-column", oc.aggregate_type);
  oc.aggregate_id = setting(r, "outbox-aggregate-id-column", oc.aggregate_id);
  oc.type = setting(r, "outbox-type-column", oc.type);
  oc.payload = setting(r, "outbox-payload-column", oc.payload);
  if (auto m = setting(r, "messages", "all"); m == "none") {
    c.messages = false;
  } else if (m != "all") {
    for (auto& p : split_commas(m)) {
      if (p.empty()) throw UsageError(fmt::format("--messages: empty prefix in '{}'", m));
      c.message_prefixes.push_back(std::move(p));
    }
  }
  if (auto b = setting(r, "backfill-new-tables", "on"); b == "off") {
    c.backfill_new_tables = false;
  } else if (b != "on") {
    throw UsageError(fmt::format("--backfill-new-tables must be on or off, not '{}'", b));
  }
  c.metrics_listen = setting(r, "metrics-listen", "");
  if (!c.metrics_listen.empty()) {
    try {
      walstream::parse_listen_address(c.metrics_listen);
    } catch (const std::invalid_argument& e) {
      throw UsageError(fmt::format("--metrics-listen: {}", e.what()));
    }
  }
  try {
    c.lag_warn = walstream::parse_lag_warn(setting(r, "lag-warn", "1GiB,5m"));
  } catch (const std::invalid_argument& e) {
    throw UsageError(fmt::format("--lag-warn: {}", e.what()));
  }
  c.retention = parse_retention(r);
  c.status_interval = parse_seconds(setting(r, "status-interval", "10"), "--status-interval");
  c.shutdown_timeout = parse_seconds(setting(r, "shutdown-timeout", "30"), "--shutdown-timeout");
  c.max_backoff = parse_seconds(setting(r, "max-backoff", "30"), "--max-backoff");
  try {
    walstream::log::set_level(walstream::log::parse_level(setting(r, "log-level", "info")));
  } catch (const std::invalid_argument& e) {
    throw UsageError(fmt::format("--log-level: {}", e.what()));
  }
  return c;
}

int cmd_run(int argc, char** argv) {
  Config config = parse_run(argc, argv);
  walstream::install_stop_handlers();
  // Up before anything else: /healthz answers while walstream starts, and a port that cannot be
  // taken is a start-up problem.
  std::optional<walstream::MetricsServer> metrics;
  try {
    if (!config.metrics_listen.empty()) metrics.emplace(walstream::parse_listen_address(config.metrics_listen));
  } catch (const std::exception& e) {
    walstream::log::error("{}", e.what());
    return 1;
  }
  // Start-up problems are the operator's to fix: say so in one line and exit. Once running, the
  // same failures are outages and the run loop retries them.
  try {
    walstream::prepare_source(config);
    // A Redis that is loading its dataset (just restarted, started beside walstream) is not a setup
    // problem: wait for it, a minute at most, then say so like any other.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    for (bool said = false;;) {
      try {
        // One Redis, the master behind Sentinel, or a cluster (found by itself): every master answers.
        auto probe = walstream::connect_redis(config.redis);
        for (const auto& master : probe->masters()) probe->checked_on(master, {"PING"});
        config.redis_cluster = probe->is_cluster();
        break;
      } catch (const walstream::RedisError& e) {
        if (std::string_view(e.what()).find("LOADING") == std::string_view::npos ||
            std::chrono::steady_clock::now() > deadline || walstream::stop_requested()) {
          throw;
        }
        if (!said) walstream::log::info("Redis {} is loading its dataset; waiting", config.redis.display());
        said = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  } catch (const std::exception& e) {
    walstream::log::error("{}", e.what());
    return 1;
  }
  return walstream::run(config);
}

cxxopts::Options tail_options() {
  cxxopts::Options o("walstream tail",
                     "Print the entries of walstream's streams on stdout, one JSON line per entry. A table's records:\n"
                     "{\"stream_id\":<stream key>,\"id\":<entry ID>,\"op\":…,\"table\":…,\"key\":{…},\"after\":{…},"
                     "\"before\":{…},\"unchanged\":[…],\"ts\":…}\n"
                     "key, after, before and unchanged are embedded JSON; a field the record lacks is left out.\n"
                     "Events, messages and other streams: {\"stream_id\":…,\"id\":…,<field>:<value>,…}, every field\n"
                     "of the entry in its order, as a string; payload (and the row of events:_invalid, the streams of\n"
                     "a transaction marker) embedded when it is JSON; a value that is not UTF-8 as <field>_base64.\n"
                     "id is the entry's: an event's own id is printed as event_id (a field id or stream_id of\n"
                     "another stream as field_id, field_stream_id).\n"
                     "A table without a schema is in public. Runs until SIGTERM/SIGINT (exit 0) or --count.\n");
  o.positional_help("[<schema.table>...]");
  o.add_options()
      ("events", "an outbox's events of this aggregate type: stream <prefix>events:<type> (repeatable or "
                 "comma-separated; _invalid: the outbox rows that were not events)",
       cxxopts::value<std::vector<std::string>>())
      ("messages", "logical messages of this prefix: stream <prefix>messages:<prefix> (repeatable or "
                   "comma-separated)", cxxopts::value<std::vector<std::string>>())
      ("stream", "any stream by its key, e.g. walstream:transactions (repeatable; the key is taken as it is); "
                 "one under the prefix that is not events, messages or transactions is a table's and prints "
                 "as records", cxxopts::value<std::vector<std::string>>())
      ("group", "read through this consumer group, created when missing: first this consumer's pending entries, "
                "then new ones; each entry is acknowledged (XACK) once printed", cxxopts::value<std::string>())
      ("consumer", "consumer name inside --group (required with it)", cxxopts::value<std::string>())
      ("from-start", "start at each stream's first entry (with --group: where a new group starts)")
      ("from", "start after this entry ID, <ms>-<seq> (with --group: where a new group starts)",
       cxxopts::value<std::string>())
      ("prefix", "stream key prefix: streams are <prefix><schema>.<table>, <prefix>events:<type>, "
                 "<prefix>messages:<prefix> [WALSTREAM_PREFIX] (default walstream:)", cxxopts::value<std::string>())
      ("count", "exit 0 after printing N entries (default: until stopped)", cxxopts::value<std::string>())
      ("block-ms", "longest wait of one blocking read, so also the longest delay before a stop signal is "
                   "honoured (default 1000)", cxxopts::value<std::string>())
      ("h,help", "show this help");
  // Without --from-start or --from, only entries added after the start are printed.
  o.add_options("positional")("tables", "", cxxopts::value<std::vector<std::string>>());
  o.parse_positional({"tables"});
  add_redis_options(o);
  return o;
}

int cmd_tail(int argc, char** argv) {
  auto options = tail_options();
  auto r = parse_or_usage(options, argc, argv);
  if (r.count("help")) {
    std::cout << options.help({""});
    return 0;
  }
  walstream::TailOptions t;
  if (r.count("tables")) {
    for (auto name : r["tables"].as<std::vector<std::string>>()) {
      // The stream key's form of the name: a part with a dot or a quote is double-quoted.
      auto parsed = stream_table_name(name);
      if (!parsed) throw UsageError(fmt::format("tail: bad table name '{}', expected schema.table", name));
      t.tables.push_back(*parsed);
    }
  }
  if (r.count("events")) {
    for (const auto& type : r["events"].as<std::vector<std::string>>()) {
      // walstream never writes such a stream: an aggregate type like that makes an invalid event.
      if (type.empty() || type.find_first_of(" \t\r\n") != std::string::npos) {
        throw UsageError(fmt::format("--events: '{}' is no aggregate type (empty or with white space)", type));
      }
      t.events.push_back(type);
    }
  }
  if (r.count("messages")) {
    for (const auto& prefix : r["messages"].as<std::vector<std::string>>()) {
      if (prefix.empty()) throw UsageError("--messages: a message prefix must not be empty");
      t.messages.push_back(prefix);
    }
  }
  // A stream key may hold a comma: each --stream as given, not split like the lists above.
  for (const auto& a : r.arguments()) {
    if (a.key() != "stream") continue;
    if (a.value().empty()) throw UsageError("--stream: a stream key must not be empty");
    t.streams.push_back(a.value());
  }
  if (t.tables.empty() && t.events.empty() && t.messages.empty() && t.streams.empty()) {
    throw UsageError("tail: name at least one table (schema.table), --events, --messages or --stream");
  }
  t.redis = redis_setting(r);
  t.prefix = setting(r, "prefix", "walstream:");
  if (r.count("consumer") && !r.count("group")) throw UsageError("--consumer needs --group");
  if (r.count("group")) {
    t.group = r["group"].as<std::string>();
    if (t.group.empty()) throw UsageError("--group must not be empty");
    if (!r.count("consumer") || r["consumer"].as<std::string>().empty()) {
      throw UsageError("--group needs --consumer: the name this reader's pending entries are kept under");
    }
    t.consumer = r["consumer"].as<std::string>();
  }
  if (r.count("from-start") && r.count("from")) throw UsageError("--from-start and --from exclude each other");
  if (r.count("from-start")) t.start = walstream::TailOptions::Start::Beginning;
  if (r.count("from")) {
    auto text = r["from"].as<std::string>();
    // Redis reads a bare <ms> as <ms>-0.
    auto parsed = walstream::parse_stream_id(text.find('-') == std::string::npos ? text + "-0" : text);
    if (!parsed) throw UsageError(fmt::format("--from must be an entry ID <ms>-<seq>, not '{}'", text));
    t.start = walstream::TailOptions::Start::After;
    t.from_id = *parsed;
  }
  if (r.count("count")) t.count = parse_positive(r["count"].as<std::string>(), "--count");
  if (r.count("block-ms")) {
    auto ms = parse_positive(r["block-ms"].as<std::string>(), "--block-ms");
    if (ms > 3'600'000) throw UsageError("--block-ms must be at most 3600000");
    t.block = std::chrono::milliseconds(ms);
  }
  // Redis unreachable or refusing at the start: one line, exit 1 (main's handler).
  return walstream::tail(t);
}


cxxopts::Options status_options() {
  cxxopts::Options o("walstream status",
                     "Show the replication slot, the publication, the Redis checkpoint, every stream under the prefix\n"
                     "with its consumer groups, and the snapshot state, from PostgreSQL and Redis alone (walstream\n"
                     "need not run). Exit 0 when healthy; 1 when behind or broken, with one line per reason on\n"
                     "stderr: the slot is missing or invalidated (wal_status lost), or unreserved; no walstream holds\n"
                     "the slot while changes wait; the lag passes --lag-warn; the Redis checkpoint is missing or\n"
                     "behind the slot; the publication is missing; a server cannot be reached (also exit 1).\n"
                     "Exit 2: bad options.\n");
  o.add_options()
      ("pg", "PostgreSQL connection: libpq URI or key=value conninfo; empty uses libpq's PG* variables "
             "[WALSTREAM_PG]", cxxopts::value<std::string>())
      ("slot", "logical replication slot [WALSTREAM_SLOT] (default walstream)", cxxopts::value<std::string>())
      ("publication", "publication [WALSTREAM_PUBLICATION] (default walstream)", cxxopts::value<std::string>())
      ("prefix", "stream key prefix [WALSTREAM_PREFIX] (default walstream:)", cxxopts::value<std::string>())
      ("lag-warn", "WAL the slot may be behind (server WAL end - confirmed_flush_lsn) before it is a problem: "
                   "bytes, or with a unit kB, MB, GB, TB (powers of 1024) [WALSTREAM_LAG_WARN] (default 1GB)",
       cxxopts::value<std::string>())
      ("json", "print one JSON document instead of the table")
      ("h,help", "show this help");
  add_redis_options(o);
  return o;
}

cxxopts::Options backfill_options() {
  cxxopts::Options o("walstream backfill",
                     "Ask the walstream that streams --slot to re-read these tables and publish their current rows as\n"
                     "`r` records into the live streams, in key order, chunk by chunk, while changes keep flowing.\n"
                     "The request goes through the replication stream (pg_logical_emit_message, prefix\n"
                     "walstream.backfill): it is served once walstream reads it, resumes after a restart, and its\n"
                     "progress is in walstream's log and `walstream status`. A row changed while its chunk is read\n"
                     "is published only through its change. Tables need a primary key (or replica identity index).\n");
  o.positional_help("<schema.table>...");
  o.add_options()
      ("pg", "PostgreSQL connection: libpq URI or key=value conninfo; empty uses libpq's PG* variables "
             "[WALSTREAM_PG]", cxxopts::value<std::string>())
      ("slot", "the slot of the walstream that is to serve it [WALSTREAM_SLOT] (default walstream)",
       cxxopts::value<std::string>())
      ("publication", "publication the tables must be in [WALSTREAM_PUBLICATION] (default walstream)",
       cxxopts::value<std::string>())
      ("prefix", "stream key prefix, as the walstream's [WALSTREAM_PREFIX] (default walstream:)",
       cxxopts::value<std::string>())
      ("where", "only rows matching this SQL condition, e.g. \"created_at > now() - interval '7 days'\"",
       cxxopts::value<std::string>())
      ("chunk-rows", "rows read per chunk, at most (default 10000; fewer for wide rows: a chunk stays near 8 MB)",
       cxxopts::value<std::string>())
      ("h,help", "show this help");
  o.add_options("positional")("tables", "", cxxopts::value<std::vector<std::string>>());
  o.parse_positional({"tables"});
  return o;
}

int cmd_backfill(int argc, char** argv) {
  auto options = backfill_options();
  auto r = parse_or_usage(options, argc, argv);
  if (r.count("help")) {
    std::cout << options.help({""});
    return 0;
  }
  walstream::Backfill::Request req;
  if (r.count("tables")) {
    for (const auto& name : r["tables"].as<std::vector<std::string>>()) {
      auto parsed = walstream::parse_qualified_table_name(name);
      if (!parsed) throw UsageError(fmt::format("backfill: bad table name '{}', expected schema.table", name));
      req.tables.push_back(walstream::qualified_table_name(parsed->first.empty() ? "public" : parsed->first,
                                                           parsed->second));
    }
  }
  if (req.tables.empty()) throw UsageError("backfill: name at least one table (schema.table)");
  auto slot = setting(r, "slot", "walstream");
  if (!std::regex_match(slot, std::regex("[a-z0-9_]{1,63}"))) {
    throw UsageError(fmt::format("--slot '{}': a slot name is 1-63 lower-case letters, digits or underscores", slot));
  }
  auto publication = setting(r, "publication", "walstream");
  req.where = setting(r, "where", "");
  req.chunk_rows = static_cast<long long>(parse_positive(setting(r, "chunk-rows", "10000"), "--chunk-rows"));
  if (req.chunk_rows > 1'000'000) throw UsageError("--chunk-rows must be at most 1000000");
  auto conn = walstream::PgConnection::open(setting(r, "pg", ""), false);
  // What walstream would refuse, refused here first, in one line.
  for (const auto& name : req.tables) {
    auto parsed = walstream::parse_qualified_table_name(name);
    auto found = walstream::find_published_table(conn, publication, parsed->first, parsed->second);
    if (!found) {
      walstream::log::error("backfill: {} is not in publication '{}'", name, publication);
      return 1;
    }
    if (!found->has_key) {
      walstream::log::error("backfill: {} has no primary key (nor replica identity index) to read it in chunks by; "
                            "add one, or use --resnapshot for a whole new snapshot",
                            name);
      return 1;
    }
  }
  if (!req.where.empty()) {
    // A condition that does not parse or names no such column fails here, not in walstream.
    auto parsed = walstream::parse_qualified_table_name(req.tables.front());
    conn.exec(fmt::format("EXPLAIN SELECT 1 FROM {}.{} WHERE ({})", walstream::quote_ident(parsed->first),
                          walstream::quote_ident(parsed->second), req.where),
              PGRES_TUPLES_OK);
  }
  auto sent = conn.exec_params("SELECT pg_logical_emit_message(true, $1, $2)",
                               {std::string(walstream::Backfill::kRequestPrefix), walstream::Backfill::encode(slot, req)},
                               PGRES_TUPLES_OK);
  auto held = conn.exec_params("SELECT active FROM pg_replication_slots WHERE slot_name = $1", {slot}, PGRES_TUPLES_OK);
  std::cout << fmt::format("backfill of {} requested at {}", fmt::join(req.tables, ", "), PQgetvalue(sent.get(), 0, 0));
  if (PQntuples(held.get()) != 1) {
    std::cout << fmt::format("; slot '{}' does not exist: no walstream will serve it", slot);
  } else if (std::string_view(PQgetvalue(held.get(), 0, 0)) != "t") {
    std::cout << fmt::format("; no walstream holds slot '{}' now: the next one that does serves it", slot);
  }
  std::cout << "\n";
  return 0;
}

int cmd_status(int argc, char** argv) {
  auto options = status_options();
  auto r = parse_or_usage(options, argc, argv);
  if (r.count("help")) {
    std::cout << options.help();
    return 0;
  }
  if (!r.unmatched().empty()) throw UsageError(fmt::format("unexpected argument '{}'", r.unmatched().front()));
  walstream::StatusOptions s;
  s.pg = setting(r, "pg", "");
  s.redis = redis_setting(r);
  s.slot = setting(r, "slot", "walstream");
  if (!std::regex_match(s.slot, std::regex("[a-z0-9_]{1,63}"))) {
    throw UsageError(fmt::format("--slot '{}': a slot name is 1-63 lower-case letters, digits or underscores", s.slot));
  }
  s.publication = setting(r, "publication", "walstream");
  if (s.publication.empty() || s.publication.size() > 63) throw UsageError("--publication must be 1-63 characters");
  s.prefix = setting(r, "prefix", "walstream:");
  auto lag = setting(r, "lag-warn", "1GB");
  auto bytes = walstream::parse_byte_size(lag);
  if (!bytes) {
    throw UsageError(fmt::format("--lag-warn must be a positive number of bytes (or 64MB, 1GB…), not '{}'", lag));
  }
  s.lag_warn = *bytes;
  s.json = r.count("json") > 0;
  return walstream::status(s, std::cout, std::cerr);
}

}  // namespace

int main(int argc, char** argv) {
  // libpq waits for an unreachable or silent server without limit unless told otherwise. The
  // replication connection sets connect_timeout itself; this default (libpq's own variable, so a
  // connect_timeout in the conninfo or a PGCONNECT_TIMEOUT already set still wins) covers the
  // libpqxx connections (setup checks, catalog, snapshot) too.
  setenv("PGCONNECT_TIMEOUT", "10", /*overwrite=*/0);
  try {
    std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "run") return cmd_run(argc - 1, argv + 1);
    if (cmd == "tail") return cmd_tail(argc - 1, argv + 1);
    if (cmd == "status") return cmd_status(argc - 1, argv + 1);
    if (cmd == "backfill") return cmd_backfill(argc - 1, argv + 1);
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      std::cout << kUsage;
      return 0;
    }
    if (cmd == "--version") {
      std::cout << "walstream " << WALSTREAM_VERSION << "\n";
      return 0;
    }
    if (cmd.empty()) {
      std::cerr << kUsage;
      return 2;
    }
    throw UsageError(fmt::format("unknown command '{}'", cmd));
  } catch (const UsageError& e) {
    std::cerr << "walstream: " << e.what() << " (see walstream --help)\n";
    return 2;
  } catch (const std::exception& e) {
    walstream::log::error("{}", e.what());
    return 1;
  }
}
