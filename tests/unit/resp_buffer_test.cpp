// RESP framing of commands, byte for byte as Redis reads them.
#include <gtest/gtest.h>

#include "resp_buffer.h"

using walstream::RespBuffer;

TEST(RespBuffer, FramesACommandAsAnArrayOfBulkStrings) {
  RespBuffer b;
  b.command(3);
  b.arg("XADD");
  b.arg("s");
  b.arg("");
  EXPECT_EQ(b.view(), "*3\r\n$4\r\nXADD\r\n$1\r\ns\r\n$0\r\n\r\n");
}

TEST(RespBuffer, IsBinarySafe) {
  RespBuffer b;
  std::string value("a\0\r\nb", 5);
  b.command(1);
  b.arg(value);
  EXPECT_EQ(b.view(), std::string("*1\r\n$5\r\na\0\r\nb\r\n", 15));
}

TEST(RespBuffer, GrowsPastItsCapacityAndKeepsEarlierBytes) {
  RespBuffer b;
  std::string big(100000, 'x');
  b.command(2);
  b.arg("SET");
  b.arg(big);
  ASSERT_EQ(b.size(), 4 + 9 + 9 + 100000 + 2);
  EXPECT_EQ(b.view().substr(0, 22), "*2\r\n$3\r\nSET\r\n$100000\r\n");
  EXPECT_EQ(b.view().substr(b.size() - 3), "x\r\n");
}

TEST(RespBuffer, ClearKeepsNothingAndAppendConcatenates) {
  RespBuffer a, b;
  a.command(1);
  a.arg("MULTI");
  b.command(1);
  b.arg("EXEC");
  a.append(b);
  EXPECT_EQ(a.view(), "*1\r\n$5\r\nMULTI\r\n*1\r\n$4\r\nEXEC\r\n");
  a.clear();
  EXPECT_TRUE(a.empty());
  a.command(1);
  a.arg("PING");
  EXPECT_EQ(a.view(), "*1\r\n$4\r\nPING\r\n");
}

// Lengths have a short path below 100 and std::to_chars above: both sides of each boundary.
TEST(RespBuffer, LengthsAroundDigitBoundaries) {
  for (std::size_t n : {0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 12345}) {
    RespBuffer b;
    std::string a(n, 'v');
    b.command(n);
    b.arg(a);
    // Built with append: GCC 12 at -O3 mistakes `"literal" + std::string` for an overlapping copy (-Wrestrict).
    std::string expected("*");
    expected.append(std::to_string(n)).append("\r\n$").append(std::to_string(n)).append("\r\n").append(a).append("\r\n");
    EXPECT_EQ(b.view(), expected) << n;
  }
}

TEST(RespBuffer, FramedPiecesAreCopiedAsTheyAre) {
  RespBuffer head;
  head.arg("XADD");
  head.arg("walstream:public.users");
  RespBuffer b;
  b.command(5);
  b.append_framed(head.view());
  b.arg("1-1");
  b.arg("op");
  b.append_framed("");
  b.arg("c");
  EXPECT_EQ(b.view(), "*5\r\n$4\r\nXADD\r\n$22\r\nwalstream:public.users\r\n$3\r\n1-1\r\n$2\r\nop\r\n$1\r\nc\r\n");
}

// Many small arguments past several growths, compared with framing done the slow way.
TEST(RespBuffer, ManyArgumentsAcrossGrowth) {
  RespBuffer b;
  std::string expected;
  for (std::size_t i = 0; i < 20000; ++i) {
    std::string a(i % 150, static_cast<char>('a' + i % 26));
    b.arg(a);
    expected.append("$").append(std::to_string(a.size())).append("\r\n").append(a).append("\r\n");
  }
  EXPECT_EQ(b.view(), expected);
}
