//! What the `kwdb` sink and the `kwdb-poll` source share: connection options and
//! TLS ([`conn`]), checked and quoted identifiers ([`ident`]), the SQL of the two
//! dialects ([`dialect`]), values as SQL text ([`values`]) and the catalog with its
//! schema cache ([`catalog`]).

pub mod catalog;
pub mod conn;
pub mod dialect;
pub mod ident;
mod tls;
pub mod values;

pub use catalog::{Catalog, TableInfo};
pub use conn::{ConnUrl, ConnectParams, ConnectionOptions, Secret, SslMode};
pub use dialect::{DatabaseKind, Dialect, Sql};
pub use ident::Ident;
/// The client the connections are made with, for callers that query them.
pub use tokio_postgres;

/// What can go wrong talking to KWDB. Never carries a password: connection errors
/// name hosts, not URLs.
#[derive(Debug, thiserror::Error)]
pub enum KwdbError {
    #[error("{0}")]
    Config(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot connect to {hosts}: {}", connect_message(.source))]
    Connect {
        hosts: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The server took the connection but did not finish the handshake in time
    /// (a server starting up or overloaded, a half-open path).
    #[error("cannot connect to {hosts}: no answer within {after:?}")]
    ConnectTimeout {
        hosts: String,
        after: std::time::Duration,
    },
    #[error("{context}: {}", db_message(.source))]
    Db {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("invalid name \"{name}\": {reason}")]
    InvalidIdentifier { name: String, reason: String },
    #[error("{0}")]
    Schema(String),
}

/// How the caller should react to an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Connection lost, server restarting, timeout, serialization failure: retry.
    Retryable,
    /// The data or statement is wrong; retrying the same thing cannot help.
    Permanent,
    /// A unique key already holds the row (a replay); the idempotent path applies.
    Duplicate,
    /// The table is not what the cache believes (changed behind our back).
    StaleSchema,
}

impl KwdbError {
    pub fn db(context: impl Into<String>, source: tokio_postgres::Error) -> Self {
        KwdbError::Db {
            context: context.into(),
            source,
        }
    }

    /// The SQLSTATE the server sent, if any.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            KwdbError::Db { source, .. } | KwdbError::Connect { source, .. } => {
                source.code().map(|c| c.code())
            }
            _ => None,
        }
    }

    /// The server's own message (what rejected rows are reported with).
    pub fn db_message(&self) -> Option<String> {
        match self {
            KwdbError::Db { source, .. } => Some(db_message(source)),
            _ => None,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            KwdbError::Connect { .. } | KwdbError::ConnectTimeout { .. } => ErrorClass::Retryable,
            KwdbError::Db { source, .. } => classify(source),
            KwdbError::Tls(_) | KwdbError::Config(_) => ErrorClass::Retryable,
            KwdbError::InvalidIdentifier { .. } | KwdbError::Schema(_) => ErrorClass::Permanent,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }
}

/// Classifies by SQLSTATE. Errors without one are I/O: the connection is gone.
/// Unknown classes (internal errors, resource limits) are retried: dropping data
/// because the server had a bad moment is worse than waiting.
pub fn classify(e: &tokio_postgres::Error) -> ErrorClass {
    let Some(code) = e.code() else {
        return ErrorClass::Retryable;
    };
    let code = code.code();
    match code {
        "23505" => ErrorClass::Duplicate,
        "42703" | "42P01" | "42804" => ErrorClass::StaleSchema,
        "57P01" | "57P02" | "57P03" | "57014" | "40001" | "40P01" => ErrorClass::Retryable,
        _ if code.starts_with("08") || code.starts_with("53") || code.starts_with("58") => {
            ErrorClass::Retryable
        }
        _ if code.starts_with("22") || code.starts_with("23") || code.starts_with("42") => {
            ErrorClass::Permanent
        }
        "54000" | "54001" | "54011" | "54023" => ErrorClass::Permanent,
        _ => ErrorClass::Retryable,
    }
}

/// Why a connection failed, in a few words: the server's own message (`password
/// authentication failed for user "x"`, `database "x" does not exist`) or the
/// innermost I/O error (`connection refused`), never the connection string.
pub fn connect_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let text = inner.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => e.to_string(),
    }
}

fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                m.push_str(": ");
                m.push_str(d);
            }
            m
        }
        None => e.to_string(),
    }
}
