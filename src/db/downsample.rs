//! Downsampling a long metric history for plots, the same on every
//! backend: the backends read `(id, value)` of the job's main series and
//! fetch full rows only for the ids kept here.

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
    use super::pick_extremes;

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
