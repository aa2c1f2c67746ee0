#!/usr/bin/env bash
# What per-user tokens cost on the hot paths: runs benches/callback_load.sh
# alternately with two binaries, ROUNDS times each, interleaved so both
# see the same machine load, and prints each run's summary lines.
#
# BEFORE reads with the operator's PLATFORM_API_TOKEN (the only token it
# has); AFTER reads with a user token (SHA-256 lookup, cached for a
# second). Callbacks use each job's own token in both.
#
# Usage: BEFORE=path/to/old/platform AFTER=path/to/new/platform benches/auth_overhead.sh
# Knobs: ROUNDS=2, BEFORE_AUTH=api, AFTER_AUTH=user, plus callback_load.sh's
#   (JOBS, CONNECTIONS, THREADS, DURATION, READ_DURATION).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${BEFORE:?set BEFORE to the binary to compare against}"
: "${AFTER:?set AFTER to the binary under test}"
ROUNDS=${ROUNDS:-2}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for round in $(seq 1 "$ROUNDS"); do
  for which in before after; do
    if [[ $which == before ]]; then bin=$BEFORE auth=${BEFORE_AUTH:-api}; else bin=$AFTER auth=${AFTER_AUTH:-user}; fi
    echo "== round $round: $which (auth: $auth)" >&2
    BIN=$bin AUTH=$auth "$here/callback_load.sh" >"$out/$which-$round.txt" 2>&1 ||
      { cat "$out/$which-$round.txt" >&2; exit 1; }
  done
done
printf '%-7s %-6s %-10s %12s %10s %10s %8s\n' run round endpoint "requests/s" p50 p99 non-2xx
for round in $(seq 1 "$ROUNDS"); do
  for which in before after; do
    awk -v w="$which" -v r="$round" '
      /^== summary/ { on = 1; next }
      on && /^(callbacks|list_jobs|get_job) / { printf "%-7s %-6s %-10s %12s %10s %10s %8s\n", w, r, $1, $2, $3, $4, $5 }
    ' "$out/$which-$round.txt"
  done
done
