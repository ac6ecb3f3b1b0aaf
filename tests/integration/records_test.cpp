// The record contract as a subscriber reads it with XRANGE: every op's exact fields, IDs and their
// order, replica identities, TOAST, truncates, schema versions, --tables, --maxlen, a clean stop and
// restart, and the slot advancing while the published tables are idle.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdint>
#include <ctime>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"

using namespace harness;

namespace {

bool streaming(const Scope& s) { return s.streaming(); }

std::uint64_t id_ms(const std::string& id) { return std::stoull(id.substr(0, id.find('-'))); }
std::uint64_t id_seq(const std::string& id) { return std::stoull(id.substr(id.find('-') + 1)); }

std::set<std::string> names(const Entry& e) {
  std::set<std::string> out;
  for (const auto& [k, v] : e.fields) out.insert(k);
  return out;
}

const std::set<std::string> kCommon = {"op", "table", "lsn", "xid", "ts", "schema"};
std::set<std::string> common_plus(std::initializer_list<std::string> extra) {
  auto out = kCommon;
  out.insert(extra.begin(), extra.end());
  return out;
}

std::string field(const Entry& e, const std::string& name) {
  auto it = e.fields.find(name);
  return it == e.fields.end() ? "<absent>" : it->second;
}

std::map<std::string, std::string> registry(const Scope& s, const std::string& table) {
  auto flat = redis_command({"HGETALL", s.prefix + "schema:" + table});
  std::map<std::string, std::string> out;
  for (std::size_t i = 0; i + 1 < flat.size(); i += 2) out[flat[i]] = flat[i + 1];
  return out;
}

// RFC 3339 UTC with exactly six fraction digits -> microseconds since the Unix epoch, or -1.
long long parse_ts(const std::string& ts) {
  static const std::regex re(R"(^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{6})Z$)");
  std::smatch m;
  if (!std::regex_match(ts, m, re)) return -1;
  std::tm tm{};
  tm.tm_year = std::stoi(m[1]) - 1900;
  tm.tm_mon = std::stoi(m[2]) - 1;
  tm.tm_mday = std::stoi(m[3]);
  tm.tm_hour = std::stoi(m[4]);
  tm.tm_min = std::stoi(m[5]);
  tm.tm_sec = std::stoi(m[6]);
  return static_cast<long long>(timegm(&tm)) * 1'000'000 + std::stoll(m[7]);
}

std::string confirmed_flush(const Scope& s) {
  return s.query_one("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '" + s.slot + "'");
}

// The `after` field of the stream's newest entry ("" when the stream is empty or its entry has none).
std::string last_after(const std::string& key) {
  auto r = redis_command({"XREVRANGE", key, "+", "-", "COUNT", "1"});
  for (std::size_t i = 1; i + 1 < r.size(); ++i) {
    if (r[i] == "after") return r[i + 1];
  }
  return {};
}

}  // namespace

// insert, update, delete, truncate: exact field sets and values, xid, ts, lsn, schema and registry.
TEST(Records, EveryOpHasTheContractFields) {
  Scope s;
  s.sql("CREATE TABLE users (id int PRIMARY KEY, email varchar(40) NOT NULL, n int)");
  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();

  auto start_lsn = parse_lsn(s.query_one("SELECT pg_current_wal_lsn()"));
  // Each statement list is one transaction; capture its xid and its start time (epoch microseconds).
  auto txn = [&](const std::string& statements) {
    auto rows = query(s.conninfo, statements + "; SELECT txid_current()::text, "
                                               "(extract(epoch from now()) * 1000000)::bigint::text");
    return std::make_pair(*rows.at(0).at(0), std::stoll(*rows.at(0).at(1)));
  };
  auto [x1, t1] = txn("INSERT INTO users VALUES (1, 'a@example.com', 10)");
  auto [x2, t2] = txn("UPDATE users SET n = 11 WHERE id = 1");
  auto [x3, t3] = txn("DELETE FROM users WHERE id = 1");
  auto [x4, t4] = txn("TRUNCATE users");
  auto end_lsn = parse_lsn(s.query_one("SELECT pg_current_wal_lsn()"));

  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.users")) == 4; })) << w.log();
  auto e = xrange(s.stream("public.users"));
  ASSERT_EQ(e.size(), 4u);

  EXPECT_EQ(names(e[0]), common_plus({"key", "after"}));
  EXPECT_EQ(field(e[0], "op"), "c");
  EXPECT_EQ(field(e[0], "key"), R"({"id":1})");
  EXPECT_EQ(field(e[0], "after"), R"({"id":1,"email":"a@example.com","n":10})");

  EXPECT_EQ(names(e[1]), common_plus({"key", "after"}));
  EXPECT_EQ(field(e[1], "op"), "u");
  EXPECT_EQ(field(e[1], "key"), R"({"id":1})");
  EXPECT_EQ(field(e[1], "after"), R"({"id":1,"email":"a@example.com","n":11})");

  EXPECT_EQ(names(e[2]), common_plus({"key", "before"}));
  EXPECT_EQ(field(e[2], "op"), "d");
  EXPECT_EQ(field(e[2], "key"), R"({"id":1})");
  EXPECT_EQ(field(e[2], "before"), R"({"id":1})");

  EXPECT_EQ(names(e[3]), kCommon);
  EXPECT_EQ(field(e[3], "op"), "t");

  const std::string xids[] = {x1, x2, x3, x4};
  const long long starts[] = {t1, t2, t3, t4};
  auto now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  static const std::regex lsn_re("^[0-9A-F]+/[0-9A-F]+$");
  std::uint64_t previous_commit = 0;
  long long previous_ts = 0;
  for (std::size_t i = 0; i < e.size(); ++i) {
    SCOPED_TRACE("entry " + std::to_string(i) + " " + e[i].id);
    EXPECT_EQ(field(e[i], "table"), "public.users");
    EXPECT_EQ(field(e[i], "xid"), xids[i]);
    // Commit time: RFC 3339 UTC, microseconds, not before the transaction started, not in the future.
    auto ts = parse_ts(field(e[i], "ts"));
    ASSERT_GE(ts, 0) << field(e[i], "ts");
    EXPECT_GE(ts, starts[i]) << field(e[i], "ts");
    EXPECT_LE(ts, now_us + 1'000'000) << field(e[i], "ts");
    EXPECT_LE(ts, starts[i] + 5'000'000) << field(e[i], "ts");
    EXPECT_GE(ts, previous_ts);
    previous_ts = ts;
    // lsn: PostgreSQL's text form, inside this test's WAL, at or below the commit LSN of the ID.
    auto lsn_text = field(e[i], "lsn");
    ASSERT_TRUE(std::regex_match(lsn_text, lsn_re)) << lsn_text;
    auto lsn = parse_lsn(lsn_text);
    EXPECT_GE(lsn, start_lsn);
    EXPECT_LE(id_ms(e[i].id), end_lsn);
    EXPECT_GE(id_ms(e[i].id), lsn) << lsn_text;
    // One change per transaction: position 1, commit LSNs strictly increasing.
    EXPECT_EQ(id_seq(e[i].id), 1u);
    EXPECT_GT(id_ms(e[i].id), previous_commit);
    previous_commit = id_ms(e[i].id);
    // Every record names the one schema version, and the registry has it.
    EXPECT_EQ(field(e[i], "schema"), field(e[0], "schema"));
  }
  auto reg = registry(s, "public.users");
  ASSERT_EQ(reg.size(), 1u);
  ASSERT_TRUE(reg.count(field(e[0], "schema"))) << field(e[0], "schema");
  EXPECT_EQ(reg[field(e[0], "schema")],
            R"({"table":"public.users","columns":[)"
            R"({"name":"id","type":"integer","oid":23,"key":true},)"
            R"j({"name":"email","type":"character varying(40)","oid":1043,"key":false},)j"
            R"({"name":"n","type":"integer","oid":23,"key":false}]})");
}

// IDs are <commit_lsn>-<seq>: positions across tables inside a transaction, commit LSNs growing.
TEST(Records, IdsFollowTransactionOrderAcrossTables) {
  Scope s;
  s.sql("CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text)");
  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  s.sql("INSERT INTO a VALUES (1, 'a1'); INSERT INTO b VALUES (1, 'b1'); UPDATE a SET v = 'a1x' WHERE id = 1; "
        "DELETE FROM b WHERE id = 1; INSERT INTO a VALUES (2, 'a2')");
  s.sql("INSERT INTO b VALUES (2, 'b2'); INSERT INTO a VALUES (3, 'a3')");
  s.sql("INSERT INTO a VALUES (4, 'a4')");
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.a")) == 5 && xlen(s.stream("public.b")) == 3; }))
      << w.log();
  auto a = xrange(s.stream("public.a"));
  auto b = xrange(s.stream("public.b"));
  ASSERT_EQ(a.size(), 5u);
  ASSERT_EQ(b.size(), 3u);

  auto l1 = id_ms(a[0].id), l2 = id_ms(a[3].id), l3 = id_ms(a[4].id);
  EXPECT_LT(l1, l2);
  EXPECT_LT(l2, l3);
  auto id = [](std::uint64_t lsn, int seq) { return std::to_string(lsn) + "-" + std::to_string(seq); };
  EXPECT_EQ(a[0].id, id(l1, 1));
  EXPECT_EQ(b[0].id, id(l1, 2));
  EXPECT_EQ(a[1].id, id(l1, 3));
  EXPECT_EQ(b[1].id, id(l1, 4));
  EXPECT_EQ(a[2].id, id(l1, 5));
  EXPECT_EQ(b[2].id, id(l2, 1));
  EXPECT_EQ(a[3].id, id(l2, 2));
  EXPECT_EQ(a[4].id, id(l3, 1));

  EXPECT_EQ(field(a[0], "op") + field(a[0], "after"), R"(c{"id":1,"v":"a1"})");
  EXPECT_EQ(field(b[0], "op") + field(b[0], "after"), R"(c{"id":1,"v":"b1"})");
  EXPECT_EQ(field(a[1], "op") + field(a[1], "after"), R"(u{"id":1,"v":"a1x"})");
  EXPECT_EQ(field(b[1], "op") + field(b[1], "before"), R"(d{"id":1})");
  EXPECT_EQ(field(a[2], "op") + field(a[2], "after"), R"(c{"id":2,"v":"a2"})");
  EXPECT_EQ(field(b[2], "op") + field(b[2], "after"), R"(c{"id":2,"v":"b2"})");
  EXPECT_EQ(field(a[3], "op") + field(a[3], "after"), R"(c{"id":3,"v":"a3"})");
  EXPECT_EQ(field(a[4], "op") + field(a[4], "after"), R"(c{"id":4,"v":"a4"})");

  // Inside the first transaction, the change LSNs follow the positions; every change is at or
  // below its transaction's commit LSN, and all share one xid.
  std::vector<const Entry*> first = {&a[0], &b[0], &a[1], &b[1], &a[2]};
  for (std::size_t i = 0; i < first.size(); ++i) {
    if (i > 0) {
      EXPECT_GT(parse_lsn(field(*first[i], "lsn")), parse_lsn(field(*first[i - 1], "lsn")));
    }
    EXPECT_EQ(field(*first[i], "xid"), field(a[0], "xid"));
  }
  for (const auto* list : {&a, &b}) {
    for (const auto& e : *list) EXPECT_GE(id_ms(e.id), parse_lsn(field(e, "lsn"))) << e.id << " " << field(e, "lsn");
  }
  EXPECT_NE(field(a[3], "xid"), field(a[0], "xid"));
  EXPECT_EQ(field(b[2], "xid"), field(a[3], "xid"));
}

// REPLICA IDENTITY DEFAULT: no before on a plain update, the old key on a key change and a delete.
TEST(Records, DefaultIdentitySendsOnlyTheOldKey) {
  Scope s;
  s.sql("CREATE TABLE acct (id int PRIMARY KEY, name text, bal int); "
        "CREATE TABLE line (ord int, pos int, qty int, PRIMARY KEY (ord, pos))");
  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  s.sql("INSERT INTO acct VALUES (1, 'x', 5)");
  s.sql("UPDATE acct SET bal = 6 WHERE id = 1");
  s.sql("UPDATE acct SET id = 2 WHERE id = 1");
  s.sql("DELETE FROM acct WHERE id = 2");
  s.sql("INSERT INTO line VALUES (7, 2, 3); UPDATE line SET qty = 4; DELETE FROM line");
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.acct")) == 4 && xlen(s.stream("public.line")) == 3; }))
      << w.log();
  auto e = xrange(s.stream("public.acct"));
  ASSERT_EQ(e.size(), 4u);
  EXPECT_EQ(names(e[1]), common_plus({"key", "after"}));
  EXPECT_EQ(field(e[1], "key"), R"({"id":1})");
  EXPECT_EQ(field(e[1], "after"), R"({"id":1,"name":"x","bal":6})");

  EXPECT_EQ(names(e[2]), common_plus({"key", "after", "before"}));
  EXPECT_EQ(field(e[2], "op"), "u");
  EXPECT_EQ(field(e[2], "key"), R"({"id":2})");
  EXPECT_EQ(field(e[2], "before"), R"({"id":1})");
  EXPECT_EQ(field(e[2], "after"), R"({"id":2,"name":"x","bal":6})");

  EXPECT_EQ(names(e[3]), common_plus({"key", "before"}));
  EXPECT_EQ(field(e[3], "op"), "d");
  EXPECT_EQ(field(e[3], "key"), R"({"id":2})");
  EXPECT_EQ(field(e[3], "before"), R"({"id":2})");

  auto l = xrange(s.stream("public.line"));
  ASSERT_EQ(l.size(), 3u);
  EXPECT_EQ(field(l[0], "key"), R"({"ord":7,"pos":2})");
  EXPECT_EQ(field(l[1], "key"), R"({"ord":7,"pos":2})");
  EXPECT_EQ(field(l[1], "after"), R"({"ord":7,"pos":2,"qty":4})");
  EXPECT_EQ(field(l[1], "before"), "<absent>");
  EXPECT_EQ(field(l[2], "key"), R"({"ord":7,"pos":2})");
  EXPECT_EQ(field(l[2], "before"), R"({"ord":7,"pos":2})");
}

// REPLICA IDENTITY FULL: updates and deletes carry the complete old row.
TEST(Records, FullIdentitySendsTheWholeOldRow) {
  Scope s;
  s.sql("CREATE TABLE acct (id int PRIMARY KEY, name text, bal int); ALTER TABLE acct REPLICA IDENTITY FULL");
  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  s.sql("INSERT INTO acct VALUES (1, 'x', 5)");
  s.sql("UPDATE acct SET bal = 6, name = NULL WHERE id = 1");
  s.sql("UPDATE acct SET id = 2 WHERE id = 1");
  s.sql("DELETE FROM acct WHERE id = 2");
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.acct")) == 4; })) << w.log();
  auto e = xrange(s.stream("public.acct"));
  ASSERT_EQ(e.size(), 4u);
  EXPECT_EQ(names(e[1]), common_plus({"key", "after", "before"}));
  EXPECT_EQ(field(e[1], "key"), R"({"id":1})");
  EXPECT_EQ(field(e[1], "before"), R"({"id":1,"name":"x","bal":5})");
  EXPECT_EQ(field(e[1], "after"), R"({"id":1,"name":null,"bal":6})");

  EXPECT_EQ(field(e[2], "key"), R"({"id":2})");
  EXPECT_EQ(field(e[2], "before"), R"({"id":1,"name":null,"bal":6})");
  EXPECT_EQ(field(e[2], "after"), R"({"id":2,"name":null,"bal":6})");

  EXPECT_EQ(names(e[3]), common_plus({"key", "before"}));
  EXPECT_EQ(field(e[3], "key"), R"({"id":2})");
  EXPECT_EQ(field(e[3], "before"), R"({"id":2,"name":null,"bal":6})");
}

// An unchanged TOASTed value: listed in `unchanged` with DEFAULT identity, filled in with FULL.
TEST(Records, UnchangedToastValues) {
  Scope s;
  s.sql("CREATE TABLE docs_d (id int PRIMARY KEY, big text, n int); "
        "ALTER TABLE docs_d ALTER COLUMN big SET STORAGE EXTERNAL; "
        "CREATE TABLE docs_f (id int PRIMARY KEY, big text, n int); "
        "ALTER TABLE docs_f ALTER COLUMN big SET STORAGE EXTERNAL; ALTER TABLE docs_f REPLICA IDENTITY FULL");
  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  s.sql("INSERT INTO docs_d SELECT 1, string_agg(md5(i::text), ''), 0 FROM generate_series(1, 2000) i; "
        "INSERT INTO docs_f SELECT 1, string_agg(md5(i::text), ''), 0 FROM generate_series(1, 2000) i");
  auto big = s.query_one("SELECT big FROM docs_d");
  ASSERT_EQ(big.size(), 64000u);
  ASSERT_EQ(s.query_one("SELECT big = (SELECT big FROM docs_d) FROM docs_f"), "t");
  // The value really lives out of line, so PostgreSQL will not resend it on an update.
  ASSERT_EQ(s.query_one("SELECT pg_relation_size(reltoastrelid) > 0 FROM pg_class WHERE relname = 'docs_d'"), "t");
  s.sql("UPDATE docs_d SET n = 1 WHERE id = 1");
  s.sql("UPDATE docs_f SET n = 1 WHERE id = 1");
  s.sql("DELETE FROM docs_f WHERE id = 1");
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.docs_d")) == 2 && xlen(s.stream("public.docs_f")) == 3; }))
      << w.log();

  auto d = xrange(s.stream("public.docs_d"));
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(field(d[0], "after"), R"({"id":1,"big":")" + big + R"(","n":0})");
  EXPECT_EQ(names(d[1]), common_plus({"key", "after", "unchanged"}));
  EXPECT_EQ(field(d[1], "op"), "u");
  EXPECT_EQ(field(d[1], "key"), R"({"id":1})");
  EXPECT_EQ(field(d[1], "after"), R"({"id":1,"n":1})");
  EXPECT_EQ(field(d[1], "unchanged"), R"(["big"])");

  auto f = xrange(s.stream("public.docs_f"));
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(field(f[0], "after"), R"({"id":1,"big":")" + big + R"(","n":0})");
  EXPECT_EQ(names(f[1]), common_plus({"key", "after", "before"}));
  EXPECT_EQ(field(f[1], "after"), R"({"id":1,"big":")" + big + R"(","n":1})");
  EXPECT_EQ(field(f[1], "before"), R"({"id":1,"big":")" + big + R"(","n":0})");
  EXPECT_EQ(names(f[2]), common_plus({"key", "before"}));
  EXPECT_EQ(field(f[2], "before"), R"({"id":1,"big":")" + big + R"(","n":1})");
}

// No primary key: the replica-identity index names the row; FULL and nothing give no key; a table
// with no identity at all still streams its inserts, and walstream warns about it at start.
TEST(Records, KeyWithoutPrimaryKey) {
  Scope s;
  s.sql("CREATE TABLE uidx (id int NOT NULL, code text NOT NULL, v text); "
        "CREATE UNIQUE INDEX uidx_code ON uidx (code); ALTER TABLE uidx REPLICA IDENTITY USING INDEX uidx_code; "
        "CREATE TABLE fullnopk (a int, b text); ALTER TABLE fullnopk REPLICA IDENTITY FULL; "
        "CREATE TABLE nopk (a int, b text)");
  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  s.sql("INSERT INTO uidx VALUES (1, 'k1', 'v')");
  s.sql("UPDATE uidx SET v = 'w' WHERE code = 'k1'");
  s.sql("DELETE FROM uidx WHERE code = 'k1'");
  s.sql("INSERT INTO fullnopk VALUES (1, 'x')");
  s.sql("UPDATE fullnopk SET b = 'y'");
  s.sql("DELETE FROM fullnopk");
  s.sql("INSERT INTO nopk VALUES (1, 'x'), (2, NULL)");
  ASSERT_TRUE(wait_until([&] {
    return xlen(s.stream("public.uidx")) == 3 && xlen(s.stream("public.fullnopk")) == 3 &&
           xlen(s.stream("public.nopk")) == 2;
  })) << w.log();

  auto u = xrange(s.stream("public.uidx"));
  EXPECT_EQ(names(u[0]), common_plus({"key", "after"}));
  EXPECT_EQ(field(u[0], "key"), R"({"code":"k1"})");
  EXPECT_EQ(field(u[0], "after"), R"({"id":1,"code":"k1","v":"v"})");
  EXPECT_EQ(names(u[1]), common_plus({"key", "after"}));
  EXPECT_EQ(field(u[1], "key"), R"({"code":"k1"})");
  EXPECT_EQ(field(u[1], "after"), R"({"id":1,"code":"k1","v":"w"})");
  EXPECT_EQ(names(u[2]), common_plus({"key", "before"}));
  EXPECT_EQ(field(u[2], "key"), R"({"code":"k1"})");
  EXPECT_EQ(field(u[2], "before"), R"({"code":"k1"})");
  auto reg = registry(s, "public.uidx");
  ASSERT_EQ(reg.size(), 1u);
  EXPECT_EQ(reg.begin()->second, R"({"table":"public.uidx","columns":[)"
                                 R"({"name":"id","type":"integer","oid":23,"key":false},)"
                                 R"({"name":"code","type":"text","oid":25,"key":true},)"
                                 R"({"name":"v","type":"text","oid":25,"key":false}]})");

  auto f = xrange(s.stream("public.fullnopk"));
  EXPECT_EQ(names(f[0]), common_plus({"after"}));
  EXPECT_EQ(field(f[0], "after"), R"({"a":1,"b":"x"})");
  EXPECT_EQ(names(f[1]), common_plus({"after", "before"}));
  EXPECT_EQ(field(f[1], "before"), R"({"a":1,"b":"x"})");
  EXPECT_EQ(field(f[1], "after"), R"({"a":1,"b":"y"})");
  EXPECT_EQ(names(f[2]), common_plus({"before"}));
  EXPECT_EQ(field(f[2], "before"), R"({"a":1,"b":"y"})");

  auto n = xrange(s.stream("public.nopk"));
  EXPECT_EQ(names(n[0]), common_plus({"after"}));
  EXPECT_EQ(field(n[0], "after"), R"({"a":1,"b":"x"})");
  EXPECT_EQ(field(n[1], "after"), R"({"a":2,"b":null})");

  // One warning, naming the table without identity and how to fix it; none for the others.
  std::string warning;
  int warnings = 0;
  std::istringstream log(w.log());
  for (std::string line; std::getline(log, line);) {
    if (line.find("WARN") == std::string::npos) continue;
    EXPECT_EQ(line.find("uidx"), std::string::npos) << line;
    EXPECT_EQ(line.find("fullnopk"), std::string::npos) << line;
    if (line.find("nopk") != std::string::npos) {
      warning = line;
      ++warnings;
    }
  }
  EXPECT_EQ(warnings, 1) << w.log();
  EXPECT_NE(warning.find("REPLICA IDENTITY"), std::string::npos) << warning;
}

// TRUNCATE a, b: one `t` entry on each stream, one commit LSN.
TEST(Records, TruncateOfTwoTables) {
  Scope s;
  s.sql("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)");
  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  s.sql("INSERT INTO a VALUES (1); INSERT INTO b VALUES (1)");
  s.sql("TRUNCATE a, b");
  // A later transaction on both tables marks the end of what the truncate produced: once its rows
  // are stored, so is anything the truncate wrote.
  s.sql("INSERT INTO a VALUES (2); INSERT INTO b VALUES (2)");
  ASSERT_TRUE(wait_until([&] {
    return last_after(s.stream("public.a")) == R"({"id":2})" && last_after(s.stream("public.b")) == R"({"id":2})";
  })) << w.log();
  auto a = xrange(s.stream("public.a"));
  auto b = xrange(s.stream("public.b"));
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(field(a[1], "op"), "t");
  EXPECT_EQ(field(b[1], "op"), "t");
  EXPECT_EQ(names(a[1]), kCommon);
  EXPECT_EQ(names(b[1]), kCommon);
  EXPECT_EQ(field(a[1], "table"), "public.a");
  EXPECT_EQ(field(b[1], "table"), "public.b");
  EXPECT_EQ(id_ms(a[1].id), id_ms(b[1].id));
  EXPECT_GT(id_ms(a[1].id), id_ms(a[0].id));
  EXPECT_EQ(std::set<std::uint64_t>({id_seq(a[1].id), id_seq(b[1].id)}), std::set<std::uint64_t>({1, 2}));
  EXPECT_EQ(field(a[1], "xid"), field(b[1], "xid"));
  EXPECT_EQ(field(a[2], "op"), "c");
  EXPECT_EQ(field(b[2], "op"), "c");
}

// ALTER TABLE: a new schema version, registered next to the old one.
TEST(Records, SchemaChangeRegistersANewVersion) {
  Scope s;
  s.sql("CREATE TABLE p (id int PRIMARY KEY, name text)");
  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  s.sql("INSERT INTO p VALUES (1, 'x')");
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.p")) == 1; })) << w.log();
  s.sql("ALTER TABLE p ADD COLUMN price numeric(10,2)");
  s.sql("INSERT INTO p VALUES (2, 'y', 1.5)");
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.p")) == 2; })) << w.log();
  auto e = xrange(s.stream("public.p"));
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(field(e[1], "after"), R"({"id":2,"name":"y","price":"1.50"})");
  auto v1 = field(e[0], "schema"), v2 = field(e[1], "schema");
  EXPECT_NE(v1, v2);
  auto reg = registry(s, "public.p");
  EXPECT_EQ(reg.size(), 2u);
  EXPECT_EQ(reg[v1], R"({"table":"public.p","columns":[)"
                     R"({"name":"id","type":"integer","oid":23,"key":true},)"
                     R"({"name":"name","type":"text","oid":25,"key":false}]})");
  EXPECT_EQ(reg[v2], R"({"table":"public.p","columns":[)"
                     R"({"name":"id","type":"integer","oid":23,"key":true},)"
                     R"({"name":"name","type":"text","oid":25,"key":false},)"
                     R"j({"name":"price","type":"numeric(10,2)","oid":1700,"key":false}]})j");
}

// --tables: the publication walstream creates holds only those tables.
TEST(Records, TablesFlagLimitsTheCreatedPublication) {
  Scope s;
  s.sql("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)");
  Walstream w(with(s.args(), {"--tables", "public.a"}));
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  EXPECT_EQ(s.query_one("SELECT string_agg(schemaname || '.' || tablename, ',') FROM pg_publication_tables "
                        "WHERE pubname = 'walstream'"),
            "public.a");
  s.sql("INSERT INTO b VALUES (1)");
  s.sql("INSERT INTO a VALUES (1)");
  s.sql("INSERT INTO b VALUES (2)");
  s.sql("INSERT INTO a VALUES (2)");  // the sentinel: committed after every row of b
  ASSERT_TRUE(wait_until([&] { return last_after(s.stream("public.a")) == R"({"id":2})"; })) << w.log();
  EXPECT_EQ(xlen(s.stream("public.a")), 2);
  EXPECT_EQ(redis_command({"EXISTS", s.stream("public.b")}), std::vector<std::string>{"0"});
  EXPECT_EQ(redis_command({"EXISTS", s.prefix + "schema:public.b"}), std::vector<std::string>{"0"});
}

// --maxlen 10: the stream stays short (MAXLEN ~ trims whole nodes) and keeps the newest entries.
TEST(Records, MaxlenTrimsApproximately) {
  Scope s;
  s.sql("CREATE TABLE m (id int PRIMARY KEY)");
  Walstream w(with(s.args(), {"--maxlen", "10"}));
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  s.sql("DO $$ BEGIN FOR i IN 1..1000 LOOP INSERT INTO m VALUES (i); COMMIT; END LOOP; END $$");
  ASSERT_TRUE(wait_until([&] { return last_after(s.stream("public.m")) == R"({"id":1000})"; })) << w.log();
  auto len = xlen(s.stream("public.m"));
  EXPECT_GE(len, 10);
  EXPECT_LE(len, 200);
  // What is kept is the newest entries, contiguous: ids 1000-len+1 .. 1000.
  auto e = xrange(s.stream("public.m"));
  ASSERT_EQ(static_cast<long long>(e.size()), len);
  for (std::size_t i = 0; i < e.size(); ++i) {
    EXPECT_EQ(field(e[i], "after"), "{\"id\":" + std::to_string(1000 - len + 1 + static_cast<long long>(i)) + "}");
    if (i > 0) {
      EXPECT_GT(id_ms(e[i].id), id_ms(e[i - 1].id));
    }
  }
}

// SIGTERM stores everything, confirms it to PostgreSQL and exits 0; a restart duplicates nothing.
TEST(Records, SigtermThenRestartDuplicatesNothing) {
  Scope s;
  s.sql("CREATE TABLE r (id int PRIMARY KEY)");
  std::vector<Entry> before_stop;
  {
    Walstream w(s.args());
    ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
    for (int i = 1; i <= 3; ++i) s.sql("INSERT INTO r VALUES (" + std::to_string(i) + ")");
    s.sql("INSERT INTO r SELECT generate_series(4, 500)");
    ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.r")) == 500; })) << w.log();
    before_stop = xrange(s.stream("public.r"));
    w.signal(SIGTERM);
    ASSERT_EQ(w.wait(), 0) << w.log();
    // The last commit is confirmed: the slot's confirmed_flush_lsn is past the last commit LSN.
    EXPECT_GT(parse_lsn(confirmed_flush(s)), id_ms(before_stop.back().id)) << confirmed_flush(s);
    EXPECT_TRUE(s.caught_up()) << confirmed_flush(s) << " vs " << s.query_one("SELECT pg_current_wal_flush_lsn()")
                               << "\n" << w.log();
  }
  Walstream w2(s.args());
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w2.log();
  // Row 501 is the sentinel: anything the restart would resend comes before it.
  s.sql("INSERT INTO r VALUES (501)");
  ASSERT_TRUE(wait_until([&] { return last_after(s.stream("public.r")) == R"({"id":501})"; })) << w2.log();
  auto after = xrange(s.stream("public.r"));
  ASSERT_EQ(after.size(), 501u) << w2.log();
  for (std::size_t i = 0; i < before_stop.size(); ++i) EXPECT_EQ(after[i].id, before_stop[i].id);
  EXPECT_EQ(field(after.back(), "after"), R"({"id":501})");
  EXPECT_GT(id_ms(after.back().id), id_ms(before_stop.back().id));
  EXPECT_EQ(w2.log().find("ERROR"), std::string::npos) << w2.log();
}

// WAL of tables outside the publication still lets the slot advance, so PostgreSQL can recycle it.
TEST(Records, IdleSlotAdvancesPastUnpublishedWal) {
  Scope s;
  s.sql("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY, pad text)");
  Walstream w(with(s.args(), {"--tables", "public.a"}));
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  s.sql("INSERT INTO a VALUES (1)");
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.a")) == 1; })) << w.log();
  s.sql("INSERT INTO b SELECT i, repeat('x', 100) FROM generate_series(1, 10000) i");
  auto target = s.query_one("SELECT pg_current_wal_lsn()");
  auto a_commit = id_ms(xrange(s.stream("public.a")).back().id);
  ASSERT_GT(parse_lsn(target), a_commit + 1'000'000) << "the inserts into b wrote less WAL than expected";
  bool advanced = wait_until(
      [&] {
        return s.query_one("SELECT confirmed_flush_lsn >= '" + target + "'::pg_lsn FROM pg_replication_slots "
                           "WHERE slot_name = '" + s.slot + "'") == "t";
      },
      std::chrono::seconds(15));
  EXPECT_TRUE(advanced) << "confirmed_flush_lsn " << confirmed_flush(s) << " never reached " << target << "\n"
                        << w.log();
  EXPECT_EQ(xlen(s.stream("public.a")), 1);
  EXPECT_EQ(redis_command({"EXISTS", s.stream("public.b")}), std::vector<std::string>{"0"});
}

// public."a.b" and "public.a".b would both be walstream:public.a.b if names were joined as they
// are: each gets its own stream and registry key, and a quoted name in --tables works.
TEST(Records, DottedNamesGetStreamsOfTheirOwn) {
  Scope s;
  s.sql(R"(CREATE SCHEMA "public.a"; CREATE TABLE public."a.b" (id int PRIMARY KEY);
           CREATE TABLE "public.a".b (id int PRIMARY KEY))");
  Walstream w(with(s.args(), {"--tables", R"(public."a.b","public.a".b)"}));
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  s.sql(R"(INSERT INTO public."a.b" VALUES (1); INSERT INTO "public.a".b VALUES (2))");
  const auto first = s.stream(R"(public."a.b")"), second = s.stream(R"("public.a".b)");
  ASSERT_TRUE(wait_until([&] { return xlen(first) == 1 && xlen(second) == 1; })) << w.log();
  EXPECT_EQ(last_after(first), R"({"id":1})");
  EXPECT_EQ(last_after(second), R"({"id":2})");
  EXPECT_EQ(xrange(first)[0].fields.at("table"), R"(public."a.b")");
  EXPECT_EQ(xrange(second)[0].fields.at("table"), R"("public.a".b)");
  EXPECT_EQ(redis_command({"EXISTS", s.stream("public.a.b")}), std::vector<std::string>{"0"});
  EXPECT_EQ(redis_command({"EXISTS", s.prefix + R"(schema:public."a.b")"}), std::vector<std::string>{"1"});
  EXPECT_EQ(redis_command({"EXISTS", s.prefix + R"(schema:"public.a".b)"}), std::vector<std::string>{"1"});
}

// The publication name goes into START_REPLICATION inside a string literal: a quote in it must not
// end the literal.
TEST(Records, PublicationNameWithAQuote) {
  Scope s;
  s.sql("CREATE TABLE kv (k int PRIMARY KEY)");
  Walstream w(with(s.args(), {"--publication", "it's"}));
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  EXPECT_EQ(s.query_one("SELECT count(*) FROM pg_publication WHERE pubname = 'it''s'"), "1");
  s.sql("INSERT INTO kv VALUES (7)");
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.kv")) == 1; })) << w.log();
  EXPECT_EQ(last_after(s.stream("public.kv")), R"({"k":7})");
}
