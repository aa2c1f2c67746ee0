//! Wire types of the dataset and artifact endpoints.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One stored file: a dataset file or a job artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredFile {
    /// Path relative to the dataset or to the job's outputs.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Full URI in the object store (`s3://bucket/…` or `file:///…`).
    pub uri: String,
    /// When the object was last written.
    pub last_modified: DateTime<Utc>,
}

/// A dataset in `GET /api/v1/datasets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatasetSummary {
    /// Dataset name.
    pub name: String,
    /// URI to pass as `dataset_s3_uri` when creating a job.
    pub uri: String,
    /// Number of files.
    pub file_count: u64,
    /// Sum of the files' sizes in bytes.
    pub total_bytes: u64,
}

/// `GET /api/v1/datasets/{name}`: the summary plus every file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Dataset {
    /// Dataset name.
    pub name: String,
    /// URI to pass as `dataset_s3_uri` when creating a job.
    pub uri: String,
    /// Number of files.
    pub file_count: u64,
    /// Sum of the files' sizes in bytes.
    pub total_bytes: u64,
    /// The files, sorted by path.
    pub files: Vec<StoredFile>,
}
