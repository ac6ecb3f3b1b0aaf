#include "setup.h"

#include <fmt/format.h>

#include <pqxx/pqxx>

#include "errors.h"
#include "log.h"
#include "pg_conn.h"
#include "relation_cache.h"

namespace walstream {
namespace {

std::string qualified_name(const std::string& schema, const std::string& table) {
  return schema.empty() ? quote_ident(table) : quote_ident(schema) + "." + quote_ident(table);
}

// The catalog columns the initial snapshot reads (pg_publication_tables.attnames and rowfilter)
// appeared in PostgreSQL 15; tested on 15.
constexpr int kMinServerVersion = 150000;

void check_server(pqxx::nontransaction& tx) {
  auto version = tx.exec1("SELECT current_setting('server_version_num')::int, current_setting('server_version')");
  if (version[0].as<int>() < kMinServerVersion) {
    throw ConfigError(fmt::format("PostgreSQL {} is not supported: walstream needs PostgreSQL 15 or later",
                                  version[1].as<std::string>()));
  }
  auto wal_level = tx.exec1("SHOW wal_level")[0].as<std::string>();
  if (wal_level != "logical") {
    throw ConfigError(fmt::format("wal_level is '{}' but walstream needs 'logical': run ALTER SYSTEM SET wal_level = "
                                  "logical and restart PostgreSQL",
                                  wal_level));
  }
  auto role = tx.exec1("SELECT current_user, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user");
  if (!role[1].as<bool>()) {
    auto user = role[0].as<std::string>();
    throw ConfigError(fmt::format("PostgreSQL role '{}' may not start replication: grant it with ALTER ROLE {} REPLICATION",
                                  user, quote_ident(user)));
  }
}

void ensure_publication(pqxx::nontransaction& tx, const Config& config) {
  auto found = tx.exec_params("SELECT 1 FROM pg_publication WHERE pubname = $1", config.publication);
  if (!found.empty()) {
    if (!config.tables.empty()) {
      log::warn("publication '{}' exists: using it as it is and ignoring --tables", config.publication);
    }
    return;
  }
  std::string sql = "CREATE PUBLICATION " + quote_ident(config.publication);
  if (config.tables.empty()) {
    sql += " FOR ALL TABLES";
  } else {
    sql += " FOR TABLE ";
    for (std::size_t i = 0; i < config.tables.size(); ++i) {
      if (i) sql += ", ";
      sql += qualified_name(config.tables[i].first, config.tables[i].second);
    }
  }
  try {
    tx.exec0(sql);
  } catch (const pqxx::sql_error& e) {
    // Another walstream started at the same moment created it first (unique_violation on
    // pg_publication's name, or duplicate_object): theirs is the one to use.
    if ((e.sqlstate() == "23505" || e.sqlstate() == "42710") &&
        !tx.exec_params("SELECT 1 FROM pg_publication WHERE pubname = $1", config.publication).empty()) {
      log::info("publication '{}' was created by another walstream meanwhile: using it", config.publication);
      return;
    }
    throw ConfigError(fmt::format("publication '{}' does not exist and walstream cannot create it: {}",
                                  config.publication, one_line(e.what())));
  }
  log::info("created publication '{}' {}", config.publication,
            config.tables.empty() ? std::string("FOR ALL TABLES") : fmt::format("for {} table(s)", config.tables.size()));
}

// PostgreSQL rejects UPDATE and DELETE on a published table with no replica identity, so nothing is
// lost, but the application breaks: say how to fix it before that happens.
void warn_missing_identity(pqxx::nontransaction& tx, const Config& config) {
  auto rows = tx.exec_params(
      "SELECT pt.schemaname, pt.tablename FROM pg_publication_tables pt "
      "JOIN pg_publication p ON p.pubname = pt.pubname "
      // Joined by name, not by a ::regclass cast: the planner may evaluate the cast on every pg_class
      // row, pg_toast included, which only a superuser may name.
      "JOIN pg_namespace n ON n.nspname = pt.schemaname "
      "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename "
      "WHERE pt.pubname = $1 AND (p.pubupdate OR p.pubdelete) AND (c.relreplident = 'n' OR "
      "  (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))",
      config.publication);
  for (const auto& row : rows) {
    auto table = qualified_name(row[0].as<std::string>(), row[1].as<std::string>());
    log::warn("table {} has no primary key or replica identity: PostgreSQL will reject its UPDATEs and DELETEs; fix "
              "with ALTER TABLE {} REPLICA IDENTITY FULL (or USING INDEX <unique index>)",
              table, table);
  }
  if (rows.empty()) {
    auto count = tx.exec_params1("SELECT count(*) FROM pg_publication_tables WHERE pubname = $1", config.publication);
    if (count[0].as<long>() == 0) log::warn("publication '{}' has no tables yet", config.publication);
  }
}

// An outbox table must be published, or its events never arrive; and it needs its columns.
void check_outbox_tables(pqxx::nontransaction& tx, const Config& config) {
  for (const auto& qualified : config.outbox_tables) {
    auto name = parse_qualified_table_name(qualified);
    auto rows = tx.exec_params(
        "SELECT a.attname FROM pg_publication_tables pt "
        "JOIN pg_namespace n ON n.nspname = pt.schemaname "
        "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "  AND a.attname = ANY(pt.attnames) "
        "JOIN pg_publication p ON p.pubname = pt.pubname "
        "WHERE pt.pubname = $1 AND pt.schemaname = $2 AND pt.tablename = $3 AND p.pubinsert",
        config.publication, name->first, name->second);
    if (rows.empty()) {
      throw ConfigError(fmt::format("outbox table {} is not in publication '{}' (or does not exist, or the "
                                    "publication does not publish inserts): add it with ALTER PUBLICATION {} "
                                    "ADD TABLE {}",
                                    qualified, config.publication, quote_ident(config.publication),
                                    qualified_name(name->first, name->second)));
    }
    const auto& oc = config.outbox_columns;
    const OutboxColumns defaults;
    std::vector<std::pair<std::string, const char*>> required = {
        {oc.aggregate_type, "--outbox-aggregate-type-column"},
        {oc.type, "--outbox-type-column"},
        {oc.payload, "--outbox-payload-column"}};
    // The id and aggregate id may be absent (several outbox tables share one mapping), but a column
    // renamed by flag and missing is most likely a typo: say so rather than drop the field unseen.
    for (const auto& [column, flag] : {std::pair{oc.id, "--outbox-id-column"},
                                       std::pair{oc.aggregate_id, "--outbox-aggregate-id-column"}}) {
      bool found = false;
      for (const auto& row : rows) found = found || row[0].as<std::string>() == column;
      if (!found && column != (std::string_view(flag) == "--outbox-id-column" ? defaults.id : defaults.aggregate_id)) {
        log::warn("outbox table {} has no column \"{}\" ({}): its events carry no {}", qualified, column, flag,
                  std::string_view(flag) == "--outbox-id-column" ? "id" : "aggregate_id");
      }
    }
    for (const auto& [column, flag] : required) {
      bool found = false;
      for (const auto& row : rows) found = found || row[0].as<std::string>() == column;
      if (!found) {
        throw ConfigError(
            fmt::format("outbox table {} has no column \"{}\" (name it with {})", qualified, column, flag));
      }
    }
    // A header named like an event field would give each entry that field twice.
    for (const auto& row : rows) {
      auto column = row[0].as<std::string>();
      if (column == oc.id || column == oc.aggregate_type || column == oc.aggregate_id || column == oc.type ||
          column == oc.payload) {
        continue;
      }
      for (std::string_view reserved : {"id", "type", "aggregate_id", "payload", "lsn", "xid", "ts"}) {
        if (column == reserved) {
          throw ConfigError(fmt::format("outbox table {} has a column \"{}\", the name of an event field: rename "
                                        "it, or name it with the matching --outbox-…-column flag",
                                        qualified, column));
        }
      }
    }
  }
}

void ensure_slot(pqxx::nontransaction& tx, const Config& config) {
  auto slot = tx.exec_params(
      "SELECT plugin, database = current_database(), slot_type FROM pg_replication_slots WHERE slot_name = $1",
      config.slot);
  if (!slot.empty()) {
    const auto& row = slot[0];
    if (row[2].as<std::string>() != "logical" || row[0].is_null() || row[0].as<std::string>() != "pgoutput") {
      throw ConfigError(fmt::format("replication slot '{}' exists but is not a logical pgoutput slot; choose another "
                                    "--slot or drop it with SELECT pg_drop_replication_slot('{}')",
                                    config.slot, config.slot));
    }
    if (!row[1].as<bool>()) {
      throw ConfigError(fmt::format("replication slot '{}' belongs to another database; choose another --slot",
                                    config.slot));
    }
    return;
  }
  log::info("replication slot '{}' does not exist yet: walstream will create it{}", config.slot,
            config.snapshot == SnapshotMode::Initial ? " and snapshot the published tables" : "");
}

}  // namespace

void prepare_source(const Config& config) {
  std::unique_ptr<pqxx::connection> conn;
  try {
    conn = std::make_unique<pqxx::connection>(config.pg);
  } catch (const pqxx::broken_connection& e) {
    throw PgError(true, fmt::format("cannot connect to PostgreSQL: {}", one_line(e.what())));
  }
  try {
    pqxx::nontransaction tx(*conn);
    check_server(tx);
    ensure_publication(tx, config);
    warn_missing_identity(tx, config);
    check_outbox_tables(tx, config);
    ensure_slot(tx, config);
  } catch (const pqxx::broken_connection& e) {
    throw PgError(true, fmt::format("lost the PostgreSQL connection during setup: {}", one_line(e.what())));
  } catch (const pqxx::sql_error& e) {
    throw PgError(false, fmt::format("setup query failed: {}", one_line(e.what())));
  }
}

}  // namespace walstream
