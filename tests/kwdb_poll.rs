//! The `kwdb-poll` source against a real PostgreSQL (postgres dialect), with the
//! agent as its own process writing what it exports to a file, or (the product's
//! main job) encoding it as `json_kaiwudb` into Kafka topics named like the
//! connector's, `kw-{database}-{table}`, read back here with a real consumer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::support::agent::Agent;
use crate::support::broker::TestKafka;
use crate::support::pg::{self, TestDb};
use crate::support::{file_sink_rows, free_port, wait_for, write_topology};

/// An agent exporting `db` into `out`.
fn start(dir: &Path, db: &TestDb, extra: &str) -> Agent {
    let sink = format!(
        "[sinks.out]\ntype = \"file\"\ninputs = [\"db\"]\npath = \"{}\"\n",
        out_path(dir).display()
    );
    start_with(dir, &db.url, &db.name, extra, &sink)
}

/// kwdb-poll -> encode (json_kaiwudb) -> kafka, topics `kw-{database}-{table}`.
fn start_kafka(dir: &Path, url: &str, database: &str, extra: &str, kafka: &TestKafka) -> Agent {
    let rest = format!(
        "[transforms.enc]\ntype = \"encode\"\ninputs = [\"db\"]\nformat = \"json_kaiwudb\"\n\
         [sinks.out]\ntype = \"kafka\"\ninputs = [\"enc\"]\nbootstrap_servers = \"{}\"\n\
         topic = \"kw-{{database}}-{{table}}\"\n",
        kafka.bootstrap
    );
    start_with(dir, url, database, extra, &rest)
}

fn start_with(dir: &Path, url: &str, database: &str, extra: &str, rest: &str) -> Agent {
    let topo = write_topology(
        dir,
        "poll.toml",
        &format!(
            "data_dir = \"{data}\"\nshutdown_timeout = \"20s\"\n\
             [sources.db]\ntype = \"kwdb-poll\"\nurl = \"{url}\"\ndatabase = \"{database}\"\n\
             discover_interval = \"300ms\"\n{interval}{extra}\n{rest}",
            data = dir.join("data").display(),
            interval = if extra.contains("query_interval") {
                ""
            } else {
                "query_interval = \"100ms\"\n"
            },
        ),
    );
    Agent::run(&topo).log(dir.join("poll.log")).start()
}

/// How long a SIGTERM may take before the test fails.
const STOP: Duration = Duration::from_secs(120);

fn out_path(dir: &Path) -> PathBuf {
    dir.join("out.jsonl")
}

/// Exported rows as (table, values) from the file sink's JSON lines.
fn exported(dir: &Path) -> Vec<(String, serde_json::Value)> {
    file_sink_rows(&out_path(dir))
}

/// Rows counted by a table's checkpoint in a source's checkpoint directory.
fn checkpoint_rows(dir: &Path, database: &str, table: &str) -> u64 {
    use kwpipe_components::sources::kwdb_poll::checkpoint::CheckpointStore;
    CheckpointStore::open(dir.to_path_buf(), database)
        .unwrap()
        .load(table)
        .unwrap()
        .expect("a checkpoint")
        .rows
}

/// (ts, dev) -> how often it was exported.
fn counts(rows: &[(String, serde_json::Value)]) -> HashMap<(i64, i64), usize> {
    let mut m = HashMap::new();
    for (_, v) in rows {
        let key = (v["ts"].as_i64().unwrap(), v["dev"].as_i64().unwrap());
        *m.entry(key).or_default() += 1;
    }
    m
}

/// `n_ts` timestamps one second apart from 2024-01-01, `per_ts` devices each.
async fn readings(db: &TestDb, table: &str, n_ts: i64, per_ts: i64) {
    let c = db.client().await;
    c.batch_execute(&format!(
        "CREATE TABLE {table} (ts timestamptz NOT NULL, v bigint, dev int NOT NULL, PRIMARY KEY (ts, dev));
         INSERT INTO {table} SELECT timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => t), t * 1000 + d, d
         FROM generate_series(0, {}) t, generate_series(0, {}) d;",
        n_ts - 1,
        per_ts - 1
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_sharing_timestamps_across_pages_arrive_exactly_once() {
    let db = TestDb::new("poll_once").await;
    readings(&db, "readings", 100, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path(), &db, "fetch_max_rows = 100");
    wait_for("100,000 rows", Duration::from_secs(120), || {
        exported(dir.path()).len() >= 100_000
    });
    agent.stop(STOP);
    let rows = exported(dir.path());
    let c = counts(&rows);
    assert_eq!(c.len(), 100_000, "distinct rows");
    assert_eq!(rows.len(), 100_000, "no row twice");
    // Values survive: v = t * 1000 + d with ts = 2024-01-01 + t seconds.
    for (_, v) in rows.iter().take(1000) {
        let t = (v["ts"].as_i64().unwrap() - 1_704_067_200_000) / 1000;
        assert_eq!(
            v["v"].as_i64().unwrap(),
            t * 1000 + v["dev"].as_i64().unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_created_later_are_exported_and_dropped_ones_let_go() {
    let db = TestDb::new("poll_discover").await;
    readings(&db, "first", 2, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path(), &db, "");
    wait_for("the first table", Duration::from_secs(30), || {
        exported(dir.path()).len() >= 6
    });
    readings(&db, "later", 2, 2).await;
    wait_for("the table created later", Duration::from_secs(30), || {
        exported(dir.path())
            .iter()
            .filter(|(t, _)| t == "later")
            .count()
            >= 4
    });
    db.client()
        .await
        .batch_execute("DROP TABLE first")
        .await
        .unwrap();
    // The agent keeps running and exporting the other table.
    std::thread::sleep(Duration::from_secs(1));
    db.client()
        .await
        .batch_execute("INSERT INTO later VALUES ('2025-01-01 00:00:00+00', 1, 99)")
        .await
        .unwrap();
    wait_for(
        "a new row of the remaining table",
        Duration::from_secs(30),
        || exported(dir.path()).iter().any(|(_, v)| v["dev"] == 99),
    );
    agent.stop(STOP);
    let rows = exported(dir.path());
    assert_eq!(rows.iter().filter(|(t, _)| t == "first").count(), 6);
    assert_eq!(rows.iter().filter(|(t, _)| t == "later").count(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_and_restart_loses_nothing_and_repeats_only_what_was_in_flight() {
    let db = TestDb::new("poll_kill").await;
    readings(&db, "big", 200, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = "fetch_max_rows = 500\nmax_in_flight = 4";
    let mut agent = start(dir.path(), &db, settings);
    // Lines counted, not parsed: the check must be quick next to an export that
    // takes about a second, or the kill comes after its end.
    wait_for("part of the export", Duration::from_secs(120), || {
        std::fs::read(out_path(dir.path()))
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0)
            >= 20_000
    });
    agent.kill9();
    let before = exported(dir.path()).len();
    assert!(before < 200_000, "killed too late to prove anything");
    let agent = start(dir.path(), &db, settings);
    wait_for("the whole table", Duration::from_secs(180), || {
        counts(&exported(dir.path())).len() >= 200_000
    });
    agent.stop(STOP);
    let rows = exported(dir.path());
    let c = counts(&rows);
    assert_eq!(c.len(), 200_000, "every row present");
    let repeated = rows.len() - c.len();
    // Only pages handed on and not yet acknowledged may come again.
    assert!(repeated <= 4 * 500, "{repeated} rows repeated");
}

#[tokio::test(flavor = "multi_thread")]
async fn start_at_skips_older_rows() {
    let db = TestDb::new("poll_start").await;
    readings(&db, "r", 10, 2).await;
    let dir = tempfile::tempdir().unwrap();
    // 2024-01-01 00:00:05 onwards: t = 5..9.
    let agent = start(dir.path(), &db, "start_at = \"2024-01-01 00:00:05\"");
    wait_for("the newer rows", Duration::from_secs(30), || {
        exported(dir.path()).len() >= 10
    });
    std::thread::sleep(Duration::from_millis(500));
    agent.stop(STOP);
    let rows = exported(dir.path());
    assert_eq!(rows.len(), 10);
    assert!(rows
        .iter()
        .all(|(_, v)| v["ts"].as_i64().unwrap() >= 1_704_067_205_000));
}

#[tokio::test(flavor = "multi_thread")]
async fn delay_catches_a_row_that_arrives_late() {
    let db = TestDb::new("poll_delay").await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE live (ts timestamptz NOT NULL, v bigint, dev int NOT NULL, PRIMARY KEY (ts, dev))",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path(), &db, "delay = \"3s\"");
    c.batch_execute("INSERT INTO live VALUES (now(), 1, 1)")
        .await
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    // Arrives after row 1 but carries an earlier time.
    c.batch_execute("INSERT INTO live VALUES (now() - interval '1500 milliseconds', 2, 2)")
        .await
        .unwrap();
    wait_for("both rows", Duration::from_secs(30), || {
        exported(dir.path()).len() >= 2
    });
    agent.stop(STOP);
    let devs: Vec<i64> = exported(dir.path())
        .iter()
        .map(|(_, v)| v["dev"].as_i64().unwrap())
        .collect();
    assert_eq!(
        devs,
        vec![2, 1],
        "exported in time order, the late row included"
    );
}

/// The value of a counter of `table` in Prometheus text.
fn table_counter(metrics: &str, name: &str, table: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| l.contains(&format!("table=\"{table}\"")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_is_read_by_one_statement_cut_into_batches_in_order() {
    let db = TestDb::new("poll_stream").await;
    // 10,000 rows: 100 batches of fetch_max_rows, far fewer than a statement's cap.
    readings(&db, "backlog", 100, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    // No poll after the catch-up (query_interval), so every statement counted is
    // one that read the backlog; a window of two batches makes the statement wait
    // on the sink, stream paused, about fifty times.
    let agent = start(
        dir.path(),
        &db,
        &format!(
            "fetch_max_rows = 100\nmax_in_flight = 2\nquery_interval = \"1h\"\n\
             [api]\naddress = \"127.0.0.1:{api}\"\n"
        ),
    );
    wait_for("10,000 rows", Duration::from_secs(120), || {
        exported(dir.path()).len() >= 10_000
    });
    let base = format!("http://127.0.0.1:{api}");
    let (status, metrics) = kwpipe::top::fetch(&base, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    agent.stop(STOP);
    assert_eq!(
        table_counter(&metrics, "kwdb_poll_queries_total", "backlog"),
        Some(1.0),
        "one statement for the whole backlog:\n{metrics}"
    );
    assert_eq!(
        table_counter(&metrics, "kwdb_poll_rows_total", "backlog"),
        Some(10_000.0)
    );
    let order: Vec<(i64, i64)> = exported(dir.path())
        .iter()
        .map(|(_, v)| (v["ts"].as_i64().unwrap(), v["dev"].as_i64().unwrap()))
        .collect();
    assert_eq!(order.len(), 10_000, "no row twice");
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "rows in (ts, dev) order"
    );
    assert_eq!(
        checkpoint_rows(&dir.path().join("data/db"), &db.name, "backlog"),
        10_000
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_that_fails_mid_statement_is_read_again_from_the_checkpoint() {
    use kwpipe_components::ack::EventStatus;
    use kwpipe_components::api::{BuildContext, ComponentContext, GlobalOptions, ShutdownSignal};
    use kwpipe_components::event::{Event, Value};
    use kwpipe_components::registry;

    let db = TestDb::new("poll_rewind").await;
    readings(&db, "r", 100, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "url = \"{}\"\ndatabase = \"{}\"\nfetch_max_rows = 100\nmax_in_flight = 3\n\
         discover_interval = \"300ms\"\nquery_interval = \"100ms\"\n",
        db.url, db.name
    );
    let table: toml::Table = toml::from_str(&config).unwrap();
    let globals = Arc::new(GlobalOptions {
        data_dir: dir.path().to_path_buf(),
        ..GlobalOptions::default()
    });
    let source = registry::parse(
        kwpipe_components::api::ComponentClass::Source,
        "kwdb-poll",
        table,
    )
    .unwrap()
    .build(&BuildContext {
        id: "db".into(),
        globals: globals.clone(),
    })
    .await
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let shutdown = ShutdownSignal::new();
    let task = tokio::spawn(
        source.run(
            ComponentContext::standalone("db", "kwdb-poll", None, Some(tx))
                .with_shutdown(shutdown.clone())
                .with_globals(globals),
        ),
    );
    // Row i is (t, dev) = (i / 100, i % 100), and v = t * 1000 + dev.
    let index = |row: &Vec<Value>| match row[1] {
        Value::Int8(v) => (v / 1000) * 100 + v % 1000,
        ref other => panic!("v is {other:?}"),
    };
    let mut seen: Vec<i64> = Vec::new();
    let mut batches = 0;
    let mut failed_at = None;
    let started = Instant::now();
    while seen.last() != Some(&9_999) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{} rows",
            seen.len()
        );
        let Some(Event::Rows(batch)) = rx.recv().await else {
            panic!("the source ended");
        };
        let first = index(&batch.rows[0]);
        seen.extend(batch.rows.iter().map(index));
        batches += 1;
        // The 31st batch (rows 3,000..3,100) fails once, in the middle of the
        // statement that reads the whole table.
        if batches == 31 {
            assert_eq!(first, 3_000);
            failed_at = Some(seen.len());
            batch.finalizers.finish(EventStatus::Failed);
        } else {
            batch.finalizers.finish(EventStatus::Delivered);
        }
    }
    shutdown.trigger();
    drop(rx);
    task.await.unwrap().unwrap();
    let failed_at = failed_at.expect("a batch failed");
    // Before the failure and after the rewind, rows come in order; the rewind goes
    // back to the first row not acknowledged, and at most the window (three
    // batches) was read past it.
    let back = (failed_at..seen.len())
        .find(|&i| seen[i] <= seen[i - 1])
        .expect("rows read again after the failure");
    assert!(seen[..back].windows(2).all(|w| w[1] == w[0] + 1));
    assert!(seen[back..].windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(seen[back], 3_000, "read again from the checkpoint");
    assert!(
        back - 3_000 <= 300,
        "{} rows read past the failure",
        back - 3_000
    );
    assert_eq!(*seen.last().unwrap(), 9_999);
    assert_eq!(
        checkpoint_rows(&dir.path().join("db"), &db.name, "r"),
        10_000
    );
}

// ---- through a real broker ---------------------------------------------------

/// The high watermark of every partition of `topic` (0 for a topic not there yet).
fn watermarks(kafka: &TestKafka, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .map_or(0, |(_, high)| high)
        })
        .collect()
}

/// Every message of `topic` from offsets `from` up to the high watermarks as they
/// are now, payloads as text.
fn read_topic(kafka: &TestKafka, topic: &str, from: &[i64]) -> Vec<String> {
    let partitions = from.len() as i32;
    let high = watermarks(kafka, topic, partitions);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("group.id", "kwdb-poll-test-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(from[p as usize]))
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut next = from.to_vec();
    let mut out = Vec::new();
    let started = Instant::now();
    while next.iter().zip(&high).any(|(n, h)| n < h) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "reading {topic}: at {next:?} of {high:?}"
        );
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let p = m.partition() as usize;
                if m.offset() >= high[p] {
                    continue;
                }
                next[p] = m.offset() + 1;
                out.push(String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap());
            }
            Some(Err(e)) => panic!("consuming {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// The rows of `json_kaiwudb` messages, each checked to carry the table's schema.
fn message_rows(messages: &[String], table: &str) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for m in messages {
        for line in m.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("message is not JSON ({e}): {line}"));
            assert_eq!(v["table"], table, "{line}");
            rows.extend(v["data"].as_array().unwrap().iter().cloned());
        }
    }
    rows
}

fn row_counts(rows: &[serde_json::Value]) -> HashMap<(i64, i64), usize> {
    let mut m = HashMap::new();
    for v in rows {
        let key = (v["ts"].as_i64().unwrap(), v["dev"].as_i64().unwrap());
        *m.entry(key).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn every_row_reaches_kafka_exactly_once_with_1000_rows_per_timestamp() {
    let db = TestDb::new("pollk_once").await;
    readings(&db, "readings", 100, 1000).await;
    let kafka = TestKafka::start();
    let topic = format!("kw-{}-readings", db.name);
    // ~5.5 MB of messages: spread so the mock broker (5 MB per partition) keeps all.
    tokio::task::block_in_place(|| kafka.create_topic(&topic, 4));
    let from = watermarks(&kafka, &topic, 4);
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let agent = start_kafka(
        dir.path(),
        &db.url,
        &db.name,
        &format!("fetch_max_rows = 100\nprogress_interval = \"1s\"\n[api]\naddress = \"127.0.0.1:{api}\"\n"),
        &kafka,
    );
    // Progress as metrics while the export runs.
    let base = format!("http://127.0.0.1:{api}");
    let started = Instant::now();
    let metrics = loop {
        if let Ok((200, body)) = kwpipe::top::fetch(&base, "/metrics").await {
            if body.contains("kwdb_poll_rows_total") && body.contains("kwdb_poll_lag_seconds") {
                break body;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no kwdb_poll metrics"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(metrics.contains("table=\"readings\""), "{metrics}");
    let mut rows = Vec::new();
    let started = Instant::now();
    while rows.len() < 100_000 {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{} rows in Kafka after 180 s",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (k, t) = (&kafka, topic.clone());
        let from = from.clone();
        rows = message_rows(
            &tokio::task::block_in_place(|| read_topic(k, &t, &from)),
            "readings",
        );
    }
    // Let a stray repeat show up before the final count.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = agent.stop(STOP);
    let messages = tokio::task::block_in_place(|| read_topic(&kafka, &topic, &from));
    let rows = message_rows(&messages, "readings");
    let c = row_counts(&rows);
    assert_eq!(c.len(), 100_000, "distinct rows");
    assert_eq!(rows.len(), 100_000, "no row twice");
    assert_eq!(messages.len(), 1000, "one message per 100-row page");
    for v in rows.iter().take(2000) {
        let t = (v["ts"].as_i64().unwrap() - 1_704_067_200_000) / 1000;
        assert_eq!(
            v["v"].as_i64().unwrap(),
            t * 1000 + v["dev"].as_i64().unwrap()
        );
    }
    // The final metric and checkpoint agree with what arrived.
    assert_eq!(
        checkpoint_rows(&dir.path().join("data/db"), &db.name, "readings"),
        100_000
    );
    assert!(
        log.contains("export progress"),
        "no progress line in:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_export_to_kafka_loses_nothing_and_repeats_at_most_the_unacknowledged_pages() {
    let db = TestDb::new("pollk_kill").await;
    readings(&db, "big", 200, 1000).await;
    let kafka = TestKafka::start();
    let topic = format!("kw-{}-big", db.name);
    tokio::task::block_in_place(|| kafka.create_topic(&topic, 8));
    let from = watermarks(&kafka, &topic, 8);
    let dir = tempfile::tempdir().unwrap();
    let (fetch, in_flight) = (500, 4);
    let settings = format!("fetch_max_rows = {fetch}\nmax_in_flight = {in_flight}");
    let read = |kafka: &TestKafka| {
        message_rows(
            &tokio::task::block_in_place(|| read_topic(kafka, &topic, &from)),
            "big",
        )
    };
    let mut agent = start_kafka(dir.path(), &db.url, &db.name, &settings, &kafka);
    let started = Instant::now();
    loop {
        // Cheap: messages (full pages of 500 rows) by the watermarks.
        let messages: i64 = tokio::task::block_in_place(|| watermarks(&kafka, &topic, 8))
            .iter()
            .zip(&from)
            .map(|(h, f)| h - f)
            .sum();
        if messages >= 120 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{messages} messages after 180 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.kill9();
    let before = read(&kafka).len();
    assert!(before < 200_000, "killed too late to prove anything");
    let agent = start_kafka(dir.path(), &db.url, &db.name, &settings, &kafka);
    let started = Instant::now();
    loop {
        let n = row_counts(&read(&kafka)).len();
        if n >= 200_000 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{n} distinct rows after 180 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    agent.stop(STOP);
    let rows = read(&kafka);
    let c = row_counts(&rows);
    assert_eq!(c.len(), 200_000, "every row present");
    let repeated = rows.len() - c.len();
    eprintln!("killed after {before} rows had reached Kafka; {repeated} rows repeated");
    assert!(
        repeated <= in_flight * fetch,
        "{repeated} rows repeated; at most {in_flight} pages of {fetch} were unacknowledged"
    );
}

/// The seed's source-output example, from the seed's own INSERT.
const SEED_OUTPUT: &str =
    include_str!("../components/src/formats/testdata/seed_source_output.json");

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_example_row_reaches_kw_benchmark_cpu_kaiwudb_tb_as_the_seed_shows_it() {
    use kwpipe_components::event::{DataType, Field, TableKind, TableSchema};
    use kwpipe_components::kwdb::{Dialect, Sql};

    // The topic is named after the database, so this one must be called
    // `benchmark`: shared by every run on this server, hence the advisory lock.
    let admin = pg::connect(&format!("{}/postgres", pg::server_url())).await;
    admin
        .execute("SELECT pg_advisory_lock(610001)", &[])
        .await
        .unwrap();
    if let Err(e) = admin.batch_execute("CREATE DATABASE benchmark").await {
        assert_eq!(e.code().map(|c| c.code()), Some("42P04"), "{e}");
    }
    let url = format!("{}/benchmark", pg::server_url());
    let c = pg::connect(&url).await;
    c.batch_execute("DROP TABLE IF EXISTS cpu_kaiwudb_tb")
        .await
        .unwrap();

    // The table as the `kwdb` sink creates it from the seed's schema (same code).
    let mut columns = vec![Field::column("k_timestamp", DataType::Timestamp).not_null()];
    for u in [
        "user",
        "system",
        "idle",
        "nice",
        "iowait",
        "irq",
        "softirq",
        "steal",
        "guest",
        "guest_nice",
    ] {
        columns.push(Field::column(format!("usage_{u}"), DataType::Int8));
    }
    let mut tags = vec![Field::tag("id", DataType::Int8, true)];
    for (t, nullable) in [
        ("hostname", false),
        ("region", false),
        ("datacenter", false),
        ("rack", true),
        ("os", true),
        ("arch", true),
        ("team", true),
        ("service", true),
        ("service_version", true),
        ("service_environment", true),
    ] {
        let f = Field::tag(t, DataType::Varchar, false).with_length(254);
        tags.push(if nullable { f } else { f.not_null() });
    }
    let schema = TableSchema::new(TableKind::TimeSeries, columns, tags);
    let sql = Sql(Dialect::Postgres);
    let t = sql.ident("cpu_kaiwudb_tb").unwrap();
    let ddl = sql
        .create_table(&t, &schema, kwpipe_components::event::Precision::Ms)
        .unwrap();
    c.batch_execute(&ddl.join("; ")).await.unwrap();
    // The seed's INSERT, without the `benchmark.` qualifier (in PostgreSQL that
    // would name a schema; here the database is the connection's).
    c.batch_execute(
        "INSERT INTO cpu_kaiwudb_tb (k_timestamp, usage_user, usage_system, usage_idle, usage_nice, usage_iowait, usage_irq, usage_softirq, usage_steal, usage_guest, usage_guest_nice, id, hostname, region, datacenter) VALUES ('2024-01-22 22:22:22.224',1,2,3,4,5,6,7,8,9,10,647470401348904608,'locahost','beijing','center');",
    )
    .await
    .unwrap();

    let kafka = TestKafka::start();
    let topic = "kw-benchmark-cpu_kaiwudb_tb";
    tokio::task::block_in_place(|| kafka.create_topic(topic, 1));
    let from = watermarks(&kafka, topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let agent = start_kafka(
        dir.path(),
        &url,
        "benchmark",
        "tables = [\"cpu_kaiwudb_tb\"]",
        &kafka,
    );
    let started = Instant::now();
    let messages = loop {
        let m = tokio::task::block_in_place(|| read_topic(&kafka, topic, &from));
        if !m.is_empty() {
            break m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing in {topic}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    agent.stop(STOP);
    c.batch_execute("DROP TABLE cpu_kaiwudb_tb").await.unwrap();
    drop(admin);
    assert_eq!(messages.len(), 1);
    // Byte for byte: keys, their order, values, lengths, nulls for unset tags.
    assert_eq!(messages[0].trim_end(), SEED_OUTPUT.trim_end());
}

#[tokio::test(flavor = "multi_thread")]
async fn relational_tables_export_by_their_named_timestamp_or_incrementing_column() {
    let db = TestDb::new("pollk_rel").await;
    let c = db.client().await;
    // 1,000 orders, 10 per timestamp, read in pages of 7 that split timestamps;
    // 500 events ordered by an incrementing id alone.
    c.batch_execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, placed_at timestamptz NOT NULL, amount double precision, note varchar(32));
         INSERT INTO orders SELECT i, timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => i / 10), i * 1.5, 'order ' || i
         FROM generate_series(0, 999) i;
         CREATE TABLE events (seq bigint PRIMARY KEY, what varchar(16));
         INSERT INTO events SELECT i, 'e' || i FROM generate_series(1, 500) i;
         CREATE TABLE ignored (id bigint PRIMARY KEY);
         INSERT INTO ignored VALUES (1);",
    )
    .await
    .unwrap();
    let kafka = TestKafka::start();
    let (t_orders, t_events) = (
        format!("kw-{}-orders", db.name),
        format!("kw-{}-events", db.name),
    );
    tokio::task::block_in_place(|| kafka.create_topic(&t_orders, 1));
    tokio::task::block_in_place(|| kafka.create_topic(&t_events, 1));
    let (f_orders, f_events) = (
        watermarks(&kafka, &t_orders, 1),
        watermarks(&kafka, &t_events, 1),
    );
    let dir = tempfile::tempdir().unwrap();
    let agent = start_kafka(
        dir.path(),
        &db.url,
        &db.name,
        // start_at and delay apply to `orders` (old rows: no effect) and not at all
        // to `events`, ordered by a number.
        "fetch_max_rows = 7\nstart_at = \"2023-12-31 00:00:00\"\ndelay = \"1s\"\nrelational = [\
         { table = \"orders\", timestamp_column = \"placed_at\", key_columns = [\"id\"] },\
         { table = \"events\", timestamp_column = \"seq\" }]",
        &kafka,
    );
    let read = |t: &str, f: &[i64], table: &str| {
        message_rows(
            &tokio::task::block_in_place(|| read_topic(&kafka, t, f)),
            table,
        )
    };
    let started = Instant::now();
    loop {
        let (o, e) = (
            read(&t_orders, &f_orders, "orders").len(),
            read(&t_events, &f_events, "events").len(),
        );
        if o >= 1000 && e >= 500 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{o} orders, {e} events"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A row added later is picked up after the checkpointed position.
    c.batch_execute("INSERT INTO events VALUES (501, 'late'); INSERT INTO orders VALUES (1000, '2024-01-01 00:01:40+00', 1.0, 'late')")
        .await
        .unwrap();
    let started = Instant::now();
    while read(&t_events, &f_events, "events").len() < 501
        || read(&t_orders, &f_orders, "orders").len() < 1001
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "late rows not exported"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.stop(STOP);
    let orders = read(&t_orders, &f_orders, "orders");
    let mut ids: Vec<i64> = orders.iter().map(|v| v["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 1001, "no order twice");
    let ordered = ids.clone();
    ids.sort_unstable();
    assert_eq!(ordered, ids, "exported in (placed_at, id) order");
    assert_eq!(ids, (0..=1000).collect::<Vec<_>>());
    let o7 = orders.iter().find(|v| v["id"] == 7).unwrap();
    assert_eq!(o7["note"], "order 7");
    assert_eq!(o7["amount"], 10.5);
    let events = read(&t_events, &f_events, "events");
    let seqs: Vec<i64> = events.iter().map(|v| v["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=501).collect::<Vec<_>>());
    assert_eq!(events[500]["what"], "late");
    assert!(
        watermarks(&kafka, &format!("kw-{}-ignored", db.name), 1) == vec![0],
        "a relational table not named is not exported"
    );
}

/// PostgreSQL's results are read in the binary protocol: every type the postgres
/// dialect maps comes out with the value the text protocol gave, NULLs included,
/// and a key read as text (a uuid) still orders and resumes by its own type.
#[tokio::test(flavor = "multi_thread")]
async fn every_postgres_type_reads_back_exactly() {
    let db = TestDb::new("poll_types").await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE typed (k uuid PRIMARY KEY, at timestamp NOT NULL, i2 smallint,
           i4 integer, i8 bigint, f4 real, f8 double precision, b boolean, c char(3),
           vc varchar(10), t text, by bytea, n numeric(10,3), d date, tz timestamptz);
         INSERT INTO typed VALUES
          ('00000000-0000-0000-0000-000000000002', '2024-01-02 03:04:05.123456', -32768,
           2147483647, -9223372036854775808, 1.5, -2.25, true, 'ab', 'héllo', E'tab\\there',
           '\\x00ff', 12345.678, '1999-12-31', '2024-01-02 03:04:05.007+00'),
          ('00000000-0000-0000-0000-000000000001', '2024-01-02 03:04:05.123456', NULL,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
          ('ffffffff-0000-0000-0000-000000000000', '1970-01-01 00:00:00', 7, 8, 9,
           -0.5, 1e300, false, 'xyz', '', '', '', -0.001, '2000-01-01', '1969-12-31 23:59:59.999+00');
         CREATE TABLE ranked (at timestamp NOT NULL, k numeric NOT NULL, PRIMARY KEY (at, k));
         INSERT INTO ranked VALUES ('2024-01-01', 10), ('2024-01-01', 9), ('2024-01-01', 100);",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // One row per batch: every statement after the first resumes after a uuid.
    let agent = start(
        dir.path(),
        &db,
        "fetch_max_rows = 1\nrelational = [\
         { table = \"typed\", timestamp_column = \"at\", key_columns = [\"k\"] },\
         { table = \"ranked\", timestamp_column = \"at\", key_columns = [\"k\"] }]",
    );
    wait_for("6 rows", Duration::from_secs(60), || {
        exported(dir.path()).len() >= 6
    });
    std::thread::sleep(Duration::from_millis(500));
    agent.stop(STOP);
    let (rows, ranked): (Vec<_>, Vec<_>) = exported(dir.path())
        .into_iter()
        .partition(|(t, _)| t == "typed");
    // A numeric key is read as text but ordered as a number: in text order 10
    // would come before 9, and resuming after 10 would skip 9.
    let ks: Vec<&str> = ranked
        .iter()
        .map(|(_, v)| v["k"].as_str().unwrap())
        .collect();
    assert_eq!(ks, ["9", "10", "100"]);
    let keys: Vec<&str> = rows.iter().map(|(_, v)| v["k"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "ffffffff-0000-0000-0000-000000000000",
            "00000000-0000-0000-0000-000000000001",
            "00000000-0000-0000-0000-000000000002"
        ],
        "(at, k) order, each once"
    );
    let full = &rows[2].1;
    let nulls = &rows[1].1;
    let last = &rows[0].1;
    for col in [
        "i2", "i4", "i8", "f4", "f8", "b", "c", "vc", "t", "by", "n", "d", "tz",
    ] {
        assert!(nulls[col].is_null(), "{col}: {}", nulls[col]);
    }
    assert_eq!(full["i2"], -32768);
    assert_eq!(full["i4"], 2147483647);
    assert_eq!(full["i8"], i64::MIN);
    assert_eq!(full["f4"], 1.5);
    assert_eq!(full["f8"], -2.25);
    assert_eq!(full["b"], true);
    assert_eq!(full["c"], "ab ");
    assert_eq!(full["vc"], "héllo");
    assert_eq!(full["t"], "tab\there");
    assert_eq!(full["n"], "12345.678");
    assert_eq!(last["n"], "-0.001");
    assert_eq!(last["f8"], 1e300);
    assert_eq!(last["c"], "xyz");
    assert_eq!(last["vc"], "");
    // Microseconds kept; whole milliseconds read as milliseconds, as in text.
    assert_eq!(full["at"], 1_704_164_645_123_456_i64);
    assert_eq!(last["at"], 0);
    assert_eq!(full["tz"], 1_704_164_645_007_i64);
    assert_eq!(last["tz"], -1);
    // Days since 1970-01-01 either side of PostgreSQL's epoch (2000-01-01).
    assert_eq!(full["d"], 10_956);
    assert_eq!(last["d"], 10_957);
    assert_eq!(full["by"], "00ff");
    assert_eq!(last["by"], "");
}
