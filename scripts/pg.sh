#!/usr/bin/env bash
# A private PostgreSQL cluster on 127.0.0.1 for the test broker: tansu's
# postgres storage engine keeps its topics, records and groups in it.
#
#   scripts/pg.sh start        starts the cluster, or reuses it when it already
#                              runs; loads tansu's schema (scripts/tansu/) into
#                              the template database `tansu_template` when it
#                              is missing or the schema file changed; drops
#                              test databases whose creating process is gone
#   scripts/pg.sh create NAME  a new database NAME, a copy of the template
#                              (an empty broker); prints tansu's storage URL
#   scripts/pg.sh drop NAME..  drops databases, closing their connections;
#                              missing ones are fine
#   scripts/pg.sh url NAME     prints the storage URL of database NAME
#   scripts/pg.sh stop         stops the cluster (`start` starts it again)
#   scripts/pg.sh status       says whether it runs, where and on which port
#
# The cluster lives in $COHORT_CACHE/pg (default ~/.cache/cohort/pg): data/
# (the cluster), run/ (its Unix socket), server.log. It listens on
# 127.0.0.1:$COHORT_PG_PORT (default 54329) only, and stays up between runs:
# `start` is cheap when it already runs. It is a cache: durability is off
# (fsync, synchronous_commit, full_page_writes), which costs nothing when a
# test kills tansu and could lose data only if the machine crashed; delete
# the directory to start afresh.
#
# PostgreSQL refuses to run as root. Run as root (CI, containers), the
# cluster is owned and run by the `postgres` system user (the Debian package
# creates it); when that user cannot reach $COHORT_CACHE (root's home is
# 0700), the cluster lives in /var/tmp/cohort-pg-<hash> and $COHORT_CACHE/pg
# is a symbolic link to it. Otherwise it runs as the calling user.
#
# Access: the superuser `postgres` only through the Unix socket in run/ (the
# cluster's owner, and root); over TCP only the role `tansu` (password
# `tansu`, may create databases), as in postgres://tansu:tansu@127.0.0.1:PORT/NAME.
#
# Test databases are named cohort_t_<pid>_<n> (tests/src/lib.rs) and
# cohort_shared_<pid>_<n> (scripts/with-broker.sh); `start` drops those whose
# <pid> is no longer a running process (a run killed before it cleaned up).
#
# Environment: COHORT_CACHE, COHORT_PG_PORT, COHORT_PG_BIN (PostgreSQL's bin
# directory; default the newest /usr/lib/postgresql/*/bin, as Debian's
# `postgresql` package installs it; scripts/setup.sh installs that).
set -euo pipefail

CACHE="${COHORT_CACHE:-$HOME/.cache/cohort}"
PORT="${COHORT_PG_PORT:-54329}"
SCHEMA="$(cd "$(dirname "$0")" && pwd)/tansu/010-schema.sql"
TEMPLATE=tansu_template

log() { printf '[pg] %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

if [[ ! "$PORT" =~ ^[0-9]+$ ]]; then die "COHORT_PG_PORT=$PORT is not a port number"; fi

pg_bin() {
    if [[ -n "${COHORT_PG_BIN:-}" ]]; then
        echo "$COHORT_PG_BIN"
        return
    fi
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$dir" && -x "$dir/initdb" ]] || die "no PostgreSQL server in /usr/lib/postgresql/*/bin: run scripts/setup.sh (installs Debian's postgresql) or set COHORT_PG_BIN"
    echo "$dir"
}
BIN="$(pg_bin)"

# Who owns and runs the cluster, and how to run a command as that user.
if [[ $(id -u) -eq 0 ]]; then
    OWNER=postgres
    id -u "$OWNER" >/dev/null 2>&1 || die "running as root, and there is no '$OWNER' user to run PostgreSQL as (Debian's postgresql package creates it)"
    as_owner() { runuser -u "$OWNER" -- "$@"; }
else
    OWNER="$(id -un)"
    as_owner() { "$@"; }
fi

# Where the cluster lives: $CACHE/pg, or a directory the owner can reach.
HOME_LINK="$CACHE/pg"
mkdir -p "$CACHE"
if [[ -L "$HOME_LINK" ]]; then
    PG_HOME="$(readlink -f "$HOME_LINK")"
elif [[ $(id -u) -eq 0 ]] && ! as_owner test -x "$CACHE" 2>/dev/null; then
    PG_HOME="/var/tmp/cohort-pg-$(printf '%s' "$CACHE" | sha256sum | cut -c1-12)"
    if [[ -d "$HOME_LINK" ]]; then
        die "$HOME_LINK is a directory the '$OWNER' user cannot reach; remove it (a cache) and run again"
    fi
    ln -sfn "$PG_HOME" "$HOME_LINK"
else
    PG_HOME="$HOME_LINK"
fi
DATA="$PG_HOME/data"
RUN="$PG_HOME/run"
SERVER_LOG="$PG_HOME/server.log"

# psql as the superuser, through the Unix socket; quiet, stops at the first error.
psql_su() { PGOPTIONS="-c client_min_messages=warning" "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$PORT" -U postgres -d postgres "$@"; }
# A value from one query, trimmed.
query() { psql_su -At -c "$1"; }

valid_name() {
    [[ "$1" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "'$1' is not a database name this script makes (lower case, digits, _)"
}

running() { as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

# The port a running cluster listens on (line 4 of postmaster.pid).
running_port() { sed -n 4p "$DATA/postmaster.pid" 2>/dev/null || true; }

init_cluster() {
    log "creating a PostgreSQL cluster in $DATA (owner $OWNER)"
    mkdir -p "$PG_HOME"
    chown "$OWNER" "$PG_HOME"
    chmod 0700 "$PG_HOME"
    as_owner "$BIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C \
        --auth-local=trust --auth-host=scram-sha-256 >"$PG_HOME/initdb.log" 2>&1 ||
        die "initdb failed; see $PG_HOME/initdb.log"
    # listen_addresses, port and the socket directory are given at start, so
    # that COHORT_PG_PORT can change without a new cluster.
    as_owner tee -a "$DATA/postgresql.conf" >/dev/null <<'EOF'

# cohort's test cluster (scripts/pg.sh): a cache, not a database of record.
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 64MB
log_min_messages = warning
EOF
    # Over TCP only from loopback, with a password.
    as_owner tee "$DATA/pg_hba.conf" >/dev/null <<'EOF'
# cohort's test cluster (scripts/pg.sh)
local   all   all                 trust
host    all   all   127.0.0.1/32  scram-sha-256
EOF
}

start_server() {
    mkdir -p "$RUN"
    chown "$OWNER" "$RUN"
    chmod 0700 "$RUN"
    log "starting PostgreSQL ($BIN) on 127.0.0.1:$PORT"
    if ! as_owner "$BIN/pg_ctl" -D "$DATA" -l "$SERVER_LOG" -w -t 120 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$RUN" start \
        </dev/null >>"$PG_HOME/pg_ctl.log" 2>&1 9>&-; then
        tail -n 20 "$SERVER_LOG" >&2 || true
        die "PostgreSQL did not start on 127.0.0.1:$PORT (is the port taken? set COHORT_PG_PORT); log: $SERVER_LOG"
    fi
}

# The template: tansu's schema, owned by the role tansu; rebuilt when the
# schema file changes (its hash is the database's comment).
ensure_template() {
    local want have
    want="cohort tansu schema sha256:$(sha256sum "$SCHEMA" | cut -c1-64)"
    if [[ "$(query "select count(*) from pg_roles where rolname = 'tansu'")" != 1 ]]; then
        psql_su -c "create role tansu login createdb password 'tansu'"
    fi
    have="$(query "select shobj_description(oid, 'pg_database') from pg_database where datname = '$TEMPLATE'")"
    if [[ "$have" == "$want" ]]; then
        return
    fi
    log "loading tansu's schema ($SCHEMA) into the template database $TEMPLATE"
    if [[ -n "$(query "select 1 from pg_database where datname = '$TEMPLATE'")" ]]; then
        psql_su -c "alter database $TEMPLATE is_template false" -c "drop database $TEMPLATE with (force)"
    fi
    psql_su -c "create database $TEMPLATE owner tansu"
    "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$PORT" -U tansu -d "$TEMPLATE" -f "$SCHEMA" >/dev/null
    psql_su -c "comment on database $TEMPLATE is '$want'" -c "alter database $TEMPLATE is_template true"
}

# Drops test databases whose creating process is gone.
drop_orphans() {
    local name pid
    while read -r name; do
        [[ -n "$name" ]] || continue
        pid="$(sed -E 's/^cohort_(t|shared)_([0-9]+)_.*/\2/' <<<"$name")"
        if [[ "$pid" =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null && [[ ! -d "/proc/$pid" ]]; then
            log "dropping $name (left by process $pid, which is gone)"
            psql_su -c "drop database if exists \"$name\" with (force)" || true
        fi
    done < <(query "select datname from pg_database where datname ~ '^cohort_(t|shared)_[0-9]+_'")
}

cmd_start() {
    # One start at a time: tests running in parallel all call this. (The
    # server must not inherit the lock's descriptor: see start_server.)
    exec 9>"$CACHE/pg.lock"
    flock -w 120 9 || die "waited 2 minutes for $CACHE/pg.lock (held by: $(fuser "$CACHE/pg.lock" 2>/dev/null || echo '?'))"
    [[ -f "$DATA/PG_VERSION" ]] || init_cluster
    if running; then
        local p
        p="$(running_port)"
        [[ "$p" == "$PORT" ]] || die "the cluster in $DATA already runs on port $p, not $PORT: set COHORT_PG_PORT=$p, or run scripts/pg.sh stop first"
    else
        start_server
    fi
    ensure_template
    drop_orphans
}

cmd_url() {
    echo "postgres://tansu:tansu@127.0.0.1:$PORT/$1"
}

case "${1:-}" in
start)
    cmd_start
    ;;
create)
    [[ $# -eq 2 ]] || die "usage: $0 create NAME"
    valid_name "$2"
    psql_su -c "create database \"$2\" template $TEMPLATE owner tansu"
    cmd_url "$2"
    ;;
drop)
    shift
    for name in "$@"; do
        valid_name "$name"
        psql_su -c "drop database if exists \"$name\" with (force)"
    done
    ;;
url)
    [[ $# -eq 2 ]] || die "usage: $0 url NAME"
    valid_name "$2"
    cmd_url "$2"
    ;;
stop)
    if running; then
        as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
        log "stopped the cluster in $DATA"
    else
        log "not running ($DATA)"
    fi
    ;;
status)
    if running; then
        echo "running: $DATA on 127.0.0.1:$(running_port) (PostgreSQL $(cat "$DATA/PG_VERSION"), owner $OWNER)"
    else
        echo "not running: $DATA"
        exit 3
    fi
    ;;
*)
    sed -n '2,17p' "$0" >&2
    exit 2
    ;;
esac
