//! What every decoder's output must satisfy, whatever schema the input declares
//! or implies, and a generator of hostile identifiers and values for the schema
//! targets (`schema_*`). Shared by `#[path]`, not a crate of its own.

#![allow(dead_code)]

use std::collections::HashSet;

use kwpipe_components::event::Precision;
use kwpipe_components::event::{TableKind, Value};
use kwpipe_components::formats::{decode, DecodeOptions, Decoded, Decoder, Format};
use libfuzzer_sys::arbitrary::Unstructured;

/// KWDB's limits, the same for every format.
pub const MAX_COLUMNS: usize = 4096;
pub const MAX_TAGS: usize = 128;

/// Decodes `payload` as `format` both without and with a schema cache (twice, so
/// the second pass hits it), checks every invariant, and that all agree.
pub fn check(format: Format, payload: &[u8]) {
    // A fixed "now", so lines without a timestamp decode alike every time.
    let options = DecodeOptions {
        precision: Precision::Ms,
        now: Some(kwpipe_components::event::Timestamp::new(
            1_700_000_000_000,
            Precision::Ms,
        )),
        database: None,
        device_key: Default::default(),
    };
    let plain = decode(format, payload, &options);
    invariants(format, &plain, payload);
    let mut decoder = Decoder::new(format, options);
    let first = decoder.decode(payload);
    let second = decoder.decode(payload);
    invariants(format, &second, payload);
    let show = |d: &Decoded| format!("{:?}{:?}", d.batches, d.errors);
    assert_eq!(
        show(&plain),
        show(&first),
        "a schema cache changed the outcome"
    );
    assert_eq!(
        show(&first),
        show(&second),
        "a cached schema changed the outcome"
    );
}

fn invariants(format: Format, d: &Decoded, payload: &[u8]) {
    for e in &d.errors {
        assert!(e.span.start <= e.span.end && e.span.end <= payload.len());
        let text = e.to_string();
        // A reason names where it is: a line.
        assert!(text.starts_with("line "), "{text}");
        assert!(!text.contains('\u{1b}'), "raw ESC in a reason: {text:?}");
    }
    for b in &d.batches {
        let s = &b.schema;
        assert!(
            !b.rows.is_empty(),
            "a batch without rows would create its table"
        );
        assert!(
            s.columns.len() <= MAX_COLUMNS,
            "{} columns",
            s.columns.len()
        );
        assert!(s.tags.len() <= MAX_TAGS, "{} tags", s.tags.len());
        assert!(!s.columns.is_empty());
        let mut names = HashSet::new();
        for f in s.fields() {
            assert!(names.insert(f.name.as_str()), "field {:?} twice", f.name);
        }
        if s.kind == TableKind::TimeSeries {
            assert!(s.columns[0].ty.is_timestamp(), "{:?}", s.columns[0]);
            // InfluxDB tags are never primary: its schema is a hint, the table
            // must exist (docs/formats.md).
            if format != Format::LineInfluxdb {
                assert!(s.primary_tags().next().is_some(), "no primary tag");
            }
        }
        for row in &b.rows {
            assert_eq!(row.len(), s.width());
            for (v, f) in row.iter().zip(s.fields()) {
                assert!(
                    f.nullable || *v != Value::Null,
                    "NULL in NOT NULL {:?}",
                    f.name
                );
            }
        }
    }
}

/// A name: mostly plain, sometimes one of the hostile kinds (quotes, escapes,
/// SQL, control characters, non-ASCII, empty, long, a near-duplicate).
pub fn name(u: &mut Unstructured, used: &[String]) -> String {
    let plain = [
        "ts",
        "v",
        "id",
        "host",
        "c1",
        "c2",
        "temp",
        "value",
        "timestamp",
        "a.b",
    ];
    match u.int_in_range(0..=15u8).unwrap_or(0) {
        0 => String::new(),
        1 => "x\"; DROP TABLE t; --".into(),
        2 => "line\nbreak".into(),
        3 => "esc\u{1b}[2J".into(),
        4 => "température".into(),
        5 => "n\u{0}ul".into(),
        6 => "x".repeat(u.int_in_range(60..=300usize).unwrap_or(64)),
        7 if !used.is_empty() => used[u.choose_index(used.len()).unwrap_or(0)].clone(),
        8 => "back\\slash".into(),
        9 => "sp ace,co=ma".into(),
        _ => {
            let base = plain[u.choose_index(plain.len()).unwrap_or(0)];
            let n: u8 = u.arbitrary().unwrap_or(0);
            if n % 3 == 0 {
                base.into()
            } else {
                format!("{base}{n}")
            }
        }
    }
}

/// A JSON value at some type's edge, as text.
pub fn json_value(u: &mut Unstructured) -> String {
    let edges = [
        "0",
        "-0",
        "1",
        "32767",
        "32768",
        "-32769",
        "2147483648",
        "-2147483649",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
        "18446744073709551616",
        "1e39",
        "-1e39",
        "3.4028235e38",
        "1e308",
        "1e309",
        "9007199254740993",
        "0.1",
        "true",
        "false",
        "null",
        "\"NaN\"",
        "\"Infinity\"",
        "\"-Infinity\"",
        "\"\"",
        "\"2024-01-22 22:22:22.224\"",
        "\"9999-12-31 23:59:59\"",
        "\"0000-01-01 00:00:00\"",
        "\"\\x4142\"",
        "\"\\ud800\"",
        "\"\\u0000\"",
        "\"a\\nb\"",
        "[]",
        "{}",
        "[[[[[[1]]]]]]",
        "1700000000000",
        "-62135596800001",
        "253402300800000",
    ];
    match u.int_in_range(0..=3u8).unwrap_or(0) {
        0 => {
            let s: String = u.arbitrary().unwrap_or_default();
            serde_json_string(&s)
        }
        1 => {
            let n: i64 = u.arbitrary().unwrap_or(0);
            n.to_string()
        }
        _ => edges[u.choose_index(edges.len()).unwrap_or(0)].into(),
    }
}

/// A JSON string literal of `s`.
pub fn serde_json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
