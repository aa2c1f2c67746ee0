//! Metric names as the CLI orders and judges them: which columns a set of
//! points has and in what order, which metrics matter most, and which way
//! each one improves. Shared by `platform metrics` and the live views.

use crate::model::Metric;

/// The point's epoch when the trainer reported one (the API says 0 for
/// points that only carry a `step`).
pub fn epoch_of(m: &Metric) -> Option<i64> {
    (m.epoch != 0 || m.metrics.contains_key("epoch")).then_some(m.epoch)
}

/// Ascending step order: by epoch, then step, then arrival.
pub fn sort_by_step(points: &mut [Metric]) {
    points.sort_by_key(|m| (m.epoch, m.step.unwrap_or(i64::MIN), m.id));
}

/// Metric names across `points`: the table's columns.
pub fn keys(points: &[Metric]) -> Vec<String> {
    columns(points.iter().flat_map(|p| p.metrics.keys().cloned()))
}

/// Column order of the table and CSV: the lifted `loss` and `accuracy`
/// first, the rest alphabetically (`epoch` and `step` have their own).
pub fn columns(names: impl IntoIterator<Item = String>) -> Vec<String> {
    const FIRST: [&str; 2] = ["loss", "accuracy"];
    let mut all: Vec<String> = names
        .into_iter()
        .filter(|k| k != "epoch" && k != "step")
        .collect();
    all.sort_by_cached_key(|k| {
        (
            FIRST.iter().position(|f| f == k).unwrap_or(FIRST.len()),
            k.clone(),
        )
    });
    all.dedup();
    all
}

/// Well-known metrics, most useful first.
const PRIORITY: [&str; 10] = [
    "loss",
    "val_loss",
    "accuracy",
    "val_accuracy",
    "mAP50-95",
    "mAP50",
    "mAP",
    "precision",
    "recall",
    "f1",
];

/// Orders metric names for display: the well-known ones first, then other
/// losses, then other scores, then the rest, alphabetically within each.
pub fn rank(keys: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut keys: Vec<String> = keys.into_iter().collect();
    keys.sort_by_cached_key(|k| {
        let class = match PRIORITY.iter().position(|p| p == k) {
            Some(i) => i,
            None => {
                PRIORITY.len()
                    + match Direction::of(k) {
                        Direction::Lower => 0,
                        Direction::Higher => 1,
                        Direction::Unknown => 2,
                    }
            }
        };
        (class, k.clone())
    });
    keys.dedup();
    keys
}

/// Which way a metric improves, guessed from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Losses and error rates.
    Lower,
    /// Accuracy, mAP, precision, recall, F1, IoU…
    Higher,
    /// Learning rates, timings and anything else.
    Unknown,
}

impl Direction {
    /// The direction of metric `key`.
    pub fn of(key: &str) -> Direction {
        let k = key.to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| k.contains(w));
        if has(&["loss", "err", "perplexity", "wer", "cer"]) {
            Direction::Lower
        } else if has(&[
            "acc",
            "map",
            "precision",
            "recall",
            "f1",
            "iou",
            "dice",
            "auc",
            "score",
            "bleu",
        ]) {
            Direction::Higher
        } else {
            Direction::Unknown
        }
    }
}
