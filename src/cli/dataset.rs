//! `platform dataset …`: upload a directory as a dataset through the daemon
//! (parallel, resumable, with progress) and list datasets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use futures::TryStreamExt;
use indicatif::HumanBytes;
use serde::Serialize;

use super::exit::Exit;
use super::output::{self, OutputFormat, Printer};
use super::transfer::{self, Progress};
use super::GlobalArgs;
use crate::client::Client;
use crate::model::names;

/// `platform dataset` subcommands.
#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Upload a directory as a dataset; re-running skips files already uploaded with the same size.
    Upload(UploadArgs),
    /// List datasets with their file counts and sizes.
    #[command(visible_alias = "ls")]
    List,
}

/// `platform dataset upload`.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Directory to upload (its files keep their paths relative to it).
    pub dir: PathBuf,
    /// Dataset name: letters, digits, '.', '_' and '-'.
    #[arg(long, short = 'n')]
    pub name: String,
    /// Files to upload at once.
    #[arg(long, short = 'j', default_value_t = 4, value_name = "N")]
    pub jobs: usize,
}

/// A local file to upload.
#[derive(Clone)]
struct LocalFile {
    rel: String,
    abs: PathBuf,
    size: u64,
}

/// What `upload -o json` prints.
#[derive(Serialize)]
struct UploadSummary {
    name: String,
    uri: String,
    uploaded_files: u64,
    uploaded_bytes: u64,
    skipped_files: u64,
    skipped_bytes: u64,
}

/// Runs a `platform dataset` subcommand.
pub async fn run(g: &GlobalArgs, out: &Printer, cmd: DatasetCommand) -> anyhow::Result<()> {
    let client = g.client()?;
    match cmd {
        DatasetCommand::Upload(a) => upload(&client, out, a).await,
        DatasetCommand::List => list(&client, out).await,
    }
}

async fn upload(client: &Client, out: &Printer, a: UploadArgs) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json])?;
    names::dataset_name(&a.name).map_err(|e| Exit::usage(format!("--name: {}", e.message)))?;
    let dir = a.dir.clone();
    let files = tokio::task::spawn_blocking(move || scan(&dir))
        .await
        .context("scanning the directory failed")??;
    if files.is_empty() {
        return Err(Exit::usage(format!(
            "{} holds no files to upload",
            a.dir.display()
        )));
    }
    let existing: HashMap<String, u64> = client
        .get_dataset(&a.name)
        .await?
        .map(|d| d.files.into_iter().map(|f| (f.path, f.size)).collect())
        .unwrap_or_default();
    let (skipped, todo): (Vec<LocalFile>, Vec<LocalFile>) = files
        .into_iter()
        .partition(|f| existing.get(&f.rel) == Some(&f.size));
    let skipped_bytes: u64 = skipped.iter().map(|f| f.size).sum();
    let total: u64 = todo.iter().map(|f| f.size).sum();
    if !skipped.is_empty() && !out.quiet && fmt == OutputFormat::Table {
        eprintln!(
            "skipping {} file{} ({}) already in dataset {}",
            skipped.len(),
            if skipped.len() == 1 { "" } else { "s" },
            HumanBytes(skipped_bytes),
            a.name
        );
    }
    let progress = Progress::new(out, "uploading", total, todo.len() as u64);
    let uploaded = todo.len() as u64;
    let name = a.name.as_str();
    let failures = transfer::run_all(
        todo,
        a.jobs,
        &progress,
        |f| f.rel.clone(),
        |f, counter| async move {
            let file = tokio::fs::File::open(&f.abs)
                .await
                .with_context(|| format!("cannot open {}", f.abs.display()))?;
            let body = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                .inspect_ok(move |chunk| counter.add(chunk.len() as u64));
            client
                .upload_dataset_file(name, &f.rel, reqwest::Body::wrap_stream(body), f.size)
                .await?;
            Ok(())
        },
    )
    .await;
    progress.finish();
    transfer::report_failures(&failures, "upload", "re-run the same command to resume")?;
    let uri = client
        .get_dataset(&a.name)
        .await?
        .map(|d| d.uri)
        .context("the dataset is missing after the upload")?;
    match fmt {
        OutputFormat::Json => out.json(&UploadSummary {
            name: a.name.clone(),
            uri,
            uploaded_files: uploaded,
            uploaded_bytes: total,
            skipped_files: skipped.len() as u64,
            skipped_bytes,
        }),
        _ if out.quiet => {
            println!("{uri}");
            Ok(())
        }
        _ => {
            println!("uploaded {}", progress.summary(uploaded, total));
            println!("dataset {} is at {uri}", a.name);
            println!("  use it:  platform job create --dataset {uri} --framework F --model M");
            Ok(())
        }
    }
}

/// Every regular file under `dir` (following symlinks), with its path
/// relative to `dir`; fails listing every name the store cannot hold.
fn scan(dir: &Path) -> anyhow::Result<Vec<LocalFile>> {
    if !dir.is_dir() {
        return Err(Exit::usage(format!("{} is not a directory", dir.display())));
    }
    let mut files = Vec::new();
    let mut bad = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let Some(rel) = rel
            .to_str()
            .map(|r| r.replace(std::path::MAIN_SEPARATOR, "/"))
        else {
            bad.push(format!("{}: the name is not valid UTF-8", rel.display()));
            continue;
        };
        if let Err(e) = names::relative_path("path", &rel) {
            bad.push(format!("{rel}: {}", e.message));
            continue;
        }
        let size = entry
            .metadata()
            .with_context(|| format!("cannot read {}", entry.path().display()))?
            .len();
        files.push(LocalFile {
            rel,
            abs: entry.path().to_path_buf(),
            size,
        });
    }
    if !bad.is_empty() {
        return Err(Exit::usage(format!(
            "cannot upload {} file{} with unusable names (nothing was uploaded):\n  {}",
            bad.len(),
            if bad.len() == 1 { "" } else { "s" },
            bad.join("\n  ")
        )));
    }
    Ok(files)
}

async fn list(client: &Client, out: &Printer) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml])?;
    let datasets = client.list_datasets().await?;
    output::print_list(
        out,
        fmt,
        &datasets,
        &["NAME", "FILES", "SIZE", "URI"],
        |d| {
            vec![
                d.name.clone(),
                d.file_count.to_string(),
                HumanBytes(d.total_bytes).to_string(),
                d.uri.clone(),
            ]
        },
    )
}
