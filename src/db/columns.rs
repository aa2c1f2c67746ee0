//! Stored columns both backends turn into model values the same way. A
//! module of its own, below the backends, so that they do not import the
//! per-feature dispatch modules (`prune.rs`) that import them.

use chrono::{DateTime, Utc};

use super::DbError;
use crate::model::Pruned;

/// The mark stored on a job as the API shows it.
pub(super) fn pruned(
    at: Option<DateTime<Utc>>,
    max_points: Option<i64>,
    logs: bool,
    artifacts: bool,
) -> Result<Option<Pruned>, DbError> {
    let max_points = max_points
        .map(u32::try_from)
        .transpose()
        .map_err(|e| DbError::Corrupt(format!("pruned_max_points: {e}")))?;
    Ok(at.map(|at| Pruned {
        at,
        max_points,
        logs,
        artifacts,
    }))
}
