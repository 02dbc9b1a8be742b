//! What the fault scenarios share: kwpipe processes, a private PostgreSQL that may
//! be stopped, feeds into Kafka and PostgreSQL, and counters on both ends.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kwpipe_components::kwdb::tokio_postgres::{self, NoTls};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

pub use crate::support::agent::Agent;

/// One line of the final table.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub scenario: String,
    pub produced: u64,
    pub written: u64,
    pub rejected: u64,
    pub lost: u64,
    /// Rows delivered more than once (at-least-once allows it), where countable.
    pub replayed: Option<u64>,
    pub seconds: f64,
    pub note: String,
}

/// A small deterministic generator: the seed is printed so a run can be repeated.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

// ---- kwpipe -------------------------------------------------------------------

/// kwpipe running `topology` in `dir` (`NAME.toml`, `NAME.log`), with the admin
/// API on a free port.
pub fn start_agent(dir: &Path, name: &str, topology: &str) -> Agent {
    Agent::run_with_api(dir, name, topology)
        // The Kafka source's pauses, resumes and assignments are debug lines: a
        // stalled scenario needs them to be explained.
        .env("KWPIPE_LOG", "info,kwpipe_components::sources::kafka=debug")
        .start()
}

// ---- topologies ------------------------------------------------------------------

/// kafka -> decode (json_kaiwudb) -> batch -> kwdb, with fast retries.
pub fn kafka_to_kwdb(dir: &Path, bootstrap: &str, group: &str, topic: &str, url: &str) -> String {
    format!(
        r#"
data_dir = "{data}"
shutdown_timeout = "30s"

[sources.in]
type = "kafka"
bootstrap_servers = "{bootstrap}"
group_id = "{group}"
topics = ["{topic}"]
commit_interval = "200ms"
session_timeout = "6s"
drain_timeout = "10s"

[transforms.d]
type = "decode"
inputs = ["in"]
format = "json_kaiwudb"

[transforms.b]
type = "batch"
inputs = ["d"]
max_rows = 1000
timeout = "100ms"

[sinks.db]
type = "kwdb"
inputs = ["b"]
url = "{url}"
retry_backoff = "200ms"
retry_backoff_max = "2s"
"#,
        data = dir.join("data").display(),
    )
}

/// kwdb-poll -> encode (json_kaiwudb) -> kafka.
pub fn kwdb_poll_to_kafka(
    dir: &Path,
    url: &str,
    database: &str,
    bootstrap: &str,
    topic: &str,
) -> String {
    format!(
        r#"
data_dir = "{data}"
shutdown_timeout = "30s"

[sources.db]
type = "kwdb-poll"
url = "{url}"
database = "{database}"
discover_interval = "300ms"
query_interval = "100ms"
connection_backoff = "500ms"

[transforms.e]
type = "encode"
inputs = ["db"]
format = "json_kaiwudb"

[sinks.out]
type = "kafka"
inputs = ["e"]
bootstrap_servers = "{bootstrap}"
topic = "{topic}"
"#,
        data = dir.join("data").display(),
    )
}

// ---- Kafka feed and counts --------------------------------------------------------

/// Rows per Kafka message of the feeds.
pub const ROWS_PER_MESSAGE: u64 = 5;
pub const BASE_TS: i64 = 1_700_000_000_000;

/// Message `n` in json_kaiwudb: rows `n*5 .. n*5+5` with `v` = row number.
pub fn json_message(table: &str, n: u64) -> String {
    let rows: Vec<String> = (0..ROWS_PER_MESSAGE)
        .map(|k| {
            let r = n * ROWS_PER_MESSAGE + k;
            format!(
                r#"{{"ts":{},"v":{r},"dev":"d{}"}}"#,
                BASE_TS + r as i64,
                r % 4
            )
        })
        .collect();
    format!(
        r#"{{"table":"{table}","columns":[{{"name":"ts","type":"TIMESTAMPTZ"}},{{"name":"v","type":"INT8"}}],"tags":[{{"name":"dev","type":"VARCHAR","length":16,"primary":true,"nullable":false}}],"data":[{}]}}"#,
        rows.join(",")
    )
}

#[derive(Default)]
pub struct DeliveryCount {
    delivered: AtomicU64,
    failed: AtomicU64,
}

pub struct Counting(Arc<DeliveryCount>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// A producer thread: messages `0..total` to `partitions` partitions (message n to
/// partition n % partitions) at about `rate` per second; never times out, so a
/// broker outage only delays it.
pub struct Feed {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    counts: Arc<DeliveryCount>,
}

impl Feed {
    pub fn kafka(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        total: u64,
        rate: u64,
        make: impl Fn(u64) -> String + Send + 'static,
    ) -> Feed {
        let counts = Arc::new(DeliveryCount::default());
        let producer: BaseProducer<Counting> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("message.timeout.ms", "0")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create_with_context(Counting(counts.clone()))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let topic = topic.to_string();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                for n in 0..total {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Some(at) = (n * 1_000_000).checked_div(rate) {
                        let due = started + Duration::from_micros(at);
                        while Instant::now() < due {
                            producer.poll(Duration::from_millis(1));
                        }
                    }
                    let payload = make(n);
                    let key = n.to_string();
                    loop {
                        let record = BaseRecord::to(&topic)
                            .partition((n % partitions as u64) as i32)
                            .key(&key)
                            .payload(&payload);
                        match producer.send(record) {
                            Ok(()) => break,
                            Err(_) => {
                                producer.poll(Duration::from_millis(10));
                            }
                        }
                    }
                    producer.poll(Duration::ZERO);
                }
                producer
                    .flush(Duration::from_secs(120))
                    .expect("feed flushed");
            })
        };
        Feed {
            thread: Some(thread),
            stop,
            counts,
        }
    }

    /// Waits for every message to be acknowledged by the broker.
    pub fn finish(mut self) -> u64 {
        self.thread.take().unwrap().join().expect("feed thread");
        assert_eq!(self.counts.failed.load(Ordering::Relaxed), 0);
        self.counts.delivered.load(Ordering::Relaxed)
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every message of `topic` (all partitions, from the start): how many, and how
/// many times each row (`v` of each json_kaiwudb data element) was seen.
pub fn kafka_rows(bootstrap: &str, topic: &str) -> (u64, BTreeMap<i64, u32>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "fault-suite-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in metadata.topics()[0].partitions() {
        let (_, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        if high > 0 {
            ends.insert(p.id(), high);
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
    }
    let mut rows = BTreeMap::new();
    let mut messages = 0;
    if ends.is_empty() {
        return (0, rows);
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done: BTreeMap<i32, bool> = ends.keys().map(|p| (*p, false)).collect();
    while done.values().any(|d| !d) {
        assert!(Instant::now() < deadline, "reading {topic} took too long");
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.unwrap();
        messages += 1;
        let payload = std::str::from_utf8(m.payload().unwrap_or_default()).unwrap();
        for line in payload.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            for row in v["data"].as_array().unwrap() {
                *rows.entry(row["v"].as_i64().unwrap()).or_insert(0) += 1;
            }
        }
        if m.offset() + 1 >= ends[&m.partition()] {
            done.insert(m.partition(), true);
        }
    }
    (messages, rows)
}

/// The source table of the kwdb-poll scenarios: timestamp first, primary key on
/// (ts, dev), so the postgres dialect sees a time-series table with tag `dev`.
pub const SRC_TABLE: &str = "CREATE TABLE src (ts TIMESTAMPTZ NOT NULL, v INT8 NOT NULL, \
    dev VARCHAR(16) NOT NULL, PRIMARY KEY (ts, dev))";

/// A writer thread inserting rows `0..total` into `src` in order, `batch` rows every
/// `every`, riding out a database that goes away (each batch retried until it lands).
pub struct RowFeed {
    thread: Option<JoinHandle<()>>,
}

impl RowFeed {
    pub fn start(url: &str, total: u64, batch: u64, every: Duration) -> RowFeed {
        let url = url.to_string();
        let thread = {
            std::thread::spawn(move || {
                block_on(async move {
                    let mut client = None;
                    let mut n = 0;
                    while n < total {
                        let end = (n + batch).min(total);
                        let values: Vec<String> = (n..end)
                            .map(|r| {
                                format!(
                                    "(to_timestamp({}::float8 / 1000), {r}, 'd{}')",
                                    BASE_TS + r as i64,
                                    r % 4
                                )
                            })
                            .collect();
                        let sql = format!(
                            "INSERT INTO src (ts, v, dev) VALUES {} ON CONFLICT DO NOTHING",
                            values.join(",")
                        );
                        if client.is_none() {
                            match tokio_postgres::connect(&url, NoTls).await {
                                Ok((c, conn)) => {
                                    tokio::spawn(conn);
                                    client = Some(c);
                                }
                                Err(_) => {
                                    tokio::time::sleep(Duration::from_millis(300)).await;
                                    continue;
                                }
                            }
                        }
                        match client.as_ref().unwrap().batch_execute(&sql).await {
                            Ok(()) => {
                                n = end;
                                tokio::time::sleep(every).await;
                            }
                            Err(_) => {
                                client = None;
                                tokio::time::sleep(Duration::from_millis(300)).await;
                            }
                        }
                    }
                })
            })
        };
        RowFeed {
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) {
        self.thread.take().unwrap().join().expect("row feed thread");
    }
}
