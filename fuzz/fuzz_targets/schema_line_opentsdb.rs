//! OpenTSDB telnet's schema handling: `put metric ts value k=v...` lines with
//! hostile metric and tag names and values at every type's edge, many lines of
//! one table. Every outcome satisfies the decoder invariants of
//! `common/schema.rs`.
#![no_main]

#[path = "common/schema.rs"]
mod schema;

use kwpipe_components::formats::Format;
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

fn token(u: &mut Unstructured, used: &[String]) -> String {
    // Telnet tokens cannot hold spaces or line breaks; whatever is left is fair.
    schema::name(u, used).replace([' ', '\n', '\r', '\t'], "_")
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let table = token(&mut u, &[]);
    let mut used = Vec::new();
    let mut lines = Vec::new();
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
            token(&mut u, &used)
        };
        used.push(column.clone());
        let mut tags = Vec::new();
        for _ in 0..u.int_in_range(0..=3u8).unwrap_or(1) {
            let k = token(&mut u, &used);
            let v = token(&mut u, &[]);
            tags.push(format!("{k}={v}"));
        }
        let value = schema::json_value(&mut u).replace([' ', '\n'], "");
        let ts = if u.ratio(3, 4u8).unwrap_or(true) {
            "1700000000".to_string()
        } else {
            schema::json_value(&mut u).replace([' ', '\n'], "")
        };
        lines.push(format!(
            "put {table}.{column} {ts} {value} {}",
            tags.join(" ")
        ));
    }
    schema::check(Format::LineOpentsdb, lines.join("\n").as_bytes());
});
