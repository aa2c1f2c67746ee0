#!/usr/bin/env bash
# Property-based fuzzing of the HTTP API against its own OpenAPI document.
#
# Starts a daemon on loopback (API token, a stub trainer whose jobs stay
# running, a dataset), then runs Schemathesis with every check against
# /openapi.json: any 5xx, any response that breaks its schema, any status
# the document does not list, any valid request refused or invalid one
# accepted fails the run. Bounded in time (FUZZ_SECONDS, default 150; a
# hard wall-clock limit of FUZZ_SECONDS + 120). Exit status: Schemathesis's.
#
#   scripts/fuzz-api.sh                 # builds the debug binary if needed
#   PLATFORM_BIN=path/to/platform scripts/fuzz-api.sh
#
# Needs `schemathesis` (pip install schemathesis) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-150}"
bin="${PLATFORM_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --locked --quiet
  bin="${CARGO_TARGET_DIR:-target}/debug/platform"
fi
command -v schemathesis >/dev/null || { echo "fuzz-api: schemathesis is not installed (pip install schemathesis)" >&2; exit 1; }

work="$(mktemp -d)"
pid=""
cleanup() {
  local code=$?
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$code"
}
trap cleanup EXIT

token="fuzz-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# A trainer that writes down its job id and callback token (the contract's
# JOB_ID and CALLBACK_TOKEN) and stays running, so trainer routes are
# reachable with a real token. argv only: sh is this test's own choice.
cat > "$work/trainers.toml" <<EOF
[trainers.stub]
command = ["sh", "-c", "printf '%s %s\\\\n' \"\$JOB_ID\" \"\$CALLBACK_TOKEN\" >> \"\$FUZZ_TOKENS\"; exec sleep 3600"]
env = { FUZZ_TOKENS = "$work/tokens" }
EOF

# The dataset check depends on what the store holds, which no schema can
# say; the failed-token limit would turn the fuzzer's deliberate bad tokens
# into 429s the schema cannot predict. Everything else is checked as
# configured by default.
DATASET_CHECK=off "$bin" serve --bind 127.0.0.1:0 --data-dir "$work/data" \
  --api-token "$token" --trainers "$work/trainers.toml" --max-concurrent-jobs 2 \
  --max-auth-failures 0 \
  --stop-jobs-on-exit >"$work/daemon.log" 2>&1 &
pid=$!
base=""
for _ in $(seq 1 200); do
  base="$(grep -o 'listening on http://[0-9.:]*' "$work/daemon.log" | head -n 1 | cut -d' ' -f3 || true)"
  [ -n "$base" ] && break
  sleep 0.1
done
[ -n "$base" ] && curl -fsS "$base/health" >/dev/null || { cat "$work/daemon.log" >&2; exit 1; }

auth=(-H "Authorization: Bearer $token")
create() {
  curl -fsS "${auth[@]}" -H 'Content-Type: application/json' \
    -d "{\"user_id\":\"fuzz\",\"model_name\":\"m\",\"framework\":\"$1\",\"dataset_s3_uri\":\"s3://b/d/\"}" \
    "$base/api/v1/training/jobs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
create stub >/dev/null
create stub >/dev/null
curl -fsS "${auth[@]}" -X PUT --data-binary 'hello' "$base/api/v1/datasets/fuzzset/files/a/b.txt" >/dev/null
for _ in $(seq 1 100); do
  [ "$(wc -l <"$work/tokens" 2>/dev/null || echo 0)" -ge 2 ] && break
  sleep 0.1
done
read -r job callback_token < <(head -n 1 "$work/tokens")
read -r other _ < <(sed -n 2p "$work/tokens")
[ -n "${callback_token:-}" ] || { echo "fuzz-api: the stub trainer did not start" >&2; cat "$work/daemon.log" >&2; exit 1; }
curl -fsS -X PUT -H "Authorization: Bearer $callback_token" --data-binary 'w' \
  "$base/api/v1/training/jobs/$job/artifacts/ckpt/best.pt" >/dev/null

# The two stub jobs take both slots, so jobs the fuzzer creates stay
# pending. Real ids and names half of the time, so requests get past the 404s; the
# callback token opens the trainer routes of the first job only.
cat > "$work/schemathesis.toml" <<EOF
# Event streams and followed logs of a live job never end by design: read a
# few events, and ask the logs for what is there now (below).
max-stream-events = 3

[auth.openapi.api_token]
bearer = "$token"

[auth.openapi.callback_token]
bearer = "$callback_token"

[dictionaries.jobs]
values = ["$job"]

[dictionaries.others]
values = ["$other"]

[dictionaries.datasets]
values = ["fuzzset"]

[dictionaries.paths]
values = ["a/b.txt", "ckpt/best.pt"]

[parameters]
"path.id" = { dictionary = "jobs", probability = 0.5 }
"path.name" = { dictionary = "datasets", probability = 0.5 }
"path.path" = { dictionary = "paths", probability = 0.3 }
# A callback's job_id must equal the path's (422 otherwise), which a schema
# cannot say; the only job the fuzzer can reach with a token is this one.
"body.job_id" = { dictionary = "jobs", probability = 1.0 }

# …and ids seen in other responses would pair a job's path with another's
# job_id: fuzz with the dictionaries above only.
[phases.fuzzing.extra-data-sources]
responses = false

# Links from the Location header of 201 answers only: a dry run's job has
# an illustrative id that was never stored.
[phases.stateful.inference]
algorithms = ["location-headers"]

# Cancels go to the other stub job, so the first one keeps taking
# callbacks; cancelling a job that already ended is 400 (SPEC).
[[operations]]
include-operation-id = "cancel_job"
parameters = { "path.id" = { dictionary = "others", probability = 0.5 } }
checks.positive_data_acceptance.expected-statuses = [204, 400, 401, 404]

# Answers a schema cannot predict, all 422: a create that reuses an
# Idempotency-Key with another body (the draft standard's rule); a webhook
# whose host does not resolve (or resolves to a refused address); a sweep
# whose grid multiplies out past 500 jobs, or names a key inside another
# (a and a.b); a PATCH whose tags, merged into the job's, pass 32; a
# prune's max_points without metrics=downsample. Each key and bound alone
# is in the schema; these rules span fields or stored state.
[[operations]]
include-operation-id = ["create_job", "add_webhook", "create_sweep", "update_job", "prune"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", 401, 403, 404, 409, 422, 429, "5xx"]

[[operations]]
include-operation-id = "logs"
parameters = { "follow" = "false" }
EOF

# Every check but use_after_free: DELETE cancels a job (SPEC, seed
# compatible) and a cancelled job stays readable, by design.
start=$(date +%s)
set +e
# From the scratch directory: Schemathesis keeps a cache in `.schemathesis/`.
(cd "$work" && timeout --signal=INT "$((seconds + 120))" schemathesis --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
  --url "$base" \
  --checks all \
  --exclude-checks use_after_free \
  --max-time "$seconds" \
  --request-timeout 10 \
  --workers 1 \
  --seed "${FUZZ_SEED:-$RANDOM}" \
  --suppress-health-check too_slow,filter_too_much,data_too_large)
status=$?
set -e
echo "fuzz-api: schemathesis exited $status after $(( $(date +%s) - start )) s"
if grep -E "panicked|internal error" "$work/daemon.log" >&2; then
  echo "fuzz-api: the daemon logged an internal error (above)" >&2
  status=1
fi
exit "$status"
