// The run loop: one replication session at a time (PostgreSQL slot -> pipeline -> Redis), and the
// retry policy around sessions. The only place that decides about reconnecting.
#pragma once

#include <atomic>

#include "config.h"

namespace walstream {

// Set by SIGTERM/SIGINT; the loop then stores what it has, confirms it, and returns.
void install_stop_handlers();
bool stop_requested();

// Runs until stopped (returns 0) or a fatal error (logs one line, returns 1).
int run(const Config& config);

}  // namespace walstream
