#!/usr/bin/env bash
# Supply-chain checks of the dependency tree with cargo-deny (policy: ops/deny.toml):
# licenses (permissive only), bans (no wildcard versions), sources (crates.io only), and
# RustSec advisories (known vulnerabilities, yanked and unmaintained crates).
#
# The advisory database is a git repository on GitHub. Where it cannot be fetched (an offline
# machine), the other three checks still run and this script says plainly that advisories were
# not checked; HK_REQUIRE_ADVISORIES=1 turns that into a failure (for CI machines with network).
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/lib/ensure-services.sh
hk_ensure_rust
if ! command -v cargo-deny >/dev/null 2>&1; then
    hk_log "cargo-deny not found: installing it from crates.io"
    cargo install --locked cargo-deny
fi
deny=(cargo deny --workspace --locked --config ops/deny.toml)
"${deny[@]}" check bans licenses sources
if timeout 120 "${deny[@]}" fetch db >/dev/null 2>&1; then
    "${deny[@]}" check advisories
elif [ -n "${HK_REQUIRE_ADVISORIES:-}" ]; then
    hk_log "the RustSec advisory database could not be fetched (HK_REQUIRE_ADVISORIES is set)"
    exit 1
else
    hk_log "NOTE: the RustSec advisory database could not be fetched (no network to GitHub): advisories NOT checked; licenses, bans and sources are clean"
fi
