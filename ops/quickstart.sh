#!/usr/bin/env bash
# The local demo: builds hikyaku, then runs a campaign of 100,000 personalized messages
# (override with COUNT=…) through a fresh Redis, the test DNS server, the engine and the sink,
# with a progress bar and a summary (msg/min, CPU per message, memory).
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/lib/ensure-services.sh
hk_ensure_rust
hk_ensure_redis
hk_log "building (release)…"
cargo build --release --quiet -p hikyaku-engine -p hikyaku-loadtest
exec "$CARGO_TARGET_DIR/release/hikyaku-loadtest" demo --count "${COUNT:-100000}" "$@"
