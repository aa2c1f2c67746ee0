//! Versioned schema migrations, applied in order at start-up.
//!
//! The schema version lives in SQLite's `user_version`. Append new
//! migrations at the end; never edit one that has shipped. A database whose
//! version is beyond this list was written by a newer binary and is refused.

use rusqlite_migration::{HookError, HookResult, Migrations, M};

use crate::secrets::hash_token;

/// The migrations, oldest first (a function: hooks are not `const`).
fn list() -> Vec<M<'static>> {
    vec![
        M::up(
            r#"
CREATE TABLE jobs (
    id                TEXT PRIMARY KEY NOT NULL,   -- UUID v7, lowercase hyphenated
    user_id           TEXT NOT NULL,
    model_name        TEXT NOT NULL,
    framework         TEXT NOT NULL,
    dataset_s3_uri    TEXT NOT NULL,
    config            TEXT,                        -- JSON object or NULL
    status            TEXT NOT NULL,
    progress          REAL NOT NULL DEFAULT 0,
    message           TEXT,
    checkpoint_s3_uri TEXT,
    error             TEXT,
    created_at        TEXT NOT NULL,               -- RFC 3339, fixed width, sortable
    updated_at        TEXT NOT NULL,
    started_at        TEXT,
    completed_at      TEXT,
    callback_token    TEXT NOT NULL,
    last_sequence     INTEGER,
    runner            TEXT,
    exit_code         INTEGER,
    runner_state      TEXT                         -- runner-private JSON (pid, start time, …)
) STRICT;
CREATE INDEX jobs_newest ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_user_newest ON jobs (user_id, created_at DESC, id DESC);
CREATE INDEX jobs_status_newest ON jobs (status, created_at DESC, id DESC);

CREATE TABLE metrics (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    epoch      INTEGER NOT NULL,
    step       INTEGER,
    loss       REAL,
    accuracy   REAL,
    metrics    TEXT NOT NULL,                       -- the whole reported map, JSON
    created_at TEXT NOT NULL
) STRICT;
CREATE INDEX metrics_by_job ON metrics (job_id, id);
"#,
        ),
        // 2: a covering index for downsampling (`max_points`): the series
        // scan reads only this index instead of every full row (about 2.5x
        // faster on a 1,000,000-point history). It serves everything
        // metrics_by_job did, so that one goes.
        M::up(
            r#"
CREATE INDEX metrics_series ON metrics (job_id, id, COALESCE(loss, accuracy, epoch));
DROP INDEX metrics_by_job;
"#,
        ),
        // 3: callback tokens are kept only as their SHA-256, minted at launch
        // (NULL until then). Tokens of jobs created before keep working: they
        // are hashed in place before the plain column goes.
        M::up_with_hook(
            "ALTER TABLE jobs ADD COLUMN callback_token_hash TEXT;",
            hash_existing_tokens,
        ),
        // 4: job numbers, the short ids people type (`platform job get 42`).
        // Existing jobs are numbered in creation order; new ones get
        // MAX(number) + 1 in their insert (db/sqlite/jobs.rs). The column
        // stays nullable only because ALTER TABLE cannot add a NOT NULL
        // column without a default; every row has a number.
        M::up(
            r#"
ALTER TABLE jobs ADD COLUMN number INTEGER;
UPDATE jobs SET number = ordered.n
  FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY created_at, id) AS n FROM jobs) AS ordered
 WHERE jobs.id = ordered.id;
CREATE UNIQUE INDEX jobs_number ON jobs (number);
"#,
        ),
        // 5: scheduling policy (issue 14). Queues and priorities, the
        // retry policy and attempts, time limits, heartbeats, dependencies,
        // queue pauses. Old jobs land in `default` at priority 50; every job
        // that ever ran gets one attempt (its start, end, exit code and, if
        // it failed, its error), so `attempt` counts from there.
        M::up(
            r#"
ALTER TABLE jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 50;
ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN retry_policy TEXT;          -- JSON RetryPolicy or NULL
ALTER TABLE jobs ADD COLUMN max_duration_s REAL;
ALTER TABLE jobs ADD COLUMN max_pending_s REAL;
ALTER TABLE jobs ADD COLUMN heartbeat_timeout_s REAL;
ALTER TABLE jobs ADD COLUMN stale_after_s REAL;
ALTER TABLE jobs ADD COLUMN after_ids TEXT;             -- JSON array of job ids or NULL
ALTER TABLE jobs ADD COLUMN termination_reason TEXT;
ALTER TABLE jobs ADD COLUMN last_heartbeat_at TEXT;
ALTER TABLE jobs ADD COLUMN stalled_at TEXT;
ALTER TABLE jobs ADD COLUMN next_attempt_at TEXT;
CREATE INDEX jobs_queue_status ON jobs (queue, status);

CREATE TABLE job_attempts (
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt    INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    ended_at   TEXT,
    exit_code  INTEGER,
    reason     TEXT,
    counted    INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (job_id, attempt)
) STRICT;
INSERT INTO job_attempts (job_id, attempt, started_at, ended_at, exit_code, reason)
     SELECT id, 1, started_at, completed_at, exit_code,
            CASE WHEN status = 'failed' THEN error END
       FROM jobs WHERE started_at IS NOT NULL;
UPDATE jobs SET attempt = 1 WHERE started_at IS NOT NULL;

CREATE TABLE queue_state (
    name       TEXT PRIMARY KEY NOT NULL,
    paused     INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
) STRICT;

ALTER TABLE metrics ADD COLUMN attempt INTEGER;          -- NULL: before attempts (1)
"#,
        ),
        // 6: idempotent submit and webhooks (issue 16).
        //
        // A create's `Idempotency-Key` lives on its job, unique per owner
        // (one owner today: the API token; issue 15 fills in users), so the
        // check and the insert are one transaction. `request_fingerprint`
        // is the SHA-256 of the canonical body (a retry vs. a different
        // request). An expired key is cleared before its reuse.
        //
        // Webhook endpoints, and their deliveries: the outbox. A delivery
        // row is written in the transaction that changes a job's status;
        // a background worker claims due rows (`claimed_by` +
        // `claim_expires_at`, the shape `FOR UPDATE SKIP LOCKED` takes on
        // PostgreSQL), sends them with no transaction open, and records
        // each attempt.
        M::up(
            r#"
ALTER TABLE jobs ADD COLUMN idempotency_owner TEXT;
ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
ALTER TABLE jobs ADD COLUMN request_fingerprint TEXT;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (idempotency_owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY NOT NULL,   -- UUID v7
    url        TEXT NOT NULL,
    secret     TEXT NOT NULL,               -- whsec_<base64>; never listed
    format     TEXT NOT NULL,               -- json | slack
    events     TEXT,                        -- JSON array of event types; NULL = all
    frameworks TEXT,                        -- JSON array; NULL = all
    users      TEXT,                        -- JSON array; NULL = all
    source     TEXT NOT NULL,               -- api | config
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id       TEXT NOT NULL,         -- the webhook-id header: the same on every attempt
    webhook_id       TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    job_id           TEXT,
    event            TEXT NOT NULL,         -- job.running, job.completed, …
    payload          TEXT NOT NULL,         -- the event as JSON, fixed when it happened
    state            TEXT NOT NULL,         -- pending | delivered | failed
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    claimed_by       TEXT,
    claim_expires_at TEXT,
    last_status      INTEGER,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    finished_at      TEXT
) STRICT;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (webhook_id, id DESC);
"#,
        ),
        // 7: users, API tokens and the audit trail (issue 15). Tokens are
        // kept only as their SHA-256 (unique: one indexed read per lookup).
        // Jobs keep their free-text `user_id`; with auth on it is the
        // owner's user name.
        M::up(
            r#"
CREATE TABLE users (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    active     INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,                -- SHA-256, hex
    prefix       TEXT NOT NULL,                       -- first characters, for display
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    expires_at   TEXT,
    revoked_at   TEXT
) STRICT;
CREATE INDEX api_tokens_by_user ON api_tokens (user_id, created_at);

CREATE TABLE audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    user_name  TEXT,
    token_name TEXT,
    method     TEXT NOT NULL,
    path       TEXT NOT NULL,
    target     TEXT,
    status     INTEGER NOT NULL,
    remote     TEXT,
    request_id TEXT
) STRICT;
CREATE INDEX audit_by_user ON audit (user_name, id);
"#,
        ),
        // 8: sweeps (issue 19): one base job expanded into many; each job
        // names its sweep and carries a readable name, tags (a JSON
        // object) and a note.
        M::up(
            r#"
CREATE TABLE sweeps (
    id         TEXT PRIMARY KEY NOT NULL,   -- UUID v7
    user_id    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    spec       TEXT NOT NULL                -- JSON: method, parameters, count, seed
) STRICT;
CREATE INDEX sweeps_newest ON sweeps (created_at DESC, id DESC);
ALTER TABLE jobs ADD COLUMN tags TEXT;
ALTER TABLE jobs ADD COLUMN note TEXT;
ALTER TABLE jobs ADD COLUMN name TEXT;
ALTER TABLE jobs ADD COLUMN sweep_id TEXT REFERENCES sweeps (id);
CREATE INDEX jobs_by_sweep ON jobs (sweep_id) WHERE sweep_id IS NOT NULL;
"#,
        ),
        // 9: GPUs a job asks for and the ones its launch was given (JSON
        // list of {index, uuid}); its GPU telemetry, kept apart from its
        // training points (same columns, plus the series downsampling
        // keeps the extremes of: mean utilisation).
        M::up(
            r#"
ALTER TABLE jobs ADD COLUMN gpus INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN assigned_gpus TEXT;
CREATE TABLE system_metrics (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    epoch      INTEGER NOT NULL,
    step       INTEGER,
    loss       REAL,
    accuracy   REAL,
    metrics    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempt    INTEGER,
    series     REAL NOT NULL
) STRICT;
CREATE INDEX system_metrics_series ON system_metrics (job_id, id, series);
"#,
        ),
        // 10: PostgreSQL's leader lease table, unused here (SQLite is
        // single-node: `--leader-election lease` is refused with it), kept
        // so version 10 is one logical schema on both backends.
        M::up(
            r#"
CREATE TABLE leases (
    name       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_at TEXT NOT NULL
) STRICT;
"#,
        ),
        // 11: retention (issue 17). What `platform prune` removed from an
        // ended job, so a second prune skips it and `job get` says so:
        // when, how many points per series its history keeps (NULL:
        // whole; 0: deleted), whether its archived log and its artifacts
        // are gone. The index finds old ended jobs in the order prunes
        // page through them.
        M::up(
            r#"
ALTER TABLE jobs ADD COLUMN pruned_at TEXT;
ALTER TABLE jobs ADD COLUMN pruned_max_points INTEGER;
ALTER TABLE jobs ADD COLUMN logs_pruned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN artifacts_pruned INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_ended ON jobs (completed_at, id) WHERE completed_at IS NOT NULL;
"#,
        ),
        // 12: a restart looks for ended jobs whose trainer's exit was never
        // seen (`jobs::ended_unsettled`) in this partial index, which holds
        // only jobs with runner state and no exit code, instead of reading
        // every ended job: re-adoption does not grow with the history.
        M::up(
            r#"
CREATE INDEX jobs_unsettled ON jobs (runner, completed_at)
    WHERE runner_state IS NOT NULL AND exit_code IS NULL;
"#,
        ),
        // 13: points stored compactly, and long histories summarised
        // (issue 17; see db/sqlite/metrics.rs). `points` and
        // `system_points` replace `metrics` and `system_metrics`: the job
        // by its number, the time in microseconds, of the map only what the
        // columns do not hold. Every point is copied over (ids, and the id
        // sequence, kept); the newest-first indexes ascend (smaller).
        // `metric_blocks` is derived data, SQLite's alone:
        // `db migrate` does not copy it, PostgreSQL has none. The histories
        // already stored are summarised here, once.
        M::up_with_hook(
            r#"
CREATE TABLE points (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job      INTEGER NOT NULL REFERENCES jobs (number) ON DELETE CASCADE,
    epoch    INTEGER NOT NULL,
    step     INTEGER,
    loss     REAL,
    accuracy REAL,
    extra    TEXT,                -- JSON object of the keys not lifted, NULL if none
    lifted   INTEGER NOT NULL,    -- which keys the columns hold: 1 epoch, 2 step, 4 loss, 8 accuracy
    at       INTEGER NOT NULL,    -- microseconds since 1970, UTC
    attempt  INTEGER NOT NULL
) STRICT;
CREATE TABLE system_points (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job      INTEGER NOT NULL REFERENCES jobs (number) ON DELETE CASCADE,
    epoch    INTEGER NOT NULL,
    step     INTEGER,
    loss     REAL,
    accuracy REAL,
    extra    TEXT,
    lifted   INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    attempt  INTEGER NOT NULL,
    series   REAL NOT NULL
) STRICT;
CREATE TABLE metric_blocks (
    job       INTEGER NOT NULL REFERENCES jobs (number) ON DELETE CASCADE,
    first_id  INTEGER NOT NULL,
    last_id   INTEGER NOT NULL,
    points    INTEGER NOT NULL,
    min_id    INTEGER NOT NULL,
    min_value REAL NOT NULL,
    max_id    INTEGER NOT NULL,
    max_value REAL NOT NULL,
    PRIMARY KEY (job, first_id)
) STRICT, WITHOUT ROWID;
-- Newest-first lists scan these backwards. Declared DESC, every new job
-- went to the left end and split pages half full: twice the size.
DROP INDEX jobs_newest;
CREATE INDEX jobs_newest ON jobs (created_at, id);
DROP INDEX jobs_user_newest;
CREATE INDEX jobs_user_newest ON jobs (user_id, created_at, id);
DROP INDEX jobs_status_newest;
CREATE INDEX jobs_status_newest ON jobs (status, created_at, id);
DROP INDEX sweeps_newest;
CREATE INDEX sweeps_newest ON sweeps (created_at, id);
"#,
            compact_points,
        ),
    ]
}

fn hash_existing_tokens(tx: &rusqlite::Transaction<'_>) -> HookResult {
    let tokens: Vec<(String, String)> = tx
        .prepare("SELECT id, callback_token FROM jobs")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut update = tx.prepare("UPDATE jobs SET callback_token_hash = ?2 WHERE id = ?1")?;
    for (id, token) in tokens {
        update.execute([id, hash_token(&token)])?;
    }
    // Dropping the column rewrites the table; secure_delete zeroes the
    // pages that held the plain tokens instead of leaving them in free pages.
    tx.execute_batch(
        "PRAGMA secure_delete = ON; ALTER TABLE jobs DROP COLUMN callback_token; PRAGMA secure_delete = OFF;",
    )?;
    Ok(())
}

fn compact_points(tx: &rusqlite::Transaction<'_>) -> HookResult {
    let failed = |e: crate::db::DbError| HookError::Hook(e.to_string());
    // Indexes after the copy: built from sorted rows, not grown row by row.
    super::metrics::compact_old_rows(tx, false).map_err(failed)?;
    super::metrics::compact_old_rows(tx, true).map_err(failed)?;
    tx.execute_batch(
        r#"
UPDATE sqlite_sequence
   SET seq = MAX(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'metrics'))
 WHERE name = 'points' AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'metrics');
INSERT INTO sqlite_sequence (name, seq)
SELECT 'points', seq FROM sqlite_sequence WHERE name = 'metrics'
   AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'points');
UPDATE sqlite_sequence
   SET seq = MAX(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'system_metrics'))
 WHERE name = 'system_points' AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'system_metrics');
INSERT INTO sqlite_sequence (name, seq)
SELECT 'system_points', seq FROM sqlite_sequence WHERE name = 'system_metrics'
   AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'system_points');
DROP TABLE metrics;
DROP TABLE system_metrics;
CREATE INDEX points_series ON points (job, id, COALESCE(loss, accuracy, epoch));
CREATE INDEX system_points_series ON system_points (job, id, series);
"#,
    )?;
    let jobs: Vec<i64> = tx
        .prepare("SELECT DISTINCT job FROM points")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for job in jobs {
        super::metrics::settle(tx, job).map_err(failed)?;
    }
    Ok(())
}

/// The migration list, newest last.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(list())
}

/// The schema version this binary writes.
pub fn latest_version() -> usize {
    list().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory database, opened after SQLite's allocator is set (as
    /// `Db::open` does; the allocator's own test relies on every connection
    /// of this binary opening after it).
    fn memory() -> rusqlite::Connection {
        crate::db::sqlite::alloc::install();
        rusqlite::Connection::open_in_memory().unwrap()
    }

    /// Schema 13 moves every point into the compact tables: the API reads
    /// back exactly what it read before (maps number for number, times,
    /// ids, attempts), ids are never handed out twice, and long histories
    /// are summarised.
    #[test]
    fn points_move_to_the_compact_tables_unchanged() {
        use crate::model::{MetricFilter, Order};
        let mut c = memory();
        migrations().to_version(&mut c, 12).unwrap();
        let job = uuid::Uuid::now_v7();
        c.execute(
            "INSERT INTO jobs (id, number, user_id, model_name, framework, dataset_s3_uri, \
             status, created_at, updated_at) VALUES (?1, 7, 'u', 'm', 'demo', 's3://b/d/', \
             'completed', 't', 't')",
            [job.to_string()],
        )
        .unwrap();
        let maps = [
            (3, None, Some(0.5), None, r#"{"epoch":3,"loss":0.5}"#),
            (
                3,
                Some(12),
                Some(1.0),
                Some(2.0),
                r#"{"accuracy":2.0,"epoch":3.0,"loss":1,"step":12}"#,
            ),
            (0, None, Some(-0.0), None, r#"{"loss":-0.0,"mAP50":0.25}"#),
            (0, None, None, None, r#"{}"#),
        ];
        let mut insert = c
            .prepare(
                "INSERT INTO metrics (job_id, epoch, step, loss, accuracy, metrics, created_at, \
                 attempt) VALUES (?1, ?2, ?3, ?4, ?5, ?6, '2025-03-04T05:06:07.123456Z', ?7)",
            )
            .unwrap();
        for (i, (epoch, step, loss, accuracy, map)) in maps.iter().enumerate() {
            let attempt = if i == 0 { None } else { Some(2) };
            insert
                .execute(rusqlite::params![
                    job.to_string(),
                    epoch,
                    step,
                    loss,
                    accuracy,
                    map,
                    attempt
                ])
                .unwrap();
        }
        for i in 0..2100 {
            insert
                .execute(rusqlite::params![
                    job.to_string(),
                    i / 100,
                    i,
                    1.0 / f64::from(i + 1),
                    None::<f64>,
                    format!(r#"{{"loss":{},"lr":0.1}}"#, 1.0 / f64::from(i + 1)),
                    1
                ])
                .unwrap();
        }
        drop(insert);
        c.execute(
            "INSERT INTO system_metrics (job_id, epoch, metrics, created_at, attempt, series) \
             VALUES (?1, 0, '{\"gpu0.util\":93}', '2025-03-04T05:06:07.000001Z', 1, 93.0)",
            [job.to_string()],
        )
        .unwrap();
        // The newest point was deleted: its id must not come back.
        c.execute(
            "UPDATE sqlite_sequence SET seq = seq + 5 WHERE name = 'metrics'",
            [],
        )
        .unwrap();
        let seq: i64 = c
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'metrics'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let filter = |system| MetricFilter {
            limit: 10_000,
            order: Order::Asc,
            after_id: None,
            max_points: None,
            system,
        };
        let before: Vec<(i64, String, String, Option<f64>, u32)> = c
            .prepare("SELECT id, metrics, created_at, loss, COALESCE(attempt, 1) FROM metrics ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();

        migrations().to_latest(&mut c).unwrap();
        let after = super::super::metrics::list(&c, job, &filter(false))
            .unwrap()
            .unwrap();
        assert_eq!(after.len(), before.len());
        for (m, (id, map, at, loss, attempt)) in after.iter().zip(&before) {
            let want: serde_json::Value = serde_json::from_str(map).unwrap();
            assert_eq!(
                (
                    m.id,
                    serde_json::to_string(&m.metrics).unwrap(),
                    m.loss,
                    m.attempt
                ),
                (*id, serde_json::to_string(&want).unwrap(), *loss, *attempt)
            );
            assert_eq!(crate::db::ts(&m.created_at), *at);
        }
        let gpu = super::super::metrics::list(&c, job, &filter(true))
            .unwrap()
            .unwrap();
        assert_eq!(
            serde_json::to_string(&gpu[0].metrics).unwrap(),
            r#"{"gpu0.util":93}"#
        );
        assert!(
            c.prepare("SELECT 1 FROM metrics").is_err(),
            "the old table is gone"
        );
        let blocks: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM metric_blocks WHERE job = 7",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(blocks, 2, "2,104 points: two whole blocks");
        c.execute(
            "INSERT INTO points (job, epoch, lifted, at, attempt) VALUES (7, 0, 0, 0, 1)",
            [],
        )
        .unwrap();
        assert_eq!(
            c.last_insert_rowid(),
            seq + 1,
            "ids go on after the old sequence"
        );
    }

    /// Newest-first lists read the ascending indexes backwards: no sort.
    #[test]
    fn newest_first_lists_walk_an_index_without_sorting() {
        let mut c = memory();
        migrations().to_latest(&mut c).unwrap();
        for (filter, index) in [
            ("", "jobs_newest"),
            ("AND status = 'failed'", "jobs_status_newest"),
            ("AND user_id = 'u'", "jobs_user_newest"),
        ] {
            let plan: Vec<String> = c
                .prepare(&format!(
                    "EXPLAIN QUERY PLAN SELECT * FROM jobs WHERE 1 = 1 {filter} \
                     ORDER BY created_at DESC, id DESC LIMIT 50 OFFSET 0"
                ))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter().any(|s| s.contains(index))
                    && !plan.iter().any(|s| s.contains("TEMP B-TREE")),
                "{filter}: {plan:?}"
            );
        }
    }

    #[test]
    fn migrations_are_valid() {
        assert!(migrations().validate().is_ok());
    }

    #[test]
    fn a_restart_finds_unsettled_jobs_without_reading_every_ended_job() {
        let mut c = memory();
        migrations().to_latest(&mut c).unwrap();
        let plan: Vec<String> = c
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE {}",
                super::super::jobs::UNSETTLED
            ))
            .unwrap()
            .query_map(["subprocess", "2025-01-01"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX jobs_unsettled")),
            "{plan:?}"
        );
    }

    #[test]
    fn tokens_of_existing_jobs_are_hashed_and_the_plain_column_is_gone() {
        let mut c = memory();
        Migrations::new(list().into_iter().take(2).collect())
            .to_latest(&mut c)
            .unwrap();
        c.execute(
            "INSERT INTO jobs (id, user_id, model_name, framework, dataset_s3_uri, status, \
             created_at, updated_at, callback_token) VALUES ('j', 'u', 'm', 'demo', 's3://b/d', \
             'running', 't', 't', 'the-plain-token')",
            [],
        )
        .unwrap();
        migrations().to_latest(&mut c).unwrap();
        let hash: String = c
            .query_row("SELECT callback_token_hash FROM jobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(hash, hash_token("the-plain-token"));
        assert!(c.prepare("SELECT callback_token FROM jobs").is_err());
    }

    #[test]
    fn old_jobs_get_defaults_and_one_attempt_if_they_ran() {
        let mut c = memory();
        super::migrations().to_version(&mut c, 4).unwrap();
        for (id, status, started) in [
            ("a", "pending", None),
            ("b", "failed", Some("2025-01-01T00:00:01.000000Z")),
        ] {
            c.execute(
                "INSERT INTO jobs (id, user_id, model_name, framework, dataset_s3_uri, status, \
                 created_at, updated_at, started_at, completed_at, exit_code, error, number) \
                 VALUES (?1, 'u', 'm', 'demo', 's3://b/d/', ?2, 't', 't', ?3, ?3, 3, 'boom', \
                 (SELECT COALESCE(MAX(number), 0) + 1 FROM jobs))",
                rusqlite::params![id, status, started],
            )
            .unwrap();
        }
        super::migrations().to_latest(&mut c).unwrap();
        let rows: Vec<(String, String, i64, i64)> = c
            .prepare("SELECT id, queue, priority, attempt FROM jobs ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            rows,
            [
                ("a".to_string(), "default".to_string(), 50, 0),
                ("b".to_string(), "default".to_string(), 50, 1),
            ]
        );
        let attempt: (String, i64, Option<i64>, Option<String>) = c
            .query_row(
                "SELECT job_id, attempt, exit_code, reason FROM job_attempts",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(attempt, ("b".into(), 1, Some(3), Some("boom".into())));
    }

    #[test]
    fn jobs_from_before_sweeps_have_no_tags_note_name_or_sweep() {
        let mut c = memory();
        super::migrations().to_version(&mut c, 7).unwrap();
        c.execute(
            "INSERT INTO jobs (id, user_id, model_name, framework, dataset_s3_uri, status, \
             created_at, updated_at, number) VALUES ('j', 'u', 'm', 'demo', 's3://b/d/', \
             'pending', 't', 't', 1)",
            [],
        )
        .unwrap();
        super::migrations().to_latest(&mut c).unwrap();
        let row: (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = c
            .query_row("SELECT tags, note, name, sweep_id FROM jobs", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .unwrap();
        assert_eq!(row, (None, None, None, None));
        // A sweep id must name a stored sweep.
        c.pragma_update(None, "foreign_keys", "ON").unwrap();
        assert!(c
            .execute("UPDATE jobs SET sweep_id = 'nope' WHERE id = 'j'", [])
            .is_err());
    }

    #[test]
    fn existing_jobs_are_numbered_in_creation_order() {
        let mut c = memory();
        super::migrations().to_version(&mut c, 2).unwrap();
        // Out of insertion order on purpose; two share a creation time.
        for (id, created) in [
            (
                "0190000c-0000-7000-8000-000000000000",
                "2025-01-01T00:00:03.000000Z",
            ),
            (
                "0190000a-0000-7000-8000-000000000000",
                "2025-01-01T00:00:01.000000Z",
            ),
            (
                "0190000b-0000-7000-8000-00000000000b",
                "2025-01-01T00:00:02.000000Z",
            ),
            (
                "0190000b-0000-7000-8000-00000000000a",
                "2025-01-01T00:00:02.000000Z",
            ),
        ] {
            c.execute(
                "INSERT INTO jobs (id, user_id, model_name, framework, dataset_s3_uri, status, \
                 created_at, updated_at, callback_token) \
                 VALUES (?1, 'u', 'm', 'demo', 's3://b/d/', 'pending', ?2, ?2, 't')",
                [id, created],
            )
            .unwrap();
        }
        super::migrations().to_latest(&mut c).unwrap();
        let numbered: Vec<(i64, String)> = c
            .prepare("SELECT number, id FROM jobs ORDER BY number")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            numbered,
            [
                (1, "0190000a-0000-7000-8000-000000000000".to_string()),
                (2, "0190000b-0000-7000-8000-00000000000a".to_string()),
                (3, "0190000b-0000-7000-8000-00000000000b".to_string()),
                (4, "0190000c-0000-7000-8000-000000000000".to_string()),
            ]
        );
        // Numbers are unique.
        assert!(c
            .execute(
                "UPDATE jobs SET number = 1 WHERE id = '0190000c-0000-7000-8000-000000000000'",
                [],
            )
            .is_err());
    }
}
