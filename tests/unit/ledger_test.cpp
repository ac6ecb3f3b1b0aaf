// The exactly-once accounting (publisher/ledger), driven the way StreamWriter drives it: positions,
// cuts, the outcome of each Redis answer, and the replay filter. Pure code, no servers.
#include "ledger.h"

#include <gtest/gtest.h>

#include <optional>
#include <string_view>
#include <vector>

#include "redis_error.h"

namespace walstream {
namespace {

using namespace std::string_view_literals;
using Kind = Ledger::Outcome::Kind;
using Results = std::vector<std::optional<std::string_view>>;

constexpr auto kNoStream = Ledger::kNoStream;
constexpr std::string_view kOom = "OOM command not allowed when used memory > 'maxmemory'.";
constexpr std::string_view kTopItem =
    "ERR The ID specified in XADD is equal or smaller than the target stream top item";

struct Sent {
  Ledger::Cut cut;
  std::uint64_t checkpoint = 0;
};

// What StreamWriter::send_chunk does: the planned cut with the checkpoint it must carry.
Sent send(Ledger& l) {
  Sent s{l.plan_cut(), l.next_checkpoint()};
  l.sent(s.cut, s.checkpoint);
  return s;
}

// MULTI's +OK and a +QUEUED for every command.
void queue_all(Ledger& l) {
  while (l.queued_seen() < l.queued_expected()) l.queued(false, {});
}

// EXEC's array with every command stored.
Results all_stored(const Ledger& l) { return Results(l.queued_expected() - 1, std::nullopt); }

// The chunk in flight is stored and (without --redis-wait) released at once.
void store(Ledger& l) {
  queue_all(l);
  auto out = l.executed(std::nullopt, all_stored(l));
  ASSERT_EQ(out.kind, Kind::Stored) << out.message;
  ASSERT_TRUE(l.waited(0, 0));
}

::testing::AssertionResult cut_is(const Ledger::Cut& cut, std::size_t commands, std::size_t bytes, bool carry) {
  if (cut.commands == commands && cut.bytes == bytes && cut.carry == carry) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "cut {" << cut.commands << ", " << cut.bytes << ", " << cut.carry
                                       << "}, expected {" << commands << ", " << bytes << ", " << carry << "}";
}

// --- the replay filter -------------------------------------------------------------------------------

TEST(LedgerReplayFilter, AdmitsOnlyIdsAboveTheStreamsLastId) {
  Ledger l;
  auto a = l.add_stream();
  auto b = l.add_stream();
  EXPECT_FALSE(l.hwm_known(a));
  EXPECT_TRUE(l.set_hwm(a, {100, 2}));
  EXPECT_TRUE(l.hwm_known(a));
  EXPECT_FALSE(l.hwm_known(b));
  EXPECT_EQ(l.hwm(a), (StreamId{100, 2}));

  EXPECT_FALSE(l.admit(a, {99, 9}));   // below
  EXPECT_FALSE(l.admit(a, {100, 1}));  // below, same LSN
  EXPECT_FALSE(l.admit(a, {100, 2}));  // at: already stored
  EXPECT_TRUE(l.admit(a, {100, 3}));   // above, same LSN
  EXPECT_TRUE(l.admit(a, {101, 1}));
  EXPECT_EQ(l.replays_skipped(), 3u);

  // Each stream has its own last ID: b's is empty, so everything above 0-0 goes.
  EXPECT_TRUE(l.set_hwm(b, {}));
  EXPECT_TRUE(l.admit(b, {1, 1}));
  EXPECT_TRUE(l.admit(b, {50, 1}));
  EXPECT_EQ(l.replays_skipped(), 3u);
}

TEST(LedgerReplayFilter, LastIdAboveTheWalPositionIsRefused) {
  Ledger l;
  auto a = l.add_stream();
  l.raise_wal_limit(1000);
  l.raise_wal_limit(500);  // never lowered
  EXPECT_EQ(l.wal_limit(), 1000u);
  EXPECT_FALSE(l.set_hwm(a, {1001, 1}));
  EXPECT_TRUE(l.set_hwm(a, {1000, 7}));  // at the limit: the seq is a position inside that transaction
  EXPECT_TRUE(l.set_hwm(a, {999, 1}));
  l.raise_wal_limit(2000);
  EXPECT_TRUE(l.set_hwm(a, {1001, 1}));
}

TEST(LedgerReplayFilter, WithoutAWalLimitAnyLastIdIsAccepted) {
  Ledger l;
  auto a = l.add_stream();
  EXPECT_EQ(l.wal_limit(), 0u);
  EXPECT_TRUE(l.set_hwm(a, {~std::uint64_t{0}, 1}));
}

TEST(LedgerReplayFilter, TakeReplaysCountsTheRunAndItsLsnRange) {
  Ledger l;
  auto a = l.add_stream();
  auto b = l.add_stream();
  l.set_hwm(a, {300, 5});
  l.set_hwm(b, {250, 1});
  EXPECT_EQ(l.take_replays(), std::nullopt);
  EXPECT_FALSE(l.admit(a, {100, 1}));
  EXPECT_FALSE(l.admit(b, {100, 2}));
  EXPECT_FALSE(l.admit(a, {200, 1}));
  EXPECT_FALSE(l.admit(a, {300, 5}));
  auto run = l.take_replays();
  ASSERT_TRUE(run);
  EXPECT_EQ(run->entries, 4u);
  EXPECT_EQ(run->first_lsn, 100u);
  EXPECT_EQ(run->last_lsn, 300u);
  EXPECT_EQ(l.take_replays(), std::nullopt);  // taken
  EXPECT_EQ(l.replays_skipped(), 4u);         // the total stays

  EXPECT_FALSE(l.admit(a, {300, 4}));
  run = l.take_replays();
  ASSERT_TRUE(run);
  EXPECT_EQ(run->entries, 1u);
  EXPECT_EQ(run->first_lsn, 300u);
  EXPECT_EQ(run->last_lsn, 300u);
  EXPECT_EQ(l.replays_skipped(), 5u);
}

TEST(LedgerReplayFilter, EndedOnlyWaitsForAnAdmittedEntryAfterTheRun) {
  Ledger l;
  auto a = l.add_stream();
  l.set_hwm(a, {200, 1});
  EXPECT_TRUE(l.admit(a, {300, 1}));  // admitted before any replay: ends nothing
  EXPECT_EQ(l.take_replays(true), std::nullopt);

  EXPECT_FALSE(l.admit(a, {100, 1}));
  EXPECT_FALSE(l.admit(a, {150, 1}));
  EXPECT_EQ(l.take_replays(true), std::nullopt);  // the run may go on
  EXPECT_FALSE(l.admit(a, {200, 1}));
  EXPECT_TRUE(l.admit(a, {400, 1}));  // the run ended
  auto run = l.take_replays(true);
  ASSERT_TRUE(run);
  EXPECT_EQ(run->entries, 3u);
  EXPECT_EQ(run->first_lsn, 100u);
  EXPECT_EQ(run->last_lsn, 200u);
  EXPECT_EQ(l.take_replays(true), std::nullopt);
  EXPECT_EQ(l.take_replays(false), std::nullopt);

  // Taking the run forgets that it ended: a new run waits for its own end again.
  EXPECT_FALSE(l.admit(a, {120, 1}));
  EXPECT_EQ(l.take_replays(true), std::nullopt);
  run = l.take_replays(false);  // without ended_only: whatever was skipped
  ASSERT_TRUE(run);
  EXPECT_EQ(run->entries, 1u);
  EXPECT_EQ(run->first_lsn, 120u);
}

// --- the chunk being built -----------------------------------------------------------------------------

TEST(LedgerBuilding, TransactionAddsCommandsAndItsCommitTheCheckpoint) {
  Ledger l;
  auto a = l.add_stream();
  EXPECT_FALSE(l.in_transaction());
  EXPECT_FALSE(l.checkpoint_due());
  EXPECT_EQ(l.next_checkpoint(), 0u);
  l.begin(0);
  EXPECT_TRUE(l.in_transaction());
  l.command(kNoStream, {});  // a registry HSET is a command too
  l.command(a, {500, 1});
  l.command(a, {500, 2});
  EXPECT_EQ(l.building_commands(), 3u);
  EXPECT_EQ(l.next_checkpoint(), 0u);  // nothing completed
  l.commit(510);
  EXPECT_FALSE(l.in_transaction());
  EXPECT_FALSE(l.checkpoint_due());  // the chunk with entries carries it
  EXPECT_EQ(l.next_checkpoint(), 510u);
  EXPECT_TRUE(cut_is(l.plan_cut(), 3, 0, false));
  EXPECT_FALSE(l.in_flight());
}

TEST(LedgerBuilding, CommitWithAnEmptyChunkMakesACheckpointDue) {
  Ledger l;
  l.begin(0);  // every change a replay, or no published table
  l.commit(700);
  EXPECT_TRUE(l.checkpoint_due());
  EXPECT_EQ(l.next_checkpoint(), 700u);
  auto s = send(l);
  EXPECT_TRUE(cut_is(s.cut, 0, 0, false));
  EXPECT_EQ(s.checkpoint, 700u);
  EXPECT_TRUE(l.in_flight());
  EXPECT_EQ(l.queued_expected(), 2u);  // MULTI and the checkpoint HSET
  EXPECT_FALSE(l.checkpoint_due());    // sent
  EXPECT_EQ(l.next_checkpoint(), 0u);
  store(l);
  EXPECT_EQ(l.stored(), 700u);
  EXPECT_EQ(l.acked(), 700u);
  EXPECT_EQ(l.entries_written(), 0u);
}

TEST(LedgerBuilding, NoCheckpointIsDueInsideATransactionOrWithEntriesWaiting) {
  Ledger l;
  auto a = l.add_stream();
  l.begin(0);
  l.commit(700);
  ASSERT_TRUE(l.checkpoint_due());
  l.begin(0);
  EXPECT_FALSE(l.checkpoint_due());  // the open transaction's chunk will carry it
  l.command(a, {800, 1});
  l.commit(810);
  EXPECT_FALSE(l.checkpoint_due());  // entries wait: their chunk carries it
  EXPECT_EQ(l.next_checkpoint(), 810u);
}

TEST(LedgerBuilding, AdvanceMovesThePositionWithNothingToWrite) {
  Ledger l;
  l.advance(900);
  EXPECT_TRUE(l.checkpoint_due());
  EXPECT_EQ(l.next_checkpoint(), 900u);
  l.advance(800);  // older: ignored
  EXPECT_EQ(l.next_checkpoint(), 900u);
  l.advance(950);
  EXPECT_EQ(l.next_checkpoint(), 950u);
  send(l);
  store(l);
  EXPECT_EQ(l.acked(), 950u);
  l.advance(950);  // the same keepalive again: nothing new
  EXPECT_FALSE(l.checkpoint_due());
  EXPECT_EQ(l.next_checkpoint(), 0u);
}

// A new session takes nothing over from the checkpoint Redis holds: PostgreSQL resends from the slot's
// position, the replays are skipped, and a position is confirmed only once this session's own
// checkpoint (possibly below the one found, still at or above the slot's) is stored.
TEST(LedgerBuilding, ANewSessionConfirmsOnlyWhatItsOwnCheckpointsCover) {
  Ledger l;
  auto a = l.add_stream();
  ASSERT_TRUE(l.set_hwm(a, {990, 1}));
  EXPECT_EQ(l.acked(), 0u);
  l.begin(0);
  EXPECT_FALSE(l.admit(a, {990, 1}));  // a replay
  l.commit(1000);
  EXPECT_EQ(l.acked(), 0u);
  EXPECT_TRUE(l.checkpoint_due());
  auto s = send(l);
  EXPECT_EQ(s.checkpoint, 1000u);
  store(l);
  EXPECT_EQ(l.acked(), 1000u);
}

TEST(LedgerBuilding, OnlyEntriesFillAChunk) {
  Ledger l;
  auto a = l.add_stream();
  l.begin(0);
  l.command(kNoStream, {}, 5000);  // a registry HSET
  for (std::uint64_t i = 1; i <= 3; ++i) l.command(a, {100, i}, 10);
  EXPECT_FALSE(l.full(4, 1000));
  EXPECT_TRUE(l.full(3, 1000));    // three entries, not four commands
  EXPECT_FALSE(l.full(4, 31));
  EXPECT_TRUE(l.full(4, 30));      // 30 entry bytes; the registry's 5000 do not count
  l.commit(110);
  // After a cut the carried transaction's entries are what fills the next chunk.
  l.begin(9999);
  l.command(a, {200, 1}, 7);
  auto s = send(l);
  EXPECT_TRUE(cut_is(s.cut, 4, 9999, true));
  EXPECT_TRUE(l.full(1, 1000));
  EXPECT_FALSE(l.full(2, 1000));
  EXPECT_TRUE(l.full(2, 7));
  EXPECT_FALSE(l.full(2, 8));
  // Dropping the open transaction takes its entries out of the count.
  store(l);
  ASSERT_TRUE(l.drop_open_transaction().has_value());
  EXPECT_FALSE(l.full(1, 1000));
}

TEST(LedgerBuilding, NextCheckpointIsNeverAtOrBelowOneAlreadySent) {
  Ledger l;
  auto a = l.add_stream();
  l.begin(0);
  l.command(a, {100, 1});
  l.commit(110);
  EXPECT_EQ(send(l).checkpoint, 110u);
  // Sent, not yet stored: the next chunk must not carry it again.
  l.advance(110);
  EXPECT_FALSE(l.checkpoint_due());
  EXPECT_EQ(l.next_checkpoint(), 0u);
  l.advance(105);
  EXPECT_EQ(l.next_checkpoint(), 0u);
  store(l);
  l.begin(0);
  l.command(a, {200, 1});  // an open transaction's piece: nothing new completed
  EXPECT_EQ(l.next_checkpoint(), 0u);
  EXPECT_EQ(send(l).checkpoint, 0u);
  EXPECT_EQ(l.queued_expected(), 2u);  // MULTI and the XADD, no HSET
}

// --- cuts ------------------------------------------------------------------------------------------------

TEST(LedgerCut, ChunkFullInATransactionAfterCompleteOnesIsCutAtItsStart) {
  Ledger l;
  auto a = l.add_stream();
  auto b = l.add_stream();
  l.begin(0);
  l.command(a, {100, 1});
  l.command(b, {100, 2});
  l.commit(110);
  l.begin(250);
  l.command(a, {200, 1});
  l.command(b, {200, 2});
  l.command(a, {200, 3});
  auto s = send(l);
  EXPECT_TRUE(cut_is(s.cut, 2, 250, true));
  EXPECT_EQ(s.checkpoint, 110u);  // the completed one's end, not the open one's
  EXPECT_EQ(l.queued_expected(), 4u);  // MULTI, 2 XADDs, the HSET
  EXPECT_EQ(l.building_commands(), 3u);  // the carried transaction
  EXPECT_TRUE(l.in_transaction());
  store(l);
  EXPECT_EQ(l.acked(), 110u);
  EXPECT_EQ(l.entries_written(), 2u);

  // The carried transaction opens the next chunk: full again, it goes whole.
  EXPECT_TRUE(cut_is(l.plan_cut(), 3, 0, false));
  l.command(a, {200, 4});
  l.commit(210);
  l.begin(900);
  l.command(b, {300, 1});
  s = send(l);
  EXPECT_TRUE(cut_is(s.cut, 4, 900, true));  // …and completed, it goes before the next open one
  EXPECT_EQ(s.checkpoint, 210u);
  EXPECT_EQ(l.queued_expected(), 6u);
  EXPECT_EQ(l.building_commands(), 1u);
  store(l);
  EXPECT_EQ(l.acked(), 210u);
  EXPECT_EQ(l.entries_written(), 6u);

  l.commit(310);
  s = send(l);
  EXPECT_TRUE(cut_is(s.cut, 1, 0, false));
  EXPECT_EQ(s.checkpoint, 310u);
  store(l);
  EXPECT_EQ(l.acked(), 310u);
  EXPECT_EQ(l.entries_written(), 7u);
}

TEST(LedgerCut, CarriedTransactionGrowingPastAChunkGoesWholeAndCommitsLater) {
  Ledger l;
  auto a = l.add_stream();
  l.begin(0);
  l.command(a, {100, 1});
  l.commit(110);
  l.begin(40);
  l.command(a, {200, 1});
  EXPECT_TRUE(cut_is(send(l).cut, 1, 40, true));
  store(l);
  l.command(a, {200, 2});
  auto s = send(l);  // full again with only the carried transaction
  EXPECT_TRUE(cut_is(s.cut, 2, 0, false));
  EXPECT_EQ(s.checkpoint, 0u);
  store(l);
  EXPECT_EQ(l.acked(), 110u);
  EXPECT_EQ(l.building_commands(), 0u);
  l.command(a, {200, 3});
  l.commit(210);
  s = send(l);
  EXPECT_TRUE(cut_is(s.cut, 1, 0, false));
  EXPECT_EQ(s.checkpoint, 210u);
  store(l);
  EXPECT_EQ(l.acked(), 210u);
  EXPECT_EQ(l.entries_written(), 4u);
}

TEST(LedgerCut, OpenTransactionThatStartedTheChunkGoesWhole) {
  Ledger l;
  auto a = l.add_stream();
  l.begin(0);
  l.command(a, {100, 1});
  l.command(a, {100, 2});
  l.command(a, {100, 3});
  auto s = send(l);
  EXPECT_TRUE(cut_is(s.cut, 3, 0, false));
  EXPECT_EQ(s.checkpoint, 0u);
  EXPECT_EQ(l.queued_expected(), 4u);  // MULTI and 3 XADDs
  EXPECT_EQ(l.building_commands(), 0u);
  EXPECT_TRUE(l.in_transaction());
  store(l);
  EXPECT_EQ(l.stored(), 0u);  // no checkpoint: nothing may be confirmed yet
  EXPECT_EQ(l.acked(), 0u);
  EXPECT_EQ(l.entries_written(), 3u);
}

TEST(LedgerCut, TransactionLargerThanAChunkGoesInWholePieces) {
  Ledger l;
  auto a = l.add_stream();
  l.begin(0);
  for (std::uint64_t piece = 0; piece < 3; ++piece) {
    l.command(a, {100, 2 * piece + 1});
    l.command(a, {100, 2 * piece + 2});
    auto s = send(l);
    EXPECT_TRUE(cut_is(s.cut, 2, 0, false));
    EXPECT_EQ(s.checkpoint, 0u);
    store(l);
    EXPECT_EQ(l.acked(), 0u);
  }
  l.command(a, {100, 7});
  l.commit(110);
  auto s = send(l);
  EXPECT_TRUE(cut_is(s.cut, 1, 0, false));
  EXPECT_EQ(s.checkpoint, 110u);
  store(l);
  EXPECT_EQ(l.acked(), 110u);
  EXPECT_EQ(l.entries_written(), 7u);
}

TEST(LedgerCut, TransactionWhosePiecesAreAllSentEndsWithACheckpointOnlyChunk) {
  Ledger l;
  auto a = l.add_stream();
  l.begin(0);
  l.command(a, {100, 1});
  send(l);
  store(l);
  l.commit(110);  // its last entry already left
  EXPECT_TRUE(l.checkpoint_due());
  auto s = send(l);
  EXPECT_TRUE(cut_is(s.cut, 0, 0, false));
  EXPECT_EQ(s.checkpoint, 110u);
  store(l);
  EXPECT_EQ(l.acked(), 110u);
}

TEST(LedgerCut, FirstTransactionOfAChunkStartsAtByteZero) {
  // With an empty chunk the first command starts right after the MULTI the writer frames: the whole
  // chunk is that transaction, whatever offset the writer passed.
  Ledger l;
  auto a = l.add_stream();
  l.begin(77);
  l.command(a, {100, 1});
  EXPECT_TRUE(cut_is(l.plan_cut(), 1, 0, false));
  EXPECT_EQ(l.drop_open_transaction(), std::optional<std::size_t>(0));
}

// --- graceful stop: dropping the open transaction ---------------------------------------------------------

TEST(LedgerDrop, OutsideATransactionKeepsTheChunk) {
  Ledger l;
  auto a = l.add_stream();
  EXPECT_EQ(l.drop_open_transaction(), std::nullopt);
  l.begin(0);
  l.command(a, {100, 1});
  l.commit(110);
  EXPECT_EQ(l.drop_open_transaction(), std::nullopt);
  EXPECT_EQ(l.building_commands(), 1u);
  EXPECT_EQ(l.next_checkpoint(), 110u);
}

TEST(LedgerDrop, OpenTransactionAfterCompleteOnesKeepsTheirBytes) {
  Ledger l;
  auto a = l.add_stream();
  l.begin(0);
  l.command(a, {100, 1});
  l.commit(110);
  l.begin(250);
  l.command(kNoStream, {});
  l.command(a, {200, 1});
  EXPECT_EQ(l.drop_open_transaction(), std::optional<std::size_t>(250));
  EXPECT_FALSE(l.in_transaction());
  EXPECT_EQ(l.building_commands(), 1u);
  EXPECT_EQ(l.drop_open_transaction(), std::nullopt);  // nothing open any more
  auto s = send(l);
  EXPECT_TRUE(cut_is(s.cut, 1, 0, false));
  EXPECT_EQ(s.checkpoint, 110u);
  EXPECT_EQ(l.queued_expected(), 3u);
}

TEST(LedgerDrop, OpenTransactionThatStartedTheChunkEmptiesIt) {
  Ledger l;
  auto a = l.add_stream();
  l.begin(0);
  l.commit(110);  // nothing to write: only a position
  l.begin(0);
  l.command(a, {200, 1});
  l.command(a, {200, 2});
  EXPECT_EQ(l.drop_open_transaction(), std::optional<std::size_t>(0));
  EXPECT_FALSE(l.in_transaction());
  EXPECT_EQ(l.building_commands(), 0u);
  EXPECT_TRUE(l.checkpoint_due());  // the completed position still goes
  EXPECT_EQ(l.next_checkpoint(), 110u);
}

TEST(LedgerDrop, CarriedTransactionIsDroppedWhole) {
  Ledger l;
  auto a = l.add_stream();
  l.begin(0);
  l.command(a, {100, 1});
  l.commit(110);
  l.begin(40);
  l.command(a, {200, 1});
  l.command(a, {200, 2});
  EXPECT_TRUE(cut_is(send(l).cut, 1, 40, true));
  store(l);
  l.command(a, {200, 3});
  ASSERT_EQ(l.building_commands(), 3u);
  EXPECT_EQ(l.drop_open_transaction(), std::optional<std::size_t>(0));
  EXPECT_EQ(l.building_commands(), 0u);
  EXPECT_FALSE(l.in_transaction());
  EXPECT_FALSE(l.checkpoint_due());  // 110 is stored already
  EXPECT_EQ(l.acked(), 110u);
}

TEST(LedgerDrop, TransactionBegunInAnEarlierChunkLosesAllItsCommands) {
  Ledger l;
  auto a = l.add_stream();
  l.begin(0);
  l.command(a, {100, 1});
  l.command(a, {100, 2});
  send(l);  // a piece
  store(l);
  l.command(kNoStream, {});
  l.command(a, {100, 3});
  l.command(a, {100, 4});
  EXPECT_EQ(l.drop_open_transaction(), std::optional<std::size_t>(0));
  EXPECT_EQ(l.building_commands(), 0u);
  EXPECT_FALSE(l.in_transaction());
  EXPECT_FALSE(l.checkpoint_due());
  EXPECT_EQ(l.next_checkpoint(), 0u);

  // A transaction after the drop builds a chunk of its own.
  l.begin(0);
  l.command(a, {300, 1});
  l.commit(310);
  auto s = send(l);
  EXPECT_TRUE(cut_is(s.cut, 1, 0, false));
  EXPECT_EQ(s.checkpoint, 310u);
}

// --- the chunk in flight ---------------------------------------------------------------------------------

TEST(LedgerInFlight, QueuedRepliesExpectedCountTheCheckpointHset) {
  Ledger l;
  auto a = l.add_stream();
  l.begin(0);
  l.command(a, {100, 1});
  l.command(a, {100, 2});
  EXPECT_EQ(send(l).checkpoint, 0u);
  EXPECT_TRUE(l.in_flight());
  EXPECT_EQ(l.queued_expected(), 3u);
  EXPECT_EQ(l.queued_seen(), 0u);
  l.queued(false, {});
  EXPECT_EQ(l.queued_seen(), 1u);
  queue_all(l);
  EXPECT_EQ(l.queued_seen(), 3u);
  ASSERT_EQ(l.executed(std::nullopt, all_stored(l)).kind, Kind::Stored);
  ASSERT_TRUE(l.waited(0, 0));

  l.command(a, {100, 3});
  l.commit(110);
  EXPECT_EQ(send(l).checkpoint, 110u);
  EXPECT_EQ(l.queued_expected(), 3u);  // MULTI, the XADD, the HSET
}

TEST(LedgerInFlight, StoredMovesStoredAndWaitReleasesAcked) {
  Ledger l;
  auto a = l.add_stream();
  l.begin(0);
  l.command(kNoStream, {});
  l.command(a, {100, 1});
  l.command(a, {100, 2});
  l.commit(110);
  send(l);
  queue_all(l);
  auto out = l.executed(std::nullopt, Results(4, std::nullopt));
  EXPECT_EQ(out.kind, Kind::Stored);
  EXPECT_EQ(out.message, "");
  EXPECT_EQ(l.stored(), 110u);
  EXPECT_EQ(l.acked(), 0u);  // not on enough replicas yet
  EXPECT_TRUE(l.in_flight());
  EXPECT_EQ(l.entries_written(), 2u);  // the registry and checkpoint HSETs are not entries

  EXPECT_FALSE(l.waited(0, 2));
  EXPECT_FALSE(l.waited(1, 2));  // short: WAIT again
  EXPECT_EQ(l.acked(), 0u);
  EXPECT_TRUE(l.in_flight());
  EXPECT_TRUE(l.waited(2, 2));
  EXPECT_EQ(l.acked(), 110u);
  EXPECT_FALSE(l.in_flight());
}

// --redis-wait without holding the pipeline: a stored chunk leaves flight (the next may go to the
// master) but its checkpoint is confirmed only once a WAIT says the replicas have it.
TEST(LedgerInFlight, StoredChunkLeavesFlightAndIsConfirmedOnlyWhenReplicated) {
  Ledger l;
  auto a = l.add_stream();
  l.begin(0);
  l.command(a, {100, 1});
  l.commit(110);
  send(l);
  EXPECT_EQ(l.release_stored(), 0u);  // not stored yet: nothing to release
  queue_all(l);
  ASSERT_EQ(l.executed(std::nullopt, all_stored(l)).kind, Kind::Stored);
  EXPECT_EQ(l.release_stored(), 110u);
  EXPECT_FALSE(l.in_flight());
  EXPECT_EQ(l.stored(), 110u);
  EXPECT_EQ(l.acked(), 0u);
  l.replicated(110);
  EXPECT_EQ(l.acked(), 110u);
  l.replicated(90);  // an older WAIT answering late never lowers it
  EXPECT_EQ(l.acked(), 110u);
}

TEST(LedgerInFlight, MoreReplicasThanWantedRelease) {
  Ledger l;
  l.advance(300);
  send(l);
  queue_all(l);
  ASSERT_EQ(l.executed(std::nullopt, all_stored(l)).kind, Kind::Stored);
  EXPECT_TRUE(l.waited(3, 1));
  EXPECT_EQ(l.acked(), 300u);
  EXPECT_FALSE(l.in_flight());
}

TEST(LedgerInFlight, ChunkWithoutCheckpointMovesNoPosition) {
  Ledger l;
  auto a = l.add_stream();
  l.advance(50);
  send(l);
  store(l);
  ASSERT_EQ(l.acked(), 50u);
  l.begin(0);
  l.command(a, {100, 1});
  send(l);
  queue_all(l);
  ASSERT_EQ(l.executed(std::nullopt, all_stored(l)).kind, Kind::Stored);
  EXPECT_EQ(l.stored(), 50u);
  EXPECT_TRUE(l.waited(1, 1));
  EXPECT_EQ(l.acked(), 50u);
  EXPECT_EQ(l.entries_written(), 1u);
}

// A chunk of two XADDs (streams a, b) and its checkpoint: 3 commands, 4 queued replies.
struct TwoEntryChunk : ::testing::Test {
  void SetUp() override {
    a = l.add_stream();
    b = l.add_stream();
    l.begin(0);
    l.command(a, {100, 1});
    l.command(b, {100, 2});
    l.commit(110);
    ASSERT_EQ(send(l).checkpoint, 110u);
    ASSERT_EQ(l.queued_expected(), 4u);
  }
  void expect_nothing_stored() {
    EXPECT_EQ(l.stored(), 0u);
    EXPECT_EQ(l.acked(), 0u);
    EXPECT_EQ(l.entries_written(), 0u);
  }
  Ledger l;
  Ledger::Handle a = 0, b = 0;
};

TEST_F(TwoEntryChunk, RefusedMultiWithEveryCommandStoredIsStored) {
  l.queued(true, "ERR MULTI calls can not be nested");
  l.queued(false, {});  // without MULTI the commands ran one by one: their replies are the results
  l.queued(false, {});
  l.queued(false, {});
  auto out = l.executed("ERR EXEC without MULTI"sv, {});
  EXPECT_EQ(out.kind, Kind::Stored) << out.message;
  EXPECT_EQ(l.stored(), 110u);
  EXPECT_EQ(l.entries_written(), 2u);
  EXPECT_TRUE(l.waited(0, 0));
  EXPECT_EQ(l.acked(), 110u);
}

TEST_F(TwoEntryChunk, RefusedMultiThenAStoredPrefixIsTransientForOom) {
  l.queued(true, kOom);
  l.queued(false, {});  // XADD a stored
  l.queued(true, kOom);  // XADD b refused
  l.queued(true, kOom);  // HSET refused
  auto out = l.executed("ERR EXEC without MULTI"sv, {});
  EXPECT_EQ(out.kind, Kind::Transient);
  EXPECT_EQ(out.message, kOom);
  EXPECT_FALSE(out.registry);
  expect_nothing_stored();
}

TEST_F(TwoEntryChunk, RefusedMultiThenAStoredPrefixIsFatalForOtherErrors) {
  l.queued(true, "ERR unknown command 'MULTI'");
  l.queued(false, {});
  l.queued(false, {});
  l.queued(true, "ERR unknown command 'HSET'");
  auto out = l.executed("ERR unknown command 'EXEC'"sv, {});
  EXPECT_EQ(out.kind, Kind::Fatal);
  EXPECT_EQ(out.message, "ERR unknown command 'MULTI'");
  EXPECT_FALSE(out.registry);
  expect_nothing_stored();
}

TEST_F(TwoEntryChunk, RefusedMultiThenRefusedThenStoredIsAHole) {
  l.queued(true, kOom);
  l.queued(true, kOom);  // XADD a refused
  l.queued(false, {});   // XADD b stored after it: the replay filter would step over a's entry
  l.queued(false, {});
  auto out = l.executed("ERR EXEC without MULTI"sv, {});
  EXPECT_EQ(out.kind, Kind::Fatal);  // even though OOM alone is retryable
  EXPECT_NE(out.message.find("hole"), std::string::npos) << out.message;
  EXPECT_NE(out.message.find(kOom), std::string::npos) << out.message;
  expect_nothing_stored();
}

TEST_F(TwoEntryChunk, RefusalWhileQueueingRecordsTheFirstErrorsStreamAndId) {
  l.queued(false, {});
  l.queued(false, {});
  l.queued(true, kOom);  // XADD b
  l.queued(true, "ERR wrong number of arguments for 'hset' command");
  auto out = l.executed("EXECABORT Transaction discarded because of previous errors."sv, {});
  EXPECT_EQ(out.kind, Kind::Transient);
  EXPECT_EQ(out.message, kOom);
  EXPECT_EQ(out.stream, b);
  EXPECT_EQ(out.id, (StreamId{100, 2}));
  expect_nothing_stored();
}

TEST_F(TwoEntryChunk, NonRetryableRefusalWhileQueueingIsFatal) {
  l.queued(false, {});
  l.queued(true, "ERR wrong number of arguments for 'xadd' command");  // XADD a
  l.queued(false, {});
  l.queued(false, {});
  auto out = l.executed("EXECABORT Transaction discarded because of previous errors."sv, {});
  EXPECT_EQ(out.kind, Kind::Fatal);
  EXPECT_EQ(out.message, "ERR wrong number of arguments for 'xadd' command");
  EXPECT_EQ(out.stream, a);
  EXPECT_EQ(out.id, (StreamId{100, 1}));
  EXPECT_FALSE(out.registry);
  expect_nothing_stored();
}

TEST_F(TwoEntryChunk, ExecAbortWrappingOomIsTransient) {
  queue_all(l);
  auto out = l.executed("EXECABORT Transaction discarded because of: OOM command not allowed when used memory > "
                        "'maxmemory'."sv,
                        {});
  EXPECT_EQ(out.kind, Kind::Transient);
  EXPECT_EQ(out.message, kOom);  // the wrapper is taken off
  EXPECT_EQ(out.stream, kNoStream);
  expect_nothing_stored();
  EXPECT_TRUE(l.in_flight());
}

TEST_F(TwoEntryChunk, ExecAbortWrappingReadonlyIsTransient) {
  queue_all(l);
  auto out = l.executed("EXECABORT Transaction discarded because of: READONLY You can't write against a read only "
                        "replica."sv,
                        {});
  EXPECT_EQ(out.kind, Kind::Transient);
  EXPECT_EQ(out.message, "READONLY You can't write against a read only replica.");
}

TEST_F(TwoEntryChunk, ExecAbortWrappingOtherErrorsIsFatal) {
  queue_all(l);
  auto out = l.executed("EXECABORT Transaction discarded because of: ERR something else"sv, {});
  EXPECT_EQ(out.kind, Kind::Fatal);
  EXPECT_EQ(out.message, "ERR something else");
  EXPECT_FALSE(out.registry);
  expect_nothing_stored();
}

TEST_F(TwoEntryChunk, ExecNilIsFatal) {
  queue_all(l);
  auto out = l.executed("EXEC aborted"sv, {});
  EXPECT_EQ(out.kind, Kind::Fatal);
  EXPECT_EQ(out.message, "EXEC aborted");
  expect_nothing_stored();
}

TEST_F(TwoEntryChunk, ExecRetryableErrorUnwrappedIsTransient) {
  queue_all(l);
  auto out = l.executed("LOADING Redis is loading the dataset in memory"sv, {});
  EXPECT_EQ(out.kind, Kind::Transient);
  EXPECT_EQ(out.message, "LOADING Redis is loading the dataset in memory");
}

TEST_F(TwoEntryChunk, XaddAtOrBelowTheTopItemIsAConflictAtThatEntry) {
  queue_all(l);
  auto out = l.executed(std::nullopt, Results{std::nullopt, kTopItem, std::nullopt});
  EXPECT_EQ(out.kind, Kind::Conflict);
  EXPECT_EQ(out.message, kTopItem);
  EXPECT_EQ(out.stream, b);
  EXPECT_EQ(out.id, (StreamId{100, 2}));
  EXPECT_FALSE(out.registry);
  expect_nothing_stored();
}

// MULTI/EXEC does not roll back: a conflict on one stream says nothing of the others, and any other
// refusal in the same EXEC makes it fatal.
TEST_F(TwoEntryChunk, EveryConflictingStreamIsListedAndAnyOtherRefusalIsFatal) {
  queue_all(l);
  auto both = l.executed(std::nullopt, Results{kTopItem, kTopItem, std::nullopt});
  EXPECT_EQ(both.kind, Kind::Conflict);
  ASSERT_EQ(both.conflicts.size(), 2u);
  EXPECT_EQ(both.conflicts[0].stream, a);
  EXPECT_EQ(both.conflicts[0].id, (StreamId{100, 1}));
  EXPECT_EQ(both.conflicts[1].stream, b);
  EXPECT_EQ(both.conflicts[1].id, (StreamId{100, 2}));

  Ledger m;
  auto x = m.add_stream();
  m.begin(0);
  m.command(x, {100, 1});
  m.command(x, {100, 2});
  m.commit(110);
  send(m);
  queue_all(m);
  auto mixed = m.executed(std::nullopt, Results{kTopItem, "WRONGTYPE Operation against a key"sv, std::nullopt});
  EXPECT_EQ(mixed.kind, Kind::Fatal);
  EXPECT_EQ(mixed.id, (StreamId{100, 2}));
  ASSERT_EQ(mixed.conflicts.size(), 1u);  // one per stream
}

// The conflict carries the refused entry's fingerprint: the writer compares it with the entry Redis
// holds at that ID before it calls the conflict its own late write.
TEST(LedgerInFlight, ConflictCarriesTheEntrysFingerprint) {
  Ledger l;
  auto a = l.add_stream();
  l.begin(0);
  l.command(a, {100, 1}, 40, 0xfeedu);
  l.commit(110);
  send(l);
  queue_all(l);
  auto out = l.executed(std::nullopt, Results{kTopItem, std::nullopt});
  ASSERT_EQ(out.kind, Kind::Conflict);
  ASSERT_EQ(out.conflicts.size(), 1u);
  EXPECT_EQ(out.conflicts[0].fingerprint, 0xfeedu);
}

TEST_F(TwoEntryChunk, OtherXaddErrorInExecIsFatalAtThatEntry) {
  queue_all(l);
  auto out = l.executed(std::nullopt,
                        Results{"ERR The ID specified in XADD must be greater than 0-0"sv, std::nullopt, std::nullopt});
  EXPECT_EQ(out.kind, Kind::Fatal);
  EXPECT_EQ(out.message, "ERR The ID specified in XADD must be greater than 0-0");
  EXPECT_EQ(out.stream, a);
  EXPECT_EQ(out.id, (StreamId{100, 1}));
  EXPECT_FALSE(out.registry);
  expect_nothing_stored();
}

TEST_F(TwoEntryChunk, CheckpointHsetErrorIsAFatalRegistryWrite) {
  queue_all(l);
  constexpr auto wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value"sv;
  auto out = l.executed(std::nullopt, Results{std::nullopt, std::nullopt, wrongtype});
  EXPECT_EQ(out.kind, Kind::Fatal);
  EXPECT_TRUE(out.registry);
  EXPECT_EQ(out.message, wrongtype);
  EXPECT_EQ(out.stream, kNoStream);
  expect_nothing_stored();
}

TEST_F(TwoEntryChunk, ResultsOfAnotherSizeAreFatal) {
  queue_all(l);
  auto out = l.executed(std::nullopt, Results(2, std::nullopt));
  EXPECT_EQ(out.kind, Kind::Fatal);
  EXPECT_EQ(out.message, "unexpected reply to EXEC");
  expect_nothing_stored();
}

TEST_F(TwoEntryChunk, MoreResultsThanCommandsAreFatal) {
  queue_all(l);
  EXPECT_EQ(l.executed(std::nullopt, Results(4, std::nullopt)).kind, Kind::Fatal);
  expect_nothing_stored();
}

TEST(LedgerInFlight, RegistryHsetErrorInTheMiddleIsAFatalRegistryWrite) {
  Ledger l;
  auto a = l.add_stream();
  l.begin(0);
  l.command(a, {100, 1});
  l.command(kNoStream, {});
  l.command(a, {100, 2});
  send(l);  // no checkpoint: the transaction is open
  queue_all(l);
  auto out = l.executed(std::nullopt, Results{std::nullopt, "ERR some registry error"sv, std::nullopt});
  EXPECT_EQ(out.kind, Kind::Fatal);
  EXPECT_TRUE(out.registry);
  EXPECT_EQ(out.message, "ERR some registry error");
  EXPECT_EQ(l.entries_written(), 0u);
}

// --- which Redis errors are retried -----------------------------------------------------------------------

TEST(RetryableRedisError, MovedAskAndTryagainAreASlotMovingNotAnOutage) {
  EXPECT_TRUE(is_slot_moving_error("ASK 1234 127.0.0.1:7001"));
  EXPECT_TRUE(is_slot_moving_error("MOVED 1234 127.0.0.1:7001"));
  EXPECT_TRUE(is_slot_moving_error("TRYAGAIN Multiple keys request during rehashing of slot"));
  EXPECT_FALSE(is_slot_moving_error("ASKING"));
  EXPECT_FALSE(is_slot_moving_error("READONLY You can't write against a read only replica."));
  EXPECT_FALSE(is_slot_moving_error("CLUSTERDOWN Hash slot not served"));
  EXPECT_FALSE(is_slot_moving_error("ERR ASK"));
  EXPECT_FALSE(is_slot_moving_error(""));
}

TEST(RetryableRedisError, WholeFirstWordDecides) {
  EXPECT_TRUE(is_retryable_redis_error("BUSY Redis is busy running a script."));
  EXPECT_FALSE(is_retryable_redis_error("BUSYGROUP Consumer Group name already exists"));
  EXPECT_FALSE(is_retryable_redis_error("BUSYKEY Target key name already exists."));
  EXPECT_TRUE(is_retryable_redis_error(kOom));
  EXPECT_FALSE(is_retryable_redis_error("OOMX something"));
  EXPECT_TRUE(is_retryable_redis_error("OOM"));
  EXPECT_TRUE(is_retryable_redis_error("BUSY"));
  EXPECT_FALSE(is_retryable_redis_error("OO"));
  EXPECT_FALSE(is_retryable_redis_error(""));
  EXPECT_FALSE(is_retryable_redis_error("ERR OOM"));  // not the first word
  EXPECT_FALSE(is_retryable_redis_error("oom command not allowed"));
  for (auto word : {"READONLY", "NOAUTH", "WRONGPASS", "NOPERM", "LOADING", "MASTERDOWN", "TRYAGAIN", "NOREPLICAS",
                    "CLUSTERDOWN", "MISCONF"}) {
    EXPECT_TRUE(is_retryable_redis_error(word)) << word;
    EXPECT_TRUE(is_retryable_redis_error(std::string(word) + " text")) << word;
    EXPECT_FALSE(is_retryable_redis_error(std::string(word) + "X text")) << word;
  }
  EXPECT_FALSE(is_retryable_redis_error("ERR unknown command"));
  EXPECT_FALSE(is_retryable_redis_error("WRONGTYPE Operation against a key holding the wrong kind of value"));
}

}  // namespace
}  // namespace walstream
