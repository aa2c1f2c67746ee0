//! The per-job supervisor process (`platform supervise`, hidden).
//!
//! The daemon does not run trainers directly: it starts this small process,
//! which starts the trainer in its own process group, copies its output into
//! the bounded log files, waits for it, stops whatever the trainer left
//! behind, and records the exit status in `exit.json`. Because the
//! supervisor, not the daemon, holds the trainer's pipes and collects its
//! status, a trainer survives a daemon restart (even `kill -9`) with its
//! logs and exit code intact, and the next daemon re-adopts it.
//!
//! The supervisor is a child subreaper: a process the trainer started is
//! re-parented to it (not to init) when its parent exits, so every
//! descendant stays findable, even one that left the trainer's process
//! group or session (`setsid`). SIGTERM to the supervisor is how the daemon
//! stops a trainer: the supervisor sends SIGTERM to the trainer's group and
//! to every other descendant, and SIGKILL to all of them after the grace
//! period. When the trainer exits, any descendant still running is killed.
//!
//! Files in the job's run directory:
//! `state.json` (pids and start times, written once the trainer runs),
//! `exit.json` (how it ended), `trainer.log[.1]` (output). Once
//! `state.json` is written (or starting failed and `exit.json` says why)
//! the supervisor prints one [`Readiness`] line on stdout, so the daemon
//! waits for the launch without polling the directory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::logfile::RotatingWriter;
use super::proctree::{self, start_time, Proc};

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
    /// The supervisor stops the trainer's whole tree on SIGTERM (false for
    /// supervisors of older versions: they die of it, so the daemon
    /// signals the trainer's group itself).
    #[serde(default)]
    pub stops_on_sigterm: bool,
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
    /// Seconds between SIGTERM and SIGKILL when the supervisor is told to
    /// stop the trainer (by a SIGTERM of its own).
    #[arg(long, value_parser = parse_grace, default_value = "10")]
    pub kill_grace: Duration,
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
    use std::os::unix::process::CommandExt;
    let program = &a.argv[0];
    // Where the kernel offers it (Linux 3.4+); without it, descendants that
    // outlive their parent go to init and only the trainer's group is stopped.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    // SIGTERM is a stop request, handled by a thread of its own: block it
    // before any thread starts, so every thread inherits the mask.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.thread_block()
        .map_err(|e| format!("cannot set up the supervisor's signals: {e}"))?;
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
    // SAFETY: umask(2) and sigprocmask(2) are async-signal-safe and touch
    // no memory of the parent's.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::stat::umask(trainer_umask);
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&stop), None)?;
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
    let child = cmd
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
        stops_on_sigterm: true,
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
    let grace = a.kill_grace;
    std::thread::spawn(move || {
        // One stop request is enough; later ones stay pending, unread.
        if stop.wait().is_ok() {
            stop_tree(pid, grace);
        }
    });
    let (code, signal) = wait_for(pid)?;
    // Anything the trainer started and left behind goes too.
    sweep(pid);
    // Wait briefly for the output to drain; a process that escaped the
    // sweep may hold the pipe open forever, so do not wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !copier.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    write_json(
        &a.dir.join(EXIT_FILE),
        &ExitFile {
            code,
            signal,
            start_error: None,
        },
    )
    .map_err(|e| format!("cannot record the trainer's exit status: {e}"))
}

/// Waits for the trainer `pid` to end, reaping every other child on the
/// way (as a subreaper, orphans of the trainer's tree are ours); returns
/// its exit code or the signal that ended it.
fn wait_for(pid: u32) -> Result<(Option<i32>, Option<i32>), String> {
    let trainer = Pid::from_raw(pid as i32);
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(p, code)) if p == trainer => return Ok((Some(code), None)),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == trainer => {
                return Ok((None, Some(sig as i32)))
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("cannot wait for the trainer: {e}")),
        }
    }
}

/// Stops the trainer `pid` and every descendant of the supervisor: SIGTERM
/// to the trainer's group and to each descendant outside it (each process
/// gets one), then SIGKILL to whatever is left after `grace`.
fn stop_tree(trainer: u32, grace: Duration) {
    let me = std::process::id();
    let group = Pid::from_raw(trainer as i32);
    let _ = killpg(group, Signal::SIGTERM);
    let outside: Vec<Proc> = live_descendants(me)
        .into_iter()
        .filter(|p| p.pgrp != trainer)
        .collect();
    proctree::signal_all(&outside, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if live_descendants(me).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = killpg(group, Signal::SIGKILL);
    proctree::signal_all(&live_descendants(me), Signal::SIGKILL);
}

/// After the trainer exited: kills (SIGKILL) and reaps every process it
/// left behind, in its group or not. Gives up after [`SWEEP_LIMIT`] on a
/// process that will not die (uninterruptible sleep).
fn sweep(trainer: u32) {
    let me = std::process::id();
    let _ = killpg(Pid::from_raw(trainer as i32), Signal::SIGKILL);
    let deadline = Instant::now() + SWEEP_LIMIT;
    loop {
        reap_exited();
        let left = live_descendants(me);
        if left.is_empty() || Instant::now() >= deadline {
            return;
        }
        proctree::signal_all(&left, Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long [`sweep`] keeps killing leftovers.
const SWEEP_LIMIT: Duration = Duration::from_secs(2);

fn live_descendants(me: u32) -> Vec<Proc> {
    proctree::descendants(me)
        .into_iter()
        .filter(|p| !p.zombie)
        .collect()
}

/// Reaps every child that has exited, without blocking.
fn reap_exited() {
    while let Ok(status) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

fn parse_grace(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|g| g.is_finite() && *g >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
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

/// Kills what is left of an earlier launch in `dir`: a daemon killed
/// between starting a trainer and committing the launch leaves the job
/// pending with that trainer still running on a token the next launch
/// replaces. Stopping it before the next start keeps one trainer per job.
/// Returns whether anything was running.
pub fn kill_unrecorded(dir: &Path) -> bool {
    let Some(state) = std::fs::read(dir.join(STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<StateFile>(&b).ok())
    else {
        return false;
    };
    let mut procs = Vec::new();
    if proctree::alive(state.supervisor_pid, state.supervisor_start) {
        // Its descendants first: the trainer may have left its group.
        procs = proctree::descendants(state.supervisor_pid);
        procs.extend(proctree::read(state.supervisor_pid));
    }
    let mut any = proctree::signal_all(&procs, Signal::SIGKILL) > 0;
    any |= proctree::signal_group(state.trainer_pid, state.trainer_start, Signal::SIGKILL);
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unrecorded_launch_is_killed_before_the_next() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(!kill_unrecorded(dir.path()), "nothing there");
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = start_time(pid).unwrap();
        let state = StateFile {
            // No supervisor left: only the trainer's group.
            supervisor_pid: u32::MAX / 2,
            supervisor_start: 1,
            trainer_pid: pid,
            trainer_start: start,
            stops_on_sigterm: true,
        };
        std::fs::write(
            dir.path().join(STATE_FILE),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
        assert!(kill_unrecorded(dir.path()));
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
    }
}
