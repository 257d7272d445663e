#!/usr/bin/env bash
# Runs a command with a real tansu broker on a free loopback port.
# The broker's address is exported as COHORT_TEST_BROKER and tansu's binary is
# put on PATH so tests can start private brokers (for restart tests).
#
# Storage (COHORT_TEST_STORAGE, read by the tests' harness too):
#   postgres (default)  a database of its own in the private PostgreSQL
#                       cluster of scripts/pg.sh (started here if it does not
#                       run, and left running for the next run), copied from
#                       the template that holds tansu's schema;
#   sqlite              a file in a temporary directory, its header table
#                       indexed (tansu 0.6.0 can fail to restart on it after
#                       a long run; the benchmarks use it, docs/benchmarks.md).
# The broker is stopped and its data (directory, database) removed whatever
# the command does.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${COHORT_CACHE:-$HOME/.cache/cohort}"
TANSU_BIN="${TANSU_BIN:-${TANSU_ROOT:-$CACHE/tansu}/bin/tansu}"
STORAGE="${COHORT_TEST_STORAGE:-postgres}"
if [[ "$STORAGE" != postgres && "$STORAGE" != sqlite ]]; then
    echo "with-broker: COHORT_TEST_STORAGE=$STORAGE: expected postgres or sqlite" >&2
    exit 2
fi
if [[ ! -x "$TANSU_BIN" ]]; then
    echo "with-broker: no tansu at $TANSU_BIN; run scripts/setup.sh (make setup) first" >&2
    exit 2
fi
# tansu --help ends with the engines it was built with (cargo features:
# `postgres`, and `libsql` for sqlite:// URLs).
ENGINE_FEATURE="$STORAGE"
if [[ "$STORAGE" == sqlite ]]; then ENGINE_FEATURE=libsql; fi
if ! "$TANSU_BIN" --help 2>/dev/null | grep -Eq "^Storage engines:.*\b$ENGINE_FEATURE\b"; then
    echo "with-broker: $TANSU_BIN was built without the $ENGINE_FEATURE storage engine ($("$TANSU_BIN" --help 2>/dev/null | grep '^Storage engines' || echo '?')); run scripts/setup.sh (make setup)" >&2
    exit 2
fi
export PATH="$(dirname "$TANSU_BIN"):$PATH"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

DATA_DIR="$(mktemp -d -t cohort-tansu.XXXXXX)"
PORT="$(free_port)"
BROKER_PID=""
DATABASE=""

cleanup() {
    local rc=$?
    if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$BROKER_PID" 2>/dev/null || true
    fi
    if [[ $rc -ne 0 && -f "$DATA_DIR/broker.log" ]]; then
        echo "with-broker: last lines of the broker's log:" >&2
        tail -n 20 "$DATA_DIR/broker.log" >&2 || true
    fi
    if [[ -n "$DATABASE" ]]; then
        "$HERE/pg.sh" drop "$DATABASE" || true
    fi
    rm -rf "$DATA_DIR"
    exit $rc
}
trap cleanup EXIT INT TERM

case "$STORAGE" in
postgres)
    "$HERE/pg.sh" start
    # The pid lets scripts/pg.sh drop it should this script be killed.
    DATABASE="cohort_shared_$$_0"
    STORAGE_URL="$("$HERE/pg.sh" create "$DATABASE")"
    ;;
sqlite)
    # tansu resolves the sqlite path relative to its working directory.
    STORAGE_URL="sqlite://tansu.db"
    ;;
esac

(cd "$DATA_DIR" && exec "$TANSU_BIN" broker \
    --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" \
    --storage-engine "$STORAGE_URL" \
    >"$DATA_DIR/broker.log" 2>&1) &
BROKER_PID=$!

for _ in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        echo "with-broker: tansu exited at start:" >&2
        cat "$DATA_DIR/broker.log" >&2
        exit 1
    fi
    sleep 0.1
done

if [[ "$STORAGE" == sqlite ]]; then
    # tansu 0.6.0 scans its whole header table for every record a fetch
    # serves on sqlite; every cohort output carries headers, so the shared
    # broker slowed down as the suite wrote more (reads timing out under
    # load). An index keeps a fetch's cost flat (found by the broker
    # benchmark, docs/benchmarks.md). On postgres the header table's primary
    # key (topition, offset_id, k) serves that lookup.
    # tansu creates its tables as it starts: retry until the index exists.
    indexed=0
    for _ in $(seq 300); do
        if [[ "$(sqlite3 "$DATA_DIR/tansu.db" \
            "create index if not exists cohort_test_header on header (topition, offset_id);
             select count(*) from sqlite_master where type = 'index' and name = 'cohort_test_header';" 2>/dev/null)" == 1 ]]; then
            indexed=1
            break
        fi
        sleep 0.1
    done
    if [[ $indexed != 1 ]]; then
        echo "with-broker: could not index tansu's header table in $DATA_DIR/tansu.db (sqlite3 from scripts/setup.sh)" >&2
        exit 1
    fi
fi

export COHORT_TEST_BROKER="127.0.0.1:$PORT"
export COHORT_TEST_STORAGE="$STORAGE"
echo "with-broker: $("$TANSU_BIN" --version 2>/dev/null | head -1) ($STORAGE) on $COHORT_TEST_BROKER (pid $BROKER_PID)" >&2
"$@"
