//! Datasets: prefixes under `datasets/`, listed with their sizes, and the
//! check job creation makes that a dataset URI points at data in this
//! store.

use std::collections::BTreeMap;

use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use std::fmt;

use bytes::Bytes;

use super::{keys, to_key, Fetched, Store, StoreError};
use crate::model::{Dataset, DatasetSummary, StoredFile, ValidationError};

impl Store {
    /// Every dataset with its file count and size.
    pub async fn datasets(&self) -> Result<Vec<DatasetSummary>, StoreError> {
        let prefix = format!("{}/", keys::DATASETS);
        let mut by_name: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for f in self.list_files(&prefix).await? {
            if let Some((name, _)) = f.path.split_once('/') {
                let e = by_name.entry(name.to_string()).or_default();
                e.0 += 1;
                e.1 += f.size;
            }
        }
        Ok(by_name
            .into_iter()
            .map(|(name, (file_count, total_bytes))| DatasetSummary {
                uri: self.dataset_uri(&name),
                name,
                file_count,
                total_bytes,
            })
            .collect())
    }

    /// One dataset's files, or `NotFound` when it has none.
    pub async fn dataset(&self, name: &str) -> Result<Dataset, StoreError> {
        let prefix = keys::dataset_prefix(name)?;
        let files = self.list_files(&prefix).await?;
        if files.is_empty() {
            return Err(StoreError::NotFound(format!("dataset {name:?}")));
        }
        Ok(Dataset {
            name: name.to_string(),
            uri: self.dataset_uri(name),
            file_count: files.len() as u64,
            total_bytes: files.iter().map(|f| f.size).sum(),
            files,
        })
    }

    /// Streams an upload to `datasets/<name>/<path>`; the answer names the
    /// file by `path`.
    pub async fn put_dataset_file<S, E>(
        &self,
        name: &str,
        path: &str,
        body: S,
        declared_len: Option<u64>,
    ) -> Result<StoredFile, StoreError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: fmt::Display,
    {
        let key = keys::dataset_file(name, path)?;
        let mut f = self
            .put_stream(&key, body, declared_len)
            .await
            .map_err(|e| e.naming(|| dataset_file_name(name, path)))?;
        f.path = path.to_string();
        Ok(f)
    }

    /// Reads one dataset file, or a presigned URL for it.
    pub async fn fetch_dataset_file(&self, name: &str, path: &str) -> Result<Fetched, StoreError> {
        let key = keys::dataset_file(name, path)?;
        self.fetch(&key)
            .await
            .map_err(|e| e.naming(|| dataset_file_name(name, path)))
    }

    /// The files a job's dataset URI names in this store, their paths
    /// relative to it: everything under the prefix, or the one object the
    /// URI names. `NotFound` when the URI is outside the store or holds
    /// nothing. What a trainer downloads with its job's token.
    pub async fn dataset_at(&self, uri: &str) -> Result<Dataset, StoreError> {
        let missing = || StoreError::NotFound(format!("the job's dataset at {uri}"));
        let key = self.key_for_uri(uri).ok_or_else(missing)?;
        let prefix = if key.is_empty() {
            key.clone()
        } else {
            format!("{key}/")
        };
        let mut files = self.list_files(&prefix).await?;
        if files.is_empty() && !key.is_empty() {
            // A URI naming one object: a HEAD, not a listing of its folder.
            files.extend(self.file_at(&key).await?);
        }
        if files.is_empty() {
            return Err(missing());
        }
        Ok(Dataset {
            name: key.rsplit('/').next().unwrap_or_default().to_string(),
            uri: uri.to_string(),
            file_count: files.len() as u64,
            total_bytes: files.iter().map(|f| f.size).sum(),
            files,
        })
    }

    /// One file of [`Store::dataset_at`]'s listing, by its relative path.
    pub async fn fetch_at(&self, uri: &str, path: &str) -> Result<Fetched, StoreError> {
        let name = || format!("file {path:?} of the job's dataset");
        keys::relative_path("path", path)?;
        let key = self
            .key_for_uri(uri)
            .ok_or_else(|| StoreError::NotFound(name()))?;
        let under = match key.as_str() {
            "" => path.to_string(),
            k => format!("{k}/{path}"),
        };
        match self.fetch(&under).await {
            // A single-object dataset lists as its own file name.
            Err(StoreError::NotFound(_))
                if !key.is_empty() && key.rsplit('/').next() == Some(path) =>
            {
                self.fetch(&key).await
            }
            r => r,
        }
        .map_err(|e| e.naming(name))
    }

    /// The URI of a dataset, to pass to `job create`.
    pub fn dataset_uri(&self, name: &str) -> String {
        self.uri(&format!("{}/{name}/", keys::DATASETS))
    }

    /// Whether `uri` names an object or a non-empty prefix in this store.
    /// A URI outside the store is a 422 naming the store's root.
    pub async fn dataset_exists(&self, uri: &str) -> Result<bool, StoreError> {
        let Some(key) = self.key_for_uri(uri) else {
            return Err(ValidationError::new(
                "dataset_s3_uri",
                format!(
                    "{uri:?} is not in the configured object store: dataset URIs start with {} \
                     (upload with `platform dataset upload`, or set DATASET_CHECK=off for data the daemon cannot see)",
                    self.uri("")
                ),
            )
            .into());
        };
        // The prefix first: datasets are prefixes, and some S3-compatible
        // servers answer HEAD on a "directory" with an error, not a 404.
        let k = to_key(&key);
        match self.objects.list(Some(&k)).next().await {
            Some(Ok(_)) => return Ok(true),
            None | Some(Err(object_store::Error::NotFound { .. })) => {}
            Some(Err(e)) => return Err(self.explain("list", e)),
        }
        if key.is_empty() {
            return Ok(false);
        }
        match self.objects.head(&k).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.explain("read", e)),
        }
    }

    /// Job creation's dataset check: the URI must be in this store and hold
    /// at least one object; the 422 says what was looked for.
    pub async fn verify_dataset(&self, uri: &str) -> Result<(), StoreError> {
        if self.dataset_exists(uri).await? {
            return Ok(());
        }
        let key = self.key_for_uri(uri).unwrap_or_default();
        Err(ValidationError::new(
            "dataset_s3_uri",
            format!(
                "no dataset at {uri}: the object store has no object {key:?} and nothing under {}; \
                 upload one with `platform dataset upload DIR --name NAME`",
                self.uri(&format!("{key}/"))
            ),
        )
        .into())
    }
}

fn dataset_file_name(name: &str, path: &str) -> String {
    format!("file {path:?} of dataset {name:?}")
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use uuid::Uuid;

    use super::*;
    use crate::storage::tests::local;

    #[tokio::test]
    async fn dataset_check_finds_prefixes_and_objects() {
        let (_d, s) = local();
        let uri = s.dataset_uri("d");
        assert!(!s.dataset_exists(&uri).await.unwrap());
        let err = s.verify_dataset(&uri).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Invalid(ref v) if v.field == "dataset_s3_uri"),
            "{err}"
        );
        let id = Uuid::now_v7();
        let f = s
            .put_artifact_bytes(id, "ckpt/best.pt", Bytes::from_static(b"weights"))
            .await
            .unwrap();
        assert!(s.dataset_exists(&s.output_uri(id)).await.unwrap());
        assert!(s.dataset_exists(&f.uri).await.unwrap());
    }
}
