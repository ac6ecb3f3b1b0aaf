// Redis Cluster. Not written to yet (issue 12 §2): a cluster node is recognised before anything is
// written, and refused in one line by every command that talks to Redis.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <string>

#include "harness.h"

using namespace harness;
using namespace std::chrono_literals;

TEST(Cluster, ANodeIsRefusedInOneLineBeforeAnythingIsWritten) {
  Redis node;
  node.extra_args = {"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"};
  node.start(false);
  // One master serving every slot, so that a write would otherwise succeed.
  redis_command(node, {"CLUSTER", "ADDSLOTSRANGE", "0", "16383"});
  ASSERT_TRUE(wait_until([&] { return node.info("cluster", "cluster_enabled") == "1"; }, 10s));
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)");
  const std::string says = "is a Redis Cluster node (cluster_enabled:1): walstream does not write to a Redis Cluster";
  auto run = run_walstream(s.args(node), {}, 30s);
  EXPECT_EQ(run.code, 1) << run.output;
  EXPECT_NE(run.output.find(says), std::string::npos) << run.output;
  auto tail = run_walstream({"tail", "--redis", node.url(), "--prefix", s.prefix, "public.t"}, {}, 30s);
  EXPECT_NE(tail.code, 0) << tail.output;
  EXPECT_NE(tail.output.find(says), std::string::npos) << tail.output;
  auto status = run_walstream({"status", "--pg", s.conninfo, "--redis", node.url(), "--slot", s.slot}, {}, 30s);
  EXPECT_EQ(status.code, 1) << status.output;
  EXPECT_NE(status.output.find(says), std::string::npos) << status.output;
  EXPECT_EQ(redis_command(node, {"DBSIZE"}).at(0), "0");
}
