#!/usr/bin/env bash
# Sourced by the ops scripts: makes sure the tools and services hikyaku needs are here.
# Installs from Debian packages when missing; starts Redis on 127.0.0.1:6379 when not running.
set -euo pipefail

hk_log() { printf '\033[1m[hikyaku]\033[0m %s\n' "$*" >&2; }

hk_apt_install() {
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    if [ -z "${HK_APT_UPDATED:-}" ]; then
        $sudo apt-get update -qq
        HK_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

hk_ensure_rust() {
    # The engine signs DKIM RSA with the system OpenSSL: its headers and pkg-config to build.
    if ! pkg-config --exists openssl 2>/dev/null; then
        hk_log "OpenSSL headers not found: installing Debian's libssl-dev and pkg-config"
        hk_apt_install libssl-dev pkg-config
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        if [ -x "$HOME/.cargo/bin/cargo" ]; then
            export PATH="$HOME/.cargo/bin:$PATH"
        else
            hk_log "cargo not found: installing Debian's Rust toolchain (cargo, rustc)"
            hk_apt_install cargo rustc
        fi
    fi
}

# promtool (Debian's prometheus package), which checks the scrape config and runs the alert
# rules' unit tests.
hk_ensure_promtool() {
    if ! command -v promtool >/dev/null 2>&1; then
        hk_log "promtool not found: installing Debian's prometheus package"
        hk_apt_install prometheus
        # The package starts a Prometheus on :9090; the tests do not need it.
        (systemctl stop prometheus 2>/dev/null || service prometheus stop 2>/dev/null || true) >/dev/null 2>&1
    fi
}

# dkimpy, the independent DKIM verifier the deliverability test checks signatures with.
hk_ensure_dkimpy() {
    if ! /usr/bin/python3 -c 'import dkim, nacl' >/dev/null 2>&1; then
        hk_log "dkimpy not found: installing Debian's python3-dkim (test-only DKIM verifier)"
        hk_apt_install python3 python3-dkim python3-nacl
    fi
}

# swaks, the SMTP probe the relay test drives against the inbound listener.
hk_ensure_swaks() {
    if ! command -v swaks >/dev/null 2>&1; then
        hk_log "swaks not found: installing Debian's swaks (test-only SMTP probe)"
        hk_apt_install swaks
    fi
}

hk_ensure_redis() {
    if ! command -v redis-server >/dev/null 2>&1; then
        hk_log "redis-server not found: installing Debian's redis-server"
        hk_apt_install redis-server
    fi
    if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        hk_log "starting Redis on 127.0.0.1:6379 (nothing persisted)"
        local dir="${TMPDIR:-/tmp}/hikyaku-redis"
        mkdir -p "$dir"
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
            --dir "$dir" --logfile "$dir/redis.log"
        for _ in $(seq 1 50); do
            redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return 0
            sleep 0.1
        done
        hk_log "Redis did not start; see $dir/redis.log"
        return 1
    fi
}

hk_ensure_postgres() {
    if ! command -v pg_isready >/dev/null 2>&1 || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        hk_log "PostgreSQL not found: installing Debian's postgresql"
        hk_apt_install postgresql
    fi
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        hk_log "starting PostgreSQL"
        local v
        v="$(ls /etc/postgresql | sort -V | tail -1)"
        pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null \
            || su postgres -c "pg_ctlcluster $v main start"
        for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
    fi
    # Tests create and drop their own databases as `postgres`. A fresh Debian install asks for
    # a password over TCP: give the local superuser one for this development machine.
    if [ -z "${HIKYAKU_TEST_DATABASE_URL:-}" ]; then
        if psql "postgres://postgres@127.0.0.1:5432/postgres" -tAc 'select 1' >/dev/null 2>&1; then
            export HIKYAKU_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
        else
            su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
            export HIKYAKU_TEST_DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/postgres"
        fi
    fi
}

# One target directory for every build of this checkout and of fresh clones on this machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hikyaku/target}"
