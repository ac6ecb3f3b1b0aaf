// Waiting on the stream writer from inside the session: wait_until keeps both connections serviced
// (Redis replies, PostgreSQL status updates) until its condition holds. Shared by the change
// pipeline and the initial snapshot, so back-pressure works the same in both. No I/O of its own.
#pragma once

#include <functional>

#include "stream_writer.h"

namespace walstream {

using WaitUntil = std::function<void(const std::function<bool()>&)>;

// Learns the stream's last ID in Redis before its first entry in this connection (the replay filter).
inline void ensure_hwm(ChangeWriter& writer, ChangeWriter::Handle stream, const WaitUntil& wait_until) {
  if (writer.hwm_known(stream)) return;
  writer.request_hwm(stream);
  wait_until([&] { return writer.hwm_known(stream); });
}

// Bounded memory whatever the transaction or table size: at most one chunk in flight and one being
// built, so a full chunk waits for the one in flight before it goes.
inline void send_if_full(ChangeWriter& writer, const WaitUntil& wait_until) {
  if (!writer.chunk_full()) return;
  wait_until([&] { return !writer.in_flight(); });
  writer.send_chunk();
}

// Sends everything built (and the checkpoint of the last position) and waits until Redis has
// stored it.
inline void drain(ChangeWriter& writer, const WaitUntil& wait_until) {
  for (;;) {
    wait_until([&] { return !writer.in_flight(); });
    if (writer.chunk_empty() && !writer.checkpoint_due()) return;
    writer.send_chunk();
  }
}

}  // namespace walstream
