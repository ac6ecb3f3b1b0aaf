// The exposition the metrics endpoint serves (promtool checks a live one in the integration test).
#include "metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

using namespace walstream::metrics;

namespace {

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

}  // namespace

TEST(MetricsRender, FamiliesLabelsAndEscaping) {
  Registry r;
  r.changes.at("public.users").add(3);
  r.changes.at("public.\"odd\\name\"").add();
  r.transactions.add(2);
  r.role.store(Role::Active);
  r.lag_bytes.set(4096);
  auto text = r.render();
  EXPECT_TRUE(has_line(text, "# TYPE walstream_changes_total counter")) << text;
  EXPECT_TRUE(has_line(text, "walstream_changes_total{table=\"public.users\"} 3")) << text;
  EXPECT_TRUE(has_line(text, "walstream_changes_total{table=\"public.\\\"odd\\\\name\\\"\"} 1")) << text;
  EXPECT_TRUE(has_line(text, "walstream_transactions_total 2")) << text;
  EXPECT_TRUE(has_line(text, "walstream_active 1")) << text;
  EXPECT_TRUE(has_line(text, "walstream_lag_bytes 4096")) << text;
  EXPECT_TRUE(has_line(text, "walstream_build_info{version=\"0.1.0\"} 1")) << text;
  // No slot read yet: no wal_status series, no safe_wal_size sample.
  EXPECT_EQ(text.find("\nwalstream_slot_wal_status{"), std::string::npos) << text;
  EXPECT_EQ(text.find("\nwalstream_slot_safe_wal_size_bytes "), std::string::npos) << text;
  r.wal_status.store(2);
  r.safe_wal_size.set(1 << 20);
  text = r.render();
  EXPECT_TRUE(has_line(text, "walstream_slot_wal_status{wal_status=\"unreserved\"} 1")) << text;
  EXPECT_TRUE(has_line(text, "walstream_slot_wal_status{wal_status=\"reserved\"} 0")) << text;
  EXPECT_TRUE(has_line(text, "walstream_slot_safe_wal_size_bytes 1048576")) << text;
}

TEST(MetricsRender, ActiveWhileStreamingOrSnapshottingOnly) {
  Registry r;
  for (auto [role, active] : {std::pair{Role::Starting, 0}, {Role::Snapshot, 1}, {Role::Active, 1}, {Role::Standby, 0},
                              {Role::Retrying, 0}, {Role::Stopping, 0}}) {
    r.role.store(role);
    EXPECT_TRUE(has_line(r.render(), "walstream_active " + std::to_string(active))) << role_name(role);
  }
}

TEST(MetricsRender, HistogramBucketsAreCumulative) {
  Registry r;
  r.chunk_seconds.observe(0.0002);
  r.chunk_seconds.observe(0.003);
  r.chunk_seconds.observe(0.003);
  r.chunk_seconds.observe(60);
  auto text = r.render();
  EXPECT_TRUE(has_line(text, "walstream_redis_chunk_seconds_bucket{le=\"0.0005\"} 1")) << text;
  EXPECT_TRUE(has_line(text, "walstream_redis_chunk_seconds_bucket{le=\"0.0025\"} 1")) << text;
  EXPECT_TRUE(has_line(text, "walstream_redis_chunk_seconds_bucket{le=\"0.005\"} 3")) << text;
  EXPECT_TRUE(has_line(text, "walstream_redis_chunk_seconds_bucket{le=\"10\"} 3")) << text;
  EXPECT_TRUE(has_line(text, "walstream_redis_chunk_seconds_bucket{le=\"+Inf\"} 4")) << text;
  EXPECT_TRUE(has_line(text, "walstream_redis_chunk_seconds_count 4")) << text;
  EXPECT_TRUE(has_line(text, "walstream_redis_chunk_seconds_sum 60.0062")) << text;
  // A value on a bound falls in that bucket (le: less or equal).
  Histogram h({1, 2});
  h.observe(1);
  EXPECT_EQ(h.cumulative()[0], 1u);
}
