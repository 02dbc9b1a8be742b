//! One table's poller: pages in keyset order, handed on, checkpointed once
//! acknowledged.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Semaphore};
use tokio_postgres::SimpleQueryMessage;

use futures::{FutureExt as _, StreamExt as _};
use tokio::task::JoinHandle;

use super::checkpoint::{Checkpoint, CheckpointError, CheckpointStore, KeyValue};
use super::query::{parse_text, Position, TableQuery};
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

/// A page handed on and not yet acknowledged.
struct InFlight {
    after: Position,
    rows: u64,
    status: BatchStatusReceiver,
}

/// What a page read gave.
enum Page {
    Rows(Vec<Row>),
    /// The table is gone (dropped, or renamed behind our back).
    Gone,
}

impl Poller {
    pub async fn run(self) -> Result<(), PollError> {
        let s = self.settings.clone();
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let labels = {
            let mut l = self.metrics.labels().to_vec();
            l.push(("table", self.table.clone()));
            l
        };
        let rows_counter = metrics::counter!("kwdb_poll_rows_total", &labels);
        let lag_gauge = metrics::gauge!("kwdb_poll_lag_seconds", &labels);

        let checkpoint = s.store.load(&self.table)?;
        let mut exported = checkpoint.as_ref().map_or(0, |c| c.rows);
        // `committed`: after the last acknowledged row; `position`: after the last
        // row handed on.
        let mut committed: Option<Position> = None;
        let mut schema: Option<(Arc<TableSchema>, TableQuery)> = None;
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut position: Option<Position> = None;
        let mut loaded = checkpoint;
        let mut last_progress = Instant::now();
        let mut rows_at_last_progress = exported;
        let mut last_ts: Option<Timestamp> = None;
        let mut schema_read_at = Instant::now();
        let mut index_checked = false;
        let mut saver = Saver::new(s.store.clone(), self.table.clone());

        loop {
            // Settle what came back, in order, and write the checkpoint behind.
            let rewound = self.settle(&mut in_flight, &mut committed, &mut exported, &mut saver)?;
            saver.poll()?;
            if rewound {
                position = committed.clone();
                self.sleep(backoff.next_delay()).await;
                continue;
            }
            if self.stop.is_triggered() {
                break;
            }
            // Pages acknowledged but not yet durably checkpointed still count: a
            // kill -9 repeats at most `max_in_flight` pages.
            if in_flight.len() + saver.pages() >= s.max_in_flight {
                tokio::select! {
                    _ = wait_front_status(&mut in_flight) => {}
                    r = saver.done() => r?,
                    _ = self.stop.cancelled() => {}
                }
                continue;
            }

            // The schema: read once, and again every discovery interval so columns
            // added behind our back are exported too.
            if schema.is_none() || schema_read_at.elapsed() >= s.discover_interval {
                match self.read_schema().await {
                    Ok(Some(sq)) => {
                        if let Some(cp) = loaded.take() {
                            position = Some(self.position_from(&cp, &sq.1)?);
                            committed = position.clone();
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
            let page = {
                let _permit = self.permits.acquire().await.expect("never closed");
                self.read_page(&table_schema, &q, position.as_ref(), upper)
                    .await
            };
            let rows = match page {
                Ok(Page::Rows(rows)) => {
                    backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
                    self.metrics.report_ok();
                    rows
                }
                Ok(Page::Gone) => break,
                Err(e) => {
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
                    self.sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            let caught_up = rows.len() < s.fetch_max_rows;
            if let Some(last) = rows.last() {
                let after = Position {
                    ts: last[q.ts].clone(),
                    keys: q.keys.iter().map(|k| last[*k].clone()).collect(),
                };
                if let Value::Timestamp(t) = &after.ts {
                    last_ts = Some(*t);
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
                    schema: table_schema.clone(),
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
                match sent {
                    Some(Ok(())) => {}
                    Some(Err(_)) => break,
                    None => break,
                }
                rows_counter.increment(n);
                position = Some(after.clone());
                in_flight.push_back(InFlight {
                    after,
                    rows: n,
                    status,
                });
            }
            if let Some(t) = last_ts {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                lag_gauge.set((now_ms - t.as_millis()).max(0) as f64 / 1000.0);
            }
            if last_progress.elapsed() >= s.progress_interval {
                let sent = exported + in_flight.iter().map(|f| f.rows).sum::<u64>();
                let rate =
                    (sent - rows_at_last_progress) as f64 / last_progress.elapsed().as_secs_f64();
                tracing::info!(
                    table = %self.table,
                    rows_exported = exported,
                    rows_in_flight = sent - exported,
                    rows_per_sec = rate as u64,
                    lag_secs = last_ts.map(|t| (chrono_now_ms() - t.as_millis()).max(0) / 1000),
                    "export progress"
                );
                last_progress = Instant::now();
                rows_at_last_progress = sent;
            }
            if caught_up {
                // Wait for the next poll, settling acknowledgements as they come.
                let until = tokio::time::Instant::now() + s.query_interval;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        _ = self.stop.cancelled() => break,
                        r = saver.done() => r?,
                        _ = wait_front_status(&mut in_flight) => {
                            if self.settle(&mut in_flight, &mut committed, &mut exported, &mut saver)? {
                                position = committed.clone();
                                break;
                            }
                            saver.poll()?;
                        }
                    }
                }
            }
        }

        // Stopping: what was handed on is still settled, so the checkpoint covers it.
        saver.finish().await?;
        while let Some(front) = in_flight.pop_front() {
            if front.status.await.is_final_ok() {
                exported += front.rows;
                committed = Some(front.after);
            } else {
                break;
            }
        }
        self.save(committed.as_ref(), exported)?;
        tracing::debug!(table = %self.table, rows = exported, "poller stopped");
        Ok(())
    }

    /// Takes the statuses that came back, oldest first: acknowledged pages move
    /// the checkpoint; a failed one clears what is in flight and returns true, so
    /// the caller reads again from the checkpoint.
    fn settle(
        &self,
        in_flight: &mut VecDeque<InFlight>,
        committed: &mut Option<Position>,
        exported: &mut u64,
        saver: &mut Saver,
    ) -> Result<bool, PollError> {
        let mut moved = 0;
        let save = |moved: usize, committed: &Option<Position>, rows: u64, saver: &mut Saver| {
            if let (true, Some(p)) = (moved > 0, committed) {
                saver.acknowledged(moved, self.checkpoint(p, rows));
            }
        };
        while let Some(front) = in_flight.front_mut() {
            let Some(status) = front.status.try_recv() else {
                break;
            };
            let done = in_flight.pop_front().expect("front exists");
            if status.is_final_ok() {
                *exported += done.rows;
                *committed = Some(done.after);
                moved += 1;
            } else {
                // Later pages may have been written already; KWDB deduplicates
                // the replayed rows, PostgreSQL's primary key does the same.
                tracing::warn!(table = %self.table, "a page was not delivered; reading again from the checkpoint");
                in_flight.clear();
                save(moved, committed, *exported, saver);
                return Ok(true);
            }
        }
        save(moved, committed, *exported, saver);
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

    async fn read_page(
        &self,
        schema: &TableSchema,
        q: &TableQuery,
        after: Option<&Position>,
        upper: Option<Timestamp>,
    ) -> Result<Page, KwdbError> {
        let s = &self.settings;
        let sql = q
            .select(schema, after, s.start_at, upper, s.fetch_max_rows)
            .map_err(KwdbError::Schema)?;
        let client = self.slot.get().await?;
        let mut rows = match self.query(&client, &sql, schema).await {
            Ok(r) => r,
            Err(e) if e.sqlstate() == Some("42P01") => return Ok(Page::Gone),
            Err(e) => return Err(e),
        };
        // Without keys, a page must not end inside a timestamp: rows after the cut
        // with the same timestamp would be passed by.
        if q.keys.is_empty() && rows.len() == s.fetch_max_rows {
            let last = rows.last().expect("full page")[q.ts].clone();
            let keep = rows
                .iter()
                .rposition(|r| r[q.ts] != last)
                .map_or(0, |i| i + 1);
            if keep > 0 {
                rows.truncate(keep);
            } else {
                let sql = q.select_at(schema, &last).map_err(KwdbError::Schema)?;
                rows = self.query(&client, &sql, schema).await?;
            }
        }
        Ok(Page::Rows(rows))
    }

    async fn query(
        &self,
        client: &tokio_postgres::Client,
        sql: &str,
        schema: &TableSchema,
    ) -> Result<Vec<Row>, KwdbError> {
        let err = |e| KwdbError::db(format!("cannot read table {}", self.table), e);
        // Rows are parsed as they arrive, while the server is still sending the
        // rest of the page.
        let stream = client.simple_query_raw(sql).await.map_err(err)?;
        futures::pin_mut!(stream);
        let mut rows = Vec::with_capacity(self.settings.fetch_max_rows);
        while let Some(m) = stream.next().await {
            if let SimpleQueryMessage::Row(r) = m.map_err(err)? {
                let mut row = Vec::with_capacity(schema.width());
                for (i, field) in schema.fields().enumerate() {
                    row.push(parse_text(r.get(i), field).map_err(KwdbError::Schema)?);
                }
                rows.push(row);
            }
        }
        Ok(rows)
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
