//! Reading and writing any key: streamed uploads within
//! `MAX_OBJECT_BYTES`, listings under a prefix, downloads (streamed
//! through the daemon, or presigned redirects) and deletes (retention).
//! The dataset, artifact and log operations are built on these.

use std::fmt;

use bytes::Bytes;
use chrono::Utc;
use futures::stream::{StreamExt, TryStreamExt};
use object_store::signer::Signer;
use object_store::{GetResultPayload, ObjectMeta, ObjectStore, ObjectStoreExt};

use super::diagnose::scrub;
use super::{
    to_key, upload, Backend, ByteStream, Download, Fetched, Store, StoreError, WriteMode,
    READ_CHUNK,
};
use crate::model::StoredFile;

impl Store {
    /// Streams `body` to `key`: small bodies in one request, larger ones as
    /// a multipart upload with bounded memory. Nothing becomes visible
    /// unless the whole body arrived within `MAX_OBJECT_BYTES`.
    pub async fn put_stream<S, E>(
        &self,
        key: &str,
        body: S,
        declared_len: Option<u64>,
    ) -> Result<StoredFile, StoreError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: fmt::Display,
    {
        self.write_stream(key, body, declared_len, WriteMode::Replace)
            .await
    }

    /// [`Store::put_stream`], refusing with [`StoreError::Exists`] when
    /// `mode` is create-only and `key` is taken. The refusal comes before
    /// the body is read when the object is already there; a rival upload
    /// finishing meanwhile is caught atomically for single-request bodies
    /// (the common case) and by a second look before a multipart upload
    /// completes.
    pub async fn write_stream<S, E>(
        &self,
        key: &str,
        body: S,
        declared_len: Option<u64>,
        mode: WriteMode,
    ) -> Result<StoredFile, StoreError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: fmt::Display,
    {
        let limit = self.max_object_bytes;
        if declared_len.is_some_and(|n| n > limit) {
            return Err(StoreError::TooLarge { limit });
        }
        let k = to_key(key);
        if mode == WriteMode::CreateOnly && self.exists(&k).await? {
            return Err(StoreError::Exists(format!("object {key:?}")));
        }
        let size = upload::put_stream(self.objects.as_ref(), &k, body, limit, mode)
            .await
            .map_err(|e| match e {
                upload::UploadError::Store(e) => self.explain("write to", e),
                upload::UploadError::TooLarge => StoreError::TooLarge { limit },
                upload::UploadError::Body(m) => StoreError::Interrupted(m),
            })?;
        metrics::counter!("platform_storage_uploaded_bytes_total").increment(size);
        Ok(StoredFile {
            path: key.to_string(),
            size,
            uri: self.uri(key),
            last_modified: Utc::now(),
        })
    }

    /// Whether an object is stored at `key`.
    async fn exists(&self, key: &object_store::path::Path) -> Result<bool, StoreError> {
        match self.objects.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.explain("read", e)),
        }
    }

    /// The one object at `key`, named by its last path segment; `None`
    /// when nothing is stored there.
    pub async fn file_at(&self, key: &str) -> Result<Option<StoredFile>, StoreError> {
        match self.objects.head(&to_key(key)).await {
            Ok(m) => Ok(Some(StoredFile {
                uri: self.uri(key),
                path: key.rsplit('/').next().unwrap_or(key).to_string(),
                size: m.size,
                last_modified: m.last_modified,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.explain("read", e)),
        }
    }

    /// Every object under `prefix` (ending in `/`), with paths relative to
    /// it, sorted by path.
    pub async fn list_files(&self, prefix: &str) -> Result<Vec<StoredFile>, StoreError> {
        let metas: Vec<ObjectMeta> = self
            .objects
            .list(Some(&to_key(prefix)))
            .try_collect()
            .await
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(Vec::new()),
                e => Err(self.explain("list", e)),
            })?;
        let mut files: Vec<StoredFile> = metas
            .into_iter()
            .filter_map(|m| {
                let key = m.location.as_ref();
                let rel = key.strip_prefix(prefix)?.to_string();
                Some(StoredFile {
                    uri: self.uri(key),
                    path: rel,
                    size: m.size,
                    last_modified: m.last_modified,
                })
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Deletes `keys` (in bulk where the store can: S3 takes up to 1,000
    /// per request); a key with nothing stored is no error.
    pub async fn delete_keys(&self, keys: Vec<String>) -> Result<(), StoreError> {
        let paths = futures::stream::iter(keys.into_iter().map(|k| Ok(to_key(&k)))).boxed();
        let mut done = self.objects.delete_stream(paths);
        while let Some(r) = done.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.explain("delete from", e)),
            }
        }
        Ok(())
    }

    /// Reads `key`, or a presigned URL for it when presigned downloads are
    /// configured (S3 only).
    pub async fn fetch(&self, key: &str) -> Result<Fetched, StoreError> {
        if let (Backend::S3 { signer, .. }, Some(ttl)) = (&self.backend, self.presign) {
            let k = to_key(key);
            // Presigning works offline; check existence so a typo is a 404, not a broken link.
            self.objects
                .head(&k)
                .await
                .map_err(|e| self.explain("read", e))?;
            let url = signer
                .signed_url(object_store::signer::Method::GET, &k, ttl)
                .await
                .map_err(|e| self.explain("presign", e))?;
            return Ok(Fetched::Redirect(url.to_string()));
        }
        self.download(key).await.map(Fetched::Stream)
    }

    /// Streams `key` through the daemon.
    pub async fn download(&self, key: &str) -> Result<Download, StoreError> {
        let got = self
            .objects
            .get(&to_key(key))
            .await
            .map_err(|e| self.explain("read", e))?;
        let meta = got.meta.clone();
        let redact = self.redact.clone();
        let body: ByteStream = match got.payload {
            // object_store reads local files 8 KiB at a time; larger reads
            // keep big downloads fast.
            GetResultPayload::File(file, _) => {
                let file = tokio::fs::File::from_std(file);
                tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK)
                    .map_err(|e| StoreError::Unavailable(format!("reading the object failed: {e}")))
                    .boxed()
            }
            GetResultPayload::Stream(s) => s
                .map_err(move |e| StoreError::Unavailable(scrub(&redact, e.to_string())))
                .boxed(),
        };
        Ok(Download {
            size: meta.size,
            last_modified: meta.last_modified,
            e_tag: meta.e_tag,
            body,
        })
    }
}
