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
