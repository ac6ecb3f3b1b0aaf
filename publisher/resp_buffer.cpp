#include "resp_buffer.h"

#include <algorithm>

namespace walstream {

// Doubling: a chunk's buffer reaches its size in a few steps and keeps it for the next chunks.
void RespBuffer::grow(std::size_t n) { buf_.resize(std::max(buf_.size() * 2, size_ + n + 4096)); }

}  // namespace walstream
