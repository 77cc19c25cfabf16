#!/usr/bin/env bash
# The local demo: builds hikyaku, then sends a campaign of 100,000 personalized messages
# (override with COUNT=…) through the API — tenant, list import, campaign, send — over a fresh
# Redis and PostgreSQL database, the engine, the test DNS server and the sink, with a progress
# bar and a summary (msg/min, CPU per message per process, memory).
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/lib/ensure-services.sh
hk_ensure_rust
hk_ensure_redis
hk_ensure_postgres
hk_log "building (release)…"
cargo build --release --quiet -p hikyaku-engine -p hikyaku-api -p hikyaku-loadtest
exec "$CARGO_TARGET_DIR/release/hikyaku-loadtest" demo --count "${COUNT:-100000}" \
    --postgres-url "$HIKYAKU_TEST_DATABASE_URL" "$@"
