//! `DATABASE_URL`: which backend, and where it is.
//!
//! SQLite follows SQLAlchemy's spelling (`sqlite:///relative`,
//! `sqlite:////absolute`, `sqlite+aiosqlite://…`, or a bare path);
//! PostgreSQL takes libpq's URL form (`postgresql://`, `postgres://`, and
//! the seed's `postgresql+asyncpg://`) with the parameters `sslmode`,
//! `sslrootcert`, `pool_size` and `connect_timeout`. We parse the URL
//! ourselves because tokio-postgres knows neither `verify-ca`/`verify-full`
//! nor `sslrootcert` nor the SQLAlchemy schemes.
//!
//! A URL may carry a password, so nothing here ever shows one: the parsed
//! value's `Debug` and `Display` print `****` in its place, and every error
//! names the URL only through [`mask`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;

/// What stands in for a password wherever a URL is shown.
const MASK: &str = "****";
/// What the error messages say is accepted.
const ACCEPTED: &str = "use sqlite:///relative/path, sqlite:////absolute/path or postgresql://user:password@host:5432/database";

/// A parsed `DATABASE_URL`.
#[derive(Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// The SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server.
    Postgres(PgUrl),
}

/// Where a PostgreSQL database is and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// The role to log in as.
    pub user: String,
    /// Its password, if the URL has one.
    pub password: Option<Password>,
    /// Host name, IP address, or a Unix socket directory (starts with `/`).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The database name.
    pub database: String,
    /// Whether and how to use TLS.
    pub sslmode: SslMode,
    /// Trusted roots for `verify-ca`/`verify-full` (default: the system's).
    pub sslrootcert: Option<RootCert>,
    /// Connections in the pool, when the URL says.
    pub pool_size: Option<usize>,
    /// How long one connection attempt may take.
    pub connect_timeout: Option<Duration>,
}

/// A password: shown as `****`, compared in full.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// The secret itself (for the driver only).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// libpq's `sslmode` values, weakest first (`allow` is not offered: it
/// only ever downgrades).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, without checking its certificate.
    Prefer,
    /// TLS always, without checking the certificate.
    Require,
    /// TLS, certificate chain checked against the roots (any host name).
    VerifyCa,
    /// TLS, chain and host name checked.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// The URL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where `verify-ca`/`verify-full` get their trusted roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file of CA certificates.
    File(PathBuf),
    /// The system's store (`sslrootcert=system`).
    System,
}

/// A `DATABASE_URL` that cannot be used; the message shows the URL masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported DATABASE_URL {url}: {reason}")]
pub struct UrlError {
    /// The URL, password masked.
    url: String,
    /// What is wrong with it.
    reason: String,
}

impl UrlError {
    fn new(raw: &str, reason: impl Into<String>) -> Self {
        UrlError {
            url: mask(raw),
            reason: reason.into(),
        }
    }
}

impl DbUrl {
    /// Parses a `DATABASE_URL`.
    pub fn parse(raw: &str) -> Result<DbUrl, UrlError> {
        let url = raw.trim();
        if let Some(rest) = url
            .strip_prefix("sqlite+aiosqlite://")
            .or_else(|| url.strip_prefix("sqlite://"))
        {
            let path = rest.strip_prefix('/').unwrap_or(rest);
            if path.is_empty() || path == ":memory:" {
                return Err(UrlError::new(
                    raw,
                    format!("SQLite needs a file path; {ACCEPTED}"),
                ));
            }
            return Ok(DbUrl::Sqlite(PathBuf::from(path)));
        }
        for scheme in ["postgresql://", "postgres://", "postgresql+asyncpg://"] {
            if let Some(rest) = url.strip_prefix(scheme) {
                return parse_pg(raw, rest).map(DbUrl::Postgres);
            }
        }
        match url.split_once("://") {
            Some((scheme, _)) => Err(UrlError::new(
                raw,
                format!("the scheme {scheme:?} is not supported; {ACCEPTED}"),
            )),
            None if url.is_empty() => Err(UrlError::new(raw, format!("it is empty; {ACCEPTED}"))),
            None => Ok(DbUrl::Sqlite(PathBuf::from(url))),
        }
    }

    /// The backend's name, for logs and `db check`.
    pub fn backend(&self) -> &'static str {
        match self {
            DbUrl::Sqlite(_) => "SQLite",
            DbUrl::Postgres(_) => "PostgreSQL",
        }
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbUrl::Sqlite(p) => write!(f, "sqlite:///{}", p.display()),
            DbUrl::Postgres(pg) => pg.fmt(f),
        }
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let secret = if self.password.is_some() {
            format!(":{MASK}")
        } else {
            String::new()
        };
        write!(
            f,
            "postgresql://{}{secret}@{host}:{}/{}?sslmode={}",
            self.user,
            self.port,
            self.database,
            self.sslmode.as_str()
        )
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `raw` with the password of its authority (`user:PASSWORD@`) replaced by
/// `****`, whatever the scheme; anything that looks like a password
/// parameter in the query is masked too.
pub fn mask(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:{MASK}@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}={MASK}"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

fn decode(raw: &str, part: &str, what: &str) -> Result<String, UrlError> {
    percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            UrlError::new(
                raw,
                format!("its {what} is not valid percent-encoded UTF-8"),
            )
        })
}

/// The part of a PostgreSQL URL after `scheme://`.
fn parse_pg(raw: &str, rest: &str) -> Result<PgUrl, UrlError> {
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, pw)) => (
                decode(raw, user, "user name")?,
                Some(Password(decode(raw, pw, "password")?)),
            ),
            None => (decode(raw, u, "user name")?, None),
        },
        None => (String::new(), None),
    };
    let (host, port) = split_host_port(raw, hostport)?;
    let mut url = PgUrl {
        user: if user.is_empty() {
            "postgres".into()
        } else {
            user
        },
        password,
        host: decode(raw, &host, "host")?,
        port: port.unwrap_or(5432),
        database: decode(raw, path, "database name")?,
        sslmode: SslMode::Prefer,
        sslrootcert: None,
        pool_size: None,
        connect_timeout: None,
    };
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = decode(raw, v, "query")?;
        match k {
            "sslmode" => {
                url.sslmode = SslMode::parse(&v).ok_or_else(|| {
                    UrlError::new(raw, format!("sslmode {v:?} is not one of disable, prefer, require, verify-ca, verify-full"))
                })?
            }
            "sslrootcert" => {
                url.sslrootcert = Some(if v == "system" {
                    RootCert::System
                } else if v.is_empty() {
                    return Err(UrlError::new(raw, "sslrootcert is empty: name a PEM file of CA certificates, or `system`"));
                } else {
                    RootCert::File(PathBuf::from(v))
                })
            }
            "pool_size" => {
                url.pool_size = Some(v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    UrlError::new(raw, format!("pool_size {v:?} is not a whole number above 0"))
                })?)
            }
            "connect_timeout" => {
                let secs: u64 = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    UrlError::new(raw, format!("connect_timeout {v:?} is not a whole number of seconds above 0"))
                })?;
                url.connect_timeout = Some(Duration::from_secs(secs));
            }
            "host" => url.host = v,
            "port" => {
                url.port = v.parse().map_err(|_| {
                    UrlError::new(raw, format!("port {v:?} is not a port number"))
                })?
            }
            "user" => url.user = v,
            "password" => url.password = Some(Password(v)),
            "dbname" => url.database = v,
            other => {
                return Err(UrlError::new(
                    raw,
                    format!("the parameter {other:?} is not supported (known: sslmode, sslrootcert, pool_size, connect_timeout, host, port, user, password, dbname)"),
                ))
            }
        }
    }
    if url.host.is_empty() {
        url.host = "localhost".into();
    }
    if url.database.is_empty() {
        // libpq's rule: the database is named after the user.
        url.database = url.user.clone();
    }
    if url.sslrootcert.is_some() && url.sslmode < SslMode::VerifyCa {
        // libpq: a root certificate file upgrades `prefer`/`require` to
        // verification; be explicit instead of silently changing modes.
        return Err(UrlError::new(
            raw,
            format!(
                "sslrootcert is only used with sslmode=verify-ca or verify-full, not {}",
                url.sslmode.as_str()
            ),
        ));
    }
    Ok(url)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(raw: &str, hostport: &str) -> Result<(String, Option<u16>), UrlError> {
    let bad_port = |p: &str| UrlError::new(raw, format!("port {p:?} is not a port number"));
    if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| UrlError::new(raw, "an IPv6 host is missing its closing `]`"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| bad_port(p))?),
            None if after.is_empty() => None,
            None => return Err(UrlError::new(raw, "unexpected text after the IPv6 host")),
        };
        return Ok((host.to_string(), port));
    }
    match hostport.rsplit_once(':') {
        Some((host, p)) => Ok((host.to_string(), Some(p.parse().map_err(|_| bad_port(p))?))),
        None => Ok((hostport.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(raw: &str) -> PgUrl {
        match DbUrl::parse(raw) {
            Ok(DbUrl::Postgres(p)) => p,
            other => panic!("{raw}: {other:?}"),
        }
    }

    #[test]
    fn sqlite_urls_follow_sqlalchemy() {
        let path = |raw: &str| match DbUrl::parse(raw) {
            Ok(DbUrl::Sqlite(p)) => p,
            other => panic!("{raw}: {other:?}"),
        };
        assert_eq!(path("sqlite:///rel/x.db"), PathBuf::from("rel/x.db"));
        assert_eq!(path("sqlite:////abs/x.db"), PathBuf::from("/abs/x.db"));
        assert_eq!(path("sqlite+aiosqlite:///./t.db"), PathBuf::from("./t.db"));
        assert_eq!(path("/var/lib/p.db"), PathBuf::from("/var/lib/p.db"));
        assert!(DbUrl::parse("sqlite://").is_err());
        assert!(DbUrl::parse("sqlite:///:memory:").is_err());
        assert!(DbUrl::parse("").is_err());
    }

    #[test]
    fn postgres_urls_in_every_spelling() {
        for scheme in ["postgresql", "postgres", "postgresql+asyncpg"] {
            let u = pg(&format!(
                "{scheme}://alice:s%40cret@db.example:6543/platform"
            ));
            assert_eq!(u.user, "alice");
            assert_eq!(u.password.as_ref().map(Password::expose), Some("s@cret"));
            assert_eq!((u.host.as_str(), u.port), ("db.example", 6543));
            assert_eq!(u.database, "platform");
            assert_eq!(u.sslmode, SslMode::Prefer);
        }
        let u = pg("postgresql://bob@[::1]/x?sslmode=verify-full&sslrootcert=/ca.pem&pool_size=7&connect_timeout=3");
        assert_eq!((u.host.as_str(), u.port), ("::1", 5432));
        assert_eq!(u.sslmode, SslMode::VerifyFull);
        assert_eq!(u.sslrootcert, Some(RootCert::File("/ca.pem".into())));
        assert_eq!(u.pool_size, Some(7));
        assert_eq!(u.connect_timeout, Some(Duration::from_secs(3)));
        assert!(u.password.is_none());
        let u = pg("postgres://carol@h?sslmode=verify-ca&sslrootcert=system");
        assert_eq!(u.database, "carol");
        assert_eq!(u.sslrootcert, Some(RootCert::System));
        let u = pg("postgresql:///db?host=%2Frun%2Fpostgresql&user=dave");
        assert_eq!(
            (u.host.as_str(), u.user.as_str()),
            ("/run/postgresql", "dave")
        );
    }

    #[test]
    fn the_password_is_never_shown() {
        let secret = "hunter2-very-secret";
        let raw = format!("postgresql+asyncpg://alice:{secret}@h:5432/db");
        let u = DbUrl::parse(&raw).unwrap();
        for shown in [format!("{u}"), format!("{u:?}")] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains("alice:****@h:5432/db"), "{shown}");
        }
        for bad in [
            format!("mysql://alice:{secret}@h/db"),
            format!("postgresql://alice:{secret}@h:notaport/db"),
            format!("postgresql://alice:{secret}@h/db?sslmode=bogus"),
            format!("postgresql://alice:{secret}@h/db?color=blue"),
            format!("postgresql://alice@h/db?password={secret}&x=1"),
        ] {
            let e = DbUrl::parse(&bad).unwrap_err();
            let text = format!("{e} {e:?}");
            assert!(!text.contains(secret), "{text}");
            assert!(text.contains("****"), "{text}");
        }
        assert_eq!(mask("sqlite:///x.db"), "sqlite:///x.db");
        assert_eq!(mask("no url at all"), "no url at all");
    }

    #[test]
    fn bad_urls_say_what_is_accepted() {
        let e = DbUrl::parse("mysql://u@h/db").unwrap_err().to_string();
        assert!(
            e.contains("\"mysql\" is not supported") && e.contains("postgresql://"),
            "{e}"
        );
        for bad in [
            "postgresql://u@h/db?sslmode=allow",
            "postgresql://u@h/db?pool_size=0",
            "postgresql://u@h/db?sslrootcert=/ca.pem",
            "postgresql://u@[::1/db",
        ] {
            assert!(DbUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
