#!/usr/bin/env bash
# The test command (README): installs what the test suite needs when it is
# missing, then runs every test. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# The dashboard test drives headless Chromium with Node's playwright-core.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# The PostgreSQL passes start throwaway clusters with initdb + pg_ctl.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
# tests/python_client.rs installs clients/python into a virtual environment.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

[ -d tests/ui/node_modules/playwright-core ] || npm ci --prefix tests/ui --no-audit --no-fund

# tests/openapi.rs validates /openapi.json with openapi-spec-validator.
python3 -c 'import openapi_spec_validator' 2>/dev/null ||
  python3 -m pip install --quiet openapi-spec-validator

# tests/postgres.rs and tests/replicas.rs (several replicas with leader
# election) always run on a PostgreSQL cluster of their own.
cargo test --locked "$@"
# crates/fastmem (the static build's memcpy and friends) is its own package.
[ $# -gt 0 ] || cargo test --locked -p fastmem

# The API, CLI, durability, runner, scheduling, idempotency, webhook,
# users, lifecycle, sweeps, GPU and retention suites again, each daemon on a fresh
# database of a PostgreSQL cluster the test binary starts and stops itself.
if [ $# -eq 0 ]; then
  PLATFORM_TEST_BACKEND=postgres cargo test --locked \
    --test api --test cli --test durability --test runner \
    --test scheduling --test idempotency --test webhooks \
    --test users --test lifecycle --test sweeps --test gpus \
    --test retention
fi
