//! What dataset uploads and artifact downloads share: progress bars (bytes
//! with rate and ETA, and files; hidden when stdout is not a terminal),
//! bounded parallelism, retries of transient failures, and the summary.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::exit::Exit;
use super::output::Printer;
use crate::client::ClientError;

/// Attempts per file before giving up on a transient failure.
const ATTEMPTS: u32 = 3;

/// The two bars of a transfer.
#[derive(Clone)]
pub struct Progress {
    /// Bytes moved.
    pub bytes: ProgressBar,
    /// Files finished.
    pub files: ProgressBar,
    started: Instant,
}

impl Progress {
    /// Bars for `total_bytes` in `total_files` files, drawn only on a terminal.
    pub fn new(out: &Printer, verb: &str, total_bytes: u64, total_files: u64) -> Self {
        let multi = MultiProgress::with_draw_target(if out.tty && !out.quiet {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let bytes = multi.add(ProgressBar::new(total_bytes));
        bytes.set_style(
            ProgressStyle::with_template(&format!(
                "{verb:>11} [{{bar:30.cyan/blue}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} ETA {{eta}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let files = multi.add(ProgressBar::new(total_files));
        files.set_style(
            ProgressStyle::with_template("      files {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bytes.enable_steady_tick(Duration::from_millis(200));
        Self {
            bytes,
            files,
            started: Instant::now(),
        }
    }

    /// Removes the bars.
    pub fn finish(&self) {
        self.bytes.finish_and_clear();
        self.files.finish_and_clear();
    }

    /// "12 files, 1.2 GiB in 8.1s (151.2 MiB/s)".
    pub fn summary(&self, files: u64, bytes: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "{files} file{}, {} in {secs:.1}s ({}/s)",
            if files == 1 { "" } else { "s" },
            HumanBytes(bytes),
            HumanBytes((bytes as f64 / secs) as u64)
        )
    }
}

/// Counts one attempt's bytes into the bytes bar, so a failed attempt's
/// share can be taken back before a retry.
#[derive(Clone)]
pub struct Counter {
    bar: ProgressBar,
    moved: Arc<AtomicU64>,
}

impl Counter {
    /// Records `n` more bytes moved.
    pub fn add(&self, n: u64) {
        self.bar.inc(n);
        self.moved.fetch_add(n, Ordering::Relaxed);
    }
}

/// One file's transfer failed.
pub struct Failure {
    /// Its path.
    pub path: String,
    /// Why.
    pub error: anyhow::Error,
}

/// Runs `task` for every item, `jobs` at a time, retrying transient
/// failures; returns the failures. `task` reports the bytes it moves to
/// the [`Counter`] it is given.
pub async fn run_all<T, F, Fut>(
    items: Vec<T>,
    jobs: usize,
    progress: &Progress,
    name: impl Fn(&T) -> String,
    task: F,
) -> Vec<Failure>
where
    T: Clone,
    F: Fn(T, Counter) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let name = &name;
    let task = &task;
    stream::iter(items)
        .map(|item| async move {
            let path = name(&item);
            progress.files.set_message(path.clone());
            let mut attempt = 1;
            loop {
                let counter = Counter {
                    bar: progress.bytes.clone(),
                    moved: Arc::new(AtomicU64::new(0)),
                };
                match task(item.clone(), counter.clone()).await {
                    Ok(()) => {
                        progress.files.inc(1);
                        return None;
                    }
                    Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                        progress.bytes.dec(counter.moved.load(Ordering::Relaxed));
                        tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
                        attempt += 1;
                    }
                    Err(error) => {
                        progress.files.inc(1);
                        return Some(Failure { path, error });
                    }
                }
            }
        })
        .buffer_unordered(jobs.max(1))
        .filter_map(|f| async move { f })
        .collect()
        .await
}

fn is_transient(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ClientError>()
        .is_some_and(ClientError::is_transient)
}

/// Prints each failure on stderr and turns them into exit code 1.
pub fn report_failures(failures: &[Failure], verb: &str, hint: &str) -> anyhow::Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    for f in failures {
        eprintln!("error: {}: {:#}", f.path, f.error);
    }
    Err(Exit {
        code: 1,
        message: format!(
            "{} file{} failed to {verb}; {hint}",
            failures.len(),
            if failures.len() == 1 { "" } else { "s" }
        ),
    }
    .into())
}
