//! A throwaway PostgreSQL cluster for a test binary: `initdb` + `pg_ctl`
//! on a temporary directory and a free loopback port, started on first
//! use, one fresh database per caller, stopped when the test binary exits.
//!
//! The cluster runs with `fsync=off` (tests kill daemons, never the
//! server, so the server's own crash safety is not under test, and it is
//! several times faster on this machine); `synchronous_commit` stays `on`,
//! so a commit is acknowledged exactly as in production.
//!
//! Stopping: an `atexit` hook runs `pg_ctl stop` when the test binary
//! exits normally, and a watchdog process stops the cluster if the binary
//! dies any other way, so no postmaster outlives `cargo test`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// `PLATFORM_TEST_BACKEND=postgres`: daemons of the harness use PostgreSQL.
pub fn enabled() -> bool {
    std::env::var("PLATFORM_TEST_BACKEND").is_ok_and(|v| v == "postgres")
}

/// Says why a SQLite-only test does not run on PostgreSQL; true when it
/// should return early.
pub fn skip_sqlite_only(reason: &str) -> bool {
    if enabled() {
        eprintln!("skipped on PostgreSQL: {reason}");
        return true;
    }
    false
}

/// A running cluster.
pub struct Cluster {
    /// Holds the data directory, the socket and the log.
    pub dir: PathBuf,
    /// The loopback port it listens on.
    pub port: u16,
    bin: PathBuf,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// The directory of the PostgreSQL server binaries.
pub fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .filter(|b| b.join("initdb").is_file())
        .expect("PostgreSQL server binaries (apt-get install postgresql)")
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root
/// (`initdb` and `postgres` refuse to run as root).
pub fn as_postgres(bin: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A fresh temporary directory the `postgres` user owns.
pub fn postgres_dir(prefix: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
        .keep();
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(status.success());
    }
    dir
}

/// `initdb` into `dir/data` (user `platform`, trust on loopback, plus a
/// password for `platform` when `password` is given and
/// `scram-sha-256` host authentication then).
pub fn initdb(bin: &Path, dir: &Path, password: Option<&str>) {
    let mut cmd = as_postgres(bin, "initdb");
    cmd.arg("-D")
        .arg(dir.join("data"))
        .args(["-U", "platform", "-E", "UTF8", "--locale", "C.UTF-8", "-N"]);
    match password {
        Some(pw) => {
            let file = dir.join("pwfile");
            std::fs::write(&file, pw).unwrap();
            if is_root() {
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&file)
                    .status()
                    .unwrap();
            }
            cmd.arg("--pwfile")
                .arg(&file)
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"]);
        }
        None => {
            cmd.arg("--auth=trust");
        }
    }
    let out = cmd.stdout(Stdio::null()).output().expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pg_ctl start` on `port`, with `extra` server settings.
pub fn start(bin: &Path, dir: &Path, port: u16, extra: &[&str]) {
    let mut opts = format!(
        "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c full_page_writes=off \
         -c max_connections=400 -c shared_buffers=32MB",
        dir.display()
    );
    for e in extra {
        opts.push_str(&format!(" -c {e}"));
    }
    let out = as_postgres(bin, "pg_ctl")
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-l")
        .arg(dir.join("log"))
        .args(["-w", "-t", "60", "-o", &opts, "start"])
        .stdout(Stdio::null())
        .output()
        .expect("run pg_ctl start");
    assert!(
        out.status.success(),
        "pg_ctl start failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join("log")).unwrap_or_default()
    );
}

/// `pg_ctl stop` (fast by default; `immediate` to simulate a crash).
pub fn stop(bin: &Path, dir: &Path, mode: &str) {
    let _ = as_postgres(bin, "pg_ctl")
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-m", mode, "-w", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops the cluster when `pid` (the test binary) is gone, however it
/// ended; also removes the directory.
fn watchdog(bin: &Path, dir: &Path, pid: u32) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         runuser -u postgres -- {ctl} -D {data} -m immediate -w stop >/dev/null 2>&1 || \
         {ctl} -D {data} -m immediate -w stop >/dev/null 2>&1; rm -rf {dir}",
        ctl = bin.join("pg_ctl").display(),
        data = dir.join("data").display(),
        dir = dir.display(),
    );
    let _ = Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

extern "C" {
    fn atexit(cb: extern "C" fn()) -> std::os::raw::c_int;
}

extern "C" fn stop_at_exit() {
    if let Some(c) = CLUSTER.get() {
        stop(&c.bin, &c.dir, "fast");
        let _ = std::fs::remove_dir_all(&c.dir);
    }
}

/// The test binary's shared cluster, started on first use.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let c = Cluster::start(None, &[]);
        // SAFETY: registers a plain function; it only reads a static.
        unsafe {
            atexit(stop_at_exit);
        }
        c
    })
}

impl Drop for Cluster {
    fn drop(&mut self) {
        stop(&self.bin, &self.dir, "fast");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cluster {
    /// A cluster of the caller's own (stopped when dropped), e.g. to stop
    /// it under a daemon or to run it with TLS: `password` for the
    /// `platform` user (then host connections need it), `extra` settings.
    pub fn start(password: Option<&str>, extra: &[&str]) -> Cluster {
        let bin = bin_dir();
        let dir = postgres_dir("platform-pg-");
        initdb(&bin, &dir, password);
        let port = free_port();
        start(&bin, &dir, port, extra);
        watchdog(&bin, &dir, std::process::id());
        Cluster { dir, port, bin }
    }

    /// Runs one SQL statement as `platform` on database `db` (over the
    /// Unix socket, which trusts local users).
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-U", "platform", "-d", db, "-XAtq", "-c", sql])
            .arg("-h")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .env_remove("PGPASSWORD")
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A new, empty database: its URL.
    pub fn fresh_database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        self.sql(
            "postgres",
            &format!("CREATE DATABASE {name} TEMPLATE template0"),
        );
        format!(
            "postgresql://platform@127.0.0.1:{}/{name}?sslmode=disable",
            self.port
        )
    }

    /// Stops the server (`fast`); [`Cluster::resume`] starts it again on
    /// the same port.
    pub fn pause(&self) {
        stop(&self.bin, &self.dir, "fast");
    }

    /// Starts the server again after [`Cluster::pause`].
    pub fn resume(&self) {
        start(&self.bin, &self.dir, self.port, &[]);
    }
}
