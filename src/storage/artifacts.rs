//! Job outputs: everything under `jobs/<id>/outputs/`, where trainers
//! write (directly on S3, through the daemon otherwise).

use std::fmt;

use bytes::Bytes;
use uuid::Uuid;

use super::{keys, Fetched, Store, StoreError, WriteMode};
use crate::model::StoredFile;

impl Store {
    /// `OUTPUT_S3_URI` for a job: `<store>/jobs/<id>/outputs/`.
    pub fn output_uri(&self, job: Uuid) -> String {
        self.uri(&keys::outputs_prefix(job))
    }

    /// A job's artifacts (everything under its outputs prefix).
    pub async fn artifacts(&self, job: Uuid) -> Result<Vec<StoredFile>, StoreError> {
        self.list_files(&keys::outputs_prefix(job)).await
    }

    /// Streams an upload to `jobs/<id>/outputs/<path>`; the answer and any
    /// refusal name the file by `path`.
    pub async fn put_artifact<S, E>(
        &self,
        job: Uuid,
        path: &str,
        body: S,
        declared_len: Option<u64>,
        mode: WriteMode,
    ) -> Result<StoredFile, StoreError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: fmt::Display,
    {
        let key = keys::output_file(job, path)?;
        let mut f = self
            .write_stream(&key, body, declared_len, mode)
            .await
            .map_err(|e| e.naming(|| artifact_name(job, path)))?;
        f.path = path.to_string();
        Ok(f)
    }

    /// Reads one artifact, or a presigned URL for it.
    pub async fn fetch_artifact(&self, job: Uuid, path: &str) -> Result<Fetched, StoreError> {
        let key = keys::output_file(job, path)?;
        self.fetch(&key)
            .await
            .map_err(|e| e.naming(|| artifact_name(job, path)))
    }

    /// Stores a small artifact for a job (e.g. a checkpoint written by the
    /// built-in trainer) under `jobs/<id>/outputs/<path>`.
    pub async fn put_artifact_bytes(
        &self,
        job: Uuid,
        path: &str,
        bytes: Bytes,
    ) -> Result<StoredFile, StoreError> {
        let len = bytes.len() as u64;
        let body = futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]);
        self.put_artifact(job, path, body, Some(len), WriteMode::Replace)
            .await
    }
}

fn artifact_name(job: Uuid, path: &str) -> String {
    format!("artifact {path:?} of job {job}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::local;

    #[tokio::test]
    async fn artifacts_round_trip() {
        let (_d, s) = local();
        let id = Uuid::now_v7();
        let f = s
            .put_artifact_bytes(id, "ckpt/best.pt", Bytes::from_static(b"weights"))
            .await
            .unwrap();
        assert_eq!(f.path, "ckpt/best.pt");
        assert_eq!(f.size, 7);
        let listed = s.artifacts(id).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].path, "ckpt/best.pt");
    }
}
