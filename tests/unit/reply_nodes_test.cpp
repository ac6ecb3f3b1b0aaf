// Reply nodes against reply bytes captured from Redis 7 (tests/fixtures/capture_resp_replies.py),
// whole, split at every byte, and with later bytes arriving while a reply is still in use.
#include "reply_nodes.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <vector>

namespace walstream {
namespace {

std::string unhex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// Name -> reply bytes, in capture order.
const std::vector<std::pair<std::string, std::string>>& fixture() {
  static const auto replies = [] {
    std::ifstream in(std::string(WALSTREAM_FIXTURES) + "/resp_replies.txt");
    if (!in) throw std::runtime_error("cannot open resp_replies.txt");
    std::vector<std::pair<std::string, std::string>> out;
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream fields(line);
      std::string name, hex;
      fields >> name >> hex;
      out.emplace_back(name, unhex(hex));
    }
    return out;
  }();
  return replies;
}

const std::string& bytes(const std::string& name) {
  for (const auto& [n, b] : fixture()) {
    if (n == name) return b;
  }
  throw std::runtime_error("no reply named " + name + " in resp_replies.txt");
}

// A reply in one line: "text" for a string, +status, -error, :integer, nil, [elements].
std::string show(Reply r) {
  switch (r.type()) {
    case ReplyType::String: return "\"" + std::string(r.text()) + "\"";
    case ReplyType::Status: return "+" + std::string(r.text());
    case ReplyType::Error: return "-" + std::string(r.text());
    case ReplyType::Integer: return ":" + std::to_string(r.integer());
    case ReplyType::Nil: return "nil";
    case ReplyType::Array: {
      std::string s = "[";
      for (std::size_t i = 0; i < r.size(); ++i) s += (i ? ", " : "") + show(r[i]);
      return s + "]";
    }
  }
  return "?";
}

// Feeds the pieces one after the other and shows every reply that completes.
std::vector<std::string> parse(const std::vector<std::string_view>& pieces) {
  ReplyNodes nodes;
  std::vector<std::string> out;
  for (auto piece : pieces) {
    EXPECT_TRUE(nodes.feed(piece.data(), piece.size()));
    while (auto r = nodes.next()) out.push_back(show(*r));
    EXPECT_FALSE(nodes.failed()) << nodes.error();
  }
  return out;
}

std::string one(const std::string& name) {
  auto shown = parse({bytes(name)});
  EXPECT_EQ(shown.size(), 1u) << name;
  return shown.empty() ? "" : shown[0];
}

std::string all_replies() {
  std::string all;
  for (const auto& [name, b] : fixture()) all += b;
  return all;
}

TEST(ReplyNodes, StatusRepliesOfAChunk) {
  EXPECT_EQ(one("pong"), "+PONG");
  EXPECT_EQ(one("multi_ok"), "+OK");
  EXPECT_EQ(one("queued"), "+QUEUED");
}

TEST(ReplyNodes, ExecArrayWithAnErrorElement) {
  EXPECT_EQ(one("exec_with_error"),
            "[\"5-1\", -ERR The ID specified in XADD is equal or smaller than the target stream top item, :1]");
}

TEST(ReplyNodes, ErrorReplies) {
  EXPECT_EQ(one("queue_refused"), "-ERR wrong number of arguments for 'xadd' command");
  EXPECT_EQ(one("execabort_previous"), "-EXECABORT Transaction discarded because of previous errors.");
  EXPECT_EQ(one("execabort_oom"),
            "-EXECABORT Transaction discarded because of: OOM command not allowed when used memory > 'maxmemory'.");
  EXPECT_EQ(one("xinfo_no_such_key"), "-ERR no such key");
}

TEST(ReplyNodes, NilArrayNilStringAndEmptyArray) {
  EXPECT_EQ(one("exec_nil"), "nil");
  EXPECT_EQ(one("get_nil"), "nil");
  EXPECT_EQ(one("empty_array"), "[]");
}

// first-entry and last-entry are arrays inside the reply: the elements after them must still be
// found at their own positions.
TEST(ReplyNodes, XinfoStreamWithNestedArrays) {
  EXPECT_EQ(one("xinfo_stream"),
            "[\"length\", :1, \"radix-tree-keys\", :1, \"radix-tree-nodes\", :2, \"last-generated-id\", \"5-1\", "
            "\"max-deleted-entry-id\", \"0-0\", \"entries-added\", :1, \"recorded-first-entry-id\", \"5-1\", "
            "\"groups\", :0, \"first-entry\", [\"5-1\", [\"f\", \"v\"]], \"last-entry\", [\"5-1\", [\"f\", \"v\"]]]");
}

TEST(ReplyNodes, LongExecArray) {
  std::string expected = "[";
  for (int i = 1; i <= 200; ++i) expected += (i > 1 ? ", \"1-" : "\"1-") + std::to_string(i) + "\"";
  EXPECT_EQ(one("exec_200"), expected + "]");
}

TEST(ReplyNodes, RepliesFedTogetherComeOutOneByOneInOrder) {
  auto shown = parse({all_replies()});
  ASSERT_EQ(shown.size(), fixture().size());
  for (std::size_t i = 0; i < shown.size(); ++i) EXPECT_EQ(shown[i], one(fixture()[i].first)) << fixture()[i].first;
}

// A read can end anywhere, including inside an array whose first elements are already parsed.
TEST(ReplyNodes, SplitAtEveryByte) {
  const std::string all = all_replies();
  const auto whole = parse({all});
  for (std::size_t k = 1; k < all.size(); ++k) {
    std::string_view v(all);
    ASSERT_EQ(parse({v.substr(0, k), v.substr(k)}), whole) << "split at byte " << k;
  }
}

TEST(ReplyNodes, OneByteAtATime) {
  const std::string all = all_replies();
  std::vector<std::string_view> pieces;
  for (std::size_t i = 0; i < all.size(); ++i) pieces.push_back(std::string_view(all).substr(i, 1));
  EXPECT_EQ(parse(pieces), parse({all}));
}

// hiredis hands out pointers into its read buffer and moves what is left in it to the front once
// 1 kB is consumed: a reply's texts must not be those pointers.
TEST(ReplyNodes, TextSurvivesTheNextFeed) {
  ReplyNodes nodes;
  const auto& exec = bytes("exec_200");
  ASSERT_GT(exec.size(), 1024u);
  ASSERT_TRUE(nodes.feed(exec.data(), exec.size()));
  auto r = nodes.next();
  ASSERT_TRUE(r);
  const auto& more = bytes("xinfo_stream");
  ASSERT_TRUE(nodes.feed(more.data(), more.size()));
  ASSERT_EQ(r->size(), 200u);
  for (std::size_t i = 0; i < 200; ++i) EXPECT_EQ((*r)[i].text(), "1-" + std::to_string(i + 1));
}

TEST(ReplyNodes, TextSurvivesTheRestOfTheBufferMovingUp) {
  ReplyNodes nodes;
  std::string both = bytes("exec_200") + bytes("xinfo_stream");
  ASSERT_TRUE(nodes.feed(both.data(), both.size()));
  auto r = nodes.next();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->size(), 200u);
  for (std::size_t i = 0; i < 200; ++i) EXPECT_EQ((*r)[i].text(), "1-" + std::to_string(i + 1));
}

TEST(ReplyNodes, ViewsOfTheTypesAskedWrong) {
  ReplyNodes nodes;
  std::string b = bytes("exec_with_error");
  ASSERT_TRUE(nodes.feed(b.data(), b.size()));
  auto r = nodes.next();
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->is(ReplyType::Array));
  EXPECT_EQ(r->text(), "");
  EXPECT_EQ(r->integer(), 0);
  EXPECT_EQ((*r)[0].size(), 0u);
  EXPECT_EQ((*r)[2].text(), "");
  EXPECT_EQ((*r)[2].integer(), 1);
}

TEST(ReplyNodes, NotRespFailsWithHiredisMessage) {
  ReplyNodes nodes;
  std::string junk = "?what\r\n";
  ASSERT_TRUE(nodes.feed(junk.data(), junk.size()));
  EXPECT_FALSE(nodes.next());
  EXPECT_TRUE(nodes.failed());
  EXPECT_NE(std::string(nodes.error()).find("Protocol error"), std::string::npos) << nodes.error();
  const auto& pong = bytes("pong");
  EXPECT_FALSE(nodes.feed(pong.data(), pong.size()));
  EXPECT_FALSE(nodes.next());
}

TEST(ReplyNodes, NothingFedNoReply) {
  ReplyNodes nodes;
  EXPECT_FALSE(nodes.next());
  EXPECT_FALSE(nodes.failed());
}

}  // namespace
}  // namespace walstream
