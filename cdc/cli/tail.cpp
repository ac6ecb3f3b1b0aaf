#include "tail.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "json.h"
#include "keys.h"
#include "log.h"
#include "record_json.h"
#include "cluster_slots.h"
#include "redis_client.h"
#include "redis_commands.h"
#include "stop_signal.h"
#include "stream_id.h"
#include "type_codec.h"

namespace walstream {
namespace {

constexpr std::uint64_t kBatch = 512;
constexpr auto kMaxBackoff = std::chrono::seconds(10);
// On a Redis Cluster one XREAD reads streams of one hash slot only: streams in several slots are read
// without blocking, one read per slot, and when none had anything the next round waits this long.
constexpr auto kClusterPoll = std::chrono::milliseconds(20);

// stdout could not take a line: the entry stays unacknowledged. `closed`: the reader went away (EPIPE).
struct OutputFailed {
  bool closed;
  std::string what;
};

// How a stream's entries are printed: as records (record_json_line), or every field as it is.
enum class Format { Record, Events, Fields };

// RFC 3629 UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    // The number of continuation bytes, and the lead byte's bits of the code point.
    std::size_t n = c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xF0 && c <= 0xF4 ? 3 : 0;
    if (n == 0) return false;
    std::uint32_t cp = c & (0x7Fu >> (n + 1));
    if (s.size() - i <= n) return false;
    for (std::size_t k = 1; k <= n; ++k) {
      auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0u) != 0x80u) return false;
      cp = cp << 6 | (b & 0x3Fu);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

// {"stream_id":…,"id":…,<field>:<value>,…}: every field of the entry in its order, as a string, except
// `payload` (an event's), `row` (the outbox row of events:_invalid) and `streams` (a transaction
// marker's), embedded when they are JSON. `id` is the entry's: an event's own id field is printed as
// `event_id`, and a field of another stream named `id` or `stream_id` as `field_id`, `field_stream_id`.
// A value that is not UTF-8 (a message's content may be any bytes) cannot be a JSON string: it is
// printed base64-encoded as <field>_base64.
std::string fields_json_line(std::string_view stream, std::string_view id,
                             const std::vector<std::pair<std::string, std::string>>& fields, bool events) {
  JsonWriter w;
  std::string compact;
  w.start_object();
  w.key("stream_id");
  w.string(stream);
  w.key("id");
  w.string(id);
  for (const auto& [field, value] : fields) {
    const std::string name = field != "id" && field != "stream_id" ? field
                             : events && field == "id"             ? "event_id"
                                                                   : "field_" + field;
    if (!valid_utf8(value)) {
      w.key(name + "_base64");
      w.string(base64_encode(value));
      continue;
    }
    w.key(name);
    compact.clear();
    if ((name == "payload" || name == "row" || name == "streams") && compact_json(value, compact)) {
      w.raw(compact);
    } else {
      w.string(value);
    }
  }
  w.end_object();
  return std::string(w.view());
}

struct Delivered {
  std::size_t stream;  // index into the stream keys
  StreamEntry entry;
  std::optional<StreamId> id;
};

class Tailer {
 public:
  explicit Tailer(const TailOptions& o) : o_(o) {
    Keys keys{o.prefix, {}};
    for (const auto& t : o.tables) add(keys.stream(t), Format::Record);
    for (const auto& type : o.events) add(keys.events(type), Format::Events);
    for (const auto& prefix : o.messages) add(keys.messages(prefix), Format::Fields);
    for (const auto& key : o.streams) {
      // Under the prefix, what is neither events, messages nor transactions is a table's stream.
      bool under = key.starts_with(o.prefix);
      add(key, under && key.starts_with(keys.events(""))                                    ? Format::Events
               : !under || key.starts_with(keys.messages("")) || key == keys.transactions() ? Format::Fields
                                                                                            : Format::Record);
    }
  }

  void connect() {
    client_.reset();
    // A blocking read returns after `block` at the latest; more than that without a reply is an outage.
    client_ = connect_redis(o_.redis, o_.block + std::chrono::seconds(10));
    by_slot_.clear();
    if (client_->is_cluster()) {
      std::map<std::uint16_t, std::vector<std::size_t>> slots;
      for (std::size_t i = 0; i < keys_.size(); ++i) slots[key_slot(keys_[i])].push_back(i);
      for (auto& [slot, streams] : slots) by_slot_.push_back(std::move(streams));
    } else {
      by_slot_.emplace_back();
      for (std::size_t i = 0; i < keys_.size(); ++i) by_slot_.back().push_back(i);
    }
    if (grouped()) {
      create_groups();
    } else if (ids_.empty()) {
      resolve_start();
    }
  }

  // Returns once `count` records are printed or a stop was asked for.
  void session() {
    if (grouped()) {
      redeliver_pending();
      read_group_new();
    } else {
      read_plain();
    }
  }

 private:
  // A stream named twice would be read twice, and each entry printed twice.
  void add(const std::string& key, Format format) {
    if (std::find(keys_.begin(), keys_.end(), key) != keys_.end()) return;
    keys_.push_back(key);
    formats_.push_back(format);
  }

  bool grouped() const { return !o_.group.empty(); }
  bool finished() const { return stop_requested() || (o_.count && printed_ >= o_.count); }
  std::string batch_size() const {
    return std::to_string(o_.count ? std::min(kBatch, o_.count - printed_) : kBatch);
  }

  // "$" re-evaluated at every XREAD would drop what arrives between two reads, so the streams' last
  // IDs are read once; later reads continue from the last entry printed.
  void resolve_start() {
    std::vector<std::string> ids;
    for (const auto& key : keys_) {
      if (o_.start == TailOptions::Start::Beginning) {
        ids.push_back("0-0");
      } else if (o_.start == TailOptions::Start::After) {
        ids.push_back(o_.from_id.str());
      } else {
        ids.push_back(last_generated_id(key));
      }
    }
    ids_ = std::move(ids);
  }

  std::string last_generated_id(const std::string& key) {
    auto r = client_->command(key, {"XINFO", "STREAM", key});
    if (r.is_error()) {
      // No stream yet: everything it will ever hold is new.
      if (r.str().find("no such key") != std::string_view::npos) return "0-0";
      throw RedisError::refused(fmt::format("Redis refused XINFO STREAM {}: {}", key, r.str()), r.str());
    }
    auto items = r.strings();
    for (std::size_t i = 0; i + 1 < items.size(); i += 2) {
      if (items[i] == "last-generated-id") return items[i + 1];
    }
    throw RedisError(RedisError::Kind::Fatal, fmt::format("XINFO STREAM {} has no last-generated-id", key));
  }

  void create_groups() {
    std::string start = o_.start == TailOptions::Start::Beginning ? "0"
                        : o_.start == TailOptions::Start::After   ? o_.from_id.str()
                                                                  : "$";
    for (const auto& key : keys_) {
      auto r = client_->command(key, {"XGROUP", "CREATE", key, o_.group, start, "MKSTREAM"});
      // BUSYGROUP: the group exists and keeps its own position; the start only applies to a new group.
      if (r.is_error() && !r.str().starts_with("BUSYGROUP")) {
        throw RedisError::refused(fmt::format("Redis refused XGROUP CREATE {} {}: {}", key, o_.group, r.str()), r.str());
      }
    }
  }

  // The reply's entries of all streams, in ID order: walstream's IDs are commit LSNs, so this is the
  // order in which PostgreSQL committed them (within one read).
  void collect(const RedisReply& reply, std::vector<Delivered>& out) {
    for (auto& [key, entries] : reply.streams()) {
      auto it = std::find(keys_.begin(), keys_.end(), key);
      if (it == keys_.end()) continue;
      auto index = static_cast<std::size_t>(it - keys_.begin());
      for (auto& e : entries) {
        auto id = parse_stream_id(e.id);
        out.push_back(Delivered{index, std::move(e), id});
      }
    }
  }

  // One XREAD/XREADGROUP per hash slot of the streams (one Redis: one for all), `head` + the slot's
  // streams + each one's ID from `id_of`; blocking only when one read covers every stream. Entries
  // in ID order: walstream's IDs are commit LSNs, so in the order PostgreSQL committed them (within a
  // read; across slots, within what each read returned).
  template <typename IdOf>
  std::vector<Delivered> read(const std::vector<std::string>& head, const std::vector<std::string>& block,
                              const std::vector<bool>& skip, IdOf id_of) {
    std::vector<Delivered> out;
    bool one = by_slot_.size() == 1;
    for (const auto& streams : by_slot_) {
      std::vector<std::string> argv = head;
      if (one) argv.insert(argv.end(), block.begin(), block.end());
      argv.push_back("STREAMS");
      std::vector<std::size_t> picked;
      for (auto i : streams) {
        if (skip.empty() || !skip[i]) picked.push_back(i);
      }
      if (picked.empty()) continue;
      for (auto i : picked) argv.push_back(keys_[i]);
      for (auto i : picked) argv.push_back(id_of(i));
      collect(client_->checked(keys_[picked.front()], argv), out);
    }
    if (out.empty() && !one && !block.empty()) std::this_thread::sleep_for(kClusterPoll);
    std::stable_sort(out.begin(), out.end(), [](const Delivered& a, const Delivered& b) { return a.id < b.id; });
    return out;
  }

  void print(const Delivered& d) {
    auto format = formats_[d.stream];
    auto line = format == Format::Record
                    ? record_json_line(keys_[d.stream], d.entry.id, d.entry.fields)
                    : fields_json_line(keys_[d.stream], d.entry.id, d.entry.fields, format == Format::Events);
    line.push_back('\n');
    errno = 0;
    if (std::fwrite(line.data(), 1, line.size(), stdout) != line.size() || std::fflush(stdout) != 0) {
      int err = errno;
      throw OutputFailed{err == EPIPE, fmt::format("cannot write to stdout: {}", std::strerror(err))};
    }
    ++printed_;
  }

  void read_plain() {
    while (!finished()) {
      auto batch = read({"XREAD", "COUNT", batch_size()}, {"BLOCK", std::to_string(o_.block.count())}, {},
                        [&](std::size_t i) { return ids_[i]; });
      for (const auto& d : batch) {
        if (finished()) return;
        ids_[d.stream] = d.entry.id;
        print(d);
      }
    }
  }

  // Prints a read's entries, then acknowledges the printed ones: a crash in between prints them again
  // on the next start (at least once); a stop signal only sets a flag, looked at between entries, so a
  // clean stop never leaves a printed entry unacknowledged, nor an unprinted one acknowledged. One XACK
  // per stream and read rather than per entry: each is a write that Redis may fsync.
  void deliver(const std::vector<Delivered>& batch, std::vector<std::string>* last_ids = nullptr) {
    std::vector<std::vector<std::string>> acks(keys_.size());
    try {
      for (const auto& d : batch) {
        // What is left of the batch stays pending and comes first on the next start.
        if (finished()) break;
        if (last_ids) (*last_ids)[d.stream] = d.entry.id;
        // An entry deleted (XDEL, trimming) while pending comes back without fields: nothing to print.
        if (!d.entry.fields.empty()) print(d);
        acks[d.stream].push_back(d.entry.id);
      }
    } catch (const OutputFailed&) {
      acknowledge(acks);
      throw;
    }
    acknowledge(acks);
  }

  void acknowledge(const std::vector<std::vector<std::string>>& acks) {
    for (std::size_t i = 0; i < keys_.size(); ++i) {
      if (acks[i].empty()) continue;
      std::vector<std::string> argv{"XACK", keys_[i], o_.group};
      argv.insert(argv.end(), acks[i].begin(), acks[i].end());
      client_->checked(keys_[i], argv);
    }
  }

  // Entries delivered to this consumer before a crash or a kill, never acknowledged: first, oldest first.
  void redeliver_pending() {
    std::vector<std::string> after(keys_.size(), "0");
    std::vector<bool> drained(keys_.size(), false);
    while (!finished()) {
      if (std::all_of(drained.begin(), drained.end(), [](bool d) { return d; })) return;
      auto batch = read({"XREADGROUP", "GROUP", o_.group, o_.consumer, "COUNT", batch_size()}, {}, drained,
                        [&](std::size_t i) { return after[i]; });
      // A stream with nothing left pending comes back empty (or not at all): drop it from the next read.
      std::vector<bool> seen(keys_.size(), false);
      for (const auto& d : batch) seen[d.stream] = true;
      for (std::size_t i = 0; i < keys_.size(); ++i) {
        if (!seen[i]) drained[i] = true;
      }
      deliver(batch, &after);
    }
  }

  void read_group_new() {
    while (!finished()) {
      deliver(read({"XREADGROUP", "GROUP", o_.group, o_.consumer, "COUNT", batch_size()},
                   {"BLOCK", std::to_string(o_.block.count())}, {}, [](std::size_t) { return std::string(">"); }));
    }
  }

  const TailOptions& o_;
  std::vector<std::string> keys_;
  std::vector<Format> formats_;  // per key
  std::vector<std::string> ids_;  // without a group: the last ID read per stream
  std::unique_ptr<RedisCommands> client_;
  std::vector<std::vector<std::size_t>> by_slot_;  // stream indexes, one list per XREAD (per hash slot)
  std::uint64_t printed_ = 0;
};

}  // namespace

int tail(const TailOptions& options) {
  install_stop_handlers();
  Tailer tailer(options);
  tailer.connect();  // start-up problems are thrown: the operator's to fix
  auto backoff = std::chrono::milliseconds(100);
  bool connected = true;
  for (;;) {
    try {
      if (!connected) {
        tailer.connect();
        connected = true;
        backoff = std::chrono::milliseconds(100);
      }
      tailer.session();
      return 0;
    } catch (const OutputFailed& e) {
      if (e.closed) return 0;  // `walstream tail … | head`: the reader has what it wanted
      log::error("{}", e.what);
      return 1;
    } catch (const RedisError& e) {
      if (!e.transient()) {
        log::error("{}", e.what());
        return 1;
      }
      connected = false;
      log::warn("{}; retrying in {} ms", e.what(), backoff.count());
      for (auto slept = std::chrono::milliseconds(0); slept < backoff && !stop_requested();
           slept += std::chrono::milliseconds(50)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      if (stop_requested()) return 0;
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, kMaxBackoff);
    }
  }
}

}  // namespace walstream
