//! OpenTSDB JSON's schema handling: metrics (`table.column`) and tag names from
//! hostile identifiers, values at every type's edge, many points of one table
//! (columns and tags accumulate up to the limits). Every outcome satisfies the
//! decoder invariants of `common/schema.rs`.
#![no_main]

#[path = "common/schema.rs"]
mod schema;

use kwpipe_components::formats::Format;
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let table = schema::name(&mut u, &[]);
    let mut used = Vec::new();
    let mut points = Vec::new();
    let wide = u.ratio(1, 16u8).unwrap_or(false);
    let n = if wide {
        4200
    } else {
        u.int_in_range(1..=8usize).unwrap_or(1)
    };
    for i in 0..n {
        let column = if wide {
            format!("c{i}")
        } else {
            schema::name(&mut u, &used)
        };
        used.push(column.clone());
        let metric = if u.ratio(1, 10u8).unwrap_or(false) {
            column.clone()
        } else {
            format!("{table}.{column}")
        };
        let mut tags = Vec::new();
        for _ in 0..u.int_in_range(0..=3u8).unwrap_or(1) {
            let k = schema::name(&mut u, &used);
            let v = schema::json_value(&mut u);
            tags.push(format!("{}:{v}", schema::serde_json_string(&k)));
        }
        let ts = match u.int_in_range(0..=4u8).unwrap_or(0) {
            0 => "1700000000".to_string(),
            1 => "1700000000000".to_string(),
            _ => schema::json_value(&mut u),
        };
        points.push(format!(
            r#"{{"metric":{},"timestamp":{ts},"value":{},"tags":{{{}}}}}"#,
            schema::serde_json_string(&metric),
            schema::json_value(&mut u),
            tags.join(",")
        ));
    }
    let payload = if u.arbitrary().unwrap_or(false) {
        format!("[{}]\n", points.join(","))
    } else {
        points.join("\n")
    };
    schema::check(Format::JsonOpentsdb, payload.as_bytes());
});
