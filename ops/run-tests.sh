#!/usr/bin/env bash
# Runs every test of the workspace: the Prometheus rules' unit tests (promtool),
# schemathesis against the running API, a short fuzz run of every fuzz target, unit tests and
# the black-box scenarios against real
# redis-server processes, per-test PostgreSQL databases, the project's DNS server and SMTP sink
# on 127.0.0.x.
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/lib/ensure-services.sh
hk_ensure_rust
hk_ensure_redis
hk_ensure_postgres
hk_ensure_dkimpy
hk_ensure_swaks
hk_ensure_promtool
hk_log "promtool: scrape config, rules and their unit tests"
(cd ops/prometheus && promtool check config prometheus.yml >/dev/null)
promtool test rules ops/prometheus/tests/hikyaku.rules.test.yml
# A filtered run (arguments for cargo test) is about those tests only. The whole run puts
# schemathesis and the fuzz smoke run first, so that the workspace tests' results are the
# last thing it prints.
if [ $# -eq 0 ]; then
    hk_log "schemathesis against the API's OpenAPI document"
    tests/schemathesis.sh
    hk_log "fuzz smoke run (every target, 15 s each, over the committed corpora)"
    tests/fuzz/run.sh 15
fi
# The previous release, built from git history once per release (its own target directory),
# for the rolling-upgrade test: its engine and API share a campaign with this release's.
hk_log "the previous release for the rolling-upgrade test (built once per release)"
HIKYAKU_PREVIOUS_RELEASE_DIR=$(ops/compat/previous-release.sh)
export HIKYAKU_PREVIOUS_RELEASE_DIR
hk_log "cargo test --workspace"
cargo test --workspace --locked "$@"
