//! Connection options shared by everything that talks to KWDB (the `kwdb` sink, the
//! `kwdb-poll` source): URL forms, TLS through rustls, attempts with backoff,
//! several hosts tried in order.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::{Client, NoTls};

use super::error::{classify_state, connect_message, ErrorClass, KwdbError};
use super::server::Dialect;
pub use super::tls::SslMode;
use super::tls::{self, TlsSettings};
pub use crate::secret::Secret;

pub fn default_connection_attempts() -> u32 {
    3
}

pub fn default_connection_backoff() -> Duration {
    Duration::from_secs(5)
}

/// The connection options as configs spell them, the one definition the `kwdb`
/// sink and the `kwdb-poll` source share. They sit at the top level of the
/// component's table, beside its own options: [`super::options_table`] reads
/// them. [`ConnectionOptions::resolve`] merges them with the URL: explicit
/// options win over what the URL says.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionOptions {
    pub url: ConnUrl,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub database: Option<String>,
    /// Defaults from the URL: `jdbc:kaiwudb:` is kwdb, the postgres forms postgres.
    #[serde(default)]
    pub dialect: Option<Dialect>,
    #[serde(default)]
    pub sslmode: Option<SslMode>,
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
    #[serde(default)]
    pub sslcert: Option<PathBuf>,
    #[serde(default)]
    pub sslkey: Option<PathBuf>,
    #[serde(default = "default_connection_attempts")]
    pub connection_attempts: u32,
    #[serde(
        default = "default_connection_backoff",
        deserialize_with = "crate::durations::deserialize"
    )]
    pub connection_backoff: Duration,
}

impl ConnectionOptions {
    /// The option names, in the order they are declared (and listed in errors).
    pub const FIELDS: &'static [&'static str] = &[
        "url",
        "user",
        "password",
        "database",
        "dialect",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "connection_attempts",
        "connection_backoff",
    ];

    /// Stands in for options not read yet: a config whose table holds them
    /// beside its own reads its own first ([`super::options_table`]).
    pub fn unread() -> Self {
        ConnectionOptions::new("")
    }

    pub fn new(url: impl Into<String>) -> Self {
        ConnectionOptions {
            url: ConnUrl::new(url),
            user: None,
            password: None,
            database: None,
            dialect: None,
            sslmode: None,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            connection_attempts: default_connection_attempts(),
            connection_backoff: default_connection_backoff(),
        }
    }

    /// Parses the URL and merges the explicit options into it.
    pub fn resolve(&self) -> Result<ConnectParams, KwdbError> {
        let url = ParsedUrl::parse(self.url.expose())?;
        let dialect = self.dialect.unwrap_or(url.dialect);
        if url.hosts.is_empty() {
            return Err(KwdbError::Config("connection url names no host".into()));
        }
        let sslmode = match self.sslmode {
            Some(m) => m,
            None => match &url.sslmode {
                Some(m) => m.parse().map_err(KwdbError::Config)?,
                None => SslMode::Disable,
            },
        };
        if self.connection_attempts == 0 {
            return Err(KwdbError::Config(
                "connection_attempts must be at least 1".into(),
            ));
        }
        let hosts = url
            .hosts
            .iter()
            .map(|(h, p)| (h.clone(), p.unwrap_or(dialect.default_port())))
            .collect();
        let params = ConnectParams {
            hosts,
            user: self
                .user
                .clone()
                .or(url.user)
                .unwrap_or_else(|| dialect.default_user().to_string()),
            password: self.password.clone().or(url.password),
            database: self.database.clone().or(url.database),
            dialect,
            tls: TlsSettings {
                mode: sslmode,
                rootcert: self.sslrootcert.clone().or(url.sslrootcert),
                cert: self.sslcert.clone().or(url.sslcert),
                key: self.sslkey.clone().or(url.sslkey),
            },
            connect_timeout: url.connect_timeout.unwrap_or(Duration::from_secs(10)),
            attempts: self.connection_attempts,
            backoff: self.connection_backoff,
        };
        if params.tls.cert.is_some() != params.tls.key.is_some() {
            return Err(KwdbError::Config(
                "sslcert and sslkey go together: set both or neither".into(),
            ));
        }
        if params.tls.mode == SslMode::VerifyCa && params.tls.rootcert.is_none() {
            return Err(KwdbError::Config(
                "sslmode verify-ca needs sslrootcert".into(),
            ));
        }
        Ok(params)
    }
}

/// Everything needed to connect, resolved.
#[derive(Clone, Debug)]
pub struct ConnectParams {
    pub hosts: Vec<(String, u16)>,
    pub user: String,
    pub password: Option<Secret>,
    pub database: Option<String>,
    pub dialect: Dialect,
    pub tls: TlsSettings,
    pub connect_timeout: Duration,
    pub attempts: u32,
    pub backoff: Duration,
}

impl ConnectParams {
    /// `host:port,host2:port2`, for messages.
    pub fn hosts_display(&self) -> String {
        self.hosts
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Connects to `database` (or the configured one), trying every host in order,
    /// `attempts` times with `backoff` between rounds.
    pub async fn connect_to(&self, database: Option<&str>) -> Result<Client, KwdbError> {
        let mut cfg = tokio_postgres::Config::new();
        for (h, p) in &self.hosts {
            cfg.host(h).port(*p);
        }
        cfg.user(&self.user)
            .application_name("kwpipe")
            .connect_timeout(self.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if let Some(pw) = &self.password {
            cfg.password(pw.expose());
        }
        if let Some(db) = database.or(self.database.as_deref()) {
            cfg.dbname(db);
        }
        let tls = match self.tls.mode {
            SslMode::Disable => None,
            _ => {
                cfg.ssl_mode(PgSslMode::Require);
                Some(tokio_postgres_rustls::MakeRustlsConnect::new(
                    tls::client_config(&self.tls)?,
                ))
            }
        };
        let budget = self.connect_timeout * self.hosts.len().max(1) as u32;
        let mut last = None;
        for attempt in 1..=self.attempts {
            // tokio-postgres bounds only the TCP connect with connect_timeout; the
            // startup handshake (TLS, authentication) is bounded here, so a server
            // that takes the connection and never answers cannot hold a writer. Each
            // host gets its own budget: a dead first host leaves time for the next.
            let handshake = async {
                match &tls {
                    None => cfg.connect(NoTls).await.map(|(c, conn)| {
                        spawn_connection(conn);
                        c
                    }),
                    Some(tls) => cfg.connect(tls.clone()).await.map(|(c, conn)| {
                        spawn_connection(conn);
                        c
                    }),
                }
            };
            let error = match tokio::time::timeout(budget, handshake).await {
                Ok(Ok(client)) => return Ok(client),
                Ok(Err(e)) => {
                    // Authentication and unknown-database errors do not heal by waiting.
                    let permanent = e
                        .code()
                        .is_some_and(|c| classify_state(c) == ErrorClass::Fatal);
                    let error = KwdbError::Connect {
                        hosts: self.hosts_display(),
                        source: e,
                    };
                    if permanent {
                        return Err(error);
                    }
                    error
                }
                Err(_) => KwdbError::ConnectTimeout {
                    hosts: self.hosts_display(),
                    after: budget,
                },
            };
            if attempt == self.attempts {
                // The caller reports the final error.
                last = Some(error);
                break;
            }
            tracing::warn!(
                hosts = %self.hosts_display(),
                attempt,
                attempts = self.attempts,
                error = %reason(&error),
                retry_in = ?self.backoff,
                "cannot connect to the database; trying again"
            );
            last = Some(error);
            tokio::time::sleep(self.backoff).await;
        }
        Err(last.expect("at least one attempt"))
    }

    pub async fn connect(&self) -> Result<Client, KwdbError> {
        self.connect_to(None).await
    }
}

fn spawn_connection<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "database connection ended");
        }
    });
}

/// A connect error in a few words, without the hosts the log line already names.
fn reason(e: &KwdbError) -> String {
    match e {
        KwdbError::Connect { source, .. } => connect_message(source),
        KwdbError::ConnectTimeout { after, .. } => format!("no answer within {after:?}"),
        other => other.to_string(),
    }
}

/// A connection URL taken apart.
#[derive(Debug)]
struct ParsedUrl {
    dialect: Dialect,
    hosts: Vec<(String, Option<u16>)>,
    user: Option<String>,
    password: Option<Secret>,
    database: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<PathBuf>,
    sslcert: Option<PathBuf>,
    sslkey: Option<PathBuf>,
    connect_timeout: Option<Duration>,
}

impl ParsedUrl {
    fn parse(url: &str) -> Result<ParsedUrl, KwdbError> {
        let err = |m: &str| KwdbError::Config(format!("invalid connection url: {m}"));
        let (dialect, rest) = if let Some(r) = url.strip_prefix("jdbc:kaiwudb://") {
            (Dialect::Kwdb, r)
        } else if let Some(r) = url.strip_prefix("jdbc:postgresql://") {
            (Dialect::Postgres, r)
        } else if let Some(r) = url.strip_prefix("postgresql://") {
            (Dialect::Postgres, r)
        } else if let Some(r) = url.strip_prefix("postgres://") {
            (Dialect::Postgres, r)
        } else {
            return Err(err(
                "expected postgresql://, postgres://, jdbc:kaiwudb:// or jdbc:postgresql://",
            ));
        };
        let mut p = ParsedUrl {
            dialect,
            hosts: Vec::new(),
            user: None,
            password: None,
            database: None,
            sslmode: None,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            connect_timeout: None,
        };
        let (main, query) = match rest.split_once('?') {
            Some((m, q)) => (m, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match main.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (main, None),
        };
        let hostlist = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let (u, pw) = match userinfo.split_once(':') {
                    Some((u, pw)) => (u, Some(pw)),
                    None => (userinfo, None),
                };
                if !u.is_empty() {
                    p.user = Some(percent_decode(u).map_err(|m| err(&m))?);
                }
                if let Some(pw) = pw {
                    p.password = Some(Secret::new(percent_decode(pw).map_err(|m| err(&m))?));
                }
                hosts
            }
            None => authority,
        };
        for hp in hostlist.split(',') {
            if hp.is_empty() {
                return Err(err("empty host"));
            }
            let (host, port) = if let Some(inner) = hp.strip_prefix('[') {
                // [v6]:port
                let (h, after) = inner.split_once(']').ok_or_else(|| err("unclosed ["))?;
                (h, after.strip_prefix(':'))
            } else {
                match hp.rsplit_once(':') {
                    Some((h, port)) => (h, Some(port)),
                    None => (hp, None),
                }
            };
            let port = match port {
                Some(s) => Some(
                    s.parse::<u16>()
                        .map_err(|_| err(&format!("bad port \"{s}\"")))?,
                ),
                None => None,
            };
            p.hosts
                .push((percent_decode(host).map_err(|m| err(&m))?, port));
        }
        if let Some(db) = path.filter(|d| !d.is_empty()) {
            p.database = Some(percent_decode(db).map_err(|m| err(&m))?);
        }
        for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).map_err(|m| err(&m))?;
            match k {
                "user" => p.user = Some(v),
                "password" => p.password = Some(Secret::new(v)),
                "dbname" | "database" => p.database = Some(v),
                "sslmode" => p.sslmode = Some(v),
                "sslrootcert" => p.sslrootcert = Some(v.into()),
                "sslcert" => p.sslcert = Some(v.into()),
                "sslkey" => p.sslkey = Some(v.into()),
                "connect_timeout" | "connectTimeout" => {
                    let secs: u64 = v.parse().map_err(|_| err(&format!("bad {k} \"{v}\"")))?;
                    p.connect_timeout = Some(Duration::from_secs(secs));
                }
                // JDBC drivers take many tuning parameters that mean nothing here.
                other => tracing::debug!(parameter = other, "ignoring connection url parameter"),
            }
        }
        Ok(p)
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad percent escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent escapes are not UTF-8".to_string())
}

/// A connection URL as configured. Its Debug hides a password in the user info
/// or in a `password=` parameter.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct ConnUrl(String);

impl ConnUrl {
    pub fn new(url: impl Into<String>) -> Self {
        ConnUrl(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let mut out = url.clone();
        if let Some(scheme_end) = url.find("://") {
            let rest = &url[scheme_end + 3..];
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            if let Some(at) = rest[..authority_end].rfind('@') {
                if let Some(colon) = rest[..at].find(':') {
                    let from = scheme_end + 3 + colon + 1;
                    out = format!("{}***{}", &url[..from], &url[scheme_end + 3 + at..]);
                }
            }
        }
        if let Some(q) = out.find('?') {
            let (head, query) = out.split_at(q + 1);
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            out = format!("{head}{}", query.join("&"));
        }
        out
    }
}

impl fmt::Debug for ConnUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that takes the connection and never answers (one starting up,
    /// or a half-open path) must not hold the caller past `connect_timeout`.
    #[tokio::test]
    async fn a_silent_server_times_out_the_handshake() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let mut p = ConnectionOptions::new(format!("postgresql://u:pw@127.0.0.1:{port}/db"))
            .resolve()
            .unwrap();
        p.connect_timeout = Duration::from_millis(300);
        p.attempts = 2;
        p.backoff = Duration::from_millis(10);
        let started = std::time::Instant::now();
        let e = p.connect().await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(e, KwdbError::ConnectTimeout { .. }), "{e:?}");
        assert!(e.is_retryable());
        assert!(e.to_string().contains("no answer within 300ms"), "{e}");
        held.abort();
    }

    #[test]
    fn jdbc_kaiwudb_with_several_hosts() {
        let mut o = ConnectionOptions::new(
            "jdbc:kaiwudb://n1:26257,n2,[::1]:26258/benchmark?sslmode=verify-full&foo=bar",
        );
        o.password = Some(Secret::new("s3cret"));
        let p = o.resolve().unwrap();
        assert_eq!(p.dialect, Dialect::Kwdb);
        assert_eq!(
            p.hosts,
            vec![
                ("n1".to_string(), 26257),
                ("n2".to_string(), 26257),
                ("::1".to_string(), 26258)
            ]
        );
        assert_eq!(p.database.as_deref(), Some("benchmark"));
        assert_eq!(p.user, "root");
        assert_eq!(p.tls.mode, SslMode::VerifyFull);
    }

    #[test]
    fn postgres_urls_and_overrides() {
        let p = ConnectionOptions::new("postgresql://bob:p%40ss@127.0.0.1/db1")
            .resolve()
            .unwrap();
        assert_eq!(p.dialect, Dialect::Postgres);
        assert_eq!(p.hosts, vec![("127.0.0.1".to_string(), 5432)]);
        assert_eq!(p.user, "bob");
        assert_eq!(p.password.as_ref().unwrap().expose(), "p@ss");
        let mut o = ConnectionOptions::new("jdbc:postgresql://h:6000/x?user=u");
        o.database = Some("y".into());
        o.dialect = Some(Dialect::Kwdb);
        let p = o.resolve().unwrap();
        assert_eq!((p.database.as_deref(), p.user.as_str()), (Some("y"), "u"));
        assert_eq!(p.dialect, Dialect::Kwdb);
        assert!(ConnectionOptions::new("mysql://h").resolve().is_err());
        assert!(ConnectionOptions::new("postgres://h:99999")
            .resolve()
            .is_err());
    }

    #[test]
    fn password_never_shown() {
        let mut o = ConnectionOptions::new("postgresql://u:urlpw@h/db");
        o.password = Some(Secret::new("cfgpw"));
        let shown = format!("{o:?} {:?}", o.resolve().unwrap());
        assert!(!shown.contains("cfgpw"), "{shown}");
        let p = ConnectionOptions::new("postgresql://u:urlpw@h/db")
            .resolve()
            .unwrap();
        assert!(!format!("{p:?}").contains("urlpw"));
        let q = ConnUrl::new("jdbc:kaiwudb://h/db?user=u&password=qpw&x=1");
        assert_eq!(q.redacted(), "jdbc:kaiwudb://h/db?user=u&password=***&x=1");
    }
}
