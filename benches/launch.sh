#!/usr/bin/env bash
# Launch overhead and daemon memory with many concurrent demo jobs.
#
#   benches/launch.sh [JOBS]        (default 20; BIN=path skips the build)
#
# Builds the release binary, starts `platform serve` on loopback with a temp
# data dir and --max-concurrent-jobs JOBS, creates JOBS demo jobs at once,
# and reports:
#   - launch overhead per job: started_at - created_at as recorded by the
#     daemon (job accepted → trainer process spawned under its supervisor),
#     min/p50/max over the jobs, with the scheduler launching them one by one;
#   - a single job's overhead on an idle daemon (the figure a user feels);
#   - the daemon's RSS (VmRSS) while all jobs run, and its peak (VmHWM).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${1:-20}"
target="${CARGO_TARGET_DIR:-target}"
# BIN=path/to/platform measures a binary already built (e.g. the static one).
if [[ -z "${BIN:-}" ]]; then
  cargo build --release --quiet
fi
bin="${BIN:-$target/release/platform}"
data="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
"$bin" serve --bind "127.0.0.1:$port" --data-dir "$data" --max-concurrent-jobs "$jobs" \
  --kill-grace 1 2>"$data/serve.log" &
pid=$!
trap 'pkill -f "supervise --dir $data" 2>/dev/null; kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
export PLATFORM_SERVER="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -fsS "$PLATFORM_SERVER/health" >/dev/null 2>&1 && break; sleep 0.05; done
mkdir -p "$data/ds" && echo x > "$data/ds/a.txt"
"$bin" --quiet dataset upload "$data/ds" --name bench >/dev/null
dataset=bench

overhead() { # prints started_at - created_at in ms for job $1
  python3 - "$1" <<'PY'
import json, sys, urllib.request, os, datetime as dt
j = json.load(urllib.request.urlopen(f"{os.environ['PLATFORM_SERVER']}/api/v1/training/jobs/{sys.argv[1]}"))
p = lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
print(round((p(j["started_at"]) - p(j["created_at"])).total_seconds() * 1000, 2))
PY
}
wait_running() { for _ in $(seq 1 400); do
  s=$(curl -fsS "$PLATFORM_SERVER/api/v1/training/jobs/$1" | python3 -c 'import json,sys;print(json.load(sys.stdin)["status"])')
  [ "$s" = running ] || [ "$s" = completed ] && return 0; sleep 0.05; done; echo "job $1 did not start" >&2; exit 1; }

# One job on an idle daemon.
one=$("$bin" --quiet job create -f demo -m yolo11n -d "$dataset" --set epochs=2 --set epoch_seconds=0.2)
wait_running "$one"
echo "single job: launch overhead $(overhead "$one") ms"
sleep 1.5

ids=()
for _ in $(seq 1 "$jobs"); do
  ids+=("$("$bin" --quiet job create -f demo -m yolo11n -d "$dataset" --set epochs=30 --set epoch_seconds=1)")
done
for id in "${ids[@]}"; do wait_running "$id"; done
sleep 3
for id in "${ids[@]}"; do overhead "$id"; done | sort -n | awk '{a[NR]=$1} END {printf "%d concurrent jobs: launch overhead min %.1f ms, p50 %.1f ms, max %.1f ms\n", NR, a[1], a[int((NR+1)/2)], a[NR]}'
running=$(curl -fsS "$PLATFORM_SERVER/api/v1/training/jobs?status=running&limit=1000" | python3 -c 'import json,sys;print(len(json.load(sys.stdin)))')
echo "running jobs: $running"
grep -E 'VmRSS|VmHWM' "/proc/$pid/status"
"$bin" --quiet job cancel "${ids[@]}"
