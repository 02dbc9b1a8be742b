//! What the fault scenarios share: kwpipe processes, a private PostgreSQL that may
//! be stopped, feeds into Kafka and PostgreSQL, and counters on both ends.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use components::kwdb::tokio_postgres::{self, NoTls};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::support::{free_port, kwpipe, write_topology};

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

pub struct Agent {
    child: Child,
    pub api: u16,
    pub log: PathBuf,
}

impl Agent {
    /// Runs `topology` in `dir`, with the admin API on a free port.
    pub fn start(dir: &Path, name: &str, topology: &str) -> Agent {
        let api = free_port();
        // Top-level keys must come before the first table: [api] goes last.
        let text = format!("{topology}\n[api]\naddress = \"127.0.0.1:{api}\"\n");
        let path = write_topology(dir, &format!("{name}.toml"), &text);
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = kwpipe()
            .arg("run")
            .arg(&path)
            // The Kafka source's pauses, resumes and assignments are debug lines: a
            // stalled scenario needs them to be explained.
            .env("KWPIPE_LOG", "info,components::sources::kafka=debug")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("kwpipe starts");
        Agent { child, api, log }
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL: no drain, no commit, no checkpoint
        let _ = self.child.wait();
    }

    /// SIGTERM; the exit status and how long the exit took. Signals only once the
    /// agent's API answers, so the signal finds a running agent, not a process
    /// still starting (whose exit would then depend on how far it had got).
    pub fn terminate(mut self, limit: Duration) -> (ExitStatus, Duration) {
        let up = Instant::now();
        while self.get("/health").is_none()
            && self.child.try_wait().unwrap().is_none()
            && up.elapsed() < limit
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let started = Instant::now();
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "kwpipe did not exit within {limit:?} of SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `done` holds; panics with `what` and the agent's log after `limit`.
    pub fn wait(&self, what: &str, limit: Duration, done: impl FnMut() -> bool) {
        self.wait_every(Duration::from_millis(200), what, limit, done)
    }

    /// [`Agent::wait`], checking `done` every `interval`.
    pub fn wait_every(
        &self,
        interval: Duration,
        what: &str,
        limit: Duration,
        mut done: impl FnMut() -> bool,
    ) {
        let started = Instant::now();
        while !done() {
            if started.elapsed() > limit {
                panic!("timed out after {limit:?}: {what}; {}", self.report());
            }
            std::thread::sleep(interval);
        }
    }

    pub fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// What a failed scenario prints: the log's tail and the metrics that say where
    /// events stopped.
    pub fn report(&self) -> String {
        let metrics = match self.get("/metrics") {
            Some((200, text)) => text
                .lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && (l.contains("events")
                            || l.contains("in_flight")
                            || l.contains("rows")
                            || l.contains("kafka")
                            || l.contains("retries"))
                })
                .collect::<Vec<_>>()
                .join("\n"),
            other => format!("/metrics: {other:?}"),
        };
        format!("agent log:\n{}\nmetrics:\n{metrics}", self.log_text())
    }

    /// `GET path` on the admin API: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.api, path)
    }

    /// The sum of a metric's samples whose labels contain every one of `filters`.
    pub fn metric(&self, name: &str, filters: &[&str]) -> f64 {
        let Some((200, text)) = self.get("/metrics") else {
            return 0.0;
        };
        metric_sum(&text, name, filters)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn metric_sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = if let Some(rest) = rest.strip_prefix('{') {
                rest.rsplit_once("} ")?
            } else {
                ("", rest.strip_prefix(' ')?)
            };
            filters
                .iter()
                .all(|f| labels.contains(f))
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let (_, body) = text.split_once("\r\n\r\n")?;
    Some((status, body.to_string()))
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

/// The group's committed offset per partition (-1 when none).
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).unwrap().offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .collect()
}

// ---- PostgreSQL -----------------------------------------------------------------

pub fn pg_scalar(url: &str, sql: &str) -> Option<i64> {
    block_on(async {
        let (c, conn) = tokio_postgres::connect(url, NoTls).await.ok()?;
        tokio::spawn(conn);
        let row = c.query_one(sql, &[]).await.ok()?;
        Some(row.get::<_, i64>(0))
    })
}

pub fn pg_text(url: &str, sql: &str) -> Option<String> {
    block_on(async {
        let (c, conn) = tokio_postgres::connect(url, NoTls).await.ok()?;
        tokio::spawn(conn);
        let row = c.query_one(sql, &[]).await.ok()?;
        Some(row.get::<_, Option<String>>(0).unwrap_or_default())
    })
}

pub fn pg_exec(url: &str, sql: &str) {
    block_on(async {
        let (c, conn) = tokio_postgres::connect(url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        tokio::spawn(conn);
        c.batch_execute(sql).await.unwrap();
    })
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
