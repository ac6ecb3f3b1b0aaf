// schema/relation_cache: the table name that stream keys, registry keys and the record's `table` field
// are made of. Two tables must never share it; tables without dots or quotes keep the name they had.
#include <gtest/gtest.h>

#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "record.h"
#include "relation_cache.h"

using namespace walstream;

namespace {

using Names = std::pair<std::string, std::string>;

TEST(QualifiedTableName, NamesThatJoinedToTheSameTextDiffer) {
  EXPECT_EQ(qualified_table_name("public", "a.b"), R"(public."a.b")");
  EXPECT_EQ(qualified_table_name("public.a", "b"), R"("public.a".b)");
  EXPECT_EQ(qualified_table_name("a", "b.c.d"), R"(a."b.c.d")");
  EXPECT_EQ(qualified_table_name("a.b", "c.d"), R"("a.b"."c.d")");
}

TEST(QualifiedTableName, QuotesAreQuotedAndDoubled) {
  EXPECT_EQ(qualified_table_name("public", R"(say "hi")"), R"(public."say ""hi""")");
  EXPECT_EQ(qualified_table_name(R"(")", "t"), R"("""".t)");
  // A part that looks quoted already is quoted again: a '"' at the start always opens a quoted part.
  EXPECT_EQ(qualified_table_name(R"("public".a)", "b"), R"("""public"".a".b)");
}

// Everything quote_ident would quote for another reason stays as it is: those names had these keys.
TEST(QualifiedTableName, OtherNamesAreUnchanged) {
  EXPECT_EQ(qualified_table_name("public", "users"), "public.users");
  EXPECT_EQ(qualified_table_name("Sales", "Orders"), "Sales.Orders");
  EXPECT_EQ(qualified_table_name("my schema", "order-items 2"), "my schema.order-items 2");
  EXPECT_EQ(qualified_table_name("public", "select"), "public.select");
  EXPECT_EQ(qualified_table_name("ünï", "tàble:1$"), "ünï.tàble:1$");
}

// Every pair of tricky parts gets its own name, and the name reads back as that pair.
TEST(QualifiedTableName, IsOneToOneAndParsesBack) {
  const std::vector<std::string> parts = {"a",    "b",    ".",     "..",  R"(")", R"("")", "a.b",  R"("a.b")",
                                          "a\".b", ".a",  "a.",   "\"a", "a\"", "A",    " a ",  R"(""."")"};
  std::set<std::string> seen;
  for (const auto& schema : parts) {
    for (const auto& table : parts) {
      const std::string name = qualified_table_name(schema, table);
      EXPECT_TRUE(seen.insert(name).second) << name << " names two tables";
      EXPECT_EQ(parse_qualified_table_name(name), std::optional(Names{schema, table})) << name;
    }
  }
  EXPECT_EQ(seen.size(), parts.size() * parts.size());
}

TEST(ParseQualifiedTableName, AcceptsWhatAUserTypes) {
  EXPECT_EQ(parse_qualified_table_name("public.users"), std::optional(Names{"public", "users"}));
  EXPECT_EQ(parse_qualified_table_name(R"("public"."Users")"), std::optional(Names{"public", "Users"}));
  EXPECT_EQ(parse_qualified_table_name("Sales.Orders"), std::optional(Names{"Sales", "Orders"}));  // no folding
  EXPECT_EQ(parse_qualified_table_name("users"), std::optional(Names{"", "users"}));
  EXPECT_EQ(parse_qualified_table_name(R"("a.b")"), std::optional(Names{"", "a.b"}));
}

TEST(ParseQualifiedTableName, RejectsWhatNoTableIsNamed) {
  for (const char* text : {"", ".", "a.", ".b", "a.b.c", R"("a)", R"(a"b.c)", R"(a.b"c)", R"("a"x.b)", R"("".b)",
                           R"(a."")", R"("a".)", R"("a"".b)"}) {
    EXPECT_EQ(parse_qualified_table_name(text), std::nullopt) << text;
  }
}

// The stream key, the registry key and the record all take the table's name from finalize_table.
TEST(QualifiedTableName, IsTheTablesNameInItsRegistryJsonAndRecords) {
  TableInfo t;
  t.schema = "public";
  t.name = "a.b";
  ColumnInfo id;
  id.name = "id";
  id.type_oid = 23;
  id.type_name = "integer";
  id.type.kind = TypeKind::Integer;
  t.columns = {id};
  finalize_table(t, {"id"});
  EXPECT_EQ(t.qualified, R"(public."a.b")");
  EXPECT_TRUE(t.registry_json.starts_with(R"({"table":"public.\"a.b\"",)")) << t.registry_json;

  TableInfo other = t;
  other.schema = "public.a";
  other.name = "b";
  finalize_table(other, {"id"});
  EXPECT_EQ(other.qualified, R"("public.a".b)");
  EXPECT_NE(other.version, t.version);  // the registry JSON names the table, so the versions differ too

  RecordBuilder b;
  const std::vector<Cell> row = {{Cell::State::Text, "1"}};
  std::string table_field;
  for (const auto& [field, value] : b.insert(t, TxnContext{"1", "2026-11-27T01:35:15Z"}, "0/1", row)) {
    if (field == "table") table_field = value;
  }
  EXPECT_EQ(table_field, R"(public."a.b")");
}

}  // namespace
