//! One connection's writer: plans a table (create, evolve, map fields), encodes
//! rows, writes chunks, retries, bisects.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

use super::{
    AutoCreate, SchemaEvolution, SinkOptions, WriteMethod,
};
use crate::ack::EventStatus;
use crate::api::{Backoff, ComponentMetrics};
use crate::event::{DataType, SchemaCertainty, TableKind};
use crate::event::{Field, Metadata, Precision, Row, RowBatch, TableSchema, Value};
use crate::kwdb::catalog::{Catalog, TableInfo};
use crate::kwdb::dedup::{partial_rows_note, DedupRule};
use crate::kwdb::dialect::{relational_key, PgTagComment};
use crate::kwdb::values::{text_len, Encoding};
use crate::kwdb::{ConnectParams, DatabaseKind, Dialect, ErrorClass, Ident, KwdbError, Sql};

/// Why a step did not finish.
enum Step {
    /// Try again after a pause (connection, server restart...).
    Retry(KwdbError),
    /// The table is not what we thought: re-read it.
    Stale(KwdbError),
    /// Every row of the batch is refused, for this reason.
    Reject(String),
    /// The environment or configuration is wrong (unknown database, refused
    /// login): the sink stops with this error, the rows stay unacknowledged.
    Fatal(KwdbError),
}

impl From<KwdbError> for Step {
    fn from(e: KwdbError) -> Self {
        match e.class() {
            ErrorClass::Retryable => Step::Retry(e),
            ErrorClass::StaleSchema => Step::Stale(e),
            ErrorClass::Fatal => Step::Fatal(e),
            ErrorClass::Permanent | ErrorClass::Duplicate => {
                Step::Reject(e.db_message().unwrap_or_else(|| e.to_string()))
            }
        }
    }
}

/// How rows of a batch map onto the table.
struct Plan {
    /// For each written field: its position in the batch's rows and the table's field.
    fields: Vec<(usize, Field)>,
    insert_prefix: String,
    copy_sql: Option<String>,
    /// With COPY: the way for chunks holding replayed rows.
    stage: Option<Stage>,
    /// What follows the VALUES: see [`Sql::upsert_suffix`].
    insert_suffix: String,
    table: String,
}

/// A COPY inside a transaction: the statements around it, and whether the COPY's
/// prepared statement is kept for the table.
struct Transaction<'a> {
    begin: &'a str,
    copy: &'a str,
    cache: bool,
    end: &'a str,
    /// What an error message says failed: "COPY into" the table.
    context: &'static str,
}

/// Rows of a COPY that failed on the primary key (a replay) go into a temporary
/// table dropped at commit, then into the table with ON CONFLICT DO NOTHING: as
/// idempotent as the INSERT path at nearly the speed of COPY.
struct Stage {
    begin: String,
    copy: String,
    insert: String,
}

pub(super) async fn create_database(
    params: &ConnectParams,
    kind: DatabaseKind,
    options: &SinkOptions,
) -> Result<(), KwdbError> {
    let db_name = params.database.clone().expect("checked at build");
    let sql = Sql(params.dialect);
    let db = sql.ident(&db_name)?;
    let mut backoff = Backoff::new(options.retry_backoff, options.retry_backoff_max);
    let mut tries = 0;
    loop {
        let result = async {
            let client = params
                .connect_to(Some(params.dialect.admin_database()))
                .await?;
            if params.dialect == Dialect::Postgres {
                let exists = client
                    .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db_name])
                    .await
                    .map_err(|e| KwdbError::db("cannot list databases", e))?
                    .is_some();
                if exists {
                    return Ok(());
                }
            }
            match client.batch_execute(&sql.create_database(&db, kind)?).await {
                Ok(()) => Ok(()),
                // Another writer was faster.
                Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(()),
                Err(e) => Err(KwdbError::db(format!("cannot create database {db}"), e)),
            }
        }
        .await;
        match result {
            Err(e) if e.is_retryable() && options.max_retries.is_none_or(|m| tries < m) => {
                tries += 1;
                tokio::time::sleep(backoff.next_delay()).await;
            }
            other => return other,
        }
    }
}

pub(super) struct Worker {
    n: usize,
    params: Arc<ConnectParams>,
    options: Arc<SinkOptions>,
    sql: Sql,
    client: Option<Client>,
    catalog: Catalog,
    copy_statements: HashMap<String, Statement>,
    metrics: ComponentMetrics,
    write_seconds: metrics::Histogram,
    rows_written: metrics::Counter,
    retries: metrics::Counter,
    encoding: Encoding,
    /// The server's `ts.dedup.rule` (kwdb dialect), read at start.
    dedup: Option<DedupRule>,
    /// Tables this worker created (KWDB keeps no mark of who made a table).
    created: HashSet<String>,
    /// Tables already warned about (timestamps rounded, partial rows under
    /// `override`, no key), so each warning comes once per table.
    warned: HashSet<(String, Warning)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Warning {
    Rounded,
    PartialRows,
    NoKey,
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
            sql: Sql(params.dialect),
            catalog: Catalog::new(params.dialect),
            params,
            options,
            client: None,
            copy_statements: HashMap::new(),
            write_seconds: metrics::histogram!("kwdb_sink_batch_write_seconds", &labels),
            rows_written: metrics::counter!("kwdb_sink_rows_written_total", &labels),
            retries: metrics::counter!("kwdb_sink_retries_total", &labels),
            encoding,
            warned: HashSet::new(),
            created: HashSet::new(),
            dedup,
            metrics,
        }
    }

    pub async fn run(mut self, rx: mpsc::Receiver<RowBatch>) -> Result<(), KwdbError> {
        let mut parked = Parked::new(&self.options);
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
            let batch_table = batch.target.table.clone();
            if parked.holds(&batch_table) {
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
                self.retries.increment(1);
                tracing::warn!(worker = self.n, error = %e, retry_in = ?delay, "rows wait for their table; retrying");
                Ok(())
            }
        }
    }

    async fn client(&mut self) -> Result<&Client, KwdbError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.copy_statements.clear();
            let client = self.params.connect().await?;
            // Timestamp text without a zone into TIMESTAMPTZ must not depend on
            // the server's or the user's default time zone.
            for stmt in self.sql.session_setup() {
                client
                    .batch_execute(stmt)
                    .await
                    .map_err(|e| KwdbError::db("cannot set up the session", e))?;
            }
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("just connected"))
    }

    /// Waits before a retry, or gives up when `max_retries` is spent.
    async fn pause(
        &mut self,
        tries: &mut u32,
        backoff: &mut Backoff,
        e: KwdbError,
    ) -> Result<(), KwdbError> {
        let kind = match e {
            KwdbError::Connect { .. } | KwdbError::ConnectTimeout { .. } => "connection",
            _ => "write",
        };
        self.metrics.report_error(kind, &e);
        if self.options.max_retries.is_some_and(|m| *tries >= m) {
            tracing::error!(worker = self.n, error = %e, retries = *tries, "giving up");
            return Err(e);
        }
        *tries += 1;
        self.retries.increment(1);
        let delay = backoff.next_delay();
        tracing::warn!(worker = self.n, error = %e, retry_in = ?delay, "write failed; retrying");
        // Whatever broke may have left the session in an unknown state.
        self.client = None;
        self.copy_statements.clear();
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Writes a batch; gives it back when its table is missing and may not be
    /// created, for the caller to park.
    async fn handle(
        &mut self,
        batch: RowBatch,
    ) -> Result<Option<(RowBatch, KwdbError)>, KwdbError> {
        let RowBatch {
            target,
            schema,
            rows,
            meta,
            finalizers,
        } = batch;
        let mut rejected: Vec<(usize, String)> = Vec::new();
        let mut tries = 0u32;
        let mut backoff = Backoff::new(self.options.retry_backoff, self.options.retry_backoff_max);
        let own_db = self.params.database.as_deref();
        if let Some(db) = target.database.as_deref().filter(|d| Some(*d) != own_db) {
            let reason = format!(
                "rows for database \"{db}\" but this sink writes to \"{}\"",
                own_db.unwrap_or_default()
            );
            rejected.extend((0..rows.len()).map(|i| (i, reason.clone())));
            self.finish(&target.table, &rows, rejected, finalizers);
            return Ok(None);
        }
        let mut remaining: Vec<usize> = (0..rows.len()).collect();
        let mut refreshes = 0;
        'replan: loop {
            let plan = loop {
                match self.plan(&target.table, &schema, &meta, &rows).await {
                    Ok(p) => break p,
                    Err(Step::Reject(reason)) => {
                        rejected.extend(remaining.iter().map(|&i| (i, reason.clone())));
                        self.finish(&target.table, &rows, rejected, finalizers);
                        return Ok(None);
                    }
                    // Nothing written yet: the batch waits aside for its table, the
                    // worker goes on with the others.
                    Err(Step::Retry(e @ KwdbError::MissingTable { .. }))
                        if rejected.is_empty() && remaining.len() == rows.len() =>
                    {
                        let batch = RowBatch {
                            target,
                            schema,
                            rows,
                            meta,
                            finalizers,
                        };
                        return Ok(Some((batch, e)));
                    }
                    Err(Step::Retry(e)) | Err(Step::Stale(e)) => {
                        self.catalog.invalidate(&target.table);
                        if let Err(e) = self.pause(&mut tries, &mut backoff, e).await {
                            finalizers.finish(EventStatus::Failed);
                            return Err(e);
                        }
                    }
                    Err(Step::Fatal(e)) => {
                        finalizers.finish(EventStatus::Failed);
                        return Err(self.fatal(e));
                    }
                }
            };
            let mut pos = 0;
            while pos < remaining.len() {
                let step = match plan.copy_sql {
                    Some(_) => self.options.copy_max_rows,
                    None => self.options.batch_size,
                };
                let end = (pos + step).min(remaining.len());
                let chunk = &remaining[pos..end];
                let started = Instant::now();
                match self.write_chunk(&plan, &rows, chunk, refreshes >= 2).await {
                    Ok(bad) => {
                        self.write_seconds.record(started.elapsed().as_secs_f64());
                        self.metrics.report_ok();
                        self.rows_written
                            .increment((chunk.len() - bad.len()) as u64);
                        rejected.extend(bad);
                        pos = end;
                        tries = 0;
                        backoff = Backoff::new(
                            self.options.retry_backoff,
                            self.options.retry_backoff_max,
                        );
                    }
                    Err(Step::Retry(e)) => {
                        if let Err(e) = self.pause(&mut tries, &mut backoff, e).await {
                            finalizers.finish(EventStatus::Failed);
                            return Err(e);
                        }
                    }
                    Err(Step::Stale(e)) => {
                        tracing::info!(table = %target.table, error = %e, "table changed; re-reading its schema");
                        refreshes += 1;
                        self.catalog.invalidate(&target.table);
                        self.copy_statements.remove(&target.table);
                        remaining.drain(..pos);
                        continue 'replan;
                    }
                    Err(Step::Reject(reason)) => {
                        rejected.extend(chunk.iter().map(|&i| (i, reason.clone())));
                        pos = end;
                    }
                    Err(Step::Fatal(e)) => {
                        finalizers.finish(EventStatus::Failed);
                        return Err(self.fatal(e));
                    }
                }
            }
            break;
        }
        self.finish(&target.table, &rows, rejected, finalizers);
        Ok(None)
    }

    fn warn_once(&mut self, table: &str, what: Warning, message: &str) {
        if self.warned.insert((table.to_string(), what)) {
            tracing::warn!(table, "{message}");
        }
    }

    /// Warnings about what the server will do to rows it takes, once per table.
    fn warn_about(&mut self, info: &TableInfo, schema: &TableSchema, precision: Precision) {
        if precision > info.ts_precision {
            let message = format!(
                "rows carry timestamps in {precision} but the table keeps {}: the server \
                 rounds the extra digits, and rows that then share a timestamp replace each \
                 other (docs/formats.md)",
                info.ts_precision
            );
            self.warn_once(&info.name, Warning::Rounded, &message);
        }
        let partial = carries_partial_rows(info, schema);
        if let Some(rule) = self
            .dedup
            .as_ref()
            .filter(|r| partial && r.loses_partial_rows())
        {
            let message = format!(
                "rows carry only some of the table's columns; {}",
                partial_rows_note(rule)
            );
            self.warn_once(&info.name, Warning::PartialRows, &message);
        }
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
        finalizers: crate::ack::EventFinalizers,
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

    /// Makes sure the table exists with every field of `schema`, and maps them.
    async fn plan(
        &mut self,
        table: &str,
        schema: &TableSchema,
        meta: &Metadata,
        rows: &[Row],
    ) -> Result<Plan, Step> {
        let sql = self.sql;
        let reject = |e: KwdbError| Step::Reject(e.to_string());
        let ident = sql.ident(table).map_err(reject)?;
        for f in schema.fields() {
            sql.ident(&f.name).map_err(reject)?;
        }
        let precision = finest_precision(schema, rows);
        let mut no_key = false;
        self.client().await?;
        let client = self.client.as_ref().expect("connected");
        let info = match self.catalog.table(client, table).await? {
            Some(info) => info,
            None => {
                let partial = meta.schema_certainty == SchemaCertainty::Partial;
                // Not a bad record: the table is missing from the environment. The
                // rows wait (as for an outage) until someone creates it.
                let why = match (self.options.auto_create, partial) {
                    (AutoCreate::Never, _) => Some("auto_create = \"never\""),
                    (AutoCreate::Declared, true) => Some(
                        "rows whose schema is guessed (line_influxdb) create tables only \
                         with auto_create = \"always\"",
                    ),
                    _ => None,
                };
                if let Some(why) = why {
                    return Err(Step::Retry(KwdbError::MissingTable {
                        table: table.to_string(),
                        database: self.params.database.clone().unwrap_or_default(),
                        wanted: describe_wanted(schema),
                        why,
                    }));
                }
                let stmts = sql
                    .create_table(&ident, schema, precision)
                    .map_err(reject)?;
                // One simple query: PostgreSQL runs it as one transaction, so a table
                // never exists without its tag comment.
                let created = client.batch_execute(&stmts.join("; ")).await;
                self.catalog.invalidate(table);
                match created {
                    Ok(()) => {
                        tracing::info!(table, "created table");
                        self.created.insert(table.to_string());
                        if schema.kind == TableKind::Relational {
                            let key = relational_key(schema);
                            if key.is_empty() {
                                no_key = true;
                            } else {
                                tracing::info!(
                                    table,
                                    key = %key.join(", "),
                                    "relational table keyed by its NOT NULL columns: a row with \
                                     the key of an earlier one replaces it (replays are idempotent)"
                                );
                            }
                        }
                    }
                    // Another writer (a second agent in the group) may have created it
                    // first; which error that gives depends on where the two CREATEs
                    // crossed (42P07, 23505 or 42710 on its row type): the table being
                    // there now is what counts.
                    Err(e) => match self.catalog.table(client, table).await? {
                        Some(_) => tracing::debug!(
                            table,
                            error = %e,
                            "table created concurrently by another writer"
                        ),
                        None => {
                            return Err(KwdbError::db(
                                format!("cannot create table \"{table}\""),
                                e,
                            )
                            .into())
                        }
                    },
                }
                self.catalog.table(client, table).await?.ok_or_else(|| {
                    Step::Retry(KwdbError::Schema(format!(
                        "table \"{table}\" vanished after creation"
                    )))
                })?
            }
        };
        if no_key {
            self.warn_once(
                table,
                Warning::NoKey,
                "relational table created without a key (no column is primary or NOT NULL): \
                 a replay writes its rows again",
            );
        }
        let info = self.evolve(&ident, &info, schema, rows, precision).await?;
        self.warn_about(&info, schema, precision);
        let mut fields = Vec::with_capacity(schema.width());
        let mut idents = Vec::with_capacity(schema.width());
        for (i, f) in schema.fields().enumerate() {
            let (target, _) = target_field(&info, schema, i).ok_or_else(|| {
                Step::Reject(format!(
                    "table \"{table}\" has no column or tag \"{}\"",
                    f.name
                ))
            })?;
            idents.push(sql.ident(&target.name).map_err(reject)?);
            fields.push((i, target.clone()));
        }
        let copy_sql = match self.options.method {
            WriteMethod::Copy => sql.copy_in(&ident, &idents),
            WriteMethod::Insert => None,
        };
        let insert_suffix = sql
            .upsert_suffix(&ident, info.schema.kind, &info.key, &idents)
            .map_err(reject)?;
        let stage = match &copy_sql {
            Some(_) => {
                let stage = sql.ident("kwpipe_stage").map_err(reject)?;
                let cols: Vec<String> = idents.iter().map(Ident::to_string).collect();
                let cols = cols.join(", ");
                sql.copy_in(&stage, &idents).map(|copy| Stage {
                    begin: format!(
                        "BEGIN; CREATE TEMP TABLE {stage} (LIKE {ident} INCLUDING DEFAULTS) ON COMMIT DROP"
                    ),
                    copy,
                    insert: format!(
                        "INSERT INTO {ident} ({cols}) SELECT {cols} FROM {stage}{insert_suffix}; COMMIT"
                    ),
                })
            }
            None => None,
        };
        Ok(Plan {
            insert_prefix: sql.insert_prefix(&ident, &idents),
            insert_suffix,
            copy_sql,
            stage,
            fields,
            table: table.to_string(),
        })
    }

    /// Adds missing fields and widens VARCHAR-like fields too short for the batch
    /// (its declared lengths, and its values), per `schema_evolution`.
    async fn evolve(
        &mut self,
        ident: &Ident,
        info: &Arc<TableInfo>,
        schema: &TableSchema,
        rows: &[Row],
        precision: Precision,
    ) -> Result<Arc<TableInfo>, Step> {
        let sql = self.sql;
        let mut stmts = Vec::new();
        let mut new_tags = Vec::new();
        let ours = info.kwpipe_made || self.created.contains(&info.name);
        for (i, f) in schema.fields().enumerate() {
            let tag = schema.is_tag(i);
            match target_field(info, schema, i) {
                None => {
                    if self.options.evolution == SchemaEvolution::Reject {
                        return Err(Step::Reject(format!(
                            "table \"{}\" has no {} \"{}\" (schema_evolution = \"reject\")",
                            info.name,
                            if tag { "tag" } else { "column" },
                            f.name
                        )));
                    }
                    let add = sql.add_field(ident, info.schema.kind, f, tag, precision);
                    stmts.push(add.map_err(|e| {
                        Step::Reject(format!("table \"{}\" cannot get it: {e}", info.name))
                    })?);
                    if tag {
                        new_tags.push(f.name.clone());
                    }
                }
                Some((have, have_tag)) => {
                    if self.options.evolution != SchemaEvolution::Add {
                        continue;
                    }
                    let Some(wanted) = wanted_length(have, f, i, Some(rows).filter(|_| ours))
                    else {
                        continue;
                    };
                    let new = Field {
                        length: wanted,
                        ..have.clone()
                    };
                    match sql.widen_field(ident, have, &new, have_tag) {
                        Ok(stmt) => stmts.push(stmt),
                        // KWDB cannot (VARBYTES, a primary tag, beyond the type's
                        // limit): the rows that fit are written, the others are
                        // refused one by one with the rule.
                        Err(e) => tracing::debug!(table = %info.name, error = %e, "not widened"),
                    }
                }
            }
        }
        if stmts.is_empty() {
            return Ok(info.clone());
        }
        if self.sql.0 == Dialect::Postgres && !new_tags.is_empty() {
            let mut c = PgTagComment::of(&info.schema);
            c.tags.extend(new_tags);
            stmts.push(sql.pg_comment(ident, &c));
        }
        let client = self.client.as_ref().expect("connected");
        for stmt in &stmts {
            match client.batch_execute(stmt).await {
                Ok(()) => tracing::info!(table = %info.name, statement = %stmt, "changed table"),
                // Added meanwhile by someone else: fine.
                Err(e) if e.code() == Some(&SqlState::DUPLICATE_COLUMN) => {}
                Err(e) => {
                    return Err(
                        KwdbError::db(format!("cannot change table \"{}\"", info.name), e).into(),
                    )
                }
            }
        }
        self.catalog.invalidate(&info.name);
        self.copy_statements.remove(&info.name);
        let client = self.client.as_ref().expect("connected");
        self.catalog
            .table(client, &info.name)
            .await?
            .ok_or_else(|| {
                Step::Retry(KwdbError::Schema(format!(
                    "table \"{}\" vanished",
                    info.name
                )))
            })
    }

    /// Writes the rows `idx` of `rows`; returns the rows refused, with reasons.
    async fn write_chunk(
        &mut self,
        plan: &Plan,
        rows: &[Row],
        idx: &[usize],
        stale_is_permanent: bool,
    ) -> Result<Vec<(usize, String)>, Step> {
        let mut rejected = Vec::new();
        if let Some(copy_sql) = &plan.copy_sql {
            let mut good = Vec::with_capacity(idx.len());
            let duplicate = match self
                .copy_committed(plan, copy_sql, rows, idx, &mut good, &mut rejected)
                .await
            {
                Ok(()) => return Ok(rejected),
                Err(e) => match e.class() {
                    ErrorClass::Retryable => return Err(Step::Retry(e)),
                    ErrorClass::Fatal => return Err(Step::Fatal(e)),
                    ErrorClass::StaleSchema if !stale_is_permanent => return Err(Step::Stale(e)),
                    // A replay (duplicate key) or a bad row: the staged COPY or the
                    // INSERT path sorts it out.
                    _ => e.class() == ErrorClass::Duplicate,
                },
            };
            let all_encoded = good.len() + rejected.len() == idx.len();
            if let (true, true, Some(stage)) = (duplicate, all_encoded, &plan.stage) {
                match self.stage_copy(plan, stage, rows, &good).await {
                    Ok(()) => return Ok(rejected),
                    Err(e) if e.class() == ErrorClass::Retryable => return Err(Step::Retry(e)),
                    Err(e) if e.class() == ErrorClass::Fatal => return Err(Step::Fatal(e)),
                    // Something else is wrong with a row: the INSERT path finds it.
                    Err(e) => {
                        tracing::debug!(table = %plan.table, error = %e, "staged COPY failed")
                    }
                }
            }
            if good.len() + rejected.len() < idx.len() {
                // Failed before every row was encoded: the INSERT path takes them all.
                good = idx.to_vec();
                rejected.clear();
            }
            if good.is_empty() {
                return Ok(rejected);
            }
            let good_rows = std::mem::take(&mut good);
            self.insert_bisect(plan, rows, &good_rows, &mut rejected, stale_is_permanent)
                .await?;
            return Ok(rejected);
        }
        self.insert_bisect(plan, rows, idx, &mut rejected, stale_is_permanent)
            .await?;
        Ok(rejected)
    }

    /// COPY into the table in a transaction of its own. tokio-postgres returns from
    /// a COPY at the server's CommandComplete, before the Sync that commits an
    /// implicit transaction: a commit failing after it (a deferred constraint, a
    /// backend stopped by a fast shutdown) rolled back rows already acknowledged. An
    /// explicit COMMIT is answered only once it is done.
    async fn copy_committed(
        &mut self,
        plan: &Plan,
        copy_sql: &str,
        rows: &[Row],
        idx: &[usize],
        good: &mut Vec<usize>,
        rejected: &mut Vec<(usize, String)>,
    ) -> Result<(), KwdbError> {
        let copy = Transaction {
            begin: "BEGIN",
            copy: copy_sql,
            cache: true,
            end: "COMMIT",
            context: "COPY into",
        };
        self.copy_in_transaction(plan, copy, rows, idx, good, rejected)
            .await
    }

    /// COPY into the staging table, then INSERT ... SELECT ... ON CONFLICT DO
    /// NOTHING from it, in one transaction.
    async fn stage_copy(
        &mut self,
        plan: &Plan,
        stage: &Stage,
        rows: &[Row],
        idx: &[usize],
    ) -> Result<(), KwdbError> {
        let copy = Transaction {
            begin: &stage.begin,
            copy: &stage.copy,
            cache: false,
            end: &stage.insert,
            context: "staged COPY into",
        };
        let (mut good, mut rejected) = (Vec::new(), Vec::new());
        self.copy_in_transaction(plan, copy, rows, idx, &mut good, &mut rejected)
            .await
    }

    /// `begin`, the COPY, `end`; on any error the session leaves the transaction.
    async fn copy_in_transaction(
        &mut self,
        plan: &Plan,
        t: Transaction<'_>,
        rows: &[Row],
        idx: &[usize],
        good: &mut Vec<usize>,
        rejected: &mut Vec<(usize, String)>,
    ) -> Result<(), KwdbError> {
        let ctx = || format!("{} \"{}\" failed", t.context, plan.table);
        self.client().await?;
        let result = match self.session().batch_execute(t.begin).await {
            Ok(()) => match self
                .copy(plan, t.copy, t.cache, rows, idx, good, rejected)
                .await
            {
                Ok(()) => self
                    .session()
                    .batch_execute(t.end)
                    .await
                    .map_err(|e| KwdbError::db(ctx(), e)),
                Err(e) => Err(e),
            },
            Err(e) => Err(KwdbError::db(ctx(), e)),
        };
        self.end_failed_transaction(&result).await;
        result
    }

    /// The connected session; every caller connected first.
    fn session(&self) -> &Client {
        self.client.as_ref().expect("connected")
    }

    /// Leaves the session outside a transaction that failed. A session that cannot
    /// roll back is dropped: rows written later inside a transaction that never
    /// commits would be acknowledged and lost.
    async fn end_failed_transaction(&mut self, result: &Result<(), KwdbError>) {
        if result.is_ok() {
            return;
        }
        let rolled_back = match self.client.as_ref() {
            Some(c) => c.batch_execute("ROLLBACK").await.is_ok(),
            None => true,
        };
        if !rolled_back {
            self.client = None;
            self.copy_statements.clear();
        }
    }

    /// Streams the rows in pieces as they are encoded, so the server parses one
    /// piece while the next is being encoded. Fills `good` and `rejected` (rows that
    /// cannot be encoded) for every row, even when the COPY fails. `cache` keeps
    /// the prepared statement for the table.
    #[allow(clippy::too_many_arguments)]
    async fn copy(
        &mut self,
        plan: &Plan,
        copy_sql: &str,
        cache: bool,
        rows: &[Row],
        idx: &[usize],
        good: &mut Vec<usize>,
        rejected: &mut Vec<(usize, String)>,
    ) -> Result<(), KwdbError> {
        const PIECE: usize = 128;
        let ctx = || format!("COPY into \"{}\" failed", plan.table);
        // Inside the caller's transaction: a lost session must fail it, not be
        // replaced by a new one outside it.
        let client = self.client.as_ref().expect("connected");
        let stmt = match self.copy_statements.get(&plan.table).filter(|_| cache) {
            Some(s) => s.clone(),
            None => {
                let s = client
                    .prepare(copy_sql)
                    .await
                    .map_err(|e| KwdbError::db(ctx(), e))?;
                if cache {
                    self.copy_statements.insert(plan.table.clone(), s.clone());
                }
                s
            }
        };
        let sink = client
            .copy_in::<_, Bytes>(&stmt)
            .await
            .map_err(|e| KwdbError::db(ctx(), e))?;
        futures_util::pin_mut!(sink);
        let mut failed = None;
        for piece in idx.chunks(PIECE) {
            let mut buf = Vec::with_capacity(piece.len() * 96);
            for &i in piece {
                let mark = buf.len();
                match encode_copy(self.encoding, plan, &rows[i], &mut buf) {
                    Ok(()) => good.push(i),
                    Err(reason) => {
                        buf.truncate(mark);
                        rejected.push((i, reason));
                    }
                }
            }
            if failed.is_none() && !buf.is_empty() {
                if let Err(e) = sink.send(Bytes::from(buf)).await {
                    failed = Some(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(KwdbError::db(ctx(), e));
        }
        if good.is_empty() {
            // Dropping the sink abandons the COPY; nothing to write.
            return Ok(());
        }
        sink.finish().await.map_err(|e| KwdbError::db(ctx(), e))?;
        Ok(())
    }

    /// Multi-row INSERTs; a statement refused for its data is split in halves until
    /// the refused rows stand alone.
    async fn insert_bisect(
        &mut self,
        plan: &Plan,
        rows: &[Row],
        idx: &[usize],
        rejected: &mut Vec<(usize, String)>,
        stale_is_permanent: bool,
    ) -> Result<(), Step> {
        let mut tuples: Vec<(usize, String)> = Vec::with_capacity(idx.len());
        for &i in idx {
            let mut s = String::with_capacity(64);
            match encode_tuple(self.encoding, plan, &rows[i], &mut s) {
                Ok(()) => tuples.push((i, s)),
                Err(reason) => rejected.push((i, reason)),
            }
        }
        // Statements of at most batch_size rows and max_statement_bytes, in order.
        let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
        let mut start = 0;
        let mut size = plan.insert_prefix.len();
        for (k, (_, t)) in tuples.iter().enumerate() {
            if k > start
                && (size + t.len() + 1 > self.options.max_statement_bytes
                    || k - start >= self.options.batch_size)
            {
                groups.push(start..k);
                start = k;
                size = plan.insert_prefix.len();
            }
            size += t.len() + 1;
        }
        if start < tuples.len() {
            groups.push(start..tuples.len());
        }
        // A stack, left half on top, so rows go in their order.
        groups.reverse();
        let suffix = plan.insert_suffix.as_str();
        while let Some(r) = groups.pop() {
            let mut stmt = String::with_capacity(size + plan.insert_prefix.len() + suffix.len());
            stmt.push_str(&plan.insert_prefix);
            for (k, (_, t)) in tuples[r.clone()].iter().enumerate() {
                if k > 0 {
                    stmt.push(',');
                }
                stmt.push_str(t);
            }
            stmt.push_str(suffix);
            self.client().await?;
            let client = self.client.as_ref().expect("connected");
            let result = client.batch_execute(&stmt).await;
            let Err(e) = result else { continue };
            let e = KwdbError::db(format!("INSERT into \"{}\" failed", plan.table), e);
            match e.class() {
                ErrorClass::Retryable => return Err(Step::Retry(e)),
                ErrorClass::Fatal => return Err(Step::Fatal(e)),
                ErrorClass::StaleSchema if !stale_is_permanent => return Err(Step::Stale(e)),
                _ if r.len() == 1 => {
                    let reason = e.db_message().unwrap_or_else(|| e.to_string());
                    rejected.push((tuples[r.start].0, reason));
                }
                _ => {
                    let mid = r.start + r.len() / 2;
                    groups.push(mid..r.end);
                    groups.push(r.start..mid);
                }
            }
        }
        Ok(())
    }
}

/// Batches waiting for their table to be created, per table in arrival order,
/// with the backoff of their retries (as for an outage).
struct Parked {
    tables: Vec<(String, std::collections::VecDeque<RowBatch>)>,
    backoff: Backoff,
    first: std::time::Duration,
    max: std::time::Duration,
    next_try: tokio::time::Instant,
    tries: u32,
}

impl Parked {
    fn new(options: &SinkOptions) -> Self {
        Parked {
            tables: Vec::new(),
            backoff: Backoff::new(options.retry_backoff, options.retry_backoff_max),
            first: options.retry_backoff,
            max: options.retry_backoff_max,
            next_try: tokio::time::Instant::now(),
            tries: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    fn due(&self) -> bool {
        !self.is_empty() && tokio::time::Instant::now() >= self.next_try
    }

    fn holds(&self, table: &str) -> bool {
        self.tables.iter().any(|(t, _)| t == table)
    }

    fn tables(&self) -> Vec<String> {
        self.tables.iter().map(|(t, _)| t.clone()).collect()
    }

    fn queue(&mut self, table: &str) -> &mut std::collections::VecDeque<RowBatch> {
        if !self.holds(table) {
            if self.tables.is_empty() {
                self.next_try = tokio::time::Instant::now() + self.backoff.next_delay();
            }
            self.tables
                .push((table.to_string(), std::collections::VecDeque::new()));
        }
        let i = self
            .tables
            .iter()
            .position(|(t, _)| t == table)
            .expect("added");
        &mut self.tables[i].1
    }

    /// After the batches of its table already waiting.
    fn push(&mut self, batch: RowBatch) {
        let table = batch.target.table.clone();
        self.queue(&table).push_back(batch);
    }

    /// Before them (it came out first).
    fn push_front(&mut self, batch: RowBatch) {
        let table = batch.target.table.clone();
        self.queue(&table).push_front(batch);
    }

    /// The oldest batch of `table`; a table left with none is no longer parked.
    fn pop(&mut self, table: &str) -> Option<RowBatch> {
        let i = self.tables.iter().position(|(t, _)| t == table)?;
        let b = self.tables[i].1.pop_front();
        if self.tables[i].1.is_empty() {
            self.tables.remove(i);
        }
        b
    }

    /// Every table landed: the next one to go missing starts the backoff afresh.
    fn reset(&mut self) {
        self.backoff = Backoff::new(self.first, self.max);
        self.tries = 0;
    }

    fn wait_more(&mut self) -> std::time::Duration {
        self.tries += 1;
        let delay = self.backoff.next_delay();
        self.next_try = tokio::time::Instant::now() + delay;
        delay
    }

    /// The sink stops: the waiting rows are not written, so not acknowledged;
    /// their source reads them again after a restart.
    fn give_up(&mut self) {
        for (_, q) in self.tables.drain(..) {
            for b in q {
                b.finalizers.finish(EventStatus::Failed);
            }
        }
    }
}

/// Whether two batches can go into one statement: same table, same schema, and
/// the same say on whether the table may be created from them.
fn same_statement(a: &RowBatch, b: &RowBatch) -> bool {
    a.target == b.target
        && a.schema == b.schema
        && a.meta.schema_certainty == b.meta.schema_certainty
}

/// The finest precision among a batch's timestamps: what a created column needs to
/// hold them all (KWDB's default TIMESTAMPTZ keeps only ms).
fn finest_precision(schema: &TableSchema, rows: &[Row]) -> Precision {
    let ts: Vec<usize> = schema
        .fields()
        .enumerate()
        .filter(|(_, f)| f.ty.is_timestamp())
        .map(|(i, _)| i)
        .collect();
    let mut p = Precision::Ms;
    for row in rows {
        for &i in &ts {
            if let Some(Value::Timestamp(t)) = row.get(i) {
                p = p.max(t.precision);
            }
        }
    }
    p
}

fn encode_tuple(enc: Encoding, plan: &Plan, row: &Row, out: &mut String) -> Result<(), String> {
    out.push('(');
    for (k, (i, f)) in plan.fields.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        enc.literal(row.get(*i).unwrap_or(&Value::Null), f, out)?;
    }
    out.push(')');
    Ok(())
}

fn encode_copy(enc: Encoding, plan: &Plan, row: &Row, out: &mut Vec<u8>) -> Result<(), String> {
    for (k, (i, f)) in plan.fields.iter().enumerate() {
        if k > 0 {
            out.push(b'\t');
        }
        enc.copy(row.get(*i).unwrap_or(&Value::Null), f, out)?;
    }
    out.push(b'\n');
    Ok(())
}

/// The table's field that field `i` of a batch lands in: the one of the same name,
/// or — for a leading timestamp the table has no column for, such as line
/// protocol's `time` — the table's own leading timestamp column.
fn target_field<'a>(
    info: &'a TableInfo,
    schema: &TableSchema,
    i: usize,
) -> Option<(&'a Field, bool)> {
    let f = schema.field(i);
    if let Some(found) = info.field(&f.name) {
        return Some(found);
    }
    let first = info.schema.columns.first()?;
    (i == 0 && !schema.is_tag(0) && f.ty.is_timestamp() && first.ty.is_timestamp())
        .then_some((first, false))
}

/// The length `have` (a column or tag of the table) needs for field `i` of the
/// batch, when longer than it is: the batch's declared length for the same type,
/// and for VARCHAR / NVARCHAR the longest value as it will be written (a column
/// typed by its first value, `"str"` making VARCHAR(3), takes a later 10.3).
/// `rows` only for a table kwpipe made ([`TableInfo::kwpipe_made`]).
fn wanted_length(have: &Field, f: &Field, i: usize, rows: Option<&[Row]>) -> Option<u32> {
    if !have.ty.has_length_limit() || have.length == 0 || have.primary {
        return None;
    }
    let mut wanted = if f.ty == have.ty { f.length } else { 0 };
    if matches!(have.ty, DataType::Varchar | DataType::NVarchar) {
        for row in rows.unwrap_or_default() {
            if let Some(n) = row.get(i).and_then(|v| text_len(v, have)) {
                wanted = wanted.max(u32::try_from(n).unwrap_or(u32::MAX));
            }
        }
    }
    (wanted > have.length).then_some(wanted)
}

/// Whether rows of `schema` carry only some of a time-series table's columns
/// (OpenTSDB and InfluxDB lines: one metric or field set per row), which KWDB's
/// `override` and `discard` rules lose.
fn carries_partial_rows(info: &TableInfo, schema: &TableSchema) -> bool {
    info.schema.kind == TableKind::TimeSeries
        && info
            .schema
            .columns
            .iter()
            .skip(1)
            .any(|c| schema.position(&c.name).is_none())
}

/// What a missing table should look like, for the message that asks for it.
fn describe_wanted(schema: &TableSchema) -> String {
    let list = |fs: &[Field]| {
        fs.iter()
            .map(|f| {
                let mut s = format!("{} {}", f.name, f.ty);
                if f.primary {
                    s.push_str(" primary");
                }
                s
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match schema.kind {
        TableKind::TimeSeries => format!(
            "a time-series table with columns ({}) and tags ({})",
            list(&schema.columns),
            list(&schema.tags)
        ),
        TableKind::Relational => {
            format!(
                "a relational table with columns ({})",
                list(&schema.columns)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tsdb(cols: &[&str]) -> TableSchema {
        let mut columns = vec![Field::column("timestamp", DataType::TimestampTz).not_null()];
        columns.extend(cols.iter().map(|c| Field::column(*c, DataType::Float8)));
        TableSchema::new(
            TableKind::TimeSeries,
            columns,
            vec![Field::tag("primary_tag", DataType::Varchar, true).with_length(64)],
        )
    }

    fn info(schema: TableSchema) -> TableInfo {
        TableInfo {
            name: "t".into(),
            schema,
            ts_precision: Precision::Ms,
            kwpipe_made: true,
            key: Vec::new(),
        }
    }

    #[test]
    fn partial_rows_are_those_missing_a_table_column() {
        let table = info(tsdb(&["c1", "c2"]));
        assert!(carries_partial_rows(&table, &tsdb(&["c1"])));
        assert!(!carries_partial_rows(&table, &tsdb(&["c1", "c2"])));
        assert!(!carries_partial_rows(&table, &tsdb(&["c2", "c1", "c3"])));
    }

    #[test]
    fn varchar_lengths_wanted_for_values_of_any_type() {
        let have = Field::column("c1", DataType::Varchar).with_length(3);
        let f = Field::column("c1", DataType::Float8);
        let rows = vec![
            vec![Value::Null, Value::Float8(10.3)],
            vec![Value::Null, Value::Float8(1.0)],
        ];
        assert_eq!(wanted_length(&have, &f, 1, Some(&rows)), Some(4));
        // A table kwpipe did not make: only a declared longer length counts.
        assert_eq!(wanted_length(&have, &f, 1, None), None);
        let declared = Field::column("c1", DataType::Varchar).with_length(10);
        assert_eq!(wanted_length(&have, &declared, 1, None), Some(10));
        // Primary tags never change.
        let primary = Field::tag("p", DataType::Varchar, true).with_length(3);
        assert_eq!(wanted_length(&primary, &f, 1, Some(&rows)), None);
    }

    #[test]
    fn a_missing_table_is_described_for_whoever_creates_it() {
        let d = describe_wanted(&tsdb(&["c1"]));
        assert_eq!(
            d,
            "a time-series table with columns (timestamp TIMESTAMPTZ, c1 FLOAT8) and tags \
             (primary_tag VARCHAR primary)"
        );
    }
}
