#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, and runs every unit and integration test.
# Integration tests start their own PostgreSQL 15 and Redis 7 on free loopback ports.
#   scripts/test.sh            all tests
#   scripts/test.sh -L unit    only the unit tests (any ctest arguments work)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j2 "$@"
