// Retention (`--retention acked`): every --retention-interval, each stream under the prefix is trimmed
// (XTRIM MINID ~) to the oldest entry one of its consumer groups still needs, and never past the
// --retain-for point; --retain-max caps the age a forgotten group can hold. Stream IDs are
// <commit LSN>-<seq>, not times, so the points come from an index of (commit end LSN, commit time)
// kept in the process. The index and the accounting of losses are pure; Retention does the I/O.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "redis_url.h"
#include "stream_id.h"

namespace walstream {

class RedisCommands;

struct RetentionOptions {
  std::chrono::milliseconds interval{10'000};
  std::chrono::seconds retain_for{3600};
  std::optional<std::chrono::seconds> retain_max;  // trimmed past a group's needs when older than this
};

// Times are microseconds on one clock (the caller's choice: PostgreSQL's epoch for commit times and
// for now). A sample (lsn, time) says: every entry below lsn was committed at or before time. Times are
// kept as a running maximum, so the index is monotone in both and never claims an entry older than it is.
class CommitTimeIndex {
 public:
  // Samples closer than `spacing` in time replace the newest one; queries reach back `horizon` at most.
  CommitTimeIndex(std::int64_t spacing_us, std::int64_t horizon_us);
  // One sample per second, or per 1/4096 of the longest age asked for (--retain-max, else --retain-for).
  static CommitTimeIndex for_retention(const RetentionOptions& o);

  void add(std::uint64_t lsn, std::int64_t time_us);
  // The LSN of the newest sample with time <= cutoff: every entry below it was committed by then.
  // nullopt when no sample is that old.
  std::optional<std::uint64_t> point(std::int64_t cutoff_us) const;
  // Forgets the samples no query of now - horizon (or later) needs.
  void prune(std::int64_t now_us);
  std::size_t size() const { return samples_.size(); }
  // A hard bound on the samples kept whatever the clock does (dropping the oldest is conservative).
  static constexpr std::size_t kMaxSamples = 2 * 4096 + 16;

 private:
  struct Sample {
    std::uint64_t lsn;
    std::int64_t time;
  };
  std::int64_t spacing_;
  std::int64_t horizon_;
  std::deque<Sample> samples_;
};

// One consumer group as the retention script saw it.
struct GroupView {
  std::string name;
  StreamId last_delivered;
  std::optional<std::uint64_t> entries_read;  // nil in Redis when it cannot tell
  std::uint64_t pending = 0;
  std::optional<StreamId> oldest_pending;
  StreamId need;                        // the oldest entry it still needs (what the trim respected)
  std::optional<StreamId> next_after;   // the first entry after last_delivered, after the trim
};

enum class TrimRule { None, RetainFor, Group, RetainMax };

// What one run of the retention script on one stream found and did.
struct TrimResult {
  std::string key;
  std::uint64_t trimmed = 0;  // XTRIM's count
  std::uint64_t entries_added = 0;
  std::uint64_t length_before = 0;
  std::optional<StreamId> first_before;
  std::uint64_t length_after = 0;
  std::optional<StreamId> first_after;
  TrimRule rule = TrimRule::None;
  std::optional<StreamId> cut;  // the MINID asked for (Redis trims whole nodes below it)
  std::vector<GroupView> groups;
};

// Entries added after the group's last-delivered ID that the stream no longer holds, i.e. trimmed
// before the group read them (walstream's trims only ever take the oldest entries). nullopt when Redis
// does not know how many entries the group has read.
std::optional<std::uint64_t> unread_gone(const GroupView& g, std::uint64_t entries_added, std::uint64_t length,
                                         const std::optional<StreamId>& first);

struct RetentionNotice {
  enum class Level { Debug, Info, Warn, Error } level;
  std::string text;
};

// What is remembered of one group of one stream between passes, to report each loss once.
struct GroupMemory {
  std::optional<std::uint64_t> unread_gone;  // at the end of the last pass
  std::optional<StreamId> last_delivered;    // at the last pass…
  std::optional<StreamId> next_after;        // …and the entry after it then
  bool warned_unread = false;                // the --maxlen warning was given
  bool warned_pending = false;
  bool warned_retain_max = false;
};

struct Assessment {
  std::vector<RetentionNotice> notices;
  std::uint64_t unread_trimmed = 0;     // by --maxlen (or anything but this pass), counted exactly
  std::uint64_t retain_max_trimmed = 0;  // unread entries this pass's --retain-max trim took
};

// The losses one script result shows, against what was remembered of the stream's groups (updated;
// groups gone from the stream are forgotten). `retain_max` names the flag in the notices.
Assessment assess(const TrimResult& r, std::map<std::string, GroupMemory>& memory, std::string_view retain_max);

class Retention {
 public:
  Retention(RedisUrl url, std::string prefix, RetentionOptions options);
  ~Retention();
  Retention(const Retention&) = delete;
  Retention& operator=(const Retention&) = delete;

  // A session started streaming: every entry below `lsn` (the checkpoint) was committed before now.
  void session_started(std::uint64_t lsn, std::int64_t now_us);
  // The last commit decoded (its end LSN and commit time); repeated values are ignored.
  void commit(std::uint64_t end_lsn, std::int64_t time_us);
  // Does what is due: a slice of a pass (a few milliseconds of Redis work), or nothing. Never throws:
  // a transient Redis error ends the pass and is warned about once; any other turns retention off.
  // Returns the lines to log.
  std::vector<RetentionNotice> tick(std::int64_t now_us);

  bool busy() const { return in_pass_; }  // a pass is under way: tick() soon again
  // Where Redis is from now on (a cluster's seeds, grown by the run loop); the next pass connects there.
  void set_url(RedisUrl url);

  std::uint64_t trimmed() const { return trimmed_; }                        // entries XTRIM removed
  std::uint64_t unread_trimmed() const { return unread_trimmed_; }          // lost to --maxlen, counted exactly
  std::uint64_t retain_max_trimmed() const { return retain_max_trimmed_; }  // unread, taken by --retain-max
  std::uint64_t passes() const { return passes_; }                          // passes completed
  bool disabled() const { return disabled_; }

 private:
  using Clock = std::chrono::steady_clock;
  void start_pass(std::int64_t now_us);
  void step(std::vector<RetentionNotice>& out);  // one SCAN page or one stream; throws RedisError
  void finish_pass(std::vector<RetentionNotice>& out);
  TrimResult trim(const std::string& key);

  RedisUrl url_;
  std::string prefix_;
  RetentionOptions options_;
  CommitTimeIndex index_;
  std::unique_ptr<RedisCommands> redis_;
  std::string sha_;  // of the script, once loaded

  bool in_pass_ = false;
  Clock::time_point next_pass_{};
  std::string cursor_;
  std::vector<RedisEndpoint> scan_nodes_;  // the masters this pass scans (one Redis: itself)
  std::size_t scan_node_ = 0;              // …the one cursor_ belongs to
  bool scan_done_ = false;
  std::vector<std::string> queue_;
  std::set<std::string> done_;  // the streams this pass has trimmed (SCAN may return a key twice)
  std::string retain_for_id_, retain_max_id_;  // this pass's points ("" = none)
  std::uint64_t pass_trimmed_ = 0;

  std::map<std::string, std::map<std::string, GroupMemory>> memory_;  // stream -> group -> memory
  bool failing_ = false;
  bool disabled_ = false;
  std::uint64_t trimmed_ = 0, unread_trimmed_ = 0, retain_max_trimmed_ = 0, passes_ = 0;
};

}  // namespace walstream
