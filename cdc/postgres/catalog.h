// Catalog facts the Relation message does not carry: primary keys, type names, domain base types,
// array element types. Read from pg_type/pg_index over a normal libpqxx connection, cached by OID.
#pragma once

#include <cstdint>
#include <memory>
#include <pqxx/connection>
#include <string>
#include <unordered_map>
#include <vector>

#include "relation_cache.h"


namespace walstream {

class Catalog {
 public:
  explicit Catalog(const std::string& conninfo);
  ~Catalog();

  // Fills each column's type_name and TypeInfo and picks the record key, then finalizes the table.
  void describe(TableInfo& table);
  // A Type message says a type may have changed: look it up again next time.
  void forget_type(std::uint32_t oid) { types_.erase(oid); }

 private:
  struct TypeRow {
    char typtype = 'b';
    std::uint32_t basetype = 0;
    std::uint32_t elem = 0;
    bool is_array = false;
    char delim = ',';
  };
  void load_types(const std::vector<std::uint32_t>& oids);
  std::uint32_t base_of(std::uint32_t oid);
  TypeInfo info_for(std::uint32_t oid);
  std::vector<std::string> primary_key(std::uint32_t relid);

  std::unique_ptr<pqxx::connection> conn_;
  std::unordered_map<std::uint32_t, TypeRow> types_;
};

}  // namespace walstream
