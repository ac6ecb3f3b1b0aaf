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
