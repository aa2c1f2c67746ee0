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
    last_sequence     INTEGER,
    runner            TEXT,
    exit_code         INTEGER,
    runner_state      TEXT                         -- runner-private JSON (pid, start time, …)
, callback_token_hash TEXT, number INTEGER, queue TEXT NOT NULL DEFAULT 'default', priority INTEGER NOT NULL DEFAULT 50, attempt INTEGER NOT NULL DEFAULT 0, retry_policy TEXT, max_duration_s REAL, max_pending_s REAL, heartbeat_timeout_s REAL, stale_after_s REAL, after_ids TEXT, termination_reason TEXT, last_heartbeat_at TEXT, stalled_at TEXT, next_attempt_at TEXT, idempotency_owner TEXT, idempotency_key TEXT, request_fingerprint TEXT, tags TEXT, note TEXT, name TEXT, sweep_id TEXT REFERENCES sweeps (id), gpus INTEGER NOT NULL DEFAULT 0, assigned_gpus TEXT, pruned_at TEXT, pruned_max_points INTEGER, logs_pruned INTEGER NOT NULL DEFAULT 0, artifacts_pruned INTEGER NOT NULL DEFAULT 0) STRICT;
CREATE TABLE leases (
    name       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_at TEXT NOT NULL
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
CREATE TABLE queue_state (
    name       TEXT PRIMARY KEY NOT NULL,
    paused     INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
) STRICT;
CREATE TABLE sweeps (
    id         TEXT PRIMARY KEY NOT NULL,   -- UUID v7
    user_id    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    spec       TEXT NOT NULL                -- JSON: method, parameters, count, seed
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
CREATE TABLE users (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    active     INTEGER NOT NULL DEFAULT 1,
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
CREATE INDEX api_tokens_by_user ON api_tokens (user_id, created_at);
CREATE INDEX audit_by_user ON audit (user_name, id);
CREATE INDEX jobs_by_sweep ON jobs (sweep_id) WHERE sweep_id IS NOT NULL;
CREATE INDEX jobs_ended ON jobs (completed_at, id) WHERE completed_at IS NOT NULL;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (idempotency_owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_newest ON jobs (created_at, id);
CREATE UNIQUE INDEX jobs_number ON jobs (number);
CREATE INDEX jobs_queue_status ON jobs (queue, status);
CREATE INDEX jobs_status_newest ON jobs (status, created_at, id);
CREATE INDEX jobs_unsettled ON jobs (runner, completed_at)
    WHERE runner_state IS NOT NULL AND exit_code IS NULL;
CREATE INDEX jobs_user_newest ON jobs (user_id, created_at, id);
CREATE INDEX points_series ON points (job, id, COALESCE(loss, accuracy, epoch));
CREATE INDEX sweeps_newest ON sweeps (created_at, id);
CREATE INDEX system_points_series ON system_points (job, id, series);
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (webhook_id, id DESC);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
