// Redis Cluster's key space: slots of keys, hash tags, the slot map of CLUSTER SLOTS, MOVED and ASK.
// The expected slots and the CLUSTER SLOTS reply were taken from a real cluster: Debian's
// redis-server 7.0.15, 3 masters + 3 replicas made by `redis-cli --cluster create … --cluster-replicas 1`,
// each value from `redis-cli -p <port> CLUSTER KEYSLOT <key>` (cluster_map_test checks ~1000 more live).
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "cluster_slots.h"
#include "reply_nodes.h"

using namespace walstream;

namespace {

// CLUSTER SLOTS of that cluster (raw RESP, as read from the socket of 127.0.0.1:17001) after slot 100
// was moved from 17001 to 17002 with CLUSTER SETSLOT 100 NODE: 17001 serves 0-99 and 101-5460.
const std::string kClusterSlotsReply =
    "*5\r\n*4\r\n:0\r\n:99\r\n*4\r\n$9\r\n127.0.0.1\r\n:17001\r\n$40\r\n"
    "8b6b1ed0c6280c272a7b0cff76cd2998a9e1a398\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:17006\r\n$40\r\n"
    "710d4362c7078e02f84dde186f6d54b7186d545a\r\n*0\r\n*4\r\n:100\r\n:100\r\n*4\r\n$9\r\n127.0.0.1\r\n"
    ":17002\r\n$40\r\n1c2ba5aa5394c4ef177a092a5bc8922209ca93f7\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n"
    ":17004\r\n$40\r\n998bdc99c8a3c9279919559efc60c3135e8d6496\r\n*0\r\n*4\r\n:101\r\n:5460\r\n*4\r\n"
    "$9\r\n127.0.0.1\r\n:17001\r\n$40\r\n8b6b1ed0c6280c272a7b0cff76cd2998a9e1a398\r\n*0\r\n*4\r\n$9\r\n"
    "127.0.0.1\r\n:17006\r\n$40\r\n710d4362c7078e02f84dde186f6d54b7186d545a\r\n*0\r\n*4\r\n:5461\r\n"
    ":10922\r\n*4\r\n$9\r\n127.0.0.1\r\n:17002\r\n$40\r\n1c2ba5aa5394c4ef177a092a5bc8922209ca93f7\r\n"
    "*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:17004\r\n$40\r\n998bdc99c8a3c9279919559efc60c3135e8d6496\r\n*0\r\n"
    "*4\r\n:10923\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:17003\r\n$40\r\n"
    "869ebe1dad516a5afb61c29a185d35a3cad1dc91\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:17005\r\n$40\r\n"
    "9ae6a426e7831cb30f781639895da470f4ccf1ab\r\n*0\r\n";

ReplyTree parse_resp(const std::string& bytes) {
  ReplyNodes nodes;
  EXPECT_TRUE(nodes.feed(bytes.data(), bytes.size()));
  auto reply = nodes.next();
  if (!reply) throw std::runtime_error("incomplete RESP");
  return to_reply_tree(*reply);
}

RedisEndpoint at(int port) { return {"127.0.0.1", port}; }

ReplyTree integer(long long v) {
  ReplyTree t;
  t.type = ReplyTree::Type::Integer;
  t.integer = v;
  return t;
}
ReplyTree string(std::string s) {
  ReplyTree t;
  t.type = ReplyTree::Type::String;
  t.text = std::move(s);
  return t;
}
ReplyTree array(std::vector<ReplyTree> elements) {
  ReplyTree t;
  t.type = ReplyTree::Type::Array;
  t.elements = std::move(elements);
  return t;
}
ReplyTree node(ReplyTree host, int port) { return array({std::move(host), integer(port), string("id")}); }
ReplyTree range(int first, int last, int master_port) {
  return array({integer(first), integer(last), node(string("127.0.0.1"), master_port)});
}

}  // namespace

TEST(ClusterSlots, Crc16IsXmodem) {
  EXPECT_EQ(crc16("123456789"), 0x31C3);  // the check value of CRC-16/XMODEM (and of the cluster spec)
  EXPECT_EQ(crc16(""), 0);
  EXPECT_EQ(crc16("A"), 0x58E5);
}

TEST(ClusterSlots, KeySlotsAreTheServersOnes) {
  // CLUSTER KEYSLOT on the real cluster (see the top of this file).
  EXPECT_EQ(key_slot("foo"), 12182);
  EXPECT_EQ(key_slot("bar"), 5061);
  EXPECT_EQ(key_slot("123456789"), 12739);
  EXPECT_EQ(key_slot(""), 0);
  EXPECT_EQ(key_slot("walstream:public.users"), 3531);
  EXPECT_EQ(key_slot("walstream:{public.users}:staging"), 4906);
  EXPECT_EQ(key_slot("h\xC3\xA9llo"), 11061);                  // "héllo", UTF-8
  EXPECT_EQ(key_slot("\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E"), 12788);  // "日本語", UTF-8
  EXPECT_EQ(key_slot("{}"), 15257);
  EXPECT_EQ(key_slot("}{"), 12793);
  EXPECT_EQ(key_slot("{"), 4092);
  EXPECT_EQ(key_slot("}"), 12090);
  EXPECT_EQ(key_slot("a}b"), 7866);
}

TEST(ClusterSlots, HashTagsAreTheSpecsOnes) {
  // The specification's examples, with the server's slots.
  EXPECT_EQ(key_slot("{user1000}.following"), 3443);
  EXPECT_EQ(key_slot("{user1000}.followers"), 3443);
  EXPECT_EQ(hash_tag("{user1000}.following"), "user1000");
  // An empty first tag: the whole key is hashed.
  EXPECT_EQ(key_slot("foo{}{bar}"), 8363);
  EXPECT_EQ(hash_tag("foo{}{bar}"), std::nullopt);
  EXPECT_EQ(key_slot("foo{}{bar}"), crc16("foo{}{bar}") % 16384);
  // The tag is "{bar" (from the first '{' to the first '}').
  EXPECT_EQ(key_slot("foo{{bar}}zap"), 4015);
  EXPECT_EQ(hash_tag("foo{{bar}}zap"), "{bar");
  // Only the first tag counts: "bar".
  EXPECT_EQ(key_slot("foo{bar}{zap}"), 5061);
  EXPECT_EQ(key_slot("foo{bar}{zap}"), key_slot("bar"));
  EXPECT_EQ(key_slot("x{y}"), 12222);
  EXPECT_EQ(key_slot("{a{b}x"), 13340);
  EXPECT_EQ(key_slot("a{b"), 13340);  // no '}' after the '{': the whole key
  EXPECT_EQ(hash_tag("a{b"), std::nullopt);
  EXPECT_EQ(hash_tag("nothing"), std::nullopt);
}

TEST(ClusterSlots, HashTagForPutsAnotherKeyIntoTheSameSlot) {
  EXPECT_EQ(hash_tag_for("{user1000}.following"), "{user1000}");
  EXPECT_EQ(hash_tag_for("walstream:public.users"), "{walstream:public.users}");
  EXPECT_EQ(hash_tag_for("foo{{bar}}zap"), "{{bar}");
  EXPECT_EQ(hash_tag_for("a{b"), "{a{b}");  // a '{' alone is fine inside a tag
  for (std::string key : {"walstream:public.users", "{user1000}.following", "foo{{bar}}zap", "foo{bar}{zap}", "a{b",
                          "h\xC3\xA9llo", "x", "{x}", "walstream:__offsets"}) {
    auto tag = hash_tag_for(key);
    for (std::string suffix : {"", ":staging", ":{other}", "}"}) {
      EXPECT_EQ(key_slot(tag + suffix), key_slot(key)) << key << " / " << tag + suffix;
    }
  }
}

TEST(ClusterSlots, HashTagForSaysWhenNoTagCanWork) {
  // The whole key is hashed and holds a '}': no tag can (a tag ends at its first '}').
  for (std::string key : {"a}b", "foo{}{bar}", "{}", "}{", "}", "x{}"}) {
    EXPECT_FALSE(hash_tag_possible(key)) << key;
    try {
      hash_tag_for(key);
      ADD_FAILURE() << key << ": no exception";
    } catch (const std::invalid_argument& e) {
      std::string what = e.what();
      EXPECT_NE(what.find(key), std::string::npos) << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    }
  }
  EXPECT_FALSE(hash_tag_possible(""));
  EXPECT_THROW(hash_tag_for(""), std::invalid_argument);
  EXPECT_TRUE(hash_tag_possible("{a}b}"));  // a valid tag "a": the later '}' does not matter
  EXPECT_EQ(hash_tag_for("{a}b}"), "{a}");
}

TEST(ClusterSlots, SlotMapOfARealClusterSlotsReply) {
  auto map = SlotMap::from_cluster_slots(parse_resp(kClusterSlotsReply));
  ASSERT_EQ(map.ranges().size(), 5u);
  EXPECT_TRUE(map.covers_all());
  EXPECT_EQ(map.masters(), (std::vector<RedisEndpoint>{at(17001), at(17002), at(17003)}));
  EXPECT_EQ(map.master_of(0), at(17001));
  EXPECT_EQ(map.master_of(99), at(17001));
  EXPECT_EQ(map.master_of(100), at(17002));
  EXPECT_EQ(map.master_of(101), at(17001));
  EXPECT_EQ(map.master_of(5460), at(17001));
  EXPECT_EQ(map.master_of(5461), at(17002));
  EXPECT_EQ(map.master_of(10922), at(17002));
  EXPECT_EQ(map.master_of(10923), at(17003));
  EXPECT_EQ(map.master_of(16383), at(17003));
  EXPECT_EQ(map.master_of(16384), std::nullopt);
  // The server answered MOVED 12182 127.0.0.1:17003 to SET foo on 17001.
  EXPECT_EQ(map.master_of_key("foo"), at(17003));
  const auto& r = map.ranges()[1];
  EXPECT_EQ(r.first, 100);
  EXPECT_EQ(r.last, 100);
  EXPECT_EQ(r.replicas, (std::vector<RedisEndpoint>{at(17004)}));
  EXPECT_EQ(map.ranges()[4].replicas, (std::vector<RedisEndpoint>{at(17005)}));
}

TEST(ClusterSlots, SlotMapSaysWhenSlotsAreNotCovered) {
  auto tree = array({range(0, 5460, 7001), range(5462, 16383, 7002)});
  auto map = SlotMap::from_cluster_slots(tree);
  EXPECT_FALSE(map.covers_all());
  EXPECT_EQ(map.master_of(5461), std::nullopt);
  EXPECT_EQ(map.master_of(5462), at(7002));
  EXPECT_EQ(map.masters().size(), 2u);
  EXPECT_FALSE(SlotMap::from_cluster_slots(array({})).covers_all());
  EXPECT_FALSE(SlotMap().covers_all());
  EXPECT_EQ(SlotMap().master_of(0), std::nullopt);
  // Out of order ranges are sorted; one master with several ranges is one master.
  auto split = SlotMap::from_cluster_slots(array({range(8000, 16383, 7001), range(0, 7999, 7002)}));
  EXPECT_TRUE(split.covers_all());
  EXPECT_EQ(split.masters(), (std::vector<RedisEndpoint>{at(7002), at(7001)}));
  auto same = SlotMap::from_cluster_slots(array({range(0, 10, 7001), range(11, 16383, 7001)}));
  EXPECT_TRUE(same.covers_all());
  EXPECT_EQ(same.masters().size(), 1u);
}

TEST(ClusterSlots, AnUnknownHostIsTheOneAsked) {
  ReplyTree nil;  // NULL endpoint: behind a load balancer the node does not know
  auto tree = array({array({integer(0), integer(16383), node(nil, 7001), node(string(""), 7002)})});
  auto map = SlotMap::from_cluster_slots(tree, "10.1.2.3");
  EXPECT_EQ(map.master_of(0), (RedisEndpoint{"10.1.2.3", 7001}));
  EXPECT_EQ(map.ranges()[0].replicas, (std::vector<RedisEndpoint>{{"10.1.2.3", 7002}}));
  auto ipv6 = SlotMap::from_cluster_slots(array({array({integer(0), integer(16383), node(string("::1"), 7001)})}));
  EXPECT_EQ(ipv6.master_of(1), (RedisEndpoint{"::1", 7001}));
}

TEST(ClusterSlots, MalformedRepliesAreOneLine) {
  ReplyTree error;
  error.type = ReplyTree::Type::Error;
  error.text = "ERR This instance has cluster support disabled";
  std::vector<ReplyTree> bad = {
      error,
      string("OK"),
      array({array({integer(0), integer(16383)})}),                      // no master
      array({array({integer(0), integer(16384), node(string("h"), 1)})}),  // slot out of range
      array({array({integer(-1), integer(5), node(string("h"), 1)})}),
      array({array({integer(9), integer(5), node(string("h"), 1)})}),  // first > last
      array({array({string("0"), integer(5), node(string("h"), 1)})}),
      array({array({integer(0), integer(5), node(string("h"), 0)})}),  // port 0
      array({array({integer(0), integer(5), array({string("h")})})}),
      array({array({integer(0), integer(5), node(string("?"), 7001)})}),  // '?': no usable endpoint
      array({range(0, 100, 7001), range(100, 16383, 7002)}),              // overlap
  };
  for (std::size_t i = 0; i < bad.size(); ++i) {
    try {
      SlotMap::from_cluster_slots(bad[i]);
      ADD_FAILURE() << "reply " << i << " accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
  }
}

TEST(ClusterSlots, RedirectionsParse) {
  // As the real cluster answered: SET foo on 17001, GET bar on 17001 with slot 5061 migrating to 17002.
  EXPECT_EQ(parse_redirect("MOVED 12182 127.0.0.1:17003"),
            (Redirect{Redirect::Kind::Moved, 12182, {"127.0.0.1", 17003}}));
  EXPECT_EQ(parse_redirect("ASK 5061 127.0.0.1:17002"), (Redirect{Redirect::Kind::Ask, 5061, {"127.0.0.1", 17002}}));
  EXPECT_EQ(parse_redirect("-MOVED 3999 127.0.0.1:6381\r\n"),
            (Redirect{Redirect::Kind::Moved, 3999, {"127.0.0.1", 6381}}));
  EXPECT_EQ(parse_redirect("MOVED 0 redis-2.internal:7000"),
            (Redirect{Redirect::Kind::Moved, 0, {"redis-2.internal", 7000}}));
  EXPECT_EQ(parse_redirect("MOVED 16383 127.0.0.1:1"), (Redirect{Redirect::Kind::Moved, 16383, {"127.0.0.1", 1}}));
  // IPv6: no brackets, the port after the last ':'.
  EXPECT_EQ(parse_redirect("ASK 3999 ::1:6381"), (Redirect{Redirect::Kind::Ask, 3999, {"::1", 6381}}));
  EXPECT_EQ(parse_redirect("MOVED 3999 2001:db8::7:6381"),
            (Redirect{Redirect::Kind::Moved, 3999, {"2001:db8::7", 6381}}));
  // An unknown endpoint: an empty host (the one the command was sent to).
  EXPECT_EQ(parse_redirect("MOVED 3999 :6381"), (Redirect{Redirect::Kind::Moved, 3999, {"", 6381}}));
}

TEST(ClusterSlots, OtherErrorsAreNotRedirections) {
  for (std::string text : {"", "ERR unknown command", "CROSSSLOT Keys in request don't hash to the same slot",
                           "TRYAGAIN Multiple keys request during rehashing of slot",
                           "CLUSTERDOWN Hash slot not served",
                           "MOVED", "MOVED ", "MOVED 3999", "MOVED 3999 127.0.0.1", "MOVED 3999 127.0.0.1:",
                           "MOVED 16384 127.0.0.1:6381", "MOVED -1 127.0.0.1:6381", "MOVED x 127.0.0.1:6381",
                           "MOVED 3999 127.0.0.1:0", "MOVED 3999 127.0.0.1:65536", "MOVED 3999 127.0.0.1:63a",
                           "MOVED 3999 127.0.0.1:6381 extra", "moved 3999 127.0.0.1:6381", "ASKING",
                           "ASK 3999  127.0.0.1:6381"}) {
    EXPECT_EQ(parse_redirect(text), std::nullopt) << text;
  }
}
