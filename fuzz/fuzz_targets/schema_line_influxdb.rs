//! InfluxDB line protocol's schema handling: measurements, tag keys and field
//! keys from hostile identifiers (escaped as the protocol wants, or not), field
//! values at every type's edge (`i`, `u`, floats, strings, booleans), many lines
//! of one measurement. Every outcome satisfies the decoder invariants of
//! `common/schema.rs`.
#![no_main]

#[path = "common/schema.rs"]
mod schema;

use kwpipe_components::formats::Format;
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

/// Escaped as the protocol wants (commas, spaces, equals signs), or, now and
/// then, raw.
fn ident(u: &mut Unstructured, used: &[String]) -> String {
    let n = schema::name(u, used).replace('\n', "_");
    if u.ratio(1, 8u8).unwrap_or(false) {
        n
    } else {
        n.replace('\\', "\\\\")
            .replace(',', "\\,")
            .replace(' ', "\\ ")
            .replace('=', "\\=")
    }
}

fn field_value(u: &mut Unstructured) -> String {
    let edges = [
        "1i",
        "-9223372036854775808i",
        "9223372036854775808i",
        "18446744073709551615u",
        "18446744073709551616u",
        "1e39",
        "-0",
        "NaN",
        "inf",
        "t",
        "FALSE",
        "\"\"",
        "\"a\\\"b\"",
        "\"\u{1b}[2J\"",
        "1.5",
        "9007199254740993",
    ];
    edges[u.choose_index(edges.len()).unwrap_or(0)].into()
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let measurement = ident(&mut u, &[]);
    let mut used = Vec::new();
    let mut lines = Vec::new();
    let wide = u.ratio(1, 16u8).unwrap_or(false);
    for i in 0..u.int_in_range(1..=6usize).unwrap_or(1) {
        let mut tags = Vec::new();
        for _ in 0..u.int_in_range(0..=3u8).unwrap_or(0) {
            let k = ident(&mut u, &used);
            let v = ident(&mut u, &[]);
            tags.push(format!(",{k}={v}"));
            used.push(k);
        }
        let mut fields = Vec::new();
        let count = if wide {
            4200
        } else {
            u.int_in_range(1..=4usize).unwrap_or(1)
        };
        for j in 0..count {
            let k = if wide {
                format!("f{i}_{j}")
            } else {
                ident(&mut u, &used)
            };
            fields.push(format!("{k}={}", field_value(&mut u)));
            used.push(k);
        }
        let ts = match u.int_in_range(0..=3u8).unwrap_or(0) {
            0 => String::new(),
            1 => " 1700000000000000000".into(),
            2 => " 99999999999999999999".into(),
            _ => " -1".into(),
        };
        lines.push(format!(
            "{measurement}{} {}{ts}",
            tags.concat(),
            fields.join(",")
        ));
    }
    schema::check(Format::LineInfluxdb, lines.join("\n").as_bytes());
});
