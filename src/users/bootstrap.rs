//! The first start: with no user in the database, `platform serve`
//! creates the `admin` user. Its token is `PLATFORM_ADMIN_TOKEN` when that
//! is set (stored as a hash, like any token), else none when
//! `PLATFORM_API_TOKEN` is set (that already is an admin token), else a
//! fresh one written to `admin-token` in the data directory, mode 0600:
//! the log names the file, never the token.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::{mint, Users};
use crate::db::{self, DbError};
use crate::model::{Role, TokenInfo, TokenRecord, User};
use crate::secrets::hash_token;

/// Name of the first admin.
pub const ADMIN_NAME: &str = "admin";
/// File in the data directory that receives a generated admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// What the first start did.
#[derive(Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// Users existed already.
    Existing,
    /// Created `admin` with `PLATFORM_ADMIN_TOKEN`, or with no stored
    /// token when `PLATFORM_API_TOKEN` serves as theirs.
    Created,
    /// Created `admin` and wrote its token to this file.
    TokenFile(PathBuf),
}

impl Users {
    /// Creates the first admin if no user exists (see the module
    /// documentation).
    pub async fn bootstrap(
        &self,
        admin_token: Option<&str>,
        data_dir: &Path,
    ) -> Result<Bootstrap, DbError> {
        if self.db.count_users().await? > 0 {
            return Ok(Bootstrap::Existing);
        }
        let admin = User {
            id: Uuid::now_v7(),
            name: ADMIN_NAME.into(),
            role: Role::Admin,
            active: true,
            created_at: db::now(),
        };
        let (record, generated) = match admin_token {
            Some(t) => (Some(given(&admin, t)), None),
            None if self.api_token.is_some() => (None, None),
            None => {
                let (token, record) = mint(&admin, "bootstrap", None);
                (Some(record), Some(token))
            }
        };
        // The file first: a token is never stored that nobody can read.
        let file = match &generated {
            Some(token) => Some(write_token_file(data_dir, token)?),
            None => None,
        };
        if !self.db.bootstrap(admin, record).await? {
            // Another replica on the same database created the first admin
            // meanwhile: this token was never stored.
            if let Some(path) = &file {
                let _ = std::fs::remove_file(path);
            }
            return Ok(Bootstrap::Existing);
        }
        Ok(match file {
            Some(path) => Bootstrap::TokenFile(path),
            None => Bootstrap::Created,
        })
    }
}

/// The stored form of an operator-chosen admin token.
fn given(admin: &User, token: &str) -> TokenRecord {
    TokenRecord {
        info: TokenInfo {
            id: Uuid::now_v7(),
            user: admin.name.clone(),
            name: "PLATFORM_ADMIN_TOKEN".into(),
            prefix: token.chars().take(8).collect(),
            created_at: db::now(),
            last_used_at: None,
            expires_at: None,
            revoked_at: None,
        },
        user_id: admin.id,
        hash: hash_token(token),
    }
}

fn write_token_file(dir: &Path, token: &str) -> Result<PathBuf, DbError> {
    let path = dir.join(ADMIN_TOKEN_FILE);
    let fail = |e: std::io::Error| {
        DbError::Backend(format!(
            "cannot write the admin token to {}: {e}",
            path.display()
        ))
    };
    // Replaces a leftover of an earlier, discarded database.
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(fail)?;
    writeln!(f, "{token}")
        .and_then(|_| f.sync_all())
        .map_err(fail)?;
    Ok(path)
}
