//! KWDB's rules for what kwpipe may send, in one place.
//!
//! No KWDB server runs where kwpipe is tested, so the rules are read from KWDB's
//! own source (github.com/KWDB/KWDB, Go SQL layer under `kwbase/pkg/sql`) and
//! documentation (github.com/KWDB/docs), and each [`Rule`] names where. DDL
//! planning ([`super::Sql::create_table`], [`super::Sql::add_field`],
//! [`super::Sql::widen_field`]), names ([`super::Ident`]), value encoding
//! ([`super::values`]) and the sink's schema evolution ask these functions; a
//! schema that breaks a rule is refused before any statement is sent, with the
//! rule and its source in the message ([`KwdbError::Rule`]).
//!
//! The table rules apply in both dialects: a table kwpipe makes in PostgreSQL
//! could be made the same way in KWDB, so tests against PostgreSQL stay true
//! for KWDB. Rules about KWDB's own SQL text (quotes in names) apply to the
//! `kwdb` dialect only.

use super::error::KwdbError;
pub use super::error::Rule;
use crate::event::{DataType, Field, Precision, TableKind, TableSchema};

macro_rules! rule {
    ($name:ident, $text:expr, $source:expr) => {
        pub static $name: Rule = Rule {
            text: $text,
            source: $source,
        };
    };
}

rule!(
    TS_COLUMN_COUNT,
    "a time-series table has 2 to 4096 columns",
    "kwbase/pkg/sql/create_table.go buildTSTableDesc, MaxTSDataColumns"
);
rule!(
    TS_FIRST_COLUMN,
    "the first column of a time-series table is a TIMESTAMP or TIMESTAMPTZ",
    "kwbase/pkg/sql/create_table.go checkAndMakeTSColDesc"
);
rule!(
    TS_COLUMN_TYPES,
    "time-series columns cannot be DECIMAL, BYTES, TEXT or DATE",
    "kwbase/pkg/sql/create_table.go checkTSColValidity; docs en/sql-reference/data-type/data-type-ts-db.md"
);
rule!(
    TS_TAG_COUNT,
    "a time-series table has at most 128 tags",
    "kwbase/pkg/sql/sqlbase/structured.go MaxTagNum"
);
rule!(
    TAG_TYPES,
    "tags are BOOL, INT2/4/8, FLOAT4/8, CHAR, NCHAR, VARCHAR or VARBYTES (never NVARCHAR, TIMESTAMP, TIMESTAMPTZ or GEOMETRY)",
    "kwbase/pkg/sql/create_table.go checkTagType; docs en/sql-reference/ddl/ts-db/ts-label.md"
);
rule!(
    PRIMARY_TAG_COUNT,
    "a time-series table has 1 to 4 primary tags",
    "kwbase/pkg/sql/create_table.go buildTSTableDesc, sqlbase.MaxPrimaryTagNum"
);
rule!(
    PRIMARY_TAG_TYPES,
    "a primary tag is NOT NULL, not FLOAT4/FLOAT8/VARBYTES, and a VARCHAR primary tag is at most 128 bytes",
    "kwbase/pkg/sql/create_table.go checkPrimaryTag, MaxPrimaryTagWidth"
);
rule!(
    PRIMARY_TAGS_FIXED,
    "primary tags cannot be added or changed after the table is created",
    "kwbase/pkg/sql/alter_table.go (ADD TAG adds ordinary tags only)"
);
rule!(
    LENGTHS,
    "CHAR is shorter than 1024, NCHAR at most 254, VARCHAR, NVARCHAR and VARBYTES at most 65534",
    "kwbase/pkg/sql/create_table.go MaxFixedLen, MaxNCharLen; kwbase/pkg/sql/sqlbase/table.go TSMaxVariableLen"
);
rule!(
    TS_TIMESTAMP_PRECISION,
    "time-series timestamps have precision 3, 6 or 9",
    "kwbase/pkg/sql/sqlbase/table.go ValidateColumnDefType"
);
rule!(
    RELATIONAL_TIMESTAMP_PRECISION,
    "relational timestamps have precision 0 to 6",
    "kwbase/pkg/sql/sqlbase/table.go ValidateColumnDefType"
);
rule!(
    RELATIONAL_NO_TAGS,
    "relational tables have no tags",
    "docs en/sql-reference/ddl/relational-db/relational-table.md"
);
rule!(
    NAME_LENGTH,
    "table, column and tag names are at most 128 bytes",
    "kwbase/pkg/sql/create_table.go MaxTSTableNameLength, MaxTagNameLength; kwbase/pkg/sql/sqlbase/table.go MaxTSColumnNameLength"
);
rule!(
    TS_DATABASE_NAME_LENGTH,
    "a time-series database name is at most 63 bytes",
    "kwbase/pkg/sql/create_database.go MaxTSDBNameLength"
);
rule!(
    NAME_QUOTE,
    "names cannot contain ' (SHOW TAGS builds a '<name>' string literal from the table name)",
    "kwbase/pkg/sql/delegate/show_attributes.go"
);
rule!(
    ALTER_TYPE,
    "ALTER ... TYPE keeps a column's type family and never shortens it; VARBYTES columns and tags cannot be altered at all",
    "kwbase/pkg/sql/alter_table.go validateAlterTSType, validateTextType"
);
rule!(
    ADD_NULLABLE,
    "columns added to a time-series table are nullable",
    "kwbase/pkg/sql/alter_table.go (add NOT-NULL column ... is not supported)"
);
rule!(
    FINITE_FLOATS,
    "FLOAT4/FLOAT8 columns take finite numbers only (NaN and Infinity are refused with SQLSTATE 42804)",
    "kwbase/pkg/sql/insert_direct.go convertFloat"
);
rule!(
    VARBYTES_LENGTH,
    "a VARBYTES value is at most the column's length in bytes",
    "kwbase/pkg/sql/insert_direct.go (the width check on the raw value)"
);

/// The longest CHAR, exclusive (`MaxFixedLen`).
pub const CHAR_MAX_EXCLUSIVE: u32 = 1024;
/// The longest NCHAR (`MaxNCharLen`).
pub const NCHAR_MAX: u32 = 254;
/// The longest VARCHAR, NVARCHAR, VARBYTES (`TSMaxVariableLen`).
pub const VARIABLE_MAX: u32 = 65_534;
/// The longest VARCHAR primary tag (`MaxPrimaryTagWidth`).
pub const PRIMARY_VARCHAR_MAX: u32 = 128;
pub const TS_MIN_COLUMNS: usize = 2;
pub const TS_MAX_COLUMNS: usize = 4096;
pub const MAX_TAGS: usize = 128;
pub const MAX_PRIMARY_TAGS: usize = 4;
pub const NAME_MAX: usize = 128;
pub const TS_DATABASE_NAME_MAX: usize = 63;

fn broken(rule: &'static Rule, detail: String) -> KwdbError {
    KwdbError::Rule { detail, rule }
}

/// Whether `ty` may be a tag's type.
pub fn tag_type_allowed(ty: DataType) -> bool {
    use DataType::*;
    matches!(
        ty,
        Bool | Int2 | Int4 | Int8 | Float4 | Float8 | Char | NChar | Varchar | Varbytes
    )
}

/// Whether `ty` may be a time-series column's type.
pub fn ts_column_type_allowed(ty: DataType) -> bool {
    !matches!(
        ty,
        DataType::Decimal | DataType::Bytes | DataType::Text | DataType::Date
    )
}

/// The longest length `ty` takes, if it has one.
pub fn max_length(ty: DataType) -> Option<u32> {
    match ty {
        DataType::Char => Some(CHAR_MAX_EXCLUSIVE - 1),
        DataType::NChar => Some(NCHAR_MAX),
        DataType::Varchar | DataType::NVarchar | DataType::Varbytes => Some(VARIABLE_MAX),
        _ => None,
    }
}

fn what(tag: bool) -> &'static str {
    if tag {
        "tag"
    } else {
        "column"
    }
}

/// A length within its type's limit.
pub fn check_length(f: &Field, tag: bool) -> Result<(), KwdbError> {
    match max_length(f.ty) {
        Some(max) if f.length > max => Err(broken(
            &LENGTHS,
            format!(
                "{} \"{}\" is {}({}); at most {}({max})",
                what(tag),
                f.name,
                f.ty,
                f.length,
                f.ty
            ),
        )),
        _ => Ok(()),
    }
}

/// A tag as KWDB takes it in CREATE TABLE or ADD TAG.
pub fn check_tag(f: &Field) -> Result<(), KwdbError> {
    if !tag_type_allowed(f.ty) {
        return Err(broken(
            &TAG_TYPES,
            format!("tag \"{}\" cannot be {}", f.name, f.ty),
        ));
    }
    check_length(f, true)
}

/// A time-series column as KWDB takes it in CREATE TABLE or ADD COLUMN.
pub fn check_ts_column(f: &Field) -> Result<(), KwdbError> {
    if !ts_column_type_allowed(f.ty) {
        return Err(broken(
            &TS_COLUMN_TYPES,
            format!("column \"{}\" cannot be {}", f.name, f.ty),
        ));
    }
    check_length(f, false)
}

fn check_primary(p: &Field) -> Result<(), KwdbError> {
    let bad = |detail: String| Err(broken(&PRIMARY_TAG_TYPES, detail));
    if p.ty.is_float() || p.ty == DataType::Varbytes {
        return bad(format!("primary tag \"{}\" cannot be {}", p.name, p.ty));
    }
    if p.ty == DataType::Varchar && p.length > PRIMARY_VARCHAR_MAX {
        return bad(format!(
            "VARCHAR primary tag \"{}\" is {} bytes long; at most {PRIMARY_VARCHAR_MAX}",
            p.name, p.length
        ));
    }
    Ok(())
}

/// A table kwpipe is about to create, with timestamps of `precision`.
pub fn check_table(schema: &TableSchema, precision: Precision) -> Result<(), KwdbError> {
    match schema.kind {
        TableKind::TimeSeries => check_ts_table(schema),
        TableKind::Relational => {
            if !schema.tags.is_empty() {
                return Err(broken(
                    &RELATIONAL_NO_TAGS,
                    format!("{} tags given", schema.tags.len()),
                ));
            }
            let ts = schema.columns.iter().find(|c| c.ty.is_timestamp());
            match ts {
                Some(c) if precision == Precision::Ns => Err(broken(
                    &RELATIONAL_TIMESTAMP_PRECISION,
                    format!(
                        "column \"{}\" would need nanoseconds (precision 9) to keep the rows' timestamps",
                        c.name
                    ),
                )),
                _ => Ok(()),
            }
        }
    }
}

fn check_ts_table(schema: &TableSchema) -> Result<(), KwdbError> {
    let n = schema.columns.len();
    if !(TS_MIN_COLUMNS..=TS_MAX_COLUMNS).contains(&n) {
        return Err(broken(
            &TS_COLUMN_COUNT,
            format!("the table has {n} column(s)"),
        ));
    }
    let first = &schema.columns[0];
    if !first.ty.is_timestamp() {
        return Err(broken(
            &TS_FIRST_COLUMN,
            format!("the first column \"{}\" is {}", first.name, first.ty),
        ));
    }
    for c in &schema.columns {
        check_ts_column(c)?;
    }
    if schema.tags.len() > MAX_TAGS {
        return Err(broken(
            &TS_TAG_COUNT,
            format!("{} tags given", schema.tags.len()),
        ));
    }
    for t in &schema.tags {
        check_tag(t)?;
    }
    let primary: Vec<&Field> = schema.primary_tags().collect();
    if primary.is_empty() || primary.len() > MAX_PRIMARY_TAGS {
        return Err(broken(
            &PRIMARY_TAG_COUNT,
            format!("the table has {} primary tag(s)", primary.len()),
        ));
    }
    primary.into_iter().try_for_each(check_primary)
}

/// A field ALTER TABLE ... ADD COLUMN / ADD TAG adds to a table of `kind`.
pub fn check_add(f: &Field, tag: bool, kind: TableKind) -> Result<(), KwdbError> {
    if f.primary {
        return Err(broken(
            &PRIMARY_TAGS_FIXED,
            format!("the table has no primary tag \"{}\"", f.name),
        ));
    }
    match (kind, tag) {
        (TableKind::TimeSeries, true) => check_tag(f),
        (TableKind::TimeSeries, false) => check_ts_column(f),
        (TableKind::Relational, true) => Err(broken(
            &RELATIONAL_NO_TAGS,
            format!("tag \"{}\" given", f.name),
        )),
        (TableKind::Relational, false) => Ok(()),
    }
}

/// ALTER ... TYPE from `old` to `new` (the same type, longer).
pub fn check_widen(old: &Field, new: &Field, tag: bool) -> Result<(), KwdbError> {
    let bad = |detail: String| Err(broken(&ALTER_TYPE, detail));
    if old.ty == DataType::Varbytes || new.ty == DataType::Varbytes {
        return bad(format!(
            "{} \"{}\" is VARBYTES({}) and cannot hold {} bytes",
            what(tag),
            old.name,
            old.length,
            new.length
        ));
    }
    if old.primary {
        return Err(broken(
            &PRIMARY_TAGS_FIXED,
            format!("primary tag \"{}\" cannot be altered", old.name),
        ));
    }
    if old.ty != new.ty || new.length < old.length {
        return bad(format!(
            "{} \"{}\" from {}({}) to {}({})",
            what(tag),
            old.name,
            old.ty,
            old.length,
            new.ty,
            new.length
        ));
    }
    if tag {
        check_tag(new)
    } else {
        check_length(new, false)
    }
}

/// A name kwpipe writes into KWDB's SQL (the `kwdb` dialect).
pub fn check_kwdb_name(name: &str) -> Result<(), KwdbError> {
    if name.len() > NAME_MAX {
        return Err(broken(
            &NAME_LENGTH,
            format!(
                "\"{}...\" is {} bytes long",
                &name[..32.min(name.len())],
                name.len()
            ),
        ));
    }
    if name.contains('\'') {
        return Err(broken(&NAME_QUOTE, format!("name \"{name}\" contains '")));
    }
    Ok(())
}

/// The name of a time-series database kwpipe creates.
pub fn check_ts_database_name(name: &str) -> Result<(), KwdbError> {
    if name.len() > TS_DATABASE_NAME_MAX {
        return Err(broken(
            &TS_DATABASE_NAME_LENGTH,
            format!("database \"{name}\" is {} bytes long", name.len()),
        ));
    }
    Ok(())
}

/// A float value for a FLOAT4/FLOAT8 column.
pub fn check_finite(f: f64, column: &str) -> Result<(), String> {
    if f.is_finite() {
        return Ok(());
    }
    let shown = if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    };
    Err(format!(
        "{shown} does not fit column \"{column}\" (KWDB: {}; {})",
        FINITE_FLOATS.text, FINITE_FLOATS.source
    ))
}

/// A VARBYTES value of `len` bytes for `f`.
pub fn check_varbytes_len(len: usize, f: &Field) -> Result<(), String> {
    if f.ty == DataType::Varbytes && f.length > 0 && len > f.length as usize {
        return Err(format!(
            "{len} bytes do not fit VARBYTES({}) column \"{}\" (KWDB: {}; {}; and {}: the column cannot be widened)",
            f.length, f.name, VARBYTES_LENGTH.text, VARBYTES_LENGTH.source, ALTER_TYPE.source
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(columns: Vec<Field>, tags: Vec<Field>) -> TableSchema {
        TableSchema::new(TableKind::TimeSeries, columns, tags)
    }

    fn rule_of(r: Result<(), KwdbError>) -> &'static Rule {
        match r {
            Err(KwdbError::Rule { rule, .. }) => rule,
            other => panic!("expected a broken rule, got {other:?}"),
        }
    }

    fn k() -> Field {
        Field::column("ts", DataType::TimestampTz).not_null()
    }
    fn v() -> Field {
        Field::column("v", DataType::Float8)
    }
    fn p() -> Field {
        Field::tag("dev", DataType::Varchar, true).with_length(64)
    }

    #[test]
    fn each_limit_of_a_time_series_table() {
        assert!(check_table(&ts(vec![k(), v()], vec![p()]), Precision::Ms).is_ok());
        let r = |s: TableSchema| rule_of(check_table(&s, Precision::Ms));
        assert_eq!(r(ts(vec![k()], vec![p()])), &TS_COLUMN_COUNT);
        assert_eq!(r(ts(vec![v(), k()], vec![p()])), &TS_FIRST_COLUMN);
        for ty in [
            DataType::Date,
            DataType::Bytes,
            DataType::Decimal,
            DataType::Text,
        ] {
            assert_eq!(
                r(ts(vec![k(), Field::column("c", ty)], vec![p()])),
                &TS_COLUMN_TYPES
            );
        }
        for ty in [
            DataType::NVarchar,
            DataType::Timestamp,
            DataType::TimestampTz,
            DataType::Geometry,
        ] {
            assert_eq!(
                r(ts(vec![k(), v()], vec![p(), Field::tag("t", ty, false)])),
                &TAG_TYPES,
                "{ty}"
            );
        }
        assert_eq!(r(ts(vec![k(), v()], vec![])), &PRIMARY_TAG_COUNT);
        let five = (0..5)
            .map(|i| Field::tag(format!("p{i}"), DataType::Int8, true))
            .collect();
        assert_eq!(r(ts(vec![k(), v()], five)), &PRIMARY_TAG_COUNT);
        assert_eq!(
            r(ts(vec![k(), v()], vec![p().with_length(129)])),
            &PRIMARY_TAG_TYPES
        );
        assert_eq!(
            r(ts(
                vec![k(), v()],
                vec![Field::tag("f", DataType::Float8, true)]
            )),
            &PRIMARY_TAG_TYPES
        );
        assert_eq!(
            r(ts(
                vec![k(), Field::column("n", DataType::NChar).with_length(255)],
                vec![p()]
            )),
            &LENGTHS
        );
        assert_eq!(
            r(ts(
                vec![
                    k(),
                    Field::column("s", DataType::Varchar).with_length(65_535)
                ],
                vec![p()]
            )),
            &LENGTHS
        );
        let tags = (0..129)
            .map(|i| Field::tag(format!("t{i}"), DataType::Int4, i == 0))
            .collect();
        assert_eq!(r(ts(vec![k(), v()], tags)), &TS_TAG_COUNT);
    }

    #[test]
    fn relational_tables_keep_six_digits_and_no_tags() {
        let rel = TableSchema::new(
            TableKind::Relational,
            vec![Field::column("at", DataType::Timestamp)],
            vec![],
        );
        assert!(check_table(&rel, Precision::Us).is_ok());
        assert_eq!(
            rule_of(check_table(&rel, Precision::Ns)),
            &RELATIONAL_TIMESTAMP_PRECISION
        );
    }

    #[test]
    fn alter_rules() {
        let old = Field::column("b", DataType::Varbytes).with_length(10);
        let new = old.clone().with_length(20);
        assert_eq!(rule_of(check_widen(&old, &new, false)), &ALTER_TYPE);
        let s = Field::column("s", DataType::Varchar).with_length(10);
        assert!(check_widen(&s, &s.clone().with_length(20), false).is_ok());
        assert_eq!(
            rule_of(check_widen(&s, &s.clone().with_length(5), false)),
            &ALTER_TYPE
        );
        let nv = Field::tag("t", DataType::NVarchar, false);
        assert_eq!(
            rule_of(check_add(&nv, true, TableKind::TimeSeries)),
            &TAG_TYPES
        );
        assert_eq!(
            rule_of(check_add(&p(), true, TableKind::TimeSeries)),
            &PRIMARY_TAGS_FIXED
        );
    }

    #[test]
    fn names_and_values() {
        assert_eq!(rule_of(check_kwdb_name("it's")), &NAME_QUOTE);
        assert!(check_kwdb_name("plain_name").is_ok());
        assert_eq!(
            rule_of(check_ts_database_name(&"d".repeat(64))),
            &TS_DATABASE_NAME_LENGTH
        );
        assert!(check_ts_database_name(&"d".repeat(63)).is_ok());
        assert!(check_finite(f64::NAN, "v")
            .unwrap_err()
            .contains("convertFloat"));
        assert!(check_finite(1.5, "v").is_ok());
        let f = Field::column("b", DataType::Varbytes).with_length(3);
        assert!(check_varbytes_len(3, &f).is_ok());
        assert!(check_varbytes_len(4, &f).is_err());
    }
}
