# Sourced by the load benchmarks (callback_load.sh, prune.sh): starts
# `platform serve` ($BIN) with a stand-in `demo` trainer that writes its
# callback token to DIR/tokens/<job id> and sleeps, so no trainer competes
# for the CPU. The dataset URIs the benchmarks make up would fail the store
# check, so it is off; --stop-jobs-on-exit ends the stand-ins with the
# daemon. The database is only what the arguments name (a DATABASE_URL
# in the caller's environment is not inherited).
#
#   start_stub_daemon DIR [serve arguments…]
#
# Sets `daemon_pid` and `url` (http://127.0.0.1:PORT); the log is
# DIR/serve.log. Exits the script if the daemon does not start.
start_stub_daemon() {
  local dir=$1
  shift
  mkdir -p "$dir/tokens"
  cat >"$dir/trainers.toml" <<TOML
[trainers.demo]
command = ["sh", "-c", 'printf %s "\$CALLBACK_TOKEN" > "\$TOKENS/\$JOB_ID.tmp" && mv "\$TOKENS/\$JOB_ID.tmp" "\$TOKENS/\$JOB_ID" && exec sleep 3600']
env = { TOKENS = "$dir/tokens" }
TOML
  env -u DATABASE_URL "$BIN" serve --bind 127.0.0.1:0 --data-dir "$dir/data" --trainers "$dir/trainers.toml" \
    --max-concurrent-jobs 0 --stop-jobs-on-exit --kill-grace 1 --dataset-check off "$@" >"$dir/serve.log" 2>&1 &
  daemon_pid=$!
  url=""
  for _ in $(seq 1 200); do
    url=$(grep -o 'listening on http://[0-9.:]*' "$dir/serve.log" | head -1 | sed 's/listening on //' || true)
    [[ -n "$url" ]] && break
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$dir/serve.log" >&2; exit 1; }
    sleep 0.05
  done
  [[ -n "$url" ]] || { echo "the daemon did not start" >&2; cat "$dir/serve.log" >&2; exit 1; }
  echo "   $url (pid $daemon_pid)"
}
