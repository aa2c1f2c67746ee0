#!/usr/bin/env bash
# Where one callback's time goes: runs benches/callback_load.sh and,
# a few seconds into its callback phase, samples for SAMPLE seconds
#   - each daemon thread's CPU (the writer is the connection thread that
#     runs SQLite, named like the binary; tokio-rt-worker serve HTTP), and
#     its context switches,
#   - the load generator's CPU and the whole machine's idle time,
#   - the daemon's own histograms: the whole request
#     (platform_http_request_duration_seconds), the database write in it
#     (platform_db_write_seconds: queue, batch and commit) and the writes
#     per batch (platform_db_commit_batch_size).
# CPU per callback of each thread is its CPU divided by the callbacks
# answered meanwhile.
#
# Usage: BIN=target/release/platform benches/callback_budget.sh
# Knobs: SAMPLE=5 (seconds), and callback_load.sh's (DURATION defaults to
# 20s here, BACKEND, CONNECTIONS, …). Needs what callback_load.sh needs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
SAMPLE=${SAMPLE:-5}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
DURATION=${DURATION:-20s} READ_DURATION=${READ_DURATION:-1s} "$here/callback_load.sh" >"$out/run.txt" 2>&1 &
load=$!
for _ in $(seq 1 1200); do grep -q "^== callbacks" "$out/run.txt" 2>/dev/null && break; sleep 0.1; done
grep -q "^== callbacks" "$out/run.txt" || { cat "$out/run.txt" >&2; exit 1; }
pid=$(grep -o "(pid [0-9]*)" "$out/run.txt" | grep -o "[0-9]*")
url=$(grep -o "http://127.0.0.1:[0-9]*" "$out/run.txt" | head -1)
wrk_pid=$(pgrep -n -x wrk)
sleep 3
threads() { # tid name cpu-ticks voluntary-switches
  for t in /proc/"$pid"/task/*; do
    printf '%s %s %s %s\n' "$(basename "$t")" "$(tr ' ' _ <"$t/comm")" \
      "$(awk '{ print $14 + $15 }' "$t/stat")" "$(awk '/^voluntary_ctxt/ { print $2 }' "$t/status")"
  done | sort
}
applied() { curl -sf "$url/metrics" | awk '/^platform_callbacks_total\{outcome="applied"\}/ { print $2 }'; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
threads >"$out/t0"; head -1 /proc/stat >"$out/s0"; w0=$(ticks "$wrk_pid"); n0=$(applied)
sleep "$SAMPLE"
threads >"$out/t1"; head -1 /proc/stat >"$out/s1"; w1=$(ticks "$wrk_pid"); n1=$(applied)
curl -sf "$url/metrics" >"$out/metrics"
wait "$load" || { cat "$out/run.txt" >&2; exit 1; }
hz=$(getconf CLK_TCK)
n=$(awk -v a="$n0" -v b="$n1" 'BEGIN { print b - a }')
echo "== $n callbacks in ${SAMPLE}s ($(awk -v n="$n" -v s="$SAMPLE" 'BEGIN { printf "%.0f", n / s }')/s)"
printf '%-18s %8s %16s %14s\n' thread CPU "CPU/callback" "switches/s"
join "$out/t0" "$out/t1" | awk -v hz="$hz" -v s="$SAMPLE" -v n="$n" '
  { d = $6 - $3; c = $7 - $4; if (d > 0) printf "%-18s %7.1f%% %13.1f us %14.0f\n", $2, d / hz / s * 100, d / hz * 1e6 / n, c / s }'
awk -v a="$w0" -v b="$w1" -v hz="$hz" -v s="$SAMPLE" -v n="$n" 'BEGIN {
  printf "%-18s %7.1f%% %13.1f us\n", "wrk (load)", (b - a) / hz / s * 100, (b - a) / hz * 1e6 / n }'
paste "$out/s0" "$out/s1" | awk -v np="$(nproc)" '{ k = (NF - 2) / 2; for (i = 2; i <= k + 1; i++) tot += $(i + k + 1) - $i
  idle = $(5 + k + 1) - $5; printf "machine idle: %.0f%% of %d%%\n", idle / tot * np * 100, np * 100 }'
echo "daemon histograms since start (mean, p50, p99):"
awk '
  /^platform_http_request_duration_seconds.*callback/ && /_sum/ { hs = $2 } /^platform_http_request_duration_seconds_count.*callback/ { hc = $2 }
  /^platform_http_request_duration_seconds\{.*callback.*quantile="0.5"/ { h50 = $2 } /^platform_http_request_duration_seconds\{.*callback.*quantile="0.99"/ { h99 = $2 }
  /^platform_db_write_seconds_sum/ { ws = $2 } /^platform_db_write_seconds_count/ { wc = $2 }
  /^platform_db_write_seconds\{quantile="0.5"/ { w50 = $2 } /^platform_db_write_seconds\{quantile="0.99"/ { w99 = $2 }
  /^platform_db_commit_batch_size_sum/ { bs = $2 } /^platform_db_commit_batch_size_count/ { bc = $2 }
  function ms(x) { return x * 1000 }
  END {
    if (hc > 0) printf "  callback request  %6.2f ms  %6.2f ms  %6.2f ms\n", ms(hs / hc), ms(h50), ms(h99)
    if (wc > 0) printf "  database write    %6.2f ms  %6.2f ms  %6.2f ms  (queue + batch + commit)\n", ms(ws / wc), ms(w50), ms(w99)
    if (bc > 0) printf "  writes per batch  %6.1f\n", bs / bc
  }' "$out/metrics"
sed -n '/== summary/,$p' "$out/run.txt"
