//! The store's key layout. Every key built here from a user-supplied name
//! or path is checked first with the rules of [`crate::model::names`], so
//! nothing can escape its dataset's or job's prefix.
//!
//! Layout (the same under an S3 bucket and under the local store root):
//!
//! ```text
//! datasets/<name>/<path>       files uploaded with `platform dataset upload`
//! jobs/<id>/outputs/<path>     a job's artifacts (checkpoints, exports)
//! jobs/<id>/logs/trainer.log   a finished job's archived trainer log
//! ```

use uuid::Uuid;

use crate::model::ValidationError;

pub use crate::model::names::{
    dataset_name, relative_path, MAX_DATASET_NAME, MAX_PATH_BYTES, MAX_SEGMENT_BYTES,
};

/// Top-level prefix of datasets.
pub const DATASETS: &str = "datasets";
/// Name of an archived trainer log under `jobs/<id>/logs/`.
pub const TRAINER_LOG: &str = "trainer.log";

/// `datasets/<name>/` (validated).
pub fn dataset_prefix(name: &str) -> Result<String, ValidationError> {
    dataset_name(name)?;
    Ok(format!("{DATASETS}/{name}/"))
}

/// `datasets/<name>/<path>` (validated).
pub fn dataset_file(name: &str, path: &str) -> Result<String, ValidationError> {
    let prefix = dataset_prefix(name)?;
    relative_path("path", path)?;
    Ok(format!("{prefix}{path}"))
}

/// `jobs/<id>/outputs/`.
pub fn outputs_prefix(job: Uuid) -> String {
    format!("jobs/{job}/outputs/")
}

/// `jobs/<id>/outputs/<path>` (validated).
pub fn output_file(job: Uuid, path: &str) -> Result<String, ValidationError> {
    relative_path("path", path)?;
    Ok(format!("{}{path}", outputs_prefix(job)))
}

/// `jobs/<id>/logs/trainer.log`.
pub fn trainer_log(job: Uuid) -> String {
    format!("jobs/{job}/logs/{TRAINER_LOG}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let id = Uuid::nil();
        assert_eq!(dataset_file("d", "a/b.jpg").unwrap(), "datasets/d/a/b.jpg");
        assert_eq!(
            output_file(id, "best.pt").unwrap(),
            format!("jobs/{id}/outputs/best.pt")
        );
        assert_eq!(trainer_log(id), format!("jobs/{id}/logs/trainer.log"));
        assert!(output_file(id, "../logs/trainer.log").is_err());
    }
}
