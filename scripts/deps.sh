#!/usr/bin/env bash
# Installs the Debian 12 packages walstream builds, tests and runs with, when any is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libpq-dev libpqxx-dev libhiredis-dev libssl-dev libfmt-dev libcxxopts-dev rapidjson-dev libgtest-dev libcpp-httplib-dev
  postgresql-15 postgresql-client-15 redis-server redis-sentinel  # redis-sentinel: sentinel_test
  python3 python3-redis python3-psycopg2 python3-yaml
  prometheus  # promtool, for the alert rules' tests (ctest prometheus_rules)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}"
$SUDO apt-get update -qq
# The postgresql package starts a cluster on 5432 by default; walstream's scripts run their own.
# Likewise the prometheus package (wanted for promtool) starts a Prometheus on :9090 where systemd runs:
# `systemctl disable --now prometheus` if that is not wanted.
# The same for redis-sentinel (wanted for sentinel_test; its service listens on :26379).
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
