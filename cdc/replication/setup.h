// Start-up checks and idempotent setup on the PostgreSQL side: wal_level, the role's REPLICATION
// attribute, the publication (created when missing) and the slot (created when missing).
#pragma once

#include "config.h"

namespace walstream {

// Throws ConfigError (fix the setup) or PgError (server unreachable) with a one-line message.
void prepare_source(const Config& config);

}  // namespace walstream
