#include "cluster_slots.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <stdexcept>

#include <fmt/format.h>

#include "redis_client.h"
#include "reply_nodes.h"

namespace walstream {

namespace {

// The table of CRC16/XMODEM for each byte value, computed bit by bit from the polynomial.
constexpr std::array<std::uint16_t, 256> make_crc16_table() {
  std::array<std::uint16_t, 256> table{};
  for (unsigned byte = 0; byte < 256; ++byte) {
    unsigned crc = byte << 8;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1;
    table[byte] = static_cast<std::uint16_t>(crc & 0xFFFF);
  }
  return table;
}

constexpr auto kCrc16Table = make_crc16_table();

// The part of a key that is hashed: its tag, or the whole key.
std::string_view hashed_part(std::string_view key) { return hash_tag(key).value_or(key); }

}  // namespace

std::uint16_t crc16(std::string_view bytes) {
  std::uint16_t crc = 0;
  for (unsigned char c : bytes) {
    crc = static_cast<std::uint16_t>((crc << 8) ^ kCrc16Table[((crc >> 8) ^ c) & 0xFF]);
  }
  return crc;
}

std::optional<std::string_view> hash_tag(std::string_view key) {
  auto open = key.find('{');
  if (open == std::string_view::npos) return std::nullopt;
  auto close = key.find('}', open + 1);
  if (close == std::string_view::npos || close == open + 1) return std::nullopt;
  return key.substr(open + 1, close - open - 1);
}

std::uint16_t key_slot(std::string_view key) { return crc16(hashed_part(key)) % kClusterSlots; }

bool hash_tag_possible(std::string_view key) {
  auto hashed = hashed_part(key);
  return !hashed.empty() && hashed.find('}') == std::string_view::npos;
}

std::string hash_tag_for(std::string_view key) {
  if (!hash_tag_possible(key)) {
    throw std::invalid_argument(
        key.empty() ? std::string("no hash tag puts a key into the slot of the empty key (a tag cannot be empty)")
                    : fmt::format("no hash tag puts a key into the slot of '{}': it has no valid {{…}} tag and "
                                  "contains '}}', which a tag cannot hold",
                                  key));
  }
  return fmt::format("{{{}}}", hashed_part(key));
}

// ---------------------------------------------------------------- reply trees

ReplyTree to_reply_tree(const Reply& reply) {
  ReplyTree t;
  switch (reply.type()) {
    case ReplyType::String:
    case ReplyType::Status:
      t.type = ReplyTree::Type::String;
      t.text = reply.text();
      break;
    case ReplyType::Error:
      t.type = ReplyTree::Type::Error;
      t.text = reply.text();
      break;
    case ReplyType::Integer:
      t.type = ReplyTree::Type::Integer;
      t.integer = reply.integer();
      break;
    case ReplyType::Array:
      t.type = ReplyTree::Type::Array;
      t.elements.reserve(reply.size());
      for (std::size_t i = 0; i < reply.size(); ++i) t.elements.push_back(to_reply_tree(reply[i]));
      break;
    case ReplyType::Nil:
      break;
  }
  return t;
}

ReplyTree to_reply_tree(const redisReply& reply) {
  ReplyTree t;
  switch (reply.type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
      t.type = ReplyTree::Type::String;
      t.text.assign(reply.str ? reply.str : "", reply.len);
      break;
    case REDIS_REPLY_ERROR:
      t.type = ReplyTree::Type::Error;
      t.text.assign(reply.str ? reply.str : "", reply.len);
      break;
    case REDIS_REPLY_INTEGER:
      t.type = ReplyTree::Type::Integer;
      t.integer = reply.integer;
      break;
    case REDIS_REPLY_ARRAY:
      t.type = ReplyTree::Type::Array;
      t.elements.reserve(reply.elements);
      for (std::size_t i = 0; i < reply.elements; ++i) t.elements.push_back(to_reply_tree(*reply.element[i]));
      break;
    default:
      break;
  }
  return t;
}

ReplyTree to_reply_tree(const RedisReply& reply) { return to_reply_tree(*reply.raw()); }

// ---------------------------------------------------------------- slot map

namespace {

[[noreturn]] void malformed(const std::string& what) {
  throw std::invalid_argument("unexpected CLUSTER SLOTS reply: " + what);
}

std::uint16_t slot_number(const ReplyTree& t, std::size_t range) {
  if (t.type != ReplyTree::Type::Integer || t.integer < 0 || t.integer >= kClusterSlots) {
    malformed(fmt::format("range {} has a slot that is not an integer in 0..16383", range));
  }
  return static_cast<std::uint16_t>(t.integer);
}

RedisEndpoint node_endpoint(const ReplyTree& t, std::size_t range, std::string_view asked_host) {
  if (t.type != ReplyTree::Type::Array || t.elements.size() < 2) {
    malformed(fmt::format("range {} has a node that is not [host, port, …]", range));
  }
  const auto& host = t.elements[0];
  const auto& port = t.elements[1];
  if (port.type != ReplyTree::Type::Integer || port.integer < 1 || port.integer > 65535) {
    malformed(fmt::format("range {} has a node without a port in 1..65535", range));
  }
  RedisEndpoint e;
  e.port = static_cast<int>(port.integer);
  if (host.type == ReplyTree::Type::Nil || (host.type == ReplyTree::Type::String && host.text.empty())) {
    e.host = asked_host;  // the node's endpoint is unknown to the cluster: the one the client used
  } else if (host.type == ReplyTree::Type::String && host.text != "?") {
    e.host = host.text;
  } else {
    malformed(fmt::format("range {} has a node whose endpoint is unknown ('?': no hostname announced)", range));
  }
  return e;
}

}  // namespace

SlotMap SlotMap::from_cluster_slots(const ReplyTree& reply, std::string_view asked_host) {
  if (reply.type == ReplyTree::Type::Error) throw std::invalid_argument("CLUSTER SLOTS failed: " + reply.text);
  if (reply.type != ReplyTree::Type::Array) malformed("not an array");
  std::vector<SlotRange> ranges;
  ranges.reserve(reply.elements.size());
  for (std::size_t i = 0; i < reply.elements.size(); ++i) {
    const auto& r = reply.elements[i];
    if (r.type != ReplyTree::Type::Array || r.elements.size() < 3) {
      malformed(fmt::format("range {} is not [first, last, master, replica…]", i));
    }
    SlotRange range;
    range.first = slot_number(r.elements[0], i);
    range.last = slot_number(r.elements[1], i);
    range.master = node_endpoint(r.elements[2], i, asked_host);
    for (std::size_t k = 3; k < r.elements.size(); ++k) {
      range.replicas.push_back(node_endpoint(r.elements[k], i, asked_host));
    }
    ranges.push_back(std::move(range));
  }
  return SlotMap(std::move(ranges));
}

SlotMap::SlotMap(std::vector<SlotRange> ranges) : ranges_(std::move(ranges)) {
  index_.fill(kNone);
  std::sort(ranges_.begin(), ranges_.end(), [](const SlotRange& a, const SlotRange& b) { return a.first < b.first; });
  for (std::size_t i = 0; i < ranges_.size(); ++i) {
    const auto& r = ranges_[i];
    if (r.first > r.last || r.last >= kClusterSlots) {
      throw std::invalid_argument(fmt::format("slot range {}-{} is not within 0..16383", r.first, r.last));
    }
    if (i > 0 && r.first <= ranges_[i - 1].last) {
      throw std::invalid_argument(fmt::format("slot ranges {}-{} and {}-{} overlap", ranges_[i - 1].first,
                                              ranges_[i - 1].last, r.first, r.last));
    }
    for (unsigned s = r.first; s <= r.last; ++s) index_[s] = static_cast<std::uint16_t>(i);
  }
}

std::optional<RedisEndpoint> SlotMap::master_of(std::uint16_t slot) const {
  if (slot >= kClusterSlots || index_[slot] == kNone) return std::nullopt;
  return ranges_[index_[slot]].master;
}

std::vector<RedisEndpoint> SlotMap::masters() const {
  std::vector<RedisEndpoint> out;
  for (const auto& r : ranges_) {
    if (std::find(out.begin(), out.end(), r.master) == out.end()) out.push_back(r.master);
  }
  return out;
}

bool SlotMap::covers_all() const {
  return std::none_of(index_.begin(), index_.end(), [](std::uint16_t i) { return i == kNone; });
}

// ---------------------------------------------------------------- redirections

std::optional<Redirect> parse_redirect(std::string_view error) {
  if (!error.empty() && error.front() == '-') error.remove_prefix(1);
  Redirect r;
  if (error.substr(0, 6) == "MOVED ") {
    r.kind = Redirect::Kind::Moved;
    error.remove_prefix(6);
  } else if (error.substr(0, 4) == "ASK ") {
    r.kind = Redirect::Kind::Ask;
    error.remove_prefix(4);
  } else {
    return std::nullopt;
  }
  while (!error.empty() && (error.back() == '\r' || error.back() == '\n')) error.remove_suffix(1);
  auto space = error.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  auto slot_text = error.substr(0, space);
  auto address = error.substr(space + 1);
  unsigned slot = 0;
  auto [slot_end, slot_ec] = std::from_chars(slot_text.data(), slot_text.data() + slot_text.size(), slot);
  if (slot_ec != std::errc() || slot_end != slot_text.data() + slot_text.size() || slot_text.empty() ||
      slot >= kClusterSlots) {
    return std::nullopt;
  }
  auto colon = address.rfind(':');
  if (colon == std::string_view::npos || address.find(' ') != std::string_view::npos) return std::nullopt;
  auto port_text = address.substr(colon + 1);
  int port = 0;
  auto [port_end, port_ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_ec != std::errc() || port_end != port_text.data() + port_text.size() || port < 1 || port > 65535) {
    return std::nullopt;
  }
  r.slot = static_cast<std::uint16_t>(slot);
  r.endpoint.host = address.substr(0, colon);
  r.endpoint.port = port;
  return r;
}

}  // namespace walstream
