// COPY text-format rows as PostgreSQL 15 writes them (COPY (SELECT …) TO STDOUT), decoded back.
#include <gtest/gtest.h>

#include "copy_text.h"

using walstream::copy_text::parse_row;
using Row = std::vector<std::optional<std::string>>;

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
