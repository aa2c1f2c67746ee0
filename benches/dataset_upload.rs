//! Dataset upload throughput through the daemon into a real S3 server on
//! loopback, and the daemon's peak memory while it streams.
//!
//! `cargo bench --bench dataset_upload` builds 1 GiB of mixed files (many
//! small ones and two large ones), uploads them with
//! `platform dataset upload DIR --name NAME` to a daemon whose store is an
//! in-process s3s-fs server, and reports MB/s and the daemon's resident
//! memory when idle (VmRSS) and at its peak (VmHWM). A second run uploads one 1 GiB file to a fresh daemon: its peak
//! RSS should match the first run's, since uploads stream in bounded parts.
//! `BENCH_SCALE=0.1` shrinks the data for a quick check.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/s3.rs"]
mod s3;

use std::path::Path;
use std::time::Instant;

use common::{Daemon, Opts};
use rand::{Rng, RngCore, SeedableRng};

const MIB: u64 = 1024 * 1024;

fn main() {
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let gib = (1024.0 * scale) as u64 * MIB;
    println!(
        "dataset upload through the daemon to S3 (s3s-fs on 127.0.0.1), {} MiB per run",
        gib / MIB
    );
    println!(
        "{:<34} {:>6} {:>9} {:>8} {:>9} {:>12} {:>12}",
        "run", "files", "MiB", "seconds", "MB/s", "idle RSS MiB", "peak RSS MiB"
    );
    let mixed = tempfile::tempdir().expect("temp dir");
    let n = write_mixed(mixed.path(), gib);
    run("mixed: many small + 2 large files", mixed.path(), n);
    drop(mixed);
    let single = tempfile::tempdir().expect("temp dir");
    write_file(
        &single.path().join("one.bin"),
        gib,
        &mut rand::rngs::StdRng::seed_from_u64(7),
    );
    run("one large file", single.path(), 1);
}

/// Half the bytes in small files (4 KiB – 508 KiB), half in two large ones.
fn write_mixed(dir: &Path, total: u64) -> usize {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let small_budget = total / 2;
    let mut written = 0;
    let mut n = 0;
    while written < small_budget {
        let size = (rng.random_range(1..128u64) * 4096).min(small_budget - written);
        write_file(
            &dir.join(format!("images/{:03}/{n:06}.jpg", n / 500)),
            size,
            &mut rng,
        );
        written += size;
        n += 1;
    }
    let large = (total - written) / 2;
    write_file(&dir.join("weights/a.bin"), large, &mut rng);
    write_file(
        &dir.join("weights/b.bin"),
        total - written - large,
        &mut rng,
    );
    n + 2
}

fn write_file(path: &Path, size: u64, rng: &mut impl RngCore) {
    use std::io::Write;
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut buf = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
}

fn run(label: &str, dir: &Path, files: usize) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let server = s3::S3Server::start();
    let daemon = Daemon::start_with(Opts {
        envs: server.envs(),
        ..Default::default()
    });
    let bytes: u64 = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    let idle = vm_kib(daemon.pid(), "VmRSS:").unwrap_or(0);
    let started = Instant::now();
    let out = daemon.cli(&[
        "dataset",
        "upload",
        dir.to_str().expect("utf-8 path"),
        "--name",
        "bench",
        "-o",
        "json",
    ]);
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "upload failed: {}",
        common::stderr(&out)
    );
    let peak = vm_kib(daemon.pid(), "VmHWM:").unwrap_or(0);
    println!(
        "{label:<34} {files:>6} {:>9.0} {secs:>8.2} {:>9.1} {:>12.1} {:>12.1}",
        bytes as f64 / MIB as f64,
        bytes as f64 / 1e6 / secs,
        idle as f64 / 1024.0,
        peak as f64 / 1024.0
    );
}

/// A memory figure of `pid` in KiB from /proc/<pid>/status: `VmRSS:` (now)
/// or `VmHWM:` (peak since start).
fn vm_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
