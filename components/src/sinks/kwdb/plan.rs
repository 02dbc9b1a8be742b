//! Schema planning, decided without the database: given a batch's schema and
//! the table as the catalog knows it, whether a missing table may be created,
//! which columns and tags to add or widen (`schema_evolution`), and how the
//! batch's fields map onto the table with the statements that write them. The
//! worker runs what is decided here ([`super::schema`]).

use super::{AutoCreate, SchemaEvolution, WriteMethod};
use crate::event::{
    DataType, Field, Precision, Row, SchemaCertainty, TableKind, TableSchema, Value,
};
use crate::kwdb::catalog::TableInfo;
use crate::kwdb::dialect::PgTagComment;
use crate::kwdb::values::text_len;
use crate::kwdb::{Dialect, Ident, Sql};

/// How rows of a batch map onto the table.
pub(super) struct Plan {
    /// For each written field: its position in the batch's rows and the table's field.
    pub fields: Vec<(usize, Field)>,
    pub insert_prefix: String,
    pub copy_sql: Option<String>,
    /// With COPY: the way for chunks holding replayed rows.
    pub stage: Option<Stage>,
    /// What follows the VALUES: see [`Sql::upsert_suffix`].
    pub insert_suffix: String,
    pub table: String,
}

/// Rows of a COPY that failed on the primary key (a replay) go into a temporary
/// table dropped at commit, then into the table with ON CONFLICT DO NOTHING: as
/// idempotent as the INSERT path at nearly the speed of COPY.
pub(super) struct Stage {
    pub begin: String,
    pub copy: String,
    pub insert: String,
}

/// Why a missing table is not created from a batch (the rows then wait for
/// someone to create it); None: the sink creates it.
pub(super) fn why_not_create(
    auto_create: AutoCreate,
    certainty: SchemaCertainty,
) -> Option<&'static str> {
    match (auto_create, certainty) {
        (AutoCreate::Never, _) => Some("auto_create = \"never\""),
        (AutoCreate::Declared, SchemaCertainty::Partial) => Some(
            "rows whose schema is guessed (line_influxdb) create tables only \
             with auto_create = \"always\"",
        ),
        _ => None,
    }
}

/// What makes a table fit a batch.
pub(super) struct Evolution<'a> {
    pub sql: Sql,
    pub ident: &'a Ident,
    pub info: &'a TableInfo,
    pub policy: SchemaEvolution,
    /// Whether kwpipe made the table: only then do values widen its VARCHARs.
    pub ours: bool,
    pub precision: Precision,
}

impl Evolution<'_> {
    /// The statements adding the fields `schema` has and the table lacks, and
    /// widening VARCHAR-like fields too short for the batch (its declared
    /// lengths, and its values), per `schema_evolution`. Err: why every row of the
    /// batch is refused.
    pub fn statements(&self, schema: &TableSchema, rows: &[Row]) -> Result<Vec<String>, String> {
        let (sql, ident, info) = (self.sql, self.ident, self.info);
        let mut stmts = Vec::new();
        let mut new_tags = Vec::new();
        for (i, f) in schema.fields().enumerate() {
            let tag = schema.is_tag(i);
            match target_field(info, schema, i) {
                None => {
                    if self.policy == SchemaEvolution::Reject {
                        return Err(format!(
                            "table \"{}\" has no {} \"{}\" (schema_evolution = \"reject\")",
                            info.name,
                            if tag { "tag" } else { "column" },
                            f.name
                        ));
                    }
                    let add = sql.add_field(ident, info.schema.kind, f, tag, self.precision);
                    stmts.push(
                        add.map_err(|e| format!("table \"{}\" cannot get it: {e}", info.name))?,
                    );
                    if tag {
                        new_tags.push(f.name.clone());
                    }
                }
                Some((have, have_tag)) => {
                    if self.policy != SchemaEvolution::Add {
                        continue;
                    }
                    let Some(wanted) = wanted_length(have, f, i, Some(rows).filter(|_| self.ours))
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
        // PostgreSQL has no tags: the table's comment lists them.
        if sql.0 == Dialect::Postgres && !new_tags.is_empty() {
            let mut c = PgTagComment::of(&info.schema);
            c.tags.extend(new_tags);
            stmts.push(sql.pg_comment(ident, &c));
        }
        Ok(stmts)
    }
}

/// How the batch's fields map onto `info`'s, and the statements writing them.
/// Err: why every row of the batch is refused.
pub(super) fn build(
    sql: Sql,
    method: WriteMethod,
    table: &str,
    info: &TableInfo,
    schema: &TableSchema,
) -> Result<Plan, String> {
    let reject = |e: crate::kwdb::KwdbError| e.to_string();
    let ident = &sql.ident(table).map_err(reject)?;
    let mut fields = Vec::with_capacity(schema.width());
    let mut idents = Vec::with_capacity(schema.width());
    for (i, f) in schema.fields().enumerate() {
        let (target, _) = target_field(info, schema, i)
            .ok_or_else(|| format!("table \"{table}\" has no column or tag \"{}\"", f.name))?;
        idents.push(sql.ident(&target.name).map_err(reject)?);
        fields.push((i, target.clone()));
    }
    let copy_sql = match method {
        WriteMethod::Copy => sql.copy_in(ident, &idents),
        WriteMethod::Insert => None,
    };
    let insert_suffix = sql
        .upsert_suffix(ident, info.schema.kind, &info.key, &idents)
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
        insert_prefix: sql.insert_prefix(ident, &idents),
        insert_suffix,
        copy_sql,
        stage,
        fields,
        table: table.to_string(),
    })
}

/// The finest precision among a batch's timestamps: what a created column needs to
/// hold them all (KWDB's default TIMESTAMPTZ keeps only ms).
pub(super) fn finest_precision(schema: &TableSchema, rows: &[Row]) -> Precision {
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
pub(super) fn carries_partial_rows(info: &TableInfo, schema: &TableSchema) -> bool {
    info.schema.kind == TableKind::TimeSeries
        && info
            .schema
            .columns
            .iter()
            .skip(1)
            .any(|c| schema.position(&c.name).is_none())
}

/// What a missing table should look like, for the message that asks for it.
pub(super) fn describe_wanted(schema: &TableSchema) -> String {
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

    #[test]
    fn missing_tables_are_created_per_auto_create_and_certainty() {
        use SchemaCertainty::{Inferred, Partial};
        for certainty in [SchemaCertainty::Declared, Inferred, Partial] {
            assert_eq!(why_not_create(AutoCreate::Always, certainty), None);
            assert!(why_not_create(AutoCreate::Never, certainty).is_some());
        }
        let declared = AutoCreate::Declared;
        assert_eq!(why_not_create(declared, SchemaCertainty::Declared), None);
        assert_eq!(why_not_create(declared, Inferred), None);
        let why = why_not_create(declared, Partial).unwrap();
        assert!(why.contains("auto_create = \"always\""), "{why}");
    }

    fn evolution<'a>(
        sql: Sql,
        ident: &'a Ident,
        table: &'a TableInfo,
        policy: SchemaEvolution,
    ) -> Evolution<'a> {
        Evolution {
            sql,
            ident,
            info: table,
            policy,
            ours: true,
            precision: Precision::Ms,
        }
    }

    #[test]
    fn evolution_adds_what_the_table_lacks_or_refuses_it() {
        let sql = Sql(Dialect::Kwdb);
        let ident = sql.ident("t").unwrap();
        let table = info(tsdb(&["c1"]));
        let mut batch = tsdb(&["c1", "c2"]);
        batch
            .tags
            .push(Field::tag("site", DataType::Varchar, false).with_length(16));
        let add = evolution(sql, &ident, &table, SchemaEvolution::Add);
        assert_eq!(
            add.statements(&batch, &[]).unwrap(),
            [
                r#"ALTER TABLE "t" ADD COLUMN "c2" FLOAT8"#,
                r#"ALTER TABLE "t" ADD TAG "site" VARCHAR(16)"#
            ]
        );
        // Nothing to do for a batch the table already fits.
        assert!(add.statements(&tsdb(&["c1"]), &[]).unwrap().is_empty());
        let reject = evolution(sql, &ident, &table, SchemaEvolution::Reject);
        assert_eq!(
            reject.statements(&batch, &[]).unwrap_err(),
            "table \"t\" has no column \"c2\" (schema_evolution = \"reject\")"
        );
    }

    /// PostgreSQL has no tags: a new one goes into the table's comment too.
    #[test]
    fn postgres_tags_added_are_listed_in_the_comment() {
        let sql = Sql(Dialect::Postgres);
        let ident = sql.ident("t").unwrap();
        let table = info(tsdb(&[]));
        let mut batch = tsdb(&[]);
        batch
            .tags
            .push(Field::tag("site", DataType::Varchar, false));
        let stmts = evolution(sql, &ident, &table, SchemaEvolution::Add)
            .statements(&batch, &[])
            .unwrap();
        assert_eq!(stmts.len(), 2, "{stmts:?}");
        assert!(stmts[0].starts_with(r#"ALTER TABLE "t" ADD COLUMN IF NOT EXISTS "site""#));
        assert!(
            stmts[1].starts_with(r#"COMMENT ON TABLE "t" IS "#),
            "{}",
            stmts[1]
        );
        assert!(stmts[1].contains("site"), "{}", stmts[1]);
    }

    #[test]
    fn values_widen_only_tables_kwpipe_made() {
        let sql = Sql(Dialect::Kwdb);
        let ident = sql.ident("t").unwrap();
        let mut table = tsdb(&[]);
        table
            .columns
            .push(Field::column("name", DataType::Varchar).with_length(3));
        let table = info(table);
        let rows = vec![vec![Value::Null, Value::String("longer".into())]];
        let batch = TableSchema::new(
            TableKind::TimeSeries,
            vec![
                Field::column("timestamp", DataType::TimestampTz),
                Field::column("name", DataType::Varchar).with_length(3),
            ],
            Vec::new(),
        );
        let mut e = evolution(sql, &ident, &table, SchemaEvolution::Add);
        let stmts = e.statements(&batch, &rows).unwrap();
        assert_eq!(stmts.len(), 1, "{stmts:?}");
        // Widened past the longest value (in steps, not to the byte).
        assert!(
            stmts[0].starts_with(r#"ALTER TABLE "t" ALTER COLUMN "name" TYPE VARCHAR("#),
            "{}",
            stmts[0]
        );
        e.ours = false;
        assert!(e.statements(&batch, &rows).unwrap().is_empty());
    }

    #[test]
    fn a_plan_maps_fields_and_builds_the_statements() {
        let table = info(tsdb(&["c1", "c2"]));
        // The batch names fewer fields, in another order.
        let batch = TableSchema::new(
            TableKind::TimeSeries,
            vec![
                Field::column("timestamp", DataType::TimestampTz),
                Field::column("c2", DataType::Float8),
            ],
            vec![Field::tag("primary_tag", DataType::Varchar, true)],
        );
        let kwdb = build(Sql(Dialect::Kwdb), WriteMethod::Insert, "t", &table, &batch).unwrap();
        let mapped: Vec<(usize, &str)> = kwdb
            .fields
            .iter()
            .map(|(i, f)| (*i, f.name.as_str()))
            .collect();
        assert_eq!(mapped, [(0, "timestamp"), (1, "c2"), (2, "primary_tag")]);
        assert_eq!(
            kwdb.insert_prefix,
            r#"INSERT INTO "t" ("timestamp", "c2", "primary_tag") VALUES "#
        );
        assert_eq!(
            kwdb.insert_suffix, "",
            "KWDB's time-series tables dedup themselves"
        );
        assert!(kwdb.copy_sql.is_none() && kwdb.stage.is_none());

        let pg = build(
            Sql(Dialect::Postgres),
            WriteMethod::Copy,
            "t",
            &table,
            &batch,
        )
        .unwrap();
        assert_eq!(
            pg.copy_sql.as_deref(),
            Some(r#"COPY "t" ("timestamp", "c2", "primary_tag") FROM STDIN"#)
        );
        let stage = pg.stage.expect("a staged way for replays");
        assert!(stage
            .begin
            .contains(r#"CREATE TEMP TABLE "kwpipe_stage" (LIKE "t""#));
        assert_eq!(
            stage.copy,
            r#"COPY "kwpipe_stage" ("timestamp", "c2", "primary_tag") FROM STDIN"#
        );
        assert!(
            stage.insert.ends_with("ON CONFLICT DO NOTHING; COMMIT"),
            "{}",
            stage.insert
        );
    }

    #[test]
    fn a_leading_time_lands_in_the_tables_timestamp_column() {
        let table = info(tsdb(&["v"]));
        let batch = TableSchema::new(
            TableKind::TimeSeries,
            vec![
                Field::column("time", DataType::TimestampTz),
                Field::column("v", DataType::Float8),
            ],
            Vec::new(),
        );
        let plan = build(Sql(Dialect::Kwdb), WriteMethod::Insert, "t", &table, &batch).unwrap();
        assert_eq!(plan.fields[0].1.name, "timestamp");
        // Anywhere else, a field the table lacks refuses the batch.
        let batch = TableSchema::new(
            TableKind::TimeSeries,
            vec![
                Field::column("timestamp", DataType::TimestampTz),
                Field::column("w", DataType::Float8),
            ],
            Vec::new(),
        );
        let e = build(Sql(Dialect::Kwdb), WriteMethod::Insert, "t", &table, &batch).err();
        assert_eq!(e.as_deref(), Some("table \"t\" has no column or tag \"w\""));
    }

    #[test]
    fn created_columns_take_the_finest_precision_of_the_batch() {
        use crate::event::Timestamp;
        let schema = tsdb(&[]);
        let ts = |p| vec![Value::Timestamp(Timestamp::new(1, p))];
        assert_eq!(finest_precision(&schema, &[]), Precision::Ms);
        assert_eq!(
            finest_precision(&schema, &[ts(Precision::S)]),
            Precision::Ms
        );
        let rows = [ts(Precision::Us), ts(Precision::Ns), ts(Precision::Ms)];
        assert_eq!(finest_precision(&schema, &rows), Precision::Ns);
    }
}
