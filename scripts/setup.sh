#!/usr/bin/env bash
# Installs what building and testing cohort needs, idempotently:
#   - Debian packages for librdkafka (via rdkafka-sys) and RocksDB (bindgen needs libclang);
#   - the tansu 0.6.0 Kafka-compatible broker used by the end-to-end tests.
# A second run installs nothing. Set COHORT_CACHE to move the cache
# (default: ~/.cache/cohort); the broker lands in $COHORT_CACHE/tansu/bin.
set -euo pipefail

CACHE="${COHORT_CACHE:-$HOME/.cache/cohort}"
TANSU_VERSION="0.6.0"
TANSU_ROOT="${TANSU_ROOT:-$CACHE/tansu}"
TANSU_BIN="$TANSU_ROOT/bin/tansu"

# sqlite3: the broker benchmark indexes tansu's header table with it (docs/benchmarks.md).
DEB_PACKAGES=(clang libclang-dev cmake pkg-config libssl-dev zlib1g-dev make g++ python3 python3-yaml sqlite3)
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
    # prometheus is only wanted for promtool; do not start its service.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "Debian packages present"
fi

if [[ -x "$TANSU_BIN" ]] && "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    log "tansu $TANSU_VERSION present at $TANSU_BIN"
else
    log "building tansu $TANSU_VERSION into $TANSU_ROOT (about 14 minutes on 2 cores, once)"
    # The sqlite (libsql) engine keeps data across a broker restart and serves
    # seeks into the middle of a record batch; the memory engine does not.
    env -u CARGO_TARGET_DIR cargo install tansu --version "$TANSU_VERSION" --locked \
        --no-default-features --features libsql --root "$TANSU_ROOT"
fi
