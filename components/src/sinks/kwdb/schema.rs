//! Schema evolution against the database: creates the database and missing
//! tables, runs the changes [`super::plan`] decided, and keeps what one worker
//! knows of the tables (the catalog cache, the tables it made, the warnings
//! given).

use std::collections::HashSet;
use std::sync::Arc;

use tokio_postgres::error::SqlState;

use super::plan::{self, Evolution, Plan};
use super::session::Session;
use super::step::Step;
use super::SinkOptions;
use crate::api::Backoff;
use crate::event::{Metadata, Precision, Row, TableKind, TableSchema};
use crate::kwdb::catalog::{Catalog, TableInfo};
use crate::kwdb::dedup::{partial_rows_note, DedupRule};
use crate::kwdb::dialect::relational_key;
use crate::kwdb::{ConnectParams, DatabaseKind, Dialect, Ident, KwdbError, Sql};

/// Creates `database` when missing, retrying as a write does.
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Warning {
    Rounded,
    PartialRows,
    NoKey,
}

/// What one worker knows of its tables.
pub(super) struct Tables {
    sql: Sql,
    options: Arc<SinkOptions>,
    /// The sink's database, for messages.
    database: String,
    catalog: Catalog,
    /// The server's `ts.dedup.rule` (kwdb dialect), read at start.
    dedup: Option<DedupRule>,
    /// Tables this worker created (KWDB keeps no mark of who made a table).
    created: HashSet<String>,
    /// Tables already warned about (timestamps rounded, partial rows under
    /// `override`, no key), so each warning comes once per table.
    warned: HashSet<(String, Warning)>,
}

impl Tables {
    pub fn new(
        params: &ConnectParams,
        options: Arc<SinkOptions>,
        dedup: Option<DedupRule>,
    ) -> Self {
        Tables {
            sql: Sql(params.dialect),
            options,
            database: params.database.clone().unwrap_or_default(),
            catalog: Catalog::new(params.dialect),
            dedup,
            created: HashSet::new(),
            warned: HashSet::new(),
        }
    }

    /// The table is not what the cache says (or may not be): read it again.
    pub fn invalidate(&mut self, table: &str) {
        self.catalog.invalidate(table);
    }

    /// Makes sure the table exists with every field of `schema`, and maps them.
    pub async fn plan(
        &mut self,
        session: &mut Session,
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
        let precision = plan::finest_precision(schema, rows);
        let client = session.connect().await?;
        let info = match self.catalog.table(client, table).await? {
            Some(info) => info,
            None => {
                self.create(session, &ident, table, schema, meta, precision)
                    .await?
            }
        };
        let info = self
            .evolve(session, &ident, &info, schema, rows, precision)
            .await?;
        self.warn_about(&info, schema, precision);
        plan::build(sql, self.options.method, table, &info, schema).map_err(Step::Reject)
    }

    /// Creates a missing table from the batch's schema, if it may.
    async fn create(
        &mut self,
        session: &mut Session,
        ident: &Ident,
        table: &str,
        schema: &TableSchema,
        meta: &Metadata,
        precision: Precision,
    ) -> Result<Arc<TableInfo>, Step> {
        // Not a bad record: the table is missing from the environment. The rows
        // wait (as for an outage) until someone creates it.
        if let Some(why) = plan::why_not_create(self.options.auto_create, meta.schema_certainty) {
            return Err(Step::Retry(KwdbError::MissingTable {
                table: table.to_string(),
                database: self.database.clone(),
                wanted: plan::describe_wanted(schema),
                why,
            }));
        }
        let stmts = self
            .sql
            .create_table(ident, schema, precision)
            .map_err(|e| Step::Reject(e.to_string()))?;
        let client = session.client();
        // One simple query: PostgreSQL runs it as one transaction, so a table
        // never exists without its tag comment.
        let created = client.batch_execute(&stmts.join("; ")).await;
        self.catalog.invalidate(table);
        let mut no_key = false;
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
                    return Err(KwdbError::db(format!("cannot create table \"{table}\""), e).into())
                }
            },
        }
        let info = self.catalog.table(client, table).await?.ok_or_else(|| {
            Step::Retry(KwdbError::Schema(format!(
                "table \"{table}\" vanished after creation"
            )))
        })?;
        if no_key {
            self.warn_once(
                table,
                Warning::NoKey,
                "relational table created without a key (no column is primary or NOT NULL): \
                 a replay writes its rows again",
            );
        }
        Ok(info)
    }

    /// Runs the changes that make the table fit the batch ([`Evolution`]).
    async fn evolve(
        &mut self,
        session: &mut Session,
        ident: &Ident,
        info: &Arc<TableInfo>,
        schema: &TableSchema,
        rows: &[Row],
        precision: Precision,
    ) -> Result<Arc<TableInfo>, Step> {
        let evolution = Evolution {
            sql: self.sql,
            ident,
            info,
            policy: self.options.evolution,
            ours: info.kwpipe_made || self.created.contains(&info.name),
            precision,
        };
        let stmts = evolution.statements(schema, rows).map_err(Step::Reject)?;
        if stmts.is_empty() {
            return Ok(info.clone());
        }
        let client = session.client();
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
        session.forget(&info.name);
        let client = session.client();
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
        let partial = plan::carries_partial_rows(info, schema);
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
}
