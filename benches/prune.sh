#!/usr/bin/env bash
# Retention benchmark (issue 17): how fast a prune deletes points, and what
# it does to trainer callbacks that keep arriving meanwhile.
#
# Builds the release binary, starts `platform serve` on loopback with a
# fresh data directory (--artifact-grace 0, so jobs count as old as soon as
# they end: `older_than_days: 0` prunes them without editing the database),
# and fills it through the API: OLD_JOBS jobs whose stand-in trainer hands
# over its callback token, each given POINTS/OLD_JOBS metric points in
# batches of 1,000, then ended with a `completed` callback; and LIVE_JOBS
# running jobs. Then, twice, wrk drives concurrent callbacks with metrics
# at the live jobs (as benches/callback_load.sh does) while a probe sends
# PROBE_RATE callbacks/s of its own and times each one:
#   1. baseline: for BASELINE seconds, no prune;
#   2. prune: `POST /api/v1/prune` (METRICS=delete|downsample) deletes the
#      old jobs' points; wrk and the probe stop when its answer arrives.
# Prints the prune's throughput (points/s), the space it gave back, and the
# probe's p50/p99/max latency and wrk's callbacks/s in both phases, plus
# any callback that failed (there must be none).
#
# Usage: benches/prune.sh
# Knobs (environment): POINTS=1000000 OLD_JOBS=20 LIVE_JOBS=32 CONNECTIONS=16
#   THREADS=2 BASELINE=10 PROBE_RATE=200 METRICS=delete|downsample
#   BIN=path/to/platform (skips the build)
#   DATABASE_URL=postgresql://… runs against that (empty) PostgreSQL
#   database instead of SQLite.
# Needs: wrk (apt-get install -y wrk), python3, curl.
set -euo pipefail

POINTS=${POINTS:-1000000}
OLD_JOBS=${OLD_JOBS:-20}
LIVE_JOBS=${LIVE_JOBS:-32}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
BASELINE=${BASELINE:-10}
PROBE_RATE=${PROBE_RATE:-200}
METRICS=${METRICS:-delete}

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/stub_daemon.sh
source "$here/stub_daemon.sh"
root=$(dirname "$here")

need() { command -v "$1" >/dev/null || { echo "prune: $1 is required ($2)" >&2; exit 1; }; }
need wrk "apt-get install -y wrk"
need curl "apt-get install -y curl"
need python3 "apt-get install -y python3"

if [[ -z "${BIN:-}" ]]; then
  echo "== building the release binary"
  (cd "$root" && cargo build --release --quiet)
  BIN="${CARGO_TARGET_DIR:-$root/target}/release/platform"
fi

tmp=$(mktemp -d)
daemon_pid=""
cleanup() {
  if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

backend=sqlite
db_args=()
if [[ -n "${DATABASE_URL:-}" ]]; then
  backend=postgresql
  db_args=(--database-url "$DATABASE_URL")
fi

echo "== starting platform serve ($backend, data in $tmp/data)"
start_stub_daemon "$tmp" --artifact-grace 0 ${db_args[@]+"${db_args[@]}"}

# Creates N jobs and waits for their tokens; appends "<id> <token>" lines to FILE.
launch() { # n file
  local ids=()
  for _ in $(seq 1 "$1"); do
    ids+=("$(curl -sSf -X POST "$url/api/v1/training/jobs" -H 'content-type: application/json' \
      -d '{"user_id":"bench","model_name":"yolo11n","framework":"demo","dataset_s3_uri":"s3://bench/d/"}' |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')")
  done
  for id in "${ids[@]}"; do
    for _ in $(seq 1 600); do [[ -f "$tmp/tokens/$id" ]] && break; sleep 0.05; done
    [[ -f "$tmp/tokens/$id" ]] || { echo "job $id did not launch" >&2; exit 1; }
    printf '%s %s\n' "$id" "$(cat "$tmp/tokens/$id")" >>"$2"
  done
}

# The helpers: filling old jobs, and the latency probe.
cat >"$tmp/helper.py" <<'PY'
import http.client, json, sys, threading, time, urllib.parse

def conn(url):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=120)

def post(c, path, token, body):
    c.request("POST", path, json.dumps(body), {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    return r.status, data

def fill(url, jobs_file, per_job):
    c = conn(url)
    for line in open(jobs_file):
        job, token = line.split()
        base = f"/api/v1/training/jobs/{job}"
        for start in range(0, per_job, 1000):
            points = [{"epoch": i // 1000, "step": i, "loss": 1.0 / (1 + i), "mAP50": i % 97 / 100}
                      for i in range(start, min(per_job, start + 1000))]
            status, data = post(c, base + "/metrics", token, {"points": points})
            assert status == 200, (status, data)
        status, data = post(c, base + "/callback", token, {"status": "completed", "progress": 1.0})
        assert status == 200, (status, data)

def probe(url, job, token, rate, stop_file, out_file):
    c = conn(url)
    path = f"/api/v1/training/jobs/{job}/callback"
    samples, failures, step = [], 0, 0
    gap = 1.0 / rate
    next_at = time.monotonic()
    while True:
        try:
            open(stop_file).close()
            break
        except FileNotFoundError:
            pass
        step += 1
        t0 = time.monotonic()
        status, _ = post(c, path, token, {"status": "running", "progress": 0.5,
                                          "metrics": {"epoch": step, "loss": 1.0 / step}})
        samples.append(time.monotonic() - t0)
        failures += status != 200
        next_at += gap
        time.sleep(max(0.0, next_at - time.monotonic()))
    samples.sort()
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] * 1000 if samples else float("nan")
    with open(out_file, "w") as f:
        f.write(f"{len(samples)} {failures} {pick(0.5):.2f} {pick(0.99):.2f} {pick(1.0):.2f}\n")

if sys.argv[1] == "fill":
    fill(sys.argv[2], sys.argv[3], int(sys.argv[4]))
else:
    probe(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6], sys.argv[7])
PY

per_job=$((POINTS / OLD_JOBS))
echo "== filling $OLD_JOBS old jobs with $per_job points each ($((per_job * OLD_JOBS)) in all)"
launch "$OLD_JOBS" "$tmp/old.txt"
started=$(date +%s.%N)
python3 "$tmp/helper.py" fill "$url" "$tmp/old.txt" "$per_job"
echo "   $(python3 -c "print(f'{$((per_job * OLD_JOBS)) / ($(date +%s.%N) - $started):.0f}')") points/s ingested"
echo "== launching $LIVE_JOBS live jobs (and one for the probe)"
launch "$LIVE_JOBS" "$tmp/live.txt"
launch 1 "$tmp/probe.txt"
read -r probe_job probe_token <"$tmp/probe.txt"

# One phase: wrk and the probe run until `stop` (a command) returns.
phase() { # name stop-command...
  local name=$1; shift
  rm -f "$tmp/stop"
  python3 "$tmp/helper.py" probe "$url" "$probe_job" "$probe_token" "$PROBE_RATE" "$tmp/stop" "$tmp/$name.probe" &
  local probe_pid=$!
  wrk --latency -t "$THREADS" -c "$CONNECTIONS" -d 3600s -s "$here/callback.lua" "$url" -- "$tmp/live.txt" "$THREADS" \
    >"$tmp/$name.wrk" 2>&1 &
  local wrk_pid=$!
  sleep 0.3
  "$@"
  touch "$tmp/stop"
  kill -INT "$wrk_pid" 2>/dev/null || true
  wait "$wrk_pid" 2>/dev/null || true
  wait "$probe_pid"
}

echo "== baseline: callbacks for ${BASELINE}s, no prune"
phase baseline sleep "$BASELINE"
echo "== prune: callbacks while POST /api/v1/prune ($METRICS) runs"
prune() {
  curl -sSf -X POST "$url/api/v1/prune" -H 'content-type: application/json' \
    -d "{\"older_than_days\": 0, \"metrics\": \"$METRICS\"}" >"$tmp/report.json"
}
phase prune prune

db_size=""
if [[ $backend == sqlite ]]; then
  db_size=$(cat "$tmp/data/platform.db" "$tmp/data/platform.db-wal" 2>/dev/null | wc -c)
fi

echo
echo "== summary ($backend, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
python3 - "$tmp/report.json" "$db_size" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
points = r["points_deleted"] + r["system_points_deleted"]
print(f"prune ({'dry run' if r['dry_run'] else 'real'}): {points} points of {r['jobs']} jobs in {r['seconds']:.2f} s = {points / max(r['seconds'], 1e-9):,.0f} points/s")
rb = r["reclaimed_bytes"]
print(f"space given back: {'n/a' if rb is None else f'{rb / 2**20:.1f} MiB'}" + (f"; SQLite file and log now {int(sys.argv[2]) / 2**20:.1f} MiB" if sys.argv[2] else ""))
if r["errors"] or r["interrupted"]:
    print(f"PRUNE PROBLEMS: interrupted={r['interrupted']} errors={r['errors']}")
PY
printf '%-9s %10s %9s %8s %10s %10s %10s %7s\n' phase "wrk cb/s" "wrk p99" "probe n" "probe p50" "probe p99" "probe max" failed
for name in baseline prune; do
  rps=$(awk '/Requests\/sec:/ { print $2 }' "$tmp/$name.wrk")
  p99=$(awk '/^ +99%/ { print $2 }' "$tmp/$name.wrk")
  bad=$(awk '/Non-2xx or 3xx responses:/ { print $5 }' "$tmp/$name.wrk")
  read -r n failed p50ms p99ms maxms <"$tmp/$name.probe"
  printf '%-9s %10s %9s %8s %8sms %8sms %8sms %7s\n' "$name" "${rps:-?}" "${p99:-?}" "$n" "$p50ms" "$p99ms" "$maxms" "$((failed + ${bad:-0}))"
done
echo "(wrk: $CONNECTIONS connections on $LIVE_JOBS live jobs; probe: $PROBE_RATE callbacks/s of its own, each timed)"
grep -h 'prune finished' "$tmp/serve.log" | tail -1 || true
