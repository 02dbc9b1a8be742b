//! Kafka -> kwpipe -> database, end to end: `kwpipe run` as a separate process, the
//! test broker (or the cluster `KWPIPE_TEST_KAFKA` names) in another, and a real
//! PostgreSQL (the `kwdb` sink's postgres dialect, one database per test).
//!
//! The seed's examples run through the example topologies in `topologies/`, unchanged,
//! configured by their environment variables only.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kwpipe_components::kwdb::tokio_postgres::Client;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::support::agent::Agent;
use crate::support::broker::{unique, wait_committed, TestKafka};
use crate::support::pg::TestDb;
use crate::support::{repo_root, write_topology};

const SEED_JSON_KAIWUDB: &str =
    include_str!("../components/src/formats/testdata/seed_json_kaiwudb.txt");
const SEED_OPENTSDB_JSON: &str =
    include_str!("../components/src/formats/testdata/seed_opentsdb.json");
const SEED_TELNET: &str = include_str!("../components/src/formats/testdata/seed_telnet.txt");
const SEED_INFLUX: &str = include_str!("../components/src/formats/testdata/seed_influx.txt");

// ------------------------------------------------------------------ helpers

/// The seed's topic name; against a shared real cluster, made unique.
fn seed_topic(name: &str) -> String {
    if std::env::var("KWPIPE_TEST_KAFKA").is_ok() {
        unique(name)
    } else {
        name.to_string()
    }
}

/// `kwpipe run TOPOLOGY` with `env`, logging into `dir/NAME.log`.
fn start(dir: &Path, name: &str, topology: &Path, env: &[(&str, String)]) -> Agent {
    Agent::run(topology)
        .envs(env)
        .env("KWPIPE_LOG", "info")
        .shared_log(dir.join(format!("{name}.log")))
        .start()
}

/// How long a SIGTERM may take before the test fails.
const STOP: Duration = Duration::from_secs(30);

/// The environment the example topologies read, pointed at this test's broker,
/// topic, group and database.
fn example_env(kafka: &TestKafka, topic: &str, db: &TestDb) -> Vec<(&'static str, String)> {
    vec![
        ("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap.clone()),
        ("KAFKA_TOPIC", topic.to_string()),
        ("KAFKA_GROUP_ID", unique("g")),
        ("KWDB_URL", db.url.clone()),
        ("KWDB_USER", "postgres".to_string()),
        ("KWDB_PASSWORD", "unused-with-trust-auth".to_string()),
        ("KWDB_DATABASE", db.name.clone()),
    ]
}

fn example(name: &str) -> PathBuf {
    repo_root().join("topologies").join(name)
}

fn producer(kafka: &TestKafka) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("linger.ms", "20")
        // The mock broker keeps 5 MB per partition: compressed batches keep the
        // larger tests well inside that.
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .unwrap()
}

/// Produces `(partition, payload)` records (partition -1: the partitioner's choice)
/// and waits for every acknowledgement.
async fn produce(kafka: &TestKafka, topic: &str, records: &[(i32, String)]) {
    let producer = producer(kafka);
    let mut futures = Vec::with_capacity(records.len());
    for (partition, payload) in records {
        loop {
            let mut record = FutureRecord::<(), str>::to(topic).payload(payload.as_str());
            if *partition >= 0 {
                record = record.partition(*partition);
            }
            match producer.send_result(record) {
                Ok(f) => {
                    futures.push(f);
                    break;
                }
                Err((e, _)) => {
                    assert!(e.to_string().contains("Queue full"), "{e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    for f in futures {
        f.await.unwrap().expect("test producer delivered");
    }
}

/// Per partition: (low, high) watermarks.
async fn watermarks(kafka: &TestKafka, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
    let bootstrap = kafka.bootstrap.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        (0..partitions)
            .map(|p| {
                c.fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .unwrap()
            })
            .collect()
    })
    .await
    .unwrap()
}

type Received = (Vec<u8>, Vec<(String, Vec<u8>)>);

/// Reads `n` messages of `topic` from the beginning.
async fn read_topic(kafka: &TestKafka, topic: &str, n: usize) -> Vec<Received> {
    let bootstrap = kafka.bootstrap.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", unique("reader"))
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = Vec::new();
        while out.len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} messages in {topic}",
                out.len()
            );
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = match m {
                    Ok(m) => m,
                    // Not created yet: the writer's first message creates it.
                    Err(_) => continue,
                };
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((m.payload().unwrap_or_default().to_vec(), headers));
            }
        }
        out
    })
    .await
    .unwrap()
}

async fn count(c: &Client, table: &str) -> i64 {
    match c
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
    {
        Ok(r) => r.get(0),
        Err(_) => 0, // not created yet
    }
}

/// Waits until `table` holds `want` rows; panics with the agents' logs otherwise.
async fn wait_rows(c: &Client, table: &str, want: i64, within: Duration, agents: &[&Agent]) {
    let deadline = Instant::now() + within;
    loop {
        let n = count(c, table).await;
        if n >= want {
            assert_eq!(n, want, "more rows than expected in {table}");
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = agents.iter().map(|a| a.log_text()).collect();
            panic!(
                "{n} of {want} rows in {table} after {within:?}; logs:\n{}",
                logs.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One json_kaiwudb message of the seed's shape holding one row: `n` picks the
/// values, `device` the primary tag.
fn seed_shaped(table: &str, device: &str, n: u64) -> String {
    format!(
        concat!(
            r#"{{"table":"{table}","columns":[{{"name":"ts","type":"TIMESTAMPTZ","length":64}},"#,
            r#"{{"name":"c1","type":"INT2","length":16}},{{"name":"c2","type":"INT4","length":32}},"#,
            r#"{{"name":"c3","type":"INT8","length":64}},{{"name":"c4","type":"FLOAT4","length":32}},"#,
            r#"{{"name":"c5","type":"FLOAT8","length":64}},{{"name":"c6","type":"BOOL","length":1}}],"#,
            r#""tags":[{{"name":"location","type":"VARCHAR","length":64,"primary":true,"nullable":false}},"#,
            r#"{{"name":"temperature","type":"FLOAT4","length":64,"primary":false,"nullable":true}}],"#,
            r#""data":[{{"ts":{ts},"c1":{c1},"c2":{n},"c3":{c3},"c4":6.14545,"c5":5.15656,"c6":{c6},"#,
            r#""location":"{device}","temperature":35.5}}]}}"#
        ),
        table = table,
        ts = 1_690_855_924_005 + n,
        c1 = n % 30_000,
        n = n,
        c3 = n.wrapping_mul(2_535_208_944_865),
        c6 = n.is_multiple_of(2),
        device = device,
    )
}

/// A topology: kafka -> decode (json_kaiwudb) -> batch -> kwdb, with the knobs the
/// tests turn, and optionally `decode.dropped` -> a dead-letter topic.
fn pipeline_topology(
    kafka: &TestKafka,
    group: &str,
    topic: &str,
    db: &TestDb,
    concurrency: usize,
    dead_letters: Option<&str>,
) -> String {
    let mut t = format!(
        r#"
        [sources.kafka]
        type = "kafka"
        bootstrap_servers = "{bootstrap}"
        group_id = "{group}"
        topics = ["{topic}"]
        concurrency = {concurrency}
        commit_interval = "200ms"
        session_timeout = "6s"
        drain_timeout = "5s"

        [transforms.decode]
        type = "decode"
        inputs = ["kafka"]
        format = "json_kaiwudb"

        [transforms.batch]
        type = "batch"
        inputs = ["decode"]
        max_rows = 1000
        timeout = "200ms"

        [sinks.kwdb]
        type = "kwdb"
        inputs = ["batch"]
        url = "{url}"
        concurrency = 2
        retry_backoff = "100ms"
        retry_backoff_max = "1s"
        "#,
        bootstrap = kafka.bootstrap,
        url = db.url,
    );
    if let Some(dlq) = dead_letters {
        t.push_str(&format!(
            r#"
            [sinks.dead_letters]
            type = "kafka"
            inputs = ["decode.dropped"]
            bootstrap_servers = "{bootstrap}"
            topic = "{dlq}"
            "#,
            bootstrap = kafka.bootstrap,
        ));
    }
    t
}

/// Every row of `seed_shaped` messages 0..n is in the table, each once, with its
/// values.
async fn assert_rows_exactly(c: &Client, table: &str, n: u64) {
    let r = c
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT c2), min(c2)::int8, max(c2)::int8, \
                 sum(c2)::int8, \
                 count(*) FILTER (WHERE \
                   (extract(epoch FROM ts) * 1000)::int8 = 1690855924005 + c2 \
                   AND c1 = c2 % 30000 AND c3 = c2::int8 * 2535208944865 \
                   AND c4 = 6.14545::float4 AND c5 = 5.15656 AND c6 = (c2 % 2 = 0) \
                   AND temperature = 35.5) \
                 FROM {table}"
            ),
            &[],
        )
        .await
        .unwrap();
    let n = n as i64;
    assert_eq!(r.get::<_, i64>(0), n, "rows");
    assert_eq!(r.get::<_, i64>(1), n, "distinct rows");
    assert_eq!(r.get::<_, i64>(2), 0);
    assert_eq!(r.get::<_, i64>(3), n - 1);
    assert_eq!(r.get::<_, i64>(4), n * (n - 1) / 2);
    assert_eq!(
        r.get::<_, i64>(5),
        n,
        "rows whose values are exactly as sent"
    );
}

// ------------------------------------------------------- the seed's examples

/// The seed's "Testing and Verification": its json_kaiwudb data file, line by line
/// as `kafka-console-producer.sh` sends it, into the 5-partition topic; the rows
/// land in `ts_json_kaiwudb_tb` with exactly the values sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_json_kaiwudb_example_lands_exactly() {
    let kafka = TestKafka::start();
    let db = TestDb::new("e2e_seed_kw").await;
    let dir = tempfile::tempdir().unwrap();
    let topic = seed_topic("kw-tsdb-json_kaiwudb_with_tag_tb");
    kafka.create_topic(&topic, 5);
    let agent = start(
        dir.path(),
        "kwpipe",
        &example("kafka-json_kaiwudb-to-kwdb.toml"),
        &example_env(&kafka, &topic, &db),
    );
    // The reference section's example holds the same object twice: the replayed
    // rows are no-ops (the table's key is the primary tag and the timestamp).
    let lines: Vec<(i32, String)> = SEED_JSON_KAIWUDB
        .lines()
        .map(|l| (-1, l.to_string()))
        .collect();
    assert_eq!(lines.len(), 2);
    produce(&kafka, &topic, &lines).await;

    let c = db.client().await;
    wait_rows(
        &c,
        "ts_json_kaiwudb_tb",
        5,
        Duration::from_secs(60),
        &[&agent],
    )
    .await;
    // Let the second copy land too before looking.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows = c
        .query(
            "SELECT (extract(epoch FROM ts) * 1000)::int8, c1, c2, c3, c4, c5, c6, location, \
             temperature FROM ts_json_kaiwudb_tb ORDER BY ts",
            &[],
        )
        .await
        .unwrap();
    type SeedRow = (i64, i16, i32, i64, f32, f64, bool, String, f32);
    let got: Vec<SeedRow> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
                r.get(8),
            )
        })
        .collect();
    let t = |s: &str| s.to_string();
    let want: Vec<SeedRow> = vec![
        (
            1690855924005,
            11,
            21,
            2535208944865431245,
            6.14545,
            5.15656,
            true,
            t("tianjin"),
            35.5,
        ),
        (
            1691853703011,
            12,
            22,
            6422208944865124578,
            1.01635,
            0.53533,
            false,
            t("tianjin"),
            35.5,
        ),
        (
            1692065524004,
            13,
            23,
            1542408944865124535,
            3.25456,
            2.56356,
            true,
            t("tianjin"),
            35.5,
        ),
        (
            1692199303011,
            14,
            24,
            1245658944865439256,
            2.72652,
            5.83533,
            false,
            t("tianjin"),
            35.5,
        ),
        (
            1692285703011,
            15,
            25,
            5625658944865439256,
            5.71635,
            1.26562,
            false,
            t("tianjin"),
            35.5,
        ),
    ];
    assert_eq!(got, want);
    // The column types the table was created with, as PostgreSQL reports them.
    let types: Vec<(String, String)> = c
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_name = 'ts_json_kaiwudb_tb' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let types: Vec<(&str, &str)> = types.iter().map(|(a, b)| (&a[..], &b[..])).collect();
    assert_eq!(
        types,
        [
            ("ts", "timestamp with time zone"),
            ("c1", "smallint"),
            ("c2", "integer"),
            ("c3", "bigint"),
            ("c4", "real"),
            ("c5", "double precision"),
            ("c6", "boolean"),
            ("location", "character varying"),
            ("temperature", "real"),
        ]
    );
    agent.stop(STOP);
}

/// The seed's OpenTSDB JSON example: table and column from `table.column`, the
/// `timestamp` column, the tags plus the synthetic `primary_tag` (SHA-256 of the
/// sorted tag pairs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_json_opentsdb_example_lands_exactly() {
    let kafka = TestKafka::start();
    let db = TestDb::new("e2e_seed_otsdb").await;
    let dir = tempfile::tempdir().unwrap();
    let topic = seed_topic("kw-tsdb-json_opentsdb");
    kafka.create_topic(&topic, 1);
    let agent = start(
        dir.path(),
        "kwpipe",
        &example("kafka-json_opentsdb-to-kwdb.toml"),
        &example_env(&kafka, &topic, &db),
    );
    produce(
        &kafka,
        &topic,
        &[(0, SEED_OPENTSDB_JSON.trim().to_string())],
    )
    .await;
    let c = db.client().await;
    wait_rows(
        &c,
        "ts_json_opentsdb_tb",
        4,
        Duration::from_secs(60),
        &[&agent],
    )
    .await;
    type OpenTsdbRow = (i64, Option<f64>, Option<f64>, String, String);
    let got: Vec<OpenTsdbRow> = c
        .query(
            "SELECT (extract(epoch FROM \"timestamp\") * 1000)::int8, c1, c2, primary_tag, \
             tag_name FROM ts_json_opentsdb_tb ORDER BY \"timestamp\"",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    // sha256("tag_name=tag_value")
    let device = "ccdd5a7993c1a00f2d9eeb8d2def2d00132a60f507edd44a0fb3d47d46edb340".to_string();
    let v = "tag_value".to_string();
    assert_eq!(
        got,
        [
            (1648432611249, Some(10.3), None, device.clone(), v.clone()),
            (1648432611250, None, Some(218.0), device.clone(), v.clone()),
            (1648432611339, None, Some(219.0), device.clone(), v.clone()),
            (1648432611340, Some(12.6), None, device, v),
        ]
    );
    agent.stop(STOP);
}

/// The seed's OpenTSDB telnet example, its eight lines in one message: points of
/// one (table, timestamp, tags) merge into one row, the later value of a column
/// winning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_line_opentsdb_example_lands_exactly() {
    let kafka = TestKafka::start();
    let db = TestDb::new("e2e_seed_telnet").await;
    let dir = tempfile::tempdir().unwrap();
    let topic = seed_topic("kw-tsdb-line_opentsdb");
    kafka.create_topic(&topic, 1);
    let agent = start(
        dir.path(),
        "kwpipe",
        &example("kafka-line_opentsdb-to-kwdb.toml"),
        &example_env(&kafka, &topic, &db),
    );
    produce(&kafka, &topic, &[(0, SEED_TELNET.to_string())]).await;
    let c = db.client().await;
    wait_rows(
        &c,
        "line_opentsdb_tb",
        2,
        Duration::from_secs(60),
        &[&agent],
    )
    .await;
    let got: Vec<(i64, f64, f64, String, String)> = c
        .query(
            "SELECT (extract(epoch FROM \"timestamp\") * 1000)::int8, c1, c2, primary_tag, tag1 \
             FROM line_opentsdb_tb ORDER BY \"timestamp\"",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    // sha256("tag1=1")
    let device = "fd217edc6afd51819034eb8fff299091bf0d3f9fd3494b9eb56fe6fe5dc00448".to_string();
    assert_eq!(
        got,
        [
            (1648432611249, 10.8, 221.0, device.clone(), "1".to_string()),
            (1648432611250, 11.3, 217.0, device, "1".to_string()),
        ]
    );
    agent.stop(STOP);
}

/// The seed's InfluxDB line example into a table made beforehand with the seed's
/// types (line protocol creates no tables), one line per message, plus a line for
/// a table that does not exist: that one waits for its table (a missing table is the
/// environment's problem, not the record's, so it is never rejected), the others land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_line_influxdb_example_lands_exactly() {
    let kafka = TestKafka::start();
    let db = TestDb::new("e2e_seed_influx").await;
    let dir = tempfile::tempdir().unwrap();
    let topic = seed_topic("kw-tsdb-line_influxdb");
    kafka.create_topic(&topic, 1);
    let c = db.client().await;
    // The seed's types in PostgreSQL's words (VARBYTES: BYTEA, NCHAR/NVARCHAR: the
    // CHAR/VARCHAR of a UTF-8 database). No primary key: the seed's lines repeat
    // (tag, timestamp) pairs, which KWDB's deduplication would fold together.
    c.batch_execute(
        "CREATE TABLE ts_line_influxdb_tb (k_timestamp TIMESTAMPTZ NOT NULL, c1 INT2, c2 INT4, \
         c3 INT8, c4 FLOAT4, c5 FLOAT8, c6 BOOL, c7 BYTEA, c8 BYTEA, c9 CHAR(1), c10 CHAR(1), \
         c11 VARCHAR(10), c12 VARCHAR(10), c13 TIMESTAMP, tag_name VARCHAR(64) NOT NULL)",
    )
    .await
    .unwrap();
    let agent = start(
        dir.path(),
        "kwpipe",
        &example("kafka-line_influxdb-to-kwdb.toml"),
        &example_env(&kafka, &topic, &db),
    );
    let mut messages: Vec<(i32, String)> =
        SEED_INFLUX.lines().map(|l| (0, l.to_string())).collect();
    assert_eq!(messages.len(), 4);
    messages.insert(
        2,
        (
            0,
            "no_such_table,tag_name=tag_value c1=1i16 1648432611251000000".to_string(),
        ),
    );
    produce(&kafka, &topic, &messages).await;
    wait_rows(
        &c,
        "ts_line_influxdb_tb",
        4,
        Duration::from_secs(60),
        &[&agent],
    )
    .await;
    type Numbers = (i64, i16, i32, i64, f32, f64, bool);
    type Texts = (
        Vec<u8>,
        Vec<u8>,
        String,
        String,
        String,
        String,
        String,
        String,
    );
    let got: Vec<(Numbers, Texts)> = c
        .query(
            "SELECT (extract(epoch FROM k_timestamp) * 1000)::int8, c1, c2, c3, c4, c5, c6, c7, \
             c8, c9::text, c10::text, c11, c12, c13::text, tag_name FROM ts_line_influxdb_tb \
             ORDER BY c1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                (
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                ),
                (
                    r.get(7),
                    r.get(8),
                    r.get(9),
                    r.get(10),
                    r.get(11),
                    r.get(12),
                    r.get(13),
                    r.get(14),
                ),
            )
        })
        .collect();
    let texts = |c7: &str, c8: &str, c9: &str, c10: &str, c11: &str, c12: &str, c13: &str| {
        (
            c7.as_bytes().to_vec(),
            c8.as_bytes().to_vec(),
            c9.to_string(),
            c10.to_string(),
            c11.to_string(),
            c12.to_string(),
            c13.to_string(),
            "tag_value".to_string(),
        )
    };
    let want: Vec<(Numbers, Texts)> = vec![
        (
            (1648432611249, 11, 21, 31, 11.8, 0.16, true),
            texts(
                "112132",
                "213645",
                "a",
                "1",
                "qaz",
                "tgb",
                "2022-03-28 01:56:51.249",
            ),
        ),
        (
            (1648432611249, 12, 22, 32, 12.8, 0.29, false),
            texts(
                "123563",
                "213621",
                "b",
                "2",
                "wsx",
                "yhn",
                "2023-08-11 12:12:10.249",
            ),
        ),
        (
            // `\x313233`: VARBYTES as hex.
            (1648432611250, 13, 23, 33, 13.8, 0.32, true),
            texts(
                "123",
                "fdsfe",
                "c",
                "3",
                "edc",
                "ujm",
                "2022-03-28 01:56:51.25",
            ),
        ),
        (
            (1648432611250, 14, 24, 34, 14.8, 0.45, false),
            texts(
                "456",
                "asdff",
                "d",
                "4",
                "rfv",
                "ikl",
                "2023-08-11 12:12:10.25",
            ),
        ),
    ];
    assert_eq!(got, want);
    let missing: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = 'no_such_table'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(missing, 0, "line protocol created a table");
    // The waiting line is named in the log with its table.
    let log = agent.log_text();
    assert!(
        log.contains("no_such_table"),
        "the missing table is not named:\n{log}"
    );
    agent.stop(STOP);
}

/// `kafka` -> `decode` -> `encode` -> `kafka`: the seed's json_kaiwudb object comes
/// out as InfluxDB line protocol on a topic named after its table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convert_topology_reencodes_between_topics() {
    let kafka = TestKafka::start();
    let dir = tempfile::tempdir().unwrap();
    let input = unique("convert-in");
    let prefix = unique("out");
    kafka.create_topic(&input, 1);
    let out_topic = format!("{prefix}-ts_json_kaiwudb_tb-line_influxdb");
    kafka.create_topic(&out_topic, 1);
    let agent = start(
        dir.path(),
        "kwpipe",
        &example("kafka-convert.toml"),
        &[
            ("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap.clone()),
            ("KAFKA_INPUT_TOPIC", input.clone()),
            ("KAFKA_GROUP_ID", unique("g")),
            ("KAFKA_OUTPUT_PREFIX", prefix.clone()),
        ],
    );
    let first = SEED_JSON_KAIWUDB.lines().next().unwrap().to_string();
    produce(&kafka, &input, &[(0, first)]).await;
    let got = read_topic(&kafka, &out_topic, 1).await;
    let text = String::from_utf8(got[0].0.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(
        lines[0],
        "ts_json_kaiwudb_tb,location=tianjin,temperature=35.5 c1=11i16,c2=21i32,\
         c3=2535208944865431245i64,c4=6.14545f32,c5=5.15656f64,c6=true 1690855924005",
        "{text}"
    );
    agent.stop(STOP);
}

// ------------------------------------------------------------ at scale, faults

/// 100,000 messages over 5 partitions, `concurrency = 5`: every row lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_messages_over_five_partitions_land_once() {
    let kafka = TestKafka::start();
    let db = TestDb::new("e2e_100k").await;
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("e2e-100k");
    let group = unique("g");
    kafka.create_topic(&topic, 5);
    let total = 100_000u64;
    let records: Vec<(i32, String)> = (0..total)
        .map(|n| {
            let p = (n % 5) as i32;
            (p, seed_shaped("bulk", &format!("device-{p}"), n))
        })
        .collect();
    let t0 = Instant::now();
    produce(&kafka, &topic, &records).await;
    let produced = t0.elapsed();
    // Nothing lost by the broker before kwpipe even starts.
    for (p, (low, high)) in watermarks(&kafka, &topic, 5).await.into_iter().enumerate() {
        assert_eq!((low, high), (0, 20_000), "partition {p}");
    }
    let topology = write_topology(
        dir.path(),
        "t.toml",
        &pipeline_topology(&kafka, &group, &topic, &db, 5, None),
    );
    let t1 = Instant::now();
    let agent = start(dir.path(), "kwpipe", &topology, &[]);
    let c = db.client().await;
    wait_rows(
        &c,
        "bulk",
        total as i64,
        Duration::from_secs(300),
        &[&agent],
    )
    .await;
    let consumed = t1.elapsed();
    assert_rows_exactly(&c, "bulk", total).await;
    wait_committed(
        &kafka.bootstrap,
        &group,
        &topic,
        &[20_000; 5],
        Duration::from_secs(60),
    )
    .await;
    agent.stop(STOP);
    eprintln!("100k: produced in {produced:?}, in the table after {consumed:?}");
}

/// A poison message among good ones: the good ones land; the poison goes through
/// `decode.dropped` to a dead-letter topic with its reason and origin in headers;
/// the committed offset moves past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dead_letter_topic_and_the_offset_moves_on() {
    let kafka = TestKafka::start();
    let db = TestDb::new("e2e_poison").await;
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("e2e-poison");
    let dlq = unique("e2e-dlq");
    let group = unique("g");
    kafka.create_topic(&topic, 1);
    kafka.create_topic(&dlq, 1);
    let not_json = "this is not json".to_string();
    let out_of_range = seed_shaped("good", "device", 7).replace("\"c1\":7,", "\"c1\":70000,");
    let mut records: Vec<(i32, String)> = Vec::new();
    let mut good = 0u64;
    for offset in 0..20 {
        let payload = match offset {
            5 => not_json.clone(),
            12 => out_of_range.clone(),
            _ => {
                good += 1;
                seed_shaped("good", "device", good - 1)
            }
        };
        records.push((0, payload));
    }
    let topology = write_topology(
        dir.path(),
        "t.toml",
        &pipeline_topology(&kafka, &group, &topic, &db, 1, Some(&dlq)),
    );
    let agent = start(dir.path(), "kwpipe", &topology, &[]);
    produce(&kafka, &topic, &records).await;
    let c = db.client().await;
    wait_rows(&c, "good", good as i64, Duration::from_secs(60), &[&agent]).await;
    assert_rows_exactly(&c, "good", good).await;

    let dead = read_topic(&kafka, &dlq, 2).await;
    let header = |m: &Received, k: &str| -> String {
        let v =
            m.1.iter()
                .find(|(name, _)| name == k)
                .unwrap_or_else(|| panic!("no header {k} in {:?}", m.1));
        String::from_utf8(v.1.clone()).unwrap()
    };
    let mut dead = dead;
    dead.sort_by_key(|m| header(m, "kwpipe.offset").parse::<i64>().unwrap());
    assert_eq!(dead[0].0, not_json.as_bytes());
    assert_eq!(header(&dead[0], "kwpipe.topic"), topic);
    assert_eq!(header(&dead[0], "kwpipe.partition"), "0");
    assert_eq!(header(&dead[0], "kwpipe.offset"), "5");
    let reason = header(&dead[0], "kwpipe.error");
    assert!(reason.starts_with("line 1"), "{reason}");
    assert_eq!(header(&dead[1], "kwpipe.offset"), "12");
    assert_eq!(header(&dead[1], "kwpipe.partition"), "0");
    let reason = header(&dead[1], "kwpipe.error");
    assert!(
        reason.contains("70000 is out of range for INT2"),
        "{reason}"
    );
    assert!(
        String::from_utf8_lossy(&dead[1].0).contains("\"c1\":70000"),
        "the dead letter holds the bad record"
    );
    // Past both poisons: everything is handled.
    wait_committed(
        &kafka.bootstrap,
        &group,
        &topic,
        &[20],
        Duration::from_secs(30),
    )
    .await;
    agent.stop(STOP);
}

/// Two kwpipe processes in one group over 6 partitions write to the database; one
/// is killed (kill -9) mid-stream and restarted: every row lands exactly once
/// (what the killed one had not committed is replayed, and the table's key makes
/// the replay a no-op).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_in_a_group_one_killed_and_restarted_every_row_once() {
    let kafka = TestKafka::start();
    let db = TestDb::new("e2e_group").await;
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("e2e-group");
    let group = unique("g");
    kafka.create_topic(&topic, 6);
    let total = 48_000u64;
    let record = |n: u64| {
        let p = (n % 6) as i32;
        (p, seed_shaped("grouped", &format!("device-{p}"), n))
    };
    let topology = write_topology(
        dir.path(),
        "t.toml",
        &pipeline_topology(&kafka, &group, &topic, &db, 1, None),
    );
    let mut a = start(dir.path(), "a", &topology, &[]);
    let b = start(dir.path(), "b", &topology, &[]);
    let c = db.client().await;
    // The first half trickles in, so both members are in the group while it flows.
    let half = total / 2;
    for chunk in 0..8 {
        let from = chunk * half / 8;
        let recs: Vec<_> = (from..from + half / 8).map(record).collect();
        produce(&kafka, &topic, &recs).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A dies with rows of the second half in flight.
    let second: Vec<_> = (half..total).map(record).collect();
    produce(&kafka, &topic, &second[..second.len() / 2]).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&c, "grouped").await < (half + half / 4) as i64 {
        assert!(
            Instant::now() < deadline,
            "A and B stalled:\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill9();
    let at_kill = count(&c, "grouped").await;
    produce(&kafka, &topic, &second[second.len() / 2..]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a2 = start(dir.path(), "a2", &topology, &[]);
    wait_rows(
        &c,
        "grouped",
        total as i64,
        Duration::from_secs(180),
        &[&a, &b, &a2],
    )
    .await;
    assert_rows_exactly(&c, "grouped", total).await;
    b.stop(STOP);
    a2.stop(STOP);
    eprintln!("group of two: A killed with {at_kill} of {total} rows in the table");
}
