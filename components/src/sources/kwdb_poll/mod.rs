//! `kwdb-poll`: the tables of a KWDB database out as `RowBatch`es, incrementally
//! and exactly resumable — the connector's Source Connector.
//!
//! A discovery loop lists the database's tables every `discover_interval`; each
//! table that matches gets a poller that reads it in (timestamp, primary tags)
//! order with keyset pagination, one streamed statement per catch-up cut into
//! batches, and hands them on. A table's checkpoint advances only over batches
//! every sink acknowledged, contiguously; a batch that failed makes the poller
//! read again from the checkpoint. kill -9 at any moment repeats at most
//! what was in flight.

pub mod checkpoint;
mod query;
mod table;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use tokio::sync::{Mutex, Semaphore};
use tokio_postgres::Client;

use crate::ack::RejectPolicy;
use crate::api::{
    BuildContext, Component, ComponentConfig, ComponentContext, ComponentError, OutputDef,
    ShutdownSignal,
};
use crate::durations;
use crate::event::{EventKind, TableKind, Timestamp};
use crate::kwdb::options_table::{self, WithConnection};
use crate::kwdb::{catalog, ConnectParams, ConnectionOptions, KwdbError};

pub use checkpoint::{Checkpoint, CheckpointStore};
pub use query::parse_start_at;

fn default_discover_interval() -> Duration {
    Duration::from_millis(5000)
}
fn default_query_interval() -> Duration {
    Duration::from_millis(1000)
}
fn default_fetch_max_rows() -> usize {
    100
}
fn default_concurrency() -> usize {
    1
}
fn default_progress_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_max_in_flight() -> usize {
    4
}

/// A relational table to export: it has no timestamp-first layout or primary
/// tags, so the user names the column that orders it and the columns that make a
/// row unique among rows with the same value there.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelationalTable {
    pub table: String,
    /// A timestamp or an ever-increasing column (an id).
    pub timestamp_column: String,
    #[serde(default)]
    pub key_columns: Vec<String>,
}

/// The `kwdb-poll` source's options: the connection options (`url`, `user`,
/// `sslmode`...) and its own, side by side in one table. `database`, which the
/// sink may take from the url, is required here: the database to export (the
/// connector's `connection.database`).
#[derive(Debug, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct KwdbPollConfig {
    /// Read beside the others by [`options_table`] (see [`WithConnection`]).
    #[serde(skip, default = "ConnectionOptions::unread")]
    pub connection: ConnectionOptions,

    /// Time-series tables to export, as names or patterns with `*` (any run of
    /// characters) and `?` (one character). Empty: every time-series table of the
    /// database (kwdb: `SHOW TABLES` says `TIME SERIES TABLE`; postgres: the first
    /// column is a timestamp). Matching is decided anew at every discovery, so a
    /// table created later that matches is exported too.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Patterns of tables to leave out (they win over `tables`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Relational tables to export as well, each named with the column that
    /// orders it; relational tables are never exported unless listed here.
    #[serde(default)]
    pub relational: Vec<RelationalTable>,
    /// Discovery (`poll.interval.ms`): how often the database's tables are listed.
    /// A matching table that appeared is exported from then on, within one
    /// interval, from its first row (or `start_at`); a table that disappeared is
    /// let go without an error (its pages in flight are still settled and its
    /// checkpoint kept, so a table dropped and created again under the same name
    /// resumes after the old position: delete its checkpoint,
    /// `<data_dir>/<source id>/<database>.<table>.ckpt` (names escaped: bytes
    /// outside `[A-Za-z0-9_-]` as `%XX`), to read it from the start). Each table's schema is read again at the same
    /// interval, so columns and tags added later are exported too. Default 5s.
    #[serde(
        default = "default_discover_interval",
        deserialize_with = "durations::deserialize"
    )]
    pub discover_interval: Duration,
    /// Pause between queries of a table that is caught up (`query.interval.ms`).
    #[serde(
        default = "default_query_interval",
        deserialize_with = "durations::deserialize"
    )]
    pub query_interval: Duration,
    /// Rows per `RowBatch` (`fetch.max.rows`), and so per message an `encode`
    /// makes of it (keep a batch's encoded size under the broker's
    /// `message.max.bytes`, 1 MB by default: about 2,000 rows of the seed's
    /// `cpu_kaiwudb_tb` as `json_kaiwudb`). Default 100, as the connector. A
    /// backlog is read by one statement of up to 100 batches (at least 100,000
    /// rows), streamed and cut into batches as it arrives; raising it for a
    /// backfill still helps (1000 exports ~1.4x faster than 100 here), since each
    /// batch costs a message, an acknowledgement and a checkpoint save.
    #[serde(default = "default_fetch_max_rows")]
    pub fetch_max_rows: usize,
    /// Export only rows whose timestamp is at or after this time
    /// (`timestamp.initial`): `yyyy-MM-dd HH:mm:ss`, optionally with fractional
    /// seconds and a `+08:00`-style offset; without an offset it is UTC. Applies to
    /// every table without a checkpoint, tables discovered later included; once a
    /// table has a checkpoint the checkpoint wins. Unset: every row. For relational
    /// tables ordered by a non-timestamp column it does not apply.
    #[serde(default)]
    pub start_at: Option<String>,
    /// Read only rows whose timestamp is at most now minus `delay` (now by the
    /// agent's clock). The read position only moves forward, so a row that
    /// becomes visible with a timestamp before rows already exported would be
    /// passed by; `delay` should exceed how late rows arrive (writers' clock skew,
    /// batching and transaction time). The price: the export trails real time by
    /// `delay`. Default 0: read up to the newest row. Not applied to relational
    /// tables ordered by a non-timestamp column.
    #[serde(default, deserialize_with = "durations::deserialize_opt")]
    pub delay: Option<Duration>,
    /// Tables queried at the same time (`tasks.max`), one connection each. A
    /// table with a backlog keeps its turn for one statement (up to 100 batches,
    /// at least 100,000 rows, at most about a minute), then the others get theirs.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Pages of a table handed on whose checkpoint is not yet on disk (not yet
    /// acknowledged by every sink, or acknowledged and being written). After a
    /// kill -9 at most `max_in_flight * fetch_max_rows` rows of a table are
    /// exported again. Default 4.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How often each table logs an `export progress` line (rows exported and in
    /// flight, rows/s since the last line, lag = now minus the last timestamp
    /// read). The same figures are the metrics `kwdb_poll_rows_total` and
    /// `kwdb_poll_lag_seconds` (label `table`). Default 10s.
    #[serde(
        default = "default_progress_interval",
        deserialize_with = "durations::deserialize"
    )]
    pub progress_interval: Duration,
    /// A row that a component downstream rejected and no `dropped` output took
    /// (an `encode` that cannot carry it, a sink that refuses it): `skip`
    /// (default) logs, counts and checkpoints past it; `stop` holds the table's
    /// checkpoint before it and reads it again after a backoff, so the table
    /// exports nothing further until it goes through (see `ack::RejectPolicy`).
    #[serde(default)]
    pub on_reject: RejectPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Kwdb(#[from] KwdbError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
}

impl WithConnection for KwdbPollConfig {
    fn deserialize_own<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        KwdbPollConfig::deserialize(d)
    }

    fn set_connection(&mut self, connection: ConnectionOptions) {
        self.connection = connection;
    }
}

impl<'de> Deserialize<'de> for KwdbPollConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let config: KwdbPollConfig = options_table::deserialize(d)?;
        if config.connection.database.is_none() {
            return Err(D::Error::missing_field("database"));
        }
        Ok(config)
    }
}

impl KwdbPollConfig {
    /// The database to export; always set (checked when read).
    fn database(&self) -> &str {
        self.connection.database.as_deref().unwrap_or_default()
    }

    fn check(&self) -> Result<(ConnectParams, Option<Timestamp>), PollError> {
        let params = self.connection.resolve()?;
        // Names that can never be a table are mistakes to report now, not to poll for.
        let names = self
            .tables
            .iter()
            .map(|t| ("tables", t))
            .chain(self.exclude.iter().map(|t| ("exclude", t)))
            .chain(
                self.relational
                    .iter()
                    .map(|r| ("relational.table", &r.table)),
            );
        for (option, name) in names {
            crate::kwdb::Ident::new(name, params.dialect)
                .map_err(|e| PollError::Config(format!("{option}: {e}")))?;
        }
        if self.fetch_max_rows == 0 {
            return Err(PollError::Config(
                "fetch_max_rows: must be at least 1".into(),
            ));
        }
        if self.concurrency == 0 {
            return Err(PollError::Config("concurrency: must be at least 1".into()));
        }
        if self.max_in_flight == 0 {
            return Err(PollError::Config(
                "max_in_flight: must be at least 1".into(),
            ));
        }
        let start_at = self
            .start_at
            .as_deref()
            .map(query::parse_start_at)
            .transpose()
            .map_err(PollError::Config)?;
        Ok((params, start_at))
    }
}

#[async_trait]
impl ComponentConfig for KwdbPollConfig {
    fn type_name(&self) -> &'static str {
        "kwdb-poll"
    }

    fn input_kinds(&self) -> Vec<EventKind> {
        Vec::new()
    }

    fn outputs(&self) -> Vec<OutputDef> {
        vec![OutputDef::default(EventKind::Rows)]
    }

    fn reject_policy(&self) -> Option<RejectPolicy> {
        Some(self.on_reject)
    }

    /// What the configuration alone tells (a `start_at` that is no time, a bad
    /// table name), so `validate --no-environment` reports it.
    fn check(&self) -> Result<(), ComponentError> {
        KwdbPollConfig::check(self)
            .map(|_| ())
            .map_err(ComponentError::other)
    }

    async fn healthcheck(&self, _cx: &BuildContext) -> Result<(), ComponentError> {
        let (mut params, _) = KwdbPollConfig::check(self).map_err(ComponentError::other)?;
        // One try: a check reports what it finds, the running source retries.
        params.attempts = 1;
        let client = params
            .connect_to(Some(self.database()))
            .await
            .map_err(ComponentError::other)?;
        catalog::list_tables(&client, params.dialect, self.database())
            .await
            .map_err(ComponentError::other)?;
        Ok(())
    }

    async fn build(&self, cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        let (params, start_at) = KwdbPollConfig::check(self).map_err(ComponentError::other)?;
        let store = CheckpointStore::open(cx.globals.data_dir.join(&*cx.id), self.database())
            .map_err(ComponentError::other)?
            .with_mirror(cx.globals.position_mirror.clone());
        Ok(Box::new(KwdbPoll {
            settings: Arc::new(Settings {
                params,
                database: self.database().to_string(),
                tables: self.tables.clone(),
                exclude: self.exclude.clone(),
                relational: self.relational.clone(),
                discover_interval: self.discover_interval,
                query_interval: self.query_interval,
                fetch_max_rows: self.fetch_max_rows,
                start_at,
                delay: self.delay,
                max_in_flight: self.max_in_flight,
                progress_interval: self.progress_interval,
                on_reject: self.on_reject,
                store,
            }),
            concurrency: self.concurrency,
        }))
    }
}

/// What every table poller of one source reads.
#[derive(Debug)]
pub(crate) struct Settings {
    pub params: ConnectParams,
    pub database: String,
    pub tables: Vec<String>,
    pub exclude: Vec<String>,
    pub relational: Vec<RelationalTable>,
    pub discover_interval: Duration,
    pub query_interval: Duration,
    pub fetch_max_rows: usize,
    pub start_at: Option<Timestamp>,
    pub delay: Option<Duration>,
    pub max_in_flight: usize,
    pub progress_interval: Duration,
    pub on_reject: RejectPolicy,
    pub store: CheckpointStore,
}

impl Settings {
    /// Whether a table is exported, and how: None to leave it alone.
    fn wants(&self, name: &str, kind: TableKind) -> Option<Option<RelationalTable>> {
        if self.exclude.iter().any(|p| glob(p, name)) {
            return None;
        }
        match kind {
            TableKind::TimeSeries => (self.tables.is_empty()
                || self.tables.iter().any(|p| glob(p, name)))
            .then_some(None),
            TableKind::Relational => self
                .relational
                .iter()
                .find(|r| r.table == name)
                .map(|r| Some(r.clone())),
        }
    }
}

/// `*` any run of characters, `?` one character.
fn glob(pattern: &str, name: &str) -> bool {
    fn m(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => m(&p[1..], n) || (!n.is_empty() && m(p, &n[1..])),
            (Some('?'), Some(_)) => m(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    m(&p, &n)
}

/// A connection shared by the pollers assigned to it, reopened after it breaks.
pub(crate) struct ClientSlot {
    params: ConnectParams,
    database: String,
    client: Mutex<Option<Arc<Client>>>,
}

impl ClientSlot {
    pub async fn get(&self) -> Result<Arc<Client>, KwdbError> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let client = self.params.connect_to(Some(&self.database)).await?;
        // Timestamps print in UTC whatever the server's default zone is.
        client
            .batch_execute("SET TIME ZONE 'UTC'")
            .await
            .map_err(|e| KwdbError::db("cannot set the session time zone", e))?;
        let client = Arc::new(client);
        *guard = Some(client.clone());
        Ok(client)
    }

    pub async fn reset(&self) {
        *self.client.lock().await = None;
    }
}

struct KwdbPoll {
    settings: Arc<Settings>,
    concurrency: usize,
}

struct Running {
    stop: ShutdownSignal,
    task: tokio::task::JoinHandle<Result<(), PollError>>,
}

#[async_trait]
impl Component for KwdbPoll {
    async fn run(self: Box<Self>, cx: ComponentContext) -> Result<(), ComponentError> {
        let s = self.settings;
        let metrics = cx.outputs.metrics().clone();
        let slots: Vec<Arc<ClientSlot>> = (0..self.concurrency + 1)
            .map(|_| {
                Arc::new(ClientSlot {
                    params: s.params.clone(),
                    database: s.database.clone(),
                    client: Mutex::new(None),
                })
            })
            .collect();
        // The last slot is discovery's own, so listing tables never waits on a
        // long page read.
        let discovery = slots[self.concurrency].clone();
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let outputs = Arc::new(Mutex::new(cx.outputs));
        let mut running: HashMap<String, Running> = HashMap::new();
        // Tables whose export failed: when, so they are tried again after a while.
        let mut skipped: HashMap<String, std::time::Instant> = HashMap::new();
        let mut next_slot = 0usize;
        let mut backoff =
            crate::api::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut first = true;
        loop {
            // Reap pollers that ended (table dropped, or a failure to report). A
            // table that cannot be exported (a name the database accepts but
            // kwpipe cannot use, a checkpoint of another table) is skipped and
            // reported, and the others go on: any user who can create a table
            // could otherwise stop the whole export.
            let finished: Vec<String> = running
                .iter()
                .filter(|(_, r)| r.task.is_finished())
                .map(|(n, _)| n.clone())
                .collect();
            for name in finished {
                let r = running.remove(&name).expect("listed");
                let error = match r.task.await {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                skip_table(&metrics, &mut skipped, &name, &error);
            }
            let listed = match discovery.get().await {
                Ok(client) => catalog::list_tables(&client, s.params.dialect, &s.database).await,
                Err(e) => Err(e),
            };
            let wait = match listed {
                Ok(tables) => {
                    backoff.reset();
                    metrics.report_ok();
                    let mut present = std::collections::HashSet::new();
                    for (name, kind) in tables {
                        let Some(relational) = s.wants(&name, kind) else {
                            continue;
                        };
                        present.insert(name.clone());
                        if running.contains_key(&name) {
                            continue;
                        }
                        if let Some(at) = skipped.get(&name) {
                            if at.elapsed() < SKIPPED_RETRY {
                                continue;
                            }
                            skipped.remove(&name);
                            metrics.clear_problem(&problem_key(&name));
                            tracing::info!(table = ?name, "trying the skipped table again");
                        } else if !first {
                            tracing::info!(table = ?name, "new table; exporting it");
                        }
                        let stop = cx.shutdown.child();
                        let poller = table::Poller {
                            settings: s.clone(),
                            table: name.clone(),
                            relational,
                            slot: slots[next_slot % self.concurrency].clone(),
                            permits: permits.clone(),
                            outputs: outputs.clone(),
                            metrics: metrics.clone(),
                            stop: stop.clone(),
                        };
                        next_slot += 1;
                        // In the component's span: its logs name the component
                        // (and are rate-limited as the component's).
                        let task = tokio::spawn(tracing::Instrument::in_current_span(poller.run()));
                        running.insert(name, Running { stop, task });
                    }
                    for (name, r) in &running {
                        if !present.contains(name) && !r.stop.is_triggered() {
                            tracing::info!(table = ?name, "table dropped; no longer exporting it");
                            r.stop.trigger();
                        }
                    }
                    skipped.retain(|name, _| {
                        let keep = present.contains(name);
                        if !keep {
                            metrics.clear_problem(&problem_key(name));
                        }
                        keep
                    });
                    first = false;
                    s.discover_interval
                }
                Err(e) if e.is_retryable() => {
                    metrics.report_error("connection", &e);
                    tracing::warn!(error = %e, "cannot list tables; retrying");
                    discovery.reset().await;
                    backoff.next_delay()
                }
                Err(e) => return Err(ComponentError::other(e)),
            };
            tokio::select! {
                _ = cx.shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // Pollers stop with the shutdown signal, wait for what they handed on to
        // be acknowledged and write their checkpoints.
        for (name, r) in running {
            let error = match r.task.await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            skip_table(&metrics, &mut skipped, &name, &error);
        }
        Ok(())
    }
}

/// How long a table whose export failed is left alone before it is tried again
/// (what failed may have been fixed: a checkpoint moved away, the table renamed).
const SKIPPED_RETRY: Duration = Duration::from_secs(300);

fn problem_key(table: &str) -> String {
    format!("table {table}")
}

/// Reports a table that cannot be exported (log, `component_errors_total` with
/// `error_type="table"`, `/components`), and leaves it alone for a while.
fn skip_table(
    metrics: &crate::api::ComponentMetrics,
    skipped: &mut HashMap<String, std::time::Instant>,
    table: &str,
    error: &str,
) {
    // Debug formatting escapes what a name may hold (a newline forging a log
    // line, ESC reaching a terminal).
    tracing::error!(table = ?table, error = %error, "cannot export the table; skipping it, the others go on");
    metrics.set_problem(
        "table",
        &problem_key(table),
        format!("table {table:?} skipped: {error}"),
    );
    skipped.insert(table.to_owned(), std::time::Instant::now());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names() {
        assert!(glob("cpu_*", "cpu_kaiwudb_tb"));
        assert!(glob("*", "anything"));
        assert!(glob("t?", "t1"));
        assert!(!glob("t?", "t12"));
        assert!(!glob("cpu", "cpu2"));
    }

    fn parse(text: &str) -> Result<KwdbPollConfig, String> {
        let table: toml::Table = toml::from_str(text).unwrap();
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_string())
    }

    /// The connection options sit beside the source's own; `database` is
    /// required here, and mistakes read as they did before they were shared.
    #[test]
    fn connection_options_beside_the_sources_own() {
        let c = parse("url = \"postgres://h/x\"\ndatabase = \"d\"\nfetch_max_rows = 5").unwrap();
        assert_eq!(c.database(), "d");
        assert_eq!(c.fetch_max_rows, 5);
        let every = "expected one of `url`, `user`, `password`, `database`, `dialect`, \
                     `sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `connection_attempts`, \
                     `connection_backoff`, `tables`, `exclude`, `relational`, \
                     `discover_interval`, `query_interval`, `fetch_max_rows`, `start_at`, \
                     `delay`, `concurrency`, `max_in_flight`, `progress_interval`, `on_reject`";
        let url = "url = \"postgres://h/d\"";
        for (text, error) in [
            (url.to_string(), "missing field `database`".to_string()),
            ("database = \"d\"".into(), "missing field `url`".into()),
            (
                format!("{url}\ndatabase = \"d\"\nbogus = 1"),
                format!("unknown field `bogus`, {every}"),
            ),
            (
                format!("{url}\ndatabase = 5"),
                "invalid type: integer `5`, expected a string".into(),
            ),
            (
                format!("{url}\ndatabase = \"d\"\nrelational = [{{table = \"x\"}}]"),
                "missing field `timestamp_column`".into(),
            ),
            (
                format!("{url}\ndatabase = \"d\"\nfetch_max_rows = -1"),
                "invalid value: integer `-1`, expected usize".into(),
            ),
        ] {
            assert_eq!(parse(&text).unwrap_err(), error, "{text}");
        }
    }

    /// `options_table` checks each option alone: the source's own all have defaults.
    #[test]
    fn the_sources_own_options_all_have_defaults() {
        let empty = toml::Value::Table(toml::Table::new());
        assert!(KwdbPollConfig::deserialize_own(empty).is_ok());
    }
}
