#include "status.h"

#include <hiredis/hiredis.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <ostream>
#include <utility>
#include <vector>

#include "json.h"
#include "keys.h"
#include "pg_conn.h"
#include "redis_client.h"
#include "relation_cache.h"
#include "slot_store.h"

namespace walstream {
namespace {

constexpr auto kScanBudget = std::chrono::seconds(30);

struct GroupInfo {
  std::string name;
  long long consumers = 0;
  long long pending = 0;
  std::optional<long long> lag;  // Redis 7 gives it when it can tell (nil after some deletions)
  std::string last_delivered;
};

struct StreamInfo {
  std::string key;
  long long length = 0;
  std::optional<std::string> first_id, last_id, last_ts;
  std::vector<GroupInfo> groups;
};

struct Report {
  bool redis_cluster = false;  // a Redis Cluster: its key layout (keys.h)
  std::size_t redis_masters = 0;
  // PostgreSQL
  bool pg_ok = false;
  std::string pg_server;
  std::string wal_lsn;
  bool slot_exists = false;
  std::string slot_type, slot_plugin, slot_database, connected_database;
  bool slot_active = false;
  std::optional<long long> active_pid;
  std::string walsender_state;
  std::optional<std::uint64_t> confirmed;
  std::optional<long long> lag;
  std::string wal_status;
  std::optional<long long> safe_wal_size;
  bool publication_exists = false;
  bool publication_all_tables = false;
  std::vector<std::string> publication_tables;
  // Redis
  bool redis_ok = false;
  bool checkpoint_exists = false;
  std::optional<std::uint64_t> checkpoint_lsn;
  bool checkpoint_creating = false;
  std::vector<std::pair<std::string, std::string>> snapshot;
  std::vector<std::pair<std::string, std::string>> backfill;  // <prefix>backfill:<slot>, fields in order
  std::vector<StreamInfo> streams;
  // What is wrong, one line each.
  std::vector<std::string> reasons;
};

std::string text(const redisReply* r) { return r && r->str ? std::string(r->str, r->len) : std::string(); }

std::optional<long long> number(const redisReply* r) {
  if (!r) return std::nullopt;
  if (r->type == REDIS_REPLY_INTEGER) return r->integer;
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
    try {
      return std::stoll(text(r));
    } catch (const std::exception&) {
    }
  }
  return std::nullopt;
}

std::string field(const PgResult& r, int row, int col) { return PQgetvalue(r.get(), row, col); }

std::optional<long long> optional_number(const std::string& s) {
  if (s.empty()) return std::nullopt;
  try {
    return std::stoll(s);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void gather_postgres(const StatusOptions& o, Report& r) {
  std::optional<PgConnection> conn;
  try {
    conn.emplace(PgConnection::open(o.pg, false));
  } catch (const std::exception& e) {
    r.reasons.push_back(e.what());
    return;
  }
  try {
    auto& c = *conn;
    r.pg_server = c.describe();
    auto wal = c.exec("SELECT pg_current_wal_lsn()::text, current_database()", PGRES_TUPLES_OK);
    r.wal_lsn = field(wal, 0, 0);
    r.connected_database = field(wal, 0, 1);
    auto slot = c.exec_params(
        "SELECT s.slot_type, coalesce(s.plugin, ''), coalesce(s.database::text, ''), s.active, "
        "coalesce(s.active_pid::text, ''), coalesce(s.confirmed_flush_lsn::text, ''), coalesce(s.wal_status, ''), "
        "coalesce(s.safe_wal_size::text, ''), "
        "coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint::text, ''), "
        "coalesce((SELECT w.state FROM pg_stat_replication w WHERE w.pid = s.active_pid), '') "
        "FROM pg_replication_slots s WHERE s.slot_name = $1",
        {o.slot}, PGRES_TUPLES_OK);
    if (PQntuples(slot.get()) > 0) {
      r.slot_exists = true;
      r.slot_type = field(slot, 0, 0);
      r.slot_plugin = field(slot, 0, 1);
      r.slot_database = field(slot, 0, 2);
      r.slot_active = field(slot, 0, 3) == "t";
      r.active_pid = optional_number(field(slot, 0, 4));
      if (auto lsn = field(slot, 0, 5); !lsn.empty()) r.confirmed = parse_lsn_text(lsn);
      r.wal_status = field(slot, 0, 6);
      r.safe_wal_size = optional_number(field(slot, 0, 7));
      r.lag = optional_number(field(slot, 0, 8));
      r.walsender_state = field(slot, 0, 9);
    }
    auto pub = c.exec_params("SELECT puballtables FROM pg_publication WHERE pubname = $1", {o.publication},
                             PGRES_TUPLES_OK);
    if (PQntuples(pub.get()) > 0) {
      r.publication_exists = true;
      r.publication_all_tables = field(pub, 0, 0) == "t";
      auto tables = c.exec_params(
          "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2", {o.publication},
          PGRES_TUPLES_OK);
      for (int i = 0; i < PQntuples(tables.get()); ++i) {
        r.publication_tables.push_back(qualified_table_name(field(tables, i, 0), field(tables, i, 1)));
      }
    }
    r.pg_ok = true;
  } catch (const std::exception& e) {
    r.reasons.push_back(fmt::format("PostgreSQL {}: {}", r.pg_server, e.what()));
  }
}

StreamInfo stream_info(RedisCommands& redis, const std::string& key) {
  StreamInfo s;
  s.key = key;
  s.length = redis.checked(key, {"XLEN", key}).integer();
  auto first = redis.checked(key, {"XRANGE", key, "-", "+", "COUNT", "1"}).entries();
  if (!first.empty()) s.first_id = first.front().id;
  auto last = redis.checked(key, {"XREVRANGE", key, "+", "-", "COUNT", "1"}).entries();
  if (!last.empty()) {
    s.last_id = last.front().id;
    for (const auto& [f, v] : last.front().fields) {
      if (f == "ts") s.last_ts = v;
    }
  }
  auto groups = redis.checked(key, {"XINFO", "GROUPS", key});
  const redisReply* g = groups.raw();
  for (std::size_t i = 0; g->type == REDIS_REPLY_ARRAY && i < g->elements; ++i) {
    const redisReply* m = g->element[i];
    if (m->type != REDIS_REPLY_ARRAY) continue;
    GroupInfo info;
    for (std::size_t j = 0; j + 1 < m->elements; j += 2) {
      auto name = text(m->element[j]);
      const redisReply* v = m->element[j + 1];
      if (name == "name") info.name = text(v);
      if (name == "consumers") info.consumers = number(v).value_or(0);
      if (name == "pending") info.pending = number(v).value_or(0);
      if (name == "lag") info.lag = number(v);
      if (name == "last-delivered-id") info.last_delivered = text(v);
    }
    s.groups.push_back(std::move(info));
  }
  return s;
}

void gather_redis(const StatusOptions& o, Report& r) {
  // One Redis, the master behind Sentinel, or a cluster (then the keys take its layout, keys.h).
  std::optional<SlotStore> connected;
  try {
    connected.emplace(o.redis, Keys{o.prefix, o.slot});
  } catch (const std::exception& e) {
    r.reasons.push_back(e.what());
    return;
  }
  try {
    auto& store = *connected;
    auto& redis = store.redis();
    const Keys& keys = store.keys();
    r.redis_cluster = store.cluster();
    r.redis_masters = redis.masters().size();
    try {
      store.check_eviction_policy();
    } catch (const RedisError& e) {
      r.reasons.push_back(e.what());
    }
    if (auto cp = store.checkpoint()) {
      r.checkpoint_exists = true;
      r.checkpoint_lsn = cp->lsn;
      r.checkpoint_creating = cp->creating;
    }
    auto snapshot = redis.checked(keys.snapshot_state(), {"HGETALL", keys.snapshot_state()}).strings();
    for (std::size_t i = 0; i + 1 < snapshot.size(); i += 2) r.snapshot.emplace_back(snapshot[i], snapshot[i + 1]);
    // The backfill's state, its status first, then in the order an operator reads it.
    const std::vector<std::string> order = {"status", "request", "table", "rows", "chunks", "after", "done", "queue"};
    auto backfill = redis.checked(keys.backfill(), {"HMGET", keys.backfill(), order[0], order[1], order[2], order[3],
                                                    order[4], order[5], order[6], order[7]})
                        .optional_strings();
    for (std::size_t i = 0; i < backfill.size() && i < order.size(); ++i) {
      if (backfill[i] && !backfill[i]->empty()) r.backfill.emplace_back(order[i], *backfill[i]);
    }

    std::vector<std::string> found;
    auto deadline = std::chrono::steady_clock::now() + kScanBudget;
    bool out_of_time = false;
    // A cluster's streams are spread over its masters: each is scanned.
    for (const auto& master : redis.masters()) {
      std::string cursor = "0";
      do {
        auto page = redis.checked_on(master, {"SCAN", cursor, "MATCH", glob_escape(o.prefix) + "*", "COUNT", "1000",
                                              "TYPE", "stream"});
        const redisReply* p = page.raw();
        if (p->type != REDIS_REPLY_ARRAY || p->elements != 2) {
          throw RedisError(RedisError::Kind::Fatal, "odd SCAN reply");
        }
        cursor = text(p->element[0]);
        for (std::size_t i = 0; i < p->element[1]->elements; ++i) found.push_back(text(p->element[1]->element[i]));
        out_of_time = std::chrono::steady_clock::now() > deadline;
      } while (cursor != "0" && !out_of_time);
      if (out_of_time) {
        r.reasons.push_back(fmt::format("scanning Redis for the streams under '{}' took more than {} s: the list "
                                        "below is incomplete",
                                        o.prefix, kScanBudget.count()));
        break;
      }
    }
    std::sort(found.begin(), found.end());
    found.erase(std::unique(found.begin(), found.end()), found.end());  // SCAN may return a key twice
    for (const auto& key : found) {
      if (key.rfind(keys.staging_prefix(), 0) == 0) continue;
      r.streams.push_back(stream_info(redis, key));
    }
    r.redis_ok = true;
  } catch (const std::exception& e) {
    r.reasons.push_back(fmt::format("Redis {}: {}", o.redis.display(), e.what()));
  }
}

// The problems, from what was gathered: each one line an operator can act on.
void judge(const StatusOptions& o, Report& r) {
  Keys keys{o.prefix, o.slot, r.redis_cluster};
  if (r.pg_ok && !r.slot_exists) {
    if (r.checkpoint_lsn) {
      r.reasons.push_back(fmt::format("replication slot '{}' does not exist, but Redis holds a checkpoint for it at "
                                      "{}: the slot was dropped; start walstream once with --resnapshot",
                                      o.slot, format_lsn_text(*r.checkpoint_lsn)));
    } else {
      r.reasons.push_back(fmt::format("replication slot '{}' does not exist (walstream run creates it)", o.slot));
    }
  }
  if (r.slot_exists) {
    if (r.slot_type != "logical" || r.slot_plugin != "pgoutput") {
      r.reasons.push_back(fmt::format("replication slot '{}' is a {} slot{}, not a logical pgoutput slot", o.slot,
                                      r.slot_type, r.slot_plugin.empty() ? "" : " of " + r.slot_plugin));
    }
    if (!r.slot_database.empty() && r.slot_database != r.connected_database) {
      r.reasons.push_back(fmt::format("replication slot '{}' belongs to database {}, but --pg connects to {}", o.slot,
                                      r.slot_database, r.connected_database));
    }
    if (!r.slot_active && r.lag && *r.lag > 0) {
      r.reasons.push_back(fmt::format("no walstream holds slot '{}' (not active) while {} of WAL wait to be streamed",
                                      o.slot, bytes_text(*r.lag)));
    }
    if (r.lag && *r.lag > 0 && static_cast<std::uint64_t>(*r.lag) > o.lag_warn) {
      r.reasons.push_back(fmt::format("slot '{}' lags {} behind the server's WAL, more than --lag-warn {}", o.slot,
                                      bytes_text(*r.lag), bytes_text(static_cast<long long>(o.lag_warn))));
    }
    if (r.wal_status == "lost") {
      r.reasons.push_back(fmt::format("slot '{}' is invalidated (wal_status lost): PostgreSQL removed WAL it still "
                                      "needed (max_slot_wal_keep_size); start walstream once with --resnapshot",
                                      o.slot));
    } else if (r.wal_status == "unreserved") {
      r.reasons.push_back(fmt::format("warning: slot '{}' has wal_status unreserved: PostgreSQL will remove WAL it "
                                      "still needs at its next checkpoint unless walstream catches up "
                                      "(max_slot_wal_keep_size)",
                                      o.slot));
    }
    if (r.redis_ok && !r.checkpoint_exists) {
      r.reasons.push_back(fmt::format("Redis holds no checkpoint for slot '{}' ({}) while the slot exists: Redis lost "
                                      "data (a FLUSHALL, a restart without persistence…) or is not the one walstream "
                                      "writes to; start walstream once with --resnapshot",
                                      o.slot, keys.checkpoint()));
    }
    if (r.checkpoint_lsn && r.confirmed && *r.checkpoint_lsn < *r.confirmed) {
      r.reasons.push_back(fmt::format("Redis is behind slot '{}': its checkpoint is at {} but the slot confirmed {}; "
                                      "the changes in between are lost from Redis; start walstream once with "
                                      "--resnapshot",
                                      o.slot, format_lsn_text(*r.checkpoint_lsn), format_lsn_text(*r.confirmed)));
    }
  }
  if (r.pg_ok && !r.publication_exists) {
    r.reasons.push_back(fmt::format("publication '{}' does not exist in database {} (walstream run creates it)",
                                    o.publication, r.connected_database));
  }
}

void optional_string(JsonWriter& w, const std::optional<std::string>& s) {
  if (s) {
    w.string(*s);
  } else {
    w.null();
  }
}

void optional_int(JsonWriter& w, const std::optional<long long>& n) {
  if (n) {
    w.raw(std::to_string(*n));
  } else {
    w.null();
  }
}

std::optional<std::string> lsn_of(const std::optional<std::uint64_t>& lsn) {
  return lsn ? std::optional<std::string>(format_lsn_text(*lsn)) : std::nullopt;
}

std::optional<std::string> nonempty(const std::string& s) {
  return s.empty() ? std::nullopt : std::optional<std::string>(s);
}

std::string json_report(const StatusOptions& o, const Report& r) {
  Keys keys{o.prefix, o.slot, r.redis_cluster};
  JsonWriter w;
  w.start_object();
  w.key("healthy");
  w.boolean(r.reasons.empty());
  w.key("reasons");
  w.start_array();
  for (const auto& reason : r.reasons) w.string(reason);
  w.end_array();
  w.key("lag_warn_bytes");
  w.number(o.lag_warn);

  w.key("postgres");
  w.start_object();
  w.key("reachable");
  w.boolean(r.pg_ok);
  w.key("server");
  optional_string(w, nonempty(r.pg_server));
  w.key("wal_lsn");
  optional_string(w, nonempty(r.wal_lsn));
  w.end_object();

  w.key("slot");
  w.start_object();
  w.key("name");
  w.string(o.slot);
  w.key("exists");
  if (r.pg_ok) {
    w.boolean(r.slot_exists);
  } else {
    w.null();
  }
  w.key("active");
  w.boolean(r.slot_active);
  w.key("active_pid");
  optional_int(w, r.active_pid);
  w.key("walsender_state");
  optional_string(w, nonempty(r.walsender_state));
  w.key("database");
  optional_string(w, nonempty(r.slot_database));
  w.key("plugin");
  optional_string(w, nonempty(r.slot_plugin));
  w.key("confirmed_flush_lsn");
  optional_string(w, lsn_of(r.confirmed));
  w.key("lag_bytes");
  optional_int(w, r.lag);
  w.key("wal_status");
  optional_string(w, nonempty(r.wal_status));
  w.key("safe_wal_size");
  optional_int(w, r.safe_wal_size);
  w.end_object();

  w.key("publication");
  w.start_object();
  w.key("name");
  w.string(o.publication);
  w.key("exists");
  w.boolean(r.publication_exists);
  w.key("all_tables");
  w.boolean(r.publication_all_tables);
  w.key("tables");
  w.start_array();
  for (const auto& t : r.publication_tables) w.string(t);
  w.end_array();
  w.end_object();

  w.key("redis");
  w.start_object();
  w.key("reachable");
  w.boolean(r.redis_ok);
  w.key("server");
  w.string(o.redis.display());
  w.key("cluster");
  w.boolean(r.redis_cluster);
  if (r.redis_cluster) {
    w.key("masters");
    w.number(static_cast<std::uint64_t>(r.redis_masters));
  }
  w.end_object();

  w.key("checkpoint");
  w.start_object();
  w.key("key");
  w.string(keys.checkpoint());
  w.key("exists");
  w.boolean(r.checkpoint_exists);
  w.key("lsn");
  optional_string(w, lsn_of(r.checkpoint_lsn));
  w.key("creating");
  w.boolean(r.checkpoint_creating);
  w.key("behind_slot");
  if (r.checkpoint_lsn && r.confirmed) {
    w.boolean(*r.checkpoint_lsn < *r.confirmed);
  } else {
    w.null();
  }
  w.end_object();

  w.key("snapshot");
  w.start_object();
  w.key("key");
  w.string(keys.snapshot_state());
  w.key("state");
  w.start_object();
  for (const auto& [f, v] : r.snapshot) {
    w.key(f);
    w.string(v);
  }
  w.end_object();
  w.end_object();

  w.key("backfill");
  w.start_object();
  w.key("key");
  w.string(keys.backfill());
  w.key("state");
  w.start_object();
  for (const auto& [f, v] : r.backfill) {
    w.key(f);
    w.string(v);
  }
  w.end_object();
  w.end_object();

  w.key("streams");
  w.start_array();
  for (const auto& s : r.streams) {
    w.start_object();
    w.key("key");
    w.string(s.key);
    w.key("length");
    w.raw(std::to_string(s.length));
    w.key("first_id");
    optional_string(w, s.first_id);
    w.key("last_id");
    optional_string(w, s.last_id);
    w.key("last_ts");
    optional_string(w, s.last_ts);
    w.key("groups");
    w.start_array();
    for (const auto& g : s.groups) {
      w.start_object();
      w.key("name");
      w.string(g.name);
      w.key("consumers");
      w.raw(std::to_string(g.consumers));
      w.key("pending");
      w.raw(std::to_string(g.pending));
      w.key("lag");
      optional_int(w, g.lag);
      w.key("last_delivered_id");
      w.string(g.last_delivered);
      w.end_object();
    }
    w.end_array();
    w.end_object();
  }
  w.end_array();
  w.end_object();
  return std::string(w.view());
}

// Columns padded to their widest cell; `right` columns (numbers) aligned right.
void table(std::ostream& out, const std::vector<std::vector<std::string>>& rows, const std::vector<bool>& right) {
  std::vector<std::size_t> width(right.size(), 0);
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size() && i < width.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size() && i < width.size(); ++i) {
      if (i > 0) line += "  ";
      line += right[i] ? fmt::format("{:>{}}", row[i], width[i]) : fmt::format("{:<{}}", row[i], width[i]);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << "  " << line << '\n';
  }
}

void human_report(std::ostream& out, const StatusOptions& o, const Report& r) {
  Keys keys{o.prefix, o.slot, r.redis_cluster};
  out << "PostgreSQL   " << (r.pg_ok ? fmt::format("{}, WAL at {}", r.pg_server, r.wal_lsn) : "unreachable") << '\n';
  std::string slot;
  if (!r.pg_ok) {
    slot = "unknown";
  } else if (!r.slot_exists) {
    slot = "does not exist";
  } else {
    slot = r.slot_active ? fmt::format("active, pid {}{}", r.active_pid.value_or(0),
                                       r.walsender_state.empty() ? "" : " (" + r.walsender_state + ")")
                         : "not active (no walstream holds it)";
    slot += fmt::format("; confirmed_flush_lsn {}; lag {}; wal_status {}",
                        r.confirmed ? format_lsn_text(*r.confirmed) : "none", r.lag ? bytes_text(*r.lag) : "unknown",
                        r.wal_status.empty() ? "none" : r.wal_status);
  }
  out << "slot         " << o.slot << ": " << slot << '\n';
  std::string pub;
  if (!r.pg_ok) {
    pub = "unknown";
  } else if (!r.publication_exists) {
    pub = "does not exist";
  } else {
    pub = r.publication_all_tables ? "all tables: " : "";
    for (std::size_t i = 0; i < r.publication_tables.size(); ++i) pub += (i ? ", " : "") + r.publication_tables[i];
    if (r.publication_tables.empty()) pub += "no tables";
  }
  out << "publication  " << o.publication << ": " << pub << '\n';
  out << "Redis        " << o.redis.display()
      << (r.redis_cluster ? fmt::format(" (Redis Cluster, {} masters)", r.redis_masters) : "")
      << (r.redis_ok ? "" : " unreachable") << '\n';
  std::string cp;
  if (!r.redis_ok) {
    cp = "unknown";
  } else if (!r.checkpoint_exists) {
    cp = "missing";
  } else if (!r.checkpoint_lsn) {
    cp = "no lsn yet (the slot is being created)";
  } else {
    cp = "lsn " + format_lsn_text(*r.checkpoint_lsn);
    if (r.confirmed) cp += *r.checkpoint_lsn < *r.confirmed ? " (BEHIND the slot)" : " (not behind the slot)";
  }
  out << "checkpoint   " << keys.checkpoint() << ": " << cp << '\n';
  std::string snap;
  for (const auto& [f, v] : r.snapshot) snap += (snap.empty() ? "" : ", ") + f + " " + v;
  out << "snapshot     " << keys.snapshot_state() << ": " << (snap.empty() ? "none" : snap) << '\n';
  std::string fill;
  for (const auto& [f, v] : r.backfill) fill += (fill.empty() ? "" : ", ") + f + " " + v;
  out << "backfill     " << keys.backfill() << ": " << (fill.empty() ? "none" : fill) << '\n';

  out << '\n';
  if (r.streams.empty()) {
    out << "streams      none under '" << o.prefix << "'\n";
  } else {
    out << "streams\n";
    std::vector<std::vector<std::string>> rows{{"STREAM", "LENGTH", "FIRST ID", "LAST ID", "LAST ENTRY TIME"}};
    for (const auto& s : r.streams) {
      rows.push_back({s.key, std::to_string(s.length), s.first_id.value_or("-"), s.last_id.value_or("-"),
                      s.last_ts.value_or("-")});
    }
    table(out, rows, {false, true, false, false, false});
    std::vector<std::vector<std::string>> groups{
        {"STREAM", "GROUP", "CONSUMERS", "PENDING", "LAG", "LAST DELIVERED ID"}};
    for (const auto& s : r.streams) {
      for (const auto& g : s.groups) {
        groups.push_back({s.key, g.name, std::to_string(g.consumers), std::to_string(g.pending),
                          g.lag ? std::to_string(*g.lag) : "?", g.last_delivered});
      }
    }
    out << '\n';
    if (groups.size() == 1) {
      out << "groups       none\n";
    } else {
      out << "consumer groups\n";
      table(out, groups, {false, false, true, true, true, false});
    }
  }
  out << '\n'
      << (r.reasons.empty() ? std::string("healthy")
                            : fmt::format("NOT HEALTHY: {} problem(s), on stderr", r.reasons.size()))
      << '\n';
}

}  // namespace

int status(const StatusOptions& options, std::ostream& out, std::ostream& err) {
  Report r;
  gather_postgres(options, r);
  gather_redis(options, r);
  judge(options, r);
  if (options.json) {
    out << json_report(options, r) << '\n';
  } else {
    human_report(out, options, r);
  }
  out.flush();
  for (const auto& reason : r.reasons) err << "walstream status: " << reason << '\n';
  return r.reasons.empty() ? 0 : 1;
}

}  // namespace walstream
