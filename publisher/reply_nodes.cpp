#include "reply_nodes.h"

#include <hiredis/read.h>

#include <cstdint>
#include <new>

namespace walstream {
namespace {

// hiredis keeps what a create function returns as the value's handle, passes it back as
// task->parent->obj to the value's elements, and hands the root's out from redisReaderGetReply.
// Ours is the node number plus one: never null, since null means "out of memory" to hiredis.
void* handle_of(std::size_t node) { return reinterpret_cast<void*>(static_cast<std::uintptr_t>(node) + 1); }
std::size_t node_of(const void* handle) {
  return static_cast<std::size_t>(reinterpret_cast<std::uintptr_t>(handle) - 1);
}

}  // namespace

// The create functions run inside hiredis (C): nothing may unwind through it, so an allocation
// failure returns null, which hiredis reports as its own out-of-memory error.
struct ReplyNodes::Callbacks {
  static ReplyNodes& self(const redisReadTask* t) { return *static_cast<ReplyNodes*>(t->privdata); }

  // Appends the node of the value hiredis has just parsed and links it into its array, if any.
  static void* add(const redisReadTask* t, const Node& node) noexcept try {
    auto& nodes = self(t);
    std::size_t n = nodes.nodes_.size();
    nodes.nodes_.push_back(node);
    if (t->parent) {
      const auto& array = nodes.nodes_[node_of(t->parent->obj)];
      nodes.elements_[array.first + static_cast<std::size_t>(t->idx)] = n;
    }
    return handle_of(n);
  } catch (...) {
    return nullptr;
  }

  static void* string(const redisReadTask* t, char* str, std::size_t len) noexcept try {
    ReplyType type = t->type == REDIS_REPLY_ERROR    ? ReplyType::Error
                     : t->type == REDIS_REPLY_STATUS ? ReplyType::Status
                                                     : ReplyType::String;
    auto& text = self(t).text_;
    Node node{type, len, text.size()};
    text.append(str, len);  // str points into hiredis's read buffer: see text_
    return add(t, node);
  } catch (...) {
    return nullptr;
  }

  static void* array(const redisReadTask* t, int elements) noexcept try {
    // Slots for the elements' node numbers, filled in as hiredis parses them (possibly after
    // later reads); nested arrays make the elements' nodes themselves non-contiguous.
    auto& slots = self(t).elements_;
    Node node{ReplyType::Array, static_cast<std::size_t>(elements), slots.size()};
    slots.resize(slots.size() + node.size);
    return add(t, node);
  } catch (...) {
    return nullptr;
  }

  static void* integer(const redisReadTask* t, long long value) noexcept {
    return add(t, Node{ReplyType::Integer, 0, 0, value});
  }

  static void* nil(const redisReadTask* t) noexcept { return add(t, Node{ReplyType::Nil}); }

  // Nodes live until the next reply is asked for; hiredis has nothing to free.
  static void free_object(void*) noexcept {}

  // hiredis takes a non-const pointer but never writes through it.
  static inline redisReplyObjectFunctions functions = {string, array, integer, nil, free_object};
};

ReplyNodes::ReplyNodes() : reader_(redisReaderCreateWithFunctions(&Callbacks::functions), redisReaderFree) {
  if (!reader_) throw std::bad_alloc();
  reader_->privdata = this;
}

ReplyNodes::~ReplyNodes() = default;

bool ReplyNodes::feed(const char* data, std::size_t n) { return redisReaderFeed(reader_.get(), data, n) == REDIS_OK; }

std::optional<Reply> ReplyNodes::next() {
  if (returned_reply_) {
    // Only after a whole reply was handed out: the nodes made by a call that returned nothing
    // belong to a reply whose remaining bytes are still to come.
    nodes_.clear();
    elements_.clear();
    text_.clear();
    returned_reply_ = false;
  }
  void* handle = nullptr;
  if (redisReaderGetReply(reader_.get(), &handle) != REDIS_OK || handle == nullptr) return std::nullopt;
  returned_reply_ = true;
  return Reply(this, node_of(handle));
}

bool ReplyNodes::failed() const { return reader_->err != 0; }

const char* ReplyNodes::error() const { return reader_->errstr; }

}  // namespace walstream
