//! Streaming uploads with bounded memory: a body that fits in one part is
//! written with a single PUT; anything larger becomes a multipart upload
//! with at most [`PARTS_IN_FLIGHT`] parts buffered, aborted (leaving
//! nothing behind) if the body fails or grows past the limit.

use std::fmt::Display;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};

use super::WriteMode;

/// Smallest part size; S3 needs ≥ 5 MiB for every part but the last.
const MIN_PART: u64 = 8 * 1024 * 1024;
/// S3 allows 10,000 parts; keep a margin.
const MAX_PARTS: u64 = 9_000;
/// Parts uploading at once per upload (memory ≈ (this + 1) × part size).
const PARTS_IN_FLIGHT: usize = 2;

/// Why an upload did not complete.
pub(crate) enum UploadError {
    /// The store refused or failed.
    Store(object_store::Error),
    /// More than the limit arrived.
    TooLarge,
    /// The request body broke off.
    Body(String),
}

impl From<object_store::Error> for UploadError {
    fn from(e: object_store::Error) -> Self {
        UploadError::Store(e)
    }
}

/// The part size that lets an object of `limit` bytes fit in [`MAX_PARTS`].
fn part_size(limit: u64) -> usize {
    let needed = limit.div_ceil(MAX_PARTS);
    let mib = 1024 * 1024;
    needed.max(MIN_PART).div_ceil(mib).saturating_mul(mib) as usize
}

/// Writes `body` to `key`; returns the number of bytes stored. Create-only
/// writes fail with object_store's `AlreadyExists` when `key` is taken.
pub(crate) async fn put_stream<S, E>(
    store: &dyn ObjectStore,
    key: &Path,
    mut body: S,
    limit: u64,
    mode: WriteMode,
) -> Result<u64, UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let part = part_size(limit);
    let mut first: Vec<Bytes> = Vec::new();
    let mut total: u64 = 0;
    // Buffer up to one part: small files go up in a single request.
    while total < part as u64 {
        match body.next().await {
            None => {
                let payload = PutPayload::from_iter(first);
                match mode {
                    WriteMode::Replace => store.put(key, payload).await?,
                    WriteMode::CreateOnly => {
                        let opts = PutOptions::from(PutMode::Create);
                        store.put_opts(key, payload, opts).await?
                    }
                };
                return Ok(total);
            }
            Some(Err(e)) => return Err(UploadError::Body(e.to_string())),
            Some(Ok(chunk)) => {
                total += chunk.len() as u64;
                if total > limit {
                    return Err(UploadError::TooLarge);
                }
                first.push(chunk);
            }
        }
    }
    let mut writer = WriteMultipart::new_with_chunk_size(store.put_multipart(key).await?, part);
    for chunk in first {
        writer.put(chunk);
    }
    let failure = loop {
        if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
            break UploadError::Store(e);
        }
        match body.next().await {
            // object_store has no create-only multipart completion: look again.
            None if mode == WriteMode::CreateOnly && taken(store, key).await => {
                break UploadError::Store(object_store::Error::AlreadyExists {
                    path: key.to_string(),
                    source: "another upload stored it first".into(),
                });
            }
            None => return Ok(writer.finish().await.map(|_| total)?),
            Some(Err(e)) => break UploadError::Body(e.to_string()),
            Some(Ok(chunk)) => {
                total += chunk.len() as u64;
                if total > limit {
                    break UploadError::TooLarge;
                }
                writer.put(chunk);
            }
        }
    };
    if let Err(e) = writer.abort().await {
        tracing::warn!(key = %key, error = %e, "could not abort a failed multipart upload");
    }
    Err(failure)
}

/// Whether `key` holds an object (an error counts as taken: refusing is safe).
async fn taken(store: &dyn ObjectStore, key: &Path) -> bool {
    !matches!(
        store.head(key).await,
        Err(object_store::Error::NotFound { .. })
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_fit_the_limit() {
        assert_eq!(part_size(1), 8 * 1024 * 1024);
        assert_eq!(part_size(50 * 1024 * 1024 * 1024), 8 * 1024 * 1024);
        let big = 5 * 1024 * 1024 * 1024 * 1024u64;
        assert!(part_size(big) as u64 * MAX_PARTS >= big);
    }
}
