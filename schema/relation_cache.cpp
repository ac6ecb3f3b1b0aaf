#include "relation_cache.h"

#include <fmt/format.h>

#include <algorithm>

namespace walstream {
namespace {

// FNV-1a 64: stable across runs and machines, so a replay writes the same version id again.
std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

void finalize_table(TableInfo& table, const std::vector<std::string>& primary_key) {
  table.qualified = table.schema + "." + table.name;
  table.has_key = false;
  table.key_in_identity = true;
  for (auto& col : table.columns) {
    if (!primary_key.empty()) {
      col.key = std::find(primary_key.begin(), primary_key.end(), col.name) != primary_key.end();
    } else {
      // Without a primary key, an index replica identity still names the row; FULL does not.
      col.key = table.replident == 'i' && col.identity;
    }
    table.has_key = table.has_key || col.key;
    if (col.key && !col.identity) table.key_in_identity = false;
    col.json_member = json_member(col.name);
  }

  JsonWriter w;
  w.start_object();
  w.key("table");
  w.string(table.qualified);
  w.key("columns");
  w.start_array();
  for (const auto& col : table.columns) {
    w.start_object();
    w.key("name");
    w.string(col.name);
    w.key("type");
    w.string(col.type_name);
    w.key("oid");
    w.number(col.type_oid);
    w.key("key");
    w.boolean(col.key);
    w.end_object();
  }
  w.end_array();
  w.end_object();
  table.registry_json = w.view();
  table.version = fmt::format("{:016x}", fnv1a(table.registry_json));
}

const TableInfo& RelationCache::put(TableInfo table) {
  auto relid = table.relid;
  auto& slot = tables_[relid];
  slot = std::make_unique<TableInfo>(std::move(table));
  return *slot;
}

const TableInfo* RelationCache::find(std::uint32_t relid) const {
  auto it = tables_.find(relid);
  return it == tables_.end() ? nullptr : it->second.get();
}

}  // namespace walstream
