//! Downsampling a long metric history, the same on every backend: for
//! plots (`?max_points=`) the backends read `(id, value)` of the job's main
//! series and fetch full rows only for the ids kept here; retention
//! (`platform prune`) deletes the others, so a pruned history draws the
//! same curve.

/// Which table a read is of: training points or system metrics (GPU
/// telemetry: same columns plus the series it downsamples on). One
/// logical table, two names: PostgreSQL keeps it under its portable name
/// (what `db migrate` and `db status` call it), SQLite compactly under
/// another (schema 13, see `db/sqlite/metrics.rs`). The series expression
/// is the same on both.
#[derive(Debug, Clone, Copy)]
pub struct MetricTable {
    /// Its portable name: PostgreSQL's table.
    pub name: &'static str,
    /// The table SQLite keeps these points in.
    pub compact: &'static str,
    /// GPU telemetry rather than training points.
    pub system: bool,
    /// The number downsampling keeps the extremes of.
    pub series: &'static str,
}

impl MetricTable {
    /// Training points, or with `system` GPU telemetry.
    pub fn of(system: bool) -> Self {
        if system {
            MetricTable {
                name: "system_metrics",
                compact: "system_points",
                system,
                series: "series",
            }
        } else {
            MetricTable {
                name: "metrics",
                compact: "points",
                system,
                series: "COALESCE(loss, accuracy, epoch)",
            }
        }
    }

    /// Both tables.
    pub fn both() -> [Self; 2] {
        [Self::of(false), Self::of(true)]
    }

    /// The table with this portable name, if it is one.
    pub fn named(name: &str) -> Option<Self> {
        Self::both().into_iter().find(|t| t.name == name)
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
    deletions_sparing(series, &kept, chunk)
}

/// The points of `series` not in `kept` (ascending ids), as ascending
/// ranges of at most `chunk` points that hold no kept point.
pub(super) fn deletions_sparing(series: &[(i64, f64)], kept: &[i64], chunk: u64) -> Vec<IdRange> {
    let mut kept = kept.iter().copied().peekable();
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

/// A run of consecutive points of one series: a single point, or a block
/// the writer summarised (`metric_blocks`) so a long history is not read
/// point by point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    /// Id of its first point.
    pub first: i64,
    /// Id of its last point.
    pub last: i64,
    /// Points in it.
    pub points: u64,
    /// Its lowest `(id, value)`, the first one on a tie.
    pub min: (i64, f64),
    /// Its highest `(id, value)`, the last one on a tie.
    pub max: (i64, f64),
}

impl Segment {
    /// One point.
    pub fn point(id: i64, value: f64) -> Self {
        Segment {
            first: id,
            last: id,
            points: 1,
            min: (id, value),
            max: (id, value),
        }
    }

    /// The summary of consecutive points, ascending by id; `None` if empty.
    pub fn of(points: &[(i64, f64)]) -> Option<Self> {
        let (&head, rest) = points.split_first()?;
        let mut s = Segment::point(head.0, head.1);
        for &(id, v) in rest {
            s.add(Segment::point(id, v));
        }
        Some(s)
    }

    /// Grows this run by the next one.
    fn add(&mut self, next: Segment) {
        self.last = next.last;
        self.points += next.points;
        if next.min.1.total_cmp(&self.min.1).is_lt() {
            self.min = next.min;
        }
        if next.max.1.total_cmp(&self.max.1).is_ge() {
            self.max = next.max;
        }
    }
}

/// The ids kept by the downsampler, ascending; at most `max` of them.
pub(super) fn pick_extremes(series: &[(i64, f64)], max: usize) -> Vec<i64> {
    let segments: Vec<Segment> = series
        .iter()
        .map(|&(id, v)| Segment::point(id, v))
        .collect();
    pick_from_segments(&segments, max)
}

/// [`pick_extremes`] over a series given as consecutive runs: the first
/// point, the last, and per bucket of equal point count the minimum and
/// maximum. A run belongs whole to the bucket its first point falls in, so
/// over single points this is exact and over blocks the buckets are as
/// even as the blocks allow; the extremes are exact either way. A series of
/// at most `max` points keeps every point only when it is given point by
/// point (a block shows only its first, last and extremes).
pub(super) fn pick_from_segments(segments: &[Segment], max: usize) -> Vec<i64> {
    let (Some(head), Some(tail)) = (segments.first(), segments.last()) else {
        return Vec::new();
    };
    let (first, last) = (head.first, tail.last);
    let total: u64 = segments.iter().map(|s| s.points).sum();
    if total <= max as u64 {
        let mut ids: Vec<i64> = segments
            .iter()
            .flat_map(|s| [s.first, s.min.0, s.max.0, s.last])
            .collect();
        ids.sort_unstable();
        ids.dedup();
        return ids;
    }
    // Two points (min and max) per bucket, leaving room for first and last.
    let buckets = (max.saturating_sub(2) / 2).max(1) as u64;
    let size = (total - 2).div_ceil(buckets).max(1);
    let mut ids = vec![first];
    let mut open: Option<(u64, Segment)> = None;
    let mut pos = 0u64;
    for s in segments {
        let at = pos;
        pos += s.points;
        // The first and the last point are kept anyway, outside the buckets.
        if s.points == 1 && (at == 0 || at == total - 1) {
            continue;
        }
        let bucket = at.saturating_sub(1) / size;
        match open.as_mut() {
            Some((b, run)) if *b == bucket => run.add(*s),
            _ => {
                if let Some((_, run)) = open.replace((bucket, *s)) {
                    push_extremes(&mut ids, &run);
                }
            }
        }
    }
    if let Some((_, run)) = open {
        push_extremes(&mut ids, &run);
    }
    ids.push(last);
    // Blocks holding the first or last point may name them again.
    ids.sort_unstable();
    ids.dedup();
    ids.truncate(max - 1);
    if ids.last() != Some(&last) {
        ids.push(last);
    }
    ids
}

fn push_extremes(ids: &mut Vec<i64>, run: &Segment) {
    let (lo, hi) = (run.min.0, run.max.0);
    ids.push(lo.min(hi));
    if hi != lo {
        ids.push(lo.max(hi));
    }
}

#[cfg(test)]
mod tests {
    use super::{deletions, pick_extremes, pick_from_segments, IdRange, Segment};

    #[test]
    fn blocks_keep_the_same_extremes_as_points() {
        let mut series: Vec<(i64, f64)> = (1..=100_000).map(|i| (i * 2, (i % 11) as f64)).collect();
        series[31_337].1 = 1e9; // a spike
        series[77_777].1 = -1e9; // a dip
        let (head, rest) = series.split_at(500);
        let (blocks, tail) = rest.split_at(rest.len() - 700);
        let mut segments: Vec<Segment> =
            head.iter().map(|&(id, v)| Segment::point(id, v)).collect();
        segments.extend(blocks.chunks(1024).filter_map(Segment::of));
        segments.extend(tail.iter().map(|&(id, v)| Segment::point(id, v)));
        // Buckets of at least two blocks, as the backends use them.
        for max in [4, 7, 40, 90] {
            let ids = pick_from_segments(&segments, max);
            assert!(ids.len() <= max, "{} ids for {max}", ids.len());
            assert_eq!(ids.first(), Some(&2));
            assert_eq!(ids.last(), Some(&200_000));
            assert!(ids.contains(&(31_338 * 2)) && ids.contains(&(77_778 * 2)));
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids ascend");
            let exact = pick_extremes(&series, max);
            assert!(
                ids.len() + 2 >= exact.len(),
                "about as many points as the exact pick: {} against {}",
                ids.len(),
                exact.len()
            );
        }
    }

    #[test]
    fn a_block_keeps_its_first_minimum_and_last_maximum() {
        let b = Segment::of(&[(5, 1.0), (6, 0.0), (7, 3.0), (8, 0.0), (9, 3.0)]).unwrap();
        assert_eq!((b.first, b.last, b.points), (5, 9, 5));
        assert_eq!((b.min, b.max), ((6, 0.0), (9, 3.0)));
        assert_eq!(Segment::of(&[]), None);
    }

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
