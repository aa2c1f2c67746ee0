//! Downsampling a long metric history, the same on every backend: for
//! plots (`?max_points=`) the backends read `(id, value)` of the job's main
//! series and fetch full rows only for the ids kept here; retention
//! (`platform prune`) deletes the others, so a pruned history draws the
//! same curve.

/// Which table a read is of: training points (`metrics`) or system
/// metrics (`system_metrics`, same columns plus the series it downsamples
/// on). The SQL names are the same on every backend.
#[derive(Debug, Clone, Copy)]
pub struct MetricTable {
    /// The table's name.
    pub name: &'static str,
    /// The number downsampling keeps the extremes of.
    pub series: &'static str,
}

impl MetricTable {
    /// Training points, or with `system` GPU telemetry.
    pub fn of(system: bool) -> Self {
        if system {
            MetricTable {
                name: "system_metrics",
                series: "series",
            }
        } else {
            MetricTable {
                name: "metrics",
                series: "COALESCE(loss, accuracy, epoch)",
            }
        }
    }
}

/// Point ids `first..=last` of one job's series, all to be deleted, and
/// how many points that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first id.
    pub first: i64,
    /// The last id.
    pub last: i64,
    /// Points in the range.
    pub count: u64,
}

/// The points a series loses when it keeps at most `keep` of them (0:
/// none; otherwise the ones [`pick_extremes`] keeps), as ascending ranges
/// of at most `chunk` points that hold no kept point.
pub(super) fn deletions(series: &[(i64, f64)], keep: usize, chunk: u64) -> Vec<IdRange> {
    let kept = if keep == 0 {
        Vec::new()
    } else {
        pick_extremes(series, keep)
    };
    let mut kept = kept.into_iter().peekable();
    let mut out = Vec::new();
    let mut open: Option<IdRange> = None;
    for &(id, _) in series {
        if kept.peek() == Some(&id) {
            kept.next();
            out.extend(open.take());
            continue;
        }
        match open.as_mut() {
            Some(r) if r.count < chunk.max(1) => {
                r.last = id;
                r.count += 1;
            }
            _ => {
                out.extend(open.take());
                open = Some(IdRange {
                    first: id,
                    last: id,
                    count: 1,
                });
            }
        }
    }
    out.extend(open);
    out
}

/// The ids kept by the downsampler, ascending; at most `max` of them.
pub(super) fn pick_extremes(series: &[(i64, f64)], max: usize) -> Vec<i64> {
    let n = series.len();
    if n <= max {
        return series.iter().map(|(id, _)| *id).collect();
    }
    let (first, last) = (series[0].0, series[n - 1].0);
    let inner = &series[1..n - 1];
    // Two points (min and max) per bucket, leaving room for first and last.
    let buckets = ((max.saturating_sub(2)) / 2).max(1);
    let size = inner.len().div_ceil(buckets);
    let mut ids = vec![first];
    for chunk in inner.chunks(size) {
        let lo = chunk.iter().min_by(|a, b| a.1.total_cmp(&b.1)).map(|p| p.0);
        let hi = chunk.iter().max_by(|a, b| a.1.total_cmp(&b.1)).map(|p| p.0);
        let (Some(lo), Some(hi)) = (lo, hi) else {
            continue;
        };
        ids.push(lo.min(hi));
        if hi != lo {
            ids.push(lo.max(hi));
        }
    }
    ids.push(last);
    ids.truncate(max - 1);
    if ids.last() != Some(&last) {
        ids.push(last);
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::{deletions, pick_extremes, IdRange};

    #[test]
    fn deletions_spare_exactly_what_the_plot_keeps() {
        let mut series: Vec<(i64, f64)> = (1..=10_000).map(|i| (i * 3, (i % 7) as f64)).collect();
        series[4_321].1 = 1e6;
        let kept = pick_extremes(&series, 100);
        let ranges = deletions(&series, 100, 1_000);
        let deleted: u64 = ranges.iter().map(|r| r.count).sum();
        assert_eq!(deleted as usize + kept.len(), series.len());
        assert!(ranges.iter().all(|r| r.count <= 1_000 && r.first <= r.last));
        assert!(
            ranges.windows(2).all(|w| w[0].last < w[1].first),
            "ascending"
        );
        for id in &kept {
            assert!(
                !ranges.iter().any(|r| r.first <= *id && *id <= r.last),
                "kept point {id} lies in a deleted range"
            );
        }
        // The ranges cover every other point (counted by its position).
        let inside = series
            .iter()
            .filter(|(id, _)| ranges.iter().any(|r| r.first <= *id && *id <= r.last))
            .count();
        assert_eq!(inside as u64, deleted);
    }

    #[test]
    fn deleting_everything_is_chunked() {
        let series: Vec<(i64, f64)> = (1..=25).map(|i| (i, 0.0)).collect();
        assert_eq!(
            deletions(&series, 0, 10),
            vec![
                IdRange {
                    first: 1,
                    last: 10,
                    count: 10
                },
                IdRange {
                    first: 11,
                    last: 20,
                    count: 10
                },
                IdRange {
                    first: 21,
                    last: 25,
                    count: 5
                },
            ]
        );
        assert!(
            deletions(&series, 25, 10).is_empty(),
            "short series stay whole"
        );
    }

    #[test]
    fn keeps_first_last_and_spikes() {
        let mut series: Vec<(i64, f64)> = (1..=10_000).map(|i| (i, 1.0)).collect();
        series[5_000].1 = 100.0; // a spike
        series[7_000].1 = -100.0; // a dip
        let ids = pick_extremes(&series, 100);
        assert!(ids.len() <= 100, "{} points", ids.len());
        assert_eq!(ids.first(), Some(&1));
        assert_eq!(ids.last(), Some(&10_000));
        assert!(ids.contains(&5_001) && ids.contains(&7_001));
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids ascend");
    }

    #[test]
    fn short_series_untouched() {
        let series = vec![(1, 0.0), (2, 1.0)];
        assert_eq!(pick_extremes(&series, 10), vec![1, 2]);
    }
}
