//! 1,000,000 rows shaped like the seed's `ts_json_kaiwudb_tb` as json_kaiwudb
//! messages of 100 rows through decode -> batch -> kwdb sink (postgres dialect: the
//! default COPY path and the INSERT path KWDB uses), and as already-decoded batches
//! through batch -> kwdb (the database leg alone),
//! side by side with `psql` loading the same rows by `COPY ... FROM STDIN` and by
//! 1000-row multi-row INSERTs. Each kwpipe run is a child process, so its peak RSS
//! is its own. Prints a Markdown table for benches/README.md.
//!
//! Env: KWPIPE_TEST_PG (server URL), KWPIPE_BENCH_ROWS (default 1000000).

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kwpipe_components::api::GlobalOptions;
use kwpipe_components::formats::{encode, EncodeOptions, Format};
use kwpipe_components::kwdb::tokio_postgres::{self, NoTls};
use kwpipe_components::kwdb::values::{render_insert, write_value, CopyText};
use kwpipe_components::kwdb::{Dialect, Sql};
use kwpipe_components::sinks::kwdb::{KwdbSinkConfig, WriteMethod};
use kwpipe_components::transforms::batch::BatchConfig;
use kwpipe_components::transforms::decode::DecodeConfig;
use kwpipe_components::{
    BatchNotifier, BuildContext, ComponentConfig, ComponentContext, DataType, Event, EventStatus,
    Field, Precision, RawMessage, Row, RowBatch, TableKind, TableSchema, Target, Timestamp, Value,
};
use tokio::sync::mpsc;

// The agent's allocator and settings (src/main.rs), so these figures compare
// with the agent's.
kwpipe_components::agent_allocator!();

const MSG_ROWS: usize = 100;

fn schema() -> Arc<TableSchema> {
    Arc::new(TableSchema::new(
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
            Field::tag("temperature", DataType::Float4, false),
        ],
    ))
}

fn row(n: u64) -> Row {
    vec![
        Value::Timestamp(Timestamp::new(
            1_690_855_924_005 + (n / 10) as i64,
            Precision::Ms,
        )),
        Value::Int2((n % 30_000) as i16),
        Value::Int4(n as i32),
        Value::Int8((n as i64).wrapping_mul(2_535_208_944_865)),
        Value::Float4(n as f32 * 0.25 + 0.14545),
        Value::Float8(n as f64 * 0.5 + 0.15656),
        Value::Bool(n.is_multiple_of(2)),
        Value::String(format!("loc{}", n % 10)),
        Value::Float4(35.5),
    ]
}

fn server() -> String {
    std::env::var("KWPIPE_TEST_PG")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432".into())
}

fn rows_total() -> u64 {
    std::env::var("KWPIPE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Child mode: source -> [decode ->] batch -> kwdb sink into `table`; prints
/// "secs rss_kib". With `decode`, the source emits json_kaiwudb messages (encoded
/// as it goes, as a Kafka source would hand them on) and the decode transform
/// turns them into rows.
async fn run_kwpipe(db_url: &str, table: &str, method: WriteMethod, decode: bool) {
    let total = rows_total();
    let s = schema();
    let (src_tx, first_rx) = mpsc::channel::<Event>(64);
    let (mid_tx, mid_rx) = mpsc::channel::<Event>(8);
    let globals = Arc::new(GlobalOptions::default());
    let bcx = BuildContext {
        id: "b".into(),
        globals: globals.clone(),
    };
    // With decode: source -> decode -> (dec_rx) -> batch; else source -> batch.
    let (src_rx, decoder) = if decode {
        let (dec_tx, dec_rx) = mpsc::channel::<Event>(64);
        let d = DecodeConfig {
            format: Format::JsonKaiwudb,
            timestamp_precision: Some(Precision::Ms),
            database: None,
            device_key: false,
            primary_tags: Vec::new(),
            connect_error_headers: false,
            log_records: false,
        }
        .build(&bcx)
        .await
        .unwrap();
        let dcx = ComponentContext::standalone("decode", "decode", Some(first_rx), Some(dec_tx))
            .with_globals(globals.clone());
        (dec_rx, Some((d, dcx)))
    } else {
        (first_rx, None)
    };
    let batch = BatchConfig {
        max_rows: 1000,
        max_bytes: 8 << 20,
        timeout: Duration::from_secs(1),
    }
    .build(&bcx)
    .await
    .unwrap();
    let bcx_ = ComponentContext::standalone("batch", "batch", Some(src_rx), Some(mid_tx))
        .with_globals(globals.clone());
    let mut cfg = KwdbSinkConfig::new(db_url);
    cfg.write_method = Some(method);
    let sink = cfg.build(&bcx).await.unwrap();
    let scx =
        ComponentContext::standalone("sink", "kwdb", Some(mid_rx), None).with_globals(globals);
    let started = Instant::now();
    let d = decoder.map(|(d, dcx)| tokio::spawn(d.run(dcx)));
    let b = tokio::spawn(batch.run(bcx_));
    let k = tokio::spawn(sink.run(scx));
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    let checker = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(rx) = ack_rx.recv().await {
            assert_eq!(rx.await, EventStatus::Delivered);
            n += 1;
        }
        n
    });
    let mut n = 0u64;
    while n < total {
        let k = (MSG_ROWS as u64).min(total - n);
        let rows = (n..n + k).map(row).collect();
        let (fin, rx) = BatchNotifier::pair();
        let mut rb = RowBatch::new(Target::table(table), s.clone(), rows);
        let event = if decode {
            let mut payload = Vec::with_capacity(MSG_ROWS * 220);
            encode(
                Format::JsonKaiwudb,
                &rb,
                &EncodeOptions::default(),
                &mut payload,
            )
            .unwrap();
            Event::Raw(RawMessage::new(payload).with_finalizers(fin))
        } else {
            rb.finalizers = fin;
            Event::Rows(rb)
        };
        src_tx.send(event).await.unwrap();
        ack_tx.send(rx).unwrap();
        n += k;
    }
    drop(src_tx);
    drop(ack_tx);
    if let Some(d) = d {
        d.await.unwrap().unwrap();
    }
    b.await.unwrap().unwrap();
    k.await.unwrap().unwrap();
    checker.await.unwrap();
    println!("{} {}", started.elapsed().as_secs_f64(), peak_rss_kib());
}

fn psql(db_url: &str, file: &std::path::Path) -> f64 {
    let started = Instant::now();
    let out = Command::new("psql")
        .args([db_url, "-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(file)
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed().as_secs_f64()
}

async fn count(db_url: &str, table: &str) -> i64 {
    let (c, conn) = tokio_postgres::connect(db_url, NoTls).await.unwrap();
    tokio::spawn(conn);
    c.query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let method = if args[4] == "copy" {
            WriteMethod::Copy
        } else {
            WriteMethod::Insert
        };
        run_kwpipe(&args[2], &args[3], method, args[5] == "decode").await;
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let total = rows_total();
    let dbname = format!("kwbench_{}", std::process::id());
    let (admin, conn) = tokio_postgres::connect(&format!("{}/postgres", server()), NoTls)
        .await
        .expect("PostgreSQL reachable (eval \"$(scripts/test-env)\")");
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE DATABASE \"{dbname}\""))
        .await
        .unwrap();
    let db_url = format!("{}/{dbname}", server());
    let (c, conn) = tokio_postgres::connect(&db_url, NoTls).await.unwrap();
    tokio::spawn(conn);

    let sql = Sql(Dialect::Postgres);
    let s = schema();
    let fields: Vec<Field> = s.fields().cloned().collect();
    let idents: Vec<_> = fields.iter().map(|f| sql.ident(&f.name).unwrap()).collect();
    let dir = std::env::temp_dir().join(format!("kwbench_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for t in ["psql_copy", "psql_insert"] {
        let id = sql.ident(t).unwrap();
        c.batch_execute(&sql.create_table(&id, &s, Precision::Ms).unwrap().join("; "))
            .await
            .unwrap();
    }
    // The same rows as psql input files.
    let copy_file = dir.join("copy.sql");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&copy_file).unwrap());
    writeln!(
        f,
        "{} FROM STDIN;",
        sql.copy_in(&sql.ident("psql_copy").unwrap(), &idents)
            .unwrap()
            .trim_end_matches(" FROM STDIN")
    )
    .unwrap();
    let mut line = Vec::new();
    for n in 0..total {
        line.clear();
        for (k, (v, fl)) in row(n).iter().zip(&fields).enumerate() {
            if k > 0 {
                line.push(b'\t');
            }
            write_value(v, fl, &mut CopyText(&mut line)).unwrap();
        }
        line.push(b'\n');
        f.write_all(&line).unwrap();
    }
    writeln!(f, "\\.").unwrap();
    drop(f);
    let insert_file = dir.join("insert.sql");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&insert_file).unwrap());
    let prefix = sql.insert_prefix(&sql.ident("psql_insert").unwrap(), &idents);
    let mut n = 0;
    while n < total {
        let k = 1000.min(total - n);
        let rows: Vec<Row> = (n..n + k).map(row).collect();
        writeln!(
            f,
            "{};",
            render_insert(&prefix, &fields, &rows, sql.insert_suffix()).unwrap()
        )
        .unwrap();
        n += k;
    }
    drop(f);

    let mut results: Vec<(String, f64, Option<u64>)> = Vec::new();
    let t = psql(&db_url, &copy_file);
    assert_eq!(count(&db_url, "psql_copy").await, total as i64);
    results.push(("psql COPY FROM STDIN".into(), t, None));
    let t = psql(&db_url, &insert_file);
    assert_eq!(count(&db_url, "psql_insert").await, total as i64);
    results.push(("psql 1000-row INSERTs".into(), t, None));
    for (table, method, input, label) in [
        (
            "kw_copy",
            "copy",
            "decode",
            "kwpipe decode -> batch -> kwdb (postgres default: COPY)",
        ),
        (
            "kw_insert",
            "insert",
            "decode",
            "kwpipe decode -> batch -> kwdb (write_method = insert)",
        ),
        (
            "kw_copy_rows",
            "copy",
            "rows",
            "kwpipe batch -> kwdb, rows already decoded (COPY)",
        ),
        (
            "kw_insert_rows",
            "insert",
            "rows",
            "kwpipe batch -> kwdb, rows already decoded (insert)",
        ),
    ] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["child", &db_url, table, method, input])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text.split_whitespace();
        let secs: f64 = it.next().unwrap().parse().unwrap();
        let rss: u64 = it.next().unwrap().parse().unwrap();
        assert_eq!(count(&db_url, table).await, total as i64);
        results.push((label.into(), secs, Some(rss)));
    }
    println!("rows: {total}\n");
    println!("| path | seconds | rows/s | peak RSS |");
    println!("| --- | ---: | ---: | ---: |");
    for (label, secs, rss) in &results {
        println!(
            "| {label} | {secs:.2} | {:.0} | {} |",
            total as f64 / secs,
            rss.map_or("-".into(), |r| format!("{:.1} MiB", r as f64 / 1024.0))
        );
    }
    let rate = |i: usize| total as f64 / results[i].1;
    println!(
        "\nCOPY path: {:.0}% of psql COPY (target 70%); INSERT path: {:.0}% of psql INSERT (target 90%)",
        100.0 * rate(2) / rate(0),
        100.0 * rate(3) / rate(1)
    );
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
    admin
        .batch_execute(&format!("DROP DATABASE \"{dbname}\" WITH (FORCE)"))
        .await
        .unwrap();
}
