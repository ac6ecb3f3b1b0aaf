// `walstream tail`: the exact JSON lines it prints, a consumer group that prints every entry exactly
// once across a clean stop and restart (pending entries first), plain XREAD from the start or from
// now, events, messages, transaction markers and any stream key beside tables, and bad input.
#include <gtest/gtest.h>
#include <signal.h>

#include <rapidjson/document.h>

#include <algorithm>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness.h"

using namespace harness;

namespace {

bool streaming(const Scope& s) { return s.streaming(); }

// The JSON lines of a child's output (stdout and stderr share the file); only complete lines.
std::vector<std::string> json_lines(const std::string& output) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (auto nl = output.find('\n'); nl != std::string::npos; nl = output.find('\n', start)) {
    auto line = output.substr(start, nl - start);
    if (!line.empty() && line.front() == '{') out.push_back(line);
    start = nl + 1;
  }
  return out;
}

std::string id_of(const std::string& line) {
  rapidjson::Document d;
  d.Parse(line.c_str());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("id")) throw std::runtime_error("not a tail line: " + line);
  return d["id"].GetString();
}

// The line tail prints for an entry: what the entry holds, in the contract's order.
std::string expected_line(const std::string& stream, const Entry& e, const std::string& rest) {
  return R"({"stream_id":")" + stream + R"(","id":")" + e.id + R"(",)" + rest + R"(,"ts":")" + e.fields.at("ts") +
         R"("})";
}

std::vector<std::string> tail_args(const Scope& s, std::vector<std::string> extra) {
  std::vector<std::string> args{"tail",   "public.t", "--redis",    redis().url(),
                                "--prefix", s.prefix,   "--block-ms", "200"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

bool has_group(const std::string& stream, const std::string& group) {
  try {
    for (const auto& v : redis_command({"XINFO", "GROUPS", stream})) {
      if (v == group) return true;
    }
  } catch (const std::exception&) {
  }
  return false;
}

// A reader sits in XREAD/XREADGROUP BLOCK: its start position is fixed.
bool blocked_reader() {
  auto clients = redis_command({"CLIENT", "LIST"});
  return !clients.empty() && (clients[0].find("cmd=xread") != std::string::npos);
}

}  // namespace

TEST(Tail, GroupPrintsExactLinesAndEachEntryOnceAcrossRestarts) {
  Scope s;
  const auto stream = s.stream("public.t");
  s.sql("CREATE TABLE t (id int PRIMARY KEY, name text)");
  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();

  auto first = std::make_unique<Walstream>(tail_args(s, {"--group", "g", "--consumer", "c"}));
  // A new group starts at `$`: rows inserted before it exists are not its business.
  ASSERT_TRUE(wait_until([&] { return has_group(stream, "g"); })) << first->log();
  s.sql("INSERT INTO t VALUES (1, 'a')");
  s.sql("UPDATE t SET name = 'b' WHERE id = 1");
  s.sql("DELETE FROM t WHERE id = 1");
  ASSERT_TRUE(wait_until([&] { return json_lines(first->log()).size() == 3; })) << first->log();
  auto entries = xrange(stream);
  ASSERT_EQ(entries.size(), 3u);
  auto lines = json_lines(first->log());
  EXPECT_EQ(lines[0], expected_line(stream, entries[0],
                                    R"("op":"c","table":"public.t","key":{"id":1},"after":{"id":1,"name":"a"})"));
  EXPECT_EQ(lines[1], expected_line(stream, entries[1],
                                    R"("op":"u","table":"public.t","key":{"id":1},"after":{"id":1,"name":"b"})"));
  EXPECT_EQ(lines[2], expected_line(stream, entries[2],
                                    R"("op":"d","table":"public.t","key":{"id":1},"before":{"id":1})"));

  // A big transaction, and a stop while tail is still printing it.
  s.sql("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 3000) g");
  ASSERT_TRUE(wait_until([&] { return json_lines(first->log()).size() > 3; })) << first->log();
  first->signal(SIGTERM);
  ASSERT_EQ(first->wait(), 0) << first->log();
  auto printed = json_lines(first->log());
  std::cout << "first run printed " << printed.size() << " of 3003 lines before its stop\n";

  // While it is down: more rows, and two entries delivered to its consumer but never printed (what a
  // crash between XREADGROUP and the print leaves behind). They must come first on the next start.
  s.sql("INSERT INTO t VALUES (5001, 'x'), (5002, 'y'), (5003, 'z')");
  ASSERT_TRUE(wait_until([&] { return xlen(stream) == 3006; })) << w.log();
  redis_command({"XREADGROUP", "GROUP", "g", "c", "COUNT", "2", "STREAMS", stream, ">"});

  Walstream second(tail_args(s, {"--group", "g", "--consumer", "c"}));
  ASSERT_TRUE(wait_until([&] { return printed.size() + json_lines(second.log()).size() >= 3006; },
                         std::chrono::seconds(30)))
      << second.log();
  second.signal(SIGTERM);
  ASSERT_EQ(second.wait(), 0) << second.log();
  for (const auto& l : json_lines(second.log())) printed.push_back(l);

  // Every entry exactly once, in ID order (pending ones are older than any new one), none pending.
  std::vector<std::string> printed_ids, stored_ids;
  for (const auto& l : printed) printed_ids.push_back(id_of(l));
  for (const auto& e : xrange(stream)) stored_ids.push_back(e.id);
  EXPECT_EQ(printed_ids, stored_ids);
  EXPECT_EQ(redis_command({"XPENDING", stream, "g"}).at(0), "0");

  // A restart with nothing new prints nothing and leaves nothing pending.
  Walstream third(tail_args(s, {"--group", "g", "--consumer", "c"}));
  ASSERT_TRUE(wait_until([&] { return blocked_reader(); })) << third.log();
  third.signal(SIGTERM);
  ASSERT_EQ(third.wait(), 0) << third.log();
  EXPECT_TRUE(json_lines(third.log()).empty()) << third.log();
  EXPECT_EQ(redis_command({"XPENDING", stream, "g"}).at(0), "0");
}

TEST(Tail, PlainReadFromStartWithCountAndFromNow) {
  Scope s;
  const auto stream = s.stream("public.t");
  s.sql("CREATE TABLE t (id int PRIMARY KEY, doc json)");
  Walstream w(s.args());
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();
  // A json column keeps its newlines; the line must not.
  s.sql("INSERT INTO t VALUES (1, '{\"a\":\n [1, 2]}'), (2, NULL); TRUNCATE t; INSERT INTO t VALUES (3, '[]')");
  ASSERT_TRUE(wait_until([&] { return xlen(stream) == 4; })) << w.log();
  auto entries = xrange(stream);

  // Redis and the prefix from the environment, like `walstream run`.
  auto out = run_walstream({"tail", "public.t", "--from-start", "--count", "3"},
                           {{"WALSTREAM_REDIS", redis().url()}, {"WALSTREAM_PREFIX", s.prefix}});
  ASSERT_EQ(out.code, 0) << out.output;
  auto lines = json_lines(out.output);
  ASSERT_EQ(lines.size(), 3u) << out.output;
  EXPECT_EQ(lines[0],
            expected_line(stream, entries[0],
                          R"("op":"c","table":"public.t","key":{"id":1},"after":{"id":1,"doc":{"a":[1,2]}})"));
  EXPECT_EQ(lines[1], expected_line(stream, entries[1],
                                    R"("op":"c","table":"public.t","key":{"id":2},"after":{"id":2,"doc":null})"));
  EXPECT_EQ(lines[2], expected_line(stream, entries[2], R"("op":"t","table":"public.t")"));

  // --from ID: strictly after it.
  out = run_walstream(tail_args(s, {"--from", entries[2].id, "--count", "1"}));
  ASSERT_EQ(out.code, 0) << out.output;
  EXPECT_EQ(json_lines(out.output),
            std::vector<std::string>{expected_line(
                stream, entries[3], R"("op":"c","table":"public.t","key":{"id":3},"after":{"id":3,"doc":[]})")});

  // Default: only what arrives after the start.
  Walstream now(tail_args(s, {"--count", "1"}));
  ASSERT_TRUE(wait_until([&] { return blocked_reader(); })) << now.log();
  s.sql("INSERT INTO t VALUES (4, '{}')");
  ASSERT_EQ(now.wait(), 0) << now.log();
  lines = json_lines(now.log());
  ASSERT_EQ(lines.size(), 1u) << now.log();
  EXPECT_EQ(lines[0], expected_line(stream, xrange(stream).back(),
                                    R"("op":"c","table":"public.t","key":{"id":4},"after":{"id":4,"doc":{}})"));
}

// Events (--events), messages (--messages) and any stream by its key (--stream) print every field of
// their entries; payload, an invalid event's row and a marker's streams embedded as JSON; tables too.
TEST(Tail, EventsMessagesAndStreamKeysPrintTheirFields) {
  Scope s;
  s.sql("CREATE TABLE t (id int PRIMARY KEY, name text);"
        "CREATE TABLE outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregatetype text, aggregateid text, "
        "  type text, payload jsonb, source text);"
        // No id columns, and a text payload: printed as a string when it is not JSON.
        "CREATE TABLE notes (aggregatetype text, type text, payload text)");
  auto args = s.args();
  for (const char* a : {"--outbox", "public.outbox,public.notes", "--transactions"}) args.push_back(a);
  Walstream w(args);
  ASSERT_TRUE(wait_until([&] { return streaming(s); })) << w.log();

  // One transaction: a row, two events of aggregate type `order`, a transactional message.
  s.sql("BEGIN; INSERT INTO t VALUES (1, 'a');"
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, source) VALUES "
        "  ('00000000-0000-0000-0000-000000000007', 'order', '7', 'OrderPlaced', "
        "   '{\"order_id\": 7,\n \"items\": [1, 2]}', 'shop');"
        "INSERT INTO notes VALUES ('order', 'Noted', 'plain words');"
        "SELECT pg_logical_emit_message(true, 'audit', 'order 7 placed'); COMMIT");
  const auto table = s.stream("public.t"), events = s.stream("events:order"), audit = s.stream("messages:audit"),
             markers = s.stream("transactions");
  ASSERT_TRUE(wait_until([&] { return xlen(markers) == 1; })) << w.log();
  const auto row = xrange(table).at(0), marker = xrange(markers).at(0), message = xrange(audit).at(0);
  const auto event = xrange(events).at(0), note = xrange(events).at(1);
  auto tail_of = [&](const Entry& e) {
    return R"("lsn":")" + e.fields.at("lsn") + R"(","xid":")" + e.fields.at("xid") + R"(","ts":")" + e.fields.at("ts") +
           R"("})";
  };
  const std::vector<std::string> expected{
      R"({"stream_id":")" + markers + R"(","id":")" + marker.id + R"(","xid":")" + marker.fields.at("xid") +
          R"(","lsn":")" + marker.fields.at("lsn") + R"(","ts":")" + marker.fields.at("ts") +
          R"(","changes":"4","streams":)" + marker.fields.at("streams") + "}",
      expected_line(table, row, R"("op":"c","table":"public.t","key":{"id":1},"after":{"id":1,"name":"a"})"),
      R"({"stream_id":")" + events + R"(","id":")" + event.id +
          R"(","event_id":"00000000-0000-0000-0000-000000000007","type":"OrderPlaced","aggregate_id":"7",)"
          R"("payload":{"items":[1,2],"order_id":7},"source":"shop",)" + tail_of(event),
      R"({"stream_id":")" + events + R"(","id":")" + note.id + R"(","type":"Noted","payload":"plain words",)" +
          tail_of(note),
      R"({"stream_id":")" + audit + R"(","id":")" + message.id +
          R"(","prefix":"audit","content":"order 7 placed","transactional":"1",)" + tail_of(message),
  };
  // All kinds together, in ID order: the marker is <commit>-0, then the transaction's entries.
  auto out = run_walstream(tail_args(s, {"--events", "order", "--messages", "audit", "--stream", markers,
                                         "--from-start", "--count", "5"}));
  ASSERT_EQ(out.code, 0) << out.output;
  EXPECT_EQ(json_lines(out.output), expected) << out.output;
  // The marker's streams: each stream of the transaction with its number of entries.
  rapidjson::Document d;
  d.Parse(json_lines(out.output).at(0).c_str());
  ASSERT_TRUE(d.IsObject() && d["streams"].IsObject()) << out.output;
  EXPECT_EQ(d["streams"][table.c_str()].GetInt(), 1);
  EXPECT_EQ(d["streams"][events.c_str()].GetInt(), 2);
  EXPECT_EQ(d["streams"][audit.c_str()].GetInt(), 1);

  // A table's stream by its key prints as records, like the table's name.
  out = run_walstream({"tail", "--stream", table, "--redis", redis().url(), "--prefix", s.prefix, "--from-start",
                       "--count", "1"});
  ASSERT_EQ(out.code, 0) << out.output;
  EXPECT_EQ(json_lines(out.output), std::vector<std::string>{expected[1]}) << out.output;

  // An outbox row that is not an event, and a non-transactional message whose content is not UTF-8.
  s.sql("INSERT INTO outbox (aggregatetype, type, payload) VALUES (NULL, 'Lost', '{}');"
        "SELECT pg_logical_emit_message(false, 'audit', '\\xff00'::bytea)");
  const auto invalid = s.stream("events:_invalid");
  ASSERT_TRUE(wait_until([&] { return xlen(invalid) == 1 && xlen(audit) == 2; })) << w.log();
  const auto bad = xrange(invalid).at(0), binary = xrange(audit).at(1);
  out = run_walstream({"tail", "--events", "_invalid", "--messages", "audit", "--redis", redis().url(), "--prefix",
                       s.prefix, "--from", message.id, "--count", "2"});
  ASSERT_EQ(out.code, 0) << out.output;
  std::vector<std::string> got = json_lines(out.output);
  ASSERT_EQ(got.size(), 2u) << out.output;
  // In ID order the message comes first: emitted before the insert's transaction committed, it sorts
  // below it. Check that, then look at the two lines in a fixed order.
  EXPECT_LT(parse_entry_id(id_of(got[0])), parse_entry_id(id_of(got[1]))) << out.output;
  auto is_invalid = [&](const std::string& line) { return line.find(invalid) != std::string::npos; };
  std::sort(got.begin(), got.end(),
            [&](const std::string& a, const std::string& b) { return is_invalid(a) && !is_invalid(b); });
  EXPECT_EQ(got[0], R"({"stream_id":")" + invalid + R"(","id":")" + bad.id + R"(","row":)" + bad.fields.at("row") +
                        R"(,"table":"public.outbox","reason":")" + bad.fields.at("reason") + R"(",)" + tail_of(bad))
      << out.output;
  d.Parse(got[0].c_str());
  ASSERT_TRUE(d.IsObject() && d["row"].IsObject()) << got[0];
  EXPECT_STREQ(d["row"]["type"].GetString(), "Lost");
  EXPECT_TRUE(d["row"]["aggregatetype"].IsNull());
  // 0xff 0x00 is no UTF-8: base64, under content_base64. Not transactional: no xid, no ts.
  EXPECT_EQ(got[1], R"({"stream_id":")" + audit + R"(","id":")" + binary.id +
                        R"(","prefix":"audit","content_base64":"/wA=","transactional":"0","lsn":")" +
                        binary.fields.at("lsn") + R"("})")
      << out.output;

  // Any stream: the key as given (a comma is no list separator); fields named like the line's own
  // members are renamed; a payload that is JSON is embedded there too.
  const std::string foreign = "tail-test," + s.prefix;
  auto foreign_id = redis_command({"XADD", foreign, "*", "id", "7", "stream_id", "x", "payload", "[1, 2]", "note",
                                   "{}"}).at(0);
  out = run_walstream({"tail", "--stream", foreign, "--redis", redis().url(), "--from-start", "--count", "1"});
  ASSERT_EQ(out.code, 0) << out.output;
  EXPECT_EQ(json_lines(out.output),
            std::vector<std::string>{R"({"stream_id":")" + foreign + R"(","id":")" + foreign_id +
                                     R"(","field_id":"7","field_stream_id":"x","payload":[1,2],"note":"{}"})"})
      << out.output;
  redis_command({"DEL", foreign});

  // Through a consumer group, with the table: the row and both events once, then nothing pending.
  out = run_walstream(tail_args(s, {"--events", "order", "--group", "g", "--consumer", "c", "--from-start",
                                    "--count", "3"}));
  ASSERT_EQ(out.code, 0) << out.output;
  EXPECT_EQ(json_lines(out.output), (std::vector<std::string>{expected[1], expected[2], expected[3]})) << out.output;
  EXPECT_EQ(redis_command({"XPENDING", events, "g"}).at(0), "0");
  EXPECT_EQ(redis_command({"XPENDING", table, "g"}).at(0), "0");

  w.signal(SIGTERM);
  EXPECT_EQ(w.wait(), 0) << w.log();
}

TEST(Tail, BadInputIsOneLineAndNonZero) {
  struct Case {
    std::vector<std::string> args;
    int code;
    std::string says;
  };
  std::vector<Case> cases{
      {{"tail"}, 2, "name at least one table (schema.table), --events, --messages or --stream"},
      {{"tail", "--events", "order,with space"}, 2, "--events: 'with space' is no aggregate type"},
      {{"tail", "--messages=,"}, 2, "--messages: a message prefix must not be empty"},
      {{"tail", "--stream="}, 2, "--stream: a stream key must not be empty"},
      {{"tail", "public.t", "--bogus"}, 2, "bogus"},
      {{"tail", "public.t", "--consumer", "c"}, 2, "--consumer needs --group"},
      {{"tail", "public.t", "--group", "g"}, 2, "--group needs --consumer"},
      {{"tail", "public.t", "--redis", "http://127.0.0.1:6379"}, 2, "--redis"},
      {{"tail", "public.t", "--from", "yesterday"}, 2, "--from"},
      {{"tail", "public.t", "--redis", "redis://127.0.0.1:" + std::to_string(free_port())}, 1,
       "cannot connect to Redis"},
  };
  for (const auto& c : cases) {
    auto out = run_walstream(c.args);
    EXPECT_EQ(out.code, c.code) << out.output;
    EXPECT_NE(out.output.find(c.says), std::string::npos) << out.output;
    EXPECT_EQ(std::count(out.output.begin(), out.output.end(), '\n'), 1) << out.output;
  }
}
