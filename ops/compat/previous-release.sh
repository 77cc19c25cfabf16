#!/usr/bin/env bash
# Builds the previous release's engine and API binaries (debug) from git history, for the
# rolling-upgrade test (tests/tests/rolling_upgrade.rs), and prints the directory holding
# `hikyaku-engine` and `hikyaku-api`. The release is the commit in ops/compat/PREVIOUS_RELEASE
# (moved forward with each release). Built once per commit, from `git archive` into its own
# target directory (never the workspace's, whose binaries the other tests use), and kept:
#   $HIKYAKU_COMPAT_DIR (default: $CARGO_TARGET_DIR/compat, or target/compat)
# Needs the commit in this clone (a shallow clone: `git fetch --unshallow`) and the crates of
# its Cargo.lock (cargo fetches them the first time).
set -euo pipefail
cd "$(dirname "$0")/../.."
rev=$(tr -d '[:space:]' < ops/compat/PREVIOUS_RELEASE)
cache=${HIKYAKU_COMPAT_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/compat}
out=$cache/bin-$rev
if [ -x "$out/hikyaku-engine" ] && [ -x "$out/hikyaku-api" ]; then
    echo "$out"
    exit 0
fi
if ! git cat-file -e "$rev^{commit}" 2>/dev/null; then
    echo "previous release $rev is not in this clone (git fetch --unshallow)" >&2
    exit 1
fi
src=$cache/src-$rev
rm -rf "$src"
mkdir -p "$src"
git archive "$rev" | tar -x -C "$src"
echo "building the previous release ($rev) into $cache/target (once)" >&2
(cd "$src" && CARGO_TARGET_DIR=$cache/target cargo build --locked -p hikyaku-engine -p hikyaku-api --bins >&2)
mkdir -p "$out.tmp"
cp "$cache/target/debug/hikyaku-engine" "$cache/target/debug/hikyaku-api" "$out.tmp/"
rm -rf "$out" "$src"
mv "$out.tmp" "$out"
echo "$out"
