//! Reading a table's schema (and, on PostgreSQL, whether an index serves the
//! read order) for its poller.

use std::sync::Arc;

use super::super::query::TableQuery;
use super::Poller;
use crate::event::{TableKind, TableSchema};
use crate::kwdb::{catalog, Dialect, KwdbError};

impl Poller {
    pub(super) async fn read_schema(
        &self,
    ) -> Result<Option<(Arc<TableSchema>, TableQuery)>, KwdbError> {
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
    pub(super) async fn check_index(&self, q: &TableQuery) {
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
}
