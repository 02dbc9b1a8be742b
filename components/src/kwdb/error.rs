//! What can go wrong talking to KWDB, and how a caller should react to it
//! ([`ErrorClass`]). The bottom of the `kwdb` module: every other file of it
//! imports from here, and this imports none of them.

use tokio_postgres::error::SqlState;

/// One rule of KWDB and where KWDB states it; the rules themselves are in
/// [`super::rules`]. Defined here so an error can cite one without this module
/// importing the rules (which build their errors from this one).
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    pub text: &'static str,
    pub source: &'static str,
}

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
    /// A table the rows need does not exist and may not be created by the sink:
    /// an environment problem (someone must create it), never a bad record.
    #[error(
        "table \"{table}\" does not exist in database \"{database}\" and is not created \
         ({why}); create {wanted}, and the waiting rows are written"
    )]
    MissingTable {
        table: String,
        database: String,
        wanted: String,
        why: &'static str,
    },
    /// KWDB (like CockroachDB) takes a connection to a database that does not
    /// exist and fails only later; the sink looks in `SHOW DATABASES` at start.
    #[error("database \"{0}\" does not exist (SHOW DATABASES does not list it); create it or set create_database")]
    UnknownDatabase(String),
    /// A schema, name or value that KWDB would refuse, found before anything was
    /// sent: what is wrong, and the rule with where KWDB states it.
    #[error("{detail} (KWDB: {}; {})", .rule.text, .rule.source)]
    Rule { detail: String, rule: &'static Rule },
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
    /// The environment or the configuration is wrong (unknown database, refused
    /// login, missing privilege): no row is at fault and waiting does not heal
    /// it. The component stops at once and says why.
    Fatal,
}

impl KwdbError {
    pub fn db(context: impl Into<String>, source: tokio_postgres::Error) -> Self {
        KwdbError::Db {
            context: context.into(),
            source,
        }
    }

    /// The SQLSTATE the server sent, if any: compare it with the
    /// [`SqlState`] constants (`e.code() == Some(&SqlState::UNDEFINED_TABLE)`),
    /// never with a string.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            KwdbError::Db { source, .. } | KwdbError::Connect { source, .. } => source.code(),
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
            KwdbError::ConnectTimeout { .. } => ErrorClass::Retryable,
            // A refused login or an unknown database comes back from the handshake.
            KwdbError::Connect { source, .. } => match classify(source) {
                ErrorClass::Fatal => ErrorClass::Fatal,
                _ => ErrorClass::Retryable,
            },
            KwdbError::Db { source, .. } => classify(source),
            KwdbError::UnknownDatabase(_) => ErrorClass::Fatal,
            KwdbError::Tls(_) | KwdbError::Config(_) => ErrorClass::Retryable,
            // Waits like an outage: rows resume when the table exists.
            KwdbError::MissingTable { .. } => ErrorClass::Retryable,
            KwdbError::InvalidIdentifier { .. } | KwdbError::Schema(_) | KwdbError::Rule { .. } => {
                ErrorClass::Permanent
            }
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }
}

/// Classifies by SQLSTATE. Errors without one are I/O: the connection is gone.
/// Unknown classes (internal errors, resource limits) are retried: dropping data
/// because the server had a bad moment is worse than waiting.
///
/// 42804 (datatype mismatch) is a bad value, not a changed table: KWDB's
/// time-series insert path answers NaN or a wrong literal with it, and reading it
/// as "schema changed" re-read the catalog twice per batch before the row was
/// rejected anyway.
pub fn classify(e: &tokio_postgres::Error) -> ErrorClass {
    let Some(code) = e.code() else {
        return ErrorClass::Retryable;
    };
    classify_state(code)
}

/// [`classify`] on the SQLSTATE alone.
pub fn classify_state(code: &SqlState) -> ErrorClass {
    const DUPLICATE: &[SqlState] = &[SqlState::UNIQUE_VIOLATION];
    const STALE: &[SqlState] = &[SqlState::UNDEFINED_COLUMN, SqlState::UNDEFINED_TABLE];
    // Nothing a row holds causes these, and nothing but the operator fixes them.
    const FATAL: &[SqlState] = &[
        SqlState::INVALID_CATALOG_NAME,
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        SqlState::INVALID_PASSWORD,
        SqlState::INSUFFICIENT_PRIVILEGE,
        SqlState::INVALID_SCHEMA_NAME,
    ];
    const RETRY: &[SqlState] = &[
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::QUERY_CANCELED,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
    ];
    // One statement holding two rows of the same key under ON CONFLICT DO UPDATE:
    // the statement is split until the rows stand alone, which then succeed.
    const SPLIT: &[SqlState] = &[SqlState::CARDINALITY_VIOLATION];
    const TOO_BIG: &[SqlState] = &[
        SqlState::PROGRAM_LIMIT_EXCEEDED,
        SqlState::STATEMENT_TOO_COMPLEX,
        SqlState::TOO_MANY_COLUMNS,
        SqlState::TOO_MANY_ARGUMENTS,
    ];
    let class = |prefix: &str| code.code().starts_with(prefix);
    if DUPLICATE.contains(code) {
        ErrorClass::Duplicate
    } else if STALE.contains(code) {
        ErrorClass::StaleSchema
    } else if FATAL.contains(code) || class("28") {
        ErrorClass::Fatal
    } else if RETRY.contains(code) || class("08") || class("53") || class("58") {
        ErrorClass::Retryable
    } else if class("22")
        || class("23")
        || class("42")
        || TOO_BIG.contains(code)
        || SPLIT.contains(code)
    {
        ErrorClass::Permanent
    } else {
        ErrorClass::Retryable
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

#[cfg(test)]
mod tests {
    use super::*;

    fn class(code: &str) -> ErrorClass {
        classify_state(&SqlState::from_code(code))
    }

    #[test]
    fn environment_errors_are_fatal_not_retried() {
        for code in ["3D000", "28P01", "28000", "42501"] {
            assert_eq!(class(code), ErrorClass::Fatal, "{code}");
        }
        assert_eq!(class("08006"), ErrorClass::Retryable);
        assert_eq!(class("57P03"), ErrorClass::Retryable);
    }

    /// KWDB answers NaN into a float column with 42804; the table did not change.
    #[test]
    fn datatype_mismatch_is_a_bad_value_not_a_stale_schema() {
        assert_eq!(class("42804"), ErrorClass::Permanent);
        assert_eq!(class("42703"), ErrorClass::StaleSchema);
        assert_eq!(class("42P01"), ErrorClass::StaleSchema);
        assert_eq!(class("23505"), ErrorClass::Duplicate);
        assert_eq!(class("21000"), ErrorClass::Permanent);
        assert_eq!(class("XX000"), ErrorClass::Retryable);
    }
}
