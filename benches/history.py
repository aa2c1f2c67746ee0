"""A big history written straight into a data dir's SQLite file, for the
benches that measure what history size does (idle.sh: start-up and memory;
scale.sh: reads at a million jobs). The binary creates the schema first
(start and stop it on the empty data dir); this fills it in SQL, far faster
than the API could.

fill(db, jobs, points) adds `jobs` finished jobs, a second apart from 2020
on, across 50 users (`user0`…`user49`), each with its one attempt; about
5 % failed and 3 % cancelled, the rest completed. `points` training points
go to the newest 1,000 jobs, each job's points consecutive (as a trainer
reports them), `{"loss": …, "mAP50": 0.5}` each, in the compact layout of
schema 13 (see src/db/sqlite/metrics.rs: the loss lifted into its column).
"""

import sqlite3
import time

POINT_JOBS = 1000


def job_id(i):
    """The id of generated job `i` (1-based)."""
    return f"00000000-0000-7000-8000-{i:012x}"


def fill(db_path, jobs, points):
    db = sqlite3.connect(db_path)
    db.executescript(f"""
PRAGMA journal_mode = WAL;
PRAGMA synchronous = OFF;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {jobs})
INSERT INTO jobs (id, number, user_id, model_name, framework, dataset_s3_uri, config, status,
                  progress, created_at, updated_at, started_at, completed_at, attempt, runner,
                  exit_code)
SELECT printf('00000000-0000-7000-8000-%012x', i), i, 'user' || (i % 50), 'yolo11n', 'demo',
       's3://bucket/datasets/coco128/', '{{"epochs":100,"batch":16,"lr":0.001,"i":' || i || '}}',
       CASE WHEN i % 20 = 0 THEN 'failed' WHEN i % 33 = 0 THEN 'cancelled' ELSE 'completed' END,
       1.0, t || '.000000Z', t || '.500000Z', t || '.100000Z', t || '.500000Z', 1, 'subprocess',
       CASE WHEN i % 20 = 0 THEN 1 ELSE 0 END
  FROM (SELECT i, strftime('%Y-%m-%dT%H:%M:%S', 1577836800 + i, 'unixepoch') AS t FROM n);
INSERT INTO job_attempts (job_id, attempt, started_at, ended_at, exit_code, reason)
SELECT id, 1, started_at, completed_at, exit_code, NULL FROM jobs;
COMMIT;
""")
    owners = min(POINT_JOBS, jobs)
    per_job = points // owners if owners else 0
    # One transaction per job: each job's points are consecutive.
    for k in range(owners if per_job else 0):
        db.executescript(f"""
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {per_job})
INSERT INTO points (job, epoch, step, loss, accuracy, extra, lifted, at, attempt)
SELECT {jobs - owners + 1 + k}, i / 1000, i, 1.0 / i, NULL, '{{"mAP50":0.5}}', 4,
       1704067200000000, 1
  FROM n;
COMMIT;
""")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def sizes(db_path):
    """Bytes per table and index (dbstat), by name."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    out = dict(db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"))
    db.close()
    return out


def timed_fill(db_path, jobs, points, say=print):
    t = time.perf_counter()
    fill(db_path, jobs, points)
    say(f"   filled {jobs} jobs and {points} points in {time.perf_counter() - t:.0f} s")
