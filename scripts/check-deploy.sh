#!/usr/bin/env bash
# Checks the deployment files under deploy/ without Docker or a cluster:
#
#   - Prometheus: `promtool check rules` on the alert rules, `promtool test
#     rules` on their unit tests, `promtool check config` on prometheus.yml;
#   - every cohort_* metric named in the rules, their tests and the dashboard
#     is defined in crates/cohort/src/metrics.rs (no invented metrics);
#   - the Grafana dashboard is valid JSON and each of its queries parses as
#     PromQL (through promtool);
#   - deploy/cohort.toml parses and uses only keys config/mod.rs knows;
#   - with PyYAML: the Kubernetes manifests, the compose file and Grafana's
#     provisioning files parse, and are consistent (the ConfigMap carries
#     deploy/cohort.toml verbatim, selectors match, probes use declared ports,
#     mounts name declared volumes, the grace period outlasts
#     processing.shutdown_timeout, compose creates exactly the configured
#     topics); without PyYAML this part is skipped with a note;
#   - with kubectl: `kubectl kustomize deploy/kubernetes` builds (offline);
#   - with a cohort binary newer than metrics.rs: the README's metrics table
#     and the names docs/deploy.md uses against a live /metrics (`cohort
#     demo`); `make test` builds the binary first, so there it always runs;
#   - with a cohort binary newer than config/mod.rs (target/release/cohort, or
#     COHORT_BIN): `cohort check-config --config deploy/cohort.toml` (with
#     the repository's rules and schemas in place of the image's paths), and
#     the TOML it prints passes `cohort check-config` in turn.
#
# Exits non-zero if any check fails. Run from anywhere:
#   scripts/check-deploy.sh
# PROMTOOL names promtool (default: promtool on PATH, installed by
# scripts/setup.sh). With COHORT_SETUP_PROMTOOL=0 a missing promtool skips
# the Prometheus checks instead of failing.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2

PROMTOOL="${PROMTOOL:-promtool}"
PYTHON="${PYTHON:-python3}"
failures=0

log() { printf '[check-deploy] %s\n' "$*" >&2; }

# run DESCRIPTION COMMAND...: runs the command, prints its output only on failure.
run() {
    local what=$1 out
    shift
    if out=$("$@" 2>&1); then
        log "ok: $what"
    else
        log "FAIL: $what"
        printf '%s\n' "$out" | sed 's/^/    /' >&2
        failures=$((failures + 1))
    fi
}

# --- Prometheus ---------------------------------------------------------------
have_promtool=0
if command -v "$PROMTOOL" > /dev/null 2>&1; then
    have_promtool=1
    run "promtool check rules deploy/prometheus/alerts.yml" \
        "$PROMTOOL" check rules deploy/prometheus/alerts.yml
    run "promtool test rules deploy/prometheus/alerts_test.yml" \
        "$PROMTOOL" test rules deploy/prometheus/alerts_test.yml
    run "promtool check config deploy/prometheus/prometheus.yml" \
        "$PROMTOOL" check config deploy/prometheus/prometheus.yml
elif [[ "${COHORT_SETUP_PROMTOOL:-1}" == 0 ]]; then
    log "note: promtool not found and COHORT_SETUP_PROMTOOL=0: skipping the Prometheus checks"
else
    log "FAIL: promtool not found (scripts/setup.sh installs it with the Debian package 'prometheus'; or set PROMTOOL)"
    failures=$((failures + 1))
fi

if ! command -v "$PYTHON" > /dev/null 2>&1; then
    log "FAIL: $PYTHON not found"
    exit 1
fi

# --- Dashboard JSON, metric names, config keys, manifests (python) -----------
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

run "python3 json.load deploy/grafana/cohort-dashboard.json" \
    "$PYTHON" -c 'import json, sys; json.load(open(sys.argv[1]))' deploy/grafana/cohort-dashboard.json

# The Python checks print "ok: ..." / "FAIL: ..." / "note: ..." lines and exit
# with the number of failures. The dashboard's queries are written to
# $tmp/dashboard-rules.json (JSON is YAML) for promtool to parse.
"$PYTHON" - "$tmp" <<'PY'
import json
import os
import re
import sys

tmp = sys.argv[1]
failures = 0


def ok(msg):
    print(f"[check-deploy] ok: {msg}", file=sys.stderr)


def fail(msg):
    global failures
    failures += 1
    print(f"[check-deploy] FAIL: {msg}", file=sys.stderr)


def note(msg):
    print(f"[check-deploy] note: {msg}", file=sys.stderr)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# Metrics defined in metrics.rs: the quoted names passed to the constructors.
metrics_src = read("crates/cohort/src/metrics.rs")
defined = set(re.findall(r'"(cohort_[a-z0-9_]+)"', metrics_src))
histograms = {
    name for name in defined
    if re.search(r'histogram\(\s*"' + re.escape(name) + '"', metrics_src)
}
if not defined:
    fail("found no metric names in crates/cohort/src/metrics.rs")


def base_name(name):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in histograms:
            return name[: -len(suffix)]
    return name


def used_metrics(text):
    # cohort_ followed by a name, not preceded by a name character or ':'
    # (recording rules are named level:cohort_metric:op and are not metrics).
    return set(re.findall(r"(?<![A-Za-z0-9_:])(cohort_[a-z0-9_]+)", text))


# --- dashboard ---
dash_path = "deploy/grafana/cohort-dashboard.json"
try:
    dash = json.loads(read(dash_path))
except Exception as e:  # reported by the json.load step already
    dash = None
    fail(f"{dash_path}: {e}")

if dash is not None:
    exprs = []
    panels = list(dash.get("panels", []))
    while panels:
        p = panels.pop()
        panels.extend(p.get("panels", []))
        for t in p.get("targets", []):
            if t.get("expr"):
                exprs.append((p.get("title", "?"), t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query" and isinstance(q, str):
            m = re.match(r"label_values\((.*),\s*\w+\)$", q)
            if m:
                exprs.append((f"variable {v.get('name')}", m.group(1)))
    if not exprs:
        fail(f"{dash_path}: no queries found")
    # Grafana's variables, replaced by values PromQL accepts.
    subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$job": ".*", "$instance": ".*"}
    rules = []
    for i, (title, e) in enumerate(exprs):
        for k, v in subst.items():
            e = e.replace(k, v)
        if "$" in e:
            fail(f"{dash_path}: panel {title!r} uses an unknown variable: {e}")
        rules.append({"record": f"dashboard:query:{i}", "expr": e})
    with open(os.path.join(tmp, "dashboard-rules.json"), "w") as f:
        json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
    ids = [p.get("id") for p in dash.get("panels", [])]
    if len(ids) != len(set(ids)):
        fail(f"{dash_path}: duplicate panel ids")
    if dash.get("uid") != "cohort-overview":
        fail(f"{dash_path}: uid changed (links and provisioning rely on cohort-overview)")

# --- metric names ---
for path in ("deploy/prometheus/alerts.yml", "deploy/prometheus/alerts_test.yml", dash_path):
    unknown = sorted(n for n in used_metrics(read(path)) if base_name(n) not in defined)
    if unknown:
        fail(f"{path} uses metrics not defined in crates/cohort/src/metrics.rs: {', '.join(unknown)}")
    else:
        ok(f"{path}: every cohort_* metric is defined in metrics.rs")

# --- cohort.toml ---
toml_path = "deploy/cohort.toml"
config = None
try:
    import tomllib
except ImportError:
    tomllib = None
    note("python3 < 3.11 has no tomllib: skipping the deploy/cohort.toml checks")
if tomllib is not None:
    try:
        config = tomllib.loads(read(toml_path))
    except Exception as e:
        fail(f"{toml_path}: {e}")
if config is not None:
    config_src = read("crates/cohort/src/config/mod.rs")
    struct_fields = {}
    for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", config_src, re.S):
        struct_fields[m.group(1)] = set(re.findall(r"pub (\w+):", m.group(2)))
    top = struct_fields.get("Config", set())
    # section -> struct, from `pub section: Struct,` in Config.
    section_struct = dict(re.findall(r"pub (\w+): (\w+),", re.search(r"pub struct Config \{(.*?)\n\}", config_src, re.S).group(1)))
    free_maps = {("kafka", "properties"), ("kafka", "consumer_properties"), ("kafka", "producer_properties"), ("format", "schema_ids")}
    bad = []
    for section, body in config.items():
        if section not in top:
            bad.append(section)
            continue
        fields = struct_fields.get(section_struct.get(section, ""), set())
        for key in body:
            if key not in fields:
                bad.append(f"{section}.{key}")
    missing = sorted(top - set(config))
    if bad:
        fail(f"{toml_path}: keys config/mod.rs does not know: {', '.join(bad)}")
    elif missing:
        fail(f"{toml_path}: sections missing from the example: {', '.join(missing)}")
    else:
        ok(f"{toml_path}: parses, every section present, every key known to config/mod.rs")
    if config.get("http", {}).get("listen", "").startswith("127."):
        fail(f"{toml_path}: http.listen must not be loopback in a container")

# --- YAML files (PyYAML) ---
try:
    import yaml
except ImportError:
    yaml = None
    note("PyYAML not installed (apt-get install python3-yaml): skipping the YAML checks of deploy/kubernetes, docker-compose.yml and Grafana provisioning")

def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def duration_seconds(s):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    m = re.fullmatch(r"(\d+)\s*(ms|s|m|h)", str(s).strip())
    return int(m.group(1)) * units[m.group(2)] if m else None


if yaml is not None:
    yaml_files = ["deploy/docker-compose.yml"]
    for d in ("deploy/kubernetes", "deploy/grafana/provisioning"):
        for root, _, files in os.walk(d):
            yaml_files += [os.path.join(root, f) for f in sorted(files) if f.endswith((".yml", ".yaml"))]
    docs = {}
    for path in sorted(yaml_files):
        try:
            docs[path] = load_all(path)
        except Exception as e:
            fail(f"{path}: {e}")
    if len(docs) == len(yaml_files):
        ok(f"{len(yaml_files)} YAML files parse (kubernetes, compose, grafana provisioning)")

    # Kubernetes consistency.
    k8s = {}
    for path, ds in docs.items():
        if path.startswith("deploy/kubernetes/"):
            for d in ds:
                if "kind" in d and d.get("kind") != "Kustomization":
                    if not d.get("apiVersion") or not d.get("metadata", {}).get("name"):
                        fail(f"{path}: {d.get('kind')} without apiVersion or metadata.name")
                    k8s[(d["kind"], d.get("metadata", {}).get("name"))] = (path, d)
    kust = docs.get("deploy/kubernetes/kustomization.yaml", [{}])[0] or {}
    listed = set(kust.get("resources", []))
    present = {os.path.basename(p) for p in docs if p.startswith("deploy/kubernetes/") and not p.endswith("kustomization.yaml")}
    if listed != present:
        fail(f"kustomization.yaml resources {sorted(listed)} != manifests present {sorted(present)}")
    sts = k8s.get(("StatefulSet", "cohort"), (None, None))[1]
    if sts is None:
        fail("deploy/kubernetes: no StatefulSet named cohort")
    else:
        spec = sts["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"]["labels"]
        sel = spec["selector"]["matchLabels"]
        problems = []
        if any(labels.get(k) != v for k, v in sel.items()):
            problems.append("selector does not match the pod template's labels")
        svc = k8s.get(("Service", spec.get("serviceName")), (None, None))[1]
        if svc is None or svc["spec"].get("clusterIP") != "None":
            problems.append(f"serviceName {spec.get('serviceName')!r} is not a headless Service here")
        for (kind, name), (_, d) in k8s.items():
            s = d.get("spec", {})
            ssel = s.get("selector", {})
            ssel = ssel.get("matchLabels", ssel) if kind == "PodDisruptionBudget" else ssel
            if kind in ("Service", "PodDisruptionBudget") and any(labels.get(k) != v for k, v in ssel.items()):
                problems.append(f"{kind} {name} selects no cohort pod")
        c = pod["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            pr = c.get(probe, {}).get("httpGet", {})
            if pr.get("port") not in ports and pr.get("port") not in ports.values():
                problems.append(f"{probe} uses an undeclared port {pr.get('port')!r}")
        if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            problems.append("readinessProbe is not /readyz")
        if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
            problems.append("livenessProbe is not /healthz")
        vols = {v["name"] for v in pod.get("volumes", [])} | {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        for m in c.get("volumeMounts", []):
            if m["name"] not in vols:
                problems.append(f"volumeMount {m['name']} has no volume")
        envs = {e["name"] for e in c.get("env", [])}
        if "COHORT__KAFKA__BOOTSTRAP_SERVERS" not in envs:
            problems.append("no COHORT__KAFKA__BOOTSTRAP_SERVERS in the container's env")
        if not c.get("resources", {}).get("requests"):
            problems.append("no resource requests")
        if config is not None:
            grace = pod.get("terminationGracePeriodSeconds", 30)
            shutdown = duration_seconds(config.get("processing", {}).get("shutdown_timeout", "25s"))
            if shutdown is None or grace < shutdown:
                problems.append(f"terminationGracePeriodSeconds {grace} < processing.shutdown_timeout {shutdown}")
            store = config.get("store", {}).get("path", "")
            data_mounts = [m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}]
            if not any(store == mp or store.startswith(mp.rstrip("/") + "/") for mp in data_mounts):
                problems.append(f"store.path {store} is not on the volumeClaimTemplate's mount {data_mounts}")
            rules_path = config.get("rules", {}).get("path", "")
            if not any(rules_path.startswith(m["mountPath"].rstrip("/") + "/") for m in c.get("volumeMounts", []) if m["name"] == "rules"):
                problems.append(f"rules.path {rules_path} is not under the rules mount")
            port = config.get("http", {}).get("listen", ":").rsplit(":", 1)[1]
            if str(ports.get("http")) != port:
                problems.append(f"container port {ports.get('http')} != http.listen port {port}")
        if problems:
            for p in problems:
                fail(f"deploy/kubernetes: {p}")
        else:
            ok("deploy/kubernetes: StatefulSet, Services, PDB and kustomization are consistent")
    cm = k8s.get(("ConfigMap", "cohort-config"), (None, None))[1]
    if cm is None:
        fail("deploy/kubernetes: no ConfigMap named cohort-config")
    elif cm.get("data", {}).get("cohort.toml") != read(toml_path):
        fail("deploy/kubernetes/configmap.yaml: data.cohort.toml differs from deploy/cohort.toml (paste the file in, indented 4 spaces)")
    else:
        ok("deploy/kubernetes/configmap.yaml carries deploy/cohort.toml verbatim")

    # Compose: the topics created are the configured ones, files exist.
    compose = (docs.get("deploy/docker-compose.yml") or [None])[0]
    if compose:
        services = compose.get("services", {})
        script = " ".join(services.get("topics", {}).get("command", []) or [])
        # `create NAME ...` lines, plus the words of `for t in ...; do create "$$t"`.
        created = set(re.findall(r"^\s*create\s+([a-z][a-z0-9._-]*)", script, re.M))
        loop = re.search(r"for t in (.*?); do", script, re.S)
        if loop:
            created |= set(loop.group(1).replace("\\", " ").split())
        if config is not None:
            want = set(config.get("topics", {}).values())
            if created != want:
                fail(f"docker-compose.yml creates topics {sorted(created)}, cohort.toml names {sorted(want)}")
            else:
                ok("docker-compose.yml creates exactly the topics cohort.toml names")
        missing = []
        for name, svc in services.items():
            for v in svc.get("volumes", []):
                src = v.get("source") if isinstance(v, dict) else (v.split(":")[0] if v.startswith(".") else None)
                if src and src.startswith(".") and not os.path.exists(os.path.join("deploy", src)):
                    missing.append(f"{name}: {src}")
        for m in missing:
            if m.endswith("rules.yaml"):
                note(f"docker-compose.yml mounts {m}, which does not exist yet")
            else:
                fail(f"docker-compose.yml mounts a missing file: {m}")
        build = services.get("cohort", {}).get("build", {})
        if not os.path.exists(os.path.join("deploy", build.get("context", "."), build.get("dockerfile", "Dockerfile"))):
            fail("docker-compose.yml: cohort's build context/dockerfile does not resolve to deploy/Dockerfile")

sys.exit(min(failures, 100))
PY
py_failures=$?
failures=$((failures + py_failures))

if [[ $have_promtool == 1 && -s "$tmp/dashboard-rules.json" ]]; then
    run "every dashboard query parses as PromQL (promtool)" \
        "$PROMTOOL" check rules "$tmp/dashboard-rules.json"
fi

# --- kustomize (optional) -------------------------------------------------------
if command -v kubectl > /dev/null 2>&1; then
    run "kubectl kustomize deploy/kubernetes" kubectl kustomize deploy/kubernetes
else
    log "note: kubectl not found: skipping 'kubectl kustomize deploy/kubernetes'"
fi

# --- cohort check-config (optional) -----------------------------------------------
bin="${COHORT_BIN:-${CARGO_TARGET_DIR:-target}/release/cohort}"
if [[ -x "$bin" && "$bin" -nt crates/cohort/src/config/mod.rs ]]; then
    # A clean environment, so COHORT__* variables of the caller do not count;
    # the rules and schemas paths of the image (/etc/cohort, /usr/share/cohort)
    # point at the repository's files instead.
    here=(env -i PATH="$PATH" COHORT__RULES__PATH=deploy/rules.yaml COHORT__FORMAT__SCHEMAS_DIR=schemas)
    run "cohort check-config --config deploy/cohort.toml" \
        "${here[@]}" "$bin" check-config --config deploy/cohort.toml
    if "${here[@]}" "$bin" check-config --config deploy/cohort.toml > "$tmp/effective.toml" 2> /dev/null; then
        run "cohort check-config accepts the TOML it prints" \
            env -i PATH="$PATH" "$bin" check-config --config "$tmp/effective.toml"
    fi
else
    log "note: no cohort binary newer than config/mod.rs at $bin: skipping 'cohort check-config' (set COHORT_BIN)"
fi

# --- docs against a live /metrics (optional) ---------------------------------------
# `cohort demo` (an embedded broker, generated traffic) serves the worker's
# real /metrics: every metric family it exports must be in the README's
# metrics table and nothing else there, and every cohort_* name that
# docs/deploy.md mentions must be exported, except those it lists under
# "Not exported at all".
if [[ -x "$bin" && "$bin" -nt crates/cohort/src/metrics.rs ]]; then
    port="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "$bin" demo --duration 120s --customers 200 --plain --listen "127.0.0.1:$port" > "$tmp/demo.log" 2>&1 &
    demo_pid=$!
    run "docs/deploy.md and the README's metrics table match a live /metrics" \
        "$PYTHON" - "$port" "$tmp/demo.log" <<'PY'
import re, sys, time, urllib.request
port, demo_log = sys.argv[1], sys.argv[2]
text, deadline = None, time.time() + 240
# Wait on progress: until the worker has read records and reported its lag
# (every family then has its series), or the deadline, with the demo's log
# on failure.
while time.time() < deadline:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        # Lag appears once the watchdog has seen the consumer's statistics.
        if re.search(r'^cohort_input_records_total\{[^}]*\} [1-9]', body, re.M) and \
                re.search(r'^cohort_consumer_lag_records\{', body, re.M):
            text = body
            break
    except OSError:
        pass
    time.sleep(0.5)
if text is None:
    print("the demo's /metrics never showed input records; its log:\n" + open(demo_log).read()[-3000:])
    sys.exit(1)
live = set(re.findall(r'^# TYPE (cohort_\w+) ', text, re.M))
fail = 0
readme = open("README.md").read()
table = readme[readme.index("### Metrics"):readme.index("## Guarantees")]
in_table = set(re.findall(r'`(cohort_\w+)`', table))
for name in sorted(live - in_table):
    print(f"exported but not in the README's metrics table: {name}"); fail += 1
for name in sorted(in_table - live):
    print(f"in the README's metrics table but not exported: {name}"); fail += 1
deploy = open("docs/deploy.md").read()
absent_part = deploy[deploy.index("Not exported at all"):] if "Not exported at all" in deploy else ""
absent = set(re.findall(r'`(cohort_\w+)`', absent_part.split("\n## ")[0]))
mentioned = set(re.findall(r'(?<![:\w])(cohort_[a-z0-9_]*[a-z0-9])(?![:\w])', deploy))
for name in sorted(mentioned):
    family = re.sub(r'_(bucket|sum|count)$', '', name)
    if family not in live and name not in live and name not in absent:
        print(f"docs/deploy.md names {name}, which the worker does not export"); fail += 1
for name in sorted(absent & live):
    print(f"docs/deploy.md says {name} is not exported, but it is"); fail += 1
print(f"{len(live)} families exported; {len(mentioned)} names in docs/deploy.md checked")
sys.exit(min(fail, 100))
PY
    kill "$demo_pid" 2> /dev/null
    wait "$demo_pid" 2> /dev/null
else
    log "note: no cohort binary newer than metrics.rs at $bin: skipping the live /metrics check (set COHORT_BIN)"
fi

if ((failures)); then
    log "$failures check(s) failed"
    exit 1
fi
log "all deploy checks passed"
