// Redis Cluster's key space, pure: which of the 16384 hash slots a key is in (CRC16 with hash tags),
// hash tags that keep related keys in one slot, the slot map of a CLUSTER SLOTS reply, and the MOVED
// and ASK redirections a node answers with. No sockets: the caller runs the commands.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "redis_url.h"

struct redisReply;

namespace walstream {

class Reply;
class RedisReply;

inline constexpr std::uint16_t kClusterSlots = 16384;

// CRC16 as the Redis Cluster specification defines it (XMODEM: polynomial 0x1021, initial value 0,
// no reflection, no final XOR); crc16("123456789") == 0x31C3.
std::uint16_t crc16(std::string_view bytes);

// The hash tag of a key: what lies between its first '{' and the first '}' after that, when not
// empty; nullopt when the key has no such tag (then the whole key is hashed).
std::optional<std::string_view> hash_tag(std::string_view key);

// The slot of a key, as CLUSTER KEYSLOT says: crc16(tag or whole key) mod 16384.
std::uint16_t key_slot(std::string_view key);

// Whether some "{…}" tag names the slot of `key`: false when the whole key is hashed (no valid tag)
// and contains a '}' (a tag cannot hold one), or is empty (a tag cannot be empty).
bool hash_tag_possible(std::string_view key);

// A "{…}" prefix that puts any key it starts into the slot of `key`: key's own tag when it has one
// ("{user1000}.following" -> "{user1000}"), else "{key}". Throws std::invalid_argument with a
// one-line reason when !hash_tag_possible(key).
std::string hash_tag_for(std::string_view key);

// ---------------------------------------------------------------- CLUSTER SLOTS

// A reply tree of our own, so that the slot map is built the same way from hiredis's redisReply
// (RedisClient) and from ReplyNodes (the writer's parser), and from trees a test writes by hand.
struct ReplyTree {
  enum class Type : std::uint8_t { String, Integer, Array, Nil, Error };
  Type type = Type::Nil;
  std::string text;  // String, Error
  long long integer = 0;
  std::vector<ReplyTree> elements;  // Array
};
ReplyTree to_reply_tree(const Reply& reply);
ReplyTree to_reply_tree(const redisReply& reply);
ReplyTree to_reply_tree(const RedisReply& reply);

struct SlotRange {
  std::uint16_t first = 0;
  std::uint16_t last = 0;  // inclusive
  RedisEndpoint master;
  std::vector<RedisEndpoint> replicas;
};

class SlotMap {
 public:
  SlotMap() : SlotMap(std::vector<SlotRange>{}) {}  // no slot served
  // From a CLUSTER SLOTS reply: [[first, last, [host, port, id, …], [replica…]…]…]. A node whose host
  // is NULL or "" (unknown to the cluster) is at `asked_host`, the host the command was sent to.
  // Throws std::invalid_argument with a one-line reason for an error reply, a malformed one,
  // slots out of range or ranges that overlap.
  static SlotMap from_cluster_slots(const ReplyTree& reply, std::string_view asked_host = "127.0.0.1");
  explicit SlotMap(std::vector<SlotRange> ranges);  // same checks

  // The master serving a slot (slot < 16384), or nullopt when no node serves it.
  std::optional<RedisEndpoint> master_of(std::uint16_t slot) const;
  std::optional<RedisEndpoint> master_of_key(std::string_view key) const { return master_of(key_slot(key)); }
  // The distinct masters, in slot order of their first range.
  std::vector<RedisEndpoint> masters() const;
  // Every slot 0..16383 has a master.
  bool covers_all() const;
  const std::vector<SlotRange>& ranges() const { return ranges_; }  // sorted by first slot

 private:
  static constexpr std::uint16_t kNone = 0xFFFF;
  std::vector<SlotRange> ranges_;
  std::array<std::uint16_t, kClusterSlots> index_{};  // slot -> index into ranges_, or kNone
};

// ---------------------------------------------------------------- redirections

struct Redirect {
  enum class Kind : std::uint8_t { Moved, Ask };
  Kind kind = Kind::Moved;
  std::uint16_t slot = 0;
  RedisEndpoint endpoint;  // host "" when the node does not know it: the host the command went to
  bool operator==(const Redirect&) const = default;
};

// "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381" (an error reply's text, with or without
// its leading '-'); IPv6 hosts come without brackets, the port after the last ':'. nullopt for
// anything else.
std::optional<Redirect> parse_redirect(std::string_view error);

}  // namespace walstream
