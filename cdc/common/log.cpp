#include "log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <stdexcept>
#include <string>

namespace walstream::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::Info)};
}

void set_level(Level level) { g_level = static_cast<int>(level); }
bool enabled(Level level) { return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed); }

void write(Level level, std::string_view message) {
  static constexpr const char* names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
  auto now = std::chrono::system_clock::now();
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(micros / 1'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  // Messages are one line each: a newline inside (from a server's error text) would split the event.
  std::string flat(message);
  while (!flat.empty() && (flat.back() == '\n' || flat.back() == ' ')) flat.pop_back();
  for (auto& c : flat) {
    if (c == '\n') c = ' ';
  }
  std::string line = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z {} {}\n", tm.tm_year + 1900, tm.tm_mon + 1,
                                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (micros / 1000) % 1000,
                                 names[static_cast<int>(level)], flat);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

Level parse_level(std::string_view name) {
  if (name == "debug") return Level::Debug;
  if (name == "info") return Level::Info;
  if (name == "warn") return Level::Warn;
  if (name == "error") return Level::Error;
  throw std::invalid_argument("log level must be debug, info, warn or error");
}

}  // namespace walstream::log
