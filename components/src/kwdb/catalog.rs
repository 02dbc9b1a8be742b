//! Reading table schemas from the database, and a cache of them.
//!
//! kwdb: `SHOW COLUMNS` (with `is_tag`) and `SHOW TAGS` (with `is_primary`).
//! postgres: `information_schema.columns`, the primary key, and the tag comment
//! kwpipe writes when it creates a table (see [`super::dialect::PgTagComment`]).

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

use super::dialect::Sql;
use super::dialect::{parse_kwdb_type, parse_pg_type, PgTagComment};
use super::error::KwdbError;
use super::server::Dialect;
use crate::event::{DataType, Field, Precision, TableKind, TableSchema};

/// A table as the database has it.
#[derive(Clone, Debug, PartialEq)]
pub struct TableInfo {
    pub name: String,
    pub schema: TableSchema,
    /// What the leading timestamp column keeps (ms when there is none): finer
    /// digits are rounded by the server.
    pub ts_precision: Precision,
    /// Whether kwpipe made the table (postgres: its comment says so; kwdb keeps
    /// no mark, so the sink remembers the tables it created itself). Only such a
    /// table's VARCHAR columns are widened for longer values: a user's own table
    /// keeps its schema, and a value too long for it is a bad record.
    pub kwpipe_made: bool,
    /// The table's primary key columns: what ON CONFLICT may name (empty: none).
    pub key: Vec<String>,
}

impl TableInfo {
    pub fn field(&self, name: &str) -> Option<(&Field, bool)> {
        let i = self.schema.position(name)?;
        Some((self.schema.field(i), self.schema.is_tag(i)))
    }
}

/// Schemas by table name, read on first use and re-read after [`Catalog::invalidate`].
#[derive(Debug)]
pub struct Catalog {
    sql: Sql,
    cache: HashMap<String, Arc<TableInfo>>,
}

impl Catalog {
    pub fn new(dialect: Dialect) -> Self {
        Catalog {
            sql: Sql(dialect),
            cache: HashMap::new(),
        }
    }

    /// The table's schema, or None when it does not exist (absence is not cached).
    pub async fn table(
        &mut self,
        client: &Client,
        name: &str,
    ) -> Result<Option<Arc<TableInfo>>, KwdbError> {
        if let Some(t) = self.cache.get(name) {
            return Ok(Some(t.clone()));
        }
        let info = read_table(client, self.sql.0, name).await?.map(Arc::new);
        if let Some(t) = &info {
            self.cache.insert(name.to_string(), t.clone());
        }
        Ok(info)
    }

    pub fn invalidate(&mut self, name: &str) {
        self.cache.remove(name);
    }

    pub fn clear(&mut self) {
        self.cache.clear();
    }
}

/// Reads one table's schema from the catalog; None when there is no such table.
pub async fn read_table(
    client: &Client,
    dialect: Dialect,
    name: &str,
) -> Result<Option<TableInfo>, KwdbError> {
    match dialect {
        Dialect::Postgres => read_pg(client, name).await,
        Dialect::Kwdb => read_kwdb(client, name).await,
    }
}

/// Names and kinds of the tables of the connected database.
pub async fn list_tables(
    client: &Client,
    dialect: Dialect,
    database: &str,
) -> Result<Vec<(String, TableKind)>, KwdbError> {
    match dialect {
        Dialect::Kwdb => {
            let db = Sql(dialect).ident(database)?;
            let rows = simple_rows(client, &Sql(dialect).show_tables(&db))
                .await
                .map_err(|e| KwdbError::db("cannot list tables", e))?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let name = r.get("table_name")?.to_string();
                    Some((name, kwdb_table_kind(r.get("table_type")?)?))
                })
                .collect())
        }
        Dialect::Postgres => {
            let rows = client
                .query(
                    "SELECT c.table_name::text, \
                     (SELECT f.data_type::text FROM information_schema.columns f \
                      WHERE f.table_schema = c.table_schema AND f.table_name = c.table_name \
                      ORDER BY f.ordinal_position LIMIT 1) \
                     FROM information_schema.tables c \
                     WHERE c.table_schema = current_schema() AND c.table_type = 'BASE TABLE' \
                     ORDER BY 1",
                    &[],
                )
                .await
                .map_err(|e| KwdbError::db("cannot list tables", e))?;
            Ok(rows
                .iter()
                .map(|r| {
                    let first: Option<String> = r.get(1);
                    let kind = if first
                        .as_deref()
                        .map(parse_pg_type)
                        .is_some_and(DataType::is_timestamp)
                    {
                        TableKind::TimeSeries
                    } else {
                        TableKind::Relational
                    };
                    (r.get::<_, String>(0), kind)
                })
                .collect())
        }
    }
}

/// Whether `database` exists (kwdb dialect: `SHOW DATABASES`, whose first
/// column is `database_name`). KWDB accepts a connection to any database name, so
/// this is the only early sign of a misspelled one.
pub async fn kwdb_database_exists(client: &Client, database: &str) -> Result<bool, KwdbError> {
    let rows = simple_rows(client, Sql(Dialect::Kwdb).show_databases())
        .await
        .map_err(|e| KwdbError::db("cannot list databases", e))?;
    // Case-insensitive: the check is there to catch a database that is plainly
    // missing, never to stop a sink over how a name was folded.
    Ok(rows
        .iter()
        .any(|r| r.get(0).is_some_and(|n| n.eq_ignore_ascii_case(database))))
}

/// The kind of a table by KWDB's `table_type` (`information_schema.go`:
/// tableTypeNormalTimeSeries, tableTypeSparse, tableTypeSuper, tableTypeChild,
/// tableTypeBaseTable). Sparse and instance tables hold time-series rows. A
/// template table holds none of its own: reading it reads every instance, which
/// are listed themselves, so it is left out, as are views and system tables.
pub fn kwdb_table_kind(table_type: &str) -> Option<TableKind> {
    match table_type {
        "TIME SERIES TABLE" | "SPARSE TIME SERIES TABLE" | "INSTANCE TABLE" => {
            Some(TableKind::TimeSeries)
        }
        "BASE TABLE" => Some(TableKind::Relational),
        _ => None,
    }
}

async fn read_pg(client: &Client, name: &str) -> Result<Option<TableInfo>, KwdbError> {
    let ctx = || format!("cannot read the schema of table \"{name}\"");
    let cols = client
        .query(
            "SELECT column_name::text, data_type::text, character_maximum_length::int4, \
             is_nullable::text = 'YES', datetime_precision::int4 \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 \
             ORDER BY ordinal_position",
            &[&name],
        )
        .await
        .map_err(|e| KwdbError::db(ctx(), e))?;
    if cols.is_empty() {
        return Ok(None);
    }
    let meta = client
        .query_opt(
            "SELECT obj_description(c.oid, 'pg_class'), \
             ARRAY(SELECT a.attname::text FROM pg_index i \
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                   WHERE i.indrelid = c.oid AND i.indisprimary) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relname = $1",
            &[&name],
        )
        .await
        .map_err(|e| KwdbError::db(ctx(), e))?;
    let (comment, pk): (Option<String>, Vec<String>) = match &meta {
        Some(r) => (r.get(0), r.get(1)),
        None => (None, Vec::new()),
    };
    let fields: Vec<Field> = cols
        .iter()
        .map(|r| {
            let ty = parse_pg_type(r.get::<_, &str>(1));
            let len: Option<i32> = r.get(2);
            Field {
                name: r.get::<_, String>(0),
                ty,
                length: len.map_or(ty.default_length(), |l| l as u32),
                nullable: r.get(3),
                primary: false,
            }
        })
        .collect();
    let ts = fields[0].ty.is_timestamp();
    let ts_precision = if ts {
        precision_of_digits(cols[0].get::<_, Option<i32>>(4).map(|d| d.max(0) as u32))
    } else {
        Precision::Ms
    };
    let marked = comment.as_deref().and_then(PgTagComment::parse);
    let kwpipe_made = marked.is_some();
    let tags = marked.unwrap_or_else(|| {
        // A table kwpipe did not create: its key columns other than the timestamp
        // are the primary tags, and it has no other tags.
        let primary: Vec<String> = pk
            .iter()
            .filter(|c| !(ts && **c == fields[0].name))
            .cloned()
            .collect();
        PgTagComment {
            tags: if ts { primary.clone() } else { Vec::new() },
            primary_tags: if ts { primary } else { Vec::new() },
        }
    });
    let (mut columns, mut tag_fields) = (Vec::new(), Vec::new());
    for mut f in fields {
        if tags.tags.contains(&f.name) {
            f.primary = tags.primary_tags.contains(&f.name);
            tag_fields.push(f);
        } else {
            // A relational table's key columns: what ON CONFLICT names.
            f.primary = !ts && pk.contains(&f.name);
            columns.push(f);
        }
    }
    let kind = if ts {
        TableKind::TimeSeries
    } else {
        TableKind::Relational
    };
    Ok(Some(TableInfo {
        name: name.to_string(),
        schema: TableSchema::new(kind, columns, tag_fields),
        ts_precision,
        kwpipe_made,
        key: pk,
    }))
}

/// postgres only: the plain (non-partial, non-expression) indexes of a table as
/// their column names in index order.
pub async fn pg_index_columns(client: &Client, name: &str) -> Result<Vec<Vec<String>>, KwdbError> {
    let rows = client
        .query(
            "SELECT ARRAY(SELECT a.attname::text \
                          FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n) \
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                          ORDER BY k.n) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
             JOIN pg_namespace ns ON ns.oid = c.relnamespace \
             WHERE ns.nspname = current_schema() AND c.relname = $1 \
             AND i.indpred IS NULL AND i.indexprs IS NULL",
            &[&name],
        )
        .await
        .map_err(|e| KwdbError::db(format!("cannot read the indexes of table \"{name}\""), e))?;
    Ok(rows.iter().map(|r| r.get::<_, Vec<String>>(0)).collect())
}

async fn simple_rows(
    client: &Client,
    sql: &str,
) -> Result<Vec<SimpleQueryRow>, tokio_postgres::Error> {
    Ok(client
        .simple_query(sql)
        .await?
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect())
}

/// The precision that keeps `digits` fraction digits (None: PostgreSQL's us).
fn precision_of_digits(digits: Option<u32>) -> Precision {
    match digits {
        Some(0) => Precision::S,
        Some(1..=3) => Precision::Ms,
        Some(4..=6) | None => Precision::Us,
        Some(_) => Precision::Ns,
    }
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "t" | "TRUE" | "YES" | "yes" | "1"))
}

async fn read_kwdb(client: &Client, name: &str) -> Result<Option<TableInfo>, KwdbError> {
    let sql = Sql(Dialect::Kwdb);
    let table = sql.ident(name)?;
    let ctx = || format!("cannot read the schema of table \"{name}\"");
    let cols = match simple_rows(client, &sql.show_columns(&table)).await {
        Ok(rows) => rows,
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => return Ok(None),
        Err(e) => return Err(KwdbError::db(ctx(), e)),
    };
    let any_tag = cols.iter().any(|r| truthy(r.get("is_tag")));
    let primary: Vec<String> = if any_tag {
        simple_rows(client, &sql.show_tags(&table))
            .await
            .map_err(|e| KwdbError::db(ctx(), e))?
            .iter()
            .filter(|r| truthy(r.get("is_primary")))
            .filter_map(|r| r.get("tag").map(str::to_string))
            .collect()
    } else {
        Vec::new()
    };
    let (mut columns, mut tags) = (Vec::new(), Vec::new());
    let mut ts_precision = Precision::Ms;
    for r in &cols {
        let Some(col) = r.get("column_name") else {
            continue;
        };
        if truthy(r.get("is_hidden")) {
            continue;
        }
        let (ty, arg) = parse_kwdb_type(r.get("data_type").unwrap_or("STRING"));
        if columns.is_empty() && ty.is_timestamp() {
            // KWDB's TIMESTAMPTZ without a precision keeps milliseconds.
            ts_precision = precision_of_digits(Some(arg.unwrap_or(3)));
        }
        let is_key = r.get("indices").is_some_and(|i| {
            i.split(|c: char| !c.is_alphanumeric())
                .any(|x| x == "primary")
        });
        let f = Field {
            name: col.to_string(),
            ty,
            length: if ty.has_length_limit() {
                arg.unwrap_or(ty.default_length())
            } else {
                ty.default_length()
            },
            nullable: truthy(r.get("is_nullable")),
            primary: primary.iter().any(|p| p == col) || (!any_tag && is_key),
        };
        if truthy(r.get("is_tag")) {
            tags.push(f);
        } else {
            columns.push(f);
        }
    }
    if columns.is_empty() {
        return Ok(None);
    }
    // Time-series: (primary tags, timestamp), deduplicated by the server itself;
    // relational: the columns SHOW COLUMNS lists in the primary index.
    let key: Vec<String> = if any_tag {
        primary.clone()
    } else {
        columns
            .iter()
            .filter(|c| c.primary)
            .map(|c| c.name.clone())
            .collect()
    };
    let kind = if any_tag {
        TableKind::TimeSeries
    } else {
        TableKind::Relational
    };
    Ok(Some(TableInfo {
        name: name.to_string(),
        schema: TableSchema::new(kind, columns, tags),
        ts_precision,
        kwpipe_made: false,
        key,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kwdb_table_kinds() {
        assert_eq!(
            kwdb_table_kind("TIME SERIES TABLE"),
            Some(TableKind::TimeSeries)
        );
        assert_eq!(
            kwdb_table_kind("SPARSE TIME SERIES TABLE"),
            Some(TableKind::TimeSeries)
        );
        assert_eq!(
            kwdb_table_kind("INSTANCE TABLE"),
            Some(TableKind::TimeSeries)
        );
        assert_eq!(kwdb_table_kind("TEMPLATE TABLE"), None);
        assert_eq!(kwdb_table_kind("BASE TABLE"), Some(TableKind::Relational));
        assert_eq!(kwdb_table_kind("VIEW"), None);
        assert_eq!(kwdb_table_kind("SYSTEM VIEW"), None);
    }

    #[test]
    fn precisions_by_digits() {
        assert_eq!(precision_of_digits(Some(3)), Precision::Ms);
        assert_eq!(precision_of_digits(Some(6)), Precision::Us);
        assert_eq!(precision_of_digits(Some(9)), Precision::Ns);
        assert_eq!(precision_of_digits(None), Precision::Us);
    }
}
