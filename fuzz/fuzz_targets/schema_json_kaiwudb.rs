//! json_kaiwudb's schema handling: objects declaring hostile columns and tags
//! (names, types in any case or unknown, lengths, nullability, primary flags,
//! duplicates, counts past the limits), rows with keys in any order, edge values,
//! `database` before or after `data`. Every outcome satisfies the decoder
//! invariants of `common/schema.rs`, with and without the schema cache.
#![no_main]

#[path = "common/schema.rs"]
mod schema;

use kwpipe_components::formats::Format;
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 22] = [
    "TIMESTAMP",
    "timestamptz",
    "DATE",
    "INT2",
    "int4",
    "INT8",
    "FLOAT4",
    "FLOAT8",
    "BOOL",
    "CHAR",
    "NCHAR",
    "VARCHAR",
    "nvarchar",
    "VARBYTES",
    "BYTES",
    "TEXT",
    "DECIMAL",
    "GEOMETRY",
    "INT3",
    "",
    "VARCHAR(10)",
    "Timestamp",
];

fn spec(u: &mut Unstructured, name: &str, tag: bool) -> String {
    let ty = TYPES[u.choose_index(TYPES.len()).unwrap_or(0)];
    let mut s = format!(
        r#"{{"name":{},"type":"{ty}""#,
        schema::serde_json_string(name)
    );
    if u.ratio(1, 4u8).unwrap_or(false) {
        let len: i64 = u.int_in_range(-1..=70000).unwrap_or(0);
        s.push_str(&format!(r#","length":{len}"#));
    }
    if u.ratio(1, 3u8).unwrap_or(false) {
        s.push_str(&format!(
            r#","nullable":{}"#,
            u.arbitrary::<bool>().unwrap_or(false)
        ));
    }
    if tag && u.ratio(1, 2u8).unwrap_or(false) {
        let key = if u.arbitrary().unwrap_or(false) {
            "primary"
        } else {
            "isPrimary"
        };
        s.push_str(&format!(
            r#","{key}":{}"#,
            u.arbitrary::<bool>().unwrap_or(true)
        ));
    }
    s.push('}');
    s
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut names: Vec<String> = Vec::new();
    let columns = match u.int_in_range(0..=20u8).unwrap_or(0) {
        // Now and then past the limit: rejected in one pass, never quadratic.
        0 => 4097 + u.int_in_range(0..=100usize).unwrap_or(0),
        n => n as usize,
    };
    let mut cols = Vec::new();
    for i in 0..columns {
        let n = if columns > 100 {
            format!("c{i}")
        } else {
            schema::name(&mut u, &names)
        };
        cols.push(spec(&mut u, &n, false));
        names.push(n);
    }
    let tags = match u.int_in_range(0..=30u8).unwrap_or(0) {
        0 => 129,
        n => (n % 4) as usize,
    };
    let mut tgs = Vec::new();
    for i in 0..tags {
        let n = if tags > 100 {
            format!("g{i}")
        } else {
            schema::name(&mut u, &names)
        };
        tgs.push(spec(&mut u, &n, true));
        names.push(n);
    }
    let mut rows = Vec::new();
    for _ in 0..u.int_in_range(0..=3u8).unwrap_or(1) {
        let mut fields: Vec<String> = Vec::new();
        for n in names.iter().take(200) {
            if u.ratio(5, 6u8).unwrap_or(true) {
                fields.push(format!(
                    "{}:{}",
                    schema::serde_json_string(n),
                    schema::json_value(&mut u)
                ));
            }
        }
        if u.ratio(1, 8u8).unwrap_or(false) {
            let extra = schema::name(&mut u, &names);
            fields.push(format!("{}:1", schema::serde_json_string(&extra)));
        }
        if u.arbitrary().unwrap_or(false) {
            fields.reverse();
        }
        rows.push(format!("{{{}}}", fields.join(",")));
    }
    let table = schema::name(&mut u, &[]);
    let mut parts = vec![
        format!(r#""table":{}"#, schema::serde_json_string(&table)),
        format!(r#""columns":[{}]"#, cols.join(",")),
    ];
    if tags > 0 || u.arbitrary().unwrap_or(false) {
        parts.push(format!(r#""tags":[{}]"#, tgs.join(",")));
    }
    parts.push(format!(r#""data":[{}]"#, rows.join(",")));
    match u.int_in_range(0..=3u8).unwrap_or(0) {
        0 => parts.insert(0, r#""database":"d1""#.into()),
        1 => parts.push(r#""database":"d2""#.into()),
        _ => {}
    }
    // Either order of the keys: the one-pass and the captured-data paths.
    if u.arbitrary().unwrap_or(false) {
        parts.rotate_left(2);
    }
    let object = format!("{{{}}}", parts.join(","));
    schema::check(Format::JsonKaiwudb, object.as_bytes());
    // And the object twice in one payload, the second meeting a cached schema.
    let twice = format!("{object}\n{object}\n");
    schema::check(Format::JsonKaiwudb, twice.as_bytes());
});
