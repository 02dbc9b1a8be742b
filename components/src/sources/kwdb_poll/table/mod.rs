//! One table's poller: statements in keyset order, streamed and cut into
//! batches, handed on, checkpointed once acknowledged.

//!
//! Modules: `cutter` (rows into batches), `rows` (reading a statement off the
//! connection), `pages` (what is in flight and the committed position),
//! `saver` (durable checkpoint writes), `progress` (metrics and the progress
//! line); this one is the export loop that drives them.

mod cutter;
mod pages;
mod progress;
mod rows;
mod saver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use tokio::sync::{Mutex, Semaphore};

use super::checkpoint::{Checkpoint, KeyValue};
use super::query::{Position, TableQuery};
use super::{ClientSlot, PollError, RelationalTable, Settings};
use crate::ack::{BatchNotifier, EventStatus};
use crate::api::{Backoff, ComponentMetrics, Outputs, ShutdownSignal};
use crate::event::{
    Event, Metadata, Precision, Row, RowBatch, TableKind, TableSchema, Target, Timestamp, Value,
};
use crate::formats;
use crate::kwdb::{catalog, Dialect, ErrorClass, KwdbError};
use cutter::{Capped, Cutter};
use pages::{Page, Pages, Settled};
use progress::{Meters, Progress};
use rows::{failed, read_rows};
use saver::Saver;

pub(crate) struct Poller {
    pub settings: Arc<Settings>,
    pub table: String,
    pub relational: Option<RelationalTable>,
    pub slot: Arc<ClientSlot>,
    pub permits: Arc<Semaphore>,
    pub outputs: Arc<Mutex<Outputs>>,
    pub metrics: ComponentMetrics,
    pub stop: ShutdownSignal,
}

/// What one statement's read ended with.
pub(super) enum Outcome {
    /// It ended below its row cap: the table is read up to the statement's snapshot.
    CaughtUp,
    /// It stopped at its row or time cap: read on at once.
    More,
    /// A batch was not delivered: read again from the checkpoint.
    Rewound,
    Stopped,
    /// The table is gone (dropped, or renamed behind our back).
    Gone,
    Failed(KwdbError),
}

/// A table's read position and what is in flight.
struct Track {
    /// After the last row handed on.
    position: Option<Position>,
    /// Handed on and not yet acknowledged, and the committed position.
    pages: Pages,
    saver: Saver,
    progress: Progress,
}

/// Rows per statement: one statement reads a whole backlog of up to this many
/// rows, cut into batches as they arrive. The cap bounds how long a statement
/// holds its snapshot and its connection (tables sharing a connection wait for
/// it), and what the connection discards when a read is abandoned (a rewind or
/// shutdown drops the stream; tokio-postgres then reads the rest and throws it
/// away). 100 batches or 100,000 rows, whichever is more: statements then cost
/// nothing measurable next to the rows they return.
pub(crate) fn statement_rows(fetch_max_rows: usize) -> usize {
    fetch_max_rows.saturating_mul(100).max(100_000)
}

/// A statement is ended at the next batch boundary after this long (a sink slow
/// enough to hold it open that long gets a fresh snapshot and gives the other
/// tables on the connection a turn).
const STATEMENT_TIME: Duration = Duration::from_secs(60);

impl Poller {
    pub async fn run(self) -> Result<(), PollError> {
        let s = self.settings.clone();
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let labels = {
            let mut l = self.metrics.labels().to_vec();
            l.push(("table", self.table.clone()));
            l
        };
        let meters = Meters::new(&labels);

        let checkpoint = s.store.load(&self.table)?;
        let exported = checkpoint.as_ref().map_or(0, |c| c.rows);
        let mut t = Track {
            position: None,
            pages: Pages::new(s.on_reject, exported),
            saver: Saver::new(s.store.clone(), self.table.clone()),
            progress: Progress::new(exported),
        };
        let mut schema: Option<(Arc<TableSchema>, TableQuery)> = None;
        let mut loaded = checkpoint;
        let mut schema_read_at = Instant::now();
        let mut index_checked = false;

        loop {
            // Settle what came back, in order, and write the checkpoint behind.
            let rewound = self.settle(&mut t)?;
            t.saver.poll()?;
            if rewound {
                t.position = t.pages.committed.clone();
                self.sleep(backoff.next_delay()).await;
                continue;
            }
            if self.stop.is_triggered() {
                break;
            }

            // The schema: read once, and again every discovery interval so columns
            // added behind our back are exported too.
            if schema.is_none() || schema_read_at.elapsed() >= s.discover_interval {
                match self.read_schema().await {
                    Ok(Some(sq)) => {
                        if let Some(cp) = loaded.take() {
                            t.position = Some(self.position_from(&cp, &sq.1)?);
                            t.pages.committed = t.position.clone();
                        }
                        if !index_checked {
                            index_checked = true;
                            self.check_index(&sq.1).await;
                        }
                        schema = Some(sq);
                        schema_read_at = Instant::now();
                    }
                    Ok(None) => break,
                    Err(e) if e.is_retryable() => {
                        self.metrics.report_error("connection", &e);
                        self.slot.reset().await;
                        self.sleep(backoff.next_delay()).await;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let (table_schema, q) = schema.clone().expect("read above");

            let upper = s.delay.map(|d| {
                let now = formats::now(Precision::Ms).value;
                Timestamp::new((now - d.as_millis() as i64).max(0), Precision::Ms)
            });
            let outcome = {
                let _permit = self.permits.acquire().await.expect("never closed");
                self.read_statement(&mut t, &table_schema, &q, upper, &meters)
                    .await?
            };
            match outcome {
                Outcome::CaughtUp | Outcome::More => {
                    backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
                    self.metrics.report_ok();
                    // A table with nothing new still reports: its lag grows.
                    self.report(&mut t, &meters);
                }
                Outcome::Rewound => {
                    t.position = t.pages.committed.clone();
                    self.sleep(backoff.next_delay()).await;
                    continue;
                }
                Outcome::Stopped | Outcome::Gone => break,
                Outcome::Failed(e) => {
                    match e.class() {
                        ErrorClass::Retryable => {
                            self.metrics.report_error("connection", &e);
                            tracing::warn!(table = %self.table, error = %e, "cannot read; retrying");
                            self.slot.reset().await;
                        }
                        _ => {
                            // The table changed under us: read its schema again.
                            self.metrics.report_error("query", &e);
                            tracing::warn!(table = %self.table, error = %e, "query failed; reading the schema again");
                            schema = None;
                        }
                    }
                    // What was read is handed on; the next statement resumes after it.
                    self.sleep(backoff.next_delay()).await;
                    continue;
                }
            }
            if matches!(outcome, Outcome::CaughtUp) {
                // Wait for the next poll, settling acknowledgements as they come.
                let until = tokio::time::Instant::now() + s.query_interval;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        _ = self.stop.cancelled() => break,
                        r = t.saver.done() => r?,
                        _ = t.pages.wait_front() => {
                            if self.settle(&mut t)? {
                                t.position = t.pages.committed.clone();
                                break;
                            }
                            t.saver.poll()?;
                        }
                    }
                }
            }
        }

        // Stopping: what was handed on is still settled, so the checkpoint covers it.
        t.saver.finish().await?;
        while !t.pages.is_empty() {
            t.pages.wait_front().await;
            if t.pages.settle().held.is_some() {
                break;
            }
        }
        self.save(t.pages.committed.as_ref(), t.pages.exported)?;
        tracing::debug!(table = %self.table, rows = t.pages.exported, "poller stopped");
        Ok(())
    }

    /// One statement from the current position: its rows streamed, cut into
    /// batches of `fetch_max_rows` and handed on as they arrive.
    async fn read_statement(
        &self,
        t: &mut Track,
        schema: &Arc<TableSchema>,
        q: &TableQuery,
        upper: Option<Timestamp>,
        meters: &Meters,
    ) -> Result<Outcome, PollError> {
        let s = &self.settings;
        let cap = statement_rows(s.fetch_max_rows);
        let sql = match q.select(schema, t.position.as_ref(), s.start_at, upper, cap) {
            Ok(sql) => sql,
            Err(e) => return Ok(Outcome::Failed(KwdbError::Schema(e))),
        };
        let client = match self.slot.get().await {
            Ok(c) => c,
            Err(e) => return Ok(Outcome::Failed(e)),
        };
        let started = Instant::now();
        meters.queries.increment(1);
        let stream = match read_rows(&client, &sql, schema, q.dialect, &self.table).await {
            Ok(stream) => stream,
            Err(e) => return Ok(failed(e)),
        };
        // Dropping the stream (a rewind, shutdown) abandons the statement: the
        // connection reads the rest of it and discards it. While this task does not
        // poll the stream (the window of batches in flight is full), tokio-postgres
        // stops reading the socket once its one-message channel is full, so the
        // server blocks on TCP: back-pressure without buffering.
        futures::pin_mut!(stream);
        let stop = self.stop.cancelled();
        futures::pin_mut!(stop);
        let mut cut = Cutter::new(s.fetch_max_rows, q);
        let mut read = 0usize;
        let mut handed = false;
        loop {
            let message = tokio::select! {
                biased;
                m = stream.next() => m,
                _ = &mut stop => return Ok(Outcome::Stopped),
            };
            let row = match message {
                None => break,
                Some(Err(e)) => return Ok(failed(e)),
                Some(Ok(row)) => row,
            };
            read += 1;
            if let Some(batch) = cut.push(row) {
                if let Some(o) = self.hand_on(t, schema, q, batch, meters).await? {
                    return Ok(o);
                }
                handed = true;
                if started.elapsed() >= STATEMENT_TIME {
                    return Ok(Outcome::More);
                }
            }
        }
        if read < cap {
            if let Some(batch) = cut.finish() {
                if let Some(o) = self.hand_on(t, schema, q, batch, meters).await? {
                    return Ok(o);
                }
            }
            return Ok(Outcome::CaughtUp);
        }
        // At the cap, the last timestamp may have more rows than the statement
        // returned: a table without keys resumes before it.
        let batch = match cut.finish_capped() {
            Capped::Rows(rows) => rows,
            Capped::OneRun(_) if handed => return Ok(Outcome::More),
            Capped::OneRun(ts) => {
                // A single timestamp holds more rows than a statement: read it
                // whole, as one batch, since the position cannot point inside it.
                let sql = match q.select_at(schema, &ts) {
                    Ok(sql) => sql,
                    Err(e) => return Ok(Outcome::Failed(KwdbError::Schema(e))),
                };
                meters.queries.increment(1);
                match self.query(&client, &sql, schema).await {
                    Ok(rows) => rows,
                    Err(e) => return Ok(failed(e)),
                }
            }
        };
        if !batch.is_empty() {
            if let Some(o) = self.hand_on(t, schema, q, batch, meters).await? {
                return Ok(o);
            }
        }
        Ok(Outcome::More)
    }

    /// Waits for room in the window, then sends a batch and tracks it. Some when
    /// reading must stop (a batch failed, shutdown).
    async fn hand_on(
        &self,
        t: &mut Track,
        schema: &Arc<TableSchema>,
        q: &TableQuery,
        rows: Vec<Row>,
        meters: &Meters,
    ) -> Result<Option<Outcome>, PollError> {
        let s = &self.settings;
        loop {
            if self.settle(t)? {
                return Ok(Some(Outcome::Rewound));
            }
            t.saver.poll()?;
            if self.stop.is_triggered() {
                return Ok(Some(Outcome::Stopped));
            }
            // Batches acknowledged but not yet durably checkpointed still count: a
            // kill -9 repeats at most `max_in_flight` batches.
            if t.pages.len() + t.saver.pages() < s.max_in_flight {
                break;
            }
            tokio::select! {
                _ = t.pages.wait_front() => {}
                r = t.saver.done() => r?,
                _ = self.stop.cancelled() => {}
            }
        }
        let last = rows.last().expect("batches are never empty");
        let after = Position {
            ts: last[q.ts].clone(),
            keys: q.keys.iter().map(|k| last[*k].clone()).collect(),
        };
        if let Value::Timestamp(ts) = &after.ts {
            t.progress.handed_on(*ts);
        }
        let n = rows.len() as u64;
        let (finalizers, status) = BatchNotifier::pair();
        let meta = Metadata {
            database: Some(s.database.clone()),
            table: Some(self.table.clone()),
            ..Default::default()
        };
        let batch = RowBatch {
            target: Target {
                database: Some(s.database.clone()),
                table: self.table.clone(),
            },
            schema: schema.clone(),
            rows,
            meta: Arc::new(meta),
            finalizers,
        };
        let sent = {
            let mut out = self.outputs.lock().await;
            tokio::select! {
                r = out.send(Event::Rows(batch)) => Some(r),
                _ = self.stop.cancelled() => None,
            }
        };
        if !matches!(sent, Some(Ok(()))) {
            return Ok(Some(Outcome::Stopped));
        }
        meters.rows.increment(n);
        t.position = Some(after.clone());
        t.pages.push(Page { after, rows: n }, status);
        self.report(t, meters);
        Ok(None)
    }

    /// The lag gauge, and the progress line when one is due.
    fn report(&self, t: &mut Track, meters: &Meters) {
        t.progress.report(
            &self.table,
            self.settings.progress_interval,
            t.pages.exported,
            t.pages.rows_in_flight(),
            meters,
        );
    }

    /// Takes the statuses that came back, oldest first: acknowledged batches move
    /// the checkpoint; a failed one clears what is in flight and returns true, so
    /// the caller reads again from the checkpoint.
    fn settle(&self, t: &mut Track) -> Result<bool, PollError> {
        let Settled { moved, held } = t.pages.settle();
        if let (true, Some(p)) = (moved > 0, &t.pages.committed) {
            t.saver
                .acknowledged(moved, self.checkpoint(p, t.pages.exported));
        }
        match held {
            None => return Ok(false),
            Some(EventStatus::Rejected) => {
                self.metrics.report_error(
                    "rejected",
                    format!(
                        "table {}: a row was rejected downstream and on_reject = \"stop\"",
                        self.table
                    ),
                );
                tracing::error!(
                    table = %self.table,
                    "a row was rejected downstream and on_reject = \"stop\" (Connect: \
                     errors.tolerance = none): the checkpoint stays before it and the table \
                     is read again from there; fix the cause logged above, wire the \
                     rejecting component's `dropped` output, or set on_reject = \"skip\""
                );
            }
            Some(_) => {
                tracing::warn!(table = %self.table, "a batch was not delivered; reading again from the checkpoint");
            }
        }
        Ok(true)
    }

    fn save(&self, committed: Option<&Position>, rows: u64) -> Result<(), PollError> {
        let Some(p) = committed else {
            return Ok(());
        };
        Ok(self
            .settings
            .store
            .save(&self.table, &self.checkpoint(p, rows))?)
    }

    fn checkpoint(&self, p: &Position, rows: u64) -> Checkpoint {
        let Value::Timestamp(ts) = &p.ts else {
            // Incrementing (non-timestamp) columns are kept as key values.
            return Checkpoint {
                ts: 0,
                precision: "ms".into(),
                keys: std::iter::once(&p.ts)
                    .chain(p.keys.iter())
                    .map(KeyValue::from_value)
                    .collect(),
                rows,
            };
        };
        Checkpoint {
            ts: ts.value,
            precision: ts.precision.as_str().into(),
            keys: p.keys.iter().map(KeyValue::from_value).collect(),
            rows,
        }
    }

    fn position_from(&self, cp: &Checkpoint, q: &TableQuery) -> Result<Position, PollError> {
        let keys: Option<Vec<Value>> = cp.keys.iter().map(KeyValue::to_value).collect();
        let bad = || {
            PollError::Config(format!(
                "checkpoint of table {} does not fit the table (its keys changed?); move it away to export the table from the start",
                self.table
            ))
        };
        let mut keys = keys.ok_or_else(bad)?;
        let ts = match cp.timestamp() {
            Some(t) if keys.len() == q.keys.len() => Value::Timestamp(t),
            _ if keys.len() == q.keys.len() + 1 => keys.remove(0),
            _ => return Err(bad()),
        };
        Ok(Position { ts, keys })
    }

    async fn read_schema(&self) -> Result<Option<(Arc<TableSchema>, TableQuery)>, KwdbError> {
        let client = self.slot.get().await?;
        let dialect = self.settings.params.dialect;
        let Some(info) = catalog::read_table(&client, dialect, &self.table).await? else {
            return Ok(None);
        };
        let schema = info.schema;
        let (ts, keys) = match &self.relational {
            Some(r) => (r.timestamp_column.clone(), r.key_columns.clone()),
            None => {
                if schema.kind != TableKind::TimeSeries || schema.columns.is_empty() {
                    return Err(KwdbError::Schema(format!(
                        "table {} is not a time-series table",
                        self.table
                    )));
                }
                (
                    schema.columns[0].name.clone(),
                    schema.primary_tags().map(|t| t.name.clone()).collect(),
                )
            }
        };
        let q = TableQuery::new(dialect, &self.table, &schema, &ts, &keys)?;
        Ok(Some((Arc::new(schema), q)))
    }

    /// postgres: warns when no index leads with the read order (timestamp, keys),
    /// since then every page sorts the rest of the table (tables kwpipe creates
    /// have one; see `Sql::pg_poll_index`). KWDB has no indexes to check.
    async fn check_index(&self, q: &TableQuery) {
        if self.settings.params.dialect != Dialect::Postgres {
            return;
        }
        let want: Vec<String> = std::iter::once(q.ts)
            .chain(q.keys.iter().copied())
            .map(|i| q.fields[i].as_str().to_string())
            .collect();
        let indexes = match self.slot.get().await {
            Ok(client) => catalog::pg_index_columns(&client, &self.table).await,
            Err(e) => Err(e),
        };
        match indexes {
            Ok(indexes) if indexes.iter().any(|cols| cols.starts_with(&want)) => {}
            Ok(_) => {
                let cols: Vec<String> = std::iter::once(q.ts)
                    .chain(q.keys.iter().copied())
                    .map(|i| q.fields[i].to_string())
                    .collect();
                tracing::warn!(
                    table = %self.table,
                    "no index on ({}): every page sorts the rest of the table; \
                     CREATE INDEX ON {} ({}) makes each page an index range scan",
                    want.join(", "),
                    q.table,
                    cols.join(", ")
                );
            }
            Err(e) => tracing::debug!(table = %self.table, error = %e, "cannot read indexes"),
        }
    }

    /// A whole (small) result, for the rows at one timestamp.
    async fn query(
        &self,
        client: &tokio_postgres::Client,
        sql: &str,
        schema: &Arc<TableSchema>,
    ) -> Result<Vec<Row>, KwdbError> {
        read_rows(
            client,
            sql,
            schema,
            self.settings.params.dialect,
            &self.table,
        )
        .await?
        .try_collect()
        .await
    }

    async fn sleep(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.stop.cancelled() => {}
        }
    }
}
