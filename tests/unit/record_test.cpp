// The record encoder: decoded tuples + table facts -> the exact fields of a stream entry.
// Tuples mirror what pgoutput sent in tests/fixtures/pgoutput_v1.txt (kinds t, n, u; old 'K'/'O').
#include <gtest/gtest.h>

#include <map>

#include "record.h"
#include "relation_cache.h"

using namespace walstream;

namespace {

ColumnInfo column(std::string name, std::uint32_t oid, std::string type_name, TypeKind kind, bool identity = false) {
  ColumnInfo c;
  c.name = std::move(name);
  c.type_oid = oid;
  c.type_name = std::move(type_name);
  c.type.kind = kind;
  c.identity = identity;
  return c;
}

TableInfo users(char replident = 'd') {
  TableInfo t;
  t.relid = 16390;
  t.schema = "public";
  t.name = "users";
  t.replident = replident;
  t.columns = {column("id", 23, "integer", TypeKind::Integer, true), column("email", 25, "text", TypeKind::Text, replident == 'f'),
               column("bio", 25, "text", TypeKind::Text, replident == 'f'),
               column("score", 1700, "numeric(10,2)", TypeKind::Numeric, replident == 'f')};
  finalize_table(t, {"id"});
  return t;
}

Cell text(std::string_view v) { return {Cell::State::Text, v}; }
Cell null() { return {Cell::State::Null, {}}; }
Cell unchanged() { return {Cell::State::Unchanged, {}}; }

std::map<std::string, std::string> as_map(std::span<const Field> fields) {
  std::map<std::string, std::string> m;
  for (const auto& [k, v] : fields) {
    EXPECT_FALSE(m.count(std::string(k))) << "field " << k << " twice";
    m[std::string(k)] = std::string(v);
  }
  return m;
}

const TxnContext kTxn{"742", "2026-11-27T01:35:15.123456Z"};

}  // namespace

TEST(Record, InsertCarriesKeyAndTypedAfter) {
  auto t = users();
  RecordBuilder b;
  std::vector<Cell> row = {text("1"), text("a@x.io"), null(), text("12.50")};
  auto f = as_map(b.insert(t, kTxn, "0/16B3748", row));
  EXPECT_EQ(f.size(), 8u);
  EXPECT_EQ(f["op"], "c");
  EXPECT_EQ(f["table"], "public.users");
  EXPECT_EQ(f["lsn"], "0/16B3748");
  EXPECT_EQ(f["xid"], "742");
  EXPECT_EQ(f["ts"], "2026-11-27T01:35:15.123456Z");
  EXPECT_EQ(f["schema"], t.version);
  EXPECT_EQ(f["key"], R"({"id":1})");
  EXPECT_EQ(f["after"], R"({"id":1,"email":"a@x.io","bio":null,"score":"12.50"})");
}

TEST(Record, DefaultIdentityUpdateListsUnchangedToastAndLeavesItOut) {
  auto t = users();
  RecordBuilder b;
  std::vector<Cell> row = {text("1"), text("b@x.io"), unchanged(), text("13.00")};
  auto f = as_map(b.update(t, kTxn, "0/1", 0, {}, row));
  EXPECT_EQ(f["op"], "u");
  EXPECT_EQ(f["after"], R"({"id":1,"email":"b@x.io","score":"13.00"})");
  EXPECT_EQ(f["unchanged"], R"(["bio"])");
  EXPECT_FALSE(f.count("before"));
}

TEST(Record, FullIdentityUpdateFillsUnchangedToastFromTheOldRow) {
  auto t = users('f');
  RecordBuilder b;
  std::vector<Cell> old_row = {text("1"), text("a@x.io"), text("long bio"), text("12.50")};
  std::vector<Cell> new_row = {text("1"), text("b@x.io"), unchanged(), text("12.50")};
  auto f = as_map(b.update(t, kTxn, "0/1", 'O', old_row, new_row));
  EXPECT_EQ(f["after"], R"({"id":1,"email":"b@x.io","bio":"long bio","score":"12.50"})");
  EXPECT_EQ(f["before"], R"({"id":1,"email":"a@x.io","bio":"long bio","score":"12.50"})");
  EXPECT_FALSE(f.count("unchanged"));
}

TEST(Record, KeyChangeCarriesTheOldKeyInBeforeAndTheNewInKey) {
  auto t = users();
  RecordBuilder b;
  std::vector<Cell> old_key = {text("1"), null(), null(), null()};  // 'K': only identity columns are real
  std::vector<Cell> new_row = {text("2"), text("a@x.io"), null(), text("1.00")};
  auto f = as_map(b.update(t, kTxn, "0/1", 'K', old_key, new_row));
  EXPECT_EQ(f["key"], R"({"id":2})");
  EXPECT_EQ(f["before"], R"({"id":1})");
}

TEST(Record, DeleteWithDefaultIdentityHasTheKeyOnly) {
  auto t = users();
  RecordBuilder b;
  std::vector<Cell> old_key = {text("7"), null(), null(), null()};
  auto f = as_map(b.remove(t, kTxn, "0/1", 'K', old_key));
  EXPECT_EQ(f["op"], "d");
  EXPECT_EQ(f["key"], R"({"id":7})");
  EXPECT_EQ(f["before"], R"({"id":7})");
  EXPECT_FALSE(f.count("after"));
}

TEST(Record, TruncateAndSnapshotRows) {
  auto t = users();
  RecordBuilder b;
  auto f = as_map(b.truncate(t, kTxn, "0/1"));
  EXPECT_EQ(f["op"], "t");
  EXPECT_EQ(f.size(), 6u);
  std::vector<Cell> row = {text("1"), text("a@x.io"), null(), text("0")};
  auto r = as_map(b.snapshot(t, kTxn, "0/1", row));
  EXPECT_EQ(r["op"], "r");
  EXPECT_EQ(r["key"], R"({"id":1})");
  EXPECT_EQ(r["after"], R"({"id":1,"email":"a@x.io","bio":null,"score":"0"})");
}

TEST(Record, TablesWithoutAKeyHaveNoKeyField) {
  TableInfo t;
  t.schema = "public";
  t.name = "log";
  t.replident = 'f';
  t.columns = {column("msg", 25, "text", TypeKind::Text, true)};
  finalize_table(t, {});
  RecordBuilder b;
  std::vector<Cell> row = {text("hello \"world\"")};
  auto f = as_map(b.insert(t, kTxn, "0/1", row));
  EXPECT_FALSE(f.count("key"));
  EXPECT_EQ(f["after"], R"({"msg":"hello \"world\""})");
}

TEST(Record, IndexIdentityNamesTheRowWhenThereIsNoPrimaryKey) {
  TableInfo t;
  t.schema = "public";
  t.name = "tags";
  t.replident = 'i';
  t.columns = {column("name", 25, "text", TypeKind::Text, true), column("n", 23, "integer", TypeKind::Integer)};
  finalize_table(t, {});
  EXPECT_TRUE(t.has_key);
  RecordBuilder b;
  std::vector<Cell> row = {text("x"), text("3")};
  EXPECT_EQ(as_map(b.insert(t, kTxn, "0/1", row))["key"], R"({"name":"x"})");
}

TEST(Record, RegistryJsonAndVersionAreStableAndFollowTheColumns) {
  auto a = users();
  auto b = users();
  EXPECT_EQ(a.registry_json,
            R"J({"table":"public.users","columns":[{"name":"id","type":"integer","oid":23,"key":true},)J"
            R"J({"name":"email","type":"text","oid":25,"key":false},{"name":"bio","type":"text","oid":25,"key":false},)J"
            R"J({"name":"score","type":"numeric(10,2)","oid":1700,"key":false}]})J");
  EXPECT_EQ(a.version, b.version);
  EXPECT_EQ(a.version.size(), 16u);
  b.columns.push_back(column("extra", 16, "boolean", TypeKind::Bool));
  finalize_table(b, {"id"});
  EXPECT_NE(a.version, b.version);
}

TEST(Record, DeleteOmitsAPrimaryKeyTheIndexIdentityDoesNotSend) {
  // PRIMARY KEY (id) with REPLICA IDENTITY USING INDEX on a unique (email): a delete's 'K' tuple
  // carries email only, and id arrives as 'n'.
  TableInfo t;
  t.schema = "public";
  t.name = "accounts";
  t.replident = 'i';
  t.columns = {column("id", 23, "integer", TypeKind::Integer), column("email", 25, "text", TypeKind::Text, true)};
  finalize_table(t, {"id"});
  EXPECT_FALSE(t.key_in_identity);
  RecordBuilder b;
  std::vector<Cell> old_key = {null(), text("a@x.io")};
  auto f = as_map(b.remove(t, kTxn, "0/1", 'K', old_key));
  EXPECT_FALSE(f.count("key"));
  EXPECT_EQ(f["before"], R"({"email":"a@x.io"})");
}
