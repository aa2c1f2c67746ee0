//! Test harness: starts the real `platform` binary on an ephemeral port
//! with its own temporary data directory, and runs the CLI against it.
//!
//! Every integration test talks HTTP to a real daemon process; nothing here
//! is mocked.
#![allow(dead_code)]

pub mod api;
pub mod pg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_platform"))
}

/// A running daemon.
pub struct Daemon {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The daemon's data directory (database, local store, logs).
    pub data_dir: PathBuf,
    /// Keeps the temporary directory alive.
    _tmp: Option<Arc<tempfile::TempDir>>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// Everything the daemon wrote to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Disconnects when the log reader has read the daemon's last line.
    log_done: Option<mpsc::Receiver<()>>,
    bind: String,
    /// Where the stand-in trainer of a capturing daemon writes each job's
    /// callback token (see [`Opts::capturing`]).
    pub tokens: Option<PathBuf>,
    open_files: Option<(u64, u64)>,
}

/// Options for [`Daemon::start_with`].
#[derive(Default, Clone)]
pub struct Opts {
    /// Extra `serve` flags.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub envs: Vec<(String, String)>,
    /// Reuse this data directory instead of a fresh one.
    pub data_dir: Option<PathBuf>,
    /// See [`Opts::capturing`].
    pub capture: bool,
    /// Start the daemon with this open-files limit (soft, hard).
    pub open_files: Option<(u64, u64)>,
}

impl Opts {
    /// Adds `--hold-jobs`: jobs are accepted but never launched, so tests of
    /// the API itself see them stay `pending` until they move them.
    pub fn held(mut self) -> Self {
        self.args.push("--hold-jobs".into());
        self
    }
}

impl Opts {
    /// Jobs launch at once (no concurrency limit), running a stand-in for
    /// the `demo` trainer that writes its `CALLBACK_TOKEN` where the test
    /// can read it ([`Daemon::tokens`]) and then waits. The daemon keeps
    /// only a hash of each token and mints it at launch, so this is how a
    /// test gets what a real trainer has: tests then drive the `running`
    /// job through its trainer routes as the trainer would.
    pub fn capturing(mut self) -> Self {
        self.capture = true;
        self
    }
}

/// The stand-in trainer of [`Opts::capturing`] (argv, no shell of the daemon's).
const CAPTURE_TRAINER: &str = r#"[trainers.demo]
command = ["sh", "-c", 'printf %s "$CALLBACK_TOKEN" > "$CAPTURE_DIR/$JOB_ID.tmp" && mv "$CAPTURE_DIR/$JOB_ID.tmp" "$CAPTURE_DIR/$JOB_ID" && exec sleep 600']
"#;

impl Daemon {
    /// A daemon whose jobs launch a token-capturing stand-in trainer (see
    /// [`Opts::capturing`]).
    pub fn capturing() -> Daemon {
        Self::start_with(Opts::default().capturing())
    }

    /// A daemon that holds jobs `pending` (see [`Opts::held`]).
    pub fn held() -> Daemon {
        Self::start_with(Opts::default().held())
    }

    /// A daemon with default settings.
    pub fn start() -> Daemon {
        Self::start_with(Opts::default())
    }

    /// A daemon with extra flags and environment.
    pub fn start_with(opts: Opts) -> Daemon {
        let (tmp, data_dir) = match opts.data_dir {
            Some(d) => (None, d),
            None => {
                let t = Arc::new(tempfile::tempdir().expect("create temp dir"));
                let d = t.path().join("data");
                (Some(t), d)
            }
        };
        let mut args = opts.args;
        let mut envs = opts.envs;
        let chosen = envs.iter().any(|(k, _)| k == "DATABASE_URL")
            || args.iter().any(|a| a.starts_with("--database-url"));
        if pg::enabled() && !chosen {
            envs.push(("DATABASE_URL".into(), pg::cluster().fresh_database()));
        }
        let mut tokens = None;
        if opts.capture {
            let base = data_dir.parent().unwrap_or(Path::new("/tmp")).to_path_buf();
            let dir = base.join("capture").join("tokens");
            std::fs::create_dir_all(&dir).expect("create the token capture dir");
            let file = base.join("capture").join("trainers.toml");
            let entry = format!(
                "{CAPTURE_TRAINER}env = {{ CAPTURE_DIR = {:?} }}\n",
                dir.display().to_string()
            );
            std::fs::write(&file, entry).expect("write the capture trainers file");
            args.extend([
                "--trainers".into(),
                file.display().to_string(),
                "--max-concurrent-jobs".into(),
                "0".into(),
            ]);
            tokens = Some(dir);
        }
        let mut d = Daemon {
            child: None,
            url: String::new(),
            data_dir,
            _tmp: tmp,
            args,
            envs,
            log: Arc::new(Mutex::new(Vec::new())),
            log_done: None,
            bind: "127.0.0.1:0".into(),
            tokens,
            open_files: opts.open_files,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .arg("--bind")
            .arg(&self.bind)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.data_dir.parent().unwrap_or(Path::new("/tmp")))
            .env("RUST_LOG", "info")
            // Tests create jobs with made-up dataset URIs; storage tests turn the check back on.
            .env("DATASET_CHECK", "off")
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.data_dir.parent().unwrap_or(Path::new("/tmp")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        std::fs::create_dir_all(&self.data_dir).expect("create data dir");
        if let Some((soft, hard)) = self.open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches no memory
            // of the parent.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        soft,
                        hard,
                    )
                    .map_err(std::io::Error::from)
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn platform serve");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel::<String>();
        let log = self.log.clone();
        let (done, log_done) = mpsc::channel::<()>();
        self.log_done = Some(log_done);
        std::thread::spawn(move || {
            let _done = done;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    let rest = &line[i + "listening on ".len()..];
                    let url = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(url);
                }
                log.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => {
                // Restarts reuse the port so URLs handed to trainers stay valid.
                self.bind = url.trim_start_matches("http://").to_string();
                self.url = url;
            }
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "daemon did not start:\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
        }
        self.child = Some(child);
    }

    /// Sends SIGKILL and waits for the process to disappear.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits (up to 20 s) for a clean exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let code = terminate(&mut c);
        // The process is gone, but its last lines may still be in the pipe.
        if let Some(done) = self.log_done.take() {
            let _ = done.recv_timeout(Duration::from_secs(5));
        }
        code
    }

    /// Starts the daemon again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Runs the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_env(args, &[])
    }

    /// Runs the CLI against this daemon with extra environment.
    pub fn cli_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        self.cli_command(args, envs)
            .output()
            .expect("run platform CLI")
    }

    /// The CLI command line [`Daemon::cli_env`] runs, for tests that need
    /// to spawn it and read its output while it runs.
    pub fn cli_command(&self, args: &[&str], envs: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.data_dir.parent().unwrap_or(Path::new("/tmp")))
            .env("PLATFORM_SERVER", &self.url)
            .env("USER", "tester")
            .envs(envs.iter().copied())
            .stdin(Stdio::null());
        cmd
    }

    /// The daemon's PostgreSQL database (on the test cluster), if it uses one.
    pub fn pg_database(&self) -> Option<String> {
        let (_, url) = self.envs.iter().find(|(k, _)| k == "DATABASE_URL")?;
        let rest = url.strip_prefix("postgresql://")?;
        let path = rest.split('?').next()?;
        Some(path.rsplit('/').next()?.to_string())
    }

    /// Runs one SQL statement on the daemon's database, whichever backend
    /// (values inlined by the caller; tests only): the rows as lines of
    /// `|`-separated text.
    pub fn sql(&self, sql: &str) -> String {
        if let Some(db) = self.pg_database() {
            return pg::cluster().sql(&db, sql);
        }
        let c = rusqlite::Connection::open(self.data_dir.join("platform.db"))
            .expect("open the daemon's database");
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        let mut stmt = c.prepare(sql).expect("prepare");
        let n = stmt.column_count();
        let mut rows = stmt.query([]).expect("query");
        let mut lines = Vec::new();
        while let Some(row) = rows.next().expect("row") {
            let cols: Vec<String> = (0..n)
                .map(
                    |i| match row.get::<_, rusqlite::types::Value>(i).expect("column") {
                        rusqlite::types::Value::Null => String::new(),
                        rusqlite::types::Value::Integer(v) => v.to_string(),
                        rusqlite::types::Value::Real(v) => v.to_string(),
                        rusqlite::types::Value::Text(v) => v,
                        rusqlite::types::Value::Blob(v) => format!("{v:?}"),
                    },
                )
                .collect();
            lines.push(cols.join("|"));
        }
        lines.join("\n")
    }

    /// The full log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// An async HTTP client: one per test binary (building one loads the
    /// TLS roots, tenths of a second in a debug build: a test that made
    /// one per request sent its first requests only after the daemon's
    /// header timeout), keeping no idle connections, so every request
    /// opens its own as with a fresh client, and nothing pooled outlives a
    /// test's runtime or a restarted daemon.
    pub fn http(&self) -> reqwest::Client {
        static CLIENT: std::sync::LazyLock<reqwest::Client> = std::sync::LazyLock::new(|| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("an HTTP client")
        });
        CLIENT.clone()
    }

    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// `GET path` as text (panics on transport errors).
    pub async fn get_text(&self, path: &str) -> String {
        self.http()
            .get(self.at(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path`, decoded as JSON (panics on transport or decode errors).
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.http()
            .get(self.at(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        // Trainers outlive their daemon by design (a restarted daemon
        // re-adopts them); at the end of a test nothing will, so stop them.
        let Ok(runs) = std::fs::read_dir(self.data_dir.join("runs")) else {
            return;
        };
        for run in runs.flatten() {
            let Ok(text) = std::fs::read_to_string(run.path().join("state.json")) else {
                continue;
            };
            let Ok(state) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            for (key, group) in [("trainer_pid", true), ("supervisor_pid", false)] {
                if let Some(pid) = state[key].as_i64() {
                    let target = if group { -pid } else { pid };
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(target as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// Sends SIGTERM to a daemon process and waits (up to 20 s) for a clean
/// exit; returns the exit status code.
pub fn terminate(c: &mut Child) -> Option<i32> {
    unsafe_kill(c.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = c.try_wait() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            panic!("daemon did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Stdout of a CLI run as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr of a CLI run as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A create body for the built-in `demo` framework.
pub fn demo_job(config: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "user_id": "alice",
        "model_name": "yolo11n",
        "framework": "demo",
        "dataset_s3_uri": "s3://bucket/datasets/coco128/",
        "config": config,
    })
}
