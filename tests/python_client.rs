//! The Python package (`clients/python`) against a real daemon: installs
//! it with pip into a virtual environment and runs its own pytest suite
//! with `PLATFORM_SERVER`/`PLATFORM_TOKEN` pointing here, so a change to
//! the API that breaks the client (or the trainer side it ships) fails
//! this test. The daemon also registers `pytest-trainer`, a trainer built
//! on `platform_client.trainer`, for the suite's end-to-end trainer tests.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Daemon, Opts};

const API_TOKEN: &str = "python-client-test-token-0123456789";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A virtual environment with the package (reinstalled from the working
/// tree on every run) and pytest, kept between runs under the target dir.
fn venv() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-client-venv");
    let python = dir.join("bin").join("python");
    if !python.exists() {
        let out = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                let _ = std::fs::remove_dir_all(&dir);
                panic!(
                    "python3 -m venv is unavailable, so the Python client cannot be tested: \
                     install it (Debian/Ubuntu: apt-get install python3-venv; \
                     ./scripts/test.sh does this)\n{}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            Err(e) => panic!("python3 is needed to test the Python client: {e}"),
        }
    }
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(repo().join("clients/python"))
            .arg("pytest"),
        "pip install ./clients/python pytest",
    );
    python
}

#[test]
fn the_python_client_passes_its_tests_against_a_real_daemon() {
    let python = venv();
    let tmp = tempfile::tempdir().unwrap();
    let trainers = tmp.path().join("trainers.toml");
    std::fs::write(
        &trainers,
        format!(
            "[trainers.pytest-trainer]\ncommand = [{:?}, {:?}]\nenv = {{ PYTHONUNBUFFERED = \"1\" }}\n",
            python.display().to_string(),
            repo()
                .join("clients/python/tests/trainer_app.py")
                .display()
                .to_string(),
        ),
    )
    .unwrap();
    let d = Daemon::start_with(Opts {
        args: vec![
            "--trainers".into(),
            trainers.display().to_string(),
            "--max-concurrent-jobs".into(),
            "0".into(),
        ],
        envs: vec![("PLATFORM_API_TOKEN".into(), API_TOKEN.into())],
        ..Opts::default()
    });
    let out = run(
        Command::new(&python)
            .args([
                "-m",
                "pytest",
                "-q",
                "-rs",
                "-p",
                "no:cacheprovider",
                "tests",
            ])
            .current_dir(repo().join("clients/python"))
            .env("PLATFORM_SERVER", &d.url)
            .env("PLATFORM_TOKEN", API_TOKEN)
            .env_remove("PLATFORM_CONFIG")
            .env("HOME", tmp.path())
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        "the Python client's pytest suite",
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains(" passed"), "{report}");
    for not_skipped in ["PLATFORM_SERVER", "pytest-trainer"] {
        assert!(
            !report.contains(not_skipped),
            "tests that need the daemon were skipped:\n{report}"
        );
    }
}
