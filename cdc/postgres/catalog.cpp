#include "catalog.h"

#include <fmt/format.h>

#include <pqxx/pqxx>

#include "errors.h"
#include "pg_conn.h"

namespace walstream {
namespace {

std::string oid_array(const std::vector<std::uint32_t>& oids) {
  std::string s = "{";
  for (std::size_t i = 0; i < oids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(oids[i]);
  }
  return s + "}";
}

}  // namespace

Catalog::Catalog(const std::string& conninfo) {
  try {
    conn_ = std::make_unique<pqxx::connection>(conninfo);
  } catch (const pqxx::broken_connection& e) {
    throw PgError(true, fmt::format("cannot connect to PostgreSQL: {}", one_line(e.what())));
  }
}

Catalog::~Catalog() = default;

void Catalog::load_types(const std::vector<std::uint32_t>& oids) {
  if (oids.empty()) return;
  try {
    pqxx::nontransaction tx(*conn_);
    // A real array is its element type's typarray; int2vector and oidvector also have an element
    // type and a subscript handler but print space-separated, so they stay text.
    auto rows = tx.exec_params(
        "SELECT t.oid, t.typtype, t.typbasetype, t.typelem, "
        "       coalesce((SELECT e.typarray = t.oid FROM pg_type e WHERE e.oid = t.typelem), false) AS is_array, "
        "       coalesce((SELECT e.typdelim FROM pg_type e WHERE e.oid = t.typelem), ',') "
        "FROM pg_type t WHERE t.oid = ANY($1::oid[])",
        oid_array(oids));
    for (const auto& row : rows) {
      TypeRow t;
      t.typtype = row[1].as<std::string>()[0];
      t.basetype = row[2].as<std::uint32_t>();
      t.elem = row[3].as<std::uint32_t>();
      t.is_array = row[4].as<bool>();
      t.delim = row[5].as<std::string>()[0];
      types_[row[0].as<std::uint32_t>()] = t;
    }
  } catch (const pqxx::broken_connection& e) {
    throw PgError(true, fmt::format("lost the catalog connection: {}", one_line(e.what())));
  } catch (const pqxx::sql_error& e) {
    throw PgError(true, fmt::format("catalog query failed: {}", one_line(e.what())));
  }
  for (auto oid : oids) {
    // A type dropped since the change was made: treat it as text rather than stop.
    types_.try_emplace(oid, TypeRow{});
  }
}

std::uint32_t Catalog::base_of(std::uint32_t oid) {
  // Domains may stack; PostgreSQL forbids cycles, and 16 levels is far beyond any real schema.
  for (int depth = 0; depth < 16; ++depth) {
    if (!types_.count(oid)) load_types({oid});
    const auto& t = types_[oid];
    if (t.typtype != 'd' || t.basetype == 0) return oid;
    oid = t.basetype;
  }
  return oid;
}

TypeInfo Catalog::info_for(std::uint32_t oid) {
  TypeInfo info;
  std::uint32_t base = base_of(oid);
  const TypeRow t = types_[base];
  if (t.is_array && t.elem != 0) {
    info.kind = TypeKind::Array;
    info.element = kind_for_base_type(base_of(t.elem));
    info.delimiter = t.delim;
  } else {
    info.kind = kind_for_base_type(base);
  }
  return info;
}

std::vector<std::string> Catalog::primary_key(std::uint32_t relid) {
  std::vector<std::string> names;
  pqxx::nontransaction tx(*conn_);
  auto rows = tx.exec_params(
      "SELECT a.attname FROM pg_index i "
      "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
      "WHERE i.indrelid = $1 AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
      relid);
  for (const auto& row : rows) names.push_back(row[0].as<std::string>());
  return names;
}

void Catalog::describe(TableInfo& table) {
  std::vector<std::uint32_t> missing;
  for (const auto& col : table.columns) {
    if (!types_.count(col.type_oid)) missing.push_back(col.type_oid);
  }
  std::vector<std::string> pk;
  try {
    load_types(missing);
    pk = primary_key(table.relid);
    // Type names as a user reads them in \d, with the modifier: numeric(10,2), character varying(40).
    std::string oids = "{", mods = "{";
    for (std::size_t i = 0; i < table.columns.size(); ++i) {
      if (i) {
        oids += ',';
        mods += ',';
      }
      oids += std::to_string(table.columns[i].type_oid);
      mods += std::to_string(table.columns[i].type_mod);
    }
    oids += '}';
    mods += '}';
    pqxx::nontransaction tx(*conn_);
    auto rows = tx.exec_params(
        "SELECT format_type(o, CASE WHEN m < 0 THEN NULL ELSE m END) "
        "FROM unnest($1::oid[], $2::int4[]) WITH ORDINALITY AS u(o, m, n) ORDER BY n",
        oids, mods);
    for (std::size_t i = 0; i < table.columns.size() && i < rows.size(); ++i) {
      table.columns[i].type_name = rows[i][0].is_null() ? "unknown" : rows[i][0].as<std::string>();
    }
  } catch (const pqxx::broken_connection& e) {
    throw PgError(true, fmt::format("lost the catalog connection: {}", one_line(e.what())));
  } catch (const pqxx::sql_error& e) {
    throw PgError(true, fmt::format("catalog query failed: {}", one_line(e.what())));
  }
  for (auto& col : table.columns) col.type = info_for(col.type_oid);
  finalize_table(table, pk);
}

}  // namespace walstream
