//! One table's poller: statements in keyset order, streamed and cut into
//! batches, handed on, checkpointed once acknowledged.

//!
//! Modules: `cutter` (rows into batches), `rows` (reading a statement off the
//! connection), `pages` (what is in flight and the committed position),
//! `saver` (durable checkpoint writes), `progress` (metrics and the progress
//! line); this one is the export loop that drives them.

mod cutter;
mod pages;
mod position;
mod progress;
mod rows;
mod saver;
mod schema;
#[cfg(test)]
mod test_query;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use tokio::sync::{Mutex, Semaphore};

use super::checkpoint::Checkpoint;
use super::query::{Position, TableQuery};
use super::{ClientSlot, PollError, RelationalTable, Settings};
use crate::ack::{BatchNotifier, EventStatus};
use crate::api::{Backoff, ComponentMetrics, Outputs, ShutdownSignal};
use crate::event::{
    Event, Metadata, Precision, Row, RowBatch, TableSchema, Target, Timestamp, Value,
};
use crate::formats;
use crate::kwdb::{ErrorClass, KwdbError};
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

/// The delays between retries of a table's reads; reset by a read that works.
fn read_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
}

/// The table's schema as last read, and the read query made from it.
struct KnownSchema {
    current: Option<(Arc<TableSchema>, TableQuery)>,
    read_at: Instant,
    index_checked: bool,
    /// The checkpoint loaded at start, applied once the schema is known.
    loaded: Option<Checkpoint>,
}

/// What reading the schema (when due) ended with.
enum SchemaStep {
    Ready(Arc<TableSchema>, TableQuery),
    /// The table does not exist (any more): the poller ends.
    Gone,
    /// The connection failed: try again after a backoff.
    Retry,
}

impl Poller {
    pub async fn run(self) -> Result<(), PollError> {
        let s = self.settings.clone();
        let mut backoff = read_backoff();
        let meters = self.meters();
        let loaded = s.store.load(&self.table)?;
        let exported = loaded.as_ref().map_or(0, |c| c.rows);
        let mut t = Track {
            position: None,
            pages: Pages::new(s.on_reject, exported),
            saver: Saver::new(s.store.clone(), self.table.clone()),
            progress: Progress::new(exported),
        };
        let mut schema = KnownSchema {
            current: None,
            read_at: Instant::now(),
            index_checked: false,
            loaded,
        };

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

            let (table_schema, q) = match self.refresh_schema(&mut schema, &mut t).await? {
                SchemaStep::Ready(table_schema, q) => (table_schema, q),
                SchemaStep::Gone => break,
                SchemaStep::Retry => {
                    self.sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            let upper = s.delay.map(|d| {
                let now = formats::time::now(Precision::Ms).value;
                Timestamp::new((now - d.as_millis() as i64).max(0), Precision::Ms)
            });
            let outcome = {
                let _permit = self.permits.acquire().await.expect("never closed");
                self.read_statement(&mut t, &table_schema, &q, upper, &meters)
                    .await?
            };
            match outcome {
                Outcome::CaughtUp | Outcome::More => {
                    backoff = read_backoff();
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
                    if self.read_failed(&e).await {
                        schema.current = None;
                    }
                    // What was read is handed on; the next statement resumes after it.
                    self.sleep(backoff.next_delay()).await;
                    continue;
                }
            }
            if matches!(outcome, Outcome::CaughtUp) {
                self.wait_for_next_poll(&mut t).await?;
            }
        }
        self.stopping(t).await
    }

    fn meters(&self) -> Meters {
        let mut labels = self.metrics.labels().to_vec();
        labels.push(("table", self.table.clone()));
        Meters::new(&labels)
    }

    /// The schema: read once, and again every discovery interval so columns
    /// added behind our back are exported too. The first read also places the
    /// loaded checkpoint and checks the index.
    async fn refresh_schema(
        &self,
        schema: &mut KnownSchema,
        t: &mut Track,
    ) -> Result<SchemaStep, PollError> {
        if schema.current.is_none() || schema.read_at.elapsed() >= self.settings.discover_interval {
            match self.read_schema().await {
                Ok(Some(sq)) => {
                    if let Some(cp) = schema.loaded.take() {
                        t.position = Some(position::from_checkpoint(&cp, &sq.1, &self.table)?);
                        t.pages.committed = t.position.clone();
                    }
                    if !schema.index_checked {
                        schema.index_checked = true;
                        self.check_index(&sq.1).await;
                    }
                    schema.current = Some(sq);
                    schema.read_at = Instant::now();
                }
                Ok(None) => return Ok(SchemaStep::Gone),
                Err(e) if e.is_retryable() => {
                    self.metrics.report_error("connection", &e);
                    self.slot.reset().await;
                    return Ok(SchemaStep::Retry);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (table_schema, q) = schema.current.clone().expect("read above");
        Ok(SchemaStep::Ready(table_schema, q))
    }

    /// Reports a failed read; true when the schema must be read again (the
    /// table changed under us), false for a connection to retry.
    async fn read_failed(&self, e: &KwdbError) -> bool {
        match e.class() {
            ErrorClass::Retryable => {
                self.metrics.report_error("connection", e);
                tracing::warn!(table = %self.table, error = %e, "cannot read; retrying");
                self.slot.reset().await;
                false
            }
            _ => {
                self.metrics.report_error("query", e);
                tracing::warn!(table = %self.table, error = %e, "query failed; reading the schema again");
                true
            }
        }
    }

    /// Caught up: waits for the next poll, settling acknowledgements as they
    /// come (a failed page ends the wait, to read again at once).
    async fn wait_for_next_poll(&self, t: &mut Track) -> Result<(), PollError> {
        let until = tokio::time::Instant::now() + self.settings.query_interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = self.stop.cancelled() => break,
                r = t.saver.done() => r?,
                _ = t.pages.wait_front() => {
                    if self.settle(t)? {
                        t.position = t.pages.committed.clone();
                        break;
                    }
                    t.saver.poll()?;
                }
            }
        }
        Ok(())
    }

    /// Stopping: what was handed on is still settled, so the checkpoint covers it.
    async fn stopping(&self, mut t: Track) -> Result<(), PollError> {
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
                .acknowledged(moved, position::to_checkpoint(p, t.pages.exported));
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
            .save(&self.table, &position::to_checkpoint(p, rows))?)
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
