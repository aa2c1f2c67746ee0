//! Job outputs: everything under `jobs/<id>/outputs/`, where trainers
//! write (directly on S3, through the daemon otherwise), until retention
//! deletes them when asked to.

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

    /// Deletes every artifact of a job (retention): how many objects went,
    /// and their bytes.
    pub async fn delete_artifacts(&self, job: Uuid) -> Result<(u64, u64), StoreError> {
        let prefix = keys::outputs_prefix(job);
        let files = self.list_files(&prefix).await?;
        let bytes = files.iter().map(|f| f.size).sum();
        let count = files.len() as u64;
        let keys = files
            .into_iter()
            .map(|f| format!("{prefix}{}", f.path))
            .collect();
        self.delete_keys(keys).await?;
        Ok((count, bytes))
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
        s.put_artifact_bytes(id, "last.pt", Bytes::from_static(b"abc"))
            .await
            .unwrap();
        let other = Uuid::now_v7();
        s.put_artifact_bytes(other, "best.pt", Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(s.delete_artifacts(id).await.unwrap(), (2, 10));
        assert!(s.artifacts(id).await.unwrap().is_empty());
        assert_eq!(
            s.artifacts(other).await.unwrap().len(),
            1,
            "only the job's own"
        );
    }
}
