// The WAL guard: a slot nobody reads makes PostgreSQL keep WAL until the disk is full. walstream never
// drops data to save the disk; it tells people early. Pure: fed with readings of the slot, it says
// what to log and which warnings hold (walstream_lag_warning{reason}). `lost` is not its business:
// the session stops on it.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "log.h"
#include "units.h"

namespace walstream {

class WalGuard {
 public:
  using Clock = std::chrono::steady_clock;
  enum Reason { Bytes, Seconds, Unreserved };
  static constexpr std::array<std::string_view, 3> kReasons = {"bytes", "seconds", "unreserved"};
  // A warning that still holds is said again this often.
  static constexpr auto kRepeat = std::chrono::minutes(1);

  struct Reading {
    long long lag_bytes = 0;   // pg_current_wal_lsn() - confirmed_flush_lsn
    double lag_seconds = 0;    // now - commit time of the oldest transaction not yet stored
    std::string_view wal_status;  // pg_replication_slots.wal_status
  };
  using Line = std::pair<log::Level, std::string>;

  WalGuard(LagWarn thresholds, std::string slot) : warn_(thresholds), slot_(std::move(slot)) {}

  // The lines to log for this reading, in Reason order.
  std::vector<Line> check(Clock::time_point now, const Reading& r);
  bool holds(Reason reason) const { return state_[reason].holds; }

 private:
  struct State {
    bool holds = false;
    Clock::time_point said{};
  };
  void update(Reason reason, bool over, Clock::time_point now, std::string warning, std::string cleared,
              std::vector<Line>& out);

  LagWarn warn_;
  std::string slot_;
  std::array<State, 3> state_{};
};

}  // namespace walstream
