//! What a live view knows about one job, folded from its events: the latest
//! snapshot, latest and best metrics, where training is (epoch or step),
//! and a smoothed ETA; and the words the views print from it (the progress
//! line, fitted to the terminal, and the closing summary).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Instant;

use chrono::Utc;

use super::events::Update;
use super::metric_keys::{epoch_of, rank, Direction};
use super::output;
use crate::model::{Job, Metric};

/// Where a point lies in training: its epoch when the trainer reports
/// epochs, else its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// A reported epoch.
    Epoch(i64),
    /// A step, for trainers that report no epochs.
    Step(i64),
}

impl Position {
    fn of(m: &Metric) -> Option<Position> {
        epoch_of(m)
            .map(Position::Epoch)
            .or(m.step.map(Position::Step))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Epoch(e) => write!(f, "epoch {e}"),
            Position::Step(s) => write!(f, "step {s}"),
        }
    }
}

/// What a watcher knows about a job so far.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The latest snapshot.
    pub job: Option<Job>,
    /// Latest value of every metric key.
    latest: BTreeMap<String, f64>,
    /// Best value of every key with a known direction, and where it was.
    best: HashMap<String, (f64, Option<Position>)>,
    /// The latest reported epoch.
    epoch: Option<i64>,
    /// Where the latest point was.
    position: Option<Position>,
    eta: Eta,
}

impl Tracker {
    /// Folds in one event.
    pub fn apply(&mut self, u: &Update) {
        match u {
            Update::Job(j) => {
                self.eta.observe(j, Instant::now());
                self.job = Some((**j).clone());
            }
            Update::Metric(m) => self.point(m),
            Update::Other => {}
        }
    }

    fn point(&mut self, m: &Metric) {
        let pos = Position::of(m);
        if let Some(e) = epoch_of(m) {
            self.epoch = Some(e);
        }
        self.position = pos;
        for (k, v) in &m.metrics {
            let Some(v) = v.as_f64() else { continue };
            if k == "epoch" || k == "step" {
                continue;
            }
            self.latest.insert(k.clone(), v);
            let better = |old: f64| match Direction::of(k) {
                Direction::Lower => v < old,
                Direction::Higher => v > old,
                Direction::Unknown => false,
            };
            if Direction::of(k) != Direction::Unknown {
                let e = self.best.entry(k.clone()).or_insert((v, pos));
                if better(e.0) {
                    *e = (v, pos);
                }
            }
        }
    }

    /// Current and total epochs, when known (from the message `epoch 3/10`,
    /// the points' epochs and `config.epochs`).
    pub fn epochs(&self) -> (Option<i64>, Option<i64>) {
        let job = self.job.as_ref();
        let from_msg = job.and_then(|j| j.message.as_deref()).and_then(parse_epoch);
        let total = job
            .and_then(|j| j.config.as_ref())
            .and_then(|c| c.get("epochs"))
            .and_then(|v| v.as_i64())
            .or(from_msg.map(|m| m.1));
        (from_msg.map(|m| m.0).or(self.epoch), total)
    }

    /// The `n` most useful latest metrics, e.g. `["loss 0.53", "mAP50 0.61"]`.
    fn metric_parts(&self, n: usize) -> Vec<String> {
        rank(self.latest.keys().cloned())
            .into_iter()
            .take(n)
            .filter_map(|k| self.latest.get(&k).map(|v| format!("{k} {}", fmt(*v))))
            .collect()
    }

    /// Up to `n` latest metrics, most useful first, e.g. `loss 0.53 · mAP50 0.61`.
    pub fn key_metrics(&self, n: usize) -> String {
        self.metric_parts(n).join(SEPARATOR)
    }

    /// The status line: where training is, metrics, the trainer's message,
    /// elapsed time and ETA; within `width` columns, dropping the least
    /// useful parts first (never cutting a word).
    pub fn line(&self, width: usize) -> String {
        let Some(job) = &self.job else {
            return "connecting…".into();
        };
        // (priority, text): lower numbers are kept longer.
        let mut parts: Vec<(u8, String)> = Vec::new();
        match (self.epochs(), self.position) {
            ((Some(e), Some(t)), _) => parts.push((0, format!("epoch {e}/{t}"))),
            ((Some(e), None), _) => parts.push((0, format!("epoch {e}"))),
            (_, Some(p @ Position::Step(_))) => parts.push((0, p.to_string())),
            _ => {}
        }
        for (i, m) in self.metric_parts(3).into_iter().enumerate() {
            parts.push((2 + i as u8, m));
        }
        if let Some(m) = job.message.as_deref().filter(|m| parse_epoch(m).is_none()) {
            parts.push((5, m.lines().next().unwrap_or("").to_string()));
        }
        let now = Utc::now();
        match job.started_at {
            Some(start) if !job.status.is_terminal() => {
                let elapsed = (now - start).num_seconds().max(0);
                let mut t = format!("{} elapsed", output::duration(elapsed));
                if let Some(left) = self.eta.remaining(Instant::now()) {
                    t.push_str(&format!(", ETA {}", output::duration(left.round() as i64)));
                }
                parts.push((1, t));
            }
            None if !job.status.is_terminal() => parts.push((
                1,
                format!(
                    "waiting for a runner ({})",
                    output::duration((now - job.created_at).num_seconds())
                ),
            )),
            _ => {}
        }
        fit(parts, width)
    }

    /// The closing summary lines (how the job ended is said by the exit
    /// error, with the whole of its `error`).
    pub fn summary(&self, job: &Job) -> Vec<String> {
        let took = job
            .started_at
            .zip(job.completed_at)
            .map(|(s, c)| format!(" in {}", output::duration((c - s).num_seconds())))
            .unwrap_or_default();
        let mut lines = vec![format!(
            "job {} {}{took}",
            output::job_number(job),
            output::status(job.status)
        )];
        let at = |pos: &Option<Position>| pos.map(|p| format!(" ({p})")).unwrap_or_default();
        let keys = rank(self.latest.keys().cloned());
        let best: Vec<String> = keys
            .iter()
            .filter_map(|k| {
                self.best
                    .get(k)
                    .map(|(v, pos)| format!("{k} {}{}", fmt(*v), at(pos)))
            })
            .take(4)
            .collect();
        if !best.is_empty() {
            lines.push(format!("  best        {}", best.join(", ")));
        }
        let last = self.metric_parts(4);
        if !last.is_empty() {
            lines.push(format!(
                "  last        {}{}",
                last.join(", "),
                at(&self.position)
            ));
        }
        if let Some(c) = &job.checkpoint_s3_uri {
            lines.push(format!("  checkpoint  {c}"));
        }
        lines
    }
}

/// Between the parts of a status line.
const SEPARATOR: &str = " · ";

/// Joins `parts` (priority, text) in their order, leaving out the
/// highest-numbered priorities until the line fits in `width` columns; a
/// single part that is still too long is shortened at a word boundary.
pub fn fit(mut parts: Vec<(u8, String)>, width: usize) -> String {
    let len = |parts: &[(u8, String)]| {
        parts
            .iter()
            .map(|(_, t)| console::measure_text_width(t))
            .sum::<usize>()
            + SEPARATOR.chars().count() * parts.len().saturating_sub(1)
    };
    while parts.len() > 1 && len(&parts) > width {
        let drop = parts
            .iter()
            .enumerate()
            .max_by_key(|(i, (prio, _))| (*prio, *i))
            .map(|(i, _)| i)
            .unwrap_or(0);
        parts.remove(drop);
    }
    let line = parts
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(SEPARATOR);
    shorten(&line, width)
}

/// `text` within `width` columns, cut after a whole word with `…`.
fn shorten(text: &str, width: usize) -> String {
    if console::measure_text_width(text) <= width {
        return text.to_string();
    }
    let mut out = String::new();
    for word in text.split(' ') {
        let next = if out.is_empty() {
            word.to_string()
        } else {
            format!("{out} {word}")
        };
        if console::measure_text_width(&next) + 1 > width {
            break;
        }
        out = next;
    }
    if out.is_empty() {
        // One long word: cut it anyway rather than overflow the line.
        out = console::truncate_str(text, width.saturating_sub(1), "").into_owned();
    }
    out + "…"
}

/// Remaining time, estimated from how fast the job's progress has grown and
/// smoothed: between reports it counts down, and a new report moves it only
/// part of the way, so it does not jump with each epoch's speed.
#[derive(Debug, Default)]
struct Eta {
    /// Seconds left, as estimated at an instant.
    estimate: Option<(Instant, f64)>,
    /// The progress last folded in.
    progress: f64,
}

/// Seconds of running before an ETA is shown: the first report usually
/// comes moments after the start and says little about the pace.
const MIN_ELAPSED_FOR_ETA: f64 = 2.0;

/// How much a new report moves the estimate.
const ETA_WEIGHT: f64 = 0.3;

impl Eta {
    /// Folds in a snapshot of the job, seen at `now`.
    fn observe(&mut self, job: &Job, now: Instant) {
        let p = job.progress;
        let Some(start) = job.started_at else { return };
        if job.status.is_terminal() || p <= 0.0 || p >= 1.0 || p == self.progress {
            return;
        }
        self.progress = p;
        // Both ends in the server's clock, so the client's clock may differ.
        let elapsed = (job.updated_at - start).num_milliseconds() as f64 / 1000.0;
        if elapsed < MIN_ELAPSED_FOR_ETA {
            return;
        }
        let fresh = elapsed * (1.0 - p) / p;
        let blended = match self.remaining(now) {
            Some(previous) => ETA_WEIGHT * fresh + (1.0 - ETA_WEIGHT) * previous,
            None => fresh,
        };
        self.estimate = Some((now, blended));
    }

    /// Seconds left at `now`; none before there is an estimate, or once it
    /// ran out before the job did (the next report says more).
    fn remaining(&self, now: Instant) -> Option<f64> {
        let (at, left) = self.estimate?;
        Some(left - now.saturating_duration_since(at).as_secs_f64()).filter(|l| *l >= 1.0)
    }
}

/// `epoch 3/10` (any case, anywhere in the text) → (3, 10).
pub fn parse_epoch(text: &str) -> Option<(i64, i64)> {
    let lower = text.to_ascii_lowercase();
    let rest = &lower[lower.find("epoch")? + "epoch".len()..];
    let rest = rest.trim_start_matches([' ', ':', '=']);
    let (cur, rest) = rest.split_once('/')?;
    let total: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((cur.trim().parse().ok()?, total.parse().ok()?))
}

fn fmt(v: f64) -> String {
    output::number(&serde_json::json!(v))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;
    use crate::model::JobStatus;

    #[test]
    fn finds_epochs_in_messages() {
        assert_eq!(parse_epoch("epoch 21/50"), Some((21, 50)));
        assert_eq!(
            parse_epoch("Training: Epoch 3 / 10, loss 0.5"),
            Some((3, 10))
        );
        assert_eq!(parse_epoch("epoch: 4/8"), Some((4, 8)));
        assert_eq!(parse_epoch("epoch 3"), None);
        assert_eq!(parse_epoch("warming up"), None);
    }

    #[test]
    fn lines_fit_without_cutting_words() {
        let parts = || {
            vec![
                (0, "epoch 3/10".to_string()),
                (2, "loss 0.5312".to_string()),
                (3, "mAP50 0.61".to_string()),
                (5, "validating on the held-out split".to_string()),
                (1, "1m 02s elapsed, ETA 3m 10s".to_string()),
            ]
        };
        let full = fit(parts(), 200);
        assert_eq!(
            full,
            "epoch 3/10 · loss 0.5312 · mAP50 0.61 · validating on the held-out split · 1m 02s elapsed, ETA 3m 10s"
        );
        // The message goes first, then the lesser metrics; order is kept.
        assert_eq!(
            fit(parts(), 70),
            "epoch 3/10 · loss 0.5312 · mAP50 0.61 · 1m 02s elapsed, ETA 3m 10s"
        );
        assert_eq!(fit(parts(), 45), "epoch 3/10 · 1m 02s elapsed, ETA 3m 10s");
        for width in 5..120 {
            let line = fit(parts(), width);
            assert!(
                console::measure_text_width(&line) <= width,
                "{width}: {line:?}"
            );
        }
        // One part that cannot fit is cut after a whole word.
        assert_eq!(
            fit(vec![(5, "validating on the held-out split".into())], 20),
            "validating on the…"
        );
    }

    fn job(progress: f64, started: i64, updated_ms: i64) -> Job {
        let t = |ms| Utc.timestamp_millis_opt(ms).single().unwrap();
        Job {
            id: uuid::Uuid::now_v7(),
            number: 1,
            user_id: "u".into(),
            model_name: "m".into(),
            framework: "demo".into(),
            dataset_s3_uri: "s3://b/d/".into(),
            config: None,
            status: JobStatus::Running,
            progress,
            message: None,
            checkpoint_s3_uri: None,
            error: None,
            created_at: t(started),
            updated_at: t(updated_ms),
            started_at: Some(t(started)),
            completed_at: None,
            runner: None,
            exit_code: None,
            sched: Default::default(),
            labels: Default::default(),
            pruned: None,
        }
    }

    #[test]
    fn the_eta_waits_for_a_pace_then_counts_down_and_moves_smoothly() {
        let start = 1_700_000_000_000;
        let t0 = Instant::now();
        let mut eta = Eta::default();
        // Epoch 1 of 10 reported half a second in: no pace yet, no "ETA 0s".
        eta.observe(&job(0.1, start, start + 500), t0);
        assert_eq!(eta.remaining(t0), None);
        // 10 s for 20 %: 40 s left, counting down between reports.
        eta.observe(&job(0.2, start, start + 10_000), t0);
        let left = eta.remaining(t0).unwrap();
        assert!((left - 40.0).abs() < 1e-9, "{left}");
        let later = t0 + Duration::from_secs(5);
        assert!((eta.remaining(later).unwrap() - 35.0).abs() < 1e-9);
        // A fast epoch says 15 s left; the estimate moves only part of the way.
        eta.observe(&job(0.5, start, start + 15_000), later);
        let moved = eta.remaining(later).unwrap();
        assert!((moved - (0.3 * 15.0 + 0.7 * 35.0)).abs() < 1e-9, "{moved}");
        // Run out before the job did: no ETA rather than "0s".
        assert_eq!(eta.remaining(later + Duration::from_secs(600)), None);
    }

    #[test]
    fn step_only_metrics_are_placed_by_step_not_epoch_0() {
        let mut t = Tracker::default();
        let point = |id, step, loss: f64| Metric {
            id,
            job_id: uuid::Uuid::nil(),
            epoch: 0,
            step: Some(step),
            loss: Some(loss),
            accuracy: None,
            metrics: serde_json::json!({"step": step, "loss": loss})
                .as_object()
                .cloned()
                .unwrap(),
            created_at: Utc::now(),
            attempt: 1,
        };
        t.apply(&Update::Metric(point(1, 100, 0.9)));
        t.apply(&Update::Metric(point(2, 200, 0.4)));
        t.apply(&Update::Metric(point(3, 300, 0.6)));
        let j = job(0.5, 1_700_000_000_000, 1_700_000_010_000);
        t.apply(&Update::Job(Box::new(j.clone())));
        let summary = t.summary(&j).join("\n");
        assert!(
            summary.contains("best        loss 0.4 (step 200)"),
            "{summary}"
        );
        assert!(
            summary.contains("last        loss 0.6 (step 300)"),
            "{summary}"
        );
        assert!(!summary.contains("epoch"), "{summary}");
        let line = t.line(200);
        assert!(line.starts_with("step 300 · loss 0.6"), "{line}");
    }
}
