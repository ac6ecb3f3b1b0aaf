// What walstream knows about each published table: columns, their types, the record key, the
// schema version and its registry JSON. Filled from Relation messages plus catalog facts; no I/O here.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "type_codec.h"

namespace walstream {

struct ColumnInfo {
  std::string name;
  std::uint32_t type_oid = 0;
  std::int32_t type_mod = -1;
  std::string type_name;  // format_type() of the column's type, e.g. "numeric(10,2)", "text[]"
  TypeInfo type;
  bool identity = false;  // sent in the old tuple of a 'K' update/delete (Relation flag)
  bool key = false;       // part of the record's `key`
  std::string json_member;  // "name": escaped once for the record encoder (set by finalize_table)
};

struct TableInfo {
  std::uint32_t relid = 0;
  std::string schema;
  std::string name;
  std::string qualified;  // qualified_table_name(schema, name): "public.users", public."a.b"
  char replident = 'd';
  std::vector<ColumnInfo> columns;
  bool has_key = false;
  bool key_in_identity = false;  // every key column is sent in a 'K' old tuple
  std::string version;        // schema version id: a hash of registry_json
  std::string registry_json;  // {"table":…,"columns":[…]}
};

// A table's one name in walstream's output: its stream key and registry key (after the prefix) and the
// record's `table` field. "schema.table", where a part holding a '.' or a '"' is double-quoted as
// PostgreSQL's quote_ident would, with each '"' doubled: public."a.b" and "public.a".b, which would
// both be public.a.b otherwise. Every other part is written as it is (upper case, spaces, any other
// character too), so the names of tables without dots or quotes are the ones walstream always used.
std::string qualified_table_name(std::string_view schema, std::string_view table);

// The inverse, for names a user types: "[schema.]table" -> {schema, table}, a part double-quoted or
// not (taken as written either way, no case folding; a quoted part may hold '.' and doubled '"').
// The schema is empty when the name has none. nullopt for an empty part, a '"' in an unquoted part,
// an unclosed quote or text after the table.
std::optional<std::pair<std::string, std::string>> parse_qualified_table_name(std::string_view text);

// Chooses the record key (primary key columns, else the replica identity index's columns when
// the identity is an index, else none) and computes the version id and registry JSON.
// `primary_key` lists the primary key's column names from the catalog (empty when there is none).
void finalize_table(TableInfo& table, const std::vector<std::string>& primary_key);

class RelationCache {
 public:
  // Replaces any earlier definition: a new Relation message means the table may have changed.
  const TableInfo& put(TableInfo table);
  const TableInfo* find(std::uint32_t relid) const;
  void clear() { tables_.clear(); }

 private:
  std::unordered_map<std::uint32_t, std::unique_ptr<TableInfo>> tables_;
};

}  // namespace walstream
