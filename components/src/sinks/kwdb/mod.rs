//! `kwdb`: rows into KWDB (dialect `kwdb`) or PostgreSQL (dialect `postgres`).
//!
//! Each table is pinned to one of `concurrency` connections, so its rows are
//! written in the order they arrived. A batch is acknowledged Delivered only after
//! the database confirmed every row; rows the database refuses for what they
//! contain are isolated by splitting the batch and Rejected with the database's
//! message; connection trouble is retried with backoff (forever by default).

// Layered downwards: worker -> (schema, write) -> (plan, session, step) -> kwdb.
mod parked;
mod plan;
mod schema;
mod session;
mod step;
mod worker;
mod write;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer};
use tokio::sync::mpsc;

use crate::ack::EventStatus;
use crate::api::{
    BuildContext, Component, ComponentConfig, ComponentContext, ComponentError, OutputDef,
};
use crate::durations;
use crate::event::{Event, EventKind};
use crate::kwdb::dedup::{self, DedupRule};
use crate::kwdb::options_table::{self, WithConnection};
use crate::kwdb::{catalog, ErrorClass};
use crate::kwdb::{ConnectParams, ConnectionOptions, DatabaseKind, Dialect, KwdbError};

pub use crate::kwdb::values::NonFinite;

/// When a missing table is created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoCreate {
    /// From batches whose schema their payload declared (json_kaiwudb, OpenTSDB,
    /// schema-infer), not from batches marked as carrying a partial schema
    /// (line_influxdb: types and lengths are guesses, as the seed says).
    #[default]
    Declared,
    /// From every batch, partial schemas included.
    Always,
    /// Never: every table must exist.
    Never,
}

/// What to do with columns and tags a batch has and the table lacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaEvolution {
    /// Add them as nullable; widen VARCHAR-like lengths.
    #[default]
    Add,
    /// Reject the batch's rows with a reason naming the unknown field.
    Reject,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMethod {
    /// COPY FROM STDIN (postgres only). A chunk holding replayed rows goes through
    /// a staging table and INSERT ... SELECT ... ON CONFLICT DO NOTHING, one holding
    /// bad rows through INSERT ... ON CONFLICT DO NOTHING statements.
    Copy,
    /// Multi-row INSERT statements (the only method KWDB takes).
    Insert,
}

fn default_batch_size() -> usize {
    1000
}
fn default_copy_max_rows() -> usize {
    10_000
}
fn default_max_statement_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_concurrency() -> usize {
    1
}
fn default_retry_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_retry_backoff_max() -> Duration {
    Duration::from_secs(30)
}

/// The `kwdb` sink's options: the connection options (`url`, `user`,
/// `sslmode`...) and its own, side by side in one table.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct KwdbSinkConfig {
    /// Read beside the others by [`options_table`] (see [`WithConnection`]).
    #[serde(skip, default = "ConnectionOptions::unread")]
    pub connection: ConnectionOptions,

    /// Rows per INSERT statement (seed `batch.size`).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Rows per COPY statement (postgres): batches waiting for the same table are
    /// streamed in one COPY up to this many rows. A statement's fixed cost in
    /// PostgreSQL is about that of 300 rows here, so 1000-row COPYs lose a quarter
    /// of the rate (benches/README.md, "kwdb sink").
    #[serde(default = "default_copy_max_rows")]
    pub copy_max_rows: usize,
    /// Bytes of SQL per INSERT statement, whatever `batch_size` says.
    #[serde(default = "default_max_statement_bytes")]
    pub max_statement_bytes: usize,
    /// Connections (seed `tasks.max`); a table always uses the same one.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Create `database` at start when it is missing: `"ts"` or `"relational"`.
    #[serde(default)]
    pub create_database: Option<DatabaseKind>,
    #[serde(default)]
    pub auto_create: AutoCreate,
    #[serde(default)]
    pub schema_evolution: SchemaEvolution,
    /// Retries of one write before giving up (the batch is then Failed and the sink
    /// stops). Unset: retry forever, as an edge agent should.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// First wait before a retry; doubles up to `retry_backoff_max`.
    #[serde(
        default = "default_retry_backoff",
        deserialize_with = "durations::deserialize"
    )]
    pub retry_backoff: Duration,
    #[serde(
        default = "default_retry_backoff_max",
        deserialize_with = "durations::deserialize"
    )]
    pub retry_backoff_max: Duration,
    /// Default: `copy` for postgres, `insert` for kwdb.
    #[serde(default)]
    pub write_method: Option<WriteMethod>,
    /// NaN and ±Infinity for a float column, which KWDB refuses: `"reject"` the
    /// row with the reason (default) or write `"null"`.
    #[serde(default)]
    pub non_finite_floats: NonFinite,
}

impl KwdbSinkConfig {
    /// A config with every default, for tests and embedding.
    pub fn new(url: &str) -> Self {
        let mut t = toml::Table::new();
        t.insert("url".into(), toml::Value::String(url.to_string()));
        toml::Value::Table(t)
            .try_into()
            .expect("defaults deserialize")
    }

    fn options(&self) -> Result<(ConnectParams, SinkOptions), KwdbError> {
        let params = self.connection.resolve()?;
        let method = self.write_method.unwrap_or(match params.dialect {
            Dialect::Postgres => WriteMethod::Copy,
            Dialect::Kwdb => WriteMethod::Insert,
        });
        if method == WriteMethod::Copy && !params.dialect.supports_copy() {
            return Err(KwdbError::Config(
                "write_method = \"copy\" needs the postgres dialect; KWDB has no COPY".into(),
            ));
        }
        if self.batch_size == 0 || self.copy_max_rows == 0 || self.concurrency == 0 {
            return Err(KwdbError::Config(
                "batch_size, copy_max_rows and concurrency must be at least 1".into(),
            ));
        }
        let Some(database) = params.database.as_deref() else {
            return Err(KwdbError::Config(
                "no database: set `database` or name it in the url".into(),
            ));
        };
        crate::kwdb::Ident::new(database, params.dialect)
            .map_err(|e| KwdbError::Config(format!("database: {e}")))?;
        Ok((
            params,
            SinkOptions {
                batch_size: self.batch_size,
                copy_max_rows: self.copy_max_rows,
                max_statement_bytes: self.max_statement_bytes.max(1024),
                auto_create: self.auto_create,
                evolution: self.schema_evolution,
                max_retries: self.max_retries,
                retry_backoff: self.retry_backoff,
                retry_backoff_max: self.retry_backoff_max.max(self.retry_backoff),
                method,
                non_finite_floats: self.non_finite_floats,
            },
        ))
    }
}

impl WithConnection for KwdbSinkConfig {
    fn deserialize_own<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        KwdbSinkConfig::deserialize(d)
    }

    fn set_connection(&mut self, connection: ConnectionOptions) {
        self.connection = connection;
    }
}

impl<'de> Deserialize<'de> for KwdbSinkConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        options_table::deserialize(d)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct SinkOptions {
    pub batch_size: usize,
    pub copy_max_rows: usize,
    pub max_statement_bytes: usize,
    pub auto_create: AutoCreate,
    pub evolution: SchemaEvolution,
    pub max_retries: Option<u32>,
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    pub method: WriteMethod,
    pub non_finite_floats: NonFinite,
}

fn config_error(e: KwdbError) -> ComponentError {
    ComponentError::msg(e.to_string())
}

#[async_trait]
impl ComponentConfig for KwdbSinkConfig {
    fn type_name(&self) -> &'static str {
        "kwdb"
    }

    fn input_kinds(&self) -> Vec<EventKind> {
        vec![EventKind::Rows]
    }

    fn outputs(&self) -> Vec<OutputDef> {
        Vec::new()
    }

    /// What can be told without the database: the options, the database name
    /// against KWDB's rules (a time-series database name of at most 63 bytes).
    fn check(&self) -> Result<(), ComponentError> {
        let (params, _) = self.options().map_err(config_error)?;
        if let (Some(DatabaseKind::Ts), Some(db)) =
            (self.create_database, params.database.as_deref())
        {
            crate::kwdb::rules::check_ts_database_name(db)
                .map_err(|e| config_error(KwdbError::Config(format!("database: {e}"))))?;
        }
        Ok(())
    }

    /// Rows the database refuses are Rejected (no `dropped` output yet): the
    /// source's `on_reject` decides (issue 18).
    fn may_reject(&self) -> bool {
        true
    }

    async fn healthcheck(&self, _cx: &BuildContext) -> Result<(), ComponentError> {
        let (mut params, _) = self.options().map_err(config_error)?;
        // One try: a check reports what it finds, the running sink retries.
        params.attempts = 1;
        let db = if self.create_database.is_some() {
            Some(params.dialect.admin_database())
        } else {
            None
        };
        let client = params.connect_to(db).await.map_err(config_error)?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| config_error(KwdbError::db("health check query failed", e)))?;
        // KWDB takes a connection to a database that does not exist.
        if let (Dialect::Kwdb, None, Some(db)) = (
            params.dialect,
            self.create_database,
            params.database.as_deref(),
        ) {
            if !catalog::kwdb_database_exists(&client, db)
                .await
                .map_err(config_error)?
            {
                return Err(config_error(KwdbError::UnknownDatabase(db.to_string())));
            }
        }
        Ok(())
    }

    async fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        let (params, options) = self.options().map_err(config_error)?;
        Ok(Box::new(KwdbSink {
            params: Arc::new(params),
            options: Arc::new(options),
            concurrency: self.concurrency,
            create_database: self.create_database,
        }))
    }
}

/// Batches queued per connection.
const WORKER_QUEUE: usize = 8;

struct KwdbSink {
    params: Arc<ConnectParams>,
    options: Arc<SinkOptions>,
    concurrency: usize,
    create_database: Option<DatabaseKind>,
}

#[async_trait]
impl Component for KwdbSink {
    async fn run(self: Box<Self>, mut cx: ComponentContext) -> Result<(), ComponentError> {
        let mut input = cx.take_input();
        let metrics = input.metrics().clone();
        if let Some(kind) = self.create_database {
            schema::create_database(&self.params, kind, &self.options)
                .await
                .map_err(config_error)?;
        }
        let dedup = match self.params.dialect {
            Dialect::Kwdb => kwdb_start_checks(&self.params)
                .await
                .map_err(config_error)?,
            Dialect::Postgres => None,
        };
        let mut senders = Vec::with_capacity(self.concurrency);
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..self.concurrency {
            // Small queues: the backlog stays in the upstream channels, bounded there.
            // A few batches waiting let the COPY path stream them in one statement.
            let (tx, rx) = mpsc::channel(WORKER_QUEUE);
            let w = worker::Worker::new(
                n,
                self.params.clone(),
                self.options.clone(),
                metrics.clone(),
                dedup.clone(),
            );
            senders.push(tx);
            tasks.spawn(w.run(rx));
        }
        let mut failure = None;
        loop {
            let event = tokio::select! {
                event = input.recv() => match event {
                    Some(e) => e,
                    None => break,
                },
                // A writer ends before its queue closes only when it gave up (an
                // unknown database, a refused login, max_retries spent): the sink
                // stops now, not at the next batch, however quiet the input is.
                Some(done) = tasks.join_next() => {
                    failure = Some(writer_failure(done).unwrap_or_else(|| {
                        ComponentError::msg("a kwdb writer stopped")
                    }));
                    break;
                }
            };
            let batch = match event {
                Event::Rows(b) => b,
                Event::Raw(m) => {
                    tracing::warn!(component = %cx.id, "kwdb sink got a raw message; it takes rows only");
                    metrics.rejected(1);
                    m.finalizers.finish(EventStatus::Rejected);
                    continue;
                }
            };
            let mut h = DefaultHasher::new();
            batch.target.hash(&mut h);
            let n = (h.finish() % senders.len() as u64) as usize;
            if let Err(mpsc::error::SendError(b)) = senders[n].send(batch).await {
                b.finalizers.finish(EventStatus::Failed);
                failure = Some(ComponentError::msg(
                    "kwdb sink gave up writing (see the errors above)",
                ));
                break;
            }
        }
        drop(senders);
        while let Some(done) = tasks.join_next().await {
            if let Some(e) = writer_failure(done) {
                failure = Some(e);
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The error a writer task ended with, if any.
fn writer_failure(
    done: Result<Result<(), KwdbError>, tokio::task::JoinError>,
) -> Option<ComponentError> {
    match done {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(config_error(e)),
        Err(e) => Some(ComponentError::msg(format!("kwdb writer panicked: {e}"))),
    }
}

/// kwdb dialect, at start: the database must exist (KWDB takes a connection
/// to any name and fails only later), and `ts.dedup.rule` is read and what a
/// replay does under it logged. A server that cannot be reached now is not a
/// reason to stop (the writers wait for it); one that refuses the login, or
/// lacks the database, is.
async fn kwdb_start_checks(params: &ConnectParams) -> Result<Option<DedupRule>, KwdbError> {
    let client = match params.connect().await {
        Ok(c) => c,
        Err(e) if e.class() == ErrorClass::Fatal => return Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read ts.dedup.rule now; what replays do is not known");
            return Ok(None);
        }
    };
    let database = params.database.clone().unwrap_or_default();
    match catalog::kwdb_database_exists(&client, &database).await {
        Ok(false) => return Err(KwdbError::UnknownDatabase(database)),
        Ok(true) => {}
        Err(e) if e.class() == ErrorClass::Fatal => return Err(e),
        Err(e) => tracing::warn!(error = %e, "cannot list databases; going on"),
    }
    match dedup::read(&client).await {
        Ok(rule) => {
            if rule.is_risky() {
                tracing::warn!(ts_dedup_rule = %rule, "replays: {}", rule.replay());
            } else {
                tracing::info!(ts_dedup_rule = %rule, "replays: {}", rule.replay());
            }
            if rule.loses_partial_rows() {
                tracing::warn!(
                    ts_dedup_rule = %rule,
                    "rows that carry only some columns of a point (json_opentsdb, \
                     line_opentsdb, line_influxdb) lose the others: {}",
                    dedup::partial_rows_note(&rule)
                );
            }
            Ok(Some(rule))
        }
        // Reading a cluster setting may need privileges a writer lacks: say so, go on.
        Err(e) => {
            tracing::warn!(error = %e, "cannot read ts.dedup.rule; what replays do is not known");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kwdb::SslMode;

    #[test]
    fn defaults_and_secrets() {
        let c: KwdbSinkConfig = toml::from_str(
            r#"url = "jdbc:kaiwudb://h:26257/db?password=inurl"
               password = "topsecret""#,
        )
        .unwrap();
        assert_eq!(c.batch_size, 1000);
        assert_eq!(c.max_retries, None);
        assert_eq!(c.auto_create, AutoCreate::Declared);
        let (p, o) = c.options().unwrap();
        assert_eq!(o.method, WriteMethod::Insert);
        assert_eq!(p.dialect, Dialect::Kwdb);
        let shown = format!("{c:?} {p:?} {o:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("inurl"),
            "{shown}"
        );
        let bad: Result<KwdbSinkConfig, _> = toml::from_str("url = \"postgres://h/d\"\nbogus = 1");
        assert!(bad.is_err());
        let mut c = KwdbSinkConfig::new("jdbc:kaiwudb://h/db");
        c.write_method = Some(WriteMethod::Copy);
        assert!(c.options().is_err());
    }

    /// Checked at load, before anything connects: KWDB's limit on time-series
    /// database names (create_database.go MaxTSDBNameLength) and its quotes rule.
    #[test]
    fn database_names_are_checked_at_load() {
        let mut c = KwdbSinkConfig::new(&format!("jdbc:kaiwudb://h:26257/{}", "d".repeat(64)));
        assert!(
            c.check().is_ok(),
            "may exist already: only creating it is refused"
        );
        c.create_database = Some(DatabaseKind::Ts);
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("MaxTSDBNameLength"), "{e}");
        let mut c = KwdbSinkConfig::new("jdbc:kaiwudb://h:26257/db");
        c.connection.database = Some("it's".into());
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("show_attributes.go"), "{e}");
        let c = KwdbSinkConfig::new("jdbc:kaiwudb://h:26257");
        assert!(c.check().is_err(), "no database");
    }

    #[tokio::test]
    async fn connect_errors_do_not_show_the_password() {
        let mut c = KwdbSinkConfig::new("postgresql://nobody:pw-in-url@127.0.0.1:1/db");
        c.connection.password = Some(crate::kwdb::Secret::new("pw-in-config"));
        c.connection.connection_attempts = 1;
        let (p, _) = c.options().unwrap();
        let e = p.connect().await.unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("pw-in"), "{shown}");
        assert!(e.is_retryable());
    }

    /// How the registry reads a component's options, and reports them wrong.
    fn parse(text: &str) -> Result<KwdbSinkConfig, String> {
        let table: toml::Table = toml::from_str(text).unwrap();
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_string())
    }

    /// The connection options sit beside the sink's own, and mistakes read as
    /// they did when the struct spelled every option itself.
    #[test]
    fn connection_options_beside_the_sinks_own() {
        let c = parse(
            "url = \"postgres://h/d\"\nsslmode = \"require\"\nbatch_size = 7\n\
             connection_backoff = \"1s\"",
        )
        .unwrap();
        assert_eq!(c.connection.sslmode, Some(SslMode::Require));
        assert_eq!(c.connection.connection_backoff, Duration::from_secs(1));
        assert_eq!(c.connection.connection_attempts, 3);
        assert_eq!(c.batch_size, 7);
        let every = "expected one of `url`, `user`, `password`, `database`, `dialect`, \
                     `sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `connection_attempts`, \
                     `connection_backoff`, `batch_size`, `copy_max_rows`, \
                     `max_statement_bytes`, `concurrency`, `create_database`, `auto_create`, \
                     `schema_evolution`, `max_retries`, `retry_backoff`, `retry_backoff_max`, \
                     `write_method`, `non_finite_floats`";
        for (text, error) in [
            ("url = 1", "invalid type: integer `1`, expected a string".to_string()),
            ("bogus = 1", format!("unknown field `bogus`, {every}")),
            ("aaa = 3\nurl = 4", format!("unknown field `aaa`, {every}")),
            // The first mistake in the table's order, as before.
            ("zzz = 3\nurl = 4", "invalid type: integer `4`, expected a string".into()),
            ("batch_size = \"x\"", "invalid type: string \"x\", expected usize".into()),
            ("batch_size = 3", "missing field `url`".into()),
            (
                "url = \"postgres://h/d\"\nconnection_attempts = \"x\"",
                "invalid type: string \"x\", expected u32".into(),
            ),
            (
                "url = \"postgres://h/d\"\nsslmode = \"maybe\"",
                "unknown variant `maybe`, expected one of `disable`, `require`, `verify-ca`, \
                 `verify-full`"
                    .into(),
            ),
            (
                "url = \"postgres://h/d\"\nretry_backoff = \"forever\"",
                "invalid duration \"forever\"; expected a form like \"500ms\", \"5s\", \"2m\" or \"1h\""
                    .into(),
            ),
        ] {
            assert_eq!(parse(text).unwrap_err(), error, "{text}");
        }
    }

    /// `options_table` checks each option alone: the sink's own all have defaults.
    #[test]
    fn the_sinks_own_options_all_have_defaults() {
        let empty = toml::Value::Table(toml::Table::new());
        assert!(KwdbSinkConfig::deserialize_own(empty).is_ok());
    }
}
