//! decode(encode(rows)) == rows for random schemas and rows, every format.
//!
//! Each format round-trips what it can carry: json_kaiwudb the whole schema and
//! every type; line protocol the types its suffixes and quotes name; OpenTSDB
//! FLOAT8, BOOL and (JSON only) VARCHAR values with VARCHAR tags. NaN and ±inf
//! travel as `NaN`/`Infinity`/`-Infinity` (JSON strings in the JSON formats).

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::event::{
    DataType, Field, Precision, Row, RowBatch, TableKind, TableSchema, Target, Timestamp, Value,
};

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float4(x), Value::Float4(y)) => {
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        (Value::Float8(x), Value::Float8(y)) => {
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        _ => a == b,
    }
}

fn same_rows(a: &[Row], b: &[Row]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_value(v, w)))
}

fn precision() -> impl Strategy<Value = Precision> {
    prop_oneof![
        Just(Precision::S),
        Just(Precision::Ms),
        Just(Precision::Us),
        Just(Precision::Ns)
    ]
}

/// A timestamp within years 0001..9999 (and within i64 at its precision).
fn timestamp(p: Precision) -> BoxedStrategy<Timestamp> {
    let per = p.per_second() as i128;
    let lo = (time::MIN_SECONDS as i128 * per).max(i64::MIN as i128) as i64;
    let hi = ((time::MAX_SECONDS as i128 + 1) * per - 1).min(i64::MAX as i128) as i64;
    prop_oneof![
        3 => lo..=hi,
        1 => Just(lo),
        1 => Just(hi),
        1 => Just(0i64),
        1 => -1000i64..1000,
    ]
    .prop_map(move |v| Timestamp::new(v, p))
    .boxed()
}

fn float8() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0),
        1 => Just(f64::MIN_POSITIVE),
        1 => Just(f64::MAX),
        1 => -1e6f64..1e6,
    ]
}

fn float4() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => any::<f32>(),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::MAX),
        1 => Just(f32::MIN_POSITIVE),
        1 => -1e6f32..1e6,
    ]
}

/// Text with escapes, quotes, backslashes, separators, unicode and control characters.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9 ,=\"'\\\\\\\\\\\\.:#{}\\[\\]\\t\\n\\r\\u{0}\\u{1f}é天津🚀-]{0,16}",
        1 => any::<String>(),
    ]
}

/// Text a line format can carry: no line breaks.
fn line_text() -> impl Strategy<Value = String> {
    "[a-z0-9 ,=\"'\\\\\\\\\\\\.:#{}\\[\\]\\té天津🚀-]{0,16}"
}

fn value_of(ty: DataType, p: Precision) -> BoxedStrategy<Value> {
    match ty {
        DataType::Int2 => any::<i16>().prop_map(Value::Int2).boxed(),
        DataType::Int4 => any::<i32>().prop_map(Value::Int4).boxed(),
        DataType::Int8 => prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX)]
            .prop_map(Value::Int8)
            .boxed(),
        DataType::Float4 => float4().prop_map(Value::Float4).boxed(),
        DataType::Float8 => float8().prop_map(Value::Float8).boxed(),
        DataType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        DataType::Timestamp | DataType::TimestampTz => {
            timestamp(p).prop_map(Value::Timestamp).boxed()
        }
        DataType::Date => (-719_162i32..2_932_896).prop_map(Value::Date).boxed(),
        DataType::Varbytes | DataType::Bytes => proptest::collection::vec(any::<u8>(), 0..12)
            .prop_map(Value::Bytes)
            .boxed(),
        _ => any_text().prop_map(Value::String).boxed(),
    }
}

fn with_nulls(field: &Field, p: Precision) -> BoxedStrategy<Value> {
    if field.nullable {
        prop_oneof![1 => Just(Value::Null), 4 => value_of(field.ty, p)].boxed()
    } else {
        value_of(field.ty, p)
    }
}

fn rows_for(
    schema: &TableSchema,
    p: Precision,
    n: std::ops::Range<usize>,
) -> BoxedStrategy<Vec<Row>> {
    let row: Vec<BoxedStrategy<Value>> = schema.fields().map(|f| with_nulls(f, p)).collect();
    proptest::collection::vec(row, n).boxed()
}

const ALL_TYPES: [DataType; 17] = [
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
];

fn field_of(name: String, ty: DataType, nullable: bool, primary: bool) -> Field {
    Field {
        length: if ty.has_length_limit() {
            254
        } else {
            ty.default_length()
        },
        name,
        ty,
        nullable: nullable && !primary,
        primary,
    }
}

/// A json_kaiwudb schema: time-series (timestamp first, a primary tag) or relational.
fn kaiwudb_schema() -> impl Strategy<Value = TableSchema> {
    let col = (
        any_text(),
        proptest::sample::select(&ALL_TYPES[..]),
        any::<bool>(),
    );
    let tag = (
        any_text(),
        proptest::sample::select(&ALL_TYPES[..]),
        any::<bool>(),
        any::<bool>(),
    );
    (
        any::<bool>(),
        proptest::sample::select(&[DataType::Timestamp, DataType::TimestampTz][..]),
        proptest::collection::vec(col, 0..6),
        proptest::collection::vec(tag, 0..4),
        any::<bool>(),
    )
        .prop_map(|(ts, ts_ty, cols, tags, first_nullable)| {
            // Names made unique by their position; the rest of the name is random text.
            let mut columns = Vec::new();
            if ts {
                columns.push(field_of("0ts".into(), ts_ty, false, false));
            }
            for (i, (name, ty, nullable)) in cols.into_iter().enumerate() {
                let n = format!("c{i}{name}");
                let nullable = nullable || (!ts && i == 0 && first_nullable);
                columns.push(field_of(n, ty, nullable, false));
            }
            if columns.is_empty() {
                columns.push(field_of("only".into(), DataType::Int4, true, false));
            }
            let mut t = Vec::new();
            if ts {
                for (i, (name, ty, nullable, primary)) in tags.into_iter().enumerate() {
                    t.push(field_of(
                        format!("t{i}{name}"),
                        ty,
                        nullable,
                        primary || i == 0,
                    ));
                }
                if t.is_empty() {
                    t.push(field_of("tag".into(), DataType::Varchar, false, true));
                }
            }
            let kind = if ts {
                TableKind::TimeSeries
            } else {
                TableKind::Relational
            };
            TableSchema::new(kind, columns, t)
        })
}

fn kaiwudb_case() -> impl Strategy<Value = (Precision, TableSchema, Vec<Row>, String)> {
    (precision(), kaiwudb_schema(), any_text()).prop_flat_map(|(p, schema, table)| {
        let rows = rows_for(&schema, p, 0..5);
        (Just(p), Just(schema), rows, Just(table))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn json_kaiwudb_round_trips((p, schema, rows, table) in kaiwudb_case()) {
        let batch = RowBatch::new(Target::table(format!("t{table}")), Arc::new(schema.clone()), rows.clone());
        let mut out = Vec::new();
        encode(Format::JsonKaiwudb, &batch, &EncodeOptions { precision: p }, &mut out).unwrap();
        let d = decode(Format::JsonKaiwudb, &out, &DecodeOptions::new(p));
        prop_assert!(d.errors.is_empty(), "{:?}\n{}", d.errors, String::from_utf8_lossy(&out));
        if rows.is_empty() {
            prop_assert!(out.is_empty());
            return Ok(());
        }
        prop_assert_eq!(d.batches.len(), 1);
        prop_assert_eq!(&*d.batches[0].schema, &schema);
        prop_assert_eq!(&d.batches[0].target, &batch.target);
        prop_assert!(same_rows(&d.batches[0].rows, &rows), "{:?}\n!=\n{:?}", d.batches[0].rows, rows);
    }
}

// ---- line protocol ----

const INFLUX_TYPES: [DataType; 8] = [
    DataType::Int2,
    DataType::Int4,
    DataType::Int8,
    DataType::Float4,
    DataType::Float8,
    DataType::Bool,
    DataType::Varchar,
    DataType::NVarchar,
];

fn influx_name() -> impl Strategy<Value = String> {
    "[a-z0-9 ,=\"'\\\\\\\\\\\\.é天津🚀_-]{1,8}".prop_filter("comment or reserved", |s| {
        !s.starts_with('#') && s != "time"
    })
}

fn influx_case() -> impl Strategy<Value = (Precision, TableSchema, Vec<Row>, String)> {
    (
        prop_oneof![
            Just(Precision::Ms),
            Just(Precision::Us),
            Just(Precision::Ns)
        ],
        proptest::collection::vec(proptest::sample::select(&INFLUX_TYPES[..]), 1..6),
        0usize..3,
        influx_name(),
        influx_name(),
    )
        .prop_flat_map(|(p, types, ntags, measurement, suffix)| {
            let mut columns = vec![Field::column("time", DataType::TimestampTz).not_null()];
            for (i, ty) in types.iter().enumerate() {
                columns.push(Field::column(format!("f{i}{suffix}"), *ty));
            }
            let tags: Vec<Field> = (0..ntags)
                .map(|i| Field::tag(format!("g{i}{suffix}"), DataType::Varchar, false))
                .collect();
            let schema = TableSchema::new(TableKind::TimeSeries, columns, tags);
            let values: Vec<BoxedStrategy<Value>> = schema
                .fields()
                .enumerate()
                .map(|(i, f)| match f.ty {
                    DataType::TimestampTz => timestamp(p).prop_map(Value::Timestamp).boxed(),
                    DataType::Varchar | DataType::NVarchar => {
                        let s = line_text().prop_map(Value::String);
                        // Row 0 fills every column, so no column is absent from the output.
                        if i == 1 {
                            s.boxed()
                        } else {
                            prop_oneof![1 => Just(Value::Null), 4 => s].boxed()
                        }
                    }
                    ty => {
                        if i == 1 {
                            value_of(ty, p)
                        } else {
                            prop_oneof![1 => Just(Value::Null), 4 => value_of(ty, p)].boxed()
                        }
                    }
                })
                .collect();
            let first: Vec<BoxedStrategy<Value>> = schema
                .fields()
                .map(|f| match f.ty {
                    DataType::TimestampTz => timestamp(p).prop_map(Value::Timestamp).boxed(),
                    DataType::Varchar | DataType::NVarchar => {
                        line_text().prop_map(Value::String).boxed()
                    }
                    ty => value_of(ty, p),
                })
                .collect();
            let rows =
                (first, proptest::collection::vec(values, 0..4)).prop_map(|(f, mut rest)| {
                    rest.insert(0, f);
                    rest
                });
            (Just(p), Just(schema), rows, Just(measurement))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn line_influxdb_round_trips((p, schema, rows, measurement) in influx_case()) {
        let batch = RowBatch::new(Target::table(measurement), Arc::new(schema.clone()), rows.clone());
        let mut out = Vec::new();
        encode(Format::LineInfluxdb, &batch, &EncodeOptions { precision: p }, &mut out).unwrap();
        let d = decode(Format::LineInfluxdb, &out, &DecodeOptions::new(p));
        prop_assert!(d.errors.is_empty(), "{:?}\n{}", d.errors, String::from_utf8_lossy(&out));
        prop_assert_eq!(d.batches.len(), 1, "{}", String::from_utf8_lossy(&out));
        let got = &d.batches[0];
        prop_assert_eq!(&got.target, &batch.target);
        let names = |s: &TableSchema| s.fields().map(|f| (f.name.clone(), f.ty)).collect::<Vec<_>>();
        prop_assert_eq!(names(&got.schema), names(&schema));
        prop_assert!(same_rows(&got.rows, &rows), "{:?}\n!=\n{:?}\n{}", got.rows, rows, String::from_utf8_lossy(&out));
    }
}

// ---- OpenTSDB ----

fn opentsdb_case(
    telnet: bool,
) -> impl Strategy<Value = (Precision, TableSchema, Vec<Row>, String)> {
    let types: &'static [DataType] = if telnet {
        &[DataType::Float8, DataType::Bool]
    } else {
        &[DataType::Float8, DataType::Bool, DataType::Varchar]
    };
    let name = if telnet {
        "[a-z0-9_.\\-é天]{1,6}"
    } else {
        "[a-z0-9 _.,=\"\\\\é天🚀-]{1,6}"
    };
    (
        prop_oneof![Just(Precision::S), Just(Precision::Ms)],
        proptest::collection::vec(proptest::sample::select(types), 1..4),
        proptest::collection::btree_set("[a-z0-9_\\-é]{1,5}", 0..3),
        name,
    )
        .prop_flat_map(move |(p, types, tag_names, table)| {
            let mut columns = vec![Field::column("timestamp", DataType::TimestampTz).not_null()];
            for (i, ty) in types.iter().enumerate() {
                columns.push(Field::column(format!("c{i}"), *ty));
            }
            let mut tags = vec![Field::tag("primary_tag", DataType::Varchar, true).with_length(64)];
            let tag_names: Vec<String> = tag_names.into_iter().map(|t| format!("t{t}")).collect();
            for t in &tag_names {
                tags.push(Field::tag(t.clone(), DataType::Varchar, false));
            }
            let schema = TableSchema::new(TableKind::TimeSeries, columns, tags);
            let value = |ty: DataType| -> BoxedStrategy<Value> {
                match ty {
                    DataType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
                    DataType::Float8 => float8().prop_map(Value::Float8).boxed(),
                    _ => any_text()
                        .prop_filter("reads as a float", |s| {
                            !matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity")
                        })
                        .prop_map(Value::String)
                        .boxed(),
                }
            };
            let tag_value = if telnet {
                "[a-z0-9=_.é天]{1,6}".boxed()
            } else {
                any_text().boxed()
            };
            let row = (
                schema.columns[1..]
                    .iter()
                    .map(|c| value(c.ty))
                    .collect::<Vec<_>>(),
                proptest::collection::vec(tag_value, tag_names.len()),
            );
            let schema2 = schema.clone();
            let rows = proptest::collection::vec(row, 1..5).prop_map(move |rows| {
                rows.into_iter()
                    .enumerate()
                    .map(|(i, (cols, tvals))| {
                        // Distinct timestamps, so no two rows merge.
                        let ts = match p {
                            Precision::S => {
                                Timestamp::new((1_600_000_000 + i as i64) * 1000, Precision::Ms)
                            }
                            _ => Timestamp::new(1_600_000_000_123 + i as i64, Precision::Ms),
                        };
                        let hash = opentsdb::primary_tag_value(
                            tag_names
                                .iter()
                                .map(String::as_str)
                                .zip(tvals.iter().map(String::as_str)),
                        );
                        let mut row = vec![Value::Timestamp(ts)];
                        row.extend(cols);
                        row.push(Value::String(hash));
                        row.extend(tvals.into_iter().map(Value::String));
                        row
                    })
                    .collect::<Vec<_>>()
            });
            (Just(p), Just(schema2), rows, Just(table))
        })
        .prop_filter("table names end in a dot-free part", |(_, _, _, t)| {
            !t.ends_with('.')
        })
}

fn opentsdb_round_trip(
    format: Format,
    (p, schema, rows, table): (Precision, TableSchema, Vec<Row>, String),
) -> Result<(), TestCaseError> {
    let batch = RowBatch::new(Target::table(table), Arc::new(schema.clone()), rows.clone());
    let mut out = Vec::new();
    encode(format, &batch, &EncodeOptions { precision: p }, &mut out).unwrap();
    let d = decode(format, &out, &DecodeOptions::new(p));
    prop_assert!(
        d.errors.is_empty(),
        "{:?}\n{}",
        d.errors,
        String::from_utf8_lossy(&out)
    );
    prop_assert_eq!(d.batches.len(), 1);
    let got = &d.batches[0];
    prop_assert_eq!(&got.target, &batch.target);
    let names = |s: &TableSchema| {
        s.fields()
            .map(|f| (f.name.clone(), f.ty, f.primary))
            .collect::<Vec<_>>()
    };
    prop_assert_eq!(names(&got.schema), names(&schema));
    prop_assert!(
        same_rows(&got.rows, &rows),
        "{:?}\n!=\n{:?}\n{}",
        got.rows,
        rows,
        String::from_utf8_lossy(&out)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn json_opentsdb_round_trips(case in opentsdb_case(false)) {
        opentsdb_round_trip(Format::JsonOpentsdb, case)?;
    }

    #[test]
    fn line_opentsdb_round_trips(case in opentsdb_case(true)) {
        opentsdb_round_trip(Format::LineOpentsdb, case)?;
    }

    /// Whatever the input, decoding never panics and every rejected record's span
    /// lies within the payload.
    #[test]
    fn decoders_take_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256), f in 0usize..4) {
        let format = Format::ALL[f];
        let d = decode(format, &bytes, &DecodeOptions::new(Precision::Ms));
        for e in &d.errors {
            prop_assert!(e.span.start <= e.span.end && e.span.end <= bytes.len());
        }
    }
}
