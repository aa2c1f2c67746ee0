//! The ordered, bounded queue of reports a trainer has not delivered yet,
//! shared by the in-process [`super::Reporter`] (memory) and
//! `platform report` ([`super::spool`], on disk).
//!
//! Every report gets a `sequence` from one counter per job (callbacks and
//! metric batches share it, as on the daemon), so a report retried after a
//! lost answer is acknowledged and not applied twice. When the queue is
//! full, progress-only updates are merged into the one queued before them;
//! metric points and terminal reports are never dropped: the producer waits
//! for room instead.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::model::{JobStatus, MetricBatch, TrainingUpdate};

/// Queue capacity of an in-process reporter, in metric points (a callback
/// counts as one).
pub const MEMORY_CAPACITY: usize = 100_000;
/// Queue capacity of `platform report`'s on-disk queue.
pub const DISK_CAPACITY: usize = 10_000;

/// One report waiting to be delivered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum Report {
    /// `POST …/callback`.
    Callback(TrainingUpdate),
    /// `POST …/metrics`.
    Points(MetricBatch),
}

impl Report {
    /// The report's sequence, once stamped.
    pub fn sequence(&self) -> Option<i64> {
        match self {
            Report::Callback(u) => u.sequence,
            Report::Points(b) => b.sequence,
        }
    }

    fn set_sequence(&mut self, s: i64) {
        match self {
            Report::Callback(u) => u.sequence = Some(s),
            Report::Points(b) => b.sequence = Some(s),
        }
    }

    /// Room it takes in a queue: its metric points, at least one.
    fn weight(&self) -> usize {
        match self {
            Report::Callback(_) => 1,
            Report::Points(b) => b.points.len().max(1),
        }
    }

    /// A `running` callback with nothing but progress and a message: a
    /// later one supersedes it, so two in a row can be merged.
    fn progress_only(&self) -> bool {
        matches!(self, Report::Callback(u)
            if u.status == JobStatus::Running
                && u.metrics.as_ref().is_none_or(|m| m.is_empty())
                && u.checkpoint_s3_uri.is_none()
                && u.error.is_none())
    }
}

/// The queue, with the job's sequence counter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outbox {
    /// Highest sequence handed out (or seen on a report that came with one).
    last_sequence: i64,
    items: VecDeque<Report>,
}

impl Outbox {
    /// Queues `report` behind the others, giving it the next sequence
    /// unless it came with one (then the counter moves past it, so
    /// sequences stay increasing). A progress-only update is merged into a
    /// progress-only update queued just before it (never into the first
    /// report, which may be on its way). Hands the report back, unchanged,
    /// when there is no room for it within `capacity`.
    pub fn push(&mut self, mut report: Report, capacity: usize) -> Result<(), Box<Report>> {
        let sequence = report.sequence().unwrap_or(self.last_sequence + 1);
        if self.merged(&report, sequence) {
            self.last_sequence = self.last_sequence.max(sequence);
            return Ok(());
        }
        if !self.items.is_empty() && self.weight() + report.weight() > capacity {
            return Err(Box::new(report));
        }
        report.set_sequence(sequence);
        self.last_sequence = self.last_sequence.max(sequence);
        self.items.push_back(report);
        Ok(())
    }

    /// Merges a progress-only `report` into the last queued one when that
    /// is progress-only too, is not the first, and is older.
    fn merged(&mut self, report: &Report, sequence: i64) -> bool {
        let (Report::Callback(new), true) = (report, report.progress_only()) else {
            return false;
        };
        if self.items.len() < 2 || !self.items.back().is_some_and(Report::progress_only) {
            return false;
        }
        let Some(Report::Callback(last)) = self.items.back_mut() else {
            return false;
        };
        if last.sequence.is_some_and(|s| s >= sequence) {
            return false;
        }
        last.sequence = Some(sequence);
        if new.progress.is_some() {
            last.progress = new.progress;
        }
        if new.message.is_some() {
            last.message.clone_from(&new.message);
        }
        true
    }

    /// Makes the next automatic sequence at least `floor`.
    pub fn count_from(&mut self, floor: i64) {
        self.last_sequence = self.last_sequence.max(floor.saturating_sub(1));
    }

    /// The report to deliver next.
    pub fn front(&self) -> Option<&Report> {
        self.items.front()
    }

    /// Drops the first report (it was delivered, or can never be).
    pub fn pop(&mut self) -> Option<Report> {
        self.items.pop_front()
    }

    /// Drops every queued report (the job ended: nothing will be accepted).
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// How many reports are queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn weight(&self) -> usize {
        self.items.iter().map(Report::weight).sum()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn progress(p: f64) -> Report {
        Report::Callback(TrainingUpdate {
            job_id: None,
            status: JobStatus::Running,
            progress: Some(p),
            message: Some(format!("at {p}")),
            metrics: None,
            checkpoint_s3_uri: None,
            error: None,
            sequence: None,
        })
    }

    pub fn epoch(e: i64) -> Report {
        let mut r = progress(0.5);
        if let Report::Callback(u) = &mut r {
            u.metrics = Some([("epoch".to_string(), e.into())].into());
        }
        r
    }

    pub fn points(n: usize) -> Report {
        Report::Points(MetricBatch {
            points: vec![[("step".to_string(), 1.into())].into(); n],
            sequence: None,
        })
    }

    fn push(o: &mut Outbox, r: Report, cap: usize) -> Result<(), Box<Report>> {
        o.push(r, cap)
    }

    fn sequences(o: &Outbox) -> Vec<i64> {
        o.items.iter().filter_map(Report::sequence).collect()
    }

    #[test]
    fn reports_keep_their_order_and_increasing_sequences() {
        let mut o = Outbox::default();
        for r in [epoch(1), points(3), epoch(2), progress(0.9)] {
            push(&mut o, r, 100).unwrap();
        }
        assert_eq!(sequences(&o), vec![1, 2, 3, 4]);
        assert!(matches!(o.pop(), Some(Report::Callback(_))));
        assert!(matches!(o.pop(), Some(Report::Points(_))));
        // A report that brings its own sequence moves the counter past it.
        let mut r = epoch(3);
        if let Report::Callback(u) = &mut r {
            u.sequence = Some(10);
        }
        push(&mut o, r, 100).unwrap();
        push(&mut o, epoch(4), 100).unwrap();
        assert_eq!(sequences(&o), vec![3, 4, 10, 11]);
    }

    #[test]
    fn progress_only_updates_merge_but_never_into_the_first_report() {
        let mut o = Outbox::default();
        push(&mut o, progress(0.1), 100).unwrap();
        push(&mut o, progress(0.2), 100).unwrap();
        assert_eq!(o.len(), 2, "the first may be in flight: not merged into");
        push(&mut o, progress(0.3), 100).unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(sequences(&o), vec![1, 3], "the merged update is the newest");
        let Some(Report::Callback(last)) = o.items.back() else {
            panic!("a callback")
        };
        assert_eq!(
            (last.progress, last.message.as_deref()),
            (Some(0.3), Some("at 0.3"))
        );
        // Metric points are never merged.
        push(&mut o, epoch(1), 100).unwrap();
        push(&mut o, epoch(2), 100).unwrap();
        assert_eq!(o.len(), 4);
    }

    #[test]
    fn a_full_queue_hands_back_points_and_terminal_reports() {
        let mut o = Outbox::default();
        push(&mut o, points(4), 7).unwrap();
        push(&mut o, epoch(1), 7).unwrap();
        push(&mut o, progress(0.5), 7).unwrap();
        let back = push(&mut o, points(2), 7).unwrap_err();
        assert_eq!(back.sequence(), None, "handed back unstamped");
        let mut done = progress(1.0);
        if let Report::Callback(u) = &mut done {
            u.status = JobStatus::Completed;
        }
        let done = push(&mut o, done, 6).unwrap_err();
        // Progress still merges while full.
        push(&mut o, progress(0.6), 7).unwrap();
        assert_eq!(o.len(), 3);
        // Room again once the first report is delivered.
        o.pop();
        push(&mut o, *back, 7).unwrap();
        push(&mut o, *done, 7).unwrap();
        assert_eq!(sequences(&o), vec![2, 4, 5, 6]);
        // An oversized report still goes into an empty queue.
        let mut o = Outbox::default();
        push(&mut o, points(50), 6).unwrap();
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn the_queue_survives_serialisation() {
        let mut o = Outbox::default();
        push(&mut o, epoch(1), 100).unwrap();
        push(&mut o, points(2), 100).unwrap();
        let text = serde_json::to_string(&o).unwrap();
        let mut back: Outbox = serde_json::from_str(&text).unwrap();
        assert_eq!(sequences(&back), vec![1, 2]);
        push(&mut back, epoch(2), 100).unwrap();
        assert_eq!(sequences(&back), vec![1, 2, 3]);
    }
}
