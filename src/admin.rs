//! Maintenance commands that work on the daemon's data directly, on the
//! machine where the daemon runs, not over HTTP: `platform db check`,
//! `db status`, `db migrate` and `db vacuum`. They read the same
//! `DATABASE_URL` / `--data-dir` as `serve`.

use std::time::Instant;

use anyhow::Context;

use crate::cli::output::OutputFormat;
use crate::cli::{DbCommand, Exit, MigrateArgs};
use crate::config::DatabaseArgs;
use crate::db::transfer::{self, TableRows};
use crate::db::{Db, DbUrl};

/// Runs a `platform db …` command; `output` is the global `-o`.
pub fn db(cmd: DbCommand, output: Option<OutputFormat>) -> anyhow::Result<()> {
    match cmd {
        DbCommand::Check(args) => check(&args),
        DbCommand::Status(args) => status(&args, output),
        DbCommand::Migrate(args) => migrate(&args, output),
        DbCommand::Vacuum(args) => vacuum(&args, output),
    }
}

/// A runtime for one command (these run before `main` builds its own).
fn block_on<T>(f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(f))
}

fn json_only(output: Option<OutputFormat>) -> anyhow::Result<bool> {
    match output {
        None | Some(OutputFormat::Table) | Some(OutputFormat::Wide) => Ok(false),
        Some(OutputFormat::Json) => Ok(true),
        Some(other) => Err(Exit::usage(format!(
            "this command prints a table or JSON, not {}; use -o table or -o json",
            format!("{other:?}").to_lowercase()
        ))),
    }
}

fn print_tables(tables: &[TableRows]) {
    let width = tables
        .iter()
        .map(|t| t.table.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!("{:<width$}  ROWS", "TABLE");
    for t in tables {
        println!("{:<width$}  {}", t.table, t.rows);
    }
}

/// `platform db status`: backend, schema version, rows per table.
fn status(args: &DatabaseArgs, output: Option<OutputFormat>) -> anyhow::Result<()> {
    let json = json_only(output)?;
    let (_, url) = args.resolve()?;
    let found = block_on(transfer::status(&url))??;
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(());
    }
    println!("backend         {}", found.backend);
    println!("location        {}", found.location);
    let note = match found.schema_version.cmp(&found.latest_version) {
        std::cmp::Ordering::Less => " (older: `platform serve` upgrades it on start)",
        std::cmp::Ordering::Equal => "",
        std::cmp::Ordering::Greater => " (newer than this binary: upgrade platform)",
    };
    println!(
        "schema version  {} (this binary: {}){note}",
        found.schema_version, found.latest_version
    );
    println!();
    print_tables(&found.tables);
    Ok(())
}

/// `platform db migrate`: SQLite → an empty PostgreSQL, counts verified.
fn migrate(args: &MigrateArgs, output: Option<OutputFormat>) -> anyhow::Result<()> {
    let json = json_only(output)?;
    let from = match &args.from {
        Some(url) => DbUrl::parse(url).context("--from")?,
        None => args.database.resolve()?.1,
    };
    let to = DbUrl::parse(&args.to).context("--to")?;
    if let DbUrl::Sqlite(path) = &from {
        refuse_while_served(path, None, "or writes made during the copy would be lost")?;
    }
    let started = Instant::now();
    let copied = block_on(transfer::migrate(&from, &to, |t| {
        eprintln!("copying {} ({} rows)", t.table, t.rows);
    }))??;
    let total: i64 = copied.iter().map(|t| t.rows).sum();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "from": from.to_string(),
                "to": to.to_string(),
                "tables": copied,
                "rows": total,
                "seconds": started.elapsed().as_secs_f64(),
            }))?
        );
        return Ok(());
    }
    print_tables(&copied);
    println!(
        "copied {total} rows from {from} into {to} in {:.1} s; every table's count matches. Point DATABASE_URL at the new database and start `platform serve`.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Fails when a `platform serve` holds the data dir of the SQLite file at
/// `path` (its parent, which holds the default database, or `data_dir`).
fn refuse_while_served(
    path: &std::path::Path,
    data_dir: Option<&std::path::Path>,
    why: &str,
) -> anyhow::Result<()> {
    let parent = path.parent().unwrap_or(std::path::Path::new("."));
    let holder =
        crate::datadir::holder(parent).or_else(|| data_dir.and_then(crate::datadir::holder));
    match holder {
        Some(pid) => Err(Exit {
            code: 1,
            message: format!(
                "a `platform serve` (pid {pid}) is running on {}: stop it first, {why}",
                path.display()
            ),
        }
        .into()),
        None => Ok(()),
    }
}

/// `platform db vacuum`: a full `VACUUM` of the SQLite file (offline),
/// which also switches it to incremental auto-vacuum.
fn vacuum(args: &DatabaseArgs, output: Option<OutputFormat>) -> anyhow::Result<()> {
    let json = json_only(output)?;
    let (data_dir, url) = args.resolve()?;
    let path = match url {
        DbUrl::Sqlite(path) => path,
        DbUrl::Postgres(_) => {
            return Err(Exit {
                code: 1,
                message: "db vacuum works on a SQLite file; PostgreSQL's autovacuum makes the space of pruned rows reusable by itself (VACUUM FULL gives it back to the file system, under an exclusive lock)".into(),
            }
            .into())
        }
    };
    refuse_while_served(
        &path,
        Some(&data_dir),
        "since VACUUM needs the database to itself",
    )?;
    let started = Instant::now();
    let done = Db::vacuum_sqlite(&path)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "path": path.display().to_string(),
                "before_bytes": done.before_bytes,
                "after_bytes": done.after_bytes,
                "was_incremental": done.was_incremental,
                "seconds": started.elapsed().as_secs_f64(),
            }))?
        );
        return Ok(());
    }
    println!(
        "vacuumed {}: {} → {} in {:.1} s; prunes now give space back while the daemon runs",
        path.display(),
        indicatif::HumanBytes(done.before_bytes),
        indicatif::HumanBytes(done.after_bytes),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Prints `ok` for a sound database; otherwise each problem SQLite found,
/// and fails (exit 1).
fn check(args: &DatabaseArgs) -> anyhow::Result<()> {
    let (_, url) = args.resolve()?;
    let path = match url {
        DbUrl::Sqlite(path) => path,
        DbUrl::Postgres(pg) => return check_postgres(pg),
    };
    let problems = Db::check_sqlite(&path)?;
    if problems.is_empty() {
        println!("ok");
        return Ok(());
    }
    for p in &problems {
        println!("{p}");
    }
    Err(Exit {
        code: 1,
        message: format!(
            "the database at {} is damaged ({} problem{} found): restore it from a backup, or salvage what is readable with `sqlite3 OLD.db .recover | sqlite3 NEW.db`",
            path.display(),
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        ),
    }
    .into())
}

/// PostgreSQL checks its own pages; `db check` proves the server answers
/// and the schema is one this binary can use.
fn check_postgres(url: crate::db::PgUrl) -> anyhow::Result<()> {
    let version = block_on(Db::check_postgres(&url))??;
    println!("ok (PostgreSQL, schema version {version})");
    Ok(())
}
