// Redis replies parsed by hiredis's reader into one flat list of nodes that is reused from reply to
// reply, instead of a malloc'd redisReply tree per reply. Pure: bytes in, typed views out; no sockets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct redisReader;

namespace walstream {

enum class ReplyType : std::uint8_t { String, Array, Integer, Nil, Status, Error };

class ReplyNodes;

// A reply, or an element of one. Valid until the next call of ReplyNodes::next().
class Reply {
 public:
  ReplyType type() const;
  bool is(ReplyType t) const { return type() == t; }
  std::string_view text() const;  // of a string, status or error; empty for the other types
  long long integer() const;      // of an integer; 0 for the other types
  std::size_t size() const;       // an array's element count; 0 for the other types
  Reply operator[](std::size_t i) const;  // element i of an array; i < size()

 private:
  friend class ReplyNodes;
  Reply(const ReplyNodes* nodes, std::size_t node) : nodes_(nodes), node_(node) {}
  const ReplyNodes* nodes_;
  std::size_t node_;
};

class ReplyNodes {
 public:
  ReplyNodes();  // throws std::bad_alloc
  ~ReplyNodes();
  // hiredis calls back with a pointer to this object: it stays where it is.
  ReplyNodes(const ReplyNodes&) = delete;
  ReplyNodes& operator=(const ReplyNodes&) = delete;

  // Takes a copy of bytes read from Redis. False once the reader has failed (see error()).
  bool feed(const char* data, std::size_t n);
  // The next complete reply, or nullopt when more bytes are needed or the bytes are not RESP
  // (then failed() is true and error() says why). Invalidates the reply it returned before.
  std::optional<Reply> next();
  bool failed() const;
  const char* error() const;

 private:
  friend class Reply;
  struct Node {
    ReplyType type;
    std::size_t size = 0;    // Array: element count. String, Status, Error: text length.
    std::size_t first = 0;   // Array: its elements' node numbers start at elements_[first].
                             // String, Status, Error: its text starts at text_[first].
    long long integer = 0;
  };
  struct Callbacks;  // hiredis's create functions (reply_nodes.cpp)

  std::unique_ptr<redisReader, void (*)(redisReader*)> reader_;
  std::vector<Node> nodes_;
  std::vector<std::size_t> elements_;
  // Texts are copied: hiredis hands out pointers into its read buffer, which it compacts or
  // reallocates before a reply split across reads is complete.
  std::string text_;
  bool returned_reply_ = false;  // nodes_ hold a reply that next() returned
};

inline ReplyType Reply::type() const { return nodes_->nodes_[node_].type; }

inline std::string_view Reply::text() const {
  const auto& n = nodes_->nodes_[node_];
  if (n.type != ReplyType::String && n.type != ReplyType::Status && n.type != ReplyType::Error) return {};
  return {nodes_->text_.data() + n.first, n.size};
}

inline long long Reply::integer() const { return nodes_->nodes_[node_].integer; }

inline std::size_t Reply::size() const {
  const auto& n = nodes_->nodes_[node_];
  return n.type == ReplyType::Array ? n.size : 0;
}

inline Reply Reply::operator[](std::size_t i) const {
  return Reply(nodes_, nodes_->elements_[nodes_->nodes_[node_].first + i]);
}

}  // namespace walstream
