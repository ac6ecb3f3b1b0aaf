// schema/json: the record encoder's JSON writer. Escaping is checked byte by byte against RFC 8259
// and round-tripped through rapidjson's reader (an independent parser), at every position relative
// to the 16-byte blocks the SSE2 scan reads.
#include "json.h"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <string>
#include <string_view>

namespace walstream {
namespace {

std::string as_string(std::string_view text) {
  JsonWriter w;
  w.string(text);
  EXPECT_TRUE(w.complete());
  return std::string(w.view());
}

// What rapidjson reads back from one written string value.
std::string read_back(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.data(), json.size());
  EXPECT_FALSE(d.HasParseError()) << json;
  if (d.HasParseError() || !d.IsString()) return "<not a string>";
  return std::string(d.GetString(), d.GetStringLength());
}

TEST(JsonWriter, EscapesQuoteBackslashAndControlCharacters) {
  EXPECT_EQ(as_string(""), R"("")");
  EXPECT_EQ(as_string("plain / text é 😀"), R"("plain / text é 😀")");
  EXPECT_EQ(as_string("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(as_string("\b\f\n\r\t"), R"("\b\f\n\r\t")");
  EXPECT_EQ(as_string(std::string_view("\0\x01\x1f\x7f", 4)), "\"\\u0000\\u0001\\u001F\x7f\"");
}

TEST(JsonWriter, EveryByteRoundTrips) {
  std::string all;
  for (int c = 0; c < 256; ++c) {
    if (c < 0x80) all.push_back(static_cast<char>(c));  // ASCII; multi-byte UTF-8 below
  }
  all += "é€😀";
  EXPECT_EQ(read_back(as_string(all)), all);
}

// The escape may sit anywhere in or after a 16-byte block: each position, in strings of every
// length up to three blocks, must come out escaped once and everything else unchanged.
TEST(JsonWriter, EscapeAtEveryPositionAroundBlocks) {
  for (std::size_t len = 1; len <= 48; ++len) {
    for (std::size_t at = 0; at < len; ++at) {
      for (char special : {'"', '\\', '\n', '\x01', '\x1f'}) {
        std::string text(len, 'x');
        text[at] = special;
        // Bytes above 0x7f look negative to a signed compare; none of them may be taken for control characters.
        if (at + 1 < len) text[at + 1] = static_cast<char>(0xc3), text.insert(at + 2, 1, static_cast<char>(0xa9));
        const std::string json = as_string(text);
        ASSERT_EQ(read_back(json), text) << "len " << len << " at " << at;
        const std::size_t escapes = json.size() - text.size() - 2;
        EXPECT_EQ(escapes, special == '\x01' || special == '\x1f' ? 5u : 1u) << json;
      }
    }
  }
}

TEST(JsonWriter, CommasBetweenValuesAndMembers) {
  JsonWriter w;
  w.start_object();
  w.key("a");
  w.start_array();
  w.number(1);
  w.null();
  w.boolean(false);
  w.start_object();
  w.end_object();
  w.start_array();
  w.end_array();
  w.raw("2.5e10");
  w.end_array();
  w.member(json_member("b\"c"));
  w.string("d");
  w.key("e");
  w.number(18446744073709551615ull);
  w.end_object();
  EXPECT_TRUE(w.complete());
  EXPECT_EQ(w.view(), R"({"a":[1,null,false,{},[],2.5e10],"b\"c":"d","e":18446744073709551615})");
}

TEST(JsonWriter, RewindTakesBackWhatFollowsTheMark) {
  JsonWriter w;
  w.start_array();
  w.number(1);
  const auto m = w.mark();
  w.start_array();
  w.string("half");
  w.rewind(m);
  EXPECT_FALSE(w.complete());
  w.string("whole");
  w.end_array();
  EXPECT_TRUE(w.complete());
  EXPECT_EQ(w.view(), R"([1,"whole"])");
}

TEST(JsonWriter, ClearKeepsNothingButCapacity) {
  JsonWriter w;
  w.string(std::string(100000, 'y'));
  w.clear();
  EXPECT_TRUE(w.empty());
  EXPECT_FALSE(w.complete());
  w.start_array();
  w.end_array();
  EXPECT_EQ(w.view(), "[]");
}

}  // namespace
}  // namespace walstream
