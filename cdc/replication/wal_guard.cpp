#include "wal_guard.h"

#include <fmt/format.h>

namespace walstream {

std::vector<WalGuard::Line> WalGuard::check(Clock::time_point now, const Reading& r) {
  std::vector<Line> out;
  auto seconds = [](std::chrono::milliseconds d) { return static_cast<double>(d.count()) / 1000; };
  bool bytes_over = warn_.bytes > 0 && r.lag_bytes > 0 && static_cast<std::uint64_t>(r.lag_bytes) > warn_.bytes;
  update(Bytes, bytes_over, now,
         fmt::format("lag: slot '{}' is {} of WAL behind the server, over --lag-warn {}; PostgreSQL keeps that WAL "
                     "until walstream confirms it (wal_status {})",
                     slot_, bytes_text(r.lag_bytes), bytes_text(static_cast<long long>(warn_.bytes)),
                     r.wal_status.empty() ? "unknown" : r.wal_status),
         fmt::format("lag: slot '{}' is back under --lag-warn {} ({} behind)", slot_,
                     bytes_text(static_cast<long long>(warn_.bytes)), bytes_text(std::max(r.lag_bytes, 0LL))),
         out);
  bool time_over = warn_.time.count() > 0 && r.lag_seconds > seconds(warn_.time);
  update(Seconds, time_over, now,
         fmt::format("lag: the oldest transaction not yet in Redis was committed {:.0f} s ago, over --lag-warn {:g} s",
                     r.lag_seconds, seconds(warn_.time)),
         fmt::format("lag: transactions reach Redis within --lag-warn {:g} s again ({:.1f} s)", seconds(warn_.time),
                     r.lag_seconds),
         out);
  update(Unreserved, r.wal_status == "unreserved", now,
         fmt::format("slot '{}' has wal_status = unreserved: the WAL it needs is past max_wal_size and PostgreSQL "
                     "may remove it at the next checkpoint, which loses the slot (then walstream stops and needs "
                     "--resnapshot); let walstream catch up, or raise max_slot_wal_keep_size",
                     slot_),
         fmt::format("slot '{}': wal_status is {} again", slot_, r.wal_status.empty() ? "unknown" : r.wal_status),
         out);
  return out;
}

void WalGuard::update(Reason reason, bool over, Clock::time_point now, std::string warning, std::string cleared,
                      std::vector<Line>& out) {
  auto& s = state_[reason];
  if (over) {
    if (!s.holds || now - s.said >= kRepeat) {
      out.emplace_back(log::Level::Warn, std::move(warning));
      s.said = now;
    }
    s.holds = true;
  } else if (s.holds) {
    out.emplace_back(log::Level::Info, std::move(cleared));
    s.holds = false;
  }
}

}  // namespace walstream
