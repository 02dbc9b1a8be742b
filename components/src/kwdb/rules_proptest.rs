//! Random schemas through the `kwdb` planner: whatever it accepts, the DDL it
//! emits keeps every rule of [`super::rules`]. The DDL is read back as text by a
//! checker of its own (not by the rules module), so a planner that forgot to ask
//! the rules, or a rule that forgot a case, fails here.

use proptest::prelude::*;

use super::dialect::Sql;
use super::server::Dialect;
use crate::event::{DataType, Field, Precision, TableKind, TableSchema};

const TYPES: &[DataType] = &[
    DataType::Timestamp,
    DataType::TimestampTz,
    DataType::Date,
    DataType::Int2,
    DataType::Int4,
    DataType::Int8,
    DataType::Float4,
    DataType::Float8,
    DataType::Bool,
    DataType::Char,
    DataType::NChar,
    DataType::Varchar,
    DataType::NVarchar,
    DataType::Varbytes,
    DataType::Bytes,
    DataType::Text,
    DataType::Decimal,
    DataType::Geometry,
];

fn field(tag: bool) -> impl Strategy<Value = Field> {
    (
        prop::sample::select(TYPES),
        prop_oneof![
            0u32..300,
            60_000u32..70_000,
            Just(1024u32),
            Just(128u32),
            Just(129u32)
        ],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |(ty, length, primary, nullable)| Field {
            name: String::new(),
            ty,
            length: if ty.has_length_limit() {
                length
            } else {
                ty.default_length()
            },
            nullable,
            primary: tag && primary,
        })
}

fn schema() -> impl Strategy<Value = (TableSchema, Precision)> {
    (
        any::<bool>(),
        prop::collection::vec(field(false), 0..6),
        prop::collection::vec(field(true), 0..7),
        prop::sample::select(&[Precision::Ms, Precision::Us, Precision::Ns][..]),
    )
        .prop_map(|(ts, mut columns, mut tags, p)| {
            for (i, c) in columns.iter_mut().enumerate() {
                c.name = format!("c{i}");
            }
            for (i, t) in tags.iter_mut().enumerate() {
                t.name = format!("t{i}");
            }
            let kind = if ts {
                TableKind::TimeSeries
            } else {
                tags.clear();
                TableKind::Relational
            };
            (TableSchema::new(kind, columns, tags), p)
        })
}

/// `name TYPE[(n)] [NOT NULL]` items of a parenthesised list.
fn defs(list: &str) -> Vec<(String, String, Option<u32>, bool)> {
    list.split(", ")
        .filter(|d| !d.is_empty() && !d.starts_with("PRIMARY KEY"))
        .map(|d| {
            let not_null = d.ends_with(" NOT NULL");
            let d = d.trim_end_matches(" NOT NULL");
            let (name, ty) = d.split_once(' ').expect("name and type");
            let (base, n) = match ty.split_once('(') {
                Some((b, n)) => (b, n.trim_end_matches(')').parse().ok()),
                None => (ty, None),
            };
            (
                name.trim_matches('"').to_string(),
                base.to_string(),
                n,
                not_null,
            )
        })
        .collect()
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> &'a str {
    let a = s.find(open).expect("opening") + open.len();
    let b = a + s[a..].find(close).expect("closing");
    &s[a..b]
}

fn length_ok(ty: &str, n: Option<u32>) -> bool {
    match (ty, n) {
        ("CHAR", Some(n)) => n < 1024,
        ("NCHAR", Some(n)) => n <= 254,
        ("VARCHAR" | "NVARCHAR" | "VARBYTES", Some(n)) => n <= 65_534,
        _ => true,
    }
}

/// The rules, applied to the CREATE TABLE text.
fn check_ddl(ddl: &str, kind: TableKind) {
    let columns = if kind == TableKind::TimeSeries {
        defs(between(ddl, " (", ") TAGS ("))
    } else {
        let list = &ddl[ddl.find(" (").unwrap() + 2..ddl.len() - 1];
        defs(list.split(", PRIMARY KEY (").next().unwrap())
    };
    for (name, ty, n, _) in &columns {
        // The length limits are the time-series engine's.
        if kind == TableKind::TimeSeries {
            assert!(length_ok(ty, *n), "{name} {ty}({n:?}) in {ddl}");
        }
        if ty.starts_with("TIMESTAMP") {
            let limit = if kind == TableKind::TimeSeries { 9 } else { 6 };
            assert!(n.unwrap_or(3) <= limit, "{ddl}");
        }
    }
    if kind == TableKind::Relational {
        assert!(!ddl.contains(" TAGS ("), "{ddl}");
        return;
    }
    assert!((2..=4096).contains(&columns.len()), "{ddl}");
    assert!(
        columns[0].1.starts_with("TIMESTAMP") && columns[0].3,
        "{ddl}"
    );
    for (name, ty, _, _) in &columns {
        assert!(
            !["DATE", "BYTES", "TEXT", "DECIMAL"].contains(&ty.as_str()),
            "column {name} {ty} in {ddl}"
        );
    }
    let tags = defs(between(ddl, ") TAGS (", ") PRIMARY TAGS ("));
    assert!(tags.len() <= 128, "{ddl}");
    for (name, ty, n, _) in &tags {
        assert!(
            [
                "BOOL", "INT2", "INT4", "INT8", "FLOAT4", "FLOAT8", "CHAR", "NCHAR", "VARCHAR",
                "VARBYTES"
            ]
            .contains(&ty.as_str()),
            "tag {name} {ty} in {ddl}"
        );
        assert!(length_ok(ty, *n), "tag {name} {ty}({n:?}) in {ddl}");
    }
    let primary: Vec<&str> = between(ddl, "PRIMARY TAGS (", ")")
        .split(", ")
        .map(|p| p.trim_matches('"'))
        .collect();
    assert!((1..=4).contains(&primary.len()), "{ddl}");
    for p in primary {
        let (_, ty, n, not_null) = tags.iter().find(|t| t.0 == p).expect("a tag");
        assert!(*not_null, "{ddl}");
        assert!(
            !["FLOAT4", "FLOAT8", "VARBYTES"].contains(&ty.as_str()),
            "{ddl}"
        );
        if ty == "VARCHAR" {
            assert!(n.unwrap_or(64) <= 128, "{ddl}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_planner_never_emits_ddl_that_breaks_a_rule((schema, p) in schema()) {
        let sql = Sql(Dialect::Kwdb);
        let t = sql.ident("t").unwrap();
        if let Ok(stmts) = sql.create_table(&t, &schema, p) {
            prop_assert_eq!(stmts.len(), 1);
            check_ddl(&stmts[0], schema.kind);
        }
        // Every field as an ADD and as a widening of itself: what is emitted
        // keeps the rules too.
        for (i, f) in schema.fields().enumerate() {
            let tag = schema.is_tag(i);
            if let Ok(stmt) = sql.add_field(&t, schema.kind, f, tag, p) {
                let def = stmt.split_once(if tag { " ADD TAG " } else { " ADD COLUMN " }).unwrap().1;
                let (_, ty, n, not_null) = defs(def).remove(0);
                prop_assert!(!not_null);
                prop_assert!(schema.kind == TableKind::Relational || length_ok(&ty, n), "{}", stmt);
                if tag {
                    prop_assert!(!["NVARCHAR", "TIMESTAMP", "TIMESTAMPTZ", "GEOMETRY"].contains(&ty.as_str()), "{}", stmt);
                } else if schema.kind == TableKind::TimeSeries {
                    prop_assert!(!["DATE", "BYTES", "TEXT", "DECIMAL"].contains(&ty.as_str()), "{}", stmt);
                }
            }
            let longer = Field { length: f.length.saturating_mul(2).max(1), ..f.clone() };
            if let Ok(stmt) = sql.widen_field(&t, f, &longer, tag) {
                prop_assert!(f.ty != DataType::Varbytes && !f.primary, "{}", stmt);
                prop_assert!(!(tag && f.ty == DataType::NVarchar), "{}", stmt);
                let (_, ty, n, _) = defs(&format!("x {}", stmt.rsplit_once(" TYPE ").unwrap().1)).remove(0);
                prop_assert!(length_ok(&ty, n), "{}", stmt);
            }
        }
    }
}
