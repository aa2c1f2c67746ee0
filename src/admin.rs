//! Maintenance commands that work on the daemon's data directly, on the
//! machine where the daemon runs, not over HTTP: `platform db check`.
//! They read the same `DATABASE_URL` / `--data-dir` as `serve`.

use crate::cli::{DbCommand, Exit};
use crate::config::DatabaseArgs;
use crate::db::{Db, DbUrl};

/// Runs a `platform db …` command.
pub fn db(cmd: DbCommand) -> anyhow::Result<()> {
    match cmd {
        DbCommand::Check(args) => check(&args),
    }
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
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let version = runtime.block_on(Db::check_postgres(&url))?;
    println!("ok (PostgreSQL, schema version {version})");
    Ok(())
}
