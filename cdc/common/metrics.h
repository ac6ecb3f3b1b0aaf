// The process's metrics, rendered in the Prometheus text format (0.0.4). Written by the thread that
// streams, read by the thread that serves /metrics: every value is one atomic, written by a single
// thread (a relaxed load and store, no locked instruction on the hot path) and read whole.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace walstream::metrics {

class Counter {
 public:
  void add(std::uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  std::uint64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

class Gauge {
 public:
  void set(double v) { v_.store(v, std::memory_order_relaxed); }
  double value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0};
};

// One metric name with one label; series appear at their first use and stay.
template <typename T>
class Family {
 public:
  T& at(std::string_view label) {
    std::lock_guard lock(mu_);
    auto it = series_.find(label);
    if (it == series_.end()) it = series_.emplace(std::string(label), std::make_unique<T>()).first;
    return *it->second;
  }
  template <typename F>
  void each(F&& f) const {
    std::lock_guard lock(mu_);
    for (const auto& [label, v] : series_) f(label, *v);
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<T>, std::less<>> series_;
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Cumulative counts per bound, then the +Inf count (== count()).
  std::vector<std::uint64_t> cumulative() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;  // one per bound, then +Inf (not cumulative)
  std::atomic<double> sum_{0};
};

// What the instance is doing, for walstream_active (Snapshot and Active: it holds the slot) and /readyz
// (Active only: streaming).
enum class Role { Starting, Snapshot, Active, Standby, Retrying, Stopping };
std::string_view role_name(Role r);

struct Registry {
  Registry();

  std::atomic<Role> role{Role::Starting};
  Family<Counter> changes;        // walstream_changes_total{table}
  Family<Counter> snapshot_rows;  // walstream_snapshot_rows_total{table}
  Family<Counter> reconnects;     // walstream_reconnects_total{server}
  Counter transactions, entries_written, replays_skipped, wait_shortfalls;
  // --retention acked: entries trimmed; of them, entries a group had not read (lost to --maxlen, or
  // taken by --retain-max from an abandoned group).
  Counter retention_trimmed, retention_unread_trimmed, retention_retain_max_trimmed;
  Histogram chunk_seconds;
  Gauge lag_bytes, lag_seconds;
  Gauge safe_wal_size;  // NaN: none (max_slot_wal_keep_size = -1) or not read yet
  std::atomic<int> wal_status{-1};  // index into kWalStatuses, -1 not read yet
  Family<Gauge> lag_warning;        // walstream_lag_warning{reason}

  static constexpr const char* kWalStatuses[] = {"reserved", "extended", "unreserved", "lost"};

  // The whole exposition, with process_* from /proc/self.
  std::string render() const;
};

// The process's registry.
Registry& registry();

}  // namespace walstream::metrics
