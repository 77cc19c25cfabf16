#!/usr/bin/env bash
# schemathesis (PyPI) against /openapi.json of a running API: property-based requests to every
# operation, with a valid key, checking that no response is a 5xx and that every response's
# status code, content type, headers and body are the ones the document declares.
#
# Starts its own Redis (free port), database (dropped at the end) and `hikyaku-api`, makes a
# tenant with the admin CLI, seeds a list, a subscriber and a campaign (so generated ids can
# hit real rows), then runs schemathesis. Exit status: schemathesis's.
#
#   tests/schemathesis.sh                    # the CI run (a bounded number of examples)
#   HK_ST_EXAMPLES=500 tests/schemathesis.sh # a longer one
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/lib/ensure-services.sh
hk_ensure_rust
hk_ensure_redis
hk_ensure_postgres

# schemathesis lives in its own virtualenv (Debian's Python refuses system-wide pip installs).
ST_VERSION=4.32.5
venv="$HOME/.cache/hikyaku/schemathesis-venv"
if ! "$venv/bin/python" -m schemathesis.cli --version 2>/dev/null | grep -q "$ST_VERSION"; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        hk_log "python3 venv not found: installing Debian's python3-venv"
        hk_apt_install python3-venv
    fi
    hk_log "installing schemathesis $ST_VERSION from PyPI into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
fi

hk_log "building hikyaku-api and hikyaku"
cargo build --locked -q -p hikyaku-api --bins
bin="$CARGO_TARGET_DIR/debug"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work="$(mktemp -d)"
redis_port="$(free_port)"
api_port="$(free_port)"
db="hk_schemathesis_$$"
admin_url="${HIKYAKU_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
db_url="${admin_url%/*}/$db"
api_pid=""
cleanup() {
    [ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null || true
    redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --dir "$work" --logfile "$work/redis.log"
psql "$admin_url" -qc "CREATE DATABASE $db" >/dev/null
export HIKYAKU_DATABASE_URL="$db_url"
export HIKYAKU_REDIS_URL="redis://127.0.0.1:$redis_port"
# No per-key request limit: schemathesis sends as fast as it can.
"$bin/hikyaku-api" --listen "127.0.0.1:$api_port" --key-rate 0 >"$work/api.log" 2>&1 &
api_pid=$!
base="http://127.0.0.1:$api_port"
for _ in $(seq 1 100); do
    curl -sf "$base/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -sf "$base/readyz" >/dev/null || { cat "$work/api.log"; hk_log "the API did not start"; exit 1; }

key="$("$bin/hikyaku" --json tenant create schemathesis | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')"
auth="Authorization: Bearer $key"
curl -sf -H "$auth" -H 'Content-Type: application/json' -d '{"name":"seed"}' "$base/v1/lists" >/dev/null
curl -sf -H "$auth" -H 'Content-Type: application/json' -d '{"email":"seed@example.test"}' \
    "$base/v1/lists/1/subscribers" >/dev/null
curl -sf -H "$auth" -H 'Content-Type: application/json' \
    -d '{"name":"seed","list_id":1,"from_addr":"news@example.test","subject":"s","text_body":"b"}' \
    "$base/v1/campaigns" >/dev/null

hk_log "schemathesis against $base/openapi.json"
set +e
"$venv/bin/python" -m schemathesis.cli run "$base/openapi.json" \
    --header "$auth" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "${HK_ST_EXAMPLES:-25}" \
    --workers 2 \
    --request-timeout 10 \
    --suppress-health-check all \
    --no-color
status=$?
set -e
if [ "$status" != 0 ]; then
    hk_log "schemathesis found problems; the API's log:"
    grep -E "ERROR|WARN|panick" "$work/api.log" | tail -20 || true
fi
exit "$status"
