// Typed values: one column per type of the record contract, value by value, each compared with the
// exact JSON a subscriber reads in `after`. Expectations are written by hand from the contract and
// from what PostgreSQL itself prints (DateStyle=ISO, TimeZone=UTC, IntervalStyle=iso_8601).
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <string>
#include <utility>
#include <vector>

#include "harness.h"

using namespace harness;

namespace {

bool streaming(const Scope& s) { return s.streaming(); }

// Splits a JSON object's text into its top-level members, keeping each value's text exactly as
// written (so `1.50` and `1.5` differ). Returns false on text that is not an object.
bool split_object(const std::string& text, std::vector<std::pair<std::string, std::string>>& out) {
  out.clear();
  std::size_t i = 0;
  auto skip_ws = [&] {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\n' || text[i] == '\t' || text[i] == '\r')) ++i;
  };
  auto scan_string = [&]() -> bool {  // text[i] == '"'; leaves i after the closing quote
    ++i;
    while (i < text.size() && text[i] != '"') i += text[i] == '\\' ? 2 : 1;
    if (i >= text.size()) return false;
    ++i;
    return true;
  };
  skip_ws();
  if (i >= text.size() || text[i] != '{') return false;
  ++i;
  skip_ws();
  if (i < text.size() && text[i] == '}') return true;
  for (;;) {
    skip_ws();
    if (i >= text.size() || text[i] != '"') return false;
    std::size_t key_start = i;
    if (!scan_string()) return false;
    rapidjson::Document key;
    key.Parse(text.data() + key_start, i - key_start);
    if (key.HasParseError() || !key.IsString()) return false;
    skip_ws();
    if (i >= text.size() || text[i] != ':') return false;
    ++i;
    skip_ws();
    std::size_t value_start = i;
    int depth = 0;
    while (i < text.size()) {
      char c = text[i];
      if (c == '"') {
        if (!scan_string()) return false;
        continue;
      }
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') {
        if (depth == 0) break;
        --depth;
      }
      if (c == ',' && depth == 0) break;
      ++i;
    }
    std::size_t value_end = i;
    while (value_end > value_start && (text[value_end - 1] == ' ' || text[value_end - 1] == '\n')) --value_end;
    out.emplace_back(key.GetString(), text.substr(value_start, value_end - value_start));
    if (i >= text.size()) return false;
    if (text[i] == '}') return true;
    ++i;  // ','
  }
}

bool same_json(const std::string& a, const std::string& b) {
  rapidjson::Document da, db;
  da.Parse(a.data(), a.size());
  db.Parse(b.data(), b.size());
  return !da.HasParseError() && !db.HasParseError() && da == db;
}

// The table: every column but id is NULL unless a case sets it.
const char* kColumns[] = {"id", "b",  "i2", "i4",  "i8",  "o",    "f4", "f8",   "num", "num2", "j",  "jb", "by",
                          "d",  "ts", "tstz", "ai", "at", "aii", "ajb", "ab", "an", "atz", "am", "adom", "e",
                          "dom", "domt", "iv", "u", "ip", "pt", "t", "vc", "ch"};

const char* kSchema = R"sql(
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE DOMAIN label AS text;
CREATE TABLE v (
  id int PRIMARY KEY,
  b bool, i2 int2, i4 int4, i8 int8, o oid, f4 float4, f8 float8, num numeric, num2 numeric(10,2),
  j json, jb jsonb, "by" bytea, d date, ts timestamp, tstz timestamptz,
  ai int4[], "at" text[], aii int[][], ajb jsonb[], ab bool[], an numeric[], atz timestamptz[], am mood[],
  adom posint[], e mood, dom posint, domt label, iv interval, u uuid, ip inet, pt point, t text,
  vc varchar(10), ch char(3)
))sql";

struct Value {
  std::string column;
  std::string literal;   // SQL expression inserted
  std::string expected;  // exact JSON text in `after`
  bool structural = false;  // compare as JSON values (embedded JSON's spacing and optional escapes are free)
};

struct Case {
  int id;
  std::string name;
  std::vector<Value> values;
};

std::vector<Case> cases() {
  return {
      {1, "bool true, integer maxima, oid max",
       {{"b", "true", "true"},
        {"i2", "32767", "32767"},
        {"i4", "2147483647", "2147483647"},
        {"i8", "9223372036854775807", "9223372036854775807"},
        {"o", "4294967295", "4294967295"}}},
      {2, "bool false, integer minima, oid 0",
       {{"b", "false", "false"},
        {"i2", "-32768", "-32768"},
        {"i4", "-2147483648", "-2147483648"},
        {"i8", "-9223372036854775808", "-9223372036854775808"},
        {"o", "0", "0"}}},
      {3, "finite floats", {{"f4", "1.5", "1.5"}, {"f8", "1.5", "1.5"}}},
      {4, "more finite floats",
       {{"f4", "'-0.25'", "-0.25"}, {"f8", "0.1", "0.1"}}},
      {5, "float NaN", {{"f4", "'NaN'", R"("NaN")"}, {"f8", "'NaN'", R"("NaN")"}}},
      {6, "float infinities", {{"f4", "'Infinity'", R"("Infinity")"}, {"f8", "'-Infinity'", R"("-Infinity")"}}},
      {7, "float exponent", {{"f8", "'1e300'", "1e300", true}, {"f4", "'Infinity'", R"("Infinity")"}}},
      {8, "numeric exact",
       {{"num", "'12345678901234567890.123456789'", R"("12345678901234567890.123456789")"},
        {"num2", "1.5", R"("1.50")"}}},
      {9, "numeric NaN and negative", {{"num", "'NaN'", R"("NaN")"}, {"num2", "'-0.01'", R"("-0.01")"}}},
      {10, "json objects embedded",
       {{"j", R"('{"a":[1,2,{"b":null}],"s":"x\"y"}')", R"({"a":[1,2,{"b":null}],"s":"x\"y"})", true},
        {"jb", R"('{"b": 2, "a": [true, "s"]}')", R"({"a":[true,"s"],"b":2})", true}}},
      {11, "json scalars embedded",
       {{"j", R"('"just a string"')", R"("just a string")", true}, {"jb", "'[]'", "[]", true}}},
      {12, "json number embedded", {{"j", "'123.5'", "123.5", true}, {"jb", "'{}'", "{}", true}}},
      {13, "bytea base64", {{"by", R"('\xdeadbeef00'::bytea)", R"("3q2+7wA=")"}}},
      {14, "empty bytea", {{"by", "''::bytea", R"("")"}}},
      {15, "date, timestamp, timestamptz with fractions",
       {{"d", "'2026-11-27'", R"("2026-11-27")"},
        {"ts", "'2026-11-27 03:35:15.123456'", R"("2026-11-27T03:35:15.123456")"},
        {"tstz", "'2026-11-27 03:35:15.5+02'", R"("2026-11-27T01:35:15.5Z")"}}},
      {16, "infinite date, timestamp, timestamptz",
       {{"d", "'infinity'", R"("infinity")"},
        {"ts", "'infinity'", R"("infinity")"},
        {"tstz", "'-infinity'", R"("-infinity")"}}},
      {17, "whole seconds and -infinity",
       {{"d", "'2000-02-29'", R"("2000-02-29")"},
        {"ts", "'-infinity'", R"("-infinity")"},
        {"tstz", "'2026-11-27 03:35:15+02'", R"("2026-11-27T01:35:15Z")"}}},
      {18, "timestamp half second", {{"ts", "'2026-01-01 00:00:00.5'", R"("2026-01-01T00:00:00.5")"},
                                     {"tstz", "'infinity'", R"("infinity")"}}},
      {19, "arrays with NULL, quotes, commas, the word NULL, nesting",
       {{"ai", "'{1,NULL,3}'", "[1,null,3]"},
        {"at", R"(ARRAY['a"b', 'c,d', 'NULL', NULL, '', 'back\slash', ' sp ', '{x}'])",
         R"(["a\"b","c,d","NULL",null,"","back\\slash"," sp ","{x}"])"},
        {"aii", "'{{1,2},{3,4}}'", "[[1,2],[3,4]]"}}},
      {20, "empty arrays and typed elements",
       {{"ai", "'{}'", "[]"},
        {"at", "'{}'", "[]"},
        {"aii", "'{}'", "[]"},
        {"ab", "'{t,f,NULL}'", "[true,false,null]"},
        {"an", "'{1.10,NaN}'", R"(["1.10","NaN"])"},
        {"atz", "ARRAY['2026-11-27 03:35:15.5+02'::timestamptz]", R"(["2026-11-27T01:35:15.5Z"])"}}},
      {21, "jsonb array, enum array, domain array",
       {{"ajb", R"(ARRAY['{"a": 1}'::jsonb, '[1, "x"]'::jsonb, NULL])", R"([{"a":1},[1,"x"],null])", true},
        {"am", "'{happy,sad}'", R"(["happy","sad"])"},
        {"adom", "ARRAY[1, 2]::posint[]", "[1,2]"}}},
      {22, "enum, domains, interval, uuid, other types as text",
       {{"e", "'sad'", R"("sad")"},
        {"dom", "42", "42"},
        {"domt", "'lbl'", R"("lbl")"},
        {"iv", "'1 year 2 months 3 days 4 hours 5 minutes 6 seconds'", R"("P1Y2M3DT4H5M6S")"},
        {"u", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", R"("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")"},
        {"ip", "'192.168.0.1/24'", R"("192.168.0.1/24")"},
        {"pt", "'(1,2)'", R"x("(1,2)")x"}}},
      {23, "text-like values",
       {{"t", R"('héllo "q" \ end')", R"("héllo \"q\" \\ end")", true},
        {"vc", "'abc'", R"("abc")"},
        {"ch", "'ab'", R"("ab ")"},
        {"iv", "'-1 day 00:00:00.5'", R"("P-1DT0.5S")"}}},
      {24, "control characters in text", {{"t", R"(E'line1\nline2\ttab')", R"("line1\nline2\ttab")", true}}},
      {25, "SQL NULL everywhere", {}},
  };
}

}  // namespace

TEST(Types, EveryContractTypeAsExactJson) {
  Scope s;
  s.sql(kSchema);
  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();

  auto all = cases();
  std::string statements;
  for (const auto& c : all) {
    std::string cols = "id", vals = std::to_string(c.id);
    for (const auto& v : c.values) {
      cols += ", \"" + v.column + "\"";
      vals += ", " + v.literal;
    }
    statements += "INSERT INTO v (" + cols + ") VALUES (" + vals + ");\n";
  }
  s.sql(statements);

  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.v")) == static_cast<long long>(all.size()); }))
      << w.log();
  auto entries = xrange(s.stream("public.v"));
  ASSERT_EQ(entries.size(), all.size());

  for (std::size_t n = 0; n < all.size(); ++n) {
    const auto& c = all[n];
    SCOPED_TRACE("case " + std::to_string(c.id) + ": " + c.name);
    const auto& after = entries[n].fields.at("after");
    EXPECT_EQ(entries[n].fields.at("key"), "{\"id\":" + std::to_string(c.id) + "}");
    std::vector<std::pair<std::string, std::string>> members;
    ASSERT_TRUE(split_object(after, members)) << after;
    // Every column, in table order; the ones the case does not set are null.
    ASSERT_EQ(members.size(), std::size(kColumns)) << after;
    for (std::size_t i = 0; i < members.size(); ++i) {
      const auto& [name, text] = members[i];
      EXPECT_EQ(name, kColumns[i]) << after;
      if (name == "id") {
        EXPECT_EQ(text, std::to_string(c.id));
        continue;
      }
      const Value* want = nullptr;
      for (const auto& v : c.values) {
        if (v.column == name) want = &v;
      }
      if (!want) {
        EXPECT_EQ(text, "null") << "column " << name;
      } else if (want->structural) {
        EXPECT_TRUE(same_json(text, want->expected))
            << "column " << name << " (" << want->literal << "): expected " << want->expected << ", got " << text;
      } else {
        EXPECT_EQ(text, want->expected) << "column " << name << " (" << want->literal << ")";
      }
    }
  }
}

// The same typed values appear in `before` (REPLICA IDENTITY FULL) and `key`, not only in `after`.
TEST(Types, TypedValuesInBeforeAndKey) {
  Scope s;
  s.sql("CREATE TABLE k (tstz timestamptz PRIMARY KEY, n numeric, j jsonb, a int[]); "
        "ALTER TABLE k REPLICA IDENTITY FULL");
  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  s.sql("INSERT INTO k VALUES ('2026-11-27 03:35:15.5+02', 1.50, '[1]', '{1,NULL}')");
  s.sql("DELETE FROM k");
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.k")) == 2; })) << w.log();
  auto entries = xrange(s.stream("public.k"));
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[1].fields.at("op"), "d");
  EXPECT_EQ(entries[1].fields.at("key"), R"({"tstz":"2026-11-27T01:35:15.5Z"})");
  EXPECT_TRUE(same_json(entries[1].fields.at("before"),
                        R"({"tstz":"2026-11-27T01:35:15.5Z","n":"1.50","j":[1],"a":[1,null]})"))
      << entries[1].fields.at("before");
}
