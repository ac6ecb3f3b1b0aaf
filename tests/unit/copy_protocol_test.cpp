// CopyData envelope ('w', 'k', 'r') and LSN text form, from hand-built bytes.
#include "copy_protocol.h"

#include <gtest/gtest.h>

#include <memory>

namespace walstream::copy {
namespace {

using namespace std::string_literals;

std::string be64(std::uint64_t v) {
  std::string s;
  for (int shift = 56; shift >= 0; shift -= 8) s.push_back(static_cast<char>((v >> shift) & 0xff));
  return s;
}

// Parses a copy in a heap buffer of exactly its size, so ASan sees any read past the end.
ServerMessage parse_exact(std::string_view bytes) {
  auto buf = std::make_unique<char[]>(bytes.size());
  std::copy(bytes.begin(), bytes.end(), buf.get());
  return parse_server_message(std::string_view(buf.get(), bytes.size()));
}

std::size_t error_offset(std::string_view bytes) {
  try {
    parse_exact(bytes);
  } catch (const DecodeError& e) {
    return e.offset();
  }
  ADD_FAILURE() << "no DecodeError";
  return std::string::npos;
}

TEST(StatusUpdate, ExactBytes) {
  const StatusUpdate s{.written = 0x0102030405060708,
                       .flushed = 0x16B374D848,
                       .applied = 0,
                       .send_time = -2,
                       .reply_requested = true};
  const std::string expected = "r"s + "\x01\x02\x03\x04\x05\x06\x07\x08"s + "\x00\x00\x00\x16\xB3\x74\xD8\x48"s +
                               std::string(8, '\0') + std::string(7, '\xff') + "\xfe"s + "\x01"s;
  ASSERT_EQ(expected.size(), 34u);
  EXPECT_EQ(encode_status_update(s), expected);
}

TEST(StatusUpdate, NoReplyRequested) {
  const std::string bytes = encode_status_update(StatusUpdate{});
  EXPECT_EQ(bytes, "r"s + std::string(33, '\0'));
}

TEST(ServerMessage, XLogData) {
  const std::string payload = "B\x00\x01"s;
  const auto msg = parse_exact("w"s + be64(0x16B374D848) + be64(0x16B374D900) + be64(820638245000000) + payload);
  // parse_exact's buffer is gone: only compare what does not point into it.
  const auto& x = std::get<XLogData>(msg);
  EXPECT_EQ(x.data_start, 0x16B374D848u);
  EXPECT_EQ(x.wal_end, 0x16B374D900u);
  EXPECT_EQ(x.send_time, 820638245000000);
  EXPECT_EQ(x.payload.size(), payload.size());

  const std::string bytes = "w"s + be64(1) + be64(2) + be64(3) + payload;
  EXPECT_EQ(std::get<XLogData>(parse_server_message(bytes)).payload, payload);
}

TEST(ServerMessage, XLogDataWithEmptyPayload) {
  const auto x = std::get<XLogData>(parse_exact("w"s + be64(1) + be64(2) + be64(3)));
  EXPECT_TRUE(x.payload.empty());
}

TEST(ServerMessage, Keepalive) {
  const auto k = std::get<Keepalive>(parse_exact("k"s + be64(0xFFFFFFFF00000001) + be64(42) + "\x01"s));
  EXPECT_EQ(k.wal_end, 0xFFFFFFFF00000001u);
  EXPECT_EQ(k.send_time, 42);
  EXPECT_TRUE(k.reply_requested);
  EXPECT_FALSE(std::get<Keepalive>(parse_exact("k"s + be64(1) + be64(2) + "\x00"s)).reply_requested);
}

TEST(ServerMessage, Truncated) {
  const std::string w = "w"s + be64(1) + be64(2) + be64(3);
  for (std::size_t len = 0; len < w.size(); ++len) EXPECT_LE(error_offset(w.substr(0, len)), len);
  const std::string k = "k"s + be64(1) + be64(2) + "\x00"s;
  for (std::size_t len = 0; len < k.size(); ++len) EXPECT_LE(error_offset(k.substr(0, len)), len);
  EXPECT_EQ(error_offset(w.substr(0, 20)), 17u);  // inside sendTime
}

TEST(ServerMessage, KeepaliveTrailingBytes) {
  EXPECT_EQ(error_offset("k"s + be64(1) + be64(2) + "\x00\x00"s), 18u);
}

TEST(ServerMessage, UnknownTag) {
  EXPECT_EQ(error_offset("r"s + std::string(33, '\0')), 0u);
  EXPECT_EQ(error_offset("\0"s), 0u);
  EXPECT_EQ(error_offset(""), 0u);
}

TEST(Lsn, Format) {
  EXPECT_EQ(format_lsn(0), "0/0");
  EXPECT_EQ(format_lsn(0x16B374D848), "16/B374D848");
  EXPECT_EQ(format_lsn(0x1545580), "0/1545580");
  EXPECT_EQ(format_lsn(0x100000000), "1/0");
  EXPECT_EQ(format_lsn(UINT64_MAX), "FFFFFFFF/FFFFFFFF");
}

TEST(Lsn, Parse) {
  EXPECT_EQ(parse_lsn("0/0"), 0u);
  EXPECT_EQ(parse_lsn("16/B374D848"), 0x16B374D848u);
  EXPECT_EQ(parse_lsn("16/b374d848"), 0x16B374D848u);
  EXPECT_EQ(parse_lsn("00000016/0000ABCD"), 0x160000ABCDu);
  EXPECT_EQ(parse_lsn("FFFFFFFF/FFFFFFFF"), UINT64_MAX);
}

TEST(Lsn, RoundTrip) {
  for (std::uint64_t v : {0ULL, 1ULL, 0xFFFFFFFFULL, 0x100000000ULL, 0x16B374D848ULL, 0x8000000000000000ULL, ~0ULL}) {
    EXPECT_EQ(parse_lsn(format_lsn(v)), v) << format_lsn(v);
  }
}

TEST(Lsn, RejectsJunk) {
  for (const char* junk : {"", "/", "0", "0/", "/0", "0/0/0", "0//0", "G/0", "0/g", "123456789/0", "0/123456789",
                           " 0/0", "0/0 ", "+1/0", "-1/0", "1/-0", "0x1/0", "1/0x0", "1.5/0", "1/0\n"}) {
    EXPECT_THROW(parse_lsn(junk), std::invalid_argument) << '"' << junk << '"';
  }
  EXPECT_THROW(parse_lsn(std::string_view("0/0\0", 4)), std::invalid_argument);
}

}  // namespace
}  // namespace walstream::copy
