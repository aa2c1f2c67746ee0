#!/usr/bin/env bash
# Runs benches/callback_load.sh for several variants, interleaved round by
# round so every variant sees the same machine load (this host is noisy:
# never compare figures from separate runs), and prints one table.
#
# Each variant is NAME:SETTINGS, where SETTINGS are callback_load.sh's
# environment knobs, space-separated:
#
#   ROUNDS=4 benches/compare.sh \
#     'before:BIN=/tmp/old/platform' \
#     'after:BIN=target/release/platform' \
#     'hanging:BIN=target/release/platform HANGING_WEBHOOK=1' \
#     'user-token:BIN=target/release/platform AUTH=user'
#
# Knobs: ROUNDS=3, and any callback_load.sh knob (DURATION=15s,
# READ_DURATION=5s, JOBS, CONNECTIONS, …) applies to every variant unless
# the variant sets it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[[ $# -ge 1 ]] || { sed -n '2,17p' "$0" >&2; exit 2; }
ROUNDS=${ROUNDS:-3}
export DURATION=${DURATION:-15s} READ_DURATION=${READ_DURATION:-5s}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for round in $(seq 1 "$ROUNDS"); do
  for variant in "$@"; do
    name=${variant%%:*}
    read -r -a settings <<<"${variant#*:}"
    echo "== round $round: $name (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    env "${settings[@]}" "$here/callback_load.sh" >"$out/$name-$round.txt" 2>&1 ||
      { cat "$out/$name-$round.txt" >&2; exit 1; }
  done
done
printf '%-12s %-6s %12s %10s %12s %12s %14s\n' variant round "callbacks/s" "p99" "get_job/s" "list_jobs/s" "CPU/callback"
for round in $(seq 1 "$ROUNDS"); do
  for variant in "$@"; do
    name=${variant%%:*}
    awk -v n="$name" -v r="$round" '
      /^== summary/ { on = 1; next }
      on && /^callbacks +[0-9]/ { cb = $2; p99 = $4 }
      on && /^get_job / { get = $2 }
      on && /^list_jobs / { list = $2 }
      /^daemon CPU per callback/ { cpu = $5 " " $6 }
      END { printf "%-12s %-6s %12s %10s %12s %12s %14s\n", n, r, cb, p99, get, list, cpu }
    ' "$out/$name-$round.txt"
  done
done
