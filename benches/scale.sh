#!/usr/bin/env bash
# Scale benchmark (issue 17, item 4): does a big history slow the daemon
# down? Builds nothing: BIN names the binary to measure.
#
#   BIN=path/to/platform benches/scale.sh
#
# Two data dirs, each generated once per schema version into CACHE and
# reused (delete them to regenerate):
#   small: SMALL_JOBS finished jobs and 1 % of the points;
#   big:   JOBS finished jobs and POINTS points.
# Jobs and most points are written in SQL (benches/history.py); one more
# job, the long one, gets LONG of the points (1 % in small) through the API
# as a trainer reports them (batches of 1,000 on POST …/metrics), so the
# daemon stores them, and whatever it derives from them, as it would live.
#
# For each data dir it reports:
#   - start-up: spawn until GET /health answers 200, median of STARTS;
#   - how long after its spawn a daemon acknowledged its first write,
#     after a clean restart and after a crash (SIGKILL): writes wait for
#     the whole-file integrity check, which runs beside the service unless
#     the file is as a clean shutdown left it (`platform serve` docs);
#   - how long that check took after the crash; the reads below are
#     measured after it, as it evicts cached pages and competes for the
#     disk while it runs;
#   - p50/p99 of REQUESTS sequential requests on one keep-alive connection
#     (client-observed, so about 0.1 ms of Python each; the same requests
#     twice, the figures from the second pass and the first pass's p99
#     apart, as it also reads what the OS had not cached) for: GET /jobs
#     (first page), filtered by status (failed: 5 % of jobs) and by user
#     (user7: 2 %), and GET /jobs/{id} of random jobs;
#   - the long job's history downsampled to 1,000 points
#     (`?max_points=1000`): the first request after start, then PLOTS more;
#   - bytes on disk per job (the jobs and job_attempts tables with their
#     indexes) and per point (every table and index of the points), from
#     SQLite's dbstat, and the file's size.
# The targets: the big dir's p99s within 2x of the small one's, the plot
# under 200 ms, start-up unaffected.
#
# Knobs: JOBS=1000000 POINTS=100000000 LONG=10000000 SMALL_JOBS=10000
#   REQUESTS=2000 PLOTS=20 STARTS=5 CACHE=/tmp/platform-scale-bench
# Needs python3 (with its sqlite3 module) and the disk for the big dir
# (its size is printed; about 90 bytes per point at schema 13: 9 GiB).
set -euo pipefail
[[ -n "${BIN:-}" ]] || { sed -n '2,/^# Needs/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
BIN=$(realpath "$BIN")
[[ -x "$BIN" ]] || { echo "scale.sh: $BIN is not an executable" >&2; exit 1; }
command -v python3 >/dev/null || { echo "scale.sh: python3 is required" >&2; exit 1; }
export BIN JOBS=${JOBS:-1000000} POINTS=${POINTS:-100000000} LONG=${LONG:-10000000} \
  SMALL_JOBS=${SMALL_JOBS:-10000} REQUESTS=${REQUESTS:-2000} PLOTS=${PLOTS:-20} \
  STARTS=${STARTS:-5} CACHE=${CACHE:-/tmp/platform-scale-bench} \
  BENCHES=$(cd "$(dirname "$0")" && pwd)
exec python3 - <<'PY'
import http.client, json, os, random, re, shutil, signal, socket, sqlite3, statistics
import subprocess, sys, tempfile, time

sys.path.insert(0, os.environ["BENCHES"])
import history  # noqa: E402  (benches/history.py)
import processes  # noqa: E402  (benches/processes.py)

BIN, CACHE = os.environ["BIN"], os.environ["CACHE"]
JOBS, POINTS, LONG = int(os.environ["JOBS"]), int(os.environ["POINTS"]), int(os.environ["LONG"])
SMALL_JOBS, REQUESTS = int(os.environ["SMALL_JOBS"]), int(os.environ["REQUESTS"])
PLOTS, STARTS = int(os.environ["PLOTS"]), int(os.environ["STARTS"])
API = "/api/v1/training/jobs"


class Daemon:
    """`platform serve` on `data`; with `trainer`, jobs launch a stand-in
    that writes its callback token to DIR/tokens/<job id> and sleeps."""

    def __init__(self, data, trainer=False):
        self.data, self.port = data, processes.free_port()
        home = os.path.dirname(data)
        self.tokens = os.path.join(home, "tokens")
        args = [BIN, "serve", "--bind", f"127.0.0.1:{self.port}", "--data-dir", data,
                "--dataset-check", "off"]
        if trainer:
            os.makedirs(self.tokens, exist_ok=True)
            toml = os.path.join(home, "trainers.toml")
            with open(toml, "w") as f:
                f.write('[trainers.demo]\ncommand = ["sh", "-c", '
                        "'printf %s \"$CALLBACK_TOKEN\" > \"$TOKENS/$JOB_ID.tmp\" && "
                        "mv \"$TOKENS/$JOB_ID.tmp\" \"$TOKENS/$JOB_ID\" && exec sleep 3600']\n"
                        f'env = {{ TOKENS = "{self.tokens}" }}\n')
            args += ["--trainers", toml, "--stop-jobs-on-exit", "--kill-grace", "1"]
        else:
            args += ["--hold-jobs", "--debug"]
        self.log = open(os.path.join(home, "serve.log"), "ab")
        self.log_from = self.log.tell()
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, cwd=home,
                                     env={"PATH": os.environ["PATH"], "HOME": home})
        while not self.healthy():
            if self.proc.poll() is not None:
                sys.exit(f"scale.sh: the daemon exited ({self.proc.returncode}); see {self.log.name}")
            if time.perf_counter() - t0 > 600:
                sys.exit("scale.sh: /health did not answer 200 within 600 s")
            time.sleep(0.0005)
        self.ms = (time.perf_counter() - t0) * 1000
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def healthy(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.1 200")
        except (ConnectionRefusedError, ConnectionResetError):
            return False

    def checked(self):
        """Waits for the whole-file integrity check that runs beside the
        service after start-up (reads are served meanwhile, writes wait),
        and returns how long it took in ms."""
        for _ in range(12000):
            self.log.flush()
            with open(self.log.name, "rb") as f:
                f.seek(self.log_from)
                m = re.search(rb"passed its integrity check ms=(\d+)", f.read())
            if m:
                return int(m.group(1))
            time.sleep(0.05)
        sys.exit("scale.sh: the integrity check did not pass within 600 s")

    def call(self, method, path, body=None, token=None):
        headers = {"content-type": "application/json"} if body is not None else {}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.conn.request(method, path, None if body is None else json.dumps(body), headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status >= 300:
            sys.exit(f"scale.sh: {method} {path} got {r.status}: {data[:300]!r}")
        return data

    def stop(self):
        self.conn.close()
        processes.stop(self.proc, self.log, 120)

    def crash(self):
        """SIGKILL: no clean shutdown, so the next start checks the file."""
        self.conn.close()
        self.proc.kill()
        self.proc.wait()


def schema_version():
    fresh = tempfile.mkdtemp(prefix="platform-scale-schema-")
    try:
        Daemon(os.path.join(fresh, "data")).stop()
        db = sqlite3.connect(os.path.join(fresh, "data", "platform.db"))
        version = db.execute("PRAGMA user_version").fetchone()[0]
        db.close()
        return version
    finally:
        shutil.rmtree(fresh)


def dataset(jobs, points, long):
    """The cached data dir, and the long job's id."""
    root = os.path.join(CACHE, f"jobs-{jobs}-points-{points}-long-{long}-schema-{schema_version()}")
    data = os.path.join(root, "data")
    if os.path.exists(os.path.join(root, "ready")):
        return data, open(os.path.join(root, "long")).read().strip()
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    print(f"== generating {jobs} jobs and {points} points in {root} (once)", flush=True)
    Daemon(data).stop()
    history.timed_fill(os.path.join(data, "platform.db"), jobs, points - long)
    d = Daemon(data, trainer=True)
    job = json.loads(d.call("POST", API, {"user_id": "long", "model_name": "yolo11n",
                                          "framework": "demo",
                                          "dataset_s3_uri": "s3://bench/d/"}))["id"]
    token_file = os.path.join(d.tokens, job)
    for _ in range(1200):
        if os.path.exists(token_file):
            break
        time.sleep(0.05)
    token = open(token_file).read()
    t = time.perf_counter()
    for start in range(0, long, 1000):
        batch = [{"epoch": i // 10000, "step": i, "loss": 1.0 / (1 + i) + (i % 89) * 1e-4,
                  "mAP50": (i % 97) / 100} for i in range(start, min(long, start + 1000))]
        d.call("POST", f"{API}/{job}/metrics", {"points": batch}, token)
    d.call("POST", f"{API}/{job}/callback", {"status": "completed", "progress": 1.0}, token)
    print(f"   {long} points of the long job through the API in {time.perf_counter() - t:.0f} s"
          f" ({long / (time.perf_counter() - t):.0f} points/s)", flush=True)
    d.stop()
    open(os.path.join(root, "long"), "w").write(job)
    open(os.path.join(root, "ready"), "w").close()
    return data, job


def first_write(data, job):
    """A daemon started on data, and the ms from its spawn until a write
    (a note on job) was acknowledged: writes wait for the whole-file check
    unless the file is as a clean shutdown left it."""
    t = time.perf_counter()
    d = Daemon(data)
    d.call("PATCH", f"{API}/{job}", {"note": "restarted"})
    return d, (time.perf_counter() - t) * 1000


def latencies(d, paths):
    out = []
    for p in paths:
        t = time.perf_counter()
        d.call("GET", p)
        out.append((time.perf_counter() - t) * 1000)
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def sizes(data, jobs, points):
    db_path = os.path.join(data, "platform.db")
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    owner = dict(db.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
    db.close()
    by_table = {}
    for name, size in history.sizes(db_path).items():
        table = owner.get(name, name)
        by_table[table] = by_table.get(table, 0) + size
    per_job = sum(by_table.get(t, 0) for t in ("jobs", "job_attempts")) / jobs
    point_tables = [t for t in by_table if t in ("metrics", "points", "metric_blocks")]
    per_point = sum(by_table[t] for t in point_tables) / points
    return per_job, per_point, os.path.getsize(db_path), point_tables


def measure(name, jobs, points, long):
    data, long_job = dataset(jobs, points, long)
    starts = []
    for _ in range(STARTS):
        d = Daemon(data)
        starts.append(d.ms)
        d.stop()
    d, clean = first_write(data, long_job)
    d.crash()
    d, crashed = first_write(data, long_job)
    rng = random.Random(7)
    row = {"start-up ms (median)": statistics.median(starts),
           "first write after a clean restart, ms": clean,
           "first write after a crash, ms": crashed,
           "integrity check beside the service, ms": d.checked()}
    cases = {
        "GET /jobs": [API] * REQUESTS,
        "GET /jobs?status=failed": [f"{API}?status=failed"] * REQUESTS,
        "GET /jobs?user_id=user7": [f"{API}?user_id=user7"] * REQUESTS,
        "GET /jobs/{id}": [f"{API}/{history.job_id(rng.randint(1, jobs))}" for _ in range(REQUESTS)],
    }
    plot = f"{API}/{long_job}/metrics?max_points=1000"
    first_plot = latencies(d, [plot])[0]
    for case, paths in cases.items():
        # Twice: the first pass reads pages the OS has not cached yet.
        cold = latencies(d, paths)
        xs = latencies(d, paths)
        row[f"{case} p50 ms"] = pct(xs, 0.5)
        row[f"{case} p99 ms"] = pct(xs, 0.99)
        row[f"{case} p99 ms, first pass"] = pct(cold, 0.99)
    kept = len(json.loads(d.call("GET", plot)))
    xs = latencies(d, [plot] * PLOTS)
    row["plot (max_points=1000) first ms"] = first_plot
    row["plot p50 ms"] = pct(xs, 0.5)
    row["plot max ms"] = max(xs)
    row["plot points kept"] = kept
    d.stop()
    per_job, per_point, size, tables = sizes(data, jobs + 1, points)
    row["bytes per job"] = per_job
    row[f"bytes per point ({' + '.join(tables)})"] = per_point
    row["file GiB"] = size / 2**30
    return row


version = subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.strip()
print(f"== {BIN}: {version}; {os.cpu_count()} cores, load {open('/proc/loadavg').read().split()[0]}",
      flush=True)
small = measure("small", SMALL_JOBS, POINTS // 100, LONG // 100)
big = measure("big", JOBS, POINTS, LONG)
print(f"\n{'':44} {f'{SMALL_JOBS} jobs':>14} {f'{JOBS} jobs':>14} {'ratio':>7}")
print(f"{'(points; of them the long job)':44} {f'{POINTS // 100}; {LONG // 100}':>14}"
      f" {f'{POINTS}; {LONG}':>14}")
for (k, a), b in zip(small.items(), big.values()):
    print(f"{k:44} {a:14.2f} {b:14.2f} {b / a if a else 0:7.2f}")
print("targets: big p99 <= 2x small p99; plot of 10,000,000 points < 200 ms; start-up unaffected")
PY
