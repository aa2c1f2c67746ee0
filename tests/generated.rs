//! The checked-in shell completions (`completions/`) and man pages (`man/`)
//! must match what the current CLI definition generates. When they do not,
//! this test fails and says how to regenerate them; with
//! `UPDATE_GENERATED=1` it rewrites them instead.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use platform::cli::generate::{write_completions, write_man_pages};

const REGENERATE: &str = "UPDATE_GENERATED=1 cargo test --test generated";

fn repo(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)
}

/// Every file directly in `dir`, by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// Compares `checked_in` with freshly generated files; rewrites it when
/// asked to. Returns what is stale.
fn check(name: &str, generate: fn(&Path) -> anyhow::Result<()>) -> Vec<String> {
    let fresh_dir = tempfile::tempdir().unwrap();
    generate(fresh_dir.path()).unwrap();
    let fresh = files(fresh_dir.path());
    assert!(!fresh.is_empty(), "{name}: nothing generated");
    let dir = repo(name);
    let current = files(&dir);
    let mut stale = Vec::new();
    for (file, bytes) in &fresh {
        if current.get(file) != Some(bytes) {
            stale.push(format!(
                "{name}/{file} is {}",
                if current.contains_key(file) {
                    "out of date"
                } else {
                    "missing"
                }
            ));
        }
    }
    for file in current.keys().filter(|f| !fresh.contains_key(*f)) {
        stale.push(format!("{name}/{file} is no longer generated"));
    }
    if !stale.is_empty() && std::env::var_os("UPDATE_GENERATED").is_some_and(|v| v == "1") {
        for file in current.keys().filter(|f| !fresh.contains_key(*f)) {
            std::fs::remove_file(dir.join(file)).unwrap();
        }
        generate(&dir).unwrap();
        eprintln!("rewrote {name}/");
        return Vec::new();
    }
    stale
}

#[test]
fn completions_and_man_pages_are_up_to_date() {
    let mut stale = check("completions", write_completions);
    stale.extend(check("man", write_man_pages));
    assert!(
        stale.is_empty(),
        "generated files are stale:\n  {}\nregenerate them with:\n  {REGENERATE}\nand commit the result",
        stale.join("\n  ")
    );
}

#[test]
fn the_binary_prints_the_checked_in_files() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(common::bin())
            .args(args)
            .env_clear()
            .env("HOME", tmp.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}");
        o.stdout
    };
    for (shell, file) in [
        ("bash", "platform.bash"),
        ("zsh", "_platform"),
        ("fish", "platform.fish"),
        ("powershell", "_platform.ps1"),
    ] {
        let checked_in = std::fs::read(repo("completions").join(file))
            .unwrap_or_else(|e| panic!("completions/{file}: {e}; run {REGENERATE}"));
        assert!(
            run(&["completions", shell]) == checked_in,
            "`platform completions {shell}` differs from completions/{file}; run {REGENERATE}"
        );
    }
    let top = std::fs::read(repo("man").join("platform.1"))
        .unwrap_or_else(|e| panic!("man/platform.1: {e}; run {REGENERATE}"));
    assert!(
        run(&["man"]) == top,
        "`platform man` differs from man/platform.1; run {REGENERATE}"
    );
    let dir = tmp.path().join("pages");
    run(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(
        files(&dir),
        files(&repo("man")),
        "`platform man --dir` writes the checked-in pages"
    );
}
