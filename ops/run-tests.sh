#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, and the black-box scenarios against real
# redis-server processes, per-test PostgreSQL databases, the project's DNS server and SMTP sink
# on 127.0.0.x.
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/lib/ensure-services.sh
hk_ensure_rust
hk_ensure_redis
hk_ensure_postgres
hk_ensure_dkimpy
cargo test --workspace --locked "$@"
