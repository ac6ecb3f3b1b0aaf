// The run loop: one replication session at a time (PostgreSQL slot -> pipeline -> Redis), and the
// retry policy around sessions. The only place that decides about reconnecting.
#pragma once

#include "config.h"

namespace walstream {

// Runs until stopped by SIGTERM/SIGINT (stores what it has, confirms it, returns 0) or a fatal error (logs one line, returns 1).
int run(const Config& config);

}  // namespace walstream
