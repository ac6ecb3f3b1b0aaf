#include "reference.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <regex>
#include <set>

namespace harness {

std::vector<RefChange> reference_changes(const std::string& conninfo, const std::string& slot) {
  auto rows = query(conninfo, fmt::format("SELECT lsn, xid, data FROM pg_logical_slot_get_changes('{}', NULL, NULL, "
                                          "'include-xids', '1')",
                                          slot));
  static const std::regex change_re(R"(^table (public\.\w+): (INSERT|UPDATE|DELETE): .*?id\[integer\]:(-?\d+))");
  std::vector<RefChange> ref;
  for (const auto& r : rows) {
    std::smatch m;
    if (!std::regex_search(*r[2], m, change_re)) continue;
    const char* op = m[2] == "INSERT" ? "c" : m[2] == "UPDATE" ? "u" : "d";
    ref.push_back({*r[0], *r[1], m[1], op, fmt::format(R"({{"id":{}}})", m[3].str())});
  }
  return ref;
}

// The streams hold exactly the reference's changes, in its order, each once, IDs <commit>-1…n.
void expect_same_changes(const std::vector<RefChange>& ref, const std::vector<Got>& got, const std::string& logs) {
  std::set<std::string> ids;
  for (const auto& g : got) ids.insert(g.raw_id);
  EXPECT_EQ(ids.size(), got.size()) << "an ID appears in two streams";
  std::map<std::string, int> got_lsns;
  for (const auto& g : got) got_lsns[g.fields.count("lsn") ? g.fields.at("lsn") : "?"]++;
  std::set<std::string> ref_lsns;
  std::size_t missing = 0, doubled = 0, extra = 0;
  std::string examples;
  for (const auto& c : ref) {
    ref_lsns.insert(c.lsn);
    if (!got_lsns.count(c.lsn) && ++missing <= 5) examples += fmt::format("missing {} {} {}\n", c.lsn, c.table, c.op);
  }
  for (const auto& [lsn, n] : got_lsns) {
    if (n > 1 && ++doubled <= 5) examples += fmt::format("lsn {} stored {} times\n", lsn, n);
    if (!ref_lsns.count(lsn) && ++extra <= 5) examples += fmt::format("unexpected lsn {}\n", lsn);
  }
  EXPECT_EQ(missing, 0u) << examples;
  EXPECT_EQ(doubled, 0u) << examples;
  EXPECT_EQ(extra, 0u) << examples;
  ASSERT_EQ(got.size(), ref.size()) << examples << logs;
  std::map<std::string, std::uint64_t> commit_of_xid;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const auto& c = ref[i];
    const auto& g = got[i];
    auto field = [&](const char* f) { return g.fields.count(f) ? g.fields.at(f) : std::string("<absent>"); };
    ASSERT_TRUE(field("lsn") == c.lsn && field("table") == c.table && field("op") == c.op && field("xid") == c.xid &&
                field("key") == c.key)
        << "change " << i << " of " << ref.size() << ": expected " << c.lsn << " " << c.table << " " << c.op << " xid "
        << c.xid << " " << c.key << ", the stream has " << g.raw_id << " " << field("lsn") << " " << field("table")
        << " " << field("op") << " xid " << field("xid") << " " << field("key");
    auto [it, fresh] = commit_of_xid.emplace(c.xid, g.id.lsn);
    ASSERT_EQ(it->second, g.id.lsn) << "xid " << c.xid << " has two commit LSNs";
    ASSERT_EQ(g.id.seq, fresh ? 1 : got[i - 1].id.seq + 1) << g.raw_id;
  }
}

std::vector<Got> merged(const Redis& r, const std::vector<std::string>& keys) {
  std::vector<std::pair<int, std::string>> at;
  for (const auto& k : keys) at.emplace_back(r.port(), k);
  return merged(at);
}

std::vector<Got> merged(const std::vector<std::pair<int, std::string>>& port_and_key) {
  std::vector<Got> got;
  for (const auto& [port, key] : port_and_key) {
    for (auto& e : xrange(port, key)) got.push_back({parse_entry_id(e.id), e.id, std::move(e.fields)});
  }
  std::sort(got.begin(), got.end(), [](const Got& a, const Got& b) { return a.id < b.id; });
  return got;
}

}  // namespace harness
