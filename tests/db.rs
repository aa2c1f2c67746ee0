//! The database file itself: `platform db check`, and the check
//! `platform serve` runs before it starts on a file. Damage is made the way
//! it happens: garbage written into the pages of a copy of a real database.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::api::{create, job_body, serve_outcome_in, spawn_serve_in};
use common::{eventually, stderr, stdout, Daemon, Opts};
use serde_json::json;

/// `platform db check ARGS…` (no daemon needed).
fn db_check(args: &[&str]) -> Output {
    std::process::Command::new(common::bin())
        .args(["db", "check"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap()
}

/// A real database with enough rows to span many pages, closed cleanly
/// (its WAL checkpointed into the file).
async fn real_database() -> Daemon {
    let mut d = Daemon::held();
    let blob = "c".repeat(4000);
    for i in 0..40 {
        let mut body = job_body("alice");
        body["config"] = json!({"blob": blob, "i": i});
        create(&d, &body).await;
    }
    assert_eq!(d.terminate(), Some(0));
    d
}

/// A data directory (in the returned temporary one) holding a copy of
/// [`real_database`]'s file, to damage without touching the original.
async fn copy_of_real_database() -> (tempfile::TempDir, PathBuf) {
    let d = real_database().await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(d.data_dir.join("platform.db"), data.join("platform.db")).unwrap();
    (tmp, data)
}

/// Overwrites the middle of every page but the first with garbage.
fn damage(file: &Path) {
    const PAGE: u64 = 4096;
    let len = std::fs::metadata(file).unwrap().len();
    assert!(len >= 8 * PAGE, "the database spans pages: {len} bytes");
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    for page in 2..len / PAGE {
        f.seek(SeekFrom::Start(page * PAGE + 512)).unwrap();
        f.write_all(&[0xA5; 1024]).unwrap();
    }
    f.sync_all().unwrap();
}

#[tokio::test]
async fn db_check_says_ok_for_a_sound_database_and_names_damage() {
    let d = real_database().await;
    let data = d.data_dir.to_str().unwrap();
    let o = db_check(&["--data-dir", data]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "ok\n");

    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("copy.db");
    std::fs::copy(d.data_dir.join("platform.db"), &copy).unwrap();
    damage(&copy);
    let url = format!("sqlite:///{}", copy.display());
    let o = db_check(&["--database-url", &url]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(!stdout(&o).trim().is_empty(), "lists what is wrong");
    assert_ne!(stdout(&o), "ok\n");
    let err = stderr(&o);
    assert!(
        err.contains("is damaged") && err.contains(copy.to_str().unwrap()),
        "{err}"
    );

    // The check only reads: the damaged file is left exactly as it was.
    let before = std::fs::read(&copy).unwrap();
    db_check(&["--database-url", &url]);
    assert!(std::fs::read(&copy).unwrap() == before);

    let o = db_check(&["--data-dir", tmp.path().join("nothing").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("there is no database at"),
        "{}",
        stderr(&o)
    );
    assert!(!tmp.path().join("nothing").exists(), "nothing was created");
}

#[tokio::test]
async fn serve_refuses_a_damaged_database_with_a_clear_message() {
    let (_tmp, data) = copy_of_real_database().await;
    damage(&data.join("platform.db"));
    let (code, err) = serve_outcome_in(&data, &["--bind", "127.0.0.1:0"], &[]);
    assert_eq!(code, Some(1), "the daemon must not start: {err}");
    assert!(err.contains("is damaged"), "{err}");
    assert!(err.contains("platform db check"), "{err}");
    assert!(!err.contains("listening on"), "{err}");

    // A file that is not a database at all is refused the same way.
    std::fs::write(data.join("platform.db"), vec![0x42; 64 * 1024]).unwrap();
    let (code, err) = serve_outcome_in(&data, &["--bind", "127.0.0.1:0"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is damaged"), "{err}");
}

/// Damage past the first page of a table passes the check before start-up
/// (which reads only the schema and each table's first page, so that
/// start-up does not grow with the history) and is found by the
/// `quick_check` that runs once the daemon serves: it stops with exit code
/// 1 and the same message.
#[tokio::test]
async fn damage_deep_in_a_table_stops_the_daemon_once_it_serves() {
    let (_tmp, data) = copy_of_real_database().await;
    damage_deep(&data.join("platform.db"), false);

    let (code, err) = serve_until_exit(&data);
    assert_eq!(code, Some(1), "the daemon must stop: {err}");
    assert!(
        err.contains("listening on"),
        "start-up did not wait for the check: {err}"
    );
    assert!(err.contains("is damaged"), "{err}");
    assert!(err.contains("platform db check"), "{err}");
}

/// After a clean shutdown, a restart on the untouched file skips the
/// whole-file check (writes need not wait for it on a large history); a
/// crash, or any write to the file in between, brings it back, so damage
/// done while the daemon was stopped is still found.
#[tokio::test]
async fn a_clean_restart_skips_the_check_only_while_the_file_is_untouched() {
    let d = real_database().await;
    let db = d.data_dir.join("platform.db");
    let record = d.data_dir.join("platform.db-clean");
    assert!(record.exists(), "a clean stop leaves its record");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&record).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "the record is private: {mode:o}");
    const SKIPPED: &str = "its whole-file check is skipped";
    const PASSED: &str = "passed its integrity check";

    // Untouched since the clean stop: no check, and writes go through.
    let mut debug = Opts::default().held();
    debug
        .envs
        .push(("RUST_LOG".into(), "platform=debug".into()));
    debug.data_dir = Some(d.data_dir.clone());
    let mut again = Daemon::start_with(debug.clone());
    create(&again, &job_body("alice")).await;
    assert!(!record.exists(), "the record is taken at start");
    assert_eq!(again.terminate(), Some(0));
    let log = again.log_text();
    assert!(log.contains(SKIPPED), "{log}");

    // A crash leaves no record: the next start checks.
    let mut crashed = Daemon::start_with(debug.clone());
    create(&crashed, &job_body("alice")).await;
    crashed.kill9();
    assert!(!record.exists());
    let mut checked = Daemon::start_with(debug.clone());
    let log = eventually(30, "the check to pass", || async {
        let log = checked.log_text();
        log.contains(PASSED).then_some(log)
    })
    .await;
    assert!(!log.contains(SKIPPED), "{log}");
    assert_eq!(checked.terminate(), Some(0));
    assert!(record.exists());

    // Damage written while the daemon is stopped, with the file's
    // modification time set back: the record no longer matches (its change
    // time moved), so the check runs and finds it.
    damage_deep(&db, true);
    let (code, err) = serve_until_exit(&d.data_dir);
    assert_eq!(code, Some(1), "the daemon must stop: {err}");
    assert!(err.contains("is damaged"), "{err}");
}

/// Overwrites the start of the page holding the jobs table's last rows
/// (its rightmost leaf): damage past every table's first page, which only
/// the whole-file check reads. With `same_mtime`, the file's modification
/// time is set back to what it was.
fn damage_deep(db: &Path, same_mtime: bool) {
    let page: i64 = rusqlite::Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT pageno FROM dbstat WHERE name = 'jobs' AND pagetype = 'leaf' \
             ORDER BY path DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(page > 2, "the jobs table spans pages: {page}");
    let modified = std::fs::metadata(db).unwrap().modified().unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    f.seek(SeekFrom::Start((page as u64 - 1) * 4096)).unwrap();
    f.write_all(&[0xA5; 64]).unwrap();
    if same_mtime {
        f.set_modified(modified).unwrap();
    }
    f.sync_all().unwrap();
}

/// Runs `platform serve` on `data` until it exits (at most a minute):
/// its exit code and what it wrote to stderr.
fn serve_until_exit(data: &Path) -> (Option<i32>, String) {
    let mut child = spawn_serve_in(data, &["--bind", "127.0.0.1:0", "--hold-jobs"], &[]);
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    (code, reader.join().unwrap())
}

/// A refused or unreachable `DATABASE_URL` is named with its password
/// masked, by `serve` and by `db check` alike, and nothing starts.
#[test]
fn a_refused_database_url_never_shows_its_password() {
    let secret = "Hunter2-do-not-print";
    let urls = [
        format!("mysql://alice:{secret}@db.example/platform"),
        format!("postgresql+asyncpg://alice:{secret}@127.0.0.1:1/platform?sslmode=disable"),
        format!("postgresql://alice:{secret}@127.0.0.1:1/platform?sslmode=bogus"),
    ];
    for url in &urls {
        let (code, text) = common::api::serve_outcome(&[], &[("DATABASE_URL", url)]);
        assert!(matches!(code, Some(c) if c != 0), "{url}: {code:?} {text}");
        assert!(!text.contains(secret), "serve printed the password: {text}");
        assert!(text.contains("alice:****@"), "{text}");
        let out = db_check(&["--database-url", url]);
        assert!(!out.status.success());
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !text.contains(secret),
            "db check printed the password: {text}"
        );
        assert!(text.contains("alice:****@"), "{text}");
    }
}
