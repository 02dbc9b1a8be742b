//! Issue 19's decoder probes, kept: each states its expected outcome (a rejection
//! with its reason, never a value silently changed, never a panic, time linear in
//! the input).

use super::*;
use crate::event::{Precision, Timestamp, Value};

fn opts() -> DecodeOptions {
    DecodeOptions {
        precision: Precision::Ms,
        now: Some(Timestamp::new(1_700_000_000_000, Precision::Ms)),
        database: None,
        device_key: DeviceKey::None,
    }
}

fn errors(d: &Decoded) -> Vec<String> {
    d.errors.iter().map(|e| e.to_string()).collect()
}

fn values(d: &Decoded) -> Vec<Value> {
    d.batches
        .iter()
        .flat_map(|b| b.rows.iter().flat_map(|r| r.iter().cloned()))
        .collect()
}

/// Integers beyond u64 (and beyond i64) were stored rounded to the nearest f64;
/// the docs say they are rejected. Expected: rejected with the value named.
#[test]
fn opentsdb_integers_beyond_i64_are_rejected_not_rounded() {
    for big in [
        "18446744073709551617",
        "18446744073709551615",
        "9223372036854775808",
        "-9223372036854775809",
        "123456789012345678901234567890",
    ] {
        let json = format!(
            r#"{{"metric":"t.m","timestamp":1700000000,"value":{big},"tags":{{"h":"a"}}}}"#
        );
        let d = decode(Format::JsonOpentsdb, json.as_bytes(), &opts());
        assert_eq!(d.row_count(), 0, "{big}: {:?}", values(&d));
        assert_eq!(d.errors.len(), 1, "{big}");
        assert!(errors(&d)[0].contains(big), "{:?}", errors(&d));
        let telnet = format!("put t.m 1700000000 {big} h=a\n");
        let d = decode(Format::LineOpentsdb, telnet.as_bytes(), &opts());
        assert_eq!(d.row_count(), 0, "{big}: {:?}", values(&d));
        assert!(errors(&d)[0].contains(big), "{:?}", errors(&d));
    }
    // Floats, however large, are floats.
    for (text, v) in [
        ("1e19", 1e19),
        ("18446744073709551617.0", 18446744073709551617.0),
    ] {
        let json = format!(
            r#"{{"metric":"t.m","timestamp":1700000000,"value":{text},"tags":{{"h":"a"}}}}"#
        );
        let d = decode(Format::JsonOpentsdb, json.as_bytes(), &opts());
        assert_eq!(d.errors.len(), 0, "{:?}", errors(&d));
        assert!(values(&d).contains(&Value::Float8(v)), "{:?}", values(&d));
    }
    let d = decode(
        Format::JsonOpentsdb,
        br#"{"metric":"t.m","timestamp":1700000000,"value":42,"tags":{"h":"a"}}"#,
        &opts(),
    );
    assert!(
        values(&d).contains(&Value::Float8(42.0)),
        "{:?}",
        values(&d)
    );
}

/// Both json_kaiwudb paths (fast, and serde when the fast one gives up), one
/// outcome each.
fn both_paths(payload: &[u8]) -> [Decoded; 2] {
    let o = opts();
    [
        decode(Format::JsonKaiwudb, payload, &o),
        json_kaiwudb::serde_path_only(|| decode(Format::JsonKaiwudb, payload, &o)),
    ]
}

fn wide_object(n: usize, reversed_row: bool) -> String {
    let mut cols = String::from(r#"{"name":"ts","type":"TIMESTAMP"}"#);
    let mut row: Vec<String> = vec![r#""ts":1700000000000"#.into()];
    for i in 1..n {
        cols.push_str(&format!(r#",{{"name":"c{i}","type":"INT4"}}"#));
        row.push(format!(r#""c{i}":{i}"#));
    }
    if reversed_row {
        row.reverse();
    }
    format!(
        r#"{{"table":"w","columns":[{cols}],"tags":[{{"name":"h","type":"INT4","primary":true}}],"data":[{{{},"h":1}}]}}"#,
        row.join(",")
    )
}

/// json_kaiwudb decode was quadratic in declared columns, without a cap (80k
/// columns 7.3 s, 1M did not finish in a minute). Expected: past 4096 columns
/// the object is rejected with the same reason as the other formats, in one pass
/// over its bytes; at the cap, a row whose keys come in reverse order decodes.
#[test]
fn json_kaiwudb_declarations_are_capped_and_decoded_in_linear_time() {
    let started = std::time::Instant::now();
    let huge = wide_object(200_000, false);
    for d in both_paths(huge.as_bytes()) {
        assert_eq!(d.row_count(), 0);
        assert_eq!(
            errors(&d),
            ["line 1: more than 4096 columns or 128 tags for one table"]
        );
        assert!(d.batches.is_empty());
    }
    let many_tags: Vec<String> = (0..129)
        .map(|i| format!(r#"{{"name":"g{i}","type":"INT4","primary":true}}"#))
        .collect();
    let tags = format!(
        r#"{{"table":"t","columns":[{{"name":"ts","type":"TIMESTAMP"}}],"tags":[{}],"data":[]}}"#,
        many_tags.join(",")
    );
    for d in both_paths(tags.as_bytes()) {
        assert_eq!(
            errors(&d),
            ["line 1: more than 4096 columns or 128 tags for one table"]
        );
    }
    let at_cap = wide_object(4096, true);
    for d in both_paths(at_cap.as_bytes()) {
        assert_eq!(errors(&d), Vec::<String>::new());
        assert_eq!(d.row_count(), 1);
        assert_eq!(d.batches[0].rows[0][4095], Value::Int4(4095));
    }
    // Debug build, a loaded machine: a bound only a quadratic decode breaks.
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

/// `"database"` after `"data"` was honoured by the fast path and dropped by the
/// serde path, which takes over when a value holds an escape: the same message
/// went to another database depending on a `\n`. Expected: honoured by both.
#[test]
fn json_kaiwudb_database_after_data_is_honoured_by_both_paths() {
    let plain = r#"{"table":"t","columns":[{"name":"ts","type":"TIMESTAMP"},{"name":"s","type":"VARCHAR"}],"tags":[{"name":"h","type":"INT4","primary":true}],"data":[{"ts":1,"s":"x","h":1}],"database":"other"}"#;
    let escaped = plain.replace(r#""s":"x""#, r#""s":"x\ny""#);
    for payload in [plain.to_string(), escaped] {
        for d in both_paths(payload.as_bytes()) {
            assert_eq!(errors(&d), Vec::<String>::new());
            assert_eq!(d.batches.len(), 1, "{payload}");
            assert_eq!(
                d.batches[0].target.database.as_deref(),
                Some("other"),
                "{payload}"
            );
            assert_eq!(d.batches[0].rows.len(), 1);
        }
    }
}

/// A valid schema followed by a row with a lone surrogate (`"\ud800"`: invalid
/// JSON) was rejected, yet its table was created with 0 rows. Expected: the
/// message is rejected with its reason and no batch (so no DDL) comes of it.
#[test]
fn a_rejected_message_leaves_no_empty_batch_behind() {
    let bad = r#"{"table":"e","columns":[{"name":"ts","type":"TIMESTAMP"},{"name":"s","type":"VARCHAR"}],"tags":[{"name":"h","type":"INT4","primary":true}],"data":[{"ts":1,"s":"\ud800","h":1}]}"#;
    for d in both_paths(bad.as_bytes()) {
        assert_eq!(d.errors.len(), 1);
        assert!(errors(&d)[0].contains("invalid JSON"), "{:?}", errors(&d));
        assert!(d.batches.is_empty(), "{:?}", d.batches);
    }
    // The same for every format: a rejected record leaves no batch.
    for (format, payload) in [
        (
            Format::JsonOpentsdb,
            &br#"{"metric":"t.m","timestamp":1700000000,"value":"\ud800"}"#[..],
        ),
        (Format::LineOpentsdb, b"put t.m 1700000000 x h=a"),
        (Format::LineInfluxdb, b"t v=1 99999999999999999999999"),
    ] {
        let d = decode(format, payload, &opts());
        assert_eq!(d.errors.len(), 1, "{format:?}");
        assert!(d.batches.is_empty(), "{format:?}: {:?}", d.batches);
    }
}

/// A json_kaiwudb object of one column of `ty` holding `value`.
fn one_value(ty: &str, value: &str) -> String {
    format!(
        r#"{{"table":"t","columns":[{{"name":"ts","type":"TIMESTAMP"}},{{"name":"v","type":"{ty}"}}],"tags":[{{"name":"h","type":"INT4","primary":true}}],"data":[{{"ts":1,"v":{value},"h":1}}]}}"#
    )
}

/// Values at every type's edge: the last value a type holds is accepted exactly,
/// the next one is rejected with a reason naming the field, on both paths.
#[test]
fn values_at_every_types_edge_are_kept_exactly_or_rejected() {
    let accepted = [
        ("INT2", "32767", Value::Int2(i16::MAX)),
        ("INT2", "-32768", Value::Int2(i16::MIN)),
        ("INT4", "2147483647", Value::Int4(i32::MAX)),
        ("INT4", "-2147483648", Value::Int4(i32::MIN)),
        ("INT8", "9223372036854775807", Value::Int8(i64::MAX)),
        ("INT8", "-9223372036854775808", Value::Int8(i64::MIN)),
        ("FLOAT4", "3.4028235e38", Value::Float4(f32::MAX)),
        ("FLOAT8", "1.7976931348623157e308", Value::Float8(f64::MAX)),
        ("FLOAT8", "5e-324", Value::Float8(5e-324)),
        ("BOOL", "true", Value::Bool(true)),
        ("VARCHAR", r#""""#, Value::String(String::new())),
    ];
    for (ty, text, want) in accepted {
        for d in both_paths(one_value(ty, text).as_bytes()) {
            assert_eq!(errors(&d), Vec::<String>::new(), "{ty} {text}");
            assert_eq!(d.batches[0].rows[0][1], want, "{ty} {text}");
        }
    }
    let rejected = [
        ("INT2", "32768"),
        ("INT2", "-32769"),
        ("INT4", "2147483648"),
        ("INT4", "-2147483649"),
        ("INT8", "9223372036854775808"),
        ("INT8", "-9223372036854775809"),
        ("INT8", "1e3"),
        ("INT4", "1.5"),
        ("FLOAT4", "3.5e38"),
        ("FLOAT8", "1e309"),
        ("BOOL", "1"),
        ("INT4", r#""1""#),
        ("TIMESTAMP", "9223372036854775807"),
        ("TIMESTAMP", r#""10000-01-01 00:00:00""#),
        ("TIMESTAMP", r#""2024-02-30 00:00:00""#),
    ];
    for (ty, text) in rejected {
        let object = if ty == "TIMESTAMP" {
            // The timestamp column itself.
            one_value("INT4", "1").replace(r#""ts":1,"#, &format!(r#""ts":{text},"#))
        } else {
            one_value(ty, text)
        };
        for d in both_paths(object.as_bytes()) {
            assert_eq!(d.row_count(), 0, "{ty} {text} was accepted");
            assert_eq!(d.errors.len(), 1, "{ty} {text}");
            let e = errors(&d)[0].clone();
            // serde_json refuses a literal beyond f64 as bad JSON; the others
            // name the field.
            assert!(
                e.contains("field") || e.contains("out of range"),
                "{ty} {text}: {e}"
            );
        }
    }
    // InfluxDB: the integer suffixes at their edges.
    for (line, ok) in [
        ("m v=9223372036854775807i 1", true),
        ("m v=9223372036854775808i 1", false),
        ("m v=-9223372036854775808i 1", true),
        // Unsigned values go to INT8: beyond i64 they do not fit.
        ("m v=9223372036854775807u 1", true),
        ("m v=18446744073709551615u 1", false),
        ("m v=18446744073709551616u 1", false),
        ("m v=1e309 1", false),
    ] {
        let d = decode(Format::LineInfluxdb, line.as_bytes(), &opts());
        assert_eq!(d.errors.is_empty(), ok, "{line}: {:?}", errors(&d));
        assert_eq!(d.row_count(), usize::from(ok), "{line}");
    }
}

/// Huge and deeply nested messages: rejected with a reason in bounded time and
/// memory, never a stack overflow, on every format.
#[test]
fn huge_and_deeply_nested_messages_are_rejected_with_a_reason() {
    let started = std::time::Instant::now();
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    // Deep nesting under a key json_kaiwudb ignores is ignored by both paths
    // alike (the fast one hands such an object to serde's, so they agree).
    let ignored = one_value("INT4", "1").replacen('{', &format!(r#"{{"x":{},"#, deep(200)), 1);
    let [fast, serde] = both_paths(ignored.as_bytes());
    assert_eq!(format!("{fast:?}"), format!("{serde:?}"));
    let nested = [
        // In a row value, as the whole object, unclosed.
        one_value("INT4", &deep(100_000)),
        deep(1_000_000),
        "{".repeat(1_000_000),
    ];
    for payload in &nested {
        for d in both_paths(payload.as_bytes()) {
            assert_eq!(d.row_count(), 0);
            assert!(!d.errors.is_empty());
        }
        for format in [
            Format::JsonOpentsdb,
            Format::LineOpentsdb,
            Format::LineInfluxdb,
        ] {
            let d = decode(format, payload.as_bytes(), &opts());
            assert_eq!(d.row_count(), 0, "{format:?}");
        }
    }
    let tsdb = format!(
        r#"{{"metric":"t.m","timestamp":1700000000,"value":1,"tags":{{"h":{}}}}}"#,
        deep(100_000)
    );
    let d = decode(Format::JsonOpentsdb, tsdb.as_bytes(), &opts());
    assert_eq!(d.row_count(), 0);
    assert_eq!(d.errors.len(), 1);
    // Many lines that each open an object never closed: each is rejected alone,
    // and looking for a multi-line object does not make the payload quadratic.
    let open = "{\"table\":\"t\",\n".repeat(50_000);
    for d in both_paths(open.as_bytes()) {
        assert_eq!(d.row_count(), 0);
        assert!(!d.errors.is_empty());
    }
    // One huge string value, far past VARCHAR's length: rejected, named.
    let huge = one_value("VARCHAR", &format!("\"{}\"", "x".repeat(8 << 20)));
    for d in both_paths(huge.as_bytes()) {
        assert_eq!(d.row_count(), 0);
        assert!(errors(&d)[0].contains("\"v\""), "{:?}", errors(&d));
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(120));
}

/// Found by fuzzing: a reason quoting a name (`"x" is declared twice`) carried
/// the name's ESC raw into logs, dead-letter headers and `transcode`'s output.
/// Expected: every rejection's text has its control characters escaped.
#[test]
fn reasons_quoting_names_escape_their_control_characters() {
    let dup = r#"{"table":"t","columns":[{"name":"ts","type":"TIMESTAMP"},{"name":"e\u001b[2J","type":"INT4"},{"name":"e\u001b[2J","type":"INT4"}],"data":[]}"#;
    let tsdb = r#"{"metric":"e\u001b[2J","timestamp":1700000000,"value":1}"#;
    for (format, payload) in [
        (Format::JsonKaiwudb, dup.to_string()),
        (Format::JsonOpentsdb, tsdb.to_string()),
        (
            Format::LineInfluxdb,
            "t,a=1 a\u{1b}=1i,a\u{1b}=2i 1".to_string(),
        ),
    ] {
        let d = decode(format, payload.as_bytes(), &opts());
        assert!(!d.errors.is_empty(), "{format:?}");
        for e in errors(&d) {
            assert!(!e.chars().any(char::is_control), "{format:?}: {e:?}");
        }
    }
}
