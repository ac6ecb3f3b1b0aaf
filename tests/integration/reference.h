// What the streams must hold, from an independent slot: a test_decoding slot made before walstream's
// sees every change of the load; the streams (on one Redis or spread over a cluster's masters) must
// hold exactly those, in commit order, each once, with IDs <commit LSN>-1…n. Shared by the failover,
// Sentinel and cluster tests.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "harness.h"

namespace harness {

// One change as the test_decoding slot saw it (tables with an integer `id` key).
struct RefChange {
  std::string lsn, xid, table, op, key;
};
// Every change of the reference slot, in commit order (consumes the slot).
std::vector<RefChange> reference_changes(const std::string& conninfo, const std::string& slot);

// One stream entry with its parsed ID.
struct Got {
  EntryId id;
  std::string raw_id;
  std::map<std::string, std::string> fields;
};
// Every entry of the streams, merged in ID order: on one node, or each stream on its own node (port).
std::vector<Got> merged(const Redis& r, const std::vector<std::string>& keys);
std::vector<Got> merged(const std::vector<std::pair<int, std::string>>& port_and_key);

// The streams hold exactly the reference's changes, in its order, each once, IDs <commit>-1…n, no ID
// in two streams.
void expect_same_changes(const std::vector<RefChange>& ref, const std::vector<Got>& got, const std::string& logs);

}  // namespace harness
