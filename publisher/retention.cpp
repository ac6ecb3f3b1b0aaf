#include "retention.h"

#include <hiredis/hiredis.h>

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "keys.h"
#include "redis_client.h"
#include "units.h"

namespace walstream {
namespace {

constexpr std::int64_t kSecondUs = 1'000'000;

// One stream's decision and trim in one step on the server, so that a group created (or moved back)
// meanwhile is never robbed. KEYS[1]: the stream. ARGV[1]: the --retain-for point, an ID below which
// every entry is old enough ('' when none is: nothing is trimmed); ARGV[2]: the --retain-max point
// ('' when none). A group needs its oldest pending entry that is still there, else the entry after its
// last-delivered ID. IDs are compared as decimal strings: Lua's numbers are doubles.
// Redis 7.0 allows XINFO, XPENDING, XRANGE and XTRIM in scripts; XTRIM frees memory and is not refused
// when Redis is out of memory.
constexpr const char* kScript = R"lua(
local key = KEYS[1]
if redis.call('TYPE', key).ok ~= 'stream' then return false end
local function split(id) return string.match(id, '^(%d+)-(%d+)$') end
local function less(a, b)
  local am, as = split(a)
  local bm, bs = split(b)
  if am ~= bm then
    if #am ~= #bm then return #am < #bm end
    return am < bm
  end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
local function inc(s)
  local i = #s
  while i > 0 and string.sub(s, i, i) == '9' do i = i - 1 end
  if i == 0 then return '1' .. string.rep('0', #s) end
  return string.sub(s, 1, i - 1) .. string.char(string.byte(s, i) + 1) .. string.rep('0', #s - i)
end
local function succ(id)
  local ms, seq = split(id)
  if seq == '18446744073709551615' then return inc(ms) .. '-0' end
  return ms .. '-' .. inc(seq)
end
local function fields(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
local function first_of(s)
  if s['first-entry'] then return s['first-entry'][1] end
  return ''
end
local s = fields(redis.call('XINFO', 'STREAM', key))
local first = first_of(s)
local cut, rule = ARGV[1], 'retain-for'
if cut == '' then rule = 'none' end
local groups = {}
for _, flat in ipairs(redis.call('XINFO', 'GROUPS', key)) do
  local g = fields(flat)
  local name, last = g['name'], g['last-delivered-id']
  local p = redis.call('XPENDING', key, name)
  local oldest, need = '', succ(last)
  if p[1] > 0 then
    oldest = p[2]
    local live = oldest
    if first == '' then
      live = ''
    elseif less(oldest, first) then
      local q = redis.call('XPENDING', key, name, first, '+', 1)
      live = ''
      if #q > 0 then live = q[1][1] end
    end
    if live ~= '' then need = live end
  end
  if cut ~= '' and less(need, cut) then cut, rule = need, 'group' end
  groups[#groups + 1] = {name, last, g['entries-read'] or '', p[1], oldest, need}
end
if ARGV[2] ~= '' and (cut == '' or less(cut, ARGV[2])) then cut, rule = ARGV[2], 'retain-max' end
local trimmed = 0
if cut ~= '' and first ~= '' and less(first, cut) then trimmed = redis.call('XTRIM', key, 'MINID', '~', cut) end
local after = s
if trimmed > 0 then after = fields(redis.call('XINFO', 'STREAM', key)) end
for _, g in ipairs(groups) do
  local r = redis.call('XRANGE', key, '(' .. g[2], '+', 'COUNT', 1)
  g[7] = ''
  if #r > 0 then g[7] = r[1][1] end
end
return {trimmed, s['entries-added'], s['length'], first, after['length'], first_of(after), rule, cut, groups}
)lua";

constexpr auto kRedisTimeout = std::chrono::seconds(2);
// Redis work done per tick while a pass runs: the run loop calls tick() often.
constexpr auto kSliceBudget = std::chrono::milliseconds(10);

std::string text_of(const redisReply* r) { return r && r->str ? std::string(r->str, r->len) : std::string(); }

std::uint64_t count_of(const redisReply* r) {
  return r && r->type == REDIS_REPLY_INTEGER && r->integer > 0 ? static_cast<std::uint64_t>(r->integer) : 0;
}

std::optional<StreamId> id_of(const redisReply* r) {
  auto t = text_of(r);
  if (t.empty()) return std::nullopt;
  return parse_stream_id(t);
}

StreamId required_id(const redisReply* r, const char* what) {
  auto id = id_of(r);
  if (!id) throw RedisError(RedisError::Kind::Fatal, fmt::format("retention script: bad {} '{}'", what, text_of(r)));
  return *id;
}

TrimRule rule_of(const std::string& text) {
  if (text == "retain-for") return TrimRule::RetainFor;
  if (text == "group") return TrimRule::Group;
  if (text == "retain-max") return TrimRule::RetainMax;
  return TrimRule::None;
}

RedisError refusal(const RedisReply& r, const char* what) {
  return RedisError::refused(fmt::format("Redis refused {}: {}", what, r.str()), r.str());
}

}  // namespace

// --- the time -> LSN index ---

CommitTimeIndex::CommitTimeIndex(std::int64_t spacing_us, std::int64_t horizon_us)
    : spacing_(spacing_us), horizon_(horizon_us) {}

CommitTimeIndex CommitTimeIndex::for_retention(const RetentionOptions& o) {
  auto longest = std::max(o.retain_for, o.retain_max.value_or(std::chrono::seconds(0)));
  std::int64_t horizon = longest.count() * kSecondUs;
  return CommitTimeIndex(std::max(kSecondUs, horizon / 4096), horizon);
}

void CommitTimeIndex::add(std::uint64_t lsn, std::int64_t time_us) {
  if (!samples_.empty()) {
    if (lsn <= samples_.back().lsn) return;  // nothing new: an older or the same position
    time_us = std::max(time_us, samples_.back().time);
  }
  auto n = samples_.size();
  // The newest sample moves forward until it is `spacing` past the one before it; then a new one starts.
  if (n >= 2 && samples_[n - 1].time - samples_[n - 2].time < spacing_) {
    samples_.back() = {lsn, time_us};
  } else {
    samples_.push_back({lsn, time_us});
  }
  if (samples_.size() > kMaxSamples) samples_.pop_front();
}

std::optional<std::uint64_t> CommitTimeIndex::point(std::int64_t cutoff_us) const {
  auto it = std::upper_bound(samples_.begin(), samples_.end(), cutoff_us,
                             [](std::int64_t t, const Sample& s) { return t < s.time; });
  if (it == samples_.begin()) return std::nullopt;
  return std::prev(it)->lsn;
}

void CommitTimeIndex::prune(std::int64_t now_us) {
  auto cutoff = now_us - horizon_;
  auto it = std::upper_bound(samples_.begin(), samples_.end(), cutoff,
                             [](std::int64_t t, const Sample& s) { return t < s.time; });
  // Keep the newest sample at or before the cutoff: it answers the oldest query.
  if (it != samples_.begin()) samples_.erase(samples_.begin(), std::prev(it));
}

// --- losses ---

std::optional<std::uint64_t> unread_gone(const GroupView& g, std::uint64_t entries_added, std::uint64_t length,
                                         const std::optional<StreamId>& first) {
  // Delivered up to an entry still there: everything after it is there too.
  if (first && g.last_delivered >= *first) return 0;
  auto read = g.entries_read;
  if (!read && g.last_delivered == StreamId{}) read = 0;  // created at 0 and never read: exact even when nil
  if (!read) return std::nullopt;
  if (entries_added <= *read + length) return 0;
  return entries_added - *read - length;
}

Assessment assess(const TrimResult& r, std::map<std::string, GroupMemory>& memory, std::string_view retain_max) {
  Assessment a;
  std::map<std::string, GroupMemory> seen;
  for (const auto& g : r.groups) {
    GroupMemory m;
    if (auto it = memory.find(g.name); it != memory.end()) m = it->second;

    // What went before this pass's trim: others' doing since the last pass (--maxlen, mostly).
    auto before = unread_gone(g, r.entries_added, r.length_before, r.first_before);
    if (before) {
      auto known = m.unread_gone.value_or(0);
      if (*before > known) {
        a.unread_trimmed += *before - known;
        if (!m.warned_unread) {
          a.notices.push_back(
              {RetentionNotice::Level::Warn,
               fmt::format("retention: --maxlen trimmed {} entries group '{}' of stream {} had not read", *before,
                           g.name, r.key)});
          m.warned_unread = true;
        }
      }
    } else if (!m.warned_unread && m.next_after && m.last_delivered && g.last_delivered < *m.next_after &&
               (!r.first_before || *r.first_before > *m.next_after)) {
      // Redis cannot count, but the entry after the group's position at the last pass is gone unread.
      a.notices.push_back({RetentionNotice::Level::Warn,
                           fmt::format("retention: --maxlen trimmed unknown entries group '{}' of stream {} had not "
                                       "read (at least {}; Redis does not know how many the group read)",
                                       g.name, r.key, m.next_after->str())});
      m.warned_unread = true;
    }
    bool pending_gone = g.oldest_pending && (!r.first_before || *g.oldest_pending < *r.first_before);
    if (pending_gone && !m.warned_pending) {
      a.notices.push_back({RetentionNotice::Level::Warn,
                           fmt::format("retention: entries pending in group '{}' of stream {} (delivered, not "
                                       "acknowledged, from {}) were trimmed; XCLAIM and XAUTOCLAIM report them deleted",
                                       g.name, r.key, g.oldest_pending->str())});
      m.warned_pending = true;
    }

    // This pass's own trim went past what the group needs only by --retain-max.
    auto after = unread_gone(g, r.entries_added, r.length_after, r.first_after);
    bool robbed = r.rule == TrimRule::RetainMax && r.trimmed > 0 && (!r.first_after || g.need < *r.first_after);
    if (robbed) {
      std::optional<std::uint64_t> took;
      if (before && after) took = *after > *before ? *after - *before : 0;
      bool pending_taken = g.oldest_pending && !pending_gone && (!r.first_after || *g.oldest_pending < *r.first_after);
      if (took) a.retain_max_trimmed += *took;
      if (!m.warned_retain_max && (!took || *took > 0 || pending_taken)) {
        a.notices.push_back(
            {RetentionNotice::Level::Warn,
             fmt::format("retention: --retain-max {} trimmed {} entries group '{}' of stream {} had not read{} (it "
                         "needed {} on); delete an abandoned group with XGROUP DESTROY",
                         retain_max, took ? std::to_string(*took) : std::string("unknown"), g.name, r.key,
                         pending_taken ? ", and entries pending in it" : "", g.need.str())});
        m.warned_retain_max = true;
      }
      if (pending_taken) m.warned_pending = true;
    }
    m.unread_gone = after;
    m.last_delivered = g.last_delivered;
    m.next_after = g.next_after;
    seen[g.name] = m;
  }
  memory = std::move(seen);
  return a;
}

// --- Retention ---

Retention::Retention(RedisUrl url, std::string prefix, RetentionOptions options)
    : url_(std::move(url)),
      prefix_(std::move(prefix)),
      options_(options),
      index_(CommitTimeIndex::for_retention(options)),
      next_pass_(Clock::now()) {}

Retention::~Retention() = default;

void Retention::set_url(RedisUrl url) {
  url_ = std::move(url);
  redis_.reset();
  in_pass_ = false;
}

void Retention::session_started(std::uint64_t lsn, std::int64_t now_us) { index_.add(lsn, now_us); }

void Retention::commit(std::uint64_t end_lsn, std::int64_t time_us) {
  if (end_lsn != 0) index_.add(end_lsn, time_us);
}

std::vector<RetentionNotice> Retention::tick(std::int64_t now_us) {
  std::vector<RetentionNotice> out;
  if (disabled_) return out;
  auto now = Clock::now();
  if (!in_pass_) {
    if (now < next_pass_) return out;
    start_pass(now_us);
  }
  try {
    auto until = now + kSliceBudget;
    do {
      step(out);
    } while (in_pass_ && Clock::now() < until);
    if (failing_) {
      out.push_back({RetentionNotice::Level::Info, "retention: Redis answers again"});
      failing_ = false;
    }
    if (!in_pass_) finish_pass(out);
  } catch (const RedisError& e) {
    redis_.reset();
    in_pass_ = false;
    if (e.transient()) {
      if (!failing_) {
        out.push_back({RetentionNotice::Level::Warn,
                       fmt::format("retention: {}; trying again every {} ms", e.what(), options_.interval.count())});
      }
      failing_ = true;
    } else {
      out.push_back({RetentionNotice::Level::Error,
                     fmt::format("retention: {}; retention is off until walstream restarts (--maxlen still "
                                 "applies)", e.what())});
      disabled_ = true;
    }
  }
  return out;
}

void Retention::start_pass(std::int64_t now_us) {
  index_.prune(now_us);
  auto point_id = [&](std::chrono::seconds age) {
    auto lsn = index_.point(now_us - age.count() * kSecondUs);
    return lsn ? StreamId{*lsn, 0}.str() : std::string();
  };
  retain_for_id_ = point_id(options_.retain_for);
  retain_max_id_ = options_.retain_max ? point_id(*options_.retain_max) : std::string();
  in_pass_ = true;
  next_pass_ = Clock::now() + options_.interval;
  cursor_.assign(1, '0');  // (not = "0": GCC 12 warns -Wrestrict about it, wrongly)
  scan_done_ = false;
  scan_nodes_.clear();  // read again from the map when the pass starts: a failover may have moved them
  scan_node_ = 0;
  queue_.clear();
  done_.clear();
  pass_trimmed_ = 0;
}

void Retention::step(std::vector<RetentionNotice>& out) {
  if (!redis_) redis_ = connect_redis(url_, kRedisTimeout);
  // A cluster's streams are spread over its masters: each is scanned in turn.
  if (scan_nodes_.empty()) scan_nodes_ = redis_->masters();
  if (!queue_.empty()) {
    auto key = std::move(queue_.back());
    queue_.pop_back();
    if (!done_.insert(key).second) return;
    auto result = trim(key);
    trimmed_ += result.trimmed;
    pass_trimmed_ += result.trimmed;
    auto a = assess(result, memory_[key], options_.retain_max ? format_duration(*options_.retain_max) : "");
    unread_trimmed_ += a.unread_trimmed;
    retain_max_trimmed_ += a.retain_max_trimmed;
    for (auto& n : a.notices) out.push_back(std::move(n));
    return;
  }
  if (scan_done_) {
    in_pass_ = false;
    return;
  }
  const std::vector<std::string> scan{"SCAN", cursor_, "MATCH", glob_escape(prefix_) + "*", "COUNT", "1000",
                                      "TYPE", "stream"};
  auto page = redis_->checked_on(scan_nodes_[scan_node_], scan);
  const redisReply* p = page.raw();
  if (p->type != REDIS_REPLY_ARRAY || p->elements != 2 || p->element[1]->type != REDIS_REPLY_ARRAY) {
    throw RedisError(RedisError::Kind::Fatal, "odd SCAN reply");
  }
  cursor_ = text_of(p->element[0]);
  const auto staging = prefix_ + "staging:";  // a snapshot's copy in progress (keys.h), not yet published
  for (std::size_t i = 0; i < p->element[1]->elements; ++i) {
    auto key = text_of(p->element[1]->element[i]);
    if (key.rfind(staging, 0) != 0) queue_.push_back(std::move(key));
  }
  if (cursor_ == "0" && ++scan_node_ == scan_nodes_.size()) scan_done_ = true;
}

void Retention::finish_pass(std::vector<RetentionNotice>& out) {
  ++passes_;
  std::erase_if(memory_, [&](const auto& kv) { return !done_.contains(kv.first); });
  out.push_back({RetentionNotice::Level::Debug,
                 fmt::format("retention: pass {} trimmed {} entries of {} streams (retain-for point {}, retain-max "
                             "point {})",
                             passes_, pass_trimmed_, done_.size(), retain_for_id_.empty() ? "none" : retain_for_id_,
                             retain_max_id_.empty() ? "none" : retain_max_id_)});
}

TrimResult Retention::trim(const std::string& key) {
  std::vector<std::string> args{"", "", "1", key, retain_for_id_, retain_max_id_};
  std::optional<RedisReply> reply;
  if (sha_.empty()) {
    // On a cluster this loads it on one master; another answers NOSCRIPT once and caches it from the
    // EVAL below.
    auto loaded = redis_->command(key, {"SCRIPT", "LOAD", kScript});
    if (!loaded.is_error()) sha_ = std::string(loaded.str());
  }
  if (!sha_.empty()) {
    args[0] = "EVALSHA";
    args[1] = sha_;
    reply.emplace(redis_->command(key, args));
    // Flushed (SCRIPT FLUSH, a restart, a failover): send the script itself.
    if (reply->is_error() && reply->str().substr(0, 8) == "NOSCRIPT") reply.reset();
  }
  if (!reply) {
    args[0] = "EVAL";
    args[1] = kScript;
    reply.emplace(redis_->command(key, args));
  }
  if (reply->is_error()) throw refusal(*reply, "the retention script");
  TrimResult t;
  t.key = key;
  const redisReply* r = reply->raw();
  if (r->type == REDIS_REPLY_NIL) return t;  // deleted meanwhile, or no longer a stream
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 9 || r->element[8]->type != REDIS_REPLY_ARRAY) {
    throw RedisError(RedisError::Kind::Fatal, fmt::format("retention script: odd reply for {}", key));
  }
  t.trimmed = count_of(r->element[0]);
  t.entries_added = count_of(r->element[1]);
  t.length_before = count_of(r->element[2]);
  t.first_before = id_of(r->element[3]);
  t.length_after = count_of(r->element[4]);
  t.first_after = id_of(r->element[5]);
  t.rule = rule_of(text_of(r->element[6]));
  t.cut = id_of(r->element[7]);
  for (std::size_t i = 0; i < r->element[8]->elements; ++i) {
    const redisReply* g = r->element[8]->element[i];
    if (g->type != REDIS_REPLY_ARRAY || g->elements != 7) {
      throw RedisError(RedisError::Kind::Fatal, fmt::format("retention script: odd group in the reply for {}", key));
    }
    GroupView v;
    v.name = text_of(g->element[0]);
    v.last_delivered = required_id(g->element[1], "last-delivered-id");
    if (g->element[2]->type == REDIS_REPLY_INTEGER) v.entries_read = count_of(g->element[2]);
    v.pending = count_of(g->element[3]);
    v.oldest_pending = id_of(g->element[4]);
    v.need = required_id(g->element[5], "needed ID");
    v.next_after = id_of(g->element[6]);
    t.groups.push_back(std::move(v));
  }
  return t;
}

}  // namespace walstream
