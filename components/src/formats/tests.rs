//! The seed's examples, decoded to exactly the values shown and encoded back, and
//! every class of error with its exact message.

use std::sync::Arc;

use super::*;
use crate::event::{DataType, Field, Precision, TableKind, TableSchema, Target, Timestamp, Value};

const SEED_JSON_KAIWUDB: &str = include_str!("testdata/seed_json_kaiwudb.txt");
const SEED_SOURCE_OUTPUT: &str = include_str!("testdata/seed_source_output.json");
const SEED_OPENTSDB_JSON: &str = include_str!("testdata/seed_opentsdb.json");
const SEED_TELNET: &str = include_str!("testdata/seed_telnet.txt");
const SEED_INFLUX: &str = include_str!("testdata/seed_influx.txt");

fn opts(p: Precision) -> DecodeOptions {
    DecodeOptions {
        precision: p,
        now: Some(Timestamp::new(1_700_000_000_000, p)),
        database: None,
        device_key: DeviceKey::None,
    }
}

fn ms(v: i64) -> Value {
    Value::Timestamp(Timestamp::new(v, Precision::Ms))
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn errors(d: &Decoded) -> Vec<String> {
    d.errors.iter().map(|e| e.to_string()).collect()
}

fn encode_all(format: Format, batches: &[DecodedBatch], precision: Precision) -> Vec<u8> {
    let mut out = Vec::new();
    for b in batches {
        let batch = b.clone().into_row_batch();
        encode(format, &batch, &EncodeOptions { precision }, &mut out).unwrap();
    }
    out
}

// ---- json_kaiwudb ----

fn seed_sink_schema() -> TableSchema {
    TableSchema::new(
        TableKind::TimeSeries,
        vec![
            Field::column("ts", DataType::TimestampTz).not_null(),
            Field::column("c1", DataType::Int2),
            Field::column("c2", DataType::Int4),
            Field::column("c3", DataType::Int8),
            Field::column("c4", DataType::Float4),
            Field::column("c5", DataType::Float8),
            Field::column("c6", DataType::Bool),
        ],
        vec![
            Field::tag("location", DataType::Varchar, true).with_length(64),
            Field::tag("temperature", DataType::Float4, false).with_length(64),
        ],
    )
}

#[test]
fn seed_json_kaiwudb_decodes_to_the_values_shown() {
    let d = decode(
        Format::JsonKaiwudb,
        SEED_JSON_KAIWUDB.as_bytes(),
        &opts(Precision::Ms),
    );
    assert_eq!(errors(&d), Vec::<String>::new());
    // Two lines with the same schema: one batch of ten rows.
    assert_eq!(d.batches.len(), 1);
    let b = &d.batches[0];
    assert_eq!(b.target, Target::table("ts_json_kaiwudb_tb"));
    assert_eq!(*b.schema, seed_sink_schema());
    assert_eq!(b.rows.len(), 10);
    let t = s("tianjin");
    let expected = [
        vec![
            ms(1690855924005),
            Value::Int2(11),
            Value::Int4(21),
            Value::Int8(2535208944865431245),
            Value::Float4(6.14545),
            Value::Float8(5.15656),
            Value::Bool(true),
            t.clone(),
            Value::Float4(35.5),
        ],
        vec![
            ms(1691853703011),
            Value::Int2(12),
            Value::Int4(22),
            Value::Int8(6422208944865124578),
            Value::Float4(1.01635),
            Value::Float8(0.53533),
            Value::Bool(false),
            t.clone(),
            Value::Float4(35.5),
        ],
        vec![
            ms(1692065524004),
            Value::Int2(13),
            Value::Int4(23),
            Value::Int8(1542408944865124535),
            Value::Float4(3.25456),
            Value::Float8(2.56356),
            Value::Bool(true),
            t.clone(),
            Value::Float4(35.5),
        ],
        vec![
            ms(1692199303011),
            Value::Int2(14),
            Value::Int4(24),
            Value::Int8(1245658944865439256),
            Value::Float4(2.72652),
            Value::Float8(5.83533),
            Value::Bool(false),
            t.clone(),
            Value::Float4(35.5),
        ],
        vec![
            ms(1692285703011),
            Value::Int2(15),
            Value::Int4(25),
            Value::Int8(5625658944865439256),
            Value::Float4(5.71635),
            Value::Float8(1.26562),
            Value::Bool(false),
            t.clone(),
            Value::Float4(35.5),
        ],
    ];
    assert_eq!(b.rows[..5], expected[..]);
    assert_eq!(b.rows[5..], expected[..]);
}

#[test]
fn seed_json_kaiwudb_encodes_back() {
    let d = decode(
        Format::JsonKaiwudb,
        SEED_JSON_KAIWUDB.as_bytes(),
        &opts(Precision::Ms),
    );
    let out = encode_all(Format::JsonKaiwudb, &d.batches, Precision::Ms);
    let text = std::str::from_utf8(&out).unwrap();
    assert!(text.starts_with("{\"table\":\"ts_json_kaiwudb_tb\",\"columns\":[{\"name\":\"ts\",\"type\":\"TIMESTAMPTZ\",\"length\":64},{\"name\":\"c1\",\"type\":\"INT2\",\"length\":16}"));
    assert!(text.contains("\"data\":[{\"ts\":1690855924005,\"c1\":11,\"c2\":21,\"c3\":2535208944865431245,\"c4\":6.14545,\"c5\":5.15656,\"c6\":true,\"location\":\"tianjin\",\"temperature\":35.5},"));
    assert!(text.ends_with("\"tags\":[{\"name\":\"location\",\"type\":\"VARCHAR\",\"length\":64,\"isPrimary\":true,\"nullable\":false},{\"name\":\"temperature\",\"type\":\"FLOAT4\",\"length\":64,\"isPrimary\":false,\"nullable\":true}]}\n"));
    let again = decode(Format::JsonKaiwudb, &out, &opts(Precision::Ms));
    assert!(again.errors.is_empty());
    assert_eq!(again.batches, d.batches);
}

#[test]
fn seed_source_output_round_trips_byte_for_byte() {
    let d = decode(
        Format::JsonKaiwudb,
        SEED_SOURCE_OUTPUT.as_bytes(),
        &opts(Precision::Ms),
    );
    assert_eq!(errors(&d), Vec::<String>::new());
    let b = &d.batches[0];
    assert_eq!(b.schema.kind, TableKind::TimeSeries);
    assert_eq!(b.schema.columns.len(), 11);
    assert_eq!(b.schema.tags.len(), 11);
    assert_eq!(
        b.schema.columns[0],
        Field::column("k_timestamp", DataType::Timestamp).not_null()
    );
    assert_eq!(
        b.schema.tags[0],
        Field::tag("id", DataType::Int8, true).with_length(64)
    );
    assert_eq!(
        b.schema.tags[1],
        Field::tag("hostname", DataType::Varchar, false)
            .with_length(254)
            .not_null()
    );
    let row = &b.rows[0];
    assert_eq!(row[0], ms(1705962142224));
    assert_eq!(
        row[1..11],
        (1..=10).map(Value::Int8).collect::<Vec<_>>()[..]
    );
    assert_eq!(row[11], Value::Int8(647470401348904608));
    assert_eq!(row[12..15], [s("locahost"), s("beijing"), s("center")]);
    assert!(row[15..].iter().all(Value::is_null));
    let out = encode_all(Format::JsonKaiwudb, &d.batches, Precision::Ms);
    assert_eq!(std::str::from_utf8(&out).unwrap(), SEED_SOURCE_OUTPUT);
}

#[test]
fn json_kaiwudb_precisions_and_text_timestamps() {
    let line = r#"{"table":"t","columns":[{"name":"ts","type":"timestamptz"},{"name":"v","type":"int4"}],"tags":[{"name":"id","type":"varchar","length":8,"isPrimary":true}],"data":[{"ts":1690855924005123,"v":1,"id":"a"},{"ts":"2023-08-01 02:12:04.005123","v":2,"id":"b"}]}"#;
    let d = decode(Format::JsonKaiwudb, line.as_bytes(), &opts(Precision::Us));
    assert_eq!(errors(&d), Vec::<String>::new());
    let us = |v| Value::Timestamp(Timestamp::new(v, Precision::Us));
    assert_eq!(d.batches[0].rows[0][0], us(1690855924005123));
    assert_eq!(d.batches[0].rows[1][0], us(1690855924005123));
    // In ms, the text has a digit too many: an error, not a cut.
    let d = decode(Format::JsonKaiwudb, line.as_bytes(), &opts(Precision::Ms));
    assert_eq!(
        errors(&d),
        vec![
            "line 1, row 1, field \"ts\": timestamp 1690855924005123 (ms) is out of range (years 0001 to 9999)",
            "line 1, row 2, field \"ts\": \"2023-08-01 02:12:04.005123\" has more fractional digits than ms precision holds"
        ]
    );
    assert_eq!(d.row_count(), 0);
}

#[test]
fn json_kaiwudb_relational_payloads_have_no_tags() {
    let line = r#"{"table":"orders","columns":[{"name":"id","type":"INT8","nullable":false},{"name":"at","type":"TIMESTAMP"},{"name":"note","type":"VARCHAR","length":10}],"data":[{"id":1,"at":"2024-01-22 22:22:22.224","note":null},{"id":2,"at":"2024-01-22 22:22:23.000"}]}"#;
    let d = decode(Format::JsonKaiwudb, line.as_bytes(), &opts(Precision::Ms));
    assert_eq!(errors(&d), Vec::<String>::new());
    let b = &d.batches[0];
    assert_eq!(b.schema.kind, TableKind::Relational);
    assert!(!b.schema.columns[0].nullable);
    assert_eq!(
        b.rows[0],
        vec![Value::Int8(1), ms(1705962142224), Value::Null]
    );
    assert_eq!(
        b.rows[1],
        vec![Value::Int8(2), ms(1705962143000), Value::Null]
    );
    let out = encode_all(Format::JsonKaiwudb, &d.batches, Precision::Ms);
    let text = std::str::from_utf8(&out).unwrap();
    assert_eq!(
        text,
        "{\"table\":\"orders\",\"columns\":[{\"name\":\"id\",\"type\":\"INT8\",\"length\":64,\"nullable\":false},{\"name\":\"at\",\"type\":\"TIMESTAMP\",\"length\":64},{\"name\":\"note\",\"type\":\"VARCHAR\",\"length\":10}],\"data\":[{\"id\":1,\"at\":\"2024-01-22 22:22:22.224\",\"note\":null},{\"id\":2,\"at\":\"2024-01-22 22:22:23.000\",\"note\":null}]}\n"
    );
}

#[test]
fn json_kaiwudb_accepts_pretty_printed_objects() {
    let pretty = "{\n  \"table\": \"t\",\n  \"columns\": [{\"name\": \"ts\", \"type\": \"TIMESTAMP\"}],\n  \"tags\": [{\"name\": \"g\", \"type\": \"INT4\", \"primary\": true}],\n  \"data\": [{\"ts\": 1, \"g\": 2}]\n}\n{\"table\":\"t\",\"columns\":[{\"name\":\"ts\",\"type\":\"TIMESTAMP\"}],\"tags\":[{\"name\":\"g\",\"type\":\"INT4\",\"primary\":true}],\"data\":[{\"ts\":3,\"g\":\"x\"}]}\n";
    let d = decode(Format::JsonKaiwudb, pretty.as_bytes(), &opts(Precision::Ms));
    assert_eq!(d.batches[0].rows, vec![vec![ms(1), Value::Int4(2)]]);
    assert_eq!(
        errors(&d),
        vec!["line 7, row 1, field \"g\": expected an integer, found \"x\""]
    );
}

const HEAD: &str = r#"{"table":"t","columns":[{"name":"ts","type":"TIMESTAMPTZ","length":64},{"name":"c1","type":"INT2","length":16},{"name":"f","type":"FLOAT4"}],"tags":[{"name":"location","type":"VARCHAR","length":4,"primary":true,"nullable":false}],"data":"#;

fn one_row_error(data: &str) -> Vec<String> {
    let line = format!("{HEAD}{data}}}");
    let d = decode(Format::JsonKaiwudb, line.as_bytes(), &opts(Precision::Ms));
    errors(&d)
}

#[test]
fn json_kaiwudb_value_errors_name_row_and_field() {
    assert_eq!(
        one_row_error(r#"[{"ts":1,"c1":70000,"location":"tj"}]"#),
        vec!["line 1, row 1, field \"c1\": 70000 is out of range for INT2"]
    );
    assert_eq!(
        one_row_error(r#"[{"ts":1,"c1":1,"location":"tj"},{"ts":2,"location":"0123456789"}]"#),
        vec!["line 1, row 2, field \"location\": value of 10 bytes is too long for VARCHAR(4)"]
    );
    assert_eq!(
        one_row_error(r#"[{"ts":1,"c1":1}]"#),
        vec!["line 1, row 1, field \"location\": missing, and the field is NOT NULL"]
    );
    assert_eq!(
        one_row_error(r#"[{"ts":1,"location":null}]"#),
        vec!["line 1, row 1, field \"location\": null for a NOT NULL field"]
    );
    assert_eq!(
        one_row_error(r#"[{"ts":1,"c9":1,"location":"a"}]"#),
        vec!["line 1, row 1, field \"c9\": not a field of the table"]
    );
    assert_eq!(
        one_row_error(r#"[{"ts":1,"c1":1,"c1":2,"location":"a"}]"#),
        vec!["line 1, row 1, field \"c1\": given twice in the row"]
    );
    assert_eq!(
        one_row_error(r#"[{"ts":1,"c1":1.5,"location":"a"}]"#),
        vec!["line 1, row 1, field \"c1\": expected an integer, found 1.5"]
    );
    assert_eq!(
        one_row_error(r#"[{"ts":1,"f":1e39,"location":"a"}]"#),
        vec!["line 1, row 1, field \"f\": 1000000000000000000000000000000000000000 is out of range for FLOAT4"]
    );
    assert_eq!(
        one_row_error(r#"[{"ts":"yesterday","location":"a"}]"#),
        vec!["line 1, row 1, field \"ts\": \"yesterday\" is not a timestamp; expected YYYY-MM-DD HH:MM:SS[.fff]"]
    );
    assert_eq!(
        one_row_error(r#"[{"ts":99999999999999999,"location":"a"}]"#),
        vec!["line 1, row 1, field \"ts\": timestamp 99999999999999999 (ms) is out of range (years 0001 to 9999)"]
    );
    assert_eq!(
        one_row_error(r#"[{"ts":1,"c1":[1],"location":"a"}]"#),
        vec!["line 1, row 1, field \"c1\": expected an integer, found an array"]
    );
    assert_eq!(
        one_row_error(r#"[7]"#),
        vec!["line 1, row 1: a data row must be an object, found a number"]
    );
    // Non-finite floats travel as strings.
    assert_eq!(
        one_row_error(r#"[{"ts":1,"f":"NaN","location":"a"}]"#),
        Vec::<String>::new()
    );
}

#[test]
fn json_kaiwudb_schema_errors_reject_the_object() {
    let cases = [
        (
            r#"{"columns":[{"name":"ts","type":"TIMESTAMP"}],"data":[]}"#,
            "line 1: missing \"table\"",
        ),
        (
            r#"{"table":"t","columns":[{"name":"ts","type":"INT3"}],"data":[]}"#,
            "line 1, field \"ts\": unknown type \"INT3\"",
        ),
        (
            r#"{"table":"t","columns":[{"name":"c","type":"INT2"}],"tags":[{"name":"g","type":"INT2","primary":true}],"data":[]}"#,
            "line 1, field \"c\": a time-series table's first column must be a timestamp, not INT2",
        ),
        (
            r#"{"table":"t","columns":[{"name":"ts","type":"TIMESTAMP"}],"tags":[{"name":"g","type":"INT2"}],"data":[]}"#,
            "line 1: a time-series table needs a primary tag",
        ),
        (
            r#"{"table":"t","columns":[{"name":"ts","type":"TIMESTAMP"},{"name":"ts","type":"INT2"}],"data":[]}"#,
            "line 1, field \"ts\": \"ts\" is declared twice",
        ),
        (
            r#"{"table":"t","columns":[],"data":[]}"#,
            "line 1: missing \"columns\"",
        ),
    ];
    for (line, msg) in cases {
        let d = decode(Format::JsonKaiwudb, line.as_bytes(), &opts(Precision::Ms));
        assert_eq!(errors(&d), vec![msg], "{line}");
        assert!(d.batches.iter().all(|b| b.rows.is_empty()));
    }
    let d = decode(Format::JsonKaiwudb, b"{\"table\":", &opts(Precision::Ms));
    assert_eq!(
        errors(&d),
        vec!["line 1: invalid JSON: EOF while parsing a value at line 1 column 9"]
    );
}

#[test]
fn json_kaiwudb_bad_line_leaves_the_others() {
    let good = SEED_JSON_KAIWUDB.lines().next().unwrap();
    let payload = format!("{good}\n{{\"table\":1}}\n\n{good}\n");
    let d = decode(
        Format::JsonKaiwudb,
        payload.as_bytes(),
        &opts(Precision::Ms),
    );
    assert_eq!(d.row_count(), 10);
    assert_eq!(d.errors.len(), 1);
    assert_eq!(d.errors[0].line, 2);
    assert_eq!(
        &payload.as_bytes()[d.errors[0].span.clone()],
        b"{\"table\":1}"
    );
    // A syntax error after the data takes back the rows it had.
    let broken = format!("{}, \"x\": }}", &good[..good.len() - 1]);
    let d = decode(Format::JsonKaiwudb, broken.as_bytes(), &opts(Precision::Ms));
    assert_eq!(d.row_count(), 0);
    assert_eq!(d.errors.len(), 1);
}

// ---- line_influxdb ----

#[test]
fn seed_influx_lines_decode_to_the_values_shown() {
    let d = decode(
        Format::LineInfluxdb,
        SEED_INFLUX.as_bytes(),
        &opts(Precision::Ns),
    );
    assert_eq!(errors(&d), Vec::<String>::new());
    // c13 is a number on lines 1 and 3 and text on lines 2 and 4: two batches for
    // the table, which the sink coerces to its TIMESTAMP column.
    assert_eq!(d.batches.len(), 2);
    let (a, b) = (&d.batches[0], &d.batches[1]);
    assert_eq!(a.target.table, "ts_line_influxdb_tb");
    let types: Vec<_> = a
        .schema
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.ty))
        .collect();
    use DataType::*;
    assert_eq!(
        types,
        vec![
            ("time", TimestampTz),
            ("c1", Int2),
            ("c2", Int4),
            ("c3", Int8),
            ("c4", Float4),
            ("c5", Float8),
            ("c6", Bool),
            ("c7", Varchar),
            ("c8", Varchar),
            ("c9", Varchar),
            ("c10", NVarchar),
            ("c11", Varchar),
            ("c12", NVarchar),
            ("c13", Float8)
        ]
    );
    assert_eq!(
        a.schema.tags,
        vec![Field::tag("tag_name", Varchar, false).with_length(9)]
    );
    let ns = |v| Value::Timestamp(crate::event::Timestamp::new(v, Precision::Ns));
    assert_eq!(
        a.rows[0],
        vec![
            ns(1648432611249000000),
            Value::Int2(11),
            Value::Int4(21),
            Value::Int8(31),
            Value::Float4(11.8),
            Value::Float8(0.16),
            Value::Bool(true),
            s("112132"),
            s("213645"),
            s("a"),
            s("1"),
            s("qaz"),
            s("tgb"),
            Value::Float8(1648432611249.0),
            s("tag_value")
        ]
    );
    assert_eq!(
        a.rows[1],
        vec![
            ns(1648432611250000000),
            Value::Int2(13),
            Value::Int4(23),
            Value::Int8(33),
            Value::Float4(13.8),
            Value::Float8(0.32),
            Value::Bool(true),
            s("\\x313233"),
            s("\\x6664736665"),
            s("c"),
            s("3"),
            s("edc"),
            s("ujm"),
            Value::Float8(1648432611250.0),
            s("tag_value")
        ]
    );
    assert_eq!(b.schema.columns[13].ty, Varchar);
    assert_eq!(
        b.rows[1],
        vec![
            ns(1648432611250000000),
            Value::Int2(14),
            Value::Int4(24),
            Value::Int8(34),
            Value::Float4(14.8),
            Value::Float8(0.45),
            Value::Bool(false),
            s("\\x343536"),
            s("\\x6173646666"),
            s("d"),
            s("4"),
            s("rfv"),
            s("ikl"),
            s("2023-08-11 12:12:10.250"),
            s("tag_value")
        ]
    );
    assert_eq!(b.rows[0][13], s("2023-08-11 12:12:10.249"));
}

#[test]
fn seed_influx_lines_encode_back() {
    let d = decode(
        Format::LineInfluxdb,
        SEED_INFLUX.as_bytes(),
        &opts(Precision::Ns),
    );
    let out = encode_all(Format::LineInfluxdb, &d.batches, Precision::Ns);
    let text = std::str::from_utf8(&out).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        r#"ts_line_influxdb_tb,tag_name=tag_value c1=11i16,c2=21i32,c3=31i64,c4=11.8f32,c5=0.16f64,c6=true,c7="112132",c8="213645",c9="a",c10=L"1",c11="qaz",c12=L"tgb",c13=1648432611249.0f64 1648432611249000000"#
    );
    let again = decode(Format::LineInfluxdb, &out, &opts(Precision::Ns));
    assert!(again.errors.is_empty());
    assert_eq!(again.batches, d.batches);
}

#[test]
fn influx_syntax_comments_and_escapes() {
    let payload = "# a comment\n\n  \nm\\ x\\,y,t\\=k=v\\ 1\\,2,e= f\\=1=\"a \\\"q\\\" \\\\ b\",g='it\\'s',h=L\"天津\",u=7u,b=F,x=-1.5e3 1000\n";
    let d = decode(
        Format::LineInfluxdb,
        payload.as_bytes(),
        &opts(Precision::Ms),
    );
    assert_eq!(errors(&d), Vec::<String>::new());
    let b = &d.batches[0];
    assert_eq!(b.target.table, "m x,y");
    let names: Vec<_> = b.schema.fields().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["time", "f=1", "g", "h", "u", "b", "x", "t=k", "e"]
    );
    assert_eq!(
        b.rows[0],
        vec![
            ms(1000),
            s("a \"q\" \\ b"),
            s("it's"),
            s("天津"),
            Value::Int8(7),
            Value::Bool(false),
            Value::Float8(-1500.0),
            s("v 1,2"),
            s("")
        ]
    );
    assert_eq!(b.schema.field(3).ty, DataType::NVarchar);
    assert_eq!(b.schema.field(3).length, 2);
}

/// Issue 18, item 5: booleans are case-insensitive, as the seed's table says.
#[test]
fn influx_booleans_in_any_case() {
    let d = decode(
        Format::LineInfluxdb,
        b"m a=tRuE,b=fAlSe,c=t,d=F,e=TRUE 1\n",
        &opts(Precision::Ms),
    );
    assert_eq!(errors(&d), Vec::<String>::new());
    assert_eq!(
        d.batches[0].rows[0][1..],
        [true, false, true, false, true].map(Value::Bool)
    );
    let d = decode(Format::LineInfluxdb, b"m a=tru 1\n", &opts(Precision::Ms));
    assert_eq!(errors(&d).len(), 1, "only true/false/t/f are booleans");
}

/// Issue 18, item 11: line protocol has no primary tags, so a time-series table
/// could not be created from it ("needs 1 to 4 primary tags, got 0"). A device
/// key gives it one: OpenTSDB's synthetic tag, or tags the user names.
#[test]
fn influx_device_keys() {
    let payload = b"cpu,region=bj,host=h1 v=1i 1\ncpu,host=h2 v=2i 2\n";
    let keyed = |key: DeviceKey| {
        decode(
            Format::LineInfluxdb,
            payload,
            &DecodeOptions {
                device_key: key,
                ..opts(Precision::Ns)
            },
        )
    };
    let plain = keyed(DeviceKey::None);
    assert_eq!(plain.batches[0].schema.primary_tags().count(), 0);

    let hashed = keyed(DeviceKey::Hash);
    assert_eq!(errors(&hashed), Vec::<String>::new());
    let b = &hashed.batches[0];
    let primary: Vec<&str> = b.schema.primary_tags().map(|t| t.name.as_str()).collect();
    assert_eq!(primary, ["primary_tag"]);
    let at = b
        .schema
        .fields()
        .position(|f| f.name == "primary_tag")
        .unwrap();
    // The same key OpenTSDB points with these tags get: sorted k=v pairs.
    assert_eq!(
        b.rows[0][at],
        s(&opentsdb::primary_tag_value(
            [("host", "h1"), ("region", "bj")].into_iter()
        ))
    );
    assert_eq!(
        b.rows[1][at],
        s(&opentsdb::primary_tag_value([("host", "h2")].into_iter()))
    );

    let named = keyed(DeviceKey::Tags(vec!["region".into()]));
    let primary: Vec<&str> = named.batches[0]
        .schema
        .primary_tags()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(primary, ["region"]);
    assert_eq!(named.batches[0].rows.len(), 1);
    assert_eq!(
        errors(&named),
        ["line 2: no tag \"region\"; primary_tags makes it the device key, so every line needs it"]
    );
}

#[test]
fn influx_lines_without_timestamp_take_now() {
    let d = decode(Format::LineInfluxdb, b"m v=1i", &opts(Precision::Ms));
    assert_eq!(d.batches[0].rows[0][0], ms(1_700_000_000_000));
    let d = decode(Format::LineInfluxdb, b"m v=1i", &DecodeOptions::default());
    let Value::Timestamp(t) = d.batches[0].rows[0][0] else {
        panic!()
    };
    assert!(t.value > 1_700_000_000_000);
}

#[test]
fn influx_rows_of_a_table_share_one_schema() {
    let payload = "m,a=1 x=1i 1\nm,b=2 y=true 2\nm,a=3 x=2i,y=false 3\n";
    let d = decode(
        Format::LineInfluxdb,
        payload.as_bytes(),
        &opts(Precision::Ms),
    );
    assert_eq!(d.batches.len(), 1);
    let b = &d.batches[0];
    let names: Vec<_> = b.schema.fields().map(|f| f.name.as_str()).collect();
    // y arrived after tag a: still a column, before the tags.
    assert_eq!(names, vec!["time", "x", "y", "a", "b"]);
    assert_eq!(
        b.rows[0],
        vec![ms(1), Value::Int8(1), Value::Null, s("1"), Value::Null]
    );
    assert_eq!(
        b.rows[1],
        vec![ms(2), Value::Null, Value::Bool(true), Value::Null, s("2")]
    );
    assert_eq!(
        b.rows[2],
        vec![
            ms(3),
            Value::Int8(2),
            Value::Bool(false),
            s("3"),
            Value::Null
        ]
    );
}

#[test]
fn influx_errors_have_exact_messages() {
    let cases = [
        ("m c1=70000i16 1", "line 1, field \"c1\": 70000 is out of range for INT2"),
        ("m c1=99999999999999999999i 1", "line 1, field \"c1\": 99999999999999999999 is out of range for INT8"),
        ("m c1=1e39f32 1", "line 1, field \"c1\": 1e39 is out of range for FLOAT4"),
        ("m c1=abc 1", "line 1, field \"c1\": invalid value \"abc\""),
        ("m c1=\"abc 1", "line 1, field \"c1\": unterminated string"),
        ("m c1= 1", "line 1, field \"c1\": missing value"),
        ("m c1 1", "line 1, field \"c1\": expected \"=\" after field \"c1\""),
        ("m", "line 1: no fields; a line needs at least one field after the measurement and tags"),
        (",a=1 v=1", "line 1: missing measurement"),
        ("m,a v=1", "line 1: expected \"=\" after tag \"a\""),
        ("m,=1 v=1", "line 1: empty tag name"),
        ("m =1", "line 1: empty field name"),
        ("m v=1 12x", "line 1: invalid timestamp \"12x\""),
        ("m v=1 1 2", "line 1: unexpected \"2\" after the field set"),
        ("m v=1,v=2", "line 1, field \"v\": \"v\" is given twice"),
        ("m,v=1 v=2", "line 1, field \"v\": \"v\" is given twice"),
        ("m time=1", "line 1, field \"time\": \"time\" names the line timestamp; it cannot be a field or a tag"),
        ("m v=1 99999999999999999", "line 1: timestamp 99999999999999999 (ms) is out of range (years 0001 to 9999); the line timestamp's unit is the timestamp_precision option (connector: timestamp.precision), which must be what the writers send (InfluxDB's clients send ns, the default)"),
        ("m v=1 1648432611249000000\",", "line 1: invalid timestamp \"1648432611249000000\\\",\""),
    ];
    for (line, msg) in cases {
        let d = decode(Format::LineInfluxdb, line.as_bytes(), &opts(Precision::Ms));
        assert_eq!(errors(&d), vec![msg], "{line}");
        assert!(d.batches.is_empty(), "{line}");
    }
    let d = decode(
        Format::LineInfluxdb,
        b"m v=1\n\xff v=1\nm v=2",
        &opts(Precision::Ms),
    );
    assert_eq!(errors(&d), vec!["line 2: line is not valid UTF-8"]);
    assert_eq!(d.row_count(), 2);
}

// ---- OpenTSDB ----

fn sha(text: &str) -> String {
    opentsdb::primary_tag_value(
        text.split(',')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap()),
    )
}

#[test]
fn primary_tag_is_sha256_of_sorted_pairs() {
    assert_eq!(
        sha("tag_name=tag_value"),
        "ccdd5a7993c1a00f2d9eeb8d2def2d00132a60f507edd44a0fb3d47d46edb340"
    );
    assert_eq!(
        opentsdb::primary_tag_value([("a", "1"), ("b", "2")].into_iter()),
        "06beefe2b477ff1d0fe92dfa45128217630672abff564dc7746f106833d3fc7a"
    );
    // The empty tag set hashes the empty string.
    assert_eq!(
        sha(""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn seed_opentsdb_json_decodes_to_the_values_shown() {
    let d = decode(
        Format::JsonOpentsdb,
        SEED_OPENTSDB_JSON.as_bytes(),
        &opts(Precision::Ms),
    );
    assert_eq!(errors(&d), Vec::<String>::new());
    assert_eq!(d.batches.len(), 1);
    let b = &d.batches[0];
    assert_eq!(b.target.table, "ts_json_opentsdb_tb");
    assert_eq!(
        *b.schema,
        TableSchema::new(
            TableKind::TimeSeries,
            vec![
                Field::column("timestamp", DataType::TimestampTz).not_null(),
                Field::column("c1", DataType::Float8),
                Field::column("c2", DataType::Float8),
            ],
            vec![
                Field::tag("primary_tag", DataType::Varchar, true).with_length(64),
                Field::tag("tag_name", DataType::Varchar, false).with_length(9),
            ],
        )
    );
    let h = s(&sha("tag_name=tag_value"));
    let tv = s("tag_value");
    assert_eq!(
        b.rows,
        vec![
            vec![
                ms(1648432611249),
                Value::Float8(10.3),
                Value::Null,
                h.clone(),
                tv.clone()
            ],
            vec![
                ms(1648432611339),
                Value::Null,
                Value::Float8(219.0),
                h.clone(),
                tv.clone()
            ],
            vec![
                ms(1648432611340),
                Value::Float8(12.6),
                Value::Null,
                h.clone(),
                tv.clone()
            ],
            vec![
                ms(1648432611250),
                Value::Null,
                Value::Float8(218.0),
                h.clone(),
                tv.clone()
            ],
        ]
    );
    let out = encode_all(Format::JsonOpentsdb, &d.batches, Precision::Ms);
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        SEED_OPENTSDB_JSON
            .replace("\"value\":219,", "\"value\":219.0,")
            .replace("\"value\":218,", "\"value\":218.0,")
    );
}

#[test]
fn seed_telnet_lines_merge_into_rows() {
    let d = decode(
        Format::LineOpentsdb,
        SEED_TELNET.as_bytes(),
        &opts(Precision::Ms),
    );
    assert_eq!(errors(&d), Vec::<String>::new());
    let b = &d.batches[0];
    assert_eq!(b.target.table, "line_opentsdb_tb");
    let h = s(&sha("tag1=1"));
    // Same (table, timestamp, tags): one row; a later value for a column wins.
    assert_eq!(
        b.rows,
        vec![
            vec![
                ms(1648432611249),
                Value::Float8(10.8),
                Value::Float8(221.0),
                h.clone(),
                s("1")
            ],
            vec![
                ms(1648432611250),
                Value::Float8(11.3),
                Value::Float8(217.0),
                h.clone(),
                s("1")
            ],
        ]
    );
    let out = encode_all(Format::LineOpentsdb, &d.batches, Precision::Ms);
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        "line_opentsdb_tb.c1 1648432611249 10.8 tag1=1\nline_opentsdb_tb.c2 1648432611249 221.0 tag1=1\nline_opentsdb_tb.c1 1648432611250 11.3 tag1=1\nline_opentsdb_tb.c2 1648432611250 217.0 tag1=1\n"
    );
}

#[test]
fn opentsdb_put_prefix_seconds_and_single_objects() {
    let d = decode(
        Format::LineOpentsdb,
        b"put sys.cpu.user 1648432611 1.5 host=a dc=x\n",
        &opts(Precision::Ms),
    );
    assert_eq!(errors(&d), Vec::<String>::new());
    let b = &d.batches[0];
    assert_eq!(b.target.table, "sys.cpu");
    assert_eq!(b.schema.columns[1].name, "user");
    assert_eq!(b.rows[0][0], ms(1648432611000));
    // Tags are sorted by key for the hash, and kept in that order.
    assert_eq!(b.rows[0][2], s(&sha("dc=x,host=a")));
    let names: Vec<_> = b.schema.tags.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["primary_tag", "dc", "host"]);
    let d = decode(
        Format::JsonOpentsdb,
        br#"{"metric":"t.on","timestamp":1648432611,"value":true,"tags":{"k":"v"}}
{"metric":"t.name","timestamp":1648432611,"value":"abc","tags":{"k":"v"}}"#,
        &opts(Precision::Ms),
    );
    assert_eq!(errors(&d), Vec::<String>::new());
    let b = &d.batches[0];
    assert_eq!(b.schema.columns[1].ty, DataType::Bool);
    assert_eq!(b.schema.columns[2].ty, DataType::Varchar);
    assert_eq!(
        b.rows,
        vec![vec![
            ms(1648432611000),
            Value::Bool(true),
            s("abc"),
            s(&sha("k=v")),
            s("v")
        ]]
    );
}

#[test]
fn opentsdb_errors_have_exact_messages() {
    let telnet = [
        ("t.c 1648432611249", "line 1: expected: metric timestamp value [tag=value ...]"),
        ("tc 1648432611249 1 a=b", "line 1: metric \"tc\" is not table.column"),
        ("t.c 16484326112491 1 a=b", "line 1: timestamp 16484326112491 is neither seconds (up to 10 digits) nor milliseconds (13 digits)"),
        ("t.c 1648432611x 1 a=b", "line 1: invalid timestamp \"1648432611x\""),
        ("t.c 1648432611249 abc a=b", "line 1, field \"c\": invalid value \"abc\"; expected a number or a boolean"),
        ("t.c 1648432611249 1 ab", "line 1: invalid tag \"ab\"; expected key=value"),
        ("t.c 1648432611249 1 a=b a=c", "line 1, field \"a\": tag \"a\" is given twice"),
        ("t.timestamp 1648432611249 1 a=b", "line 1, field \"timestamp\": \"timestamp\" names the timestamp column; it cannot be a metric column or a tag"),
        ("t.c 1648432611249 12345678901234567 a=b", "line 1, field \"c\": 12345678901234567 cannot be stored exactly as FLOAT8"),
    ];
    for (line, msg) in telnet {
        let d = decode(Format::LineOpentsdb, line.as_bytes(), &opts(Precision::Ms));
        assert_eq!(errors(&d), vec![msg], "{line}");
    }
    let payload = br#"[{"metric":"t.a","timestamp":1648432611249,"value":1,"tags":{"k":"v"}},{"metric":"t.b","timestamp":1648432611249,"tags":{"k":"v"}},{"metric":"t.c","timestamp":1.5,"value":1}]
[1,"#;
    let d = decode(Format::JsonOpentsdb, payload, &opts(Precision::Ms));
    assert_eq!(
        errors(&d),
        vec![
            "line 1, point 2: invalid JSON: missing field `value` at line 1 column 59",
            "line 1, point 3: invalid timestamp \"1.5\"",
            "line 2: invalid JSON: EOF while parsing a value at line 1 column 3",
        ]
    );
    assert_eq!(d.row_count(), 1);
    let span = d.errors[0].span.clone();
    assert!(payload[span].starts_with(b"{\"metric\":\"t.b\""));
}

// ---- encoding errors ----

fn batch(schema: TableSchema, rows: Vec<Row>) -> RowBatch {
    RowBatch::new(Target::table("t"), Arc::new(schema), rows)
}

fn ts_schema(columns: Vec<Field>) -> TableSchema {
    let mut cols = vec![Field::column("ts", DataType::TimestampTz).not_null()];
    cols.extend(columns);
    TableSchema::new(
        TableKind::TimeSeries,
        cols,
        vec![Field::tag("g", DataType::Varchar, true)],
    )
}

/// Issue 18, item 1: kwdb-poll reads a `now()` row of a TIMESTAMPTZ(6) column as a
/// µs timestamp; json_kaiwudb at the default ms rejected it, and the source's
/// checkpoint moved past it. Now it is written with every digit, as the format's
/// text timestamp, and a reader at the column's precision gets it back exactly.
#[test]
fn json_kaiwudb_keeps_timestamps_finer_than_its_precision_as_text() {
    let b = batch(
        ts_schema(vec![Field::column("v", DataType::Int4)]),
        vec![
            vec![
                Value::Timestamp(Timestamp::new(1_705_962_142_224_001, Precision::Us)),
                Value::Int4(1),
                s("a"),
            ],
            vec![
                Value::Timestamp(Timestamp::new(1_705_962_142_224_000_007, Precision::Ns)),
                Value::Int4(2),
                s("a"),
            ],
            vec![ms(1_705_962_142_225), Value::Int4(3), s("a")],
        ],
    );
    let mut out = Vec::new();
    let errs = encode_lenient(
        Format::JsonKaiwudb,
        &b,
        &EncodeOptions {
            precision: Precision::Ms,
        },
        &mut out,
    )
    .unwrap();
    assert!(errs.is_empty(), "{errs:?}");
    let text = std::str::from_utf8(&out).unwrap();
    assert!(
        text.contains("\"ts\":\"2024-01-22 22:22:22.224001\""),
        "{text}"
    );
    assert!(text.contains("\"ts\":\"2024-01-22 22:22:22.224000007\""));
    // Rows that fit stay epoch numbers, as the seed's example shows.
    assert!(text.contains("\"ts\":1705962142225,"));
    // Text timestamps carry their own digits: a reader at ns gets them exactly.
    let decoded = Decoder::new(Format::JsonKaiwudb, opts(Precision::Ns)).decode(&out);
    assert!(decoded.errors.is_empty(), "{:?}", errors(&decoded));
    let as_ns = |r: &Row| match &r[0] {
        Value::Timestamp(t) => t.to_precision(Precision::Ns).unwrap().value,
        other => panic!("{other:?}"),
    };
    let rows = &decoded.batches[0].rows;
    assert_eq!(
        [as_ns(&rows[0]), as_ns(&rows[1])],
        [1_705_962_142_224_001_000, 1_705_962_142_224_000_007]
    );
    // A reader at ms refuses the finer ones with a reason, never truncates them.
    let decoded = Decoder::new(Format::JsonKaiwudb, opts(Precision::Ms)).decode(&out);
    assert_eq!(decoded.errors.len(), 2, "{:?}", errors(&decoded));
    assert!(errors(&decoded)[0].contains("more fractional digits than ms precision holds"));
}

/// Issue 18, item 4: a text column made line_opentsdb drop the whole row,
/// numeric points included. The numeric points go out; the text is reported.
#[test]
fn line_opentsdb_writes_the_numeric_points_of_a_row_with_text() {
    let b = batch(
        ts_schema(vec![
            Field::column("n", DataType::Float8),
            Field::column("t", DataType::Varchar),
            Field::column("i", DataType::Int4),
        ]),
        vec![vec![
            ms(1_648_432_611_249),
            Value::Float8(1.5),
            s("text"),
            Value::Int4(7),
            s("a"),
        ]],
    );
    let mut out = Vec::new();
    let errs = encode_lenient(
        Format::LineOpentsdb,
        &b,
        &EncodeOptions {
            precision: Precision::Ms,
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        "t.n 1648432611249 1.5 g=a\nt.i 1648432611249 7 g=a\n"
    );
    let errs: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(
        errs,
        ["row 0: field \"t\": line_opentsdb cannot carry text values (telnet values are numbers)"]
    );
}

#[test]
fn encode_errors_name_the_row() {
    let b = batch(
        ts_schema(vec![Field::column("v", DataType::Varchar)]),
        vec![
            vec![
                Value::Timestamp(Timestamp::new(1_000_001, Precision::Us)),
                s("x"),
                s("a"),
            ],
            vec![
                Value::Timestamp(Timestamp::new(2_000_000, Precision::Us)),
                s("y"),
                s("a"),
            ],
        ],
    );
    let o = EncodeOptions {
        precision: Precision::Ms,
    };
    let mut out = Vec::new();
    assert_eq!(
        encode(Format::LineInfluxdb, &b, &o, &mut out)
            .unwrap_err()
            .to_string(),
        "row 0: field \"ts\": timestamp 1000001 us would lose digits in ms precision"
    );
    assert!(out.is_empty());
    let errs = encode_lenient(Format::LineInfluxdb, &b, &o, &mut out).unwrap();
    assert_eq!(errs.len(), 1);
    assert_eq!(std::str::from_utf8(&out).unwrap(), "t,g=a v=\"y\" 2000\n");
    out.clear();
    assert_eq!(
        encode(
            Format::LineOpentsdb,
            &b,
            &EncodeOptions {
                precision: Precision::Us
            },
            &mut out
        )
        .unwrap_err()
        .to_string(),
        "line_opentsdb cannot write timestamps in us precision"
    );
    assert_eq!(
        encode(
            Format::LineOpentsdb,
            &b,
            &EncodeOptions {
                precision: Precision::S
            },
            &mut out
        )
        .unwrap_err()
        .to_string(),
        "row 0: field \"ts\": timestamp 1000001 us would lose digits in s precision"
    );
    let nulls = batch(
        ts_schema(vec![Field::column("v", DataType::Int4)]),
        vec![vec![ms(1), Value::Null, s("a")]],
    );
    assert_eq!(
        encode(Format::LineInfluxdb, &nulls, &o, &mut out)
            .unwrap_err()
            .to_string(),
        "row 0: nothing to write: every column of the row is null"
    );
    let nl = batch(
        ts_schema(vec![Field::column("v", DataType::Varchar)]),
        vec![vec![ms(1648432611249), s("a\nb"), s("a")]],
    );
    assert_eq!(
        encode(Format::LineInfluxdb, &nl, &o, &mut out)
            .unwrap_err()
            .to_string(),
        "row 0: field \"v\": line_influxdb cannot carry a line break"
    );
    assert_eq!(
        encode(Format::LineOpentsdb, &nl, &o, &mut out)
            .unwrap_err()
            .to_string(),
        "row 0: field \"v\": line_opentsdb cannot carry text values (telnet values are numbers)"
    );
    let old = batch(
        ts_schema(vec![Field::column("v", DataType::Int4)]),
        vec![vec![ms(5), Value::Int4(1), s("a")]],
    );
    assert_eq!(
        encode(Format::JsonOpentsdb, &old, &o, &mut out).unwrap_err().to_string(),
        "row 0: field \"ts\": json_opentsdb cannot carry a timestamp that would not read back (OpenTSDB takes 10-digit seconds or 13-digit milliseconds)"
    );
    let wide = batch(ts_schema(vec![]), vec![vec![ms(5)]]);
    assert_eq!(
        encode(Format::JsonKaiwudb, &wide, &o, &mut out)
            .unwrap_err()
            .to_string(),
        "the schema has 2 fields but row 0 has 1 values"
    );
}

#[test]
fn format_names_parse() {
    for f in Format::ALL {
        assert_eq!(f.as_str().parse::<Format>().unwrap(), f);
    }
    assert_eq!(
        "json".parse::<Format>().unwrap_err().to_string(),
        "unknown format \"json\"; expected one of json_kaiwudb, json_opentsdb, line_opentsdb, line_influxdb"
    );
}
