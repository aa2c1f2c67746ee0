//! The subprocess runner: each trainer is a local process, started (via the
//! [`supervisor`](super::supervisor)) in its own process group, never
//! through a shell, with stdin closed and its output captured to bounded
//! log files.
//!
//! While the daemon that launched a trainer lives, it waits on the
//! supervisor as its child. A daemon that re-adopted a trainer after a
//! restart cannot wait on it, so it polls the supervisor's liveness (pid
//! plus start time, which guards against pid reuse) instead. Either way the
//! outcome is read from `exit.json` and handed to
//! [`Jobs::finish_by_runner`](crate::jobs::Jobs::finish_by_runner).
//!
//! Stopping a trainer (cancel, or one that reported its end but keeps
//! running) is a SIGTERM to its supervisor, which stops the trainer's whole
//! process tree; SIGKILL to the trainer's group after the grace period is
//! the daemon's backstop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::logfile;
use super::proctree::{alive, group_alive, signal_group};
use super::supervisor::{read_exit, signal_name, Readiness, StateFile};
use super::{LaunchSpec, LogOptions, LogStream, Runner, RunnerError};
use crate::jobs::{Jobs, RunnerOutcome};
use crate::model::{JobRecord, JobStatus};
use crate::storage::Store;

/// Lines of log quoted in a failed job's `error`.
const TAIL_LINES: usize = 20;

/// How long the supervisor may take to start a trainer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a finished job's local log stays after it was archived.
const LOCAL_LOG_LINGER: Duration = Duration::from_secs(5);

/// What the runner stores on the job (`runner_state`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcState {
    /// The job's run directory.
    pub dir: PathBuf,
    /// Pids and start times.
    #[serde(flatten)]
    pub proc: StateFile,
}

/// Settings of the subprocess runner.
#[derive(Debug, Clone)]
pub struct SubprocessConfig {
    /// Parent of every job's run directory.
    pub runs_dir: PathBuf,
    /// This binary (runs `supervise` and the demo trainer).
    pub exe: PathBuf,
    /// SIGTERM → SIGKILL grace period.
    pub kill_grace: Duration,
    /// Log budget per job.
    pub max_log_bytes: u64,
    /// The umask trainers run with (the daemon's own is private).
    pub trainer_umask: u32,
}

struct Watched {
    state: ProcState,
    /// A stop (SIGTERM, SIGKILL after the grace) was sent.
    stopping: bool,
    /// Its job ended and it has the grace period to exit on its own.
    lingering: bool,
}

/// Runs trainers as local processes.
#[derive(Clone)]
pub struct SubprocessRunner {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: Arc<Jobs>,
    /// Where finished jobs' logs are archived.
    store: Arc<Store>,
    cfg: SubprocessConfig,
    active: Mutex<HashMap<Uuid, Watched>>,
}

impl SubprocessRunner {
    /// A runner reporting to `jobs`, archiving logs into `store`.
    pub fn new(jobs: Arc<Jobs>, store: Arc<Store>, cfg: SubprocessConfig) -> Self {
        let mut cfg = cfg;
        // Supervisors run in their job's directory and are told it by path:
        // a relative one (`--data-dir data`) would resolve twice.
        if let Ok(abs) = std::path::absolute(&cfg.runs_dir) {
            cfg.runs_dir = abs;
        }
        Self {
            inner: Arc::new(Inner {
                jobs,
                store,
                cfg,
                active: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn run_dir(&self, id: Uuid) -> PathBuf {
        self.inner.cfg.runs_dir.join(id.to_string())
    }
}

impl Inner {
    fn watch(&self, id: Uuid, state: ProcState) {
        if let Ok(mut a) = self.active.lock() {
            a.insert(
                id,
                Watched {
                    state,
                    stopping: false,
                    lingering: false,
                },
            );
        }
    }

    /// Settles a job whose supervisor is gone.
    async fn on_exit(&self, id: Uuid, dir: &Path, adopted_trainer_only: bool) {
        let tail = logfile::tail(dir.to_path_buf(), TAIL_LINES).await;
        let with_tail = |line: String| {
            if tail.is_empty() {
                line
            } else {
                format!("{line}; last log lines:\n{tail}")
            }
        };
        let outcome = match read_exit(dir) {
            Some(e) if e.start_error.is_some() => RunnerOutcome {
                exit_code: None,
                failure: e.start_error,
                ..Default::default()
            },
            Some(e) if e.code == Some(0) => RunnerOutcome {
                exit_code: Some(0),
                failure: None,
                ..Default::default()
            },
            Some(e) if e.code.is_some() => RunnerOutcome {
                exit_code: e.code,
                failure: Some(with_tail(format!(
                    "trainer exited with code {}",
                    e.code.unwrap_or_default()
                ))),
                ..Default::default()
            },
            Some(e) => {
                let sig = e.signal.unwrap_or_default();
                RunnerOutcome {
                    exit_code: Some(-sig),
                    failure: Some(with_tail(format!(
                        "trainer was killed by signal {sig} ({})",
                        signal_name(sig)
                    ))),
                    ..Default::default()
                }
            }
            None if adopted_trainer_only => RunnerOutcome {
                exit_code: None,
                failure: Some(with_tail(
                    "trainer ended while its supervisor was gone, so its exit status is unknown"
                        .into(),
                )),
                ..Default::default()
            },
            None => RunnerOutcome {
                exit_code: None,
                failure: Some(with_tail(
                    "the trainer's supervisor ended without recording an exit status".into(),
                )),
                ..Default::default()
            },
        };
        // The slot is freed first: the job's status still counts it until
        // the outcome is committed, and the commit wakes the scheduler.
        if let Ok(mut a) = self.active.lock() {
            a.remove(&id);
        }
        if let Err(e) = self.jobs.finish_by_runner(id, outcome).await {
            tracing::error!(job_id = %id, error = %e, "cannot record how the trainer ended");
        }
        self.archive(id, dir).await;
    }

    /// Moves the finished job's log into the object store, then (after a
    /// pause that lets followers read the last lines) frees the local copy.
    async fn archive(&self, id: Uuid, dir: &Path) {
        if !logfile::exists(dir) {
            return;
        }
        let stream = logfile::stream(dir.to_path_buf(), None, false, || true);
        if super::archive_logs(&self.store, id, stream).await {
            let dir = dir.to_path_buf();
            tokio::spawn(async move {
                tokio::time::sleep(LOCAL_LOG_LINGER).await;
                logfile::remove(&dir);
            });
        }
    }

    /// Whether the trainer of `id` is still watched (not yet seen to end).
    fn watching(&self, id: Uuid) -> bool {
        self.active
            .lock()
            .map(|a| a.contains_key(&id))
            .unwrap_or(false)
    }

    /// Starts stopping the trainer of job `id` (found through `unwatched`
    /// when the runner does not watch it), once: SIGTERM to its supervisor,
    /// which stops the trainer's whole process tree, or to the trainer's
    /// group when the supervisor cannot (gone, or of an older version);
    /// SIGKILL to the group after the grace either way. `note` goes into
    /// the trainer's log first.
    fn stop(&self, id: Uuid, unwatched: Option<ProcState>, note: Option<String>) {
        let state = {
            let Ok(mut active) = self.active.lock() else {
                return;
            };
            match active.get_mut(&id) {
                Some(w) if w.stopping => return,
                Some(w) => {
                    w.stopping = true;
                    w.state.clone()
                }
                None => match unwatched {
                    Some(s) => s,
                    None => return,
                },
            }
        };
        let p = &state.proc;
        let supervised = p.stops_on_sigterm && alive(p.supervisor_pid, p.supervisor_start);
        if !supervised && !group_alive(p.trainer_pid, p.trainer_start) {
            return;
        }
        if let Some(note) = note {
            if let Err(e) = logfile::append_note(&state.dir, &note) {
                tracing::warn!(job_id = %id, error = %e, "cannot write to the trainer's log");
            }
        }
        let sent = if supervised {
            kill(Pid::from_raw(p.supervisor_pid as i32), Signal::SIGTERM).is_ok()
        } else {
            signal_group(p.trainer_pid, p.trainer_start, Signal::SIGTERM)
        };
        if !sent {
            return;
        }
        tracing::info!(job_id = %id, pgid = p.trainer_pid, supervised, "stopping the trainer: SIGTERM");
        let grace = self.cfg.kill_grace;
        let proc = p.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if !group_alive(proc.trainer_pid, proc.trainer_start) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if signal_group(proc.trainer_pid, proc.trainer_start, Signal::SIGKILL) {
                tracing::warn!(job_id = %id, "trainer ignored SIGTERM for {grace:?}; sent SIGKILL");
            }
        });
    }

    /// Polls until the process `(pid, start)` is gone, then settles the job.
    fn poll_until_gone(
        self: &Arc<Self>,
        id: Uuid,
        dir: PathBuf,
        pid: u32,
        start: u64,
        trainer_only: bool,
    ) {
        let inner = self.clone();
        tokio::spawn(async move {
            while alive(pid, start) {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            inner.on_exit(id, &dir, trainer_only).await;
        });
    }
}

/// The supervisor's one line on stdout: whether the trainer runs. `None`
/// when the supervisor closed stdout without saying (it died).
async fn read_readiness(out: Option<tokio::process::ChildStdout>) -> Option<Readiness> {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    tokio::io::BufReader::new(out?)
        .read_line(&mut line)
        .await
        .ok()?;
    Readiness::parse(&line)
}

/// The trainer's processes as recorded on the job at launch, if any.
fn proc_state(rec: &JobRecord) -> Option<ProcState> {
    serde_json::from_str(rec.runner_state.as_deref()?).ok()
}

/// A failed spawn of the supervisor, as the scheduler should treat it:
/// an argument or environment the kernel refuses is this job's own
/// (it would fail every time), anything else is the machine's.
fn spawn_error(exe: &Path, e: std::io::Error) -> RunnerError {
    use nix::errno::Errno;
    if e.raw_os_error() == Some(Errno::E2BIG as i32) {
        return RunnerError::Start(
            "cannot start the trainer: its environment and arguments are larger than the system allows (E2BIG); check the `env` of its trainer entry and the job's config".into(),
        );
    }
    // The only invalid input `spawn` reports: a NUL byte in an argument
    // or an environment variable (jobs created before they were refused).
    if e.kind() == std::io::ErrorKind::InvalidInput {
        return RunnerError::Start(format!(
            "cannot start the trainer: its arguments or environment contain a NUL byte ({})",
            crate::errors::strip_os_error(&e.to_string())
        ));
    }
    RunnerError::Environment(format!(
        "cannot start the trainer supervisor {}: {}",
        exe.display(),
        crate::errors::strip_os_error(&e.to_string())
    ))
}

#[async_trait]
impl Runner for SubprocessRunner {
    fn name(&self) -> &'static str {
        "subprocess"
    }

    async fn launch(&self, spec: LaunchSpec) -> Result<Option<String>, RunnerError> {
        let id = spec.job.id;
        let dir = self.run_dir(id);
        let env_err = |what: &str, e: std::io::Error| {
            RunnerError::Environment(format!("{what} {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(&dir).map_err(|e| env_err("cannot create the run directory", e))?;
        if super::supervisor::kill_unrecorded(&dir) {
            tracing::warn!(job_id = %id, "stopped a trainer of this job whose launch was never recorded (the daemon stopped while starting it)");
        }
        for stale in [super::supervisor::STATE_FILE, super::supervisor::EXIT_FILE] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
        let attempt = spec.job.sched.attempt + 1;
        if attempt > 1 {
            // The log goes on from the earlier attempt's, when it is still here.
            let _ = logfile::append_note(&dir, &format!("platform: attempt {attempt} starts"));
        }
        let argv: Vec<String> = if spec.trainer.command.is_empty() {
            vec![
                self.inner.cfg.exe.display().to_string(),
                "demo-train".to_string(),
            ]
        } else {
            spec.trainer.command.clone()
        };
        let mut cmd = tokio::process::Command::new(&self.inner.cfg.exe);
        cmd.arg("supervise")
            .arg("--dir")
            .arg(&dir)
            .arg("--max-log-bytes")
            .arg(self.inner.cfg.max_log_bytes.to_string())
            .arg("--umask")
            .arg(format!("{:o}", self.inner.cfg.trainer_umask))
            .arg("--kill-grace")
            .arg(self.inner.cfg.kill_grace.as_secs_f64().to_string());
        if let Some(w) = &spec.trainer.workdir {
            cmd.arg("--workdir").arg(w);
        }
        cmd.arg("--")
            .args(&argv)
            .env_clear()
            .envs(&spec.env)
            .current_dir(&dir)
            .stdin(std::process::Stdio::null())
            // The supervisor says on stdout when the trainer runs (or failed).
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(|e| spawn_error(&self.inner.cfg.exe, e))?;
        let readiness = child.stdout.take();
        let answer = tokio::time::timeout(START_TIMEOUT, read_readiness(readiness)).await;
        let state = match answer {
            Ok(Some(Readiness::Ready)) => tokio::fs::read(dir.join(super::supervisor::STATE_FILE))
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<StateFile>(&b).ok()),
            Ok(_) => None,
            Err(_) => {
                let _ = child.kill().await;
                return Err(RunnerError::Start(format!(
                    "the trainer did not start within {} seconds",
                    START_TIMEOUT.as_secs()
                )));
            }
        };
        let Some(state) = state else {
            // It failed to start: the supervisor recorded why and exits.
            let status = child.wait().await;
            let exit = tokio::fs::read(dir.join(super::supervisor::EXIT_FILE))
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<super::supervisor::ExitFile>(&b).ok());
            return Err(RunnerError::Start(match (exit, status) {
                (Some(e), _) => e.start_error.unwrap_or_else(|| {
                    format!("trainer `{}` ended before it could be watched", argv[0])
                }),
                (None, Ok(status)) => {
                    format!("the trainer supervisor exited unexpectedly ({status})")
                }
                (None, Err(e)) => format!("the trainer supervisor failed: {e}"),
            }));
        };
        let ps = ProcState {
            dir: dir.clone(),
            proc: state,
        };
        self.inner.watch(id, ps.clone());
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let _ = child.wait().await;
            inner.on_exit(id, &dir, false).await;
        });
        tracing::info!(job_id = %id, trainer_pid = ps.proc.trainer_pid, "trainer launched");
        serde_json::to_string(&ps).map(Some).map_err(|e| {
            RunnerError::Environment(format!("cannot record the trainer's state: {e}"))
        })
    }

    async fn cancel(&self, job: &JobRecord) -> Result<(), RunnerError> {
        self.inner.stop(job.job.id, proc_state(job), None);
        Ok(())
    }

    async fn ended(&self, job: &JobRecord) {
        let id = job.job.id;
        let claimed = self.inner.active.lock().ok().and_then(|mut a| {
            let w = a.get_mut(&id).filter(|w| !w.lingering && !w.stopping)?;
            w.lingering = true;
            Some(())
        });
        if claimed.is_none() {
            return;
        }
        let status = job.job.status;
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let grace = inner.cfg.kill_grace;
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && inner.watching(id) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if !inner.watching(id) {
                return;
            }
            let secs = grace.as_secs_f64();
            tracing::warn!(job_id = %id, %status, "the trainer reported its end but did not exit within the kill grace; stopping it");
            let note = format!(
                "platform: the trainer reported {status} but did not exit within {secs} s; stopping it (SIGTERM, then SIGKILL after {secs} s)"
            );
            inner.stop(id, None, Some(note));
        });
    }

    async fn logs(
        &self,
        job: &JobRecord,
        opts: LogOptions,
    ) -> Result<Option<LogStream>, RunnerError> {
        let dir = self.run_dir(job.job.id);
        if !logfile::exists(&dir) {
            return Ok(None);
        }
        let done_dir = dir.clone();
        Ok(Some(logfile::stream(
            dir,
            opts.tail,
            opts.follow,
            move || read_exit(&done_dir).is_some(),
        )))
    }

    async fn reconcile(&self, running: Vec<JobRecord>) -> Result<(), RunnerError> {
        for rec in running {
            let id = rec.job.id;
            let Some(ps) = proc_state(&rec) else {
                self.inner
                    .jobs
                    .fail_by_runner(
                        id,
                        "the daemon stopped while launching this job's trainer and has no record of its process".into(),
                    )
                    .await;
                continue;
            };
            let StateFile {
                supervisor_pid,
                supervisor_start,
                trainer_pid,
                trainer_start,
                ..
            } = ps.proc.clone();
            if alive(supervisor_pid, supervisor_start) {
                tracing::info!(job_id = %id, trainer_pid, "re-adopted a running trainer");
                self.inner.watch(id, ps.clone());
                self.inner
                    .poll_until_gone(id, ps.dir, supervisor_pid, supervisor_start, false);
            } else if read_exit(&ps.dir).is_some() {
                tracing::info!(job_id = %id, "the trainer ended while the daemon was down");
                self.inner.on_exit(id, &ps.dir, false).await;
            } else if alive(trainer_pid, trainer_start) {
                tracing::warn!(job_id = %id, trainer_pid, "re-adopted a trainer whose supervisor is gone");
                self.inner.watch(id, ps.clone());
                self.inner
                    .poll_until_gone(id, ps.dir, trainer_pid, trainer_start, true);
            } else {
                let reason = format!(
                    "the trainer (pid {trainer_pid}) vanished while the daemon was down: it is no longer running and left no exit status"
                );
                let outcome = RunnerOutcome {
                    event: Some(crate::model::AttemptEvent::Vanished),
                    ..RunnerOutcome::failed(reason)
                };
                self.inner.jobs.fail_by_runner_with(id, outcome).await;
            }
        }
        Ok(())
    }

    async fn reap(&self, ended: Vec<JobRecord>) {
        for rec in ended {
            let id = rec.job.id;
            let Some(ps) = proc_state(&rec) else {
                continue;
            };
            let sup = (ps.proc.supervisor_pid, ps.proc.supervisor_start);
            if alive(sup.0, sup.1) {
                tracing::info!(job_id = %id, status = %rec.job.status, "watching the trainer of a job that ended while the daemon was down");
                self.inner.watch(id, ps.clone());
                self.inner
                    .poll_until_gone(id, ps.dir.clone(), sup.0, sup.1, false);
                if rec.job.status == JobStatus::Cancelled {
                    let _ = self.cancel(&rec).await;
                } else {
                    self.ended(&rec).await;
                }
            } else if read_exit(&ps.dir).is_some() {
                // It ended while the daemon was down: record the exit code.
                self.inner.on_exit(id, &ps.dir, false).await;
            }
        }
    }

    fn active(&self) -> Vec<Uuid> {
        self.inner
            .active
            .lock()
            .map(|a| a.keys().copied().collect())
            .unwrap_or_default()
    }

    async fn shutdown(&self, stop_jobs: bool) {
        if !stop_jobs {
            let n = self.active().len();
            if n > 0 {
                tracing::info!(
                    trainers = n,
                    "leaving trainers running; the next daemon re-adopts them"
                );
            }
            return;
        }
        for id in self.active() {
            let _ = self.inner.jobs.cancel(id, super::STOPPED_WITH_DAEMON).await;
            if let Ok(rec) = self.inner.jobs.record(id).await {
                let _ = self.cancel(&rec).await;
            }
        }
        let deadline = Instant::now() + self.inner.cfg.kill_grace + Duration::from_secs(3);
        while !self.active().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
