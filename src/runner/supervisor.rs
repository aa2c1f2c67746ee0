//! The per-job supervisor process (`platform supervise`, hidden).
//!
//! The daemon does not run trainers directly: it starts this small process,
//! which starts the trainer in its own process group, copies its output into
//! the bounded log files, waits for it, kills whatever the trainer left in
//! its group, and records the exit status in `exit.json`. Because the
//! supervisor, not the daemon, holds the trainer's pipes and collects its
//! status, a trainer survives a daemon restart (even `kill -9`) with its
//! logs and exit code intact, and the next daemon re-adopts it.
//!
//! Files in the job's run directory:
//! `state.json` (pids and start times, written once the trainer runs),
//! `exit.json` (how it ended), `trainer.log[.1]` (output). Once
//! `state.json` is written (or starting failed and `exit.json` says why)
//! the supervisor prints one [`Readiness`] line on stdout, so the daemon
//! waits for the launch without polling the directory.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::logfile::RotatingWriter;

/// Name of the pids file in a run directory.
pub const STATE_FILE: &str = "state.json";
/// Name of the exit status file in a run directory.
pub const EXIT_FILE: &str = "exit.json";

/// What the supervisor tells the daemon on stdout, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The trainer runs; `state.json` is written.
    Ready,
    /// The trainer could not be started; `exit.json` says why.
    Failed,
}

impl Readiness {
    fn line(self) -> &'static str {
        match self {
            Readiness::Ready => "ready\n",
            Readiness::Failed => "failed\n",
        }
    }

    /// Reads the line [`Readiness::announce`] wrote.
    pub fn parse(line: &str) -> Option<Readiness> {
        match line.trim() {
            "ready" => Some(Readiness::Ready),
            "failed" => Some(Readiness::Failed),
            _ => None,
        }
    }

    /// Tells the daemon; it may be gone (a re-adopting daemon never reads
    /// this), so a failed write is ignored.
    fn announce(self) {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = out.write_all(self.line().as_bytes());
        let _ = out.flush();
    }
}

/// Written once the trainer has been spawned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    /// The supervisor's pid.
    pub supervisor_pid: u32,
    /// Its start time (clock ticks since boot), against pid reuse.
    pub supervisor_start: u64,
    /// The trainer's pid, which is also its process group id.
    pub trainer_pid: u32,
    /// The trainer's start time (clock ticks since boot).
    pub trainer_start: u64,
}

/// Written when the trainer is gone (or could not start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitFile {
    /// Exit code, when it exited normally.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// Why it could not be started, when it could not.
    pub start_error: Option<String>,
}

/// `exit.json` in `dir`, if written.
pub fn read_exit(dir: &Path) -> Option<ExitFile> {
    read_json(&dir.join(EXIT_FILE))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes JSON atomically (temp file + rename), so readers never see half.
fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(value)?)?;
    std::fs::rename(tmp, path)
}

/// A process's start time in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), or `None` when there is no such process.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: skip past the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is the same live process that started at `start`
/// (zombies count as gone).
pub fn alive(pid: u32, start: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    let mut fields = after.split_whitespace();
    let state = fields.next().unwrap_or("");
    let started = fields.nth(18).and_then(|s| s.parse::<u64>().ok());
    state != "Z" && state != "X" && started == Some(start)
}

/// Arguments of `platform supervise`.
#[derive(Debug, Clone, clap::Args)]
pub struct SuperviseArgs {
    /// The job's run directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// The trainer's working directory.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Log budget in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_log_bytes: u64,
    /// The trainer's umask, octal (the supervisor's own stays private).
    #[arg(long, value_parser = parse_umask, default_value = "22")]
    pub umask: u32,
    /// The trainer's argv.
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

/// Runs the supervisor; returns the process exit code.
pub fn run(a: SuperviseArgs) -> i32 {
    match supervise(&a) {
        Ok(()) => 0,
        Err(e) => {
            let _ = write_json(
                &a.dir.join(EXIT_FILE),
                &ExitFile {
                    code: None,
                    signal: None,
                    start_error: Some(e),
                },
            );
            Readiness::Failed.announce();
            1
        }
    }
}

fn supervise(a: &SuperviseArgs) -> Result<(), String> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let program = &a.argv[0];
    let (mut reader, writer) = std::io::pipe()
        .map_err(|e| format!("cannot create a pipe for the trainer's output: {e}"))?;
    let writer2 = writer
        .try_clone()
        .map_err(|e| format!("cannot create a pipe for the trainer's output: {e}"))?;
    let mut log = RotatingWriter::open(&a.dir, a.max_log_bytes)
        .map_err(|e| format!("cannot open the log in {}: {e}", a.dir.display()))?;
    if let Some(w) = &a.workdir {
        if !w.is_dir() {
            return Err(format!(
                "cannot start trainer `{program}`: working directory {} does not exist",
                w.display()
            ));
        }
    }
    let mut cmd = std::process::Command::new(program);
    let trainer_umask = nix::sys::stat::Mode::from_bits_truncate(a.umask);
    // SAFETY: umask(2) is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::stat::umask(trainer_umask);
            Ok(())
        });
    }
    cmd.args(&a.argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .process_group(0);
    if let Some(w) = &a.workdir {
        cmd.current_dir(w);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start trainer `{program}`: {}", describe_io(&e)))?;
    // Close our copies of the pipe's write end, so EOF arrives when the
    // trainer (and everything it started) is gone.
    drop(cmd);
    let pid = child.id();
    let state = StateFile {
        supervisor_pid: std::process::id(),
        supervisor_start: start_time(std::process::id()).unwrap_or(0),
        trainer_pid: pid,
        trainer_start: start_time(pid).unwrap_or(0),
    };
    write_json(&a.dir.join(STATE_FILE), &state)
        .map_err(|e| format!("cannot record the trainer's pid: {e}"))?;
    Readiness::Ready.announce();
    let copier = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if log.write(&buf[..n]).is_err() {
                        // Keep draining so the trainer never blocks on a full pipe.
                        continue;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for the trainer: {e}"))?;
    // Anything the trainer forked and left behind in its group goes too.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    // Wait briefly for the output to drain; a process that escaped the
    // group may hold the pipe open forever, so do not wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !copier.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    write_json(
        &a.dir.join(EXIT_FILE),
        &ExitFile {
            code: status.code(),
            signal: status.signal(),
            start_error: None,
        },
    )
    .map_err(|e| format!("cannot record the trainer's exit status: {e}"))
}

fn parse_umask(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal umask"))
}

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => crate::errors::strip_os_error(&e.to_string()),
    }
}

/// A signal number as a name, e.g. 9 → "SIGKILL".
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_identifies_this_process() {
        let me = std::process::id();
        let t = start_time(me).expect("own start time");
        assert!(alive(me, t));
        assert!(!alive(me, t + 1));
        assert!(start_time(u32::MAX).is_none());
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
    }
}
