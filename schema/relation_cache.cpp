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

void append_name_part(std::string& out, std::string_view part) {
  if (part.find_first_of(".\"") == std::string_view::npos) {
    out += part;
    return;
  }
  out += '"';
  for (char c : part) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
}

// Reads the part at the start of `text` into `part` and drops it from `text`: a quoted part up to its
// closing quote, an unquoted one up to the next '.'.
bool read_name_part(std::string_view& text, std::string& part) {
  part.clear();
  if (!text.starts_with('"')) {
    const std::size_t end = std::min(text.find('.'), text.size());
    part = text.substr(0, end);
    text.remove_prefix(end);
    return !part.empty() && part.find('"') == std::string::npos;
  }
  for (std::size_t i = 1; i < text.size(); ++i) {
    if (text[i] != '"') {
      part += text[i];
    } else if (i + 1 < text.size() && text[i + 1] == '"') {
      part += '"';
      ++i;
    } else {
      text.remove_prefix(i + 1);
      return !part.empty();
    }
  }
  return false;  // no closing quote
}

}  // namespace

std::string qualified_table_name(std::string_view schema, std::string_view table) {
  std::string out;
  out.reserve(schema.size() + table.size() + 1);
  append_name_part(out, schema);
  out += '.';
  append_name_part(out, table);
  return out;
}

std::optional<std::pair<std::string, std::string>> parse_qualified_table_name(std::string_view text) {
  std::pair<std::string, std::string> names;
  if (!read_name_part(text, names.second)) return std::nullopt;
  if (text.empty()) return names;
  if (!text.starts_with('.')) return std::nullopt;
  text.remove_prefix(1);
  names.first = std::move(names.second);
  if (!read_name_part(text, names.second) || !text.empty()) return std::nullopt;
  return names;
}

void finalize_table(TableInfo& table, const std::vector<std::string>& primary_key) {
  table.qualified = qualified_table_name(table.schema, table.name);
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
