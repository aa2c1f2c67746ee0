//! Archived trainer logs: a finished job's log is uploaded to
//! `jobs/<id>/logs/trainer.log`, so it outlives the runner's copy, until
//! retention deletes it.

use std::fmt;
use std::path::Path;

use bytes::Bytes;
use uuid::Uuid;

use super::{keys, ByteStream, Store, StoreError, READ_CHUNK};
use crate::model::StoredFile;

impl Store {
    /// Uploads a finished job's log file to `jobs/<id>/logs/trainer.log`.
    pub async fn archive_log(&self, job: Uuid, file: &Path) -> Result<StoredFile, StoreError> {
        let f = tokio::fs::File::open(file).await.map_err(|e| {
            StoreError::Unavailable(format!("cannot read log file {}: {e}", file.display()))
        })?;
        let len = f.metadata().await.ok().map(|m| m.len());
        let body = tokio_util::io::ReaderStream::with_capacity(f, READ_CHUNK);
        self.archive_log_stream(job, body, len).await
    }

    /// Uploads a finished job's log, read from a stream (a runner's
    /// captured output), to `jobs/<id>/logs/trainer.log`.
    pub async fn archive_log_stream<S, E>(
        &self,
        job: Uuid,
        body: S,
        len: Option<u64>,
    ) -> Result<StoredFile, StoreError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: fmt::Display,
    {
        let key = keys::trainer_log(job);
        let mut stored = self.put_stream(&key, body, len).await?;
        stored.path = keys::TRAINER_LOG.to_string();
        Ok(stored)
    }

    /// The size of a job's archived log, if it has one.
    pub async fn log_size(&self, job: Uuid) -> Result<Option<u64>, StoreError> {
        Ok(self.file_at(&keys::trainer_log(job)).await?.map(|f| f.size))
    }

    /// Deletes a job's archived log (retention): its size, or `None` when
    /// it had none.
    pub async fn delete_log(&self, job: Uuid) -> Result<Option<u64>, StoreError> {
        let size = self.log_size(job).await?;
        if size.is_some() {
            self.delete_keys(vec![keys::trainer_log(job)]).await?;
        }
        Ok(size)
    }

    /// The archived log of a job, if there is one.
    pub async fn open_log(&self, job: Uuid) -> Result<Option<ByteStream>, StoreError> {
        match self.download(&keys::trainer_log(job)).await {
            Ok(d) => Ok(Some(d.body)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;
    use crate::storage::tests::local;

    #[tokio::test]
    async fn archived_logs_read_back() {
        let (_d, s) = local();
        let id = Uuid::now_v7();
        assert!(s.open_log(id).await.unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "line 1\nline 2\n").unwrap();
        s.archive_log(id, &log).await.unwrap();
        let body: Vec<Bytes> = s
            .open_log(id)
            .await
            .unwrap()
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(body.concat(), b"line 1\nline 2\n");
        assert_eq!(s.log_size(id).await.unwrap(), Some(14));
        assert_eq!(s.delete_log(id).await.unwrap(), Some(14));
        assert!(s.open_log(id).await.unwrap().is_none(), "deleted");
        assert_eq!(s.delete_log(id).await.unwrap(), None, "nothing left");
    }
}
