// pgoutput decoder against messages captured from PostgreSQL 15 (tests/fixtures/capture_pgoutput.sh),
// plus truncated and corrupted copies of them.
#include "pgoutput.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "copy_protocol.h"

namespace walstream::pgoutput {
namespace {

struct Captured {
  std::string lsn;  // pg_logical_slot_peek_binary_changes' lsn column
  std::uint32_t xid = 0;
  std::string bytes;
};

std::string unhex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

std::vector<Captured> load_fixture() {
  std::ifstream in(std::string(WALSTREAM_FIXTURES) + "/pgoutput_v1.txt");
  if (!in) throw std::runtime_error("cannot open pgoutput_v1.txt");
  std::vector<Captured> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    Captured c;
    std::string hex;
    fields >> c.lsn >> c.xid >> hex;
    c.bytes = unhex(hex);
    out.push_back(std::move(c));
  }
  return out;
}

const std::vector<Captured>& fixture() {
  static const std::vector<Captured> lines = load_fixture();
  return lines;
}

// The letter of each alternative, in the order of the Decoded variant.
char letter(const Decoded& d) { return "BCORYIUDTM"[d.index()]; }

// One workload step of capture_pgoutput.sh: a whole transaction, or one non-transactional message.
struct Step {
  std::vector<const Captured*> lines;
  std::vector<Decoded> msgs;
  std::string letters() const {
    std::string s;
    for (const auto& m : msgs) s += letter(m);
    return s;
  }
  template <typename T>
  const T& at(std::size_t i) const { return std::get<T>(msgs.at(i)); }
};

std::vector<Step> split_steps() {
  std::vector<Step> steps;
  bool in_txn = false;
  for (const Captured& c : fixture()) {
    Decoded d = decode(c.bytes);
    if (!in_txn) steps.emplace_back();
    if (std::holds_alternative<Begin>(d)) in_txn = true;
    if (std::holds_alternative<Commit>(d)) in_txn = false;
    steps.back().lines.push_back(&c);
    steps.back().msgs.push_back(std::move(d));
  }
  return steps;
}

// Steps numbered as in capture_pgoutput.sh's workload comments (1-based).
const Step& step(std::size_t n) {
  static const std::vector<Step> steps = split_steps();
  return steps.at(n - 1);
}

std::string show(const Tuple& t) {
  std::string s;
  for (const Value& v : t) {
    if (!s.empty()) s += '|';
    s += static_cast<char>(v.kind);
    if (v.kind == ValueKind::Text || v.kind == ValueKind::Binary) {
      s += ':';
      s.append(v.data);
    }
  }
  return s;
}

std::string show(const std::vector<Column>& cols) {
  std::string s;
  for (const Column& c : cols) {
    if (!s.empty()) s += '|';
    s += std::string(c.name) + " " + std::to_string(c.type_oid) + " " + std::to_string(c.type_mod) + (c.key ? " key" : "");
  }
  return s;
}

constexpr std::uint32_t kInt4 = 23, kInt8 = 20, kText = 25, kVarchar = 1043, kNumeric = 1700;
constexpr std::uint32_t kFirstNormalObjectId = 16384;
const std::string kUsersColumns = "id 23 -1 key|name 25 -1|email 25 -1";
// md5('1') || md5('2') || ... || md5('320'), and the same from 1001 to 1320.
constexpr std::size_t kToastSize = 320 * 32;

TEST(PgoutputCapture, MessageSequence) {
  const std::vector<std::string> expected = {"BRIIC", "BUC",  "BUC",    "BDC",  "BRIUDC", "BRIC",
                                             "BUC",   "BRIC", "BUC",    "BYYRIC", "BRIUC", "BRIC",
                                             "BRRTC", "BRTC", "BMMC",   "M",    "BORIC"};
  std::size_t total = 0;
  for (std::size_t n = 1; n <= expected.size(); ++n) {
    EXPECT_EQ(step(n).letters(), expected[n - 1]) << "step " << n;
    total += expected[n - 1].size();
  }
  EXPECT_EQ(fixture().size(), total);
}

TEST(PgoutputCapture, BeginAndCommitFrameEachTransaction) {
  std::size_t transactions = 0;
  for (std::size_t n = 1; n <= 17; ++n) {
    const Step& s = step(n);
    if (letter(s.msgs.front()) != 'B') continue;
    ++transactions;
    const auto& begin = s.at<Begin>(0);
    const auto& commit = s.at<Commit>(s.msgs.size() - 1);
    EXPECT_EQ(begin.final_lsn, commit.commit_lsn) << "step " << n;
    EXPECT_EQ(begin.commit_time, commit.commit_time) << "step " << n;
    EXPECT_EQ(commit.flags, 0);
    EXPECT_GT(commit.end_lsn, commit.commit_lsn);
    // The slot reports the commit at its end LSN: the position to confirm.
    EXPECT_EQ(commit.end_lsn, copy::parse_lsn(s.lines.back()->lsn)) << "step " << n;
    for (const Captured* line : s.lines) EXPECT_EQ(line->xid, begin.xid) << "step " << n;
    // Later than 2020-01-01, earlier than 2100-01-01 (microseconds since 2000-01-01).
    EXPECT_GT(begin.commit_time, 631152000LL * 1000000);
    EXPECT_LT(begin.commit_time, 3155760000LL * 1000000);
  }
  EXPECT_EQ(transactions, 16u);
  EXPECT_LT(step(1).at<Begin>(0).xid, step(2).at<Begin>(0).xid);
  EXPECT_LT(step(1).at<Commit>(4).end_lsn, step(2).at<Begin>(0).final_lsn);
}

TEST(PgoutputCapture, EveryChangeNamesAnAnnouncedRelation) {
  std::map<std::uint32_t, std::string> announced;
  auto check = [&](std::uint32_t relid) { EXPECT_TRUE(announced.count(relid)) << "relid " << relid; };
  for (std::size_t n = 1; n <= 17; ++n) {
    for (const Decoded& d : step(n).msgs) {
      if (const auto* r = std::get_if<Relation>(&d)) announced[r->relid] = std::string(r->relname);
      if (const auto* i = std::get_if<Insert>(&d)) check(i->relid);
      if (const auto* u = std::get_if<Update>(&d)) check(u->relid);
      if (const auto* x = std::get_if<Delete>(&d)) check(x->relid);
      if (const auto* t = std::get_if<Truncate>(&d))
        for (std::uint32_t relid : t->relids) check(relid);
    }
  }
  EXPECT_EQ(announced.size(), 6u);  // users, audit, docs, blobs, moods, accounts
}

TEST(PgoutputCapture, RelationWithPrimaryKey) {
  const auto& rel = step(1).at<Relation>(1);
  EXPECT_GE(rel.relid, kFirstNormalObjectId);
  EXPECT_EQ(rel.nspname, "public");
  EXPECT_EQ(rel.relname, "users");
  EXPECT_EQ(rel.replident, 'd');
  EXPECT_EQ(show(rel.columns), kUsersColumns);
  EXPECT_EQ(rel.columns[0].type_oid, kInt4);
  EXPECT_EQ(rel.columns[1].type_oid, kText);
}

TEST(PgoutputCapture, InsertsWithNull) {
  const Step& s = step(1);
  const auto& alice = s.at<Insert>(2);
  const auto& bob = s.at<Insert>(3);
  EXPECT_EQ(alice.relid, s.at<Relation>(1).relid);
  EXPECT_EQ(show(alice.new_tuple), "t:1|t:alice|t:alice@example.com");
  EXPECT_EQ(show(bob.new_tuple), "t:2|t:bob|n");
}

TEST(PgoutputCapture, UpdateKeepingTheKeySendsNoOldTuple) {
  const auto& up = step(2).at<Update>(1);
  EXPECT_EQ(up.old_kind, 0);
  EXPECT_TRUE(up.old_tuple.empty());
  EXPECT_EQ(show(up.new_tuple), "t:1|t:alice|t:alice@example.org");
}

TEST(PgoutputCapture, UpdateOfTheKeySendsOldKey) {
  const auto& up = step(3).at<Update>(1);
  EXPECT_EQ(up.old_kind, 'K');
  // Only the key columns have values in a 'K' tuple; the others are sent as NULL.
  EXPECT_EQ(show(up.old_tuple), "t:2|n|n");
  EXPECT_EQ(show(up.new_tuple), "t:20|t:bob|n");
}

TEST(PgoutputCapture, DeleteSendsOldKey) {
  const auto& del = step(4).at<Delete>(1);
  EXPECT_EQ(del.relid, step(1).at<Relation>(1).relid);
  EXPECT_EQ(del.old_kind, 'K');
  EXPECT_EQ(show(del.old_tuple), "t:20|n|n");
}

TEST(PgoutputCapture, ReplicaIdentityFull) {
  const Step& s = step(5);
  const auto& rel = s.at<Relation>(1);
  EXPECT_EQ(rel.nspname, "inventory");
  EXPECT_EQ(rel.relname, "audit");
  EXPECT_EQ(rel.replident, 'f');
  // FULL marks every column as key; varchar(20) has typmod 20 + 4, numeric(10,2) ((10 << 16) | 2) + 4.
  EXPECT_EQ(show(rel.columns), "id 20 -1 key|action 1043 24 key|amount 1700 655366 key");
  EXPECT_EQ(rel.columns[0].type_oid, kInt8);
  EXPECT_EQ(rel.columns[1].type_oid, kVarchar);
  EXPECT_EQ(rel.columns[2].type_oid, kNumeric);

  EXPECT_EQ(show(s.at<Insert>(2).new_tuple), "t:7|t:deposit|t:12.50");
  const auto& up = s.at<Update>(3);
  EXPECT_EQ(up.old_kind, 'O');
  EXPECT_EQ(show(up.old_tuple), "t:7|t:deposit|t:12.50");
  EXPECT_EQ(show(up.new_tuple), "t:7|t:deposit|t:13.75");
  const auto& del = s.at<Delete>(4);
  EXPECT_EQ(del.old_kind, 'O');
  EXPECT_EQ(show(del.old_tuple), "t:7|t:deposit|t:13.75");
}

TEST(PgoutputCapture, UnchangedToastedValueIsNotSent) {
  const auto& rel = step(6).at<Relation>(1);
  EXPECT_EQ(rel.relname, "docs");
  EXPECT_EQ(show(rel.columns), "id 23 -1 key|title 25 -1|body 25 -1");

  const auto& ins = step(6).at<Insert>(2);
  ASSERT_EQ(ins.new_tuple.size(), 3u);
  const Value& body = ins.new_tuple[2];
  EXPECT_EQ(body.kind, ValueKind::Text);
  ASSERT_EQ(body.data.size(), kToastSize);
  EXPECT_EQ(body.data.substr(0, 64), "c4ca4238a0b923820dcc509a6f75849bc81e728d9d4c2f636f067f89cc14862c");
  EXPECT_EQ(body.data.substr(kToastSize - 32), "320722549d1751cf3f247855f937b982");

  const auto& up = step(7).at<Update>(1);
  EXPECT_EQ(up.old_kind, 0);
  EXPECT_EQ(show(up.new_tuple), "t:1|t:v2|u");
}

TEST(PgoutputCapture, ReplicaIdentityFullSendsToastedValueInOldRowOnly) {
  const auto& rel = step(8).at<Relation>(1);
  EXPECT_EQ(rel.relname, "blobs");
  EXPECT_EQ(rel.replident, 'f');
  const auto& inserted = step(8).at<Insert>(2).new_tuple.at(2);
  ASSERT_EQ(inserted.data.size(), kToastSize);
  EXPECT_EQ(inserted.data.substr(0, 32), "b8c37e33defde51cf91e1e03e51657da");
  EXPECT_EQ(inserted.data.substr(kToastSize - 32), "2a50e9c2d6b89b95bcb416d6857f8b45");

  const auto& up = step(9).at<Update>(1);
  EXPECT_EQ(up.old_kind, 'O');
  ASSERT_EQ(up.old_tuple.size(), 3u);
  EXPECT_EQ(show(Tuple(up.old_tuple.begin(), up.old_tuple.begin() + 2)), "t:1|t:v1");
  EXPECT_EQ(up.old_tuple[2].kind, ValueKind::Text);
  EXPECT_EQ(up.old_tuple[2].data, inserted.data);
  EXPECT_EQ(show(up.new_tuple), "t:1|t:v2|u");
}

TEST(PgoutputCapture, UserDefinedTypesAreAnnouncedBeforeTheRelation) {
  const Step& s = step(10);
  const auto& mood = s.at<Type>(1);
  const auto& mood_array = s.at<Type>(2);
  EXPECT_EQ(mood.nspname, "public");
  EXPECT_EQ(mood.typname, "mood");
  EXPECT_EQ(mood_array.nspname, "public");
  EXPECT_EQ(mood_array.typname, "_mood");
  EXPECT_GE(mood.oid, kFirstNormalObjectId);
  EXPECT_GE(mood_array.oid, kFirstNormalObjectId);

  const auto& rel = s.at<Relation>(3);
  EXPECT_EQ(rel.relname, "moods");
  EXPECT_EQ(show(rel.columns), "id 23 -1 key|feeling " + std::to_string(mood.oid) + " -1|history " +
                                   std::to_string(mood_array.oid) + " -1");
  EXPECT_EQ(show(s.at<Insert>(4).new_tuple), "t:1|t:happy|t:{sad,ok}");
}

TEST(PgoutputCapture, ReplicaIdentityUsingIndex) {
  const Step& s = step(11);
  const auto& rel = s.at<Relation>(1);
  EXPECT_EQ(rel.relname, "accounts");
  EXPECT_EQ(rel.replident, 'i');
  EXPECT_EQ(show(rel.columns), "id 23 -1|email 25 -1 key|balance 23 -1");
  EXPECT_EQ(show(s.at<Insert>(2).new_tuple), "t:1|t:carol@example.com|t:100");
  const auto& up = s.at<Update>(3);
  EXPECT_EQ(up.old_kind, 'K');
  EXPECT_EQ(show(up.old_tuple), "n|t:carol@example.com|n");
  EXPECT_EQ(show(up.new_tuple), "t:1|t:carol@example.net|t:100");
}

TEST(PgoutputCapture, SchemaChangeResendsTheRelation) {
  const auto& before = step(1).at<Relation>(1);
  const auto& after = step(12).at<Relation>(1);
  EXPECT_EQ(after.relid, before.relid);
  EXPECT_EQ(after.relname, "users");
  EXPECT_EQ(show(after.columns), kUsersColumns + "|age 23 -1");
  EXPECT_EQ(show(step(12).at<Insert>(2).new_tuple), "t:3|t:dave|n|t:42");
}

TEST(PgoutputCapture, TruncateOfTwoTablesWithOptions) {
  const Step& s = step(13);
  const auto& users = s.at<Relation>(1);
  const auto& audit = s.at<Relation>(2);
  EXPECT_EQ(users.relname, "users");
  EXPECT_EQ(audit.relname, "audit");
  const auto& tr = s.at<Truncate>(3);
  EXPECT_EQ(tr.options, 1 | 2);  // CASCADE | RESTART IDENTITY
  EXPECT_EQ(tr.relids, (std::vector<std::uint32_t>{users.relid, audit.relid}));
}

TEST(PgoutputCapture, TruncateWithoutOptions) {
  const auto& tr = step(14).at<Truncate>(2);
  EXPECT_EQ(tr.options, 0);
  EXPECT_EQ(tr.relids, (std::vector<std::uint32_t>{step(6).at<Relation>(1).relid}));
}

TEST(PgoutputCapture, TransactionalMessages) {
  const Step& s = step(15);
  const auto& text = s.at<Message>(1);
  EXPECT_TRUE(text.transactional);
  EXPECT_EQ(text.prefix, "walstream");
  EXPECT_EQ(text.content, "hello in tx");
  EXPECT_EQ(text.lsn, copy::parse_lsn(s.lines[1]->lsn));
  const auto& binary = s.at<Message>(2);
  EXPECT_TRUE(binary.transactional);
  EXPECT_EQ(binary.prefix, "walstream.bin");
  EXPECT_EQ(binary.content, std::string_view("\x00\xff\x01", 3));
  EXPECT_LT(text.lsn, binary.lsn);
}

TEST(PgoutputCapture, NonTransactionalMessageStandsAlone) {
  const Step& s = step(16);
  ASSERT_EQ(s.msgs.size(), 1u);
  const auto& m = s.at<Message>(0);
  EXPECT_FALSE(m.transactional);
  EXPECT_EQ(m.prefix, "walstream");
  EXPECT_EQ(m.content, "hello outside");
  EXPECT_EQ(m.lsn, copy::parse_lsn(s.lines[0]->lsn));
  EXPECT_EQ(s.lines[0]->xid, 0u);
}

TEST(PgoutputCapture, OriginFollowsBegin) {
  const Step& s = step(17);
  const auto& origin = s.at<Origin>(1);
  EXPECT_EQ(origin.name, "upstream");
  EXPECT_EQ(origin.commit_lsn, 0x100ABCDEFu);  // pg_replication_origin_xact_setup('1/ABCDEF', ...)
  // The transaction's commit time is the origin's timestamp 2026-01-02 03:04:05 UTC, not the local clock.
  EXPECT_EQ(s.at<Begin>(0).commit_time, 820638245LL * 1000000);
  EXPECT_EQ(show(s.at<Relation>(2).columns), kUsersColumns + "|age 23 -1");
  EXPECT_EQ(show(s.at<Insert>(3).new_tuple), "t:4|t:erin|t:erin@example.com|t:7");
}

// Decodes a copy in a heap buffer of exactly its size, so ASan sees any read past the end.
Decoded decode_exact(std::string_view bytes) {
  auto buf = std::make_unique<char[]>(bytes.size());
  std::copy(bytes.begin(), bytes.end(), buf.get());
  return decode(std::string_view(buf.get(), bytes.size()));
}

TEST(PgoutputTruncated, EveryPrefixOfEveryCapturedMessageThrows) {
  for (const Captured& c : fixture()) {
    EXPECT_NO_THROW(decode_exact(c.bytes));
    for (std::size_t len = 0; len < c.bytes.size(); ++len) {
      try {
        decode_exact(std::string_view(c.bytes).substr(0, len));
        ADD_FAILURE() << "no error for " << len << " of " << c.bytes.size() << " bytes at " << c.lsn;
      } catch (const DecodeError& e) {
        EXPECT_LE(e.offset(), len);
      }
    }
  }
}

// The offset a decode error names, or a test failure when there is none.
std::size_t error_offset(const std::string& bytes) {
  try {
    decode_exact(bytes);
  } catch (const DecodeError& e) {
    EXPECT_NE(std::string(e.what()).find("at offset " + std::to_string(e.offset())), std::string::npos) << e.what();
    return e.offset();
  }
  ADD_FAILURE() << "no DecodeError";
  return std::string::npos;
}

std::string with(std::string bytes, std::size_t at, std::string_view replacement) {
  if (at + replacement.size() > bytes.size()) bytes.resize(at + replacement.size());
  std::copy(replacement.begin(), replacement.end(), bytes.begin() + static_cast<std::ptrdiff_t>(at));
  return bytes;
}

const std::string& captured(std::size_t n, std::size_t i) { return step(n).lines.at(i)->bytes; }

// Byte layouts: Begin 'B' final_lsn(1) time(9) xid(17), 21 bytes.
// Insert 'I' relid(1) 'N'(5) ncols(6) kind(8) len(9) data(13).
TEST(PgoutputCorrupt, UnknownMessageType) {
  EXPECT_EQ(error_offset(with(captured(1, 0), 0, "Z")), 0u);
  EXPECT_EQ(error_offset(with(captured(1, 0), 0, std::string(1, '\0'))), 0u);
  // Stream Start exists only in protocol 2.
  EXPECT_EQ(error_offset(std::string("S\0\0\0\1\1", 6)), 0u);
  EXPECT_EQ(error_offset(""), 0u);
}

TEST(PgoutputCorrupt, TrailingBytes) {
  EXPECT_EQ(error_offset(captured(1, 0) + "x"), 21u);
  const std::string& insert = captured(1, 2);
  EXPECT_EQ(error_offset(insert + std::string(3, '\0')), insert.size());
}

TEST(PgoutputCorrupt, BeginWithoutFinalLsn) {
  EXPECT_EQ(error_offset(with(captured(1, 0), 1, std::string(8, '\0'))), 1u);
}

TEST(PgoutputCorrupt, CommitFlags) {
  EXPECT_EQ(error_offset(with(captured(1, 4), 1, "\x01")), 1u);
}

TEST(PgoutputCorrupt, TupleValueKind) {
  EXPECT_EQ(error_offset(with(captured(1, 2), 8, "x")), 8u);
}

TEST(PgoutputCorrupt, TupleMarkers) {
  EXPECT_EQ(error_offset(with(captured(1, 2), 5, "K")), 5u);  // Insert: only 'N'
  EXPECT_EQ(error_offset(with(captured(4, 1), 5, "N")), 5u);  // Delete: only 'K' or 'O'
  EXPECT_EQ(error_offset(with(captured(3, 1), 5, "X")), 5u);  // Update: 'K', 'O' or 'N'
  // Update 'U' relid(1) 'K'(5) ncols(6) 't'(8) len(9) "2"(13) 'n'(14) 'n'(15), then 'N' at 16.
  EXPECT_EQ(error_offset(with(captured(3, 1), 16, "O")), 16u);
}

TEST(PgoutputCorrupt, NegativeLengthsAndCounts) {
  EXPECT_EQ(error_offset(with(captured(1, 2), 9, "\xff\xff\xff\xfe")), 9u);  // value length
  EXPECT_EQ(error_offset(with(captured(1, 2), 6, "\x80\x00")), 6u);          // tuple column count
  // Message 'M' flags(1) lsn(2) "walstream\0"(10) length(20) content(24).
  EXPECT_EQ(error_offset(with(captured(15, 1), 20, "\xff\xff\xff\xff")), 20u);
  EXPECT_EQ(error_offset(with(captured(13, 3), 1, "\xff\xff\xff\xff")), 1u);  // Truncate count
}

TEST(PgoutputCorrupt, LengthsPastTheEnd) {
  // A value claiming 2 GB: the error is where its missing bytes would start.
  EXPECT_EQ(error_offset(with(captured(1, 2), 9, "\x7f\xff\xff\xff")), 13u);
  // Truncate 'T' count(1) options(5) relids(6, 10): a third relid would start at 14.
  EXPECT_EQ(error_offset(with(captured(13, 3), 1, std::string("\0\0\0\3", 4))), 14u);
  EXPECT_EQ(error_offset(with(captured(13, 3), 1, std::string("\0\0\0\1", 4))), 10u);  // trailing relid
  EXPECT_EQ(error_offset(with(captured(13, 3), 1, "\x7f\xff\xff\xff")), 14u);
}

TEST(PgoutputCorrupt, RelationFields) {
  // Relation 'R' relid(1) "public\0"(5) "users\0"(12) replident(18) ncols(19) flags(21).
  const std::string& rel = captured(1, 1);
  EXPECT_EQ(error_offset(with(rel, 18, "x")), 18u);
  EXPECT_EQ(error_offset(with(rel, 19, "\xff\xff")), 19u);
  EXPECT_EQ(error_offset(with(rel, 21, "\x02")), 21u);
  // Without the NUL after "public" the strings run to the end... and beyond, had we not checked.
  EXPECT_EQ(error_offset(rel.substr(0, 11)), 5u);
}

TEST(PgoutputCorrupt, FlagsAndOptions) {
  EXPECT_EQ(error_offset(with(captured(15, 1), 1, "\x02")), 1u);  // Message flags
  EXPECT_EQ(error_offset(with(captured(13, 3), 5, "\x04")), 5u);  // Truncate options
}

TEST(PgoutputCorrupt, ErrorTextNamesWhatAndWhere) {
  try {
    decode(captured(1, 0).substr(0, 12));
    FAIL() << "no DecodeError";
  } catch (const DecodeError& e) {
    EXPECT_STREQ(e.what(), "truncated int64 at offset 9");
    EXPECT_EQ(e.offset(), 9u);
  }
}

}  // namespace
}  // namespace walstream::pgoutput
