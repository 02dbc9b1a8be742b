//! The SQL kwpipe speaks, per dialect. Every statement is built here from checked
//! identifiers and escaped literals, so the golden files pin all of it.
//!
//! `kwdb` follows KWDB's own SQL (time-series databases, TAGS / PRIMARY TAGS, one
//! ALTER per added column or tag, SHOW statements for the catalog). `postgres`
//! maps a time-series table onto a plain table whose primary key is (primary tags,
//! timestamp), with a second index on (timestamp, primary tags) for the
//! `kwdb-poll` source's reads, and records which columns are tags in the table
//! comment.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::error::KwdbError;
use super::ident::Ident;
use super::rules;
use super::server::Dialect;
use super::values::push_string_literal;
use crate::event::{DataType, Field, Precision, TableKind, TableSchema};

/// The kind of database `create_database` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseKind {
    /// `CREATE TS DATABASE` (in postgres: a plain database).
    Ts,
    Relational,
}

/// Prefix of the table comment through which the postgres dialect records tags.
pub const PG_COMMENT_PREFIX: &str = "kwpipe ";

/// What the postgres dialect keeps in a table comment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct PgTagComment {
    pub tags: Vec<String>,
    pub primary_tags: Vec<String>,
}

impl PgTagComment {
    pub fn of(schema: &TableSchema) -> Self {
        PgTagComment {
            tags: schema.tags.iter().map(|t| t.name.clone()).collect(),
            primary_tags: schema.primary_tags().map(|t| t.name.clone()).collect(),
        }
    }

    pub fn parse(comment: &str) -> Option<Self> {
        serde_json::from_str(comment.strip_prefix(PG_COMMENT_PREFIX)?).ok()
    }

    pub fn render(&self) -> String {
        format!(
            "{PG_COMMENT_PREFIX}{}",
            serde_json::to_string(self).expect("plain struct serializes")
        )
    }
}

/// Statements for one dialect. Cheap to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sql(pub Dialect);

impl Sql {
    pub fn ident(&self, name: &str) -> Result<Ident, KwdbError> {
        Ident::new(name, self.0)
    }

    /// KWDB has IF NOT EXISTS; PostgreSQL does not (callers look in pg_database first).
    /// A time-series database name is checked against KWDB's limit in both dialects.
    pub fn create_database(&self, db: &Ident, kind: DatabaseKind) -> Result<String, KwdbError> {
        if kind == DatabaseKind::Ts {
            rules::check_ts_database_name(db.as_str())?;
        }
        Ok(match (self.0, kind) {
            (Dialect::Kwdb, DatabaseKind::Ts) => format!("CREATE TS DATABASE IF NOT EXISTS {db}"),
            (Dialect::Kwdb, DatabaseKind::Relational) => {
                format!("CREATE DATABASE IF NOT EXISTS {db}")
            }
            (Dialect::Postgres, _) => format!("CREATE DATABASE {db}"),
        })
    }

    /// The type of a field as this dialect spells it. `precision` applies to
    /// timestamps: KWDB's TIMESTAMPTZ is ms unless a precision is given;
    /// PostgreSQL's is always us.
    pub fn type_name(&self, f: &Field, precision: Precision) -> String {
        let len = |default: &str| {
            if f.length > 0 {
                format!("{default}({})", f.length)
            } else {
                default.to_string()
            }
        };
        match self.0 {
            Dialect::Kwdb => match f.ty {
                DataType::Char
                | DataType::NChar
                | DataType::Varchar
                | DataType::NVarchar
                | DataType::Varbytes => len(f.ty.name()),
                DataType::Timestamp | DataType::TimestampTz => match precision {
                    Precision::Us => format!("{}(6)", f.ty.name()),
                    Precision::Ns => format!("{}(9)", f.ty.name()),
                    Precision::S | Precision::Ms => f.ty.name().to_string(),
                },
                other => other.name().to_string(),
            },
            Dialect::Postgres => match f.ty {
                DataType::Timestamp => "TIMESTAMP".into(),
                DataType::TimestampTz => "TIMESTAMPTZ".into(),
                DataType::Date => "DATE".into(),
                DataType::Int2 => "SMALLINT".into(),
                DataType::Int4 => "INTEGER".into(),
                DataType::Int8 => "BIGINT".into(),
                DataType::Float4 => "REAL".into(),
                DataType::Float8 => "DOUBLE PRECISION".into(),
                DataType::Bool => "BOOLEAN".into(),
                DataType::Char | DataType::NChar => len("CHAR"),
                DataType::Varchar | DataType::NVarchar => len("VARCHAR"),
                DataType::Varbytes | DataType::Bytes => "BYTEA".into(),
                DataType::Text | DataType::Geometry => "TEXT".into(),
                DataType::Decimal => "NUMERIC".into(),
            },
        }
    }

    /// The statements that create a table (one for kwdb; table and comment for postgres).
    pub fn create_table(
        &self,
        table: &Ident,
        schema: &TableSchema,
        precision: Precision,
    ) -> Result<Vec<String>, KwdbError> {
        let ts = schema.kind == TableKind::TimeSeries;
        // Both dialects: a table made in PostgreSQL could be made the same in KWDB.
        rules::check_table(schema, precision)?;
        let key = relational_key(schema);
        let def = |f: &Field, out: &mut String| -> Result<(), KwdbError> {
            let name = self.ident(&f.name)?;
            let _ = write!(out, "{name} {}", self.type_name(f, precision));
            // A time-series table's timestamp and primary tags are never NULL, nor
            // are the columns of a relational table's key.
            let first = std::ptr::eq(f, &schema.columns[0]);
            if !f.nullable || f.primary || (ts && first) || key.contains(&f.name.as_str()) {
                out.push_str(" NOT NULL");
            }
            Ok(())
        };
        let mut sql = format!("CREATE TABLE {table} (");
        let mut stmts = Vec::new();
        let key_sql = |sql: &mut String| -> Result<(), KwdbError> {
            if !ts && !key.is_empty() {
                let cols: Vec<String> = key
                    .iter()
                    .map(|c| self.ident(c).map(|i| i.to_string()))
                    .collect::<Result<_, _>>()?;
                let _ = write!(sql, ", PRIMARY KEY ({})", cols.join(", "));
            }
            Ok(())
        };
        match self.0 {
            Dialect::Kwdb => {
                for (i, c) in schema.columns.iter().enumerate() {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    def(c, &mut sql)?;
                }
                key_sql(&mut sql)?;
                sql.push(')');
                if ts {
                    sql.push_str(" TAGS (");
                    for (i, t) in schema.tags.iter().enumerate() {
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        def(t, &mut sql)?;
                    }
                    sql.push_str(") PRIMARY TAGS (");
                    let names: Result<Vec<String>, _> = schema
                        .primary_tags()
                        .map(|t| self.ident(&t.name).map(|i| i.to_string()))
                        .collect();
                    sql.push_str(&names?.join(", "));
                    sql.push(')');
                } else if !schema.tags.is_empty() {
                    return Err(KwdbError::Schema(
                        "a relational table cannot have tags".to_string(),
                    ));
                }
                stmts.push(sql);
            }
            Dialect::Postgres => {
                for (i, f) in schema.fields().enumerate() {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    def(f, &mut sql)?;
                }
                if ts {
                    let mut ts_key: Vec<String> = schema
                        .primary_tags()
                        .map(|t| self.ident(&t.name).map(|i| i.to_string()))
                        .collect::<Result<_, _>>()?;
                    ts_key.push(self.ident(&schema.columns[0].name)?.to_string());
                    let _ = write!(sql, ", PRIMARY KEY ({})", ts_key.join(", "));
                }
                key_sql(&mut sql)?;
                sql.push(')');
                stmts.push(sql);
                // The comment marks the table as kwpipe's (and lists its tags).
                stmts.push(self.pg_comment(table, &PgTagComment::of(schema)));
                if ts {
                    stmts.push(self.pg_poll_index(table, schema)?);
                }
            }
        }
        Ok(stmts)
    }

    /// postgres only: the index the `kwdb-poll` source reads a time-series table
    /// by. The primary key is (primary tags, timestamp), the order KWDB keeps a
    /// device's rows in and the one per-device queries want; the source pages in
    /// (timestamp, primary tags) order — the only order in which rows that arrive
    /// later always sort after the resume position — and without an index that
    /// leads with the timestamp every page would sort the whole rest of the table.
    /// Unnamed, so PostgreSQL picks a free name (`<table>_<ts>_<tag>_idx`).
    pub fn pg_poll_index(&self, table: &Ident, schema: &TableSchema) -> Result<String, KwdbError> {
        let mut cols = vec![self
            .ident(
                &schema
                    .columns
                    .first()
                    .ok_or_else(|| KwdbError::Schema("a table needs a column".into()))?
                    .name,
            )?
            .to_string()];
        for t in schema.primary_tags() {
            cols.push(self.ident(&t.name)?.to_string());
        }
        Ok(format!("CREATE INDEX ON {table} ({})", cols.join(", ")))
    }

    pub fn pg_comment(&self, table: &Ident, comment: &PgTagComment) -> String {
        let mut sql = format!("COMMENT ON TABLE {table} IS ");
        push_string_literal(&mut sql, &comment.render());
        sql
    }

    /// Adds a nullable column or tag (added fields are always nullable: existing
    /// rows have no value for them, and KWDB adds no NOT NULL column to a
    /// time-series table). KWDB wants one ALTER per field.
    pub fn add_field(
        &self,
        table: &Ident,
        kind: TableKind,
        f: &Field,
        tag: bool,
        precision: Precision,
    ) -> Result<String, KwdbError> {
        rules::check_add(f, tag, kind)?;
        let name = self.ident(&f.name)?;
        let ty = self.type_name(f, precision);
        Ok(match (self.0, tag) {
            (Dialect::Kwdb, true) => format!("ALTER TABLE {table} ADD TAG {name} {ty}"),
            (Dialect::Kwdb, false) => format!("ALTER TABLE {table} ADD COLUMN {name} {ty}"),
            (Dialect::Postgres, _) => {
                format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {ty}")
            }
        })
    }

    /// Widens `old`, a VARCHAR-like column or tag, to `new`'s length, where KWDB's
    /// ALTER allows it ([`rules::check_widen`]: never VARBYTES, never a primary tag).
    pub fn widen_field(
        &self,
        table: &Ident,
        old: &Field,
        new: &Field,
        tag: bool,
    ) -> Result<String, KwdbError> {
        rules::check_widen(old, new, tag)?;
        let name = self.ident(&new.name)?;
        let ty = self.type_name(new, Precision::Ms);
        Ok(match (self.0, tag) {
            (Dialect::Kwdb, true) => format!("ALTER TABLE {table} ALTER TAG {name} TYPE {ty}"),
            (Dialect::Kwdb, false) | (Dialect::Postgres, _) => {
                format!("ALTER TABLE {table} ALTER COLUMN {name} TYPE {ty}")
            }
        })
    }

    /// What the sink sends on every new session, before anything else: timestamp
    /// text without a zone into TIMESTAMPTZ must mean UTC whatever the server's
    /// or the user's default (the `kwdb-poll` source does the same).
    pub fn session_setup(&self) -> &'static [&'static str] {
        &["SET TIME ZONE 'UTC'"]
    }

    /// `INSERT INTO t (a, b) VALUES ` — the rows follow, then [`Sql::insert_suffix`].
    pub fn insert_prefix(&self, table: &Ident, fields: &[Ident]) -> String {
        let cols: Vec<String> = fields.iter().map(Ident::to_string).collect();
        format!("INSERT INTO {table} ({}) VALUES ", cols.join(", "))
    }

    /// PostgreSQL needs ON CONFLICT DO NOTHING for a replay to be a no-op; KWDB
    /// deduplicates time-series rows on (primary tags, timestamp) by itself. The
    /// sink writes with [`Sql::upsert_suffix`], which also merges; this one is for
    /// callers without a table schema at hand.
    pub fn insert_suffix(&self) -> &'static str {
        match self.0 {
            Dialect::Kwdb => "",
            Dialect::Postgres => " ON CONFLICT DO NOTHING",
        }
    }

    /// What follows the VALUES of an INSERT of `written` fields into `table`, whose
    /// schema is `schema`, so that a replay changes nothing and rows of one key
    /// arriving in parts end up whole:
    ///
    /// - `kwdb`, time-series: nothing; the server deduplicates on (primary tags,
    ///   timestamp) by its `ts.dedup.rule` (see docs/delivery.md).
    /// - `postgres`, time-series: `ON CONFLICT (primary tags, timestamp) DO UPDATE
    ///   SET c = COALESCE(EXCLUDED.c, t.c)`: later non-null values win, the others
    ///   are kept (KWDB's `merge` rule), and writing the same rows again in the same
    ///   order gives the same table.
    /// - relational, both dialects, with a key: `ON CONFLICT (key) DO UPDATE SET c =
    ///   EXCLUDED.c`: the later row wins whole (an upsert), as idempotent under replay.
    /// - without a key, or with nothing but the key written: DO NOTHING (postgres)
    ///   or nothing (kwdb, which has no conflict to name).
    ///
    /// `key` is the table's primary key as the catalog reads it (kwpipe's tables:
    /// primary tags and timestamp, or the relational key; a user's table: whatever
    /// it has, maybe nothing), so ON CONFLICT always names a real constraint.
    pub fn upsert_suffix(
        &self,
        table: &Ident,
        kind: TableKind,
        key: &[String],
        written: &[Ident],
    ) -> Result<String, KwdbError> {
        let ts = kind == TableKind::TimeSeries;
        if ts && self.0 == Dialect::Kwdb {
            return Ok(String::new());
        }
        let nothing = match self.0 {
            Dialect::Kwdb => "",
            Dialect::Postgres => " ON CONFLICT DO NOTHING",
        };
        if key.is_empty() {
            return Ok(nothing.to_string());
        }
        let key_idents: Vec<Ident> = key
            .iter()
            .map(|k| self.ident(k))
            .collect::<Result<_, _>>()?;
        let sets: Vec<String> = written
            .iter()
            .filter(|w| !key_idents.contains(w))
            .map(|w| {
                if ts {
                    format!("{w} = COALESCE(EXCLUDED.{w}, {table}.{w})")
                } else {
                    format!("{w} = EXCLUDED.{w}")
                }
            })
            .collect();
        let cols: Vec<String> = key_idents.iter().map(Ident::to_string).collect();
        Ok(if sets.is_empty() {
            format!(" ON CONFLICT ({}) DO NOTHING", cols.join(", "))
        } else {
            format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                cols.join(", "),
                sets.join(", ")
            )
        })
    }

    pub fn copy_in(&self, table: &Ident, fields: &[Ident]) -> Option<String> {
        self.0.supports_copy().then(|| {
            let cols: Vec<String> = fields.iter().map(Ident::to_string).collect();
            format!("COPY {table} ({}) FROM STDIN", cols.join(", "))
        })
    }

    // ---- catalog -------------------------------------------------------------

    pub fn show_databases(&self) -> &'static str {
        match self.0 {
            Dialect::Kwdb => "SHOW DATABASES",
            Dialect::Postgres => "SELECT datname FROM pg_database WHERE NOT datistemplate",
        }
    }

    /// kwdb only: PostgreSQL's catalog is read with bound parameters instead.
    pub fn show_tables(&self, db: &Ident) -> String {
        format!("SHOW TABLES FROM {db}")
    }

    pub fn show_columns(&self, table: &Ident) -> String {
        format!("SHOW COLUMNS FROM {table}")
    }

    pub fn show_tags(&self, table: &Ident) -> String {
        format!("SHOW TAGS FROM {table}")
    }
}

/// The key of a relational table kwpipe creates: the columns marked primary, or
/// else the columns declared NOT NULL (`"nullable": false` in json_kaiwudb), in
/// schema order. Empty for time-series tables (their key is the primary tags and
/// the timestamp) and for relational tables that declare neither: those have no
/// key, and a replay writes their rows again (the sink warns).
pub fn relational_key(schema: &TableSchema) -> Vec<&str> {
    if schema.kind != TableKind::Relational {
        return Vec::new();
    }
    let marked: Vec<&str> = schema
        .columns
        .iter()
        .filter(|c| c.primary)
        .map(|c| c.name.as_str())
        .collect();
    if !marked.is_empty() {
        return marked;
    }
    schema
        .columns
        .iter()
        .filter(|c| !c.nullable)
        .map(|c| c.name.as_str())
        .collect()
}

/// Parses a KWDB catalog type such as `VARCHAR(64)` or `TIMESTAMPTZ(3)` into the
/// type and its length (for timestamps: the precision).
pub fn parse_kwdb_type(text: &str) -> (DataType, Option<u32>) {
    let (base, arg) = match text.find('(') {
        Some(i) => (
            &text[..i],
            text[i + 1..]
                .trim_end_matches(')')
                .trim()
                .parse::<u32>()
                .ok(),
        ),
        None => (text, None),
    };
    (DataType::parse(base).unwrap_or(DataType::Text), arg)
}

/// Maps `information_schema.columns.data_type` to a kwpipe type. Types kwpipe does
/// not model (json, uuid...) count as text: values are sent as text the server parses.
pub fn parse_pg_type(data_type: &str) -> DataType {
    match data_type {
        "smallint" => DataType::Int2,
        "integer" => DataType::Int4,
        "bigint" => DataType::Int8,
        "real" => DataType::Float4,
        "double precision" => DataType::Float8,
        "boolean" => DataType::Bool,
        "character" => DataType::Char,
        "character varying" => DataType::Varchar,
        "bytea" => DataType::Bytes,
        "numeric" => DataType::Decimal,
        "date" => DataType::Date,
        "timestamp without time zone" => DataType::Timestamp,
        "timestamp with time zone" => DataType::TimestampTz,
        _ => DataType::Text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu() -> TableSchema {
        TableSchema::new(
            TableKind::TimeSeries,
            vec![
                Field::column("k_timestamp", DataType::Timestamp).not_null(),
                Field::column("usage_user", DataType::Int8),
            ],
            vec![
                Field::tag("id", DataType::Int8, true),
                Field::tag("hostname", DataType::Varchar, false).with_length(254),
                Field::tag("region", DataType::Varchar, true).with_length(64),
            ],
        )
    }

    #[test]
    fn postgres_time_series_tables_get_key_comment_and_poll_index() {
        let sql = Sql(Dialect::Postgres);
        let t = sql.ident("cpu_kaiwudb_tb").unwrap();
        let stmts = sql.create_table(&t, &cpu(), Precision::Ms).unwrap();
        assert_eq!(
            stmts,
            vec![
                "CREATE TABLE \"cpu_kaiwudb_tb\" (\"k_timestamp\" TIMESTAMP NOT NULL, \"usage_user\" BIGINT, \"id\" BIGINT NOT NULL, \"hostname\" VARCHAR(254), \"region\" VARCHAR(64) NOT NULL, PRIMARY KEY (\"id\", \"region\", \"k_timestamp\"))".to_string(),
                "COMMENT ON TABLE \"cpu_kaiwudb_tb\" IS 'kwpipe {\"tags\":[\"id\",\"hostname\",\"region\"],\"primary_tags\":[\"id\",\"region\"]}'".to_string(),
                "CREATE INDEX ON \"cpu_kaiwudb_tb\" (\"k_timestamp\", \"id\", \"region\")".to_string(),
            ]
        );
    }

    #[test]
    fn relational_and_kwdb_tables_get_no_poll_index() {
        let rel = TableSchema::new(
            TableKind::Relational,
            vec![Field::column("id", DataType::Int8)],
            Vec::new(),
        );
        let pg = Sql(Dialect::Postgres);
        let t = pg.ident("r").unwrap();
        let stmts = pg.create_table(&t, &rel, Precision::Ms).unwrap();
        assert_eq!(stmts.len(), 2, "table and comment: {stmts:?}");
        assert!(stmts[1].starts_with("COMMENT ON TABLE"));
        let kw = Sql(Dialect::Kwdb);
        let t = kw.ident("cpu").unwrap();
        let stmts = kw.create_table(&t, &cpu(), Precision::Ms).unwrap();
        assert_eq!(stmts.len(), 1);
        assert!(!stmts[0].contains("INDEX"));
    }

    fn idents(sql: &Sql, names: &[&str]) -> Vec<Ident> {
        names.iter().map(|n| sql.ident(n).unwrap()).collect()
    }

    /// Rows of one (primary tags, timestamp) arriving in parts merge per column:
    /// later non-null values win, the others are kept.
    #[test]
    fn postgres_time_series_inserts_merge_per_column() {
        let sql = Sql(Dialect::Postgres);
        let t = sql.ident("cpu").unwrap();
        let w = idents(&sql, &["k_timestamp", "usage_user", "id", "region"]);
        let key: Vec<String> = ["id", "region", "k_timestamp"].map(String::from).to_vec();
        let ts = TableKind::TimeSeries;
        assert_eq!(
            sql.upsert_suffix(&t, ts, &key, &w).unwrap(),
            " ON CONFLICT (\"id\", \"region\", \"k_timestamp\") DO UPDATE SET \
             \"usage_user\" = COALESCE(EXCLUDED.\"usage_user\", \"cpu\".\"usage_user\")"
        );
        // Only the key written: nothing to merge.
        let only_key = idents(&sql, &["k_timestamp", "id", "region"]);
        assert_eq!(
            sql.upsert_suffix(&t, ts, &key, &only_key).unwrap(),
            " ON CONFLICT (\"id\", \"region\", \"k_timestamp\") DO NOTHING"
        );
        // A table without a key (a user's own): nothing to name.
        assert_eq!(
            sql.upsert_suffix(&t, ts, &[], &w).unwrap(),
            " ON CONFLICT DO NOTHING"
        );
        // KWDB deduplicates by its ts.dedup.rule.
        let kw = Sql(Dialect::Kwdb);
        assert_eq!(kw.upsert_suffix(&t, ts, &key, &w).unwrap(), "");
    }

    /// KWDB's relational tables take PRIMARY KEY and ON CONFLICT (they are
    /// CockroachDB's): without them a replay duplicated rows.
    #[test]
    fn relational_tables_get_a_key_and_upsert() {
        let rel = TableSchema::new(
            TableKind::Relational,
            vec![
                Field::column("id", DataType::Int8).not_null(),
                Field::column("name", DataType::Varchar).with_length(32),
            ],
            Vec::new(),
        );
        assert_eq!(relational_key(&rel), vec!["id"]);
        let kw = Sql(Dialect::Kwdb);
        let t = kw.ident("orders").unwrap();
        assert_eq!(
            kw.create_table(&t, &rel, Precision::Ms).unwrap(),
            vec!["CREATE TABLE \"orders\" (\"id\" INT8 NOT NULL, \"name\" VARCHAR(32), PRIMARY KEY (\"id\"))".to_string()]
        );
        // As the catalog reads it back.
        let key = vec!["id".to_string()];
        let w = idents(&kw, &["id", "name"]);
        let rel_kind = TableKind::Relational;
        assert_eq!(
            kw.upsert_suffix(&t, rel_kind, &key, &w).unwrap(),
            " ON CONFLICT (\"id\") DO UPDATE SET \"name\" = EXCLUDED.\"name\""
        );
        // No key read: nothing to name.
        assert_eq!(kw.upsert_suffix(&t, rel_kind, &[], &w).unwrap(), "");
    }

    #[test]
    fn ddl_consults_the_rules() {
        let kw = Sql(Dialect::Kwdb);
        let t = kw.ident("cpu").unwrap();
        let nv = Field::tag("site", DataType::NVarchar, false).with_length(32);
        let e = kw
            .add_field(&t, TableKind::TimeSeries, &nv, true, Precision::Ms)
            .unwrap_err()
            .to_string();
        assert!(e.contains("checkTagType"), "{e}");
        let old = Field::column("b", DataType::Varbytes).with_length(10);
        let e = kw
            .widen_field(&t, &old, &old.clone().with_length(20), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("validateAlterTSType"), "{e}");
        let long = kw.ident(&"d".repeat(64)).unwrap();
        assert!(kw.create_database(&long, DatabaseKind::Ts).is_err());
        assert!(kw.create_database(&long, DatabaseKind::Relational).is_ok());
    }
}
