#include "metrics.h"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>

#ifndef WALSTREAM_VERSION
#define WALSTREAM_VERSION "unknown"
#endif

namespace walstream::metrics {
namespace {

// A label value: backslash, double quote and newline escaped (the text format's rule).
std::string escape(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// Floats as Prometheus reads them: shortest round-trip form, +Inf/-Inf/NaN spelled its way.
std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

const auto kStart = std::chrono::system_clock::now();

// /proc/self/stat: utime and stime (fields 14, 15) in clock ticks; /proc/self/statm: resident pages.
void process_metrics(std::string& out) {
  double cpu = 0;
  {
    std::ifstream stat("/proc/self/stat");
    std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    // The command name (field 2) is in parentheses and may hold spaces: count fields after its ')'.
    auto close = all.rfind(')');
    if (close != std::string::npos) {
      std::istringstream rest(all.substr(close + 2));
      std::string field;
      unsigned long long utime = 0, stime = 0;
      for (int i = 3; i <= 15 && rest >> field; ++i) {
        if (i == 14) utime = std::stoull(field);
        if (i == 15) stime = std::stoull(field);
      }
      cpu = static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
    }
  }
  double rss = 0;
  {
    std::ifstream statm("/proc/self/statm");
    unsigned long long size = 0, resident = 0;
    if (statm >> size >> resident) rss = static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
  }
  header(out, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
  fmt::format_to(std::back_inserter(out), "process_cpu_seconds_total {}\n", number(cpu));
  header(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  fmt::format_to(std::back_inserter(out), "process_resident_memory_bytes {}\n", number(rss));
  header(out, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
  auto start = std::chrono::duration<double>(kStart.time_since_epoch()).count();
  fmt::format_to(std::back_inserter(out), "process_start_time_seconds {}\n", number(std::floor(start)));
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<std::uint64_t>[bounds_.size() + 1]) {
  for (std::size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::observe(double v) {
  std::size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  counts_[i].store(counts_[i].load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  sum_.store(sum_.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
}

std::vector<std::uint64_t> Histogram::cumulative() const {
  std::vector<std::uint64_t> out(bounds_.size() + 1);
  std::uint64_t running = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) out[i] = running += counts_[i].load(std::memory_order_relaxed);
  return out;
}

std::string_view role_name(Role r) {
  switch (r) {
    case Role::Starting:
      return "starting";
    case Role::Snapshot:
      return "snapshot";
    case Role::Active:
      return "active";
    case Role::Standby:
      return "standby";
    case Role::Retrying:
      return "retrying";
    case Role::Stopping:
      return "stopping";
  }
  return "unknown";
}

Registry::Registry()
    : chunk_seconds({0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}) {
  safe_wal_size.set(std::nan(""));
}

std::string Registry::render() const {
  std::string out;
  out.reserve(4096);
  auto it = std::back_inserter(out);
  auto plain = [&](std::string_view name, std::string_view type, std::string_view help, double v) {
    header(out, name, type, help);
    fmt::format_to(it, "{} {}\n", name, number(v));
  };
  auto family = [&](std::string_view name, std::string_view type, std::string_view help, std::string_view label,
                    const auto& f) {
    header(out, name, type, help);
    f.each([&](const std::string& value, const auto& series) {
      fmt::format_to(it, "{}{{{}=\"{}\"}} {}\n", name, label, escape(value), number(static_cast<double>(series.value())));
    });
  };

  header(out, "walstream_build_info", "gauge", "walstream's version; always 1.");
  fmt::format_to(it, "walstream_build_info{{version=\"{}\"}} 1\n", escape(WALSTREAM_VERSION));
  auto r = role.load();
  plain("walstream_active", "gauge", "1 while this instance holds the slot (streams, or takes the initial snapshot).",
        r == Role::Active || r == Role::Snapshot ? 1 : 0);
  family("walstream_changes_total", "counter", "Row changes published, by table.", "table", changes);
  plain("walstream_transactions_total", "counter", "Transactions received from PostgreSQL.",
        static_cast<double>(transactions.value()));
  plain("walstream_entries_written_total", "counter", "Stream entries Redis stored.",
        static_cast<double>(entries_written.value()));
  plain("walstream_replays_skipped_total", "counter", "Entries not written again because Redis already had them.",
        static_cast<double>(replays_skipped.value()));
  family("walstream_snapshot_rows_total", "counter", "Rows published by snapshots, by table.", "table", snapshot_rows);
  family("walstream_reconnects_total", "counter", "Sessions retried after an error, by the server that failed.",
         "server", reconnects);
  plain("walstream_redis_wait_shortfalls_total", "counter",
        "WAIT answers with fewer replicas than --redis-wait asks for.", static_cast<double>(wait_shortfalls.value()));

  plain("walstream_retention_trimmed_entries_total", "counter", "Entries --retention acked trimmed.",
        static_cast<double>(retention_trimmed.value()));
  plain("walstream_retention_unread_trimmed_entries_total", "counter",
        "Entries --maxlen trimmed before a consumer group read them.",
        static_cast<double>(retention_unread_trimmed.value()));
  plain("walstream_retention_retain_max_trimmed_entries_total", "counter",
        "Entries a consumer group still needed that --retain-max trimmed.",
        static_cast<double>(retention_retain_max_trimmed.value()));
  header(out, "walstream_redis_chunk_seconds", "histogram", "Time from sending a MULTI/EXEC chunk to Redis's answer.");
  auto counts = chunk_seconds.cumulative();
  for (std::size_t i = 0; i < chunk_seconds.bounds().size(); ++i) {
    fmt::format_to(it, "walstream_redis_chunk_seconds_bucket{{le=\"{}\"}} {}\n", number(chunk_seconds.bounds()[i]),
                   counts[i]);
  }
  fmt::format_to(it, "walstream_redis_chunk_seconds_bucket{{le=\"+Inf\"}} {}\n", counts.back());
  fmt::format_to(it, "walstream_redis_chunk_seconds_sum {}\n", number(chunk_seconds.sum()));
  fmt::format_to(it, "walstream_redis_chunk_seconds_count {}\n", counts.back());

  plain("walstream_lag_bytes", "gauge", "WAL the slot is behind: pg_current_wal_lsn() - confirmed_flush_lsn.",
        lag_bytes.value());
  plain("walstream_lag_seconds", "gauge",
        "Now - commit time of the last transaction stored in Redis, while behind; 0 when caught up.",
        lag_seconds.value());
  int status = wal_status.load();
  header(out, "walstream_slot_wal_status", "gauge", "1 for the slot's current wal_status, 0 for the others.");
  if (status >= 0) {
    for (int i = 0; i < 4; ++i) {
      fmt::format_to(it, "walstream_slot_wal_status{{wal_status=\"{}\"}} {}\n", kWalStatuses[i], i == status ? 1 : 0);
    }
  }
  header(out, "walstream_slot_safe_wal_size_bytes", "gauge",
         "WAL that can still be written before the slot is lost (absent without max_slot_wal_keep_size).");
  if (!std::isnan(safe_wal_size.value())) {
    fmt::format_to(it, "walstream_slot_safe_wal_size_bytes {}\n", number(safe_wal_size.value()));
  }
  family("walstream_lag_warning", "gauge", "1 while that warning holds (--lag-warn bytes or seconds, unreserved WAL).",
         "reason", lag_warning);
  process_metrics(out);
  return out;
}

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace walstream::metrics
