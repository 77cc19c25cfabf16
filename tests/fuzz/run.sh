#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20: the CI smoke run) over its committed
# corpus under tests/fuzz/corpus/<target>; stops at the first crash (libFuzzer writes the input
# to tests/fuzz/artifacts/<target>/). `-s none`: the code under test forbids `unsafe`, so the
# coverage-guided search matters, not AddressSanitizer. `-O`: the release profile of
# tests/fuzz/Cargo.toml decides debug assertions and overflow checks (on, but for one crate). cargo fuzz passes nightly-only flags to rustc: RUSTC_BOOTSTRAP=1 lets the machine's
# one stable toolchain take them.
#
#   tests/fuzz/run.sh                           # smoke: 20 s each, the corpus left as it is
#   HK_FUZZ_MERGE=1 tests/fuzz/run.sh 600 render # ten minutes, new coverage merged into it
#
# libFuzzer's progress lines go to $HK_FUZZ_LOG_DIR/<target>.log (default
# ~/.cache/hikyaku/fuzz-logs); the terminal gets one summary line per target, and the log's
# tail when a target fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ops/lib/ensure-services.sh
hk_ensure_rust
# libFuzzer is C++: cargo-fuzz builds it with the system's C++ compiler.
if ! command -v g++ >/dev/null 2>&1; then
    hk_log "g++ not found: installing Debian's g++ (libFuzzer's runtime)"
    hk_apt_install g++
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    hk_log "cargo-fuzz not found: installing it from crates.io"
    cargo install --locked cargo-fuzz
fi
seconds="${1:-20}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(smtp_reply inbound_report render queue_decode import_rows)
export RUSTC_BOOTSTRAP=1
# Instrumented builds differ from the workspace's: their own target directory.
export CARGO_TARGET_DIR="$HOME/.cache/hikyaku/fuzz-target"
cargo fuzz build --fuzz-dir tests/fuzz -O -s none
logs="${HK_FUZZ_LOG_DIR:-$HOME/.cache/hikyaku/fuzz-logs}"
mkdir -p "$logs"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    hk_log "fuzzing $t for ${seconds}s"
    mkdir -p "tests/fuzz/corpus/$t" "$scratch/$t"
    # New inputs go to the scratch directory (the first one); the committed corpus is read.
    log="$logs/$t.log"
    if ! cargo fuzz run --fuzz-dir tests/fuzz -O -s none "$t" "$scratch/$t" "tests/fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        hk_log "fuzz target $t FAILED (whole log: $log; the input is under tests/fuzz/artifacts/$t/)"
        exit 1
    fi
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    hk_log "fuzz target $t: ${runs:-?} runs in ${seconds}s, no crash (log: $log)"
    if [ -n "${HK_FUZZ_MERGE:-}" ]; then
        # Keeps only the new inputs that reach coverage the committed corpus does not.
        cargo fuzz run --fuzz-dir tests/fuzz -O -s none "$t" "tests/fuzz/corpus/$t" "$scratch/$t" -- \
            -merge=1 >"$logs/$t.merge.log" 2>&1 || { tail -n 30 "$logs/$t.merge.log" >&2; exit 1; }
        hk_log "merged: $(ls "tests/fuzz/corpus/$t" | wc -l) inputs in tests/fuzz/corpus/$t"
    fi
done
