#!/usr/bin/env bash
# Load benchmark of the callback hot path, then of job list/get.
#
# Builds the release binary, starts `platform serve` on loopback with a
# fresh data directory, creates JOBS jobs whose trainer is a stand-in that
# only hands over its callback token (the daemon mints it at launch and
# keeps only a hash) and then sleeps, and drives
# concurrent callbacks with metrics (status running, progress, a metrics
# map, an increasing sequence) with wrk. Prints requests/s, p50/p99
# latency, how many callbacks were applied and stored, and the daemon's
# peak RSS.
#
# BACKEND=postgres runs the same load against a throwaway PostgreSQL
# cluster on loopback (initdb + pg_ctl on a temp dir, as the `postgres`
# user when run as root; fsync and synchronous_commit on, as in
# production) and also prints PostgreSQL's CPU per callback (postmaster
# and every backend, exited ones included).
#
# With HANGING_WEBHOOK=1, a webhook endpoint (every event) points at a
# receiver on loopback that accepts connections and never answers
# (--webhook-allow-private, WEBHOOK_TIMEOUT=60 s): the jobs' `running`
# deliveries hang in flight for the whole run, and the figures show
# whether that slows the callback path (issue 16: it must not). Run it
# interleaved with and without to compare.
#
# Usage: benches/callback_load.sh
#   ROUNDS=3 benches/callback_load.sh compare   # SQLite and PostgreSQL interleaved
# Knobs (environment): JOBS=100 CONNECTIONS=32 THREADS=2 DURATION=20s
#   READ_DURATION=10s BACKEND=sqlite|postgres BIN=path/to/platform (skips the build)
#   AUTH=none|api|user: user routes open (default), behind PLATFORM_API_TOKEN,
#   or read with a user token (`plt_…`, created through /api/v1/users) —
#   the token lookup on the job-list and job-get paths.
#   HANGING_WEBHOOK=1 (see above)
# Needs: wrk (apt-get install -y wrk), python3 or sqlite3, curl; for
#   PostgreSQL the server packages (apt-get install -y postgresql).
set -euo pipefail

JOBS=${JOBS:-100}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
DURATION=${DURATION:-20s}
READ_DURATION=${READ_DURATION:-10s}
BACKEND=${BACKEND:-sqlite}
AUTH=${AUTH:-none}
case "$AUTH" in none|api|user) ;; *) echo "callback_load: AUTH is none, api or user" >&2; exit 2 ;; esac
api_token="bench-operator-token-$RANDOM$RANDOM-0123456789"
HANGING_WEBHOOK=${HANGING_WEBHOOK:-0}

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/stub_daemon.sh
source "$here/stub_daemon.sh"
root=$(dirname "$here")

need() { command -v "$1" >/dev/null || { echo "callback_load: $1 is required ($2)" >&2; exit 1; }; }
need wrk "apt-get install -y wrk"
need curl "apt-get install -y curl"

if [[ -z "${BIN:-}" ]]; then
  echo "== building the release binary"
  (cd "$root" && cargo build --release --quiet)
  BIN="${CARGO_TARGET_DIR:-$root/target}/release/platform"
fi

if [[ "${1:-}" == compare ]]; then
  # Interleaved, so drifting machine load hits both backends alike.
  for round in $(seq 1 "${ROUNDS:-3}"); do
    for backend in sqlite postgres; do
      echo "#### round $round: $backend"
      BIN="$BIN" BACKEND=$backend "$0" | tee "/tmp/callback_load.$backend.$round.txt" |
        grep -E '^(callbacks |daemon CPU|PostgreSQL CPU|mean writes)' || true
    done
  done
  exit 0
fi

tmp=$(mktemp -d)
chmod 755 "$tmp"
daemon_pid=""
pgbin=""
pg_as() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
receiver_pid=""
cleanup() {
  if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  if [[ -n "$pgbin" ]]; then
    pg_as "$pgbin/pg_ctl" -D "$tmp/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  if [[ -n "$receiver_pid" ]]; then
    kill "$receiver_pid" 2>/dev/null || true
    wait "$receiver_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

db_args=()
if [[ $BACKEND == postgres ]]; then
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [[ -x "$pgbin/initdb" ]] || { echo "callback_load: PostgreSQL is required (apt-get install -y postgresql)" >&2; exit 1; }
  pgport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$tmp/pg"
  [[ $(id -u) == 0 ]] && chown postgres: "$tmp/pg"
  echo "== starting PostgreSQL on 127.0.0.1:$pgport"
  pg_as "$pgbin/initdb" -D "$tmp/pg/data" -U platform --auth=trust -E UTF8 --locale C.UTF-8 >/dev/null
  pg_as "$pgbin/pg_ctl" -D "$tmp/pg/data" -l "$tmp/pg/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $pgport -k $tmp/pg -c max_connections=100" start >/dev/null
  db_args=(--database-url "postgresql://platform@127.0.0.1:$pgport/postgres?sslmode=disable")
fi

# CPU ticks of the PostgreSQL cluster: the postmaster with its reaped
# children, and every live backend.
pg_ticks() {
  local pm
  pm=$(head -1 "$tmp/pg/data/postmaster.pid")
  awk '{ t = $14 + $15 + $16 + $17 } END { print t }' "/proc/$pm/stat" >"$tmp/pg/ticks"
  for c in $(pgrep -P "$pm"); do
    awk '{ print $14 + $15 }' "/proc/$c/stat" 2>/dev/null || true
  done >>"$tmp/pg/ticks"
  awk '{ s += $1 } END { print s }' "$tmp/pg/ticks"
}

# Query the daemon's database read-only.
sql() {
  if [[ $BACKEND == postgres ]]; then
    psql -h "$tmp/pg" -p "$pgport" -U platform -d postgres -XAtq -F ' ' -c "$1"
  elif command -v python3 >/dev/null; then
    python3 - "$tmp/data/platform.db" "$1" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
for row in db.execute(sys.argv[2]):
    print(" ".join(str(c) for c in row))
PY
  else
    need sqlite3 "apt-get install -y sqlite3"
    sqlite3 -readonly -separator ' ' "$tmp/data/platform.db" "$1"
  fi
}

hook_flags=()
if [[ "$HANGING_WEBHOOK" == 1 ]]; then
  need python3 "apt-get install -y python3"
  echo "== starting a webhook receiver that accepts and never answers"
  python3 -u - >"$tmp/receiver.port" 2>"$tmp/receiver.log" <<'PY' &
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1024)
print(s.getsockname()[1], flush=True)
held = []
while True:
    conn, _ = s.accept()
    held.append(conn)
    print(len(held), file=__import__("sys").stderr, flush=True)
PY
  receiver_pid=$!
  for _ in $(seq 1 100); do [[ -s "$tmp/receiver.port" ]] && break; sleep 0.05; done
  receiver_port=$(head -1 "$tmp/receiver.port")
  [[ -n "$receiver_port" ]] || { echo "the receiver did not start" >&2; exit 1; }
  hook_flags=(--webhook-allow-private --webhook-timeout 60)
fi

echo "== starting platform serve (data in $tmp/data)"
start_stub_daemon "$tmp" \
  $([[ $AUTH == none ]] || echo --api-token "$api_token") \
  ${db_args[@]+"${db_args[@]}"} ${hook_flags[@]+"${hook_flags[@]}"}

# The token user routes are called with (none, the operator's, a user's).
read_token=""
case "$AUTH" in
  api) read_token=$api_token ;;
  user)
    read_token=$(curl -sSf -X POST "$url/api/v1/users" -H "authorization: Bearer $api_token" \
      -H 'content-type: application/json' -d '{"name":"bench","role":"admin"}' |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["token"]["token"])')
    ;;
esac
auth_header=()
[[ -n "$read_token" ]] && auth_header=(-H "authorization: Bearer $read_token")

if [[ "$HANGING_WEBHOOK" == 1 ]]; then
  curl -sSf -o /dev/null "${auth_header[@]}" -X POST "$url/api/v1/webhooks" -H 'content-type: application/json' \
    -d "{\"url\":\"http://127.0.0.1:$receiver_port/hook\"}"
  echo "   webhook -> http://127.0.0.1:$receiver_port/hook (hangs)"
fi

echo "== creating $JOBS jobs (auth: $AUTH)"
for i in $(seq 1 "$JOBS"); do
  curl -sSf -o /dev/null "${auth_header[@]}" -X POST "$url/api/v1/training/jobs" -H 'content-type: application/json' \
    -d "{\"user_id\":\"bench$((i % 7))\",\"model_name\":\"yolo11n\",\"framework\":\"demo\",\"dataset_s3_uri\":\"s3://bench/datasets/coco128/\",\"config\":{\"epochs\":100,\"batch\":16}}"
done
for _ in $(seq 1 600); do
  [[ $(find "$tmp/tokens" -type f ! -name '*.tmp' | wc -l) -ge $JOBS ]] && break
  sleep 0.05
done
for f in "$tmp/tokens"/*; do
  [[ $f == *.tmp ]] || printf '%s %s\n' "$(basename "$f")" "$(cat "$f")"
done >"$tmp/jobs.txt"
[[ $(wc -l <"$tmp/jobs.txt") -eq $JOBS ]] || { echo "expected $JOBS launched jobs with tokens" >&2; exit 1; }

# Prints "requests/s p50 p99 non2xx" from a wrk report.
summarize() {
  awk '
    /Requests\/sec:/ { rps = $2 }
    /^ +50%/ { p50 = $2 }
    /^ +99%/ { p99 = $2 }
    /Non-2xx or 3xx responses:/ { bad = $5 }
    /Socket errors:/ { errors = $0 }
    END { printf "%s %s %s %s\n", rps, p50, p99, (bad == "" ? 0 : bad) }
  ' "$1"
}

run_wrk() { # name, wrk args...
  local name=$1; shift
  echo "== $name"
  wrk --latency "$@" | tee "$tmp/$name.txt"
}

# Each acknowledged callback waits for its group's fsync (synchronous=FULL),
# so at a fixed concurrency the disk's flush latency bounds the rate.
sync_ms=$(cd "$tmp" && dd if=/dev/zero of=probe bs=16k count=200 oflag=dsync 2>&1 |
  awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) t = $(i-1); printf "%.2f", t * 1000 / 200 }')
rm -f "$tmp/probe"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$daemon_pid/stat"; }
ticks_before=$(cpu_ticks)
[[ $BACKEND == postgres ]] && pg_before=$(pg_ticks)
run_wrk callbacks -t "$THREADS" -c "$CONNECTIONS" -d "$DURATION" -s "$here/callback.lua" "$url" -- "$tmp/jobs.txt" "$THREADS"
ticks_after=$(cpu_ticks)
[[ $BACKEND == postgres ]] && pg_after=$(pg_ticks)
# SQLite keeps points in `points` since schema 13 (`metrics` before, and on PostgreSQL).
points=$(sql "SELECT COUNT(*) FROM points" 2>/dev/null || sql "SELECT COUNT(*) FROM metrics")
applied=$(curl -sf "$url/metrics" | awk -F' ' '/^platform_callbacks_total\{outcome="applied"\}/ { print $2 }')
duplicates=$(curl -sf "$url/metrics" | awk -F' ' '/^platform_callbacks_total\{outcome="duplicate"\}/ { print $2 }')
batches=$(curl -sf "$url/metrics" | awk -F' ' '/^platform_db_commit_batch_size_sum/ { s = $2 } /^platform_db_commit_batch_size_count/ { c = $2 } END { if (c > 0) printf "%.1f", s / c }')

run_wrk list_jobs -t "$THREADS" -c "$CONNECTIONS" -d "$READ_DURATION" "${auth_header[@]}" "$url/api/v1/training/jobs"
run_wrk get_job -t "$THREADS" -c "$CONNECTIONS" -d "$READ_DURATION" "${auth_header[@]}" -s "$here/get_job.lua" "$url" -- "$tmp/jobs.txt"

rss_peak=$(awk '/VmHWM/ { print $2, $3 }' "/proc/$daemon_pid/status")
rss_now=$(awk '/VmRSS/ { print $2, $3 }' "/proc/$daemon_pid/status")

echo
echo "== summary ($BACKEND, $(nproc) cores, $JOBS jobs, $CONNECTIONS connections, $THREADS wrk threads, auth: $AUTH, load $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-10s %12s %10s %10s %8s\n' endpoint "requests/s" p50 p99 non-2xx
for name in callbacks list_jobs get_job; do
  read -r rps p50 p99 bad < <(summarize "$tmp/$name.txt")
  printf '%-10s %12s %10s %10s %8s\n' "$name" "$rps" "$p50" "$p99" "$bad"
done
echo "callbacks applied: ${applied:-?} (duplicates ${duplicates:-0}); metric points stored: $points"
echo "mean writes per group commit: ${batches:-?}"
hz=$(getconf CLK_TCK)
awk -v t=$((ticks_after - ticks_before)) -v hz="$hz" -v n="${applied:-0}" 'BEGIN {
  if (n > 0) printf "daemon CPU per callback: %.0f us (user+system)\n", t / hz * 1e6 / n }'
if [[ $BACKEND == postgres ]]; then
  awk -v t=$((pg_after - pg_before)) -v hz="$hz" -v n="${applied:-0}" 'BEGIN {
    if (n > 0) printf "PostgreSQL CPU per callback: %.0f us (user+system, all its processes)\n", t / hz * 1e6 / n }'
fi
echo "disk: ${sync_ms:-?} ms per synchronous 16 KiB write (dd oflag=dsync)"
echo "daemon peak RSS (VmHWM): $rss_peak (now $rss_now)"
if [[ "$HANGING_WEBHOOK" == 1 ]]; then
  echo "hanging webhook: $(sql "SELECT COUNT(*) FROM webhook_deliveries") deliveries queued, $(sql "SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'pending' AND attempts > 0 AND last_error IS NULL") in flight with no answer, $(sql "SELECT COUNT(*) FROM webhook_deliveries WHERE state <> 'pending'") finished; receiver holds $(tail -1 "$tmp/receiver.log" 2>/dev/null || echo 0) connections"
fi
if [[ $BACKEND == postgres ]]; then
  echo "target: >= 5000 callbacks/s at concurrency 32 (synchronous_commit=on)"
else
  echo "target: >= 15000 callbacks/s with p99 < 10ms at concurrency 32"
fi
