//! One table's poller: statements in keyset order, streamed and cut into
//! batches, handed on, checkpointed once acknowledged.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Semaphore};
use tokio_postgres::SimpleQueryMessage;

use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use tokio::task::JoinHandle;

use super::checkpoint::{Checkpoint, CheckpointError, CheckpointStore, KeyValue};
use super::query::{parse_row, BinaryRows, Position, TableQuery};
use super::{ClientSlot, PollError, RelationalTable, Settings};
use crate::ack::{BatchNotifier, BatchStatusReceiver, EventStatus};
use crate::api::{Backoff, ComponentMetrics, Outputs, ShutdownSignal};
use crate::event::{
    Event, Metadata, Row, RowBatch, TableKind, TableSchema, Target, Timestamp, Value,
};
use crate::kwdb::{catalog, Dialect, ErrorClass, KwdbError};

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

/// A batch handed on and not yet acknowledged.
struct InFlight {
    after: Position,
    rows: u64,
    status: BatchStatusReceiver,
}

/// What one statement's read ended with.
enum Outcome {
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
    /// After the last acknowledged row.
    committed: Option<Position>,
    /// After the last row handed on.
    position: Option<Position>,
    in_flight: VecDeque<InFlight>,
    exported: u64,
    saver: Saver,
    last_ts: Option<Timestamp>,
    last_progress: Instant,
    rows_at_last_progress: u64,
}

struct Meters {
    rows: metrics::Counter,
    queries: metrics::Counter,
    lag: metrics::Gauge,
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
        let meters = Meters {
            rows: metrics::counter!("kwdb_poll_rows_total", &labels),
            queries: metrics::counter!("kwdb_poll_queries_total", &labels),
            lag: metrics::gauge!("kwdb_poll_lag_seconds", &labels),
        };

        let checkpoint = s.store.load(&self.table)?;
        let exported = checkpoint.as_ref().map_or(0, |c| c.rows);
        let mut t = Track {
            committed: None,
            position: None,
            in_flight: VecDeque::new(),
            exported,
            saver: Saver::new(s.store.clone(), self.table.clone()),
            last_ts: None,
            last_progress: Instant::now(),
            rows_at_last_progress: exported,
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
                t.position = t.committed.clone();
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
                            t.committed = t.position.clone();
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
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Timestamp::new(
                    (now.saturating_sub(d)).as_millis() as i64,
                    crate::event::Precision::Ms,
                )
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
                    t.position = t.committed.clone();
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
                        _ = wait_front_status(&mut t.in_flight) => {
                            if self.settle(&mut t)? {
                                t.position = t.committed.clone();
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
        while let Some(front) = t.in_flight.pop_front() {
            if s.on_reject.passes(front.status.await) {
                t.exported += front.rows;
                t.committed = Some(front.after);
            } else {
                break;
            }
        }
        self.save(t.committed.as_ref(), t.exported)?;
        tracing::debug!(table = %self.table, rows = t.exported, "poller stopped");
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
            if t.in_flight.len() + t.saver.pages() < s.max_in_flight {
                break;
            }
            tokio::select! {
                _ = wait_front_status(&mut t.in_flight) => {}
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
            t.last_ts = Some(*ts);
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
        t.in_flight.push_back(InFlight {
            after,
            rows: n,
            status,
        });
        self.report(t, meters);
        Ok(None)
    }

    /// The lag gauge, and the progress line when one is due.
    fn report(&self, t: &mut Track, meters: &Meters) {
        if let Some(ts) = t.last_ts {
            meters
                .lag
                .set((chrono_now_ms() - ts.as_millis()).max(0) as f64 / 1000.0);
        }
        if t.last_progress.elapsed() >= self.settings.progress_interval {
            let sent = t.exported + t.in_flight.iter().map(|f| f.rows).sum::<u64>();
            let rate =
                (sent - t.rows_at_last_progress) as f64 / t.last_progress.elapsed().as_secs_f64();
            tracing::info!(
                table = %self.table,
                rows_exported = t.exported,
                rows_in_flight = sent - t.exported,
                rows_per_sec = rate as u64,
                lag_secs = t.last_ts.map(|ts| (chrono_now_ms() - ts.as_millis()).max(0) / 1000),
                "export progress"
            );
            t.last_progress = Instant::now();
            t.rows_at_last_progress = sent;
        }
    }

    /// Takes the statuses that came back, oldest first: acknowledged batches move
    /// the checkpoint; a failed one clears what is in flight and returns true, so
    /// the caller reads again from the checkpoint.
    fn settle(&self, t: &mut Track) -> Result<bool, PollError> {
        let mut moved = 0;
        let save = |moved: usize, committed: &Option<Position>, rows: u64, saver: &mut Saver| {
            if let (true, Some(p)) = (moved > 0, committed) {
                saver.acknowledged(moved, self.checkpoint(p, rows));
            }
        };
        while let Some(front) = t.in_flight.front_mut() {
            let Some(status) = front.status.try_recv() else {
                break;
            };
            let done = t.in_flight.pop_front().expect("front exists");
            if self.settings.on_reject.passes(status) {
                t.exported += done.rows;
                t.committed = Some(done.after);
                moved += 1;
            } else {
                if status == EventStatus::Rejected {
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
                } else {
                    tracing::warn!(table = %self.table, "a batch was not delivered; reading again from the checkpoint");
                }
                // Later batches may have been written already; KWDB deduplicates
                // the replayed rows, PostgreSQL's primary key does the same.
                t.in_flight.clear();
                save(moved, &t.committed, t.exported, &mut t.saver);
                return Ok(true);
            }
        }
        save(moved, &t.committed, t.exported, &mut t.saver);
        Ok(false)
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

/// Writes a table's checkpoints on a blocking thread, one at a time, so the next
/// pages are read while the disk syncs (a durable write takes milliseconds to tens
/// of milliseconds). While one write runs, newer acknowledgements coalesce into
/// the next. The caller counts `pages()` against `max_in_flight`: a page is only
/// out of the window once a checkpoint covering it is on disk.
struct Saver {
    store: CheckpointStore,
    table: String,
    running: Option<JoinHandle<Result<(), CheckpointError>>>,
    /// Pages the running write covers.
    saving_pages: usize,
    /// Pages acknowledged since the running write started, and their checkpoint.
    unsaved_pages: usize,
    next: Option<Checkpoint>,
}

impl Saver {
    fn new(store: CheckpointStore, table: String) -> Self {
        Saver {
            store,
            table,
            running: None,
            saving_pages: 0,
            unsaved_pages: 0,
            next: None,
        }
    }

    /// Pages acknowledged whose checkpoint is not yet durable.
    fn pages(&self) -> usize {
        self.saving_pages + self.unsaved_pages
    }

    /// `pages` more were acknowledged; `cp` is the checkpoint after them.
    fn acknowledged(&mut self, pages: usize, cp: Checkpoint) {
        self.unsaved_pages += pages;
        self.next = Some(cp);
        self.start();
    }

    fn start(&mut self) {
        if self.running.is_some() {
            return;
        }
        let Some(cp) = self.next.take() else {
            return;
        };
        let (store, table) = (self.store.clone(), self.table.clone());
        self.running = Some(tokio::task::spawn_blocking(move || store.save(&table, &cp)));
        self.saving_pages = std::mem::take(&mut self.unsaved_pages);
    }

    fn ended(
        &mut self,
        r: Result<Result<(), CheckpointError>, tokio::task::JoinError>,
    ) -> Result<(), PollError> {
        self.running = None;
        self.saving_pages = 0;
        match r {
            Ok(r) => r?,
            Err(e) => return Err(PollError::Config(format!("checkpoint writer failed: {e}"))),
        }
        self.start();
        Ok(())
    }

    /// Takes the result of a write that ended, without waiting.
    fn poll(&mut self) -> Result<(), PollError> {
        match self.running.as_mut().and_then(|h| h.now_or_never()) {
            Some(r) => self.ended(r),
            None => Ok(()),
        }
    }

    /// Resolves when the running write ends (never when none runs). Cancel-safe:
    /// the write stays where it is if this is dropped.
    async fn done(&mut self) -> Result<(), PollError> {
        let Some(h) = self.running.as_mut() else {
            return std::future::pending().await;
        };
        let r = h.await;
        self.ended(r)
    }

    /// Waits until every write started or queued has ended.
    async fn finish(&mut self) -> Result<(), PollError> {
        while let Some(h) = self.running.take() {
            let r = h.await;
            self.ended(r)?;
        }
        Ok(())
    }
}

type RowStream<'a> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<Row, KwdbError>> + Send + 'a>>;

/// The rows of a statement as they stream in: in binary from PostgreSQL, as text
/// from KWDB (`query`'s module doc says why). Either way the server is read only
/// as fast as the stream is polled.
async fn read_rows<'a>(
    client: &'a tokio_postgres::Client,
    sql: &str,
    schema: &Arc<TableSchema>,
    dialect: Dialect,
    table: &str,
) -> Result<RowStream<'a>, KwdbError> {
    let context = format!("cannot read table {table}");
    let db = move |e| KwdbError::db(context.clone(), e);
    let (schema, width) = (schema.clone(), schema.width());
    Ok(match dialect {
        Dialect::Postgres => {
            let rows = client
                .query_raw(sql, std::iter::empty::<i32>())
                .await
                .map_err(&db)?;
            let mut reader = BinaryRows::new(schema);
            Box::pin(rows.map(move |r| match r {
                Ok(r) => reader.read(&r).map_err(KwdbError::Schema),
                Err(e) => Err(db(e)),
            }))
        }
        Dialect::Kwdb => {
            let messages = client.simple_query_raw(sql).await.map_err(&db)?;
            Box::pin(messages.filter_map(move |m| {
                std::future::ready(match m {
                    Ok(SimpleQueryMessage::Row(r)) => {
                        Some(parse_row(&r, &schema, width).map_err(KwdbError::Schema))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(db(e))),
                })
            }))
        }
    })
}

/// A failed read: the table being gone is not an error.
fn failed(e: KwdbError) -> Outcome {
    if e.sqlstate() == Some("42P01") {
        Outcome::Gone
    } else {
        Outcome::Failed(e)
    }
}

/// Cuts a statement's rows into batches of `size` rows. A table without keys
/// resumes after a timestamp alone, so its batches end only where the timestamp
/// changes: the trailing rows that share the last timestamp are held back for
/// the next batch (a single timestamp with more rows than a batch makes one
/// larger batch).
struct Cutter {
    size: usize,
    ts: usize,
    keyless: bool,
    cur: Vec<Row>,
    /// Without keys: `cur` is all one timestamp and at least `size` rows.
    one_run: bool,
}

/// What a statement stopped at its row cap leaves to hand on.
#[derive(Debug, PartialEq)]
enum Capped {
    Rows(Vec<Row>),
    /// Every row held back shares this timestamp, and there may be more of it.
    OneRun(Value),
}

impl Cutter {
    fn new(size: usize, q: &TableQuery) -> Self {
        Cutter {
            size,
            ts: q.ts,
            keyless: q.keys.is_empty(),
            cur: Vec::with_capacity(size),
            one_run: false,
        }
    }

    fn take(&mut self) -> Vec<Row> {
        std::mem::replace(&mut self.cur, Vec::with_capacity(self.size))
    }

    /// The next row; a batch when one is complete.
    fn push(&mut self, row: Row) -> Option<Vec<Row>> {
        if !self.keyless {
            self.cur.push(row);
            return (self.cur.len() >= self.size).then(|| self.take());
        }
        if self.one_run {
            if self.cur.last().is_some_and(|l| l[self.ts] != row[self.ts]) {
                self.one_run = false;
                let out = self.take();
                self.cur.push(row);
                return Some(out);
            }
            self.cur.push(row);
            return None;
        }
        if self.cur.len() < self.size {
            self.cur.push(row);
            return None;
        }
        // Full: the next row tells whether the batch may end here (a table whose
        // timestamps are unique gets batches of exactly `size`).
        if self.cur.last().is_some_and(|l| l[self.ts] != row[self.ts]) {
            let out = self.take();
            self.cur.push(row);
            return Some(out);
        }
        match self.run_start() {
            0 => {
                self.one_run = true;
                self.cur.push(row);
                None
            }
            k => {
                let mut tail = self.cur.split_off(k);
                tail.reserve(self.size.saturating_sub(tail.len()));
                tail.push(row);
                Some(std::mem::replace(&mut self.cur, tail))
            }
        }
    }

    /// Where the trailing run of rows sharing the last timestamp starts.
    fn run_start(&self) -> usize {
        let Some(last) = self.cur.last() else {
            return 0;
        };
        let ts = &last[self.ts];
        self.cur
            .iter()
            .rposition(|r| r[self.ts] != *ts)
            .map_or(0, |i| i + 1)
    }

    /// The statement returned every row it could: all that is held goes out.
    fn finish(&mut self) -> Option<Vec<Row>> {
        (!self.cur.is_empty()).then(|| self.take())
    }

    /// The statement stopped at its row cap.
    fn finish_capped(&mut self) -> Capped {
        if !self.keyless {
            return Capped::Rows(self.take());
        }
        match self.run_start() {
            0 => match self.cur.last() {
                Some(last) => Capped::OneRun(last[self.ts].clone()),
                None => Capped::Rows(Vec::new()),
            },
            k => {
                self.cur.truncate(k);
                Capped::Rows(self.take())
            }
        }
    }
}

/// Resolves when the oldest page in flight has its status, leaving it readable
/// by `try_recv` for `settle`.
async fn wait_front_status(in_flight: &mut VecDeque<InFlight>) {
    let Some(front) = in_flight.front_mut() else {
        return std::future::pending().await;
    };
    let status = (&mut front.status).await;
    front.status = ready(status);
}

/// A receiver that already holds `status`.
fn ready(status: EventStatus) -> BatchStatusReceiver {
    let (finalizers, rx) = BatchNotifier::pair();
    finalizers.finish(status);
    rx
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DataType, Field, Precision};

    fn query(keys: &[&str]) -> TableQuery {
        let schema = TableSchema::new(
            TableKind::Relational,
            vec![
                Field::column("ts", DataType::Timestamp),
                Field::column("k", DataType::Int8),
            ],
            Vec::new(),
        );
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        TableQuery::new(Dialect::Postgres, "t", &schema, "ts", &keys).unwrap()
    }

    fn row(ts: i64, k: i64) -> Row {
        vec![
            Value::Timestamp(Timestamp::new(ts, Precision::Ms)),
            Value::Int8(k),
        ]
    }

    /// (ts, k) of each batch.
    fn cut(c: &mut Cutter, rows: &[(i64, i64)]) -> Vec<Vec<(i64, i64)>> {
        rows.iter()
            .filter_map(|&(t, k)| c.push(row(t, k)))
            .map(|b| b.iter().map(plain).collect())
            .collect()
    }

    fn plain(r: &Row) -> (i64, i64) {
        match (&r[0], &r[1]) {
            (Value::Timestamp(t), Value::Int8(k)) => (t.value, *k),
            _ => unreachable!(),
        }
    }

    #[test]
    fn keyed_rows_are_cut_into_full_batches() {
        let mut c = Cutter::new(2, &query(&["k"]));
        let rows = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)];
        assert_eq!(
            cut(&mut c, &rows),
            vec![vec![(1, 1), (1, 2)], vec![(1, 3), (2, 1)]]
        );
        assert_eq!(
            c.finish().unwrap().iter().map(plain).collect::<Vec<_>>(),
            vec![(2, 2)]
        );
        assert!(c.finish().is_none());
    }

    #[test]
    fn without_keys_a_batch_never_ends_inside_a_timestamp() {
        let mut c = Cutter::new(3, &query(&[]));
        // 1 1 2 2: the batch ends before the 2s, which go on together.
        let rows = [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (4, 0)];
        assert_eq!(
            cut(&mut c, &rows),
            vec![vec![(1, 0), (1, 1)], vec![(2, 0), (2, 1), (3, 0)]]
        );
        let rest: Vec<_> = c.finish().unwrap().iter().map(plain).collect();
        assert_eq!(rest, vec![(4, 0)]);
        // A timestamp longer than a batch is one larger batch.
        let mut c = Cutter::new(2, &query(&[]));
        let rows = [(1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (3, 0)];
        assert_eq!(
            cut(&mut c, &rows),
            vec![vec![(1, 0), (1, 1), (1, 2), (1, 3)]]
        );
        let rest: Vec<_> = c.finish().unwrap().iter().map(plain).collect();
        assert_eq!(rest, vec![(2, 0), (3, 0)]);
        // Unique timestamps: full batches.
        let mut c = Cutter::new(2, &query(&[]));
        let rows = [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)];
        assert_eq!(
            cut(&mut c, &rows),
            vec![vec![(1, 0), (2, 0)], vec![(3, 0), (4, 0)]]
        );
    }

    #[test]
    fn at_the_cap_a_table_without_keys_keeps_back_its_last_timestamp() {
        let mut c = Cutter::new(10, &query(&[]));
        assert!(cut(&mut c, &[(1, 0), (2, 0), (2, 1)]).is_empty());
        let Capped::Rows(rows) = c.finish_capped() else {
            panic!("rows expected");
        };
        assert_eq!(rows.iter().map(plain).collect::<Vec<_>>(), vec![(1, 0)]);

        let mut c = Cutter::new(10, &query(&[]));
        assert!(cut(&mut c, &[(2, 0), (2, 1)]).is_empty());
        assert_eq!(
            c.finish_capped(),
            Capped::OneRun(Value::Timestamp(Timestamp::new(2, Precision::Ms)))
        );

        // With keys the position is exact: everything goes.
        let mut c = Cutter::new(10, &query(&["k"]));
        assert!(cut(&mut c, &[(2, 0), (2, 1)]).is_empty());
        assert!(matches!(c.finish_capped(), Capped::Rows(r) if r.len() == 2));
    }
}
