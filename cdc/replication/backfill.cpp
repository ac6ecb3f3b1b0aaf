#include "backfill.h"

#include <random>

#include <fmt/format.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <charconv>
#include <stdexcept>
#include <unordered_map>

#include "copy_protocol.h"
#include "errors.h"
#include "log.h"
#include "metrics.h"
#include "pg_time.h"
#include "redis_client.h"
#include "redis_commands.h"
#include "snapshot.h"

namespace walstream {
namespace {

using RjWriter = rapidjson::Writer<rapidjson::StringBuffer>;

std::string json_strings(const std::vector<std::string>& values) {
  rapidjson::StringBuffer buf;
  RjWriter w(buf);
  w.StartArray();
  for (const auto& v : values) w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
  w.EndArray();
  return buf.GetString();
}

std::vector<std::string> parse_strings(std::string_view text) {
  std::vector<std::string> out;
  if (text.empty()) return out;
  rapidjson::Document d;
  d.Parse(text.data(), text.size());
  if (d.HasParseError() || !d.IsArray()) throw std::invalid_argument("not a JSON array of strings");
  for (const auto& v : d.GetArray()) {
    if (!v.IsString()) throw std::invalid_argument("not a JSON array of strings");
    out.emplace_back(v.GetString(), v.GetStringLength());
  }
  return out;
}

void write_request(RjWriter& w, const Backfill::Request& r, std::string_view slot) {
  w.StartObject();
  if (!slot.empty()) {
    w.Key("slot");
    w.String(slot.data(), static_cast<rapidjson::SizeType>(slot.size()));
  }
  if (!r.id.empty()) {
    w.Key("id");
    w.String(r.id.c_str());
  }
  w.Key("tables");
  w.StartArray();
  for (const auto& t : r.tables) w.String(t.c_str());
  w.EndArray();
  w.Key("where");
  w.String(r.where.c_str());
  w.Key("chunk_rows");
  w.Int64(r.chunk_rows);
  w.EndObject();
}

Backfill::Request read_request(const rapidjson::Value& v, std::string* slot) {
  if (!v.IsObject() || !v.HasMember("tables") || !v["tables"].IsArray()) {
    throw std::invalid_argument("not a backfill request (an object with \"tables\")");
  }
  Backfill::Request r;
  for (const auto& t : v["tables"].GetArray()) {
    if (!t.IsString() || t.GetStringLength() == 0) throw std::invalid_argument("a table name is not a string");
    r.tables.emplace_back(t.GetString(), t.GetStringLength());
  }
  if (v.HasMember("where") && v["where"].IsString()) r.where = v["where"].GetString();
  if (v.HasMember("chunk_rows") && v["chunk_rows"].IsInt64()) r.chunk_rows = v["chunk_rows"].GetInt64();
  if (r.chunk_rows < 1) throw std::invalid_argument("chunk_rows must be positive");
  if (v.HasMember("id") && v["id"].IsString()) r.id = v["id"].GetString();
  if (slot) *slot = v.HasMember("slot") && v["slot"].IsString() ? v["slot"].GetString() : "";
  return r;
}

// A request id's LSN: "0/16B3748" or, for a table added to the publication, "0/16B3748:16384".
std::uint64_t id_lsn(std::string_view id) {
  try {
    return copy::parse_lsn(std::string(id.substr(0, id.find(':'))));
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace

std::string Backfill::encode(std::string_view slot, const Request& r) {
  rapidjson::StringBuffer buf;
  RjWriter w(buf);
  write_request(w, r, slot);
  return buf.GetString();
}

Backfill::Request Backfill::decode(std::string_view content, std::string* slot) {
  rapidjson::Document d;
  d.Parse(content.data(), content.size());
  if (d.HasParseError()) throw std::invalid_argument("not JSON");
  return read_request(d, slot);
}

void Backfill::append_key_part(std::string& key, std::string_view value) {
  key += std::to_string(value.size());
  key.push_back(':');
  key.append(value);
}

Backfill::Backfill(const Config& config, Catalog& catalog, ChangeWriter& writer, WaitUntil wait_until)
    : config_(config),
      catalog_(catalog),
      writer_(writer),
      wait_until_(std::move(wait_until)),
      keys_{config.prefix, config.slot, config.redis_cluster} {
  std::random_device rd;
  nonce_ = fmt::format("{:08x}{:08x}", rd(), rd());
}

PgConnection& Backfill::sql() {
  if (!sql_) {
    sql_.emplace(PgConnection::open(config_.pg, false));
  }
  return *sql_;
}

void Backfill::resume() {
  {
    // With synchronous replication, a commit waits for the standby in the commit log but still in the
    // proc array, invisible, possibly for long. One that streamed in an earlier session is not in this
    // session's ring: if a chunk read while it is invisible, the row would be published as it was
    // before a change already published, a stale `r`. So the xids of the backends that may be in that
    // wait now count as streamed before any low mark of this session (a chunk then waits for them to
    // become visible or end). Which backends wait for the standby (wait_event SyncRep) is visible with
    // pg_read_all_stats only; without it every backend holding an xid counts. A transaction committing
    // after this session's start point streams again anyway; without synchronous standbys no commit
    // waits.
    auto& pg = sql();
    auto held = pg.exec("SELECT current_setting('synchronous_standby_names'), coalesce((SELECT "
                        "string_agg(backend_xid::text, ',') FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND "
                        "pid <> pg_backend_pid() AND (wait_event IS NULL OR wait_event = 'SyncRep')), '')",
                        PGRES_TUPLES_OK);
    if (*PQgetvalue(held.get(), 0, 0) != '\0') {
      for (std::string_view rest = PQgetvalue(held.get(), 0, 1); !rest.empty();) {
        auto comma = rest.find(',');
        on_begin(static_cast<std::uint32_t>(std::stoul(std::string(rest.substr(0, comma)))));
        rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      }
    }
  }
  if (config_.backfill_new_tables) {
    auto& pg = sql();
    auto all = pg.exec_params("SELECT puballtables FROM pg_publication WHERE pubname = $1", {config_.publication},
                              PGRES_TUPLES_OK);
    all_tables_ = PQntuples(all.get()) == 1 && std::string_view(PQgetvalue(all.get(), 0, 0)) == "t";
    auto tables = pg.exec_params(
        "SELECT c.oid FROM pg_publication_tables pt JOIN pg_namespace n ON n.nspname = pt.schemaname "
        "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename WHERE pt.pubname = $1",
        {config_.publication}, PGRES_TUPLES_OK);
    for (int i = 0; i < PQntuples(tables.get()); ++i) {
      published_.insert(static_cast<std::uint32_t>(std::stoul(PQgetvalue(tables.get(), i, 0))));
    }
  }
  auto redis = connect_redis(config_.redis);  // one Redis, Sentinel or a cluster (its key layout: keys_)
  auto all = redis->checked(keys_.backfill(), {"HGETALL", keys_.backfill()}).strings();
  std::unordered_map<std::string, std::string> f;
  for (std::size_t i = 0; i + 1 < all.size(); i += 2) f[all[i]] = all[i + 1];
  // Requests are served in commit order: one at or below what Redis knows of was seen already (its
  // transaction resent after a restart whose last status update PostgreSQL did not get).
  seen_up_to_ = std::max(id_lsn(f["done"]), seen_up_to_);
  if (f["status"] != "running") return;
  try {
    Active a;
    a.request = decode(f["request"], nullptr);
    a.table = static_cast<std::size_t>(std::stoull(f["table"]));
    a.after = f["after"];
    a.rows = std::stoll(f["rows"]);
    a.chunks = std::stoll(f["chunks"]);
    rapidjson::Document q;
    if (!f["queue"].empty()) {
      q.Parse(f["queue"].data(), f["queue"].size());
      if (q.HasParseError() || !q.IsArray()) throw std::invalid_argument("queue is not a JSON array");
      for (const auto& r : q.GetArray()) queue_.push_back(read_request(r, nullptr));
    }
    seen_up_to_ = std::max(seen_up_to_, id_lsn(a.request.id));
    for (const auto& q : queue_) seen_up_to_ = std::max(seen_up_to_, id_lsn(q.id));
    log::info("backfill {}: resuming at table {} of {} ({}), after {} rows", a.request.id, a.table + 1,
              a.request.tables.size(), a.table < a.request.tables.size() ? a.request.tables[a.table] : "-", a.rows);
    active_ = std::move(a);
  } catch (const std::exception& e) {
    throw ConfigError(fmt::format("{} holds a backfill state walstream cannot read ({}); delete the key to drop "
                                  "the backfill, then request it again",
                                  keys_.backfill(), e.what()));
  }
}

void Backfill::on_request(std::string_view content, std::uint64_t commit_lsn) {
  std::string slot;
  Request r;
  try {
    r = decode(content, &slot);
  } catch (const std::invalid_argument& e) {
    log::error("backfill request at {} ignored: {}", copy::format_lsn(commit_lsn), e.what());
    return;
  }
  if (slot != config_.slot) return;  // for the walstream of another slot
  r.id = copy::format_lsn(commit_lsn);
  // A request resent after a restart (its transaction was not confirmed) is already known.
  if (commit_lsn <= seen_up_to_) return;
  seen_up_to_ = commit_lsn;
  log::info("backfill {}: requested for {}{}", r.id, fmt::join(r.tables, ", "),
            r.where.empty() ? "" : fmt::format(" where {}", r.where));
  if (active_) {
    queue_.push_back(std::move(r));
  } else {
    active_.emplace();
    active_->request = std::move(r);
  }
  write_state();  // in the request's own transaction: stored with its commit
}

void Backfill::on_relation(const TableInfo& table, std::uint64_t commit_lsn) {
  if (!config_.backfill_new_tables || all_tables_ || !published_.insert(table.relid).second) return;
  if (std::find(config_.outbox_tables.begin(), config_.outbox_tables.end(), table.qualified) !=
      config_.outbox_tables.end()) {
    return;
  }
  Request r;
  r.id = fmt::format("{}:{}", copy::format_lsn(commit_lsn), table.relid);
  r.tables.push_back(table.qualified);
  if (commit_lsn < seen_up_to_) return;
  seen_up_to_ = commit_lsn;
  log::info("backfill {}: {} was added to publication '{}': publishing its rows (--backfill-new-tables)", r.id,
            table.qualified, config_.publication);
  if (active_) {
    queue_.push_back(std::move(r));
  } else {
    active_.emplace();
    active_->request = std::move(r);
  }
  write_state();
}

std::string Backfill::watermark(const Chunk& c, const char* which) const {
  // The session's nonce: an earlier session's marks (resent after a crash) never match this one's.
  return fmt::format("{} {} {} {}", c.request_id, c.number, which, nonce_);
}

std::optional<PublishedTable> find_published_table(PgConnection& conn, const std::string& publication,
                                                   const std::string& schema, const std::string& table) {
  auto found = conn.exec_params(
      "SELECT c.oid, c.relreplident, coalesce(pt.rowfilter, ''), EXISTS (SELECT 1 FROM pg_index i "
      "WHERE i.indrelid = c.oid AND (i.indisprimary OR i.indisreplident)) "
      "FROM pg_publication_tables pt JOIN pg_namespace n ON n.nspname = pt.schemaname "
      "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename "
      "WHERE pt.pubname = $1 AND pt.schemaname = $2 AND pt.tablename = $3",
      {publication, schema, table}, PGRES_TUPLES_OK);
  if (PQntuples(found.get()) != 1) return std::nullopt;
  PublishedTable t;
  t.relid = static_cast<std::uint32_t>(std::stoul(PQgetvalue(found.get(), 0, 0)));
  t.replident = PQgetvalue(found.get(), 0, 1)[0];
  t.rowfilter = PQgetvalue(found.get(), 0, 2);
  t.has_key = std::string_view(PQgetvalue(found.get(), 0, 3)) == "t";
  return t;
}

XidSnapshot XidSnapshot::parse(std::string_view text) {
  auto number = [&](std::string_view part) {
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (ec != std::errc() || end != part.data() + part.size() || part.empty()) {
      throw std::invalid_argument(fmt::format("not a snapshot: '{}'", text));
    }
    return v;
  };
  auto c1 = text.find(':');
  auto c2 = c1 == std::string_view::npos ? c1 : text.find(':', c1 + 1);
  if (c2 == std::string_view::npos) throw std::invalid_argument(fmt::format("not a snapshot: '{}'", text));
  XidSnapshot s;
  s.xmin = number(text.substr(0, c1));
  s.xmax = number(text.substr(c1 + 1, c2 - c1 - 1));
  if (auto rest = text.substr(c2 + 1); !rest.empty()) {
    for (;;) {
      auto comma = rest.find(',');
      s.xip.push_back(number(rest.substr(0, comma)));
      if (comma == std::string_view::npos) break;
      rest = rest.substr(comma + 1);
    }
  }
  if (s.xmin > s.xmax) throw std::invalid_argument(fmt::format("not a snapshot: '{}'", text));
  return s;
}

std::uint64_t XidSnapshot::full(std::uint32_t xid) const {
  const auto ahead = static_cast<std::int32_t>(xid - static_cast<std::uint32_t>(xmax));
  if (ahead >= 0) return xmax + static_cast<std::uint64_t>(ahead);
  const auto behind = static_cast<std::uint64_t>(-static_cast<std::int64_t>(ahead));
  return behind <= xmax ? xmax - behind : xid;
}

bool XidSnapshot::sees_committed(std::uint32_t xid) const {
  const std::uint64_t x = full(xid);
  if (x >= xmax) return false;  // at or above xmax: began after the snapshot's horizon, or left it since
  if (x < xmin) return true;
  return std::find(xip.begin(), xip.end(), x) == xip.end();
}

std::vector<std::uint32_t> unseen_commits(const XidSnapshot& s, const std::vector<std::uint32_t>& xids) {
  std::vector<std::uint32_t> out;
  for (auto x : xids) {
    if (x != 0 && !s.sees_committed(x)) out.push_back(x);
  }
  return out;
}

void Backfill::step() {
  if (chunk_) {
    auto& c = *chunk_;
    if (c.reading) take_result();
    if (!c.reading && !c.have_rows && !c.refused && c.low_seen) send_read();  // a read again, once visible
    if (c.have_rows && c.checked && !c.high_written) write_high();
    return;
  }
  if (!active_) return;
  auto& a = *active_;
  if (a.table >= a.request.tables.size()) return;
  start_read(a.chunks + 1, a.after);
}

int Backfill::read_fd() const {
  return chunk_ && chunk_->reading && !chunk_->pump_failed && sql_ ? sql_->socket() : -1;
}

void Backfill::pump() {
  if (!chunk_ || !chunk_->reading || !sql_) return;
  // A failure is reported by take_result, between transactions; until then the socket (at EOF) is not
  // polled again, or every wait would return at once.
  if (!PQconsumeInput(sql_->get())) chunk_->pump_failed = true;
}

void Backfill::start_read(long long number, const std::string& after_json) {
  auto& a = *active_;
  const auto& name = a.request.tables[a.table];
  auto parsed = parse_qualified_table_name(name);
  Chunk c;
  c.request_id = a.request.id;
  c.number = number;
  auto& pg = sql();
  std::optional<std::string> refused;
  std::string select, rowfilter;
  if (!parsed) {
    refused = "not a table name";
  } else {
    const std::string schema = parsed->first.empty() ? "public" : parsed->first;
    auto found = find_published_table(pg, config_.publication, schema, parsed->second);
    if (!found) {
      refused = fmt::format("not in publication '{}'", config_.publication);
    } else {
      c.table.relid = found->relid;
      c.table.schema = schema;
      c.table.name = parsed->second;
      c.table.replident = found->replident;
      rowfilter = found->rowfilter;
      select = describe_columns(pg, catalog_, config_.publication, c.table);
      if (std::find(config_.outbox_tables.begin(), config_.outbox_tables.end(), c.table.qualified) !=
          config_.outbox_tables.end()) {
        refused = "an outbox table (its rows are events only when inserted)";
      } else if (!c.table.has_key) {
        refused = "it has no primary key (nor replica identity index) to read it in chunks by";
      }
    }
  }
  // Low watermark, the read, high watermark: every change committed between the two marks is in the
  // stream between them, and the read saw the table at some point in between. A refused table gets
  // both marks too (with no rows between), so that its chunk ends like any other.
  //
  // PostgreSQL 15 does not flush a non-transactional message's WAL, and the walsender sends only
  // flushed WAL: without the empty transaction after it the mark would wait for the WAL writer (up to
  // wal_writer_delay, 200 ms a chunk). A commit flushes everything before it.
  pg.exec_params("SELECT pg_logical_emit_message(false, $1, $2), pg_logical_emit_message(true, $3, '')",
                 {std::string(kWatermarkPrefix), watermark(c, "low"), std::string(kFlushPrefix)}, PGRES_TUPLES_OK);
  if (refused) {
    log::error("backfill {}: {} skipped: {}", a.request.id, name, *refused);
    c.refused = true;
    c.last = true;
    c.have_rows = true;
    c.checked = true;
    c.after = c.next_after = after_json;
    chunk_ = std::move(c);
    write_high();
    return;
  }
  std::vector<std::string> key_cols;
  for (std::size_t i = 0; i < c.table.columns.size(); ++i) {
    if (c.table.columns[i].key) {
      key_cols.push_back(quote_ident(c.table.columns[i].name));
      c.key_at.push_back(i);
    }
  }
  auto after = parse_strings(after_json);
  std::vector<std::string> where, params = after;
  if (!after.empty()) {
    std::string lhs, rhs;
    for (std::size_t i = 0; i < key_cols.size(); ++i) {
      lhs += (i ? ", " : "") + key_cols[i];
      rhs += fmt::format("{}${}", i ? ", " : "", i + 1);
    }
    where.push_back(fmt::format("ROW({}) > ROW({})", lhs, rhs));
  }
  if (!rowfilter.empty()) where.push_back(rowfilter);
  if (!a.request.where.empty()) where.push_back(fmt::format("({})", a.request.where));
  // --chunk-rows, fewer when the table's rows are wide: a chunk's result stays near kChunkBytes. A
  // table's first chunk is a probe of a few rows (the size on disk says little of the text form, with
  // TOAST compressed).
  c.limit = std::min<long long>(a.request.chunk_rows, kProbeRows);
  if (a.row_bytes > 0) {
    c.limit = std::clamp<long long>(static_cast<long long>(kChunkBytes / a.row_bytes), 1, a.request.chunk_rows);
  }
  std::string query = fmt::format("SELECT {}, (extract(epoch FROM now()) * 1000000)::bigint FROM {}.{}{}{} ORDER BY {} "
                                  "LIMIT {}",
                                  select, quote_ident(c.table.schema), quote_ident(c.table.name),
                                  where.empty() ? "" : " WHERE ", fmt::format("{}", fmt::join(where, " AND ")),
                                  fmt::join(key_cols, ", "), c.limit);
  c.after = after_json;
  c.query = std::move(query);
  c.params = std::move(params);
  chunk_ = std::move(c);
  // The read goes out now, while the previous chunk is written to Redis; whether it may be used is
  // known once the low mark has streamed (check_read).
  send_read();
}

// The chunk's SELECT, in a REPEATABLE READ transaction whose snapshot (the SELECT's) is noted first.
// After a read that missed a commit (check_read), only once that commit is visible.
void Backfill::send_read() {
  auto& c = *chunk_;
  auto& a = *active_;
  auto& pg = sql();
  if (!c.invisible.empty()) {
    auto now = std::chrono::steady_clock::now();
    if (now < c.next_check) return;
    c.next_check = now + std::chrono::milliseconds(5);
    auto still = pg.exec_params("SELECT coalesce(string_agg(x::text, ','), '') FROM unnest(string_to_array($1, ',')::xid8[]) x "
                                "WHERE pg_visible_in_snapshot(x, pg_current_snapshot()) IS NOT TRUE",
                                {c.invisible}, PGRES_TUPLES_OK);
    c.invisible = PQgetvalue(still.get(), 0, 0);
    if (!c.invisible.empty()) {
      if (!c.waiting_said && now - c.waiting_since >= std::chrono::seconds(10)) {
        c.waiting_said = true;
        log::warn("backfill {}: chunk {} of {} waits for transaction(s) {}: committed (streamed) but not visible yet "
                  "(a synchronous standby that does not acknowledge?)",
                  a.request.id, c.number, a.request.tables[a.table], c.invisible);
      }
      return;
    }
  }
  // Read only (a --where cannot write). The snapshot is taken by the transaction's first statement,
  // after the low mark was written, and the SELECT reads with that same snapshot.
  auto snap = pg.exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT pg_current_snapshot()::text",
                      PGRES_TUPLES_OK);
  c.snapshot = XidSnapshot::parse(PQgetvalue(snap.get(), 0, 0));
  std::vector<const char*> values;
  for (const auto& p : c.params) values.push_back(p.c_str());
  if (!PQsendQueryParams(pg.get(), c.query.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                         nullptr, 0)) {
    auto why = pg.error_message();
    sql_.reset();
    throw PgError(true, fmt::format("backfill {}: cannot send the read of {}: {}", a.request.id,
                                    a.request.tables[a.table], why));
  }
  ++c.reads;
  c.sent = true;
  c.reading = true;
  c.pump_failed = false;
  // Sent after the low mark streamed: the only commits before it this read could miss were those
  // waited for above, and they are visible now.
  c.checked = c.low_seen;
}

// The SELECT's result if PostgreSQL has it all (else later).
void Backfill::take_result() {
  auto& c = *chunk_;
  auto& a = *active_;
  const auto& name = a.request.tables[a.table];
  PGconn* conn = sql_->get();
  if (!PQconsumeInput(conn)) {
    auto why = sql_->error_message();
    sql_.reset();
    throw PgError(true, fmt::format("backfill {}: reading {}: {}", a.request.id, name, why));
  }
  if (PQisBusy(conn)) return;
  PgResult result(PQgetResult(conn));
  while (PgResult more{PQgetResult(conn)}) {
  }
  c.reading = false;
  const bool ok = result && PQresultStatus(result.get()) == PGRES_TUPLES_OK;
  if (PQstatus(conn) == CONNECTION_OK) {
    // COMMIT after a read, ROLLBACK after a refused one (the transaction is aborted).
    auto end = PgResult(PQexec(conn, ok ? "COMMIT" : "ROLLBACK"));
  }
  if (!ok) {
    auto why = one_line(result ? PQresultErrorMessage(result.get()) : sql_->error_message());
    if (PQstatus(conn) != CONNECTION_OK || transient_sqlstate(result.get())) {
      // A lost connection, a cancel or statement_timeout, a deadlock, a server shutting down: the
      // session ends and the chunk is read again from the state, never skipped.
      sql_.reset();
      chunk_.reset();
      throw PgError(true, fmt::format("backfill {}: reading {}: {}", a.request.id, name, why));
    }
    log::error("backfill {}: reading {} failed: {}; skipped", a.request.id, name, why);
    c.nrows = 0;
    c.next_after = c.after;
    c.last = true;
    c.have_rows = true;
    c.checked = c.checked || c.low_seen;  // nothing read: nothing to be stale
    return;
  }
  if (c.low_seen && !c.checked) return;  // read before a commit it missed became visible: read again
  c.nrows = PQntuples(result.get());
  const int ncols = static_cast<int>(c.table.columns.size());
  c.next_after = c.after;
  if (c.nrows > 0) {
    std::vector<std::string> last;
    for (auto i : c.key_at) last.push_back(PQgetvalue(result.get(), c.nrows - 1, static_cast<int>(i)));
    c.next_after = json_strings(last);
    // now() of the read's transaction: when these rows were the table's.
    c.ts = format_pg_timestamp(unix_to_pg_micros(std::stoll(PQgetvalue(result.get(), 0, ncols))));
  }
  c.last = c.nrows < c.limit;
  if (c.nrows > 0) {
    // The rows' size as PostgreSQL sent them (what the result holds), for the next chunk's limit.
    std::size_t bytes = 0;
    for (int r = 0; r < c.nrows; ++r) {
      for (int col = 0; col < ncols; ++col) bytes += static_cast<std::size_t>(PQgetlength(result.get(), r, col)) + 8;
    }
    a.row_bytes = std::max<std::size_t>(1, bytes / static_cast<std::size_t>(c.nrows));
  }
  c.result = std::move(result);
  c.have_rows = true;
}

// At the low mark (every commit before it has streamed): the read may be used only if its snapshot
// sees all of them. A transaction whose commit record is in the WAL before the mark is visible to new
// snapshots only once it leaves the proc array — with synchronous replication, after the standby
// acknowledged it, which may take long. Read before that, the chunk would hold the row as it was: a
// stale `r` after the change. Then it is read again, once those commits are visible.
void Backfill::check_read() {
  auto& c = *chunk_;
  auto unseen = unseen_commits(c.snapshot, recent_xids_);
  if (unseen.empty()) {
    c.checked = true;
    return;
  }
  // As xid8, in the snapshot's epoch (what pg_visible_in_snapshot takes).
  std::string list;
  for (auto x : unseen) {
    if (!list.empty()) list += ',';
    list += std::to_string(c.snapshot.full(x));
  }
  log::debug("backfill {}: chunk {}: its read missed commit(s) {} streamed before the low mark; reading again",
             c.request_id, c.number, list);
  c.invisible = std::move(list);
  c.waiting_since = std::chrono::steady_clock::now();
  c.next_check = {};
  if (c.have_rows) {
    c.result.reset();
    c.have_rows = false;
    c.nrows = 0;
    c.last = false;
  }
}

void Backfill::write_high() {
  auto& c = *chunk_;
  c.high_written = true;
  sql().exec_params("SELECT pg_logical_emit_message(false, $1, $2), pg_logical_emit_message(true, $3, '')",
                    {std::string(kWatermarkPrefix), watermark(c, "high"), std::string(kFlushPrefix)}, PGRES_TUPLES_OK);
}

void Backfill::on_watermark(std::string_view content, std::uint64_t lsn) {
  if (!chunk_) return;  // an earlier session's marks, or another walstream's
  auto& c = *chunk_;
  if (content == watermark(c, "low")) {
    c.low_seen = true;
    if (c.refused) return;
    check_read();
    step();
    return;
  }
  if (content != watermark(c, "high")) return;
  if (!c.low_seen || !c.high_written || !c.have_rows) {
    // Cannot happen (the low mark is written first, the high one after a checked read): read it
    // again, on a new connection (the old one may still have the read out).
    if (c.reading) sql_.reset();
    chunk_.reset();
    return;
  }
  Chunk done = std::move(c);
  chunk_.reset();
  done.after = done.next_after;
  // The next chunk of the same table is read while this one goes to Redis: its low mark is written
  // now, after this chunk's high mark, and its SELECT runs in PostgreSQL while the rows below are
  // sent (a table's last chunk is followed by the next table's first only once it is stored).
  if (!done.last && active_ && active_->table < active_->request.tables.size()) start_read(done.number + 1, done.after);
  emit(done, lsn);
}

void Backfill::emit(Chunk& c, std::uint64_t lsn) {
  auto& a = *active_;
  std::uint64_t published = 0;
  writer_.begin_transaction();
  if (c.nrows > 0 && !c.truncated) {
    auto stream = writer_.stream(keys_.stream(c.table.qualified));
    ensure_hwm(writer_, stream, wait_until_);
    writer_.add_hset(keys_.registry(c.table.qualified), c.table.version, c.table.registry_json);
    TxnContext txn;
    txn.xid = "0";
    txn.ts = c.ts;
    std::string lsn_text = copy::format_lsn(lsn);
    std::vector<Cell> cells;
    std::string key;
    auto& counter = metrics::registry().snapshot_rows.at(c.table.qualified);
    std::uint64_t seq = 0;
    const int ncols = static_cast<int>(c.table.columns.size());
    PGresult* rows = c.result.get();
    for (int r = 0; r < c.nrows; ++r) {
      key.clear();
      for (auto i : c.key_at) append_key_part(key, PQgetvalue(rows, r, static_cast<int>(i)));
      if (!c.changed.empty() && c.changed.count(key)) continue;  // changed meanwhile: its change says what it is now
      cells.clear();
      for (int col = 0; col < ncols; ++col) {
        if (PQgetisnull(rows, r, col)) {
          cells.push_back(Cell{Cell::State::Null, {}});
        } else {
          cells.push_back(Cell{Cell::State::Text, std::string_view(PQgetvalue(rows, r, col),
                                                                   static_cast<std::size_t>(PQgetlength(rows, r, col)))});
        }
      }
      send_if_full(writer_, wait_until_);
      // IDs from the high mark's LSN - 1, as a non-transactional message's: no commit has it, so the
      // rows sort after every change committed before the mark and before every one after it.
      if (writer_.add_entry(stream, StreamId{lsn - 1, ++seq}, builder_.snapshot(c.table, txn, lsn_text, cells))) {
        ++published;
        counter.add();
      }
    }
  }
  a.rows += static_cast<long long>(published);
  a.chunks = c.number;
  a.after = c.after;
  std::string table = a.table < a.request.tables.size() ? a.request.tables[a.table] : "";
  if (c.last) {
    log::info("backfill {}: {} done ({} rows in {} chunk(s))", a.request.id, table, a.rows, a.chunks);
    finish_table();
  } else if (c.number % 10 == 0) {
    log::info("backfill {}: {}: {} rows so far", a.request.id, table, a.rows);
  }
  write_state();
  writer_.mark_commit(lsn);
}

void Backfill::finish_table() {
  auto& a = *active_;
  ++a.table;
  a.after.clear();
  a.rows = 0;
  a.chunks = 0;
  a.row_bytes = 0;
  if (a.table < a.request.tables.size()) return;
  log::info("backfill {}: done", a.request.id);
  last_done_ = a.request.id;
  active_.reset();
  if (!queue_.empty()) {
    active_.emplace();
    active_->request = std::move(queue_.front());
    queue_.pop_front();
  }
}

void Backfill::write_state() {
  const auto key = keys_.backfill();
  if (!active_) {
    for (const char* f : {"request", "table", "after", "rows", "chunks"}) writer_.add_hset(key, f, "");
    writer_.add_hset(key, "status", "done");
    writer_.add_hset(key, "done", last_done_);
    writer_.add_hset(key, "queue", "[]");
    return;
  }
  const auto& a = *active_;
  rapidjson::StringBuffer req;
  {
    RjWriter w(req);
    write_request(w, a.request, "");
  }
  rapidjson::StringBuffer queue;
  {
    RjWriter w(queue);
    w.StartArray();
    for (const auto& q : queue_) write_request(w, q, "");
    w.EndArray();
  }
  writer_.add_hset(key, "status", "running");
  writer_.add_hset(key, "request", req.GetString());
  writer_.add_hset(key, "table", std::to_string(a.table));
  writer_.add_hset(key, "after", a.after);
  writer_.add_hset(key, "rows", std::to_string(a.rows));
  writer_.add_hset(key, "chunks", std::to_string(a.chunks));
  writer_.add_hset(key, "queue", queue.GetString());
}

}  // namespace walstream
