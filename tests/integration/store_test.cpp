// The shared store of sql/ end to end: an administrator loads the schema, the walstream role, the
// publication and the sample rows with psql; walstream runs as that least-privilege role with the
// store's outbox, snapshots the tables and streams the changes and the OrderPlaced event the store's
// own queries (sql/queries/) make; and the role has exactly the privileges docs/privileges.md lists.
// Roles are cluster-wide and this binary's PostgreSQL is shared by its tests, which is why
// sql/02_roles.sql must be (and here is) safe to run once per test database.
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <signal.h>

#include <filesystem>
#include <map>
#include <tuple>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "harness.h"

using namespace harness;

namespace {

std::string sql_dir() {
#ifdef WALSTREAM_SQL_DIR
  return WALSTREAM_SQL_DIR;
#else
  return (std::filesystem::path(__FILE__).parent_path() / ".." / ".." / "sql").lexically_normal().string();
#endif
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// psql as `user` on the scope's database, unaligned and quiet; throws (with the output) on failure.
std::string psql(const Scope& s, const std::string& args, const std::string& user = "postgres") {
  auto out = shell(fmt::format("psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p {} -U {} -d {} {}", pg().port(),
                               user, s.db, args));
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string psql_file(const Scope& s, const std::string& file, const std::vector<std::string>& vars = {}) {
  std::string args;
  for (const auto& v : vars) args += "-v " + shell_quote(v) + " ";
  return psql(s, args + "-f " + shell_quote(sql_dir() + "/" + file));
}

// What an administrator does, in the order of the file names (as docker-entrypoint-initdb.d runs them).
void load_store(const Scope& s) {
  for (const char* f : {"01_schema.sql", "02_roles.sql", "03_publication.sql", "04_sample_data.sql"}) {
    psql_file(s, f);
  }
}

std::string walstream_conninfo(const Scope& s) { return pg().conninfo(s.db, "walstream"); }

// The scope's usual arguments, connecting as the walstream role instead of postgres, with the store's outbox.
std::vector<std::string> walstream_args(const Scope& s) {
  auto args = s.args();
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--pg") args[i + 1] = walstream_conninfo(s);
  }
  args.push_back("--outbox");
  args.push_back("public.outbox");
  return args;
}

rapidjson::Document json(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.c_str(), text.size());
  if (d.HasParseError() || !d.IsObject()) throw std::runtime_error("not a JSON object: " + text);
  return d;
}

std::string field(const Entry& e, const std::string& name) {
  auto it = e.fields.find(name);
  return it == e.fields.end() ? "<absent>" : it->second;
}

std::string commit_of(const Entry& e) { return e.id.substr(0, e.id.find('-')); }

// The error PostgreSQL gives `user` (default walstream) for a statement, or "" when it succeeds.
std::string refusal(const Scope& s, const std::string& statement, const std::string& user = "walstream") {
  try {
    harness::sql(pg().conninfo(s.db, user), statement);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

bool refused(const std::string& why) {
  return why.find("permission denied") != std::string::npos || why.find("must be owner") != std::string::npos;
}

}  // namespace

TEST(Store, LeastPrivilegeRoleSnapshotsAndStreamsTheStoresQueries) {
  Scope s;
  load_store(s);
  const auto ada = s.query_one("SELECT id FROM users WHERE email = 'ada@example.com'");
  const auto grace = s.query_one("SELECT id FROM users WHERE email = 'grace@example.com'");
  const auto monitor = s.query_one("SELECT id FROM products WHERE sku = 'MN-27'");
  const auto keyboard = s.query_one("SELECT id FROM products WHERE sku = 'KB-01'");

  Walstream w(walstream_args(s));

  // The initial snapshot: walstream created the slot and copied every published table. (The slot
  // keeps every later change for walstream, so the queries below need not wait for it to stream.)
  for (auto [table, rows] : std::vector<std::pair<std::string, long long>>{
           {"public.users", 3}, {"public.products", 4}, {"public.inventory", 4}, {"public.orders", 1},
           {"public.order_items", 2}, {"public.payments", 1}}) {
    ASSERT_TRUE(wait_until([&] { return xlen(s.stream(table)) == rows || !w.running(); }) && w.running())
        << table << "\n" << w.log();
    for (const auto& e : xrange(s.stream(table))) EXPECT_EQ(field(e, "op"), "r") << table;
  }
  // users is published without password_hash, and snapshotted with column-level SELECT only.
  for (const auto& e : xrange(s.stream("public.users"))) {
    auto after = json(field(e, "after"));
    EXPECT_FALSE(after.HasMember("password_hash")) << field(e, "after");
    EXPECT_TRUE(after.HasMember("email") && after.HasMember("billing_city")) << field(e, "after");
  }
  auto sample_order = json(field(xrange(s.stream("public.orders")).at(0), "after"));
  EXPECT_STREQ(sample_order["status"].GetString(), "paid");
  EXPECT_STREQ(sample_order["total"].GetString(), "109.88");
  EXPECT_STREQ(sample_order["billing_address"]["city"].GetString(), "London");

  // Billing and authentication read the one profile; reads change nothing on the streams.
  EXPECT_EQ(psql_file(s, "queries/billing_profile.sql", {"user_id=" + ada}),
            ada + "|Ada Lovelace|ada@example.com|12 St James's Square||London|SW1Y 4JH||GB");
  auto auth = psql_file(s, "queries/auth_lookup.sql", {"email=Ada@Example.COM"});
  EXPECT_EQ(auth.rfind(ada + "|ada@example.com|Ada Lovelace|$argon2id$", 0), 0u) << auth;
  EXPECT_EQ(psql_file(s, "queries/auth_lookup.sql", {"email=nobody@example.com"}), "");

  // Inventory reserves stock for Grace's order: one transaction, three streams.
  auto order_id = psql_file(s, "queries/reserve_stock.sql",
                            {"user_id=" + grace, R"(items=[{"sku": "MN-27", "qty": 3}, {"sku": "KB-01", "qty": 2}])"});
  ASSERT_FALSE(order_id.empty());
  ASSERT_TRUE(wait_until([&] {
    return xlen(s.stream("public.inventory")) == 6 && xlen(s.stream("public.orders")) == 2 &&
           xlen(s.stream("public.order_items")) == 4;
  })) << w.log();

  // Each reserved product's row: an update with the old row (REPLICA IDENTITY FULL), so a
  // subscriber sees the change itself, reserved before -> after.
  std::map<std::string, Entry> reserved;
  auto inventory = xrange(s.stream("public.inventory"));
  for (std::size_t i = 4; i < inventory.size(); ++i) reserved[field(inventory[i], "key")] = inventory[i];
  for (const auto& [product, before, after] :
       std::vector<std::tuple<std::string, int, int>>{{keyboard, 1, 3}, {monitor, 0, 3}}) {
    auto key = R"({"product_id":)" + product + "}";
    ASSERT_TRUE(reserved.count(key)) << key;
    const Entry& e = reserved[key];
    EXPECT_EQ(field(e, "op"), "u");
    auto old_row = json(field(e, "before"));
    auto new_row = json(field(e, "after"));
    EXPECT_EQ(old_row["reserved"].GetInt(), before) << field(e, "before");
    EXPECT_EQ(new_row["reserved"].GetInt(), after) << field(e, "after");
    EXPECT_EQ(new_row["stock"].GetInt(), old_row["stock"].GetInt());
  }

  const Entry order = xrange(s.stream("public.orders")).at(1);
  EXPECT_EQ(field(order, "op"), "c");
  EXPECT_EQ(field(order, "key"), R"({"id":)" + order_id + "}");
  auto placed = json(field(order, "after"));
  EXPECT_EQ(std::to_string(placed["user_id"].GetInt64()), grace);
  EXPECT_STREQ(placed["status"].GetString(), "pending");
  EXPECT_STREQ(placed["total"].GetString(), "926.80");  // 3 x 249.00 + 2 x 89.90, numeric kept exact
  EXPECT_STREQ(placed["billing_address"]["country"].GetString(), "US");

  auto items = xrange(s.stream("public.order_items"));
  for (std::size_t i = 2; i < 4; ++i) {
    EXPECT_EQ(field(items[i], "op"), "c");
    EXPECT_EQ(std::to_string(json(field(items[i], "after"))["order_id"].GetInt64()), order_id);
  }
  // The order's OrderPlaced event, inserted into the outbox and deleted again by the same transaction:
  // published once on events:order, the outbox left empty, and no row stream of the outbox.
  const auto events = s.stream("events:order");
  ASSERT_TRUE(wait_until([&] { return xlen(events) == 1; })) << w.log();
  EXPECT_EQ(s.query_one("SELECT count(*) FROM outbox"), "0");
  EXPECT_EQ(xlen(s.stream("public.outbox")), 0);
  const Entry event = xrange(events).at(0);
  EXPECT_EQ(field(event, "type"), "OrderPlaced");
  EXPECT_EQ(field(event, "aggregate_id"), order_id);
  EXPECT_EQ(field(event, "id").size(), 36u) << field(event, "id");  // the outbox row's uuid
  EXPECT_NE(field(event, "created_at"), "<absent>");  // a header column
  EXPECT_EQ(field(event, "xid"), field(order, "xid"));
  auto payload = json(field(event, "payload"));
  EXPECT_EQ(payload.MemberCount(), 5u) << field(event, "payload");
  EXPECT_EQ(std::to_string(payload["order_id"].GetInt64()), order_id);
  EXPECT_EQ(std::to_string(payload["user_id"].GetInt64()), grace);
  EXPECT_STREQ(payload["currency"].GetString(), "EUR");
  EXPECT_STREQ(payload["total"].GetString(), "926.80");
  ASSERT_TRUE(payload["items"].IsArray() && payload["items"].Size() == 2) << field(event, "payload");
  for (const auto& [i, sku, product, quantity, price] :
       std::vector<std::tuple<unsigned, std::string, std::string, int, std::string>>{
           {0, "KB-01", keyboard, 2, "89.90"}, {1, "MN-27", monitor, 3, "249.00"}}) {
    const auto& item = payload["items"][i];
    EXPECT_EQ(item["line_no"].GetInt(), static_cast<int>(i) + 1);
    EXPECT_EQ(item["sku"].GetString(), sku);
    EXPECT_EQ(std::to_string(item["product_id"].GetInt64()), product);
    EXPECT_EQ(item["quantity"].GetInt(), quantity);
    EXPECT_EQ(item["unit_price"].GetString(), price);
  }

  // All of it is one transaction: one commit LSN across the three streams and the event, which comes
  // after the transaction's rows.
  EXPECT_EQ(commit_of(inventory[4]), commit_of(order));
  EXPECT_EQ(commit_of(inventory[5]), commit_of(order));
  EXPECT_EQ(commit_of(items[2]), commit_of(order));
  EXPECT_EQ(commit_of(items[3]), commit_of(order));
  EXPECT_EQ(commit_of(event), commit_of(order));
  EXPECT_EQ(event.id, commit_of(order) + "-6");  // 2 reservations, the order, 2 lines, then the event

  // A reservation that cannot be met fails as a whole: nothing reserved, nothing streamed.
  EXPECT_THROW(psql_file(s, "queries/reserve_stock.sql",
                         {"user_id=" + grace, R"(items=[{"sku": "KB-01", "qty": 1}, {"sku": "MN-27", "qty": 6}])"}),
               std::runtime_error);
  EXPECT_EQ(s.query_one("SELECT reserved FROM inventory WHERE product_id = " + monitor), "3");
  EXPECT_EQ(s.query_one("SELECT reserved FROM inventory WHERE product_id = " + keyboard), "3");

  // A password change reaches the stream as an update without the hash (and the marker that the
  // refused reservation above left nothing behind it).
  s.sql("UPDATE users SET password_hash = '$argon2id$v=19$m=65536,t=3,p=4$bmV3$secret-new-hash' WHERE id = " + ada);
  ASSERT_TRUE(wait_until([&] { return xlen(s.stream("public.users")) == 4; })) << w.log();
  auto users = xrange(s.stream("public.users"));
  EXPECT_EQ(field(users.back(), "op"), "u");
  EXPECT_EQ(field(users.back(), "after").find("secret-new-hash"), std::string::npos) << field(users.back(), "after");
  EXPECT_FALSE(json(field(users.back(), "after")).HasMember("password_hash"));
  EXPECT_EQ(xlen(s.stream("public.inventory")), 6);
  EXPECT_EQ(xlen(s.stream("public.orders")), 2);
  EXPECT_EQ(xlen(s.stream("public.order_items")), 4);
  EXPECT_EQ(xlen(events), 1);

  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
  EXPECT_TRUE(s.caught_up()) << w.log();
}

TEST(Store, ScriptsRunAgainAndTheRoleMayDoNothingElse) {
  Scope s;
  load_store(s);
  load_store(s);  // idempotent: nothing duplicated, nothing fails
  EXPECT_EQ(s.query_one("SELECT count(*) FROM users"), "3");
  EXPECT_EQ(s.query_one("SELECT count(*) FROM orders"), "1");
  EXPECT_EQ(s.query_one("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables "
                        "WHERE pubname = 'walstream'"),
            "inventory,order_items,orders,outbox,payments,products,users");

  EXPECT_EQ(s.query_one("SELECT concat_ws(',', rolcanlogin, rolreplication, rolsuper, rolcreatedb, rolcreaterole, "
                        "rolbypassrls) FROM pg_roles WHERE rolname = 'walstream'"),
            "t,t,f,f,f,f");

  // Exactly the privileges of docs/privileges.md: SELECT on the published tables, outbox included;
  // on users only column-level SELECT on the published columns; nothing on any sequence.
  const std::string kTablePrivileges = "ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', "
                                       "'TRIGGER']";
  EXPECT_EQ(s.query_one("SELECT string_agg(c.relname || ':' || p, ',' ORDER BY c.relname, p) FROM pg_class c, "
                        "unnest(" + kTablePrivileges + ") p WHERE c.relnamespace = 'public'::regnamespace AND "
                        "c.relkind = 'r' AND has_table_privilege('walstream', c.oid, p)"),
            "inventory:SELECT,order_items:SELECT,orders:SELECT,outbox:SELECT,payments:SELECT,products:SELECT");
  EXPECT_EQ(s.query_one("SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_attribute a "
                        "WHERE a.attrelid = 'public.users'::regclass AND a.attnum > 0 AND NOT a.attisdropped "
                        "AND has_column_privilege('walstream', a.attrelid, a.attnum, 'SELECT')"),
            "id,email,name,marketing_opt_in,billing_line1,billing_line2,billing_city,billing_postal_code,"
            "billing_region,billing_country,created_at,updated_at");
  EXPECT_EQ(s.query_one("SELECT count(*) FROM pg_class c, unnest(ARRAY['INSERT', 'UPDATE', 'REFERENCES']) p "
                        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' "
                        "AND has_any_column_privilege('walstream', c.oid, p)"),
            "0");
  EXPECT_EQ(s.query_one("SELECT count(*) FROM pg_class c, unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) p "
                        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'S' "
                        "AND has_sequence_privilege('walstream', c.oid, p)"),
            "0");

  // What the snapshot needs works: the published tables, and the published columns of users.
  EXPECT_EQ(refusal(s, "SELECT count(*) FROM orders"), "");
  EXPECT_EQ(refusal(s, "SELECT id, email, name, billing_country FROM users"), "");
  EXPECT_EQ(refusal(s, "SELECT count(*) FROM outbox"), "");

  // Everything else is refused.
  for (const auto& statement : std::vector<std::string>{
           "SELECT password_hash FROM users",
           "INSERT INTO users (email, name) VALUES ('mallory@example.com', 'Mallory')",
           "UPDATE inventory SET reserved = 0",
           "DELETE FROM order_items",
           "TRUNCATE payments",
           "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES ('order', '1', 'Forged', '{}')",
           "UPDATE outbox SET type = 'Forged'",
           "DELETE FROM outbox",
           "TRUNCATE outbox",
           "SELECT nextval('orders_id_seq')",
           "CREATE TABLE public.stash (id int)",
           "ALTER TABLE users REPLICA IDENTITY FULL",
           "CREATE PUBLICATION mine FOR TABLE users",
           "CREATE PUBLICATION everything FOR ALL TABLES",
           "ALTER PUBLICATION walstream DROP TABLE payments",
           "DROP PUBLICATION walstream",
       }) {
    auto why = refusal(s, statement);
    EXPECT_TRUE(refused(why)) << statement << " -> " << (why.empty() ? "succeeded" : why);
  }

  // An application role with the outbox grants of sql/02_roles.sql (and docs/privileges.md) can write
  // an event the way reserve_stock.sql does, insert then delete, and cannot read the events' contents.
  // Without SELECT on id neither the RETURNING nor the DELETE's WHERE is allowed.
  const std::string app = "outbox_app_" + s.db;
  s.sql("CREATE ROLE " + app + " LOGIN; GRANT USAGE ON SCHEMA public TO " + app + ";"
        "GRANT INSERT, DELETE ON public.outbox TO " + app);
  const std::string insert = "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                             "VALUES ('order', '1', 'OrderPlaced', '{}')";
  EXPECT_TRUE(refused(refusal(s, insert + " RETURNING id", app)));
  EXPECT_TRUE(refused(refusal(s, "DELETE FROM outbox WHERE id = gen_random_uuid()", app)));
  s.sql("GRANT SELECT (id) ON public.outbox TO " + app);
  EXPECT_EQ(refusal(s, "DO $$ DECLARE e uuid; BEGIN " + insert + " RETURNING id INTO e; "
                       "DELETE FROM outbox WHERE id = e; END $$", app), "");
  EXPECT_TRUE(refused(refusal(s, "SELECT payload FROM outbox", app)));
  EXPECT_TRUE(refused(refusal(s, "UPDATE outbox SET type = 'Forged'", app)));
  EXPECT_EQ(s.query_one("SELECT count(*) FROM outbox"), "0");
  s.sql("DROP OWNED BY " + app + "; DROP ROLE " + app);

  // So walstream cannot create a publication of its own: one clear line, exit 1.
  auto args = walstream_args(s);
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--publication") args[i + 1] = "not_created_by_an_admin";
  }
  auto outcome = run_walstream(args);
  EXPECT_EQ(outcome.code, 1) << outcome.output;
  EXPECT_NE(outcome.output.find("cannot create it: permission denied for database"), std::string::npos)
      << outcome.output;
}
