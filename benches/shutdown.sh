#!/usr/bin/env bash
# How long `platform serve` takes to exit after SIGTERM, idle and with a
# demo job running, and whether it logs any warning or error on the way.
#
#   benches/shutdown.sh [ROUNDS]    (default 3; BIN=path skips the build)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${1:-3}"
if [ -z "${BIN:-}" ]; then
  (cd "$root" && cargo build --release --quiet)
  BIN="$root/${CARGO_TARGET_DIR:-target}/release/platform"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for mode in idle running; do
  for i in $(seq "$rounds"); do
    d="$(mktemp -d)"; port="$(free_port)"; url="http://127.0.0.1:$port"
    DATASET_CHECK=off "$BIN" serve --bind "127.0.0.1:$port" --data-dir "$d/data" >"$d/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -fs "$url/health" >/dev/null 2>&1 && break; sleep 0.05; done
    if [ "$mode" = running ]; then
      PLATFORM_SERVER="$url" "$BIN" job create --framework demo --model yolo11n \
        --dataset s3://bench/data --set epochs=1000 >/dev/null
      for _ in $(seq 100); do
        PLATFORM_SERVER="$url" "$BIN" job list -q --status running | grep -q . && break
        sleep 0.1
      done
    fi
    start=$(date +%s%N); kill -TERM "$pid"; rc=0; wait "$pid" || rc=$?; end=$(date +%s%N)
    printf '%-8s round %d: exit %d after %d ms, %d warning/error lines\n' "$mode" "$i" "$rc" \
      $(( (end - start) / 1000000 )) "$(grep -ciE ' (warn|error) ' "$d/log" || true)"
    # The demo trainer outlives the daemon by design (re-adoption): stop it.
    pkill -f -- "--dir $d/" 2>/dev/null || true
    rm -rf "$d"
  done
done
