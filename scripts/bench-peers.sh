#!/usr/bin/env bash
# `make bench-peers`: cohort side by side with a Quix Streams app doing part
# of the same job (bench-peers/quix_app.py; what it does and does not do is
# in bench-peers/README.md), on the same input in the same private tansu
# broker, alternated round by round. Nothing is asserted about speed.
#
#   1. installs bench-peers/requirements.txt (quixstreams, pinned) into a
#      virtual environment, $COHORT_CACHE/peers-venv (~/.cache/cohort), once:
#      again only when the file or the Python version changes;
#   2. builds `cohort` (cargo build --release -p cohort --bin cohort, in
#      $CARGO_TARGET_DIR if set) unless COHORT_BIN names a binary;
#   3. starts a private tansu on loopback (scripts/with-broker.sh, sqlite
#      storage as in docs/benchmarks.md), creates the topics with
#      PEERS_PARTITIONS (4) partitions each, and loads PEERS_EVENTS (300000)
#      `cohort loadgen` events (PEERS_CUSTOMERS, 20000 customers, JSON) once;
#   4. PEERS_ROUNDS (3) rounds, each running both systems one after the
#      other on all of that input (cohort first in odd rounds, Quix first in
#      even ones), each with a fresh consumer group and a fresh store:
#        cohort  `cohort run` with deploy/rules.yaml; done when its /metrics
#                count every input record as processed (produced,
#                acknowledged and committed to its store) with lag 0,
#                read once its group's committed offsets are at the end
#                (a scrape costs the worker CPU; polling it would not be
#                fair to cohort);
#        quix    bench-peers/quix_app.py; done when the group's committed
#                offsets reach the end of every input partition (Quix
#                commits after flushing its outputs and state);
#      the process's CPU (utime + stime of all its threads, /proc) is read
#      at that moment, then it gets SIGTERM. Wall time runs from its start
#      (start-up included) to that moment.
#
# Output (stdout), one line per measurement and a summary, key=value:
#   bench-peers: round=1 system=cohort events=300000 wall_s=... events_per_s=...
#     cpu_s=... cpu_us_per_event=... tansu_cpu_s=... other_cores=... ...
#   bench-peers: median system=quix ...
#   bench-peers: ratio quix_cpu_per_event/cohort_cpu_per_event=...
# tansu_cpu_s is the broker's CPU over the phase, other_cores the rest of
# the machine's (this script's watcher included) in cores. Progress and
# stall reports go to stderr.
#
# Environment: PEERS_EVENTS, PEERS_ROUNDS, PEERS_CUSTOMERS, PEERS_PARTITIONS,
# PEERS_FETCH_WAIT_MS (10; fetch.wait.max.ms of both systems' consumers,
# empty for librdkafka's 500: tansu holds every fetch for half of it),
# PEERS_DEADLINE_SECS (3600 per phase), PEERS_STALL_SECS (300 without
# progress), PEERS_STORAGE (sqlite, or postgres), PEERS_KEEP (1: keep the logs
# and configs after a failure), PEERS_PYTHON (the Python the venv is made
# from), PEERS_VENV, COHORT_BIN, COHORT_CACHE.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${COHORT_CACHE:-$HOME/.cache/cohort}"
VENV="${PEERS_VENV:-$CACHE/peers-venv}"
PY="$VENV/bin/python"
EVENTS="${PEERS_EVENTS:-300000}"
ROUNDS="${PEERS_ROUNDS:-3}"
CUSTOMERS="${PEERS_CUSTOMERS:-20000}"
PARTITIONS="${PEERS_PARTITIONS:-4}"
FETCH_WAIT_MS="${PEERS_FETCH_WAIT_MS-10}"
DEADLINE="${PEERS_DEADLINE_SECS:-3600}"
STALL="${PEERS_STALL_SECS:-300}"
REQUIREMENTS="$ROOT/bench-peers/requirements.txt"
QUIX_APP="$ROOT/bench-peers/quix_app.py"
RULES="$ROOT/deploy/rules.yaml"

say() { printf 'bench-peers: %s\n' "$*"; }
note() { printf 'bench-peers: %s\n' "$*" >&2; }
die() {
    note "$*"
    exit 1
}

for v in EVENTS ROUNDS CUSTOMERS PARTITIONS DEADLINE STALL; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "PEERS_$v=${!v}: expected a positive whole number"
done
[[ -z "$FETCH_WAIT_MS" || "$FETCH_WAIT_MS" =~ ^[0-9]+$ ]] || die "PEERS_FETCH_WAIT_MS=$FETCH_WAIT_MS: expected a number of ms or nothing"

# --- outside the broker: the venv, the cohort binary, then the broker -------------
if [[ "${1:-}" != --inner ]]; then
    PYTHON="${PEERS_PYTHON:-}"
    if [[ -z "$PYTHON" ]]; then
        if [[ -x /usr/bin/python3 ]]; then PYTHON=/usr/bin/python3; else PYTHON="$(command -v python3 || true)"; fi
    fi
    [[ -n "$PYTHON" ]] || die "no python3 (set PEERS_PYTHON)"
    want="$(sha256sum "$REQUIREMENTS" | cut -c1-64) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])') $PYTHON"
    stamp="$VENV/.bench-peers-installed"
    if [[ ! -x "$PY" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
        note "installing $(grep -E '^[a-z]' "$REQUIREMENTS" | tr '\n' ' ')into $VENV ($("$PYTHON" --version 2>&1))"
        if [[ -e "$VENV" ]]; then
            # Only ever remove a virtual environment (PEERS_VENV could be anything).
            [[ -f "$VENV/pyvenv.cfg" ]] || die "$VENV exists and is not a virtual environment; remove it or set PEERS_VENV"
            rm -rf "$VENV"
        fi
        mkdir -p "$(dirname "$VENV")"
        "$PYTHON" -m venv "$VENV" ||
            die "$PYTHON -m venv failed (on Debian: apt-get install python3-venv)"
        "$PY" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
        echo "$want" >"$stamp"
    else
        note "quixstreams $("$PY" -c 'import quixstreams; print(quixstreams.__version__)' 2>/dev/null) already in $VENV"
    fi

    if [[ -n "${COHORT_BIN:-}" ]]; then
        [[ -x "$COHORT_BIN" ]] || die "COHORT_BIN=$COHORT_BIN is not an executable"
    else
        (cd "$ROOT" && "${CARGO:-cargo}" build --release -p cohort --bin cohort)
        COHORT_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/cohort"
        [[ "$COHORT_BIN" == /* ]] || COHORT_BIN="$ROOT/$COHORT_BIN"
    fi
    export COHORT_BIN
    COHORT_TEST_STORAGE="${PEERS_STORAGE:-sqlite}" exec "$ROOT/scripts/with-broker.sh" "$ROOT/scripts/bench-peers.sh" --inner
fi

# --- inside scripts/with-broker.sh: COHORT_TEST_BROKER is the broker ---------------
B="${COHORT_TEST_BROKER:?run through scripts/with-broker.sh}"
WORK="$(mktemp -d -t cohort-peers.XXXXXX)"
ADMIN="$WORK/peers_admin.py"
SUT_PID=""

stop_sut() {
    # SIGTERM (a clean stop: both commit and leave their group), then wait.
    local pid="$SUT_PID"
    SUT_PID=""
    [[ -n "$pid" ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        kill -CONT "$pid" 2>/dev/null || true
        for _ in $(seq 600); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            note "pid $pid still running 60 s after SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "${WAITER_PID:-}" ]]; then kill -TERM "$WAITER_PID" 2>/dev/null || true; fi
    stop_sut
    if [[ $rc -ne 0 && -n "${PEERS_KEEP:-}" ]]; then
        note "logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The benchmark's broker-side helper: topics, watermarks, and the waits for
# "everything processed" (each group's committed offsets; for cohort then
# its /metrics). It runs beside the system measured, not inside it.
cat >"$ADMIN" <<'PYEOF'
import argparse, json, os, sys, time, urllib.request
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

INPUTS = ["clickstream", "purchases", "customer-profiles", "offer-outcomes"]


def out(**kw):
    print(json.dumps(kw), flush=True)


def note(msg):
    print(f"bench-peers: {msg}", file=sys.stderr, flush=True)


def consumer(broker, group="bench-peers-admin"):
    return Consumer({"bootstrap.servers": broker, "group.id": group, "enable.auto.commit": False})


def partitions(admin, topic):
    md = admin.list_topics(topic, timeout=30)
    t = md.topics.get(topic)
    return 0 if t is None or t.error is not None else len(t.partitions)


def create(a):
    admin = AdminClient({"bootstrap.servers": a.broker})
    # retention.ms / retention.bytes: Quix Streams reads them from its input
    # topics (DescribeConfigs) to configure its changelog topics, and tansu
    # 0.6.0 describes only the configs a topic was created with.
    def config(name):
        c = {"retention.ms": "-1", "retention.bytes": "-1"}
        if "changelog" in name:
            c["cleanup.policy"] = "compact"
        return c
    fs = admin.create_topics([NewTopic(n, a.partitions, 1, config=config(n)) for n in a.topics],
                             operation_timeout=30, request_timeout=60)
    for name, f in fs.items():
        try:
            f.result()
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    until = time.time() + 60
    for name in a.topics:
        while partitions(admin, name) != a.partitions:
            if time.time() > until:
                sys.exit(f"topic {name} does not show {a.partitions} partitions after 60 s")
            time.sleep(0.2)


def highs(c, admin, topics):
    sums = {}
    for t in topics:
        sums[t] = sum(c.get_watermark_offsets(TopicPartition(t, p), timeout=30)[1]
                      for p in range(partitions(admin, t)))
    return sums


def watermarks(a):
    admin = AdminClient({"bootstrap.servers": a.broker})
    c = consumer(a.broker)
    try:
        out(**highs(c, admin, a.topics))
    finally:
        c.close()


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def wait(a, probe, what):
    """Polls probe() -> (done, progress, description) every 0.2 s; on
    success prints the unix time it saw completion. Reports a stall every
    30 s and gives up after a.stall s without progress or a.deadline s."""
    start = time.time()
    last, last_change, reported = None, time.time(), 0.0
    while True:
        done, progress, desc = probe()
        now = time.time()
        if done:
            return now
        if progress != last:
            last, last_change, reported = progress, now, 0.0
        quiet = now - last_change
        if not alive(a.pid):
            sys.exit(f"bench-peers: {what} exited before it was done ({desc}); the last lines of its log:\n{tail(a.log)}")
        if quiet >= 30 and quiet - reported >= 30:
            reported = quiet
            note(f"waiting for {what}: {desc}; no progress for {quiet:.0f} s")
        if quiet > a.stall:
            sys.exit(f"bench-peers: {what} made no progress for {a.stall} s ({desc}); the last lines of its log:\n{tail(a.log)}")
        if now - start > a.deadline:
            sys.exit(f"bench-peers: {what} not done after {a.deadline} s ({desc}); the last lines of its log:\n{tail(a.log)}")
        time.sleep(0.2)


def metrics(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()
    except Exception:
        return ""


def wait_cohort(a):
    """Watches the group's committed offsets, as for Quix, and reads
    cohort's /metrics only once they reach the end of every input
    partition: each /metrics scrape costs the worker CPU (about 0.2 ms),
    which a scrape every 0.2 s would add to its figure and not to Quix's.
    cohort commits a batch's offsets to Kafka after its store commit;
    done is still /metrics counting every input record with lag 0."""
    series = [f'cohort_input_records_total{{topic="{t}"}}' for t in INPUTS]
    admin = AdminClient({"bootstrap.servers": a.broker})
    c = consumer(a.broker, a.group)  # never subscribes: only reads the group's commits
    tps = [TopicPartition(t, p) for t in INPUTS for p in range(partitions(admin, t))]
    ends = {(tp.topic, tp.partition): c.get_watermark_offsets(tp, timeout=30)[1] for tp in tps}
    target = sum(ends.values())

    def probe():
        try:
            committed = c.committed(tps, timeout=10)
        except KafkaException:
            committed = []
        total = sum(max(tp.offset, 0) for tp in committed)
        at_end = bool(committed) and all(tp.offset >= ends[(tp.topic, tp.partition)] for tp in committed)
        if not at_end:
            return False, total, f"{total} of {target} input records committed by group {a.group}"
        text = metrics(a.metrics)
        count, lag = 0.0, 0.0
        for line in text.splitlines():
            if line.startswith("cohort_consumer_lag_records{"):
                lag += float(line.rsplit(" ", 1)[1])
            else:
                for s in series:
                    if line.startswith(s + " "):
                        count += float(line.rsplit(" ", 1)[1])
        desc = f"{count:.0f} of {a.events} input records processed, lag {lag:.0f}" if text else "/metrics not answering"
        return count >= a.events and lag == 0, (total, count), desc

    try:
        out(done=wait(a, probe, a.what))
    finally:
        c.close()


def wait_quix(a):
    admin = AdminClient({"bootstrap.servers": a.broker})
    c = consumer(a.broker, a.group)  # never subscribes: only reads the group's commits
    tps = [TopicPartition(t, p) for t in INPUTS for p in range(partitions(admin, t))]
    ends = {(tp.topic, tp.partition): c.get_watermark_offsets(tp, timeout=30)[1] for tp in tps}
    target = sum(ends.values())

    def processed():
        try:
            with open(a.progress) as f:
                n, t = f.read().split()
                return int(n), float(t)
        except (OSError, ValueError):
            return 0, None

    def probe():
        try:
            committed = c.committed(tps, timeout=10)
        except KafkaException:
            committed = []
        done_parts = sum(1 for tp in committed if tp.offset >= ends[(tp.topic, tp.partition)])
        total = sum(max(tp.offset, 0) for tp in committed)
        n, _ = processed()
        desc = (f"{total} of {target} input records committed by group {a.group} "
                f"({done_parts} of {len(tps)} partitions at their end), {n} processed")
        return bool(committed) and done_parts == len(tps), (total, n), desc

    try:
        done = wait(a, probe, a.what)
        n, t = processed()
        out(done=done, processed=n, processed_at=t if n >= target else None, target=target)
    finally:
        c.close()


ap = argparse.ArgumentParser()
ap.add_argument("command", choices=["create", "watermarks", "wait-cohort", "wait-quix"])
ap.add_argument("--broker", required=True)
ap.add_argument("--topics", nargs="*", default=[])
ap.add_argument("--partitions", type=int, default=4)
ap.add_argument("--events", type=int, default=0)
ap.add_argument("--metrics")
ap.add_argument("--group")
ap.add_argument("--progress")
ap.add_argument("--pid", type=int)
ap.add_argument("--log")
ap.add_argument("--what", default="the system")
ap.add_argument("--deadline", type=float, default=3600)
ap.add_argument("--stall", type=float, default=300)
args = ap.parse_args()
{"create": create, "watermarks": watermarks, "wait-cohort": wait_cohort, "wait-quix": wait_quix}[args.command](args)
PYEOF

admin() { "$PY" -W ignore "$ADMIN" "$@" --broker "$B"; }
# await FILE ARGS...: the helper's wait, in the background so that a signal
# to this script is handled at once (bash runs traps only between commands).
WAITER_PID=""
await() {
    local file=$1
    shift
    "$PY" -W ignore "$ADMIN" "$@" --broker "$B" >"$file" &
    WAITER_PID=$!
    wait "$WAITER_PID" || exit 1
    WAITER_PID=""
}
json_field() { "$PY" -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
now() { echo "${EPOCHREALTIME:-$(date +%s.%N)}"; }
HZ="$(getconf CLK_TCK)"
# utime + stime of a process (all its threads), in clock ticks; 0 once gone.
cpu_ticks() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || {
        echo 0
        return
    }
    stat="${stat##*) }"
    # shellcheck disable=SC2086
    set -- $stat
    echo $((${12} + ${13}))
}
# Busy clock ticks of the whole machine (all CPUs) so far.
machine_ticks() {
    local _cpu u n s _idle _iowait irq sirq steal _rest
    read -r _cpu u n s _idle _iowait irq sirq steal _rest </proc/stat
    echo $((u + n + s + irq + sirq + steal))
}

TANSU_PID=""
for p in $(pgrep -f -- "--listener-url tcp://$B( |\$)" || true); do
    if [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == tansu ]]; then TANSU_PID="$p"; fi
done
[[ -n "$TANSU_PID" ]] || note "could not find the tansu process of $B: its CPU is not reported"

INPUTS=(clickstream purchases customer-profiles offer-outcomes)
COHORT_OUTPUTS=(segment-changes next-best-offers cohort-dlq)
CHANGELOGS=()
for r in $(seq "$ROUNDS"); do CHANGELOGS+=("cohort-changelog-$r"); done
QUIX_OUTPUT=quix-segment-changes

say "cohort $("$COHORT_BIN" --version | awk '{print $NF}') ($COHORT_BIN) against quixstreams $("$PY" -c 'import quixstreams; print(quixstreams.__version__)' 2>/dev/null) (Python $("$PY" -c 'import sys; print(sys.version.split()[0])'), confluent-kafka $("$PY" -c 'import confluent_kafka; print(confluent_kafka.version())'), librdkafka $("$PY" -c 'import confluent_kafka; print(confluent_kafka.libversion()[0])'))"
say "broker $("${TANSU_BIN:-tansu}" --version 2>/dev/null | head -1) ($COHORT_TEST_STORAGE) on $B; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
say "events=$EVENTS customers=$CUSTOMERS partitions=$PARTITIONS rounds=$ROUNDS fetch.wait.max.ms=${FETCH_WAIT_MS:-librdkafka default}"

admin create --partitions "$PARTITIONS" --topics "${INPUTS[@]}" "${COHORT_OUTPUTS[@]}" "${CHANGELOGS[@]}" "$QUIX_OUTPUT"
t0="$(now)"
"$COHORT_BIN" loadgen --bootstrap "$B" --events "$EVENTS" --customers "$CUSTOMERS" --format json >/dev/null 2>"$WORK/loadgen.log" ||
    die "cohort loadgen failed: $(cat "$WORK/loadgen.log")"
t1="$(now)"
loaded="$(admin watermarks --topics "${INPUTS[@]}")"
total=0
for t in "${INPUTS[@]}"; do total=$((total + $(json_field "$loaded" "$t"))); done
say "loaded $EVENTS events in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s: $(for t in "${INPUTS[@]}"; do printf '%s=%s ' "$t" "$(json_field "$loaded" "$t")"; done)"
[[ "$total" -eq "$EVENTS" ]] || die "the input topics hold $total records, not $EVENTS"

RESULTS="$WORK/results"
: >"$RESULTS"
COHORT_SEEN=(0 0) # segment-changes, cohort-dlq records before this phase
QUIX_SEEN=0

# begin_phase / end_phase NAME: wall time, CPU of the system (SUT_PID), of
# tansu and of everything else over the phase.
begin_phase() {
    P_T0="$(now)"
    P_TANSU0="$([[ -n "$TANSU_PID" ]] && cpu_ticks "$TANSU_PID" || echo 0)"
    P_MACHINE0="$(machine_ticks)"
}
end_phase() { # DONE_TIME
    P_CPU="$(cpu_ticks "$SUT_PID")"
    P_TANSU1="$([[ -n "$TANSU_PID" ]] && cpu_ticks "$TANSU_PID" || echo 0)"
    P_MACHINE1="$(machine_ticks)"
    P_WALL="$(awk -v a="$P_T0" -v b="$1" 'BEGIN { printf "%.3f", b - a }')"
}
report() { # ROUND SYSTEM EXTRA
    local line
    line="$(awk -v n="$EVENTS" -v wall="$P_WALL" -v cpu="$P_CPU" -v hz="$HZ" \
        -v tansu=$((P_TANSU1 - P_TANSU0)) -v machine=$((P_MACHINE1 - P_MACHINE0)) 'BEGIN {
        other = (machine - cpu - tansu) / hz / wall; if (other < 0) other = 0
        printf "events=%d wall_s=%.2f events_per_s=%.0f cpu_s=%.2f cpu_us_per_event=%.2f tansu_cpu_s=%.2f other_cores=%.2f",
            n, wall, n / wall, cpu / hz, cpu / hz * 1e6 / n, tansu / hz, other }')"
    say "round=$1 system=$2 $line $3"
    echo "$2 $(awk -v n="$EVENTS" -v cpu="$P_CPU" -v hz="$HZ" -v wall="$P_WALL" -v tansu=$((P_TANSU1 - P_TANSU0)) \
        'BEGIN { printf "%.4f %.3f %.4f", cpu / hz * 1e6 / n, n / wall, tansu / hz * 1e6 / n }')" >>"$RESULTS"
}

run_cohort() { # ROUND
    local round=$1 dir="$WORK/cohort-$round" port done after changes dlq
    mkdir -p "$dir"
    port="$(free_port)"
    {
        printf '[kafka]\nbootstrap_servers = "%s"\ngroup_id = "peers-cohort-%s-%s"\n\n' "$B" "$round" "$$"
        if [[ -n "$FETCH_WAIT_MS" ]]; then
            printf '[kafka.consumer_properties]\n"fetch.wait.max.ms" = "%s"\n\n' "$FETCH_WAIT_MS"
        fi
        # A changelog of its own per round: a fresh store restores from the
        # changelog it is given, and this one must start from nothing.
        printf '[topics]\nchangelog = "cohort-changelog-%s"\n\n' "$round"
        printf '[rules]\npath = "%s"\n\n[store]\npath = "%s/store"\n\n' "$RULES" "$dir"
        printf '[http]\nlisten = "127.0.0.1:%s"\n\n[log]\nlevel = "info,librdkafka=warn"\n' "$port"
    } >"$dir/cohort.toml"
    "$COHORT_BIN" check-config --config "$dir/cohort.toml" >/dev/null || die "cohort check-config refused $dir/cohort.toml"
    note "round $round: cohort run (group peers-cohort-$round-$$)"
    begin_phase
    "$COHORT_BIN" run --config "$dir/cohort.toml" >"$dir/worker.log" 2>&1 &
    SUT_PID=$!
    await "$dir/done.json" wait-cohort --metrics "http://127.0.0.1:$port/metrics" --group "peers-cohort-$round-$$" \
        --events "$EVENTS" --pid "$SUT_PID" \
        --log "$dir/worker.log" --what "cohort (round $round)" --deadline "$DEADLINE" --stall "$STALL"
    done="$(cat "$dir/done.json")"
    end_phase "$(json_field "$done" done)"
    stop_sut
    after="$(admin watermarks --topics segment-changes cohort-dlq)"
    changes=$(($(json_field "$after" segment-changes) - COHORT_SEEN[0]))
    dlq=$(($(json_field "$after" cohort-dlq) - COHORT_SEEN[1]))
    COHORT_SEEN=("$(json_field "$after" segment-changes)" "$(json_field "$after" cohort-dlq)")
    report "$round" cohort "segment_change_records=$changes dead_letters=$dlq"
}

run_quix() { # ROUND
    local round=$1 dir="$WORK/quix-$round" group="peers-quix-$round-$$" done after changes processed_at extra
    mkdir -p "$dir"
    note "round $round: Quix Streams app (group $group)"
    begin_phase
    "$PY" -W ignore "$QUIX_APP" --broker "$B" --group "$group" --state-dir "$dir/state" --output "$QUIX_OUTPUT" \
        --progress "$dir/progress" --expect "$EVENTS" --fetch-wait-ms "$FETCH_WAIT_MS" >"$dir/app.log" 2>&1 &
    SUT_PID=$!
    await "$dir/done.json" wait-quix --group "$group" --progress "$dir/progress" --pid "$SUT_PID" --log "$dir/app.log" \
        --what "the Quix Streams app (round $round)" --deadline "$DEADLINE" --stall "$STALL"
    done="$(cat "$dir/done.json")"
    end_phase "$(json_field "$done" done)"
    stop_sut
    after="$(admin watermarks --topics "$QUIX_OUTPUT")"
    changes=$(($(json_field "$after" "$QUIX_OUTPUT") - QUIX_SEEN))
    QUIX_SEEN="$(json_field "$after" "$QUIX_OUTPUT")"
    processed_at="$(json_field "$done" processed_at)"
    extra="segment_change_records=$changes"
    if [[ -n "$processed_at" ]]; then
        # Quix commits every 5 s (commit_interval): when it had processed
        # (not yet committed) the last record.
        extra="$extra processed_s=$(awk -v a="$P_T0" -v b="$processed_at" 'BEGIN { printf "%.2f", b - a }')"
    fi
    report "$round" quix "$extra"
}

for round in $(seq "$ROUNDS"); do
    if ((round % 2)); then
        run_cohort "$round"
        run_quix "$round"
    else
        run_quix "$round"
        run_cohort "$round"
    fi
done

median() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
for sys in cohort quix; do
    cpu="$(awk -v s=$sys '$1 == s { print $2 }' "$RESULTS" | median)"
    rate="$(awk -v s=$sys '$1 == s { print $3 }' "$RESULTS" | median)"
    tansu="$(awk -v s=$sys '$1 == s { print $4 }' "$RESULTS" | median)"
    printf -v "median_cpu_$sys" '%s' "$cpu"
    printf -v "median_rate_$sys" '%s' "$rate"
    say "median system=$sys rounds=$ROUNDS cpu_us_per_event=$(printf '%.2f' "$cpu") events_per_s=$(printf '%.0f' "$rate") tansu_cpu_us_per_event=$(printf '%.2f' "$tansu")"
done
say "ratio quix_cpu_per_event/cohort_cpu_per_event=$(awk -v q="$median_cpu_quix" -v c="$median_cpu_cohort" 'BEGIN { printf "%.2f", q / c }') cohort_events_per_s/quix_events_per_s=$(awk -v q="$median_rate_quix" -v c="$median_rate_cohort" 'BEGIN { printf "%.2f", c / q }')"
