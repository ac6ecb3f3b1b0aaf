// The JSON line `walstream tail` prints for one stream entry (schema/record_json.h): pure, no servers.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "record_json.h"

using walstream::compact_json;
using walstream::record_json_line;

namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

std::string compact(std::string_view text) {
  std::string out;
  return compact_json(text, out) ? out : "<invalid>";
}

}  // namespace

TEST(RecordJsonLine, InsertEmbedsKeyAndAfterAndLeavesOutWhatIsAbsent) {
  Fields f{{"op", "c"},           {"table", "public.users"},
           {"lsn", "0/16B3748"},  {"xid", "750"},
           {"ts", "2026-11-27T01:35:15.123456Z"}, {"schema", "3"},
           {"key", R"({"id":1})"}, {"after", R"({"id":1,"email":"a@example.com","tags":["x",null]})"}};
  EXPECT_EQ(record_json_line("walstream:public.users", "23803656-1", f),
            R"({"stream_id":"walstream:public.users","id":"23803656-1","op":"c","table":"public.users",)"
            R"("key":{"id":1},"after":{"id":1,"email":"a@example.com","tags":["x",null]},)"
            R"("ts":"2026-11-27T01:35:15.123456Z"})");
}

TEST(RecordJsonLine, FieldsComeInContractOrderWhateverTheEntryOrder) {
  Fields f{{"unchanged", R"(["doc"])"}, {"before", R"({"id":1})"}, {"after", R"({"id":2})"}, {"key", R"({"id":2})"},
           {"ts", "t"},                 {"table", "s.t"},            {"op", "u"}};
  EXPECT_EQ(record_json_line("p:s.t", "5-2", f),
            R"({"stream_id":"p:s.t","id":"5-2","op":"u","table":"s.t","key":{"id":2},"after":{"id":2},)"
            R"("before":{"id":1},"unchanged":["doc"],"ts":"t"})");
}

TEST(RecordJsonLine, TruncateHasNoRowFields) {
  Fields f{{"op", "t"}, {"table", "public.t"}, {"ts", "x"}};
  EXPECT_EQ(record_json_line("walstream:public.t", "9-1", f),
            R"({"stream_id":"walstream:public.t","id":"9-1","op":"t","table":"public.t","ts":"x"})");
}

TEST(RecordJsonLine, JsonColumnWhitespaceIsDroppedSoTheLineStaysOneLine) {
  // A json (not jsonb) column keeps the text it was given, newlines included.
  Fields f{{"op", "c"}, {"after", "{\"id\": 1,\n \"doc\": {\"a b\" :\t[1, 2.5e3, \"x\\ny\"]\r\n}}"}};
  auto line = record_json_line("k", "1-1", f);
  EXPECT_EQ(line, R"({"stream_id":"k","id":"1-1","op":"c","after":{"id":1,"doc":{"a b":[1,2.5e3,"x\ny"]}}})");
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

TEST(RecordJsonLine, StringsAreEscaped) {
  Fields f{{"op", "c"}, {"table", "public.\"odd\"\n"}};
  EXPECT_EQ(record_json_line("k", "1-1", f), R"({"stream_id":"k","id":"1-1","op":"c","table":"public.\"odd\"\n"})");
}

TEST(RecordJsonLine, AValueThatIsNotJsonIsKeptAsAString) {
  // Never written by walstream, but a stream can hold anything: nothing is dropped, the line stays JSON.
  Fields f{{"op", "c"}, {"after", "{\"id\":1"}, {"key", "not json"}};
  EXPECT_EQ(record_json_line("k", "1-1", f),
            R"({"stream_id":"k","id":"1-1","op":"c","key":"not json","after":"{\"id\":1"})");
}

TEST(CompactJson, KeepsNumbersOfAnySizeAndEscapesVerbatim) {
  EXPECT_EQ(compact("123456789012345678901234567890.5e-400"), "123456789012345678901234567890.5e-400");
  EXPECT_EQ(compact(R"( "\ud800 \u00e9 \/ \"" )"), R"("\ud800 \u00e9 \/ \"")");
  EXPECT_EQ(compact(" [ ] "), "[]");
  EXPECT_EQ(compact("{ }"), "{}");
  EXPECT_EQ(compact("[true ,false, null,-0,{\"a\":{}}]"), "[true,false,null,-0,{\"a\":{}}]");
  EXPECT_EQ(compact("\"h\xc3\xa9\""), "\"h\xc3\xa9\"");
}

TEST(CompactJson, DeepNestingIsIterative) {
  std::string deep(100000, '[');
  deep += std::string(100000, ']');
  EXPECT_EQ(compact(deep), deep);
}

TEST(CompactJson, RejectsWhatIsNotOneJsonValue) {
  for (const char* bad : {"", " ", "{", "}", "[1,]", "[1 2]", "{\"a\"}", "{\"a\":1,}", "{a:1}", "01", "1.", ".5", "1e",
                          "-", "+1", "tru", "nul", "\"abc", "\"\\x\"", "\"\\u12g4\"", "\"a\nb\"", "1 2", "[]]",
                          "{\"a\":1}}", "NaN"}) {
    EXPECT_EQ(compact(bad), "<invalid>") << bad;
  }
}
