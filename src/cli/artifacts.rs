//! `platform job artifacts ID` and `platform job download ID [PATH]`: list
//! and fetch a job's outputs through the daemon, with progress.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use indicatif::HumanBytes;
use tokio::io::AsyncWriteExt;

use super::exit::Exit;
use super::output::{self, OutputFormat, Printer};
use super::transfer::{self, Counter, Progress};
use crate::client::Client;
use crate::model::names;
use crate::model::StoredFile;

/// `platform job artifacts`.
#[derive(Debug, Args)]
pub struct ArtifactsArgs {
    /// Job: its number (42 or #42), full id, or a unique id prefix (≥ 4 hex characters).
    pub id: String,
}

/// `platform job download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Job: its number (42 or #42), full id, or a unique id prefix (≥ 4 hex characters).
    pub id: String,
    /// One artifact, or a directory of them [default: all of the job's artifacts].
    pub path: Option<String>,
    /// Directory to write into (artifacts keep their relative paths).
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub to: PathBuf,
    /// Files to download at once.
    #[arg(long, short = 'j', default_value_t = 4, value_name = "N")]
    pub jobs: usize,
}

/// `platform job artifacts ID`.
pub async fn list(client: &Client, out: &Printer, a: ArtifactsArgs) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml])?;
    let id = super::resolve::job_id(client, &a.id).await?;
    let files = client.artifacts(id).await?;
    output::print_list(
        out,
        fmt,
        &files,
        &["PATH", "SIZE", "MODIFIED", "URI"],
        |f| {
            vec![
                f.path.clone(),
                HumanBytes(f.size).to_string(),
                output::ago(f.last_modified),
                f.uri.clone(),
            ]
        },
    )
}

/// `platform job download ID [PATH] --to DIR`.
pub async fn download(client: &Client, out: &Printer, a: DownloadArgs) -> anyhow::Result<()> {
    let id = super::resolve::job_id(client, &a.id).await?;
    let all = client.artifacts(id).await?;
    let wanted: Vec<StoredFile> = match a.path.as_deref().map(|p| p.trim_matches('/')) {
        None | Some("") => all,
        Some(p) => {
            let dir = format!("{p}/");
            let hits: Vec<_> = all
                .into_iter()
                .filter(|f| f.path == p || f.path.starts_with(&dir))
                .collect();
            if hits.is_empty() {
                return Err(anyhow::anyhow!(
                    "job {id} has no artifact {p:?} (see `platform job artifacts {id}`)"
                ));
            }
            hits
        }
    };
    if wanted.is_empty() {
        return Err(anyhow::anyhow!("job {id} has no artifacts yet"));
    }
    // The server's paths are checked before they become local file names.
    for f in &wanted {
        names::relative_path("path", &f.path).map_err(|e| {
            anyhow::anyhow!("refusing to write artifact {:?}: {}", f.path, e.message)
        })?;
    }
    check_target(&a.to)?;
    tokio::fs::create_dir_all(&a.to)
        .await
        .with_context(|| format!("cannot create {}", a.to.display()))?;
    let total: u64 = wanted.iter().map(|f| f.size).sum();
    let count = wanted.len() as u64;
    let progress = Progress::new(out, "downloading", total, count);
    let to = a.to.as_path();
    let failures = transfer::run_all(
        wanted,
        a.jobs,
        &progress,
        |f| f.path.clone(),
        |f, counter| fetch_one(client, id, f, to, counter),
    )
    .await;
    progress.finish();
    transfer::report_failures(&failures, "download", "re-run the command to retry")?;
    if !out.quiet {
        println!(
            "downloaded {} to {}",
            progress.summary(count, total),
            a.to.display()
        );
    }
    Ok(())
}

/// Streams one artifact into `to/<path>` via a temporary file, so an
/// interrupted download never leaves a truncated file under the real name.
async fn fetch_one(
    client: &Client,
    id: uuid::Uuid,
    f: StoredFile,
    to: &Path,
    counter: Counter,
) -> anyhow::Result<()> {
    let dest = to.join(&f.path);
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let tmp = dest.with_file_name(format!(
        ".{}.part",
        dest.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("download")
    ));
    let result = async {
        let resp = client.download_artifact(id, &f.path).await?;
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| client.body_error(e))?;
            file.write_all(&chunk)
                .await
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            counter.add(chunk.len() as u64);
        }
        file.flush().await?;
        tokio::fs::rename(&tmp, &dest)
            .await
            .with_context(|| format!("cannot write {}", dest.display()))?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// Usage error for a download target that is a file.
fn check_target(to: &Path) -> anyhow::Result<()> {
    if to.exists() && !to.is_dir() {
        return Err(Exit::usage(format!(
            "--to {} is not a directory",
            to.display()
        )));
    }
    Ok(())
}
