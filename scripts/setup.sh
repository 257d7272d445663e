#!/usr/bin/env bash
# Installs what building and testing cohort needs, idempotently:
#   - Debian packages for librdkafka (via rdkafka-sys) and RocksDB (bindgen needs libclang);
#   - PostgreSQL (Debian's `postgresql`), whose server keeps the test broker's
#     data: scripts/pg.sh runs a private cluster of it on 127.0.0.1 when the
#     tests start (no system service is started or needed);
#   - the tansu 0.6.0 Kafka-compatible broker used by the end-to-end tests,
#     built with two storage engines: `postgres` (the tests) and `libsql`
#     (sqlite: the broker benchmarks, and COHORT_TEST_STORAGE=sqlite).
# A second run installs nothing. Set COHORT_CACHE to move the cache
# (default: ~/.cache/cohort); the broker lands in $COHORT_CACHE/tansu/bin.
set -euo pipefail

CACHE="${COHORT_CACHE:-$HOME/.cache/cohort}"
TANSU_VERSION="0.6.0"
TANSU_ROOT="${TANSU_ROOT:-$CACHE/tansu}"
TANSU_BIN="$TANSU_ROOT/bin/tansu"

# sqlite3: the broker benchmark indexes tansu's header table with it (docs/benchmarks.md).
# postgresql: the server and psql for the test broker's storage (scripts/pg.sh).
DEB_PACKAGES=(clang libclang-dev cmake pkg-config libssl-dev zlib1g-dev make g++ python3 python3-yaml sqlite3 postgresql)
if [[ "${COHORT_SETUP_PROMTOOL:-1}" == 1 ]]; then
    DEB_PACKAGES+=(prometheus)
fi

log() { printf '[setup] %s\n' "$*" >&2; }

missing=()
for p in "${DEB_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
    log "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    # prometheus is only wanted for promtool and postgresql for its server
    # binaries: start neither service. A policy-rc.d that answers 101 tells
    # the packages' scripts not to start them (where none exists already).
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [[ ! -e $policy ]]; then
        trap '$SUDO rm -f "$policy"' EXIT
        printf '#!/bin/sh\n# scripts/setup.sh: no service starts while it installs packages\nexit 101\n' |
            $SUDO tee "$policy" >/dev/null
        $SUDO chmod 0755 "$policy"
        made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if ((made_policy)); then
        $SUDO rm -f "$policy"
        trap - EXIT
    fi
else
    log "Debian packages present"
fi

# The engines a tansu binary was built with: `tansu --help` ends with
# "Storage engines: libsql, postgres".
has_engines() {
    local engines
    engines="$("$TANSU_BIN" --help 2>/dev/null | sed -n 's/^Storage engines: //p')"
    [[ "$engines" == *libsql* && "$engines" == *postgres* ]]
}
if [[ -x "$TANSU_BIN" ]] && "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION" && has_engines; then
    log "tansu $TANSU_VERSION (libsql, postgres) present at $TANSU_BIN"
else
    log "building tansu $TANSU_VERSION with the libsql and postgres engines into $TANSU_ROOT (about 25 minutes on 2 cores, once)"
    # postgres: the tests' broker; it keeps its data across a restart, where
    # tansu 0.6.0 on sqlite panicked restarted on its own data after a long
    # run. libsql (sqlite): the broker benchmarks (docs/benchmarks.md). The
    # memory engine keeps nothing across a restart and cannot serve seeks
    # into the middle of a record batch. cargo reinstalls a binary built
    # with other features (an older setup's libsql-only one).
    env -u CARGO_TARGET_DIR cargo install tansu --version "$TANSU_VERSION" --locked \
        --no-default-features --features libsql,postgres --root "$TANSU_ROOT"
fi
