//! One connection's writer: takes the batches of the tables pinned to it, in
//! order; for each, plans the table ([`super::schema`]), writes the rows chunk by
//! chunk ([`super::write`]), pauses and retries what may heal, plans again when
//! the table changed, and acknowledges the batch once every row is written or
//! refused.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::parked::Parked;
use super::schema::Tables;
use super::session::Session;
use super::step::{OnStale, Retries, Step};
use super::write::WritePath;
use super::{SinkOptions, WriteMethod};
use crate::ack::{EventFinalizers, EventStatus};
use crate::api::{Backoff, ComponentMetrics};
use crate::event::{Row, RowBatch, Target};
use crate::kwdb::dedup::DedupRule;
use crate::kwdb::values::Encoding;
use crate::kwdb::{ConnectParams, KwdbError};

pub(super) struct Worker {
    n: usize,
    options: Arc<SinkOptions>,
    /// The sink's database: rows addressed to another are refused.
    database: Option<String>,
    session: Session,
    tables: Tables,
    encoding: Encoding,
    metrics: ComponentMetrics,
    write_seconds: metrics::Histogram,
    rows_written: metrics::Counter,
    retries_total: metrics::Counter,
}

/// What became of one pass over a batch: plan the table, then write the rows
/// left chunk by chunk.
enum Pass {
    /// Every row left is written or refused.
    Done,
    /// The table changed under the writer: plan again, for the rows not written.
    Replan,
    /// The table is missing and may not be created, and nothing of the batch was
    /// written: it waits aside ([`Parked`]) while the worker goes on.
    Park(KwdbError),
}

/// How far a batch got, kept across its passes.
struct Progress {
    /// The rows not yet written nor refused, by position in the batch.
    remaining: Vec<usize>,
    rejected: Vec<(usize, String)>,
    retries: Retries,
    /// How many times the table was read again for this batch.
    refreshes: u32,
    rows: usize,
}

impl Progress {
    fn new(rows: usize, backoff: Backoff) -> Self {
        Progress {
            remaining: (0..rows).collect(),
            rejected: Vec::new(),
            retries: Retries::new(backoff),
            refreshes: 0,
            rows,
        }
    }

    /// Nothing of the batch written nor refused yet.
    fn untouched(&self) -> bool {
        self.rejected.is_empty() && self.remaining.len() == self.rows
    }
}

impl Worker {
    pub fn new(
        n: usize,
        params: Arc<ConnectParams>,
        options: Arc<SinkOptions>,
        metrics: ComponentMetrics,
        dedup: Option<DedupRule>,
    ) -> Self {
        let labels = metrics.labels().to_vec();
        let encoding = Encoding {
            dialect: params.dialect,
            non_finite: options.non_finite_floats,
        };
        Worker {
            n,
            database: params.database.clone(),
            tables: Tables::new(&params, options.clone(), dedup),
            session: Session::new(params),
            options,
            write_seconds: metrics::histogram!("kwdb_sink_batch_write_seconds", &labels),
            rows_written: metrics::counter!("kwdb_sink_rows_written_total", &labels),
            retries_total: metrics::counter!("kwdb_sink_retries_total", &labels),
            encoding,
            metrics,
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.options.retry_backoff, self.options.retry_backoff_max)
    }

    pub async fn run(mut self, rx: mpsc::Receiver<RowBatch>) -> Result<(), KwdbError> {
        let mut parked = Parked::new(self.backoff());
        let result = self.write_all(rx, &mut parked).await;
        // Stopping (the input closed, or an error): rows still waiting for their
        // table are not written, so not acknowledged; they are read again later.
        parked.give_up();
        result
    }

    async fn write_all(
        &mut self,
        mut rx: mpsc::Receiver<RowBatch>,
        parked: &mut Parked,
    ) -> Result<(), KwdbError> {
        let mut next = None;
        loop {
            if parked.due() {
                self.retry_parked(parked).await?;
            }
            let mut batch = match next.take() {
                Some(b) => b,
                None if parked.is_empty() => match rx.recv().await {
                    Some(b) => b,
                    None => return Ok(()),
                },
                None => tokio::select! {
                    b = rx.recv() => match b {
                        Some(b) => b,
                        None => return Ok(()),
                    },
                    _ = tokio::time::sleep_until(parked.next_try) => continue,
                },
            };
            // Behind a parked batch of its table: wait with it, in order.
            if parked.holds(&batch.target.table) {
                parked.push(batch);
                continue;
            }
            if self.options.method == WriteMethod::Copy {
                // Batches already waiting for the same table go into the same COPY.
                while batch.rows.len() < self.options.copy_max_rows {
                    let Ok(more) = rx.try_recv() else { break };
                    if !same_statement(&batch, &more) {
                        next = Some(more);
                        break;
                    }
                    let RowBatch {
                        mut rows,
                        finalizers,
                        ..
                    } = more;
                    batch.rows.append(&mut rows);
                    batch.finalizers.merge(finalizers);
                }
            }
            if let Some((batch, e)) = self.handle(batch).await? {
                self.park(parked, batch, e);
            }
        }
    }

    /// Holds a batch whose table is missing; the worker goes on with other tables.
    fn park(&mut self, parked: &mut Parked, batch: RowBatch, e: KwdbError) {
        let first = !parked.holds(&batch.target.table);
        parked.push_front(batch);
        if first {
            self.metrics.report_error("missing table", &e);
            tracing::warn!(worker = self.n, error = %e, "rows wait for their table");
        }
    }

    /// Tries the oldest batch of every parked table again; what now lands is
    /// followed by the rest of that table's batches, in order.
    async fn retry_parked(&mut self, parked: &mut Parked) -> Result<(), KwdbError> {
        let mut still_missing = None;
        for table in parked.tables() {
            while let Some(batch) = parked.pop(&table) {
                if let Some((batch, e)) = self.handle(batch).await? {
                    parked.push_front(batch);
                    still_missing = Some(e);
                    break;
                }
            }
        }
        match still_missing {
            None => {
                parked.reset();
                Ok(())
            }
            Some(e) => {
                self.metrics.report_error("missing table", &e);
                if let Some(m) = self.options.max_retries.filter(|m| parked.tries >= *m) {
                    tracing::error!(worker = self.n, error = %e, retries = m, "giving up");
                    return Err(e);
                }
                let delay = parked.wait_more();
                self.retries_total.increment(1);
                tracing::warn!(worker = self.n, error = %e, retry_in = ?delay, "rows wait for their table; retrying");
                Ok(())
            }
        }
    }

    /// Waits before a retry, or gives up when `max_retries` is spent.
    async fn pause(&mut self, retries: &mut Retries, e: KwdbError) -> Result<(), KwdbError> {
        let kind = match e {
            KwdbError::Connect { .. } | KwdbError::ConnectTimeout { .. } => "connection",
            _ => "write",
        };
        self.metrics.report_error(kind, &e);
        if retries.spent(self.options.max_retries) {
            tracing::error!(worker = self.n, error = %e, retries = retries.tries, "giving up");
            return Err(e);
        }
        retries.tries += 1;
        self.retries_total.increment(1);
        let delay = retries.backoff.next_delay();
        tracing::warn!(worker = self.n, error = %e, retry_in = ?delay, "write failed; retrying");
        // Whatever broke may have left the session in an unknown state.
        self.session.drop_connection();
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Writes a batch; gives it back when its table is missing and may not be
    /// created, for the caller to park.
    async fn handle(
        &mut self,
        batch: RowBatch,
    ) -> Result<Option<(RowBatch, KwdbError)>, KwdbError> {
        let mut progress = Progress::new(batch.rows.len(), self.backoff());
        if let Some(reason) = self.foreign_database(&batch.target) {
            progress
                .rejected
                .extend((0..batch.rows.len()).map(|i| (i, reason.clone())));
        } else {
            loop {
                match self.pass(&batch, &mut progress).await {
                    Ok(Pass::Done) => break,
                    Ok(Pass::Replan) => continue,
                    Ok(Pass::Park(e)) => return Ok(Some((batch, e))),
                    Err(e) => {
                        batch.finalizers.finish(EventStatus::Failed);
                        return Err(e);
                    }
                }
            }
        }
        let RowBatch {
            target,
            rows,
            finalizers,
            ..
        } = batch;
        self.finish(&target.table, &rows, progress.rejected, finalizers);
        Ok(None)
    }

    /// Why rows addressed to another database than the sink's are refused.
    fn foreign_database(&self, target: &Target) -> Option<String> {
        let own_db = self.database.as_deref();
        let db = target.database.as_deref().filter(|d| Some(*d) != own_db)?;
        Some(format!(
            "rows for database \"{db}\" but this sink writes to \"{}\"",
            own_db.unwrap_or_default()
        ))
    }

    /// One pass: plans the table (retrying what may heal), then writes the rows
    /// left. Err: the sink stops (an error no retry fixes, or retries spent).
    async fn pass(&mut self, batch: &RowBatch, p: &mut Progress) -> Result<Pass, KwdbError> {
        let table = &batch.target.table;
        let plan = loop {
            let planned = self
                .tables
                .plan(
                    &mut self.session,
                    table,
                    &batch.schema,
                    &batch.meta,
                    &batch.rows,
                )
                .await;
            match planned {
                Ok(plan) => break plan,
                Err(Step::Reject(reason)) => {
                    let refused = p.remaining.drain(..).map(|i| (i, reason.clone()));
                    p.rejected.extend(refused);
                    return Ok(Pass::Done);
                }
                // Nothing written yet: the batch waits aside for its table, the
                // worker goes on with the others.
                Err(Step::Retry(e @ KwdbError::MissingTable { .. })) if p.untouched() => {
                    return Ok(Pass::Park(e));
                }
                Err(Step::Retry(e)) | Err(Step::Stale(e)) => {
                    self.tables.invalidate(table);
                    self.pause(&mut p.retries, e).await?;
                }
                Err(Step::Fatal(e)) => return Err(self.fatal(e)),
            }
        };
        let chunk_rows = match plan.copy_sql {
            Some(_) => self.options.copy_max_rows,
            None => self.options.batch_size,
        };
        let mut pos = 0;
        while pos < p.remaining.len() {
            let end = (pos + chunk_rows).min(p.remaining.len());
            let chunk = &p.remaining[pos..end];
            let started = Instant::now();
            let mut path = WritePath {
                session: &mut self.session,
                encoding: self.encoding,
                options: &self.options,
            };
            let written = path
                .chunk(&plan, &batch.rows, chunk, OnStale::after(p.refreshes))
                .await;
            match written {
                Ok(bad) => {
                    self.write_seconds.record(started.elapsed().as_secs_f64());
                    self.metrics.report_ok();
                    self.rows_written
                        .increment((chunk.len() - bad.len()) as u64);
                    p.rejected.extend(bad);
                    pos = end;
                    p.retries.reset();
                }
                Err(Step::Retry(e)) => self.pause(&mut p.retries, e).await?,
                Err(Step::Stale(e)) => {
                    tracing::info!(table = %table, error = %e, "table changed; re-reading its schema");
                    p.refreshes += 1;
                    self.tables.invalidate(table);
                    self.session.forget(table);
                    p.remaining.drain(..pos);
                    return Ok(Pass::Replan);
                }
                Err(Step::Reject(reason)) => {
                    p.rejected
                        .extend(chunk.iter().map(|&i| (i, reason.clone())));
                    pos = end;
                }
                Err(Step::Fatal(e)) => return Err(self.fatal(e)),
            }
        }
        Ok(Pass::Done)
    }

    /// Logs an error no retry can fix and hands it to the sink, which stops.
    fn fatal(&self, e: KwdbError) -> KwdbError {
        self.metrics.report_error("fatal", &e);
        tracing::error!(
            worker = self.n,
            error = %e,
            "not retried: the database or the sink's configuration must be fixed; stopping"
        );
        e
    }

    fn finish(
        &self,
        table: &str,
        rows: &[Row],
        rejected: Vec<(usize, String)>,
        finalizers: EventFinalizers,
    ) {
        // For /health: a sink writing nothing but rejects is degraded (issue 18).
        self.metrics
            .passed(rows.len().saturating_sub(rejected.len()) as u64);
        if rejected.is_empty() {
            finalizers.finish(EventStatus::Delivered);
            return;
        }
        self.metrics.rejected(rejected.len() as u64);
        for (i, reason) in rejected.iter().take(10) {
            tracing::warn!(table, row = i, reason = %reason, "row rejected");
        }
        if rejected.len() > 10 {
            tracing::warn!(
                table,
                rejected = rejected.len(),
                of = rows.len(),
                "more rows rejected (only the first 10 are logged)"
            );
        }
        finalizers.finish(EventStatus::Rejected);
    }
}

/// Whether two batches can go into one statement: same table, same schema, and
/// the same say on whether the table may be created from them.
fn same_statement(a: &RowBatch, b: &RowBatch) -> bool {
    a.target == b.target
        && a.schema == b.schema
        && a.meta.schema_certainty == b.meta.schema_certainty
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DataType, Field, Metadata, SchemaCertainty, TableKind, TableSchema};

    fn batch(table: &str, certainty: SchemaCertainty) -> RowBatch {
        RowBatch {
            target: Target {
                database: None,
                table: table.into(),
            },
            schema: Arc::new(TableSchema::new(
                TableKind::Relational,
                vec![Field::column("v", DataType::Float8)],
                Vec::new(),
            )),
            rows: vec![Vec::new()],
            meta: Arc::new(Metadata {
                schema_certainty: certainty,
                ..Default::default()
            }),
            finalizers: Default::default(),
        }
    }

    /// A guessed schema must not ride into a COPY whose table a declared one
    /// may create (auto_create = "declared").
    #[test]
    fn batches_share_a_statement_only_with_the_same_certainty() {
        use SchemaCertainty::*;
        assert!(same_statement(&batch("t", Declared), &batch("t", Declared)));
        assert!(!same_statement(&batch("t", Declared), &batch("t", Partial)));
        assert!(!same_statement(
            &batch("t", Inferred),
            &batch("t", Declared)
        ));
        assert!(!same_statement(
            &batch("t", Declared),
            &batch("u", Declared)
        ));
    }

    #[test]
    fn progress_is_untouched_until_a_row_is_written_or_refused() {
        let backoff = Backoff::new(std::time::Duration::ZERO, std::time::Duration::ZERO);
        let mut p = Progress::new(3, backoff);
        assert!(p.untouched());
        p.remaining.drain(..1);
        assert!(!p.untouched());
        let mut p = Progress::new(3, Backoff::new(Default::default(), Default::default()));
        p.rejected.push((0, "bad".into()));
        assert!(!p.untouched());
    }
}
