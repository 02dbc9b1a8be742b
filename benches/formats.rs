//! Codec throughput, each decoder side by side with a baseline in the same run:
//! `line_influxdb` against the `influxdb-line-protocol` crate (Vector's parser)
//! parsing the same lines, `json_kaiwudb` against `serde_json::Value`.
//! Throughput is in bytes; rows per payload are printed so rows/s can be derived.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kwpipe_components::event::{Precision, RowBatch};
use kwpipe_components::formats::{self, DecodeOptions, EncodeOptions, Format};

// The agent's allocator and settings (src/main.rs), so these figures compare
// with the agent's.
kwpipe_components::agent_allocator!();

const ROWS: usize = 2000;

/// Lines both parsers take: standard line protocol.
fn standard_influx() -> String {
    let mut s = String::new();
    for i in 0..ROWS {
        s.push_str(&format!(
            "cpu,host=server{:02},region=us-west-{} usage_user={}.5,usage_system={}.25,usage_idle=84.125,count={}i,ok=true,msg=\"hello world {}\" {}\n",
            i % 50,
            i % 4,
            i % 100,
            i % 7,
            i * 3,
            i,
            1_648_432_611_249_000_000i64 + i as i64 * 1_000_000
        ));
    }
    s
}

/// Lines in the connector's flavour (typed suffixes, L"..." strings).
fn kaiwudb_influx() -> String {
    let mut s = String::new();
    for i in 0..ROWS {
        s.push_str(&format!(
            "ts_line_influxdb_tb,tag_name=tag_{} c1={}i16,c2={}i32,c3={}i64,c4={}.8f32,c5=0.{}f64,c6=true,c7=\"{}\",c9='a',c10=L\"天津\",c13=1648432611249 {}\n",
            i % 50,
            i % 1000,
            i * 7,
            i as i64 * 1_000_003,
            i % 90,
            i,
            i * 11,
            1_648_432_611_249_000_000i64 + i as i64 * 1_000_000
        ));
    }
    s
}

fn json_kaiwudb() -> String {
    let head = r#"{"table":"ts_json_kaiwudb_tb","columns":[{"name":"ts","type":"TIMESTAMPTZ","length":64},{"name":"c1","type":"INT2","length":16},{"name":"c2","type":"INT4","length":32},{"name":"c3","type":"INT8","length":64},{"name":"c4","type":"FLOAT4","length":32},{"name":"c5","type":"FLOAT8","length":64},{"name":"c6","type":"BOOL","length":1}],"tags":[{"name":"location","type":"VARCHAR","length":64,"primary":true,"nullable":false},{"name":"temperature","type":"FLOAT4","length":64,"primary":false,"nullable":true}],"data":["#;
    let mut s = String::new();
    for obj in 0..ROWS / 100 {
        s.push_str(head);
        for r in 0..100 {
            let i = obj * 100 + r;
            if r > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                r#"{{"ts":{},"c1":{},"c2":{},"c3":{},"c4":{}.14545,"c5":{}.15656,"c6":{},"location":"tianjin{}","temperature":35.5}}"#,
                1_690_855_924_005i64 + i as i64,
                i % 1000,
                i * 21,
                2_535_208_944_865_431_245i64 - i as i64,
                i % 10,
                i % 13,
                i % 2 == 0,
                i % 20
            ));
        }
        s.push_str("]}\n");
    }
    s
}

fn opentsdb_telnet() -> String {
    let mut s = String::new();
    for i in 0..ROWS {
        let ts = 1_648_432_611_249i64 + (i / 2) as i64;
        s.push_str(&format!(
            "sys.cpu.c{} {} {}.{} host=web{:02} dc=lga\n",
            i % 2,
            ts,
            i % 97,
            i % 10,
            (i / 2) % 40
        ));
    }
    s
}

fn opentsdb_json() -> String {
    let mut s = String::from("[");
    for i in 0..ROWS {
        if i > 0 {
            s.push(',');
        }
        let ts = 1_648_432_611_249i64 + (i / 2) as i64;
        s.push_str(&format!(
            r#"{{"metric":"sys.cpu.c{}","timestamp":{},"value":{}.{},"tags":{{"host":"web{:02}","dc":"lga"}}}}"#,
            i % 2,
            ts,
            i % 97,
            i % 10,
            (i / 2) % 40
        ));
    }
    s.push_str("]\n");
    s
}

fn decoded(format: Format, payload: &[u8], p: Precision) -> Vec<RowBatch> {
    let d = formats::decode(format, payload, &DecodeOptions::new(p));
    assert!(
        d.errors.is_empty(),
        "{:?}",
        &d.errors[..d.errors.len().min(3)]
    );
    d.batches.into_iter().map(|b| b.into_row_batch()).collect()
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

fn bench_decode(c: &mut Criterion) {
    let cases: Vec<(&str, Format, String, Precision)> = vec![
        (
            "line_influxdb/standard",
            Format::LineInfluxdb,
            standard_influx(),
            Precision::Ns,
        ),
        (
            "line_influxdb/kaiwudb",
            Format::LineInfluxdb,
            kaiwudb_influx(),
            Precision::Ns,
        ),
        (
            "json_kaiwudb",
            Format::JsonKaiwudb,
            json_kaiwudb(),
            Precision::Ms,
        ),
        (
            "json_opentsdb",
            Format::JsonOpentsdb,
            opentsdb_json(),
            Precision::Ms,
        ),
        (
            "line_opentsdb",
            Format::LineOpentsdb,
            opentsdb_telnet(),
            Precision::Ms,
        ),
    ];
    for (name, format, payload, p) in &cases {
        let rows: usize = decoded(*format, payload.as_bytes(), *p)
            .iter()
            .map(|b| b.rows.len())
            .sum();
        println!("{name}: {} bytes, {rows} rows per payload", payload.len());
        let mut g = c.benchmark_group(format!("decode/{name}"));
        g.throughput(Throughput::Bytes(payload.len() as u64));
        let options = DecodeOptions::new(*p);
        g.bench_function("kwpipe", |b| {
            b.iter(|| {
                black_box(formats::decode(
                    *format,
                    black_box(payload.as_bytes()),
                    &options,
                ))
            })
        });
        if *name == "line_influxdb/standard" {
            g.bench_function("influxdb-line-protocol", |b| {
                b.iter(|| {
                    let mut n = 0usize;
                    for line in influxdb_line_protocol::parse_lines(black_box(payload)) {
                        n += black_box(line.expect("valid line")).field_set.len();
                    }
                    n
                })
            });
        }
        if *name == "json_kaiwudb" {
            g.bench_function("serde_json::Value", |b| {
                b.iter(|| {
                    let mut n = 0usize;
                    for line in black_box(payload).lines() {
                        let v: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
                        n += black_box(v)["data"].as_array().map_or(0, Vec::len);
                    }
                    n
                })
            });
        }
        g.finish();
    }
}

fn bench_encode(c: &mut Criterion) {
    let influx = decoded(
        Format::LineInfluxdb,
        kaiwudb_influx().as_bytes(),
        Precision::Ns,
    );
    let json = decoded(
        Format::JsonKaiwudb,
        json_kaiwudb().as_bytes(),
        Precision::Ms,
    );
    let tsdb = decoded(
        Format::LineOpentsdb,
        opentsdb_telnet().as_bytes(),
        Precision::Ms,
    );
    let cases: Vec<(Format, &Vec<RowBatch>, Precision)> = vec![
        (Format::LineInfluxdb, &influx, Precision::Ns),
        (Format::JsonKaiwudb, &json, Precision::Ms),
        (Format::JsonOpentsdb, &tsdb, Precision::Ms),
        (Format::LineOpentsdb, &tsdb, Precision::Ms),
    ];
    for (format, batches, p) in cases {
        let options = EncodeOptions { precision: p };
        let mut out = Vec::new();
        for b in batches.iter() {
            formats::encode(format, b, &options, &mut out).expect("encodable");
        }
        let rows: usize = batches.iter().map(|b| b.rows.len()).sum();
        println!("encode {format}: {} bytes, {rows} rows per run", out.len());
        let mut g = c.benchmark_group(format!("encode/{format}"));
        g.throughput(Throughput::Bytes(out.len() as u64));
        g.bench_function("kwpipe", |b| {
            b.iter(|| {
                out.clear();
                for batch in batches.iter() {
                    formats::encode(format, batch, &options, &mut out).expect("encodable");
                }
                black_box(out.len())
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_decode, bench_encode
}
criterion_main!(benches);
