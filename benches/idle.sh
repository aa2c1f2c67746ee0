#!/usr/bin/env bash
# Start-up time and idle memory of `platform serve` (issue 17: idle RSS
# <= 12 MiB, start-up <= 20 ms, on an empty data dir and on one holding
# 1,000,000 jobs). Builds nothing: BIN names the binary to measure (the
# one install.sh ships is target/x86_64-unknown-linux-musl/release/platform).
#
#   BIN=path/to/platform benches/idle.sh
#
# For each data dir (a fresh empty one per start; a copy of the cached
# 1M-job history, started once untimed first so a migration or a cold page
# cache is not counted) it starts the daemon STARTS times and reports:
#   - start-up: from spawning the process until GET /health answers 200
#     (polled every 0.5 ms over loopback), median/min/max; the daemon's
#     own `startup_ms` (from its log line); and the CPU time its threads
#     had used by then (schedstat: on a busy machine the wall time also
#     counts waiting for a CPU);
#   - RSS (VmRSS) when /health first answers, median/min/max;
# and then, on one more start kept running:
#   - RSS after 5 s idle;
#   - RSS after a burst of load (16 clients, BURST_S seconds of creating
#     held jobs, listing and reading them, and a /metrics scrape; then the
#     jobs created are cancelled) and its peak (VmHWM);
#   - RSS 10 s after the burst (memory should come back), with the
#     anonymous / file-backed split from smaps_rollup.
#
# The 1M-job history (1,000,000 finished jobs with an attempt each, and
# POINTS metric points: benches/history.py) is generated once per schema version with SQL into
# CACHE and reused; delete it to regenerate. Knobs: STARTS=10 JOBS=1000000 POINTS=1000000
# BURST_S=3 CACHE=/tmp/platform-idle-bench SCENARIOS="empty history", and
# DAEMON_ENV="NAME=VALUE …" for the daemon (it otherwise gets only PATH and
# HOME: no .env, no PLATFORM_* of the caller), e.g. MIMALLOC_VERBOSE=1.
# Needs python3 (with its sqlite3 module).
set -euo pipefail
[[ -n "${BIN:-}" ]] || { sed -n '2,/^# Needs/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
BIN=$(realpath "$BIN")
[[ -x "$BIN" ]] || { echo "idle.sh: $BIN is not an executable" >&2; exit 1; }
command -v python3 >/dev/null || { echo "idle.sh: python3 is required" >&2; exit 1; }
export BIN STARTS=${STARTS:-10} JOBS=${JOBS:-1000000} POINTS=${POINTS:-1000000} \
  BURST_S=${BURST_S:-3} CACHE=${CACHE:-/tmp/platform-idle-bench} \
  SCENARIOS=${SCENARIOS:-empty history} DAEMON_ENV=${DAEMON_ENV:-}
export BENCHES=$(cd "$(dirname "$0")" && pwd)
exec python3 - <<'PY'
import http.client, json, os, re, shutil, signal, socket, sqlite3, statistics
import subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.environ["BENCHES"])
import history as history_sql  # noqa: E402  (benches/history.py)
import processes  # noqa: E402  (benches/processes.py)

BIN, CACHE = os.environ["BIN"], os.environ["CACHE"]
STARTS, JOBS, POINTS = int(os.environ["STARTS"]), int(os.environ["JOBS"]), int(os.environ["POINTS"])
BURST_S = float(os.environ["BURST_S"])
MiB = 1024 * 1024


def health(port):
    """The status of GET /health, or None while nothing listens."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            head = s.recv(64)
            return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    except (ConnectionRefusedError, ConnectionResetError):
        return None


class Daemon:
    def __init__(self, data):
        self.data, self.port = data, processes.free_port()
        self.log = open(os.path.join(os.path.dirname(data), "serve.log"), "wb")
        t0 = time.perf_counter()
        env = {"PATH": os.environ["PATH"], "HOME": os.path.dirname(data)}
        env.update(kv.split("=", 1) for kv in os.environ["DAEMON_ENV"].split())
        self.proc = subprocess.Popen(
            [BIN, "serve", "--bind", f"127.0.0.1:{self.port}", "--data-dir", data,
             "--dataset-check", "off", "--hold-jobs"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=os.path.dirname(data), env=env)
        while True:
            code = health(self.port)
            if code == 200:
                break
            if self.proc.poll() is not None:
                self.log.flush()
                sys.exit(f"idle.sh: the daemon exited ({self.proc.returncode}): "
                         + open(self.log.name).read()[-2000:])
            if time.perf_counter() - t0 > 120:
                sys.exit("idle.sh: /health did not answer 200 within 120 s")
            time.sleep(0.0005)
        self.ms = (time.perf_counter() - t0) * 1000
        self.rss = self.status("VmRSS")
        self.cpu = self.cpu_ms()

    def cpu_ms(self):
        """CPU time of the daemon's live threads so far (schedstat, in ns):
        what start-up costs whatever the other load on the machine."""
        total = 0
        for t in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                total += int(open(f"/proc/{self.proc.pid}/task/{t}/schedstat").read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        return total / 1e6

    def status(self, field):
        """A /proc/PID/status field in bytes."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def smaps(self):
        with open(f"/proc/{self.proc.pid}/smaps_rollup") as f:
            fields = dict((l.split()[0].rstrip(":"), int(l.split()[1]) * 1024)
                          for l in f if l.split()[-1:] == ["kB"])
        return fields.get("Anonymous", 0), fields.get("Rss", 0) - fields.get("Anonymous", 0)

    def startup_ms(self):
        """The daemon's own start-up figure from its `listening` log line."""
        self.log.flush()
        for _ in range(100):
            m = re.search(r"startup_ms[=:\"]+(\d+)", open(self.log.name).read())
            if m:
                return int(m.group(1))
            time.sleep(0.01)
        return None

    def stop(self):
        processes.stop(self.proc, self.log, 60)


def burst(port, seconds):
    """16 clients on keep-alive connections (one scrapes /metrics first)
    creating (held), listing and reading jobs; the jobs created are
    cancelled at the end, so what the daemon holds afterwards is caches."""
    job = {"user_id": "burst", "model_name": "yolo11n", "framework": "demo",
           "dataset_s3_uri": "s3://bench/data/", "config": {"epochs": 1, "lr": 0.01}}
    stop_at, done, ids = time.monotonic() + seconds, [0], []

    def call(c, method, path, body=None):
        c.request(method, path, body and json.dumps(body),
                  {"content-type": "application/json"} if body else {})
        r = c.getresponse()
        data = r.read()
        if r.status >= 300:
            sys.exit(f"idle.sh: {method} {path} got {r.status}: {data[:200]!r}")
        done[0] += 1
        return data

    def client(n, work):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        work(c, n)
        c.close()

    def load(c, n):
        if n == 0:
            call(c, "GET", "/metrics")
        i = n
        while time.monotonic() < stop_at:
            i += 1
            if i % 4 == 0:
                ids.append(json.loads(call(c, "POST", "/api/v1/training/jobs", job))["id"])
            elif i % 4 == 1:
                call(c, "GET", "/api/v1/training/jobs?limit=100")
            elif ids:
                call(c, "GET", f"/api/v1/training/jobs/{ids[-1]}")

    def cancel(c, n):
        for id in ids[n::16]:
            call(c, "DELETE", f"/api/v1/training/jobs/{id}")

    for work in (load, cancel):
        threads = [threading.Thread(target=client, args=(n, work)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return done[0]


def history():
    """The cached data dir holding JOBS finished jobs and POINTS points, in
    the schema BIN creates (one cache per schema version)."""
    fresh = tempfile.mkdtemp(prefix="platform-idle-schema-")
    data = os.path.join(fresh, "data")
    Daemon(data).stop()
    db = sqlite3.connect(os.path.join(data, "platform.db"))
    version = db.execute("PRAGMA user_version").fetchone()[0]
    db.close()
    root = os.path.join(CACHE, f"jobs-{JOBS}-points-{POINTS}-schema-{version}")
    if os.path.exists(os.path.join(root, "ready")):
        shutil.rmtree(fresh)
        return os.path.join(root, "data")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    print(f"== generating {JOBS} jobs and {POINTS} points in {root} (once)", flush=True)
    shutil.move(data, os.path.join(root, "data"))
    shutil.rmtree(fresh)
    data = os.path.join(root, "data")
    t = time.perf_counter()
    history_sql.fill(os.path.join(data, "platform.db"), JOBS, POINTS)
    size = os.path.getsize(os.path.join(data, "platform.db"))
    print(f"   {time.perf_counter() - t:.0f} s, {size / MiB:.0f} MiB", flush=True)
    open(os.path.join(root, "ready"), "w").close()
    return data


def mib(b):
    return f"{b / MiB:.1f}"


def spread(xs, fmt):
    return f"{fmt(statistics.median(xs))} / {fmt(min(xs))} / {fmt(max(xs))}"


def scenario(name):
    work = tempfile.mkdtemp(prefix="platform-idle-")
    try:
        def data_dir(i):
            if name == "empty":
                d = os.path.join(work, f"start{i}", "data")
                os.makedirs(os.path.dirname(d))
                return d
            d = os.path.join(work, "h", "data")
            if not os.path.exists(d):
                shutil.copytree(history(), d)
                Daemon(d).stop()  # untimed: migrations, page cache
            return d

        starts = []
        for i in range(STARTS):
            d = Daemon(data_dir(i))
            starts.append((d.ms, d.startup_ms(), d.rss, d.cpu))
            d.stop()
        ms = [s[0] for s in starts]
        inner = [s[1] for s in starts if s[1] is not None]
        rss = [s[2] for s in starts]
        cpu = [s[3] for s in starts]
        print(f"{name:8} start-up ms (median / min / max): {spread(ms, lambda x: f'{x:.1f}')}"
              f"   daemon's startup_ms: {spread(inner, str) if inner else '?'}"
              f"   on-CPU ms: {spread(cpu, lambda x: f'{x:.1f}')}")
        print(f"{name:8} RSS at /health MiB (median / min / max): {spread(rss, mib)}")

        d = Daemon(data_dir(STARTS))
        time.sleep(5)
        idle5 = d.status("VmRSS")
        hwm_before = d.status("VmHWM")
        n = burst(d.port, BURST_S)
        during = d.status("VmRSS")
        time.sleep(10)
        after = d.status("VmRSS")
        anon, filed = d.smaps()
        print(f"{name:8} RSS MiB: at start {mib(d.rss)}, after 5 s idle {mib(idle5)} (peak {mib(hwm_before)}),"
              f" after a burst of {n} requests {mib(during)} (peak {mib(d.status('VmHWM'))}),"
              f" 10 s after it {mib(after)} (anonymous {mib(anon)}, file-backed {mib(filed)})", flush=True)
        d.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


kind = subprocess.run(["file", "-b", BIN], capture_output=True, text=True).stdout.split(",")[0] \
    if shutil.which("file") else "?"
version = subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.strip()
print(f"== {BIN}: {version}, {kind}, {os.path.getsize(BIN) / MiB:.1f} MiB; {os.cpu_count()} cores,"
      f" load {open('/proc/loadavg').read().split()[0]}; {STARTS} starts each", flush=True)
for name in os.environ["SCENARIOS"].split():
    scenario(name)
print("targets: start-up <= 20 ms (median), idle RSS <= 12 MiB")
PY
