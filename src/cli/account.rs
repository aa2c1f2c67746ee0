//! `platform login`, `context`, `whoami`, `user`, `token` and `audit`: who
//! the CLI is on which daemon, and managing users and tokens over the API.
//! Contexts are kept by [`crate::config::contexts`].

use std::io::{BufRead, IsTerminal};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use reqwest::Method;

use super::exit::Exit;
use super::output::{self, OutputFormat, Printer};
use super::GlobalArgs;
use crate::client::Client;
use crate::config::contexts::{contexts_path, Context, Contexts};
use crate::model::{
    AuditQuery, CreateToken, CreateUser, CreatedUser, NewToken, Role, TokenInfo, UpdateUser, User,
    Whoami,
};

/// `platform login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Read the token from standard input (e.g. `< admin-token`), not from
    /// --token / PLATFORM_TOKEN.
    #[arg(long)]
    pub token_stdin: bool,
    /// Name to save the context under (default: "default").
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub context: String,
}

/// `platform context` subcommands.
#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// List saved contexts; `*` marks the current one.
    #[command(visible_alias = "ls")]
    List,
    /// Make NAME the current context.
    Use {
        /// Context name.
        name: String,
    },
    /// Forget a saved context (and its token).
    #[command(visible_alias = "rm")]
    Delete {
        /// Context name.
        name: String,
    },
}

/// `platform user` subcommands (admins).
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user and print their first token (shown only now).
    Create {
        /// User name (letters, digits, '.', '_', '-').
        name: String,
        /// Role.
        #[arg(long, value_parser = ["admin", "member"], default_value = "member")]
        role: String,
    },
    /// List users.
    #[command(visible_alias = "ls")]
    List,
    /// Disable a user: their tokens stop working at once.
    Disable {
        /// User name.
        name: String,
    },
    /// Enable a disabled user again.
    Enable {
        /// User name.
        name: String,
    },
}

/// `platform token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for yourself (admins: --user) and print it (shown only now).
    Create {
        /// A name for the token, e.g. the machine it is for.
        name: String,
        /// Whose token (admins only).
        #[arg(long)]
        user: Option<String>,
        /// Expire after this many days.
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<u32>,
    },
    /// List your tokens (admins: everyone's, or --user's).
    #[command(visible_alias = "ls")]
    List {
        /// Only this user's tokens.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by id; the next request with it fails.
    Revoke {
        /// Token id (from `platform token list`).
        id: String,
    },
}

/// `platform audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this user's requests.
    #[arg(long)]
    pub user: Option<String>,
    /// Only requests at or after this time (RFC 3339, e.g. 2026-01-31T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub since: Option<DateTime<Utc>>,
    /// At most this many entries (1–1000), newest first.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
}

fn path() -> anyhow::Result<std::path::PathBuf> {
    contexts_path().ok_or_else(|| Exit::usage("cannot find your config directory (is HOME set?)"))
}

fn load() -> anyhow::Result<(std::path::PathBuf, Contexts)> {
    let path = path()?;
    let contexts =
        Contexts::load(&path).map_err(|e| anyhow::anyhow!("cannot read contexts: {e}"))?;
    Ok((path, contexts))
}

/// `platform login`: checks the token with the server, then saves it.
pub async fn login(g: &GlobalArgs, out: &Printer, a: LoginArgs) -> anyhow::Result<()> {
    let token = if a.token_stdin || g.token.is_none() {
        if std::io::stdin().is_terminal() {
            eprint!("API token for {}: ", g.server);
        }
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the token from standard input")?;
        Some(line.trim().to_string()).filter(|t| !t.is_empty())
    } else {
        g.token.clone()
    };
    let client = Client::new(&g.server, token.clone())?;
    let me = client.whoami().await?;
    let (path, mut contexts) = load()?;
    contexts.contexts.insert(
        a.context.clone(),
        Context {
            server: client.base().to_string(),
            token,
            user: me.principal.user.clone(),
        },
    );
    contexts.current = Some(a.context.clone());
    contexts.save(&path).map_err(|e| anyhow::anyhow!(e))?;
    if !out.quiet {
        eprintln!(
            "signed in to {} as {} (context {:?}, saved in {})",
            client.base(),
            describe(&me),
            a.context,
            path.display()
        );
    }
    Ok(())
}

fn describe(me: &Whoami) -> String {
    match &me.principal.user {
        Some(u) => format!("{u} ({})", me.principal.role.as_str()),
        None if me.auth_required => "nobody".into(),
        None => "anyone (this server requires no token)".into(),
    }
}

/// `platform context …`.
pub async fn context(out: &Printer, cmd: ContextCommand) -> anyhow::Result<()> {
    let (path, mut contexts) = load()?;
    match cmd {
        ContextCommand::List => {
            let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json])?;
            let rows: Vec<serde_json::Value> = contexts
                .contexts
                .iter()
                .map(|(name, c)| {
                    serde_json::json!({
                        "name": name,
                        "current": contexts.current.as_deref() == Some(name),
                        "server": c.server,
                        "user": c.user,
                    })
                })
                .collect();
            output::print_list(
                out,
                fmt,
                &rows,
                &["CURRENT", "NAME", "SERVER", "USER"],
                |r| {
                    vec![
                        if r["current"] == true { "*" } else { "" }.into(),
                        text(&r["name"]),
                        text(&r["server"]),
                        text(&r["user"]),
                    ]
                },
            )
        }
        ContextCommand::Use { name } => {
            if !contexts.contexts.contains_key(&name) {
                return Err(unknown_context(&name, &contexts));
            }
            contexts.current = Some(name);
            contexts.save(&path).map_err(|e| anyhow::anyhow!(e))
        }
        ContextCommand::Delete { name } => {
            if contexts.contexts.remove(&name).is_none() {
                return Err(unknown_context(&name, &contexts));
            }
            if contexts.current.as_deref() == Some(name.as_str()) {
                contexts.current = None;
            }
            contexts.save(&path).map_err(|e| anyhow::anyhow!(e))
        }
    }
}

fn text(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or("-").to_string()
}

fn unknown_context(name: &str, c: &Contexts) -> anyhow::Error {
    let known: Vec<&str> = c.contexts.keys().map(String::as_str).collect();
    Exit::usage(format!(
        "no context named {name:?}; saved contexts: {}",
        if known.is_empty() {
            "none (use `platform login`)".into()
        } else {
            known.join(", ")
        }
    ))
}

/// `platform whoami`.
pub async fn whoami(g: &GlobalArgs, out: &Printer) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json])?;
    let me = g.client()?.whoami().await?;
    if fmt == OutputFormat::Json {
        return out.json(&me);
    }
    println!("{}", describe(&me));
    if let Some(t) = &me.principal.token {
        println!("token: {t}");
    }
    Ok(())
}

/// `platform user …`.
pub async fn user(g: &GlobalArgs, out: &Printer, cmd: UserCommand) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json])?;
    let client = g.client()?;
    let set_active = |name: String, active: bool| {
        (
            name,
            UpdateUser {
                role: None,
                active: Some(active),
            },
        )
    };
    let (name, change) = match cmd {
        UserCommand::Create { name, role } => {
            let role: Role = role.parse()?;
            let req = CreateUser {
                name,
                role: Some(role),
            };
            let created: CreatedUser = client.call(Method::POST, "/api/v1/users", &req).await?;
            if fmt == OutputFormat::Json {
                return out.json(&created);
            }
            eprintln!(
                "created {} ({}); their token, shown only now:",
                created.user.name,
                created.user.role.as_str()
            );
            println!("{}", created.token.token);
            return Ok(());
        }
        UserCommand::List => {
            let users = client.users().await?;
            return output::print_list(
                out,
                fmt,
                &users,
                &["NAME", "ROLE", "ACTIVE", "CREATED"],
                |u: &User| {
                    vec![
                        u.name.clone(),
                        u.role.as_str().into(),
                        if u.active { "yes" } else { "no" }.into(),
                        output::ago(u.created_at),
                    ]
                },
            );
        }
        UserCommand::Disable { name } => set_active(name, false),
        UserCommand::Enable { name } => set_active(name, true),
    };
    let user = client.update_user(&name, &change).await?;
    if fmt == OutputFormat::Json {
        return out.json(&user);
    }
    eprintln!(
        "{} is {}",
        user.name,
        if user.active { "enabled" } else { "disabled" }
    );
    Ok(())
}

/// `platform token …`.
pub async fn token(g: &GlobalArgs, out: &Printer, cmd: TokenCommand) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json])?;
    let client = g.client()?;
    match cmd {
        TokenCommand::Create {
            name,
            user,
            expires_in_days,
        } => {
            let req = CreateToken {
                name,
                user,
                expires_in_days,
            };
            let t: NewToken = client.call(Method::POST, "/api/v1/tokens", &req).await?;
            if fmt == OutputFormat::Json {
                return out.json(&t);
            }
            eprintln!(
                "created token {:?} for {} (id {}); shown only now:",
                t.info.name, t.info.user, t.info.id
            );
            println!("{}", t.token);
            Ok(())
        }
        TokenCommand::List { user } => {
            let tokens = client.tokens(user.as_deref()).await?;
            output::print_list(
                out,
                fmt,
                &tokens,
                &[
                    "ID",
                    "USER",
                    "NAME",
                    "PREFIX",
                    "CREATED",
                    "LAST USED",
                    "EXPIRES",
                    "STATE",
                ],
                |t: &TokenInfo| {
                    let state = match (t.revoked_at, t.expires_at) {
                        (Some(_), _) => "revoked",
                        (None, Some(e)) if e <= Utc::now() => "expired",
                        _ => "active",
                    };
                    vec![
                        t.id.to_string(),
                        t.user.clone(),
                        t.name.clone(),
                        format!("{}…", t.prefix),
                        output::ago(t.created_at),
                        t.last_used_at.map_or("-".into(), output::ago),
                        t.expires_at.map_or("never".into(), |e| e.to_rfc3339()),
                        state.into(),
                    ]
                },
            )
        }
        TokenCommand::Revoke { id } => {
            let t = client.revoke_token(&id).await?;
            if fmt == OutputFormat::Json {
                return out.json(&t);
            }
            eprintln!("revoked token {:?} of {} ({})", t.name, t.user, t.id);
            Ok(())
        }
    }
}

/// `platform audit`.
pub async fn audit(g: &GlobalArgs, out: &Printer, a: AuditArgs) -> anyhow::Result<()> {
    let fmt = out.format(&[OutputFormat::Table, OutputFormat::Json])?;
    let q = AuditQuery {
        user: a.user,
        since: a.since,
        limit: Some(a.limit),
    };
    let entries = g.client()?.audit(&q).await?;
    output::print_list(
        out,
        fmt,
        &entries,
        &["TIME", "USER", "TOKEN", "REQUEST", "STATUS", "FROM"],
        |e| {
            vec![
                e.at.to_rfc3339(),
                e.user.clone().unwrap_or_else(|| "-".into()),
                e.token.clone().unwrap_or_else(|| "-".into()),
                format!("{} {}", e.method, e.path),
                e.status.to_string(),
                e.remote.clone().unwrap_or_else(|| "-".into()),
            ]
        },
    )
}

/// The user name new jobs and `--mine` mean for this client: the token's
/// user when it is a user token, else `None` (no token, an open daemon,
/// or the operator's shared API token).
pub async fn token_user(client: &Client) -> Option<String> {
    token_principal(client).await.and_then(|p| p.user)
}

/// Who this client's user token acts as (see [`token_user`]).
pub async fn token_principal(client: &Client) -> Option<crate::model::Principal> {
    if !client.has_token() {
        return None;
    }
    let me = client.whoami().await.ok()?;
    let token = me.principal.token.as_deref()?;
    (token != crate::model::user::API_TOKEN_NAME).then_some(me.principal)
}
