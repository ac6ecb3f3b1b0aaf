// The transactional outbox (--outbox) as a subscriber of <prefix>events:<aggregate type> reads it: the
// event contract (fields in order, IDs in the transaction's seq space, lsn/xid/ts), insert-then-delete,
// updates/deletes/truncates publishing nothing, renamed columns and text payloads, rows that are not
// events (events:_invalid), setup errors, exactly once under load with SIGKILLs, and --transactions
// markers counting events. PostgreSQL's own account of each change's LSN comes from a test_decoding slot.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <pqxx/pqxx>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "harness.h"

using namespace harness;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;
using Fields = std::vector<std::pair<std::string, std::string>>;

std::vector<std::string> outbox_args(const Scope& s, std::initializer_list<std::string> more = {}) {
  return with(with(s.args(), {"--outbox", "public.outbox"}), more);
}

bool is_ts(const std::string& ts) {
  static const std::regex re(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$)");
  return std::regex_match(ts, re);
}

// walstream's log lines at one level: "<UTC time> <LEVEL> <message>".
std::vector<std::string> lines_at(const std::string& log, const std::string& level) {
  static const std::regex re(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARN|ERROR) \S.*$)");
  std::vector<std::string> out;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_match(line, m, re) && m[1] == level) out.push_back(line);
  }
  return out;
}

bool has_word(const std::string& text, const std::string& word) {
  return std::regex_search(text, std::regex("\\b" + word + "\\b"));
}

std::string field(const Entry& e, const std::string& name) {
  auto it = e.fields.find(name);
  return it == e.fields.end() ? std::string("<absent>") : it->second;
}

// One entry's fields in the order Redis holds them (harness::Entry is a map).
Fields ordered_fields(const std::string& key, const std::string& id) {
  auto flat = redis_command({"XRANGE", key, id, id});
  if (flat.empty() || flat[0] != id || flat.size() % 2 == 0) {
    throw std::runtime_error(fmt::format("no entry {} on {}", id, key));
  }
  Fields out;
  for (std::size_t i = 1; i + 1 < flat.size(); i += 2) out.emplace_back(flat[i], flat[i + 1]);
  return out;
}

std::string show(const Fields& f) {
  std::string out;
  for (const auto& [k, v] : f) out += fmt::format("  {} = {}\n", k, v);
  return out;
}

bool exists(const std::string& key) { return redis_command({"EXISTS", key}) == std::vector<std::string>{"1"}; }

bool same_json(const std::string& a, const std::string& b) {
  rapidjson::Document da, db;
  da.Parse(a.c_str());
  db.Parse(b.c_str());
  return !da.HasParseError() && !db.HasParseError() && da == db;
}

// Runs the statements as one transaction (one simple query); returns its xid.
std::string txn(const Scope& s, const std::string& statements) {
  return *query(s.conninfo, statements + "; SELECT txid_current()::text").at(0).at(0);
}

std::string uuid(int n) { return fmt::format("00000000-0000-0000-0000-{:012d}", n); }

void create_tables(const Scope& s) {
  s.sql("CREATE TABLE kv (id int PRIMARY KEY, v text);"
        "CREATE TABLE outbox (id uuid PRIMARY KEY, aggregatetype text, aggregateid text, type text, payload jsonb, "
        "tenant text)");
}

// INSERT of one outbox row; NULL where a value is nullopt.
std::string insert_event(int id, std::optional<std::string> aggregate_type, std::optional<std::string> aggregate_id,
                         std::optional<std::string> type, std::optional<std::string> payload,
                         std::optional<std::string> tenant = std::nullopt) {
  auto lit = [](const std::optional<std::string>& v) {
    if (!v) return std::string("NULL");
    std::string out = "'";
    for (char c : *v) out += c == '\'' ? std::string("''") : std::string(1, c);
    return out + "'";
  };
  return fmt::format("INSERT INTO outbox VALUES ('{}', {}, {}, {}, {}, {})", uuid(id), lit(aggregate_type),
                     lit(aggregate_id), lit(type), lit(payload), lit(tenant));
}

std::string events(const Scope& s, const std::string& aggregate_type) { return s.prefix + "events:" + aggregate_type; }

bool streams_or_exits(const Scope& s, Walstream& w) {
  return wait_until([&] { return !w.running() || s.streaming(); }) && w.running();
}

void stop(Walstream& w) {
  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

// Changes as a test_decoding slot reports them: the LSN of each change, and of each COMMIT (its end).
struct RefChange {
  std::string lsn;
  std::string xid;
  std::string data;
};
std::vector<RefChange> ref_changes(const Scope& s, const TempSlot& ref) {
  std::vector<RefChange> out;
  for (const auto& row : query(s.conninfo, fmt::format("SELECT lsn::text, xid::text, data FROM "
                                                       "pg_logical_slot_peek_changes('{}', NULL, NULL)",
                                                       ref.name()))) {
    out.push_back({*row[0], *row[1], *row[2]});
  }
  return out;
}

// The ref slot's changes of transaction `xid` whose data starts with `prefix`, in order.
std::vector<RefChange> ref_of(const std::vector<RefChange>& all, const std::string& xid, const std::string& prefix) {
  std::vector<RefChange> out;
  for (const auto& c : all) {
    if (c.xid == xid && c.data.rfind(prefix, 0) == 0) out.push_back(c);
  }
  return out;
}

}  // namespace

// 1. A transaction with a row and two events: the events follow the row in its seq space (<commit>-2,
// -3), with exactly the contract's fields in the contract's order, lsn = the insert's LSN (as the
// test_decoding slot reports it), xid/ts of the row's record; a NULL header or aggregate id is omitted.
// The outbox's own row stream, registry entry and snapshot are never written.
TEST(Outbox, EventContract) {
  Scope s;
  create_tables(s);
  // Present before the first start: the initial snapshot copies kv's row, and never the outbox's.
  s.sql("INSERT INTO kv VALUES (1, 'before');" + insert_event(100, "order", "1", "Old", R"({"old": true})", "acme"));
  TempSlot ref(s, s.slot + "_ref", "test_decoding");
  Walstream w(outbox_args(s));
  ASSERT_TRUE(streams_or_exits(s, w)) << w.log();
  const auto kv = s.stream("public.kv");
  const auto order = events(s, "order");
  ASSERT_TRUE(wait_until([&] { return xlen(kv) == 1; })) << w.log();

  const std::string payload_a = R"({"order": 42, "items": [1, 2], "note": "\"q\" \\ x"})";
  const std::string payload_b = R"({"amount": 9.50})";
  const auto xid = txn(s, "INSERT INTO kv VALUES (2, 'placed');" +
                              insert_event(1, "order", "42", "OrderPlaced", payload_a, "acme") + ";" +
                              insert_event(2, "order", "42", "OrderPaid", payload_b));
  const auto xid2 = txn(s, insert_event(3, "order", std::nullopt, "OrderNoted", "[]", "beta"));
  const auto text_a = s.query_one(fmt::format("SELECT payload::text FROM outbox WHERE id = '{}'", uuid(1)));
  const auto text_b = s.query_one(fmt::format("SELECT payload::text FROM outbox WHERE id = '{}'", uuid(2)));
  ASSERT_NE(text_a, payload_a) << "jsonb keeps the input text: the test does not prove the payload is PostgreSQL's";
  ASSERT_TRUE(wait_until([&] { return xlen(kv) >= 2 && xlen(order) >= 3 && s.caught_up(); })) << w.log();

  auto rows = xrange(kv);
  ASSERT_EQ(rows.size(), 2u) << w.log();
  EXPECT_EQ(field(rows[0], "op"), "r");
  EXPECT_EQ(field(rows[0], "key"), R"({"id":1})");
  const auto& row = rows[1];
  ASSERT_EQ(field(row, "op"), "c");
  ASSERT_EQ(field(row, "key"), R"({"id":2})");
  const auto row_id = parse_entry_id(row.id);
  EXPECT_EQ(row_id.seq, 1u) << row.id;
  EXPECT_EQ(field(row, "xid"), xid);
  const auto ts = field(row, "ts");
  EXPECT_TRUE(is_ts(ts)) << ts;

  auto all = ref_changes(s, ref);
  auto ref_rows = ref_of(all, xid, "table public.kv: INSERT:");
  auto ref_events = ref_of(all, xid, "table public.outbox: INSERT:");
  auto ref_commit = ref_of(all, xid, "COMMIT");
  ASSERT_EQ(ref_rows.size(), 1u);
  ASSERT_EQ(ref_events.size(), 2u);
  ASSERT_EQ(ref_commit.size(), 1u);
  EXPECT_EQ(field(row, "lsn"), ref_rows[0].lsn) << "the reference slot disagrees on the row's LSN";
  // The ID's LSN is the commit record's: after the last change, before the commit's end.
  EXPECT_GT(row_id.lsn, parse_lsn(ref_events[1].lsn));
  EXPECT_LT(row_id.lsn, parse_lsn(ref_commit[0].lsn));

  auto entries = xrange(order);
  ASSERT_EQ(entries.size(), 3u) << "events:order holds more than the three events inserted (the snapshot's row?)\n"
                                << w.log();
  const auto commit = fmt::format("{}", row_id.lsn);
  EXPECT_EQ(entries[0].id, commit + "-2");
  EXPECT_EQ(entries[1].id, commit + "-3");
  const Fields want_a = {{"id", uuid(1)},      {"type", "OrderPlaced"},     {"aggregate_id", "42"},
                         {"payload", text_a},  {"tenant", "acme"},          {"lsn", ref_events[0].lsn},
                         {"xid", xid},         {"ts", ts}};
  const Fields want_b = {{"id", uuid(2)}, {"type", "OrderPaid"}, {"aggregate_id", "42"}, {"payload", text_b},
                         {"lsn", ref_events[1].lsn}, {"xid", xid}, {"ts", ts}};
  auto got_a = ordered_fields(order, entries[0].id);
  auto got_b = ordered_fields(order, entries[1].id);
  EXPECT_EQ(got_a, want_a) << "got:\n" << show(got_a) << "want:\n" << show(want_a);
  EXPECT_EQ(got_b, want_b) << "got:\n" << show(got_b) << "want:\n" << show(want_b);

  // The second transaction: its own commit LSN, seq 1, no aggregate_id (NULL), the header kept.
  const auto& c = entries[2];
  auto c_id = parse_entry_id(c.id);
  EXPECT_GT(c_id.lsn, row_id.lsn);
  EXPECT_EQ(c_id.seq, 1u) << c.id;
  auto ref_c = ref_of(all, xid2, "table public.outbox: INSERT:");
  ASSERT_EQ(ref_c.size(), 1u);
  const auto ts2 = field(c, "ts");
  EXPECT_TRUE(is_ts(ts2)) << ts2;
  const Fields want_c = {{"id", uuid(3)},   {"type", "OrderNoted"}, {"payload", "[]"},
                         {"tenant", "beta"}, {"lsn", ref_c[0].lsn},  {"xid", xid2}, {"ts", ts2}};
  auto got_c = ordered_fields(order, c.id);
  EXPECT_EQ(got_c, want_c) << "got:\n" << show(got_c) << "want:\n" << show(want_c);

  EXPECT_FALSE(exists(s.stream("public.outbox"))) << "the outbox's own row stream was written";
  EXPECT_FALSE(exists(s.prefix + "staging:public.outbox")) << "the snapshot copied the outbox";
  EXPECT_FALSE(exists(s.prefix + "schema:public.outbox")) << "the outbox got a registry entry";
  EXPECT_FALSE(exists(events(s, "_invalid")));
  EXPECT_TRUE(lines_at(w.log(), "ERROR").empty()) << w.log();
  EXPECT_TRUE(lines_at(w.log(), "WARN").empty()) << w.log();
  stop(w);
}

// 2. Insert then delete in one transaction publishes the event and leaves the table empty; UPDATE,
// DELETE and TRUNCATE of the outbox publish nothing but take their seq, as every change pgoutput sends
// does, so that IDs never depend on --outbox (a kv row after one of them is -2).
TEST(Outbox, InsertThenDeleteAndUpdatesPublishNothing) {
  Scope s;
  create_tables(s);
  Walstream w(outbox_args(s));
  ASSERT_TRUE(streams_or_exits(s, w)) << w.log();
  const auto kv = s.stream("public.kv");
  const auto order = events(s, "order");

  txn(s, insert_event(1, "order", "1", "Placed", R"({"n": 1})") +
             fmt::format(";DELETE FROM outbox WHERE id = '{}'", uuid(1)) +
             ";INSERT INTO kv VALUES (1, 'after the delete')");
  EXPECT_EQ(s.query_one("SELECT count(*) FROM outbox"), "0");
  txn(s, insert_event(2, "order", "2", "Placed", R"({"n": 2})"));
  // An update that would name another stream, one that would make the row invalid, then a delete.
  txn(s, fmt::format("UPDATE outbox SET aggregatetype = 'stock', type = 'Changed', payload = '{{\"n\": 20}}' "
                     "WHERE id = '{}'; INSERT INTO kv VALUES (2, 'after the update')",
                     uuid(2)));
  txn(s, fmt::format("UPDATE outbox SET aggregatetype = NULL, payload = NULL WHERE id = '{}'", uuid(2)));
  txn(s, "DELETE FROM outbox");
  txn(s, insert_event(3, "order", "3", "Placed", R"({"n": 3})"));
  // One TRUNCATE of both tables, the outbox first: kv's record takes the second seq.
  txn(s, "TRUNCATE outbox, kv");
  txn(s, "INSERT INTO kv VALUES (3, 'sentinel')");
  ASSERT_TRUE(wait_until([&] { return xlen(kv) >= 4 && s.caught_up(); })) << w.log();

  auto rows = xrange(kv);
  ASSERT_EQ(rows.size(), 4u) << w.log();
  EXPECT_EQ(field(rows[2], "op"), "t");
  EXPECT_EQ(parse_entry_id(rows[2].id).seq, 2u) << "the outbox's TRUNCATE took no seq: " << rows[2].id;
  auto got = xrange(order);
  ASSERT_EQ(got.size(), 3u) << "expected the events of ids 1, 2, 3 only\n" << w.log();
  const std::vector<std::pair<std::string, std::string>> want = {{uuid(1), R"({"n": 1})"}, {uuid(2), R"({"n": 2})"},
                                                                  {uuid(3), R"({"n": 3})"}};
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(field(got[i], "id"), want[i].first) << got[i].id;
    EXPECT_EQ(field(got[i], "payload"), want[i].second) << got[i].id;
    EXPECT_EQ(field(got[i], "type"), "Placed") << got[i].id;
    EXPECT_EQ(parse_entry_id(got[i].id).seq, 1u) << got[i].id;
  }
  // Transaction 1: the event (-1), the delete no entry but -2, the kv row -3.
  EXPECT_EQ(parse_entry_id(rows[0].id).lsn, parse_entry_id(got[0].id).lsn);
  EXPECT_EQ(parse_entry_id(rows[0].id).seq, 3u) << rows[0].id;
  // The update's transaction: the update takes -1, its kv row is -2.
  EXPECT_EQ(field(rows[1], "key"), R"({"id":2})");
  EXPECT_EQ(parse_entry_id(rows[1].id).seq, 2u) << "the outbox UPDATE took no seq: " << rows[1].id;
  EXPECT_LT(parse_entry_id(got[1].id), parse_entry_id(rows[1].id));
  EXPECT_LT(parse_entry_id(rows[1].id), parse_entry_id(got[2].id));
  EXPECT_FALSE(exists(events(s, "stock"))) << "an UPDATE published an event";
  EXPECT_FALSE(exists(events(s, "_invalid"))) << "an UPDATE was taken for an invalid event";
  EXPECT_FALSE(exists(s.stream("public.outbox"))) << "the outbox's own row stream was written";
  EXPECT_TRUE(lines_at(w.log(), "WARN").empty()) << w.log();
  stop(w);
}

// 3. All five columns renamed (flags, then the WALSTREAM_OUTBOX_*_COLUMN variables), a text payload kept
// byte for byte, decoy columns named like Debezium's defaults published as headers, a NULL id/aggregate
// id omitted, and a second outbox table (--outbox repeated, then comma-separated in WALSTREAM_OUTBOX; in
// another schema) without id and aggregate id, whose json (not jsonb) payload is its text as inserted.
TEST(Outbox, RenamedColumnsAndTextPayload) {
  Scope s;
  s.sql("CREATE TABLE events_out (event_id uuid, kind text, ref text, event_type text, body text, source text, "
        "aggregatetype text);"
        "ALTER TABLE events_out REPLICA IDENTITY FULL;"
        "CREATE SCHEMA app; CREATE TABLE app.minimal (kind text, event_type text, body json);"
        "ALTER TABLE app.minimal REPLICA IDENTITY FULL");
  auto args = with(s.args(), {"--outbox", "public.events_out", "--outbox", "app.minimal"});
  args = with(args, {"--outbox-id-column", "event_id", "--outbox-aggregate-type-column", "kind"});
  args = with(args, {"--outbox-aggregate-id-column", "ref", "--outbox-type-column", "event_type"});
  args = with(args, {"--outbox-payload-column", "body"});
  const auto invoice = events(s, "invoice");
  const std::string json_body = "{\"b\": 1,  \"a\" : [ ] }";
  const std::string body = "plain text, \"quoted\", tab\there\nsecond line \\ {\"not\": json";
  auto quoted = [](const std::string& v) {
    std::string out = "'";
    for (char c : v) out += c == '\'' ? std::string("''") : std::string(1, c);
    return out + "'";
  };
  std::string xid1, xid2, xid3;
  {
    Walstream w(args);
    ASSERT_TRUE(streams_or_exits(s, w)) << w.log();
    xid1 = txn(s, fmt::format("INSERT INTO events_out VALUES ('{}', 'invoice', 'INV-7', 'InvoiceSent', {}, 'billing', "
                              "'decoy')",
                              uuid(1), quoted(body)));
    xid2 = txn(s, "INSERT INTO events_out VALUES (NULL, 'invoice', NULL, 'InvoiceVoided', 'x', NULL, NULL)");
    xid3 = txn(s, fmt::format("INSERT INTO app.minimal VALUES ('invoice', 'Reminder', {})", quoted(json_body)));
    ASSERT_TRUE(wait_until([&] { return xlen(invoice) >= 3 && s.caught_up(); })) << w.log();
    // app.minimal has neither renamed id nor aggregate id column: said at start, once each.
    auto warnings = lines_at(w.log(), "WARN");
    EXPECT_EQ(warnings.size(), 2u) << w.log();
    for (const auto& line : warnings) {
      EXPECT_NE(line.find("app.minimal"), std::string::npos) << line;
      EXPECT_NE(line.find("carry no"), std::string::npos) << line;
    }
    stop(w);
  }
  // Through the environment: the same mapping.
  std::map<std::string, std::string> env = {{"WALSTREAM_OUTBOX", "public.events_out,app.minimal"},
                                            {"WALSTREAM_OUTBOX_ID_COLUMN", "event_id"},
                                            {"WALSTREAM_OUTBOX_AGGREGATE_TYPE_COLUMN", "kind"},
                                            {"WALSTREAM_OUTBOX_AGGREGATE_ID_COLUMN", "ref"},
                                            {"WALSTREAM_OUTBOX_TYPE_COLUMN", "event_type"},
                                            {"WALSTREAM_OUTBOX_PAYLOAD_COLUMN", "body"}};
  std::string xid4;
  {
    Walstream w(s.args(), env);
    ASSERT_TRUE(streams_or_exits(s, w)) << w.log();
    xid4 = txn(s, fmt::format("INSERT INTO events_out VALUES ('{}', 'invoice', 'INV-8', 'InvoicePaid', 'paid', "
                              "'env', 'decoy2')",
                              uuid(4)));
    ASSERT_TRUE(wait_until([&] { return !w.running() || (xlen(invoice) >= 4 && s.caught_up()); })) << w.log();
    ASSERT_TRUE(w.running()) << w.log();
    stop(w);
  }

  auto got = xrange(invoice);
  ASSERT_EQ(got.size(), 4u);
  std::vector<Fields> want = {
      {{"id", uuid(1)}, {"type", "InvoiceSent"}, {"aggregate_id", "INV-7"}, {"payload", body}, {"source", "billing"},
       {"aggregatetype", "decoy"}},
      {{"type", "InvoiceVoided"}, {"payload", "x"}},
      {{"type", "Reminder"}, {"payload", json_body}},
      {{"id", uuid(4)}, {"type", "InvoicePaid"}, {"aggregate_id", "INV-8"}, {"payload", "paid"}, {"source", "env"},
       {"aggregatetype", "decoy2"}}};
  const std::vector<std::string> xids = {xid1, xid2, xid3, xid4};
  for (std::size_t i = 0; i < got.size(); ++i) {
    auto w = want[i];
    w.emplace_back("lsn", field(got[i], "lsn"));
    w.emplace_back("xid", xids[i]);
    w.emplace_back("ts", field(got[i], "ts"));
    auto g = ordered_fields(invoice, got[i].id);
    EXPECT_EQ(g, w) << "event " << i << " got:\n" << show(g) << "want:\n" << show(w);
    EXPECT_NO_THROW(parse_lsn(field(got[i], "lsn"))) << field(got[i], "lsn");
    EXPECT_TRUE(is_ts(field(got[i], "ts"))) << field(got[i], "ts");
  }
  for (const auto& key : {events(s, "decoy"), events(s, "decoy2"), s.stream("public.events_out"),
                          s.stream("app.minimal"), events(s, "_invalid")}) {
    EXPECT_FALSE(exists(key)) << key << " was written";
  }
}

// 4. Rows that are not events — aggregatetype NULL, empty or with white space, payload NULL, type NULL —
// go to events:_invalid (row, table, reason naming the column, lsn, xid, ts) with a WARN line each; the
// valid events around them, in their own transactions and in a mixed one, are published in order.
TEST(Outbox, InvalidRowsGoToInvalidStream) {
  Scope s;
  create_tables(s);
  Walstream w(outbox_args(s));
  ASSERT_TRUE(streams_or_exits(s, w)) << w.log();
  const auto order = events(s, "order");
  const auto invalid = events(s, "_invalid");
  const std::string ok = R"({"ok": 1})";

  struct Bad {
    int id;
    std::string column;
    std::string xid;
  };
  std::vector<Bad> bad;
  std::vector<std::string> valid_xids;
  valid_xids.push_back(txn(s, insert_event(1, "order", "a", "T", R"({"n": 1})")));
  bad.push_back({2, "aggregatetype", txn(s, insert_event(2, std::nullopt, "a", "T", ok))});
  valid_xids.push_back(txn(s, insert_event(3, "order", "a", "T", R"({"n": 3})")));
  bad.push_back({4, "payload", txn(s, insert_event(4, "order", "a", "T", std::nullopt))});
  bad.push_back({5, "type", txn(s, insert_event(5, "order", "a", std::nullopt, ok))});
  bad.push_back({6, "aggregatetype", txn(s, insert_event(6, "", "a", "T", ok))});
  bad.push_back({7, "aggregatetype", txn(s, insert_event(7, "bad type", "a", "T", ok))});
  // One transaction: valid, invalid, valid.
  auto mixed = txn(s, insert_event(8, "order", "a", "T", R"({"n": 8})") + ";" +
                          insert_event(9, "order", "a", "T", std::nullopt, "t9") + ";" +
                          insert_event(10, "order", "a", "T", R"({"n": 10})"));
  bad.push_back({9, "payload", mixed});
  valid_xids.push_back(mixed);
  valid_xids.push_back(mixed);
  valid_xids.push_back(txn(s, insert_event(11, "order", "a", "T", R"({"n": 11})")));
  ASSERT_TRUE(wait_until([&] { return !w.running() || (xlen(order) >= 5 && xlen(invalid) >= 6 && s.caught_up()); }))
      << w.log();
  ASSERT_TRUE(w.running()) << w.log();

  auto got = xrange(order);
  ASSERT_EQ(got.size(), 5u) << w.log();
  const std::vector<int> valid_ids = {1, 3, 8, 10, 11};
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(field(got[i], "id"), uuid(valid_ids[i])) << got[i].id;
    EXPECT_EQ(field(got[i], "payload"), fmt::format(R"({{"n": {}}})", valid_ids[i])) << got[i].id;
    EXPECT_EQ(field(got[i], "xid"), valid_xids[i]) << got[i].id;
  }
  auto inv = xrange(invalid);
  ASSERT_EQ(inv.size(), bad.size()) << w.log();
  for (std::size_t i = 0; i < inv.size(); ++i) {
    const auto& e = inv[i];
    const auto& b = bad[i];
    std::vector<std::string> names;
    for (const auto& [k, v] : ordered_fields(invalid, e.id)) names.push_back(k);
    EXPECT_EQ(names, (std::vector<std::string>{"row", "table", "reason", "lsn", "xid", "ts"})) << e.id;
    auto want_row =
        s.query_one(fmt::format("SELECT row_to_json(outbox)::text FROM outbox WHERE id = '{}'", uuid(b.id)));
    EXPECT_TRUE(same_json(field(e, "row"), want_row)) << field(e, "row") << " vs " << want_row;
    EXPECT_EQ(field(e, "table"), "public.outbox");
    const auto reason = field(e, "reason");
    EXPECT_TRUE(has_word(reason, b.column)) << "row " << b.id << ": reason does not name " << b.column << ": "
                                            << reason;
    const auto unquoted = std::regex_replace(reason, std::regex("'[^']*'"), "");
    for (const std::string other : {"aggregatetype", "type", "payload"}) {
      if (other != b.column) {
        EXPECT_FALSE(has_word(unquoted, other)) << "row " << b.id << ": reason names " << other << ": " << reason;
      }
    }
    EXPECT_EQ(field(e, "xid"), b.xid) << e.id;
    EXPECT_NO_THROW(parse_lsn(field(e, "lsn"))) << field(e, "lsn");
    EXPECT_TRUE(is_ts(field(e, "ts"))) << field(e, "ts");
    // A WARN line naming the table and this reason.
    auto warns = lines_at(w.log(), "WARN");
    EXPECT_TRUE(std::any_of(warns.begin(), warns.end(), [&](const std::string& l) {
      return l.find("public.outbox") != std::string::npos && l.find(reason) != std::string::npos;
    })) << "no WARN line for row " << b.id << " (" << reason << ")\n" << w.log();
  }
  auto warns = lines_at(w.log(), "WARN");
  EXPECT_EQ(std::count_if(warns.begin(), warns.end(),
                          [](const std::string& l) { return l.find("public.outbox") != std::string::npos; }),
            static_cast<long>(bad.size()))
      << "expected one WARN line per invalid row\n" << w.log();
  // The mixed transaction: valid -1 and -3 on events:order, invalid -2 on _invalid, one commit LSN.
  auto a = parse_entry_id(got[2].id), c = parse_entry_id(got[3].id), b = parse_entry_id(inv.back().id);
  EXPECT_EQ(a.lsn, b.lsn);
  EXPECT_EQ(c.lsn, b.lsn);
  EXPECT_EQ(std::vector<std::uint64_t>({a.seq, b.seq, c.seq}), (std::vector<std::uint64_t>{1, 2, 3}));
  // Each invalid row sits between the valid events around it.
  EXPECT_LT(parse_entry_id(got[0].id), parse_entry_id(inv[0].id));
  EXPECT_LT(parse_entry_id(inv[0].id), parse_entry_id(got[1].id));
  EXPECT_LT(parse_entry_id(got[1].id), parse_entry_id(inv[1].id));
  EXPECT_LT(parse_entry_id(inv.back().id), parse_entry_id(got[4].id));
  for (const auto& key : {events(s, ""), events(s, "bad type"), events(s, "bad")}) {
    EXPECT_FALSE(exists(key)) << "'" << key << "' was written";
  }
  EXPECT_TRUE(lines_at(w.log(), "ERROR").empty()) << w.log();
  stop(w);
}

// 5. Setup errors: exit 1 and one ERROR line naming the table (and the column or flag) — an outbox table
// that does not exist, lacks the payload / aggregate type / type column, or is not in the publication.
TEST(Outbox, SetupErrors) {
  Scope s;
  s.sql("CREATE TABLE kv (id int PRIMARY KEY, v text);"
        "CREATE TABLE outbox (id uuid PRIMARY KEY, aggregatetype text, aggregateid text, type text, payload jsonb);"
        "CREATE TABLE no_payload (id uuid PRIMARY KEY, aggregatetype text, aggregateid text, type text, body jsonb);"
        "CREATE TABLE no_aggregate_type (id uuid PRIMARY KEY, aggregateid text, type text, payload jsonb)");
  auto expect_setup_error = [&](const std::vector<std::string>& args, const std::vector<std::string>& pieces) {
    auto o = run_walstream(args, {}, 15s);
    EXPECT_EQ(o.code, 1) << o.output;
    auto errors = lines_at(o.output, "ERROR");
    ASSERT_EQ(errors.size(), 1u) << o.output;
    for (const auto& p : pieces) EXPECT_NE(errors[0].find(p), std::string::npos) << "no '" << p << "' in " << errors[0];
  };
  expect_setup_error(with(s.args(), {"--outbox", "public.no_payload"}), {"public.no_payload", "payload"});
  expect_setup_error(with(s.args(), {"--outbox", "public.outbox,public.no_aggregate_type"}),
                     {"public.no_aggregate_type", "aggregatetype"});
  expect_setup_error(outbox_args(s, {"--outbox-type-column", "event_type"}), {"public.outbox", "event_type"});
  expect_setup_error(outbox_args(s, {"--outbox-payload-column", "body"}), {"public.outbox", "body"});
  expect_setup_error(with(s.args(), {"--outbox", "public.nosuch"}), {"public.nosuch"});
  // A header named like an event field (here `ts`) would give every entry that field twice.
  s.sql("CREATE TABLE with_ts (id uuid PRIMARY KEY, aggregatetype text, aggregateid text, type text, payload jsonb, "
        "ts timestamptz)");
  expect_setup_error(with(s.args(), {"--outbox", "public.with_ts"}), {"public.with_ts", "\"ts\"", "event field"});
  // A publication made by --tables without the outbox.
  Scope t;
  t.publication = "kv_only";
  t.sql("CREATE TABLE kv (id int PRIMARY KEY, v text);"
        "CREATE TABLE outbox (id uuid PRIMARY KEY, aggregatetype text, aggregateid text, type text, payload jsonb)");
  auto o = run_walstream(with(t.args(), {"--tables", "public.kv", "--outbox", "public.outbox"}), {}, 15s);
  EXPECT_EQ(o.code, 1) << o.output;
  auto errors = lines_at(o.output, "ERROR");
  ASSERT_EQ(errors.size(), 1u) << o.output;
  EXPECT_NE(errors[0].find("public.outbox"), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("publication"), std::string::npos) << errors[0];
  EXPECT_EQ(t.query_one("SELECT count(*) FROM pg_publication_tables WHERE pubname = 'kv_only'"), "1")
      << "the test's publication should hold kv only";
}

// 6. Exactly once under load: a thread commits 3,000 one-event transactions (aggregatetype alternating
// order/stock, payload {"n": i}) and multi-event transactions, while walstream is SIGKILLed three times at
// random moments and restarted. Each stream ends with exactly the events committed for it, in commit
// order, none twice; a multi-event transaction's events share its commit LSN with seqs 1..k.
TEST(Outbox, ExactlyOnceUnderLoadWithSigkills) {
  constexpr int kSingles = 3000;
  constexpr int kMultiEvery = 100;  // a 5-event transaction after every 100th single one
  constexpr int kMultiSize = 5;
  Scope s;
  s.sql("CREATE TABLE outbox (id bigint PRIMARY KEY, aggregatetype text, aggregateid text, type text, "
        "payload jsonb)");
  const std::vector<std::string> kinds = {"order", "stock"};

  std::atomic<int> committed{0};  // single transactions committed
  std::atomic<bool> abort{false};
  std::atomic<bool> thread_failed{false};
  std::string thread_error;  // read once the thread is joined
  std::map<std::string, std::vector<long>> expected;  // per aggregate type: n in commit order
  std::vector<std::vector<long>> groups;              // the multi-event transactions' n, in insert order
  auto insert = [](pqxx::work& tx, long n, const std::string& kind) {
    tx.exec0(fmt::format("INSERT INTO outbox VALUES ({0}, '{1}', 'a{0}', 'Tick', '{{\"n\": {0}}}')", n, kind));
  };
  std::thread writer;
  struct Joiner {
    std::atomic<bool>& abort;
    std::thread& t;
    ~Joiner() {
      abort = true;
      if (t.joinable()) t.join();
    }
  } joiner{abort, writer};

  std::random_device rd;
  const auto seed = rd();
  std::mt19937 rng(seed);
  SCOPED_TRACE(fmt::format("seed {}", seed));
  // Kill points: numbers of single transactions committed, spread over the load.
  std::vector<int> kill_at;
  for (int i = 0; i < 3; ++i) {
    kill_at.push_back(std::uniform_int_distribution<int>(300 + i * 850, 300 + i * 850 + 600)(rng));
  }

  auto w = std::make_unique<Walstream>(with(s.args(), {"--outbox", "public.outbox"}));
  ASSERT_TRUE(streams_or_exits(s, *w)) << w->log();
  writer = std::thread([&] {
    try {
      pqxx::connection c(s.conninfo);
      long n = 0;
      for (int i = 1; i <= kSingles && !abort; ++i) {
        {
          pqxx::work tx(c);
          const auto& kind = kinds[i % 2];
          insert(tx, ++n, kind);
          tx.commit();
          expected[kind].push_back(n);
        }
        committed = i;
        if (i % kMultiEvery == 0) {
          pqxx::work tx(c);
          std::vector<long> group;
          for (int k = 0; k < kMultiSize; ++k) {
            insert(tx, ++n, kinds[k % 2]);
            group.push_back(n);
          }
          tx.commit();
          for (int k = 0; k < kMultiSize; ++k) expected[kinds[k % 2]].push_back(group[k]);
          groups.push_back(group);
        }
        // Spread the load over a few seconds, so that the kills fall into it.
        std::this_thread::sleep_for(1ms);
      }
    } catch (const std::exception& e) {
      thread_error = e.what();
      thread_failed = true;
    }
  });

  std::string logs;
  int replays_logged = 0;
  for (int k : kill_at) {
    ASSERT_TRUE(wait_until([&] { return committed >= k || thread_failed; }, 60s)) << "the load stalled";
    ASSERT_FALSE(thread_failed) << thread_error;  // written before thread_failed
    ASSERT_TRUE(w->running()) << w->log();
    w->signal(SIGKILL);
    ASSERT_EQ(w->wait(), 128 + SIGKILL) << w->log();
    logs += w->log();
    w = std::make_unique<Walstream>(with(s.args(), {"--outbox", "public.outbox"}));
    ASSERT_TRUE(streams_or_exits(s, *w)) << w->log();
  }
  writer.join();
  ASSERT_EQ(thread_error, "");
  ASSERT_EQ(committed.load(), kSingles);
  std::size_t total = 0;
  for (const auto& [kind, ns] : expected) total += ns.size();
  ASSERT_EQ(total, static_cast<std::size_t>(kSingles + kSingles / kMultiEvery * kMultiSize));
  auto stored = [&] { return xlen(events(s, "order")) + xlen(events(s, "stock")); };
  ASSERT_TRUE(wait_until([&] { return !w->running() || (stored() >= static_cast<long long>(total) && s.caught_up()); },
                         60s))
      << "stored " << stored() << " of " << total << "\n" << w->log();
  ASSERT_TRUE(w->running()) << w->log();
  logs += w->log();
  for (const auto& line : lines_at(logs, "INFO")) replays_logged += line.find("already in Redis") != std::string::npos;
  std::cout << "[ outbox ] kills at " << kill_at[0] << ", " << kill_at[1] << ", " << kill_at[2] << " of " << kSingles
            << " transactions; replays skipped in " << replays_logged << " log line(s)" << std::endl;

  std::map<long, EntryId> id_of;
  for (const auto& kind : kinds) {
    const auto key = events(s, kind);
    auto got = xrange(key);
    const auto& want = expected[kind];
    ASSERT_EQ(got.size(), want.size()) << key;
    for (std::size_t i = 0; i < got.size(); ++i) {
      rapidjson::Document d;
      d.Parse(field(got[i], "payload").c_str());
      ASSERT_TRUE(!d.HasParseError() && d.IsObject() && d.HasMember("n") && d["n"].IsInt64())
          << key << " " << got[i].id << ": " << field(got[i], "payload");
      const long n = static_cast<long>(d["n"].GetInt64());
      ASSERT_EQ(n, want[i]) << key << " entry " << i << " (" << got[i].id << "): expected n " << want[i];
      ASSERT_EQ(field(got[i], "id"), std::to_string(n)) << got[i].id;
      ASSERT_EQ(field(got[i], "aggregate_id"), "a" + std::to_string(n)) << got[i].id;
      id_of[n] = parse_entry_id(got[i].id);
    }
  }
  std::set<long> in_groups;
  for (const auto& g : groups) {
    for (std::size_t k = 0; k < g.size(); ++k) {
      in_groups.insert(g[k]);
      EXPECT_EQ(id_of.at(g[k]).lsn, id_of.at(g[0]).lsn) << "n " << g[k] << " is not in its transaction's commit";
      EXPECT_EQ(id_of.at(g[k]).seq, k + 1) << "n " << g[k];
    }
  }
  std::set<std::uint64_t> commits;
  for (const auto& [n, id] : id_of) {
    if (in_groups.count(n)) continue;
    EXPECT_EQ(id.seq, 1u) << "n " << n;
    EXPECT_TRUE(commits.insert(id.lsn).second) << "n " << n << " shares a commit LSN with another transaction";
  }
  EXPECT_TRUE(lines_at(logs, "ERROR").empty()) << logs;
  EXPECT_FALSE(exists(s.stream("public.outbox")));
  stop(*w);
}

// 7. --transactions: a marker's `changes` and `streams` count events (and invalid rows) like row changes;
// an insert-then-delete counts its event; a transaction that only updates the outbox gets no marker.
TEST(Outbox, TransactionMarkersCountEvents) {
  Scope s;
  create_tables(s);
  Walstream w(outbox_args(s, {"--transactions"}));
  ASSERT_TRUE(streams_or_exits(s, w)) << w.log();
  const auto kv = s.stream("public.kv");
  const auto markers = s.prefix + "transactions";

  const auto x1 = txn(s, "INSERT INTO kv VALUES (1, 'a');" + insert_event(1, "order", "1", "T", "{}") + ";" +
                             insert_event(2, "stock", "1", "T", "{}") + ";" + insert_event(3, "order", "1", "T", "{}") +
                             ";" + insert_event(4, "order", "1", "T", std::nullopt));
  const auto x2 =
      txn(s, insert_event(5, "order", "5", "T", "{}") + fmt::format(";DELETE FROM outbox WHERE id = '{}'", uuid(5)));
  txn(s, fmt::format("UPDATE outbox SET type = 'U' WHERE id = '{}'", uuid(1)));
  const auto x4 = txn(s, "INSERT INTO kv VALUES (2, 'sentinel')");
  ASSERT_TRUE(wait_until([&] { return xlen(kv) >= 2 && xlen(markers) >= 3 && s.caught_up(); })) << w.log();

  auto rows = xrange(kv);
  auto got = xrange(markers);
  ASSERT_EQ(rows.size(), 2u);
  ASSERT_EQ(got.size(), 3u) << "expected markers for transactions 1, 2 and 4 only\n" << w.log();
  auto order = xrange(events(s, "order"));
  ASSERT_EQ(order.size(), 3u);
  struct Want {
    std::string xid;
    std::uint64_t commit;
    std::string changes;
    std::map<std::string, int> streams;
  };
  const std::vector<Want> want = {
      {x1, parse_entry_id(rows[0].id).lsn, "5",
       {{kv, 1}, {events(s, "order"), 2}, {events(s, "stock"), 1}, {events(s, "_invalid"), 1}}},
      {x2, parse_entry_id(order[2].id).lsn, "1", {{events(s, "order"), 1}}},
      {x4, parse_entry_id(rows[1].id).lsn, "1", {{kv, 1}}}};
  for (std::size_t i = 0; i < want.size(); ++i) {
    const auto& m = got[i];
    EXPECT_EQ(m.id, fmt::format("{}-0", want[i].commit));
    EXPECT_EQ(field(m, "xid"), want[i].xid) << m.id;
    EXPECT_EQ(field(m, "changes"), want[i].changes) << m.id << " streams " << field(m, "streams");
    rapidjson::Document d;
    d.Parse(field(m, "streams").c_str());
    ASSERT_TRUE(!d.HasParseError() && d.IsObject()) << field(m, "streams");
    std::map<std::string, int> streams;
    for (auto it = d.MemberBegin(); it != d.MemberEnd(); ++it) {
      streams[it->name.GetString()] = it->value.IsInt() ? it->value.GetInt() : -1;
    }
    EXPECT_EQ(streams, want[i].streams) << m.id << ": " << field(m, "streams");
  }
  EXPECT_EQ(field(order[2], "id"), uuid(5));
  stop(w);
}
