// COPY text-format rows as PostgreSQL 15 writes them (COPY (SELECT …) TO STDOUT), decoded back.
#include <gtest/gtest.h>

#include "copy_text.h"

#include <deque>

using Row = std::vector<std::optional<std::string_view>>;

namespace {

std::deque<std::string> scratch;

void parse_row(std::string_view line, Row& row) { walstream::copy_text::parse_row(line, row, scratch); }

}  // namespace

TEST(CopyText, SplitsOnTabsAndReadsNulls) {
  Row row;
  // COPY (SELECT 1, NULL::text, 'x', '') TO STDOUT
  parse_row("1\t\\N\tx\t", row);
  ASSERT_EQ(row.size(), 4u);
  EXPECT_EQ(row[0], "1");
  EXPECT_FALSE(row[1].has_value());
  EXPECT_EQ(row[2], "x");
  EXPECT_EQ(row[3], "");
}

TEST(CopyText, DecodesEscapes) {
  Row row;
  // Bytes PostgreSQL 15 printed for COPY (SELECT E'a\tb\nc\\d', E'\\N', E'\x01') TO STDOUT:
  // only \b \f \n \r \t \v and backslash are escaped; other control bytes come raw.
  parse_row("a\\tb\\nc\\\\d\t\\\\N\t\x01", row);
  ASSERT_EQ(row.size(), 3u);
  EXPECT_EQ(row[0], "a\tb\nc\\d");
  EXPECT_EQ(row[1], "\\N");  // the two-character text \N, not NULL
  EXPECT_EQ(row[2], std::string("\x01", 1));
  // Fields without escapes are views into the line itself; decoded ones live in the scratch strings.
  EXPECT_EQ(row[0]->data(), scratch[0].data());
}

TEST(CopyText, ReadsOctalHexAndOtherEscapes) {
  // Escapes COPY FROM accepts; decoding them keeps the parser total.
  Row row;
  parse_row("\\x41\\x4a\\101\\b\\f\\r\\v\\q", row);
  ASSERT_EQ(row.size(), 1u);
  EXPECT_EQ(row[0], std::string("AJA\b\f\r\vq"));
}

TEST(CopyText, ReusesTheRowAndShrinksIt) {
  Row row;
  parse_row("a\tb\tc", row);
  parse_row("\\N", row);
  ASSERT_EQ(row.size(), 1u);
  EXPECT_FALSE(row[0].has_value());
}

TEST(CopyText, RejectsADanglingBackslash) {
  Row row;
  EXPECT_THROW(parse_row("abc\\", row), std::invalid_argument);
}

TEST(CopyText, UnescapedFieldsAreViewsOfTheLine) {
  Row row;
  const std::string line = "12\tab c\t\\N\tx\\ty\t";
  parse_row(line, row);
  ASSERT_EQ(row.size(), 5u);
  EXPECT_EQ(row[0]->data(), line.data());
  EXPECT_EQ(row[1]->data(), line.data() + 3);
  EXPECT_EQ(*row[1], "ab c");
  EXPECT_FALSE(row[2].has_value());
  EXPECT_EQ(*row[3], "x\ty");
  EXPECT_EQ(*row[4], "");
  // Many escaped fields in one row: the scratch strings grow without moving the earlier ones.
  std::string wide;
  for (int i = 0; i < 100; ++i) wide += "a\\\\long enough not to fit a small string " + std::to_string(i) + "\t";
  wide.pop_back();
  parse_row(wide, row);
  ASSERT_EQ(row.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(*row[i], "a\\long enough not to fit a small string " + std::to_string(i));
}
