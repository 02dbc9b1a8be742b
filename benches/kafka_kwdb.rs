//! Kafka -> kwpipe -> PostgreSQL throughput: 1,000,000 messages of the seed's
//! `json_kaiwudb` shape, preloaded into a new topic of the real Apache Kafka broker
//! that `scripts/test-env` starts (round-robin over the partitions, keyed by their
//! primary tag), read by the release `kwpipe` binary as a process of its own:
//!
//! 1. kafka -> file: the Kafka source alone, and the messages in the order the
//!    consumer hands them over;
//! 2. file -> decode -> batch -> kwdb, the same messages in time order (as generated);
//! 3. file -> decode -> batch -> kwdb: the database leg alone, with the messages in the
//!    order of 1. (PostgreSQL's own cost depends on the order rows reach its indexes:
//!    round-robin partitions make it 16-39% dearer than time order here, see
//!    `scripts/bench-row-order`);
//! 4. kafka -> decode -> batch -> kwdb (postgres dialect, COPY).
//!
//! 5. `psql \copy` of the same rows (exported from 2.'s table, in time order) into a
//!    table of the same definition: the baseline, in the same run.
//!
//! 2., 3. and 4. alternate `KWPIPE_BENCH_ROUNDS` times, each into a database of its
//! own; medians are reported. Prints rows/s, peak RSS (VmHWM) and CPU per message,
//! and the Kafka leg's cost: 1 - rate(4) / rate(3). `scripts/bench-kafka-kwdb` runs it
//! next to the database-only `kwdb_sink` bench.
//!
//! Env: KWPIPE_TEST_KAFKA (the broker, from `scripts/test-env`), KWPIPE_TEST_PG
//! (server URL), KWPIPE_BENCH_MESSAGES (default 1000000),
//! KWPIPE_BENCH_ROWS_PER_MESSAGE (default 1), KWPIPE_BENCH_PARTITIONS (default 24),
//! KWPIPE_BENCH_CONCURRENCY (the source's `concurrency`, default 1, its default),
//! KWPIPE_BENCH_MAX_IN_FLIGHT and KWPIPE_BENCH_MAX_IN_FLIGHT_BYTES (the source's
//! `max_in_flight` and `max_in_flight_bytes`, default: its defaults),
//! KWPIPE_BENCH_LIBRDKAFKA (the source's `librdkafka_options` as "k=v,k=v"),
//! KWPIPE_BENCH_SINK (lines added to the sink's config), KWPIPE_BENCH_LOG (kwpipe's log filter),
//! KWPIPE_BENCH_BATCH_ROWS (`batch.max_rows` and the sink's `batch_size`, default 1000),
//! KWPIPE_BENCH_BATCH_TIMEOUT (`batch.timeout`, default 100ms),
//! KWPIPE_BENCH_ROUNDS (how often the database leg and the Kafka path alternate, default 3),
//! KWPIPE_BIN (a kwpipe binary to measure instead of this tree's).
//!
//! Two settings keep waits that are not throughput out of the figures. The test
//! broker's group.initial.rebalance.delay.ms (how long a new group waits for more
//! members; Kafka's default 3 s would be a third of the run) is 0, as in Kafka's own
//! development configs. And the batch transform's timeout is 100 ms: the stream
//! never ends, so the last partial batch waits for it; at full speed a batch fills
//! in a few milliseconds and the timeout plays no other part. The producer
//! compresses with lz4, as a real deployment would.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kwpipe_components::kwdb::tokio_postgres::{self, NoTls};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

// No allocator declared here: what is measured is the `kwpipe` binary, a process of
// its own with the agent's allocator (src/main.rs).

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn server() -> String {
    std::env::var("KWPIPE_TEST_PG")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432".into())
}

/// A message of the seed's `ts_json_kaiwudb_tb` shape holding rows first..first+k.
fn message(first: u64, k: u64, out: &mut String) {
    use std::fmt::Write as _;
    out.clear();
    out.push_str(concat!(
        r#"{"table":"ts_json_kaiwudb_tb","columns":[{"name":"ts","type":"TIMESTAMPTZ","length":64},"#,
        r#"{"name":"c1","type":"INT2","length":16},{"name":"c2","type":"INT4","length":32},"#,
        r#"{"name":"c3","type":"INT8","length":64},{"name":"c4","type":"FLOAT4","length":32},"#,
        r#"{"name":"c5","type":"FLOAT8","length":64},{"name":"c6","type":"BOOL","length":1}],"#,
        r#""tags":[{"name":"location","type":"VARCHAR","length":64,"primary":true,"nullable":false},"#,
        r#"{"name":"temperature","type":"FLOAT4","length":64,"primary":false,"nullable":true}],"#,
        r#""data":["#
    ));
    for n in first..first + k {
        if n > first {
            out.push(',');
        }
        // The same values as benches/kwdb_sink.rs generates.
        let _ = write!(
            out,
            r#"{{"ts":{},"c1":{},"c2":{},"c3":{},"c4":{:?},"c5":{:?},"c6":{},"location":"loc{}","temperature":35.5}}"#,
            1_690_855_924_005 + (n / 10) as i64,
            n % 30_000,
            n as i32,
            (n as i64).wrapping_mul(2_535_208_944_865),
            n as f32 * 0.25 + 0.14545,
            n as f64 * 0.5 + 0.15656,
            n % 2 == 0,
            n % 10,
        );
    }
    out.push_str("]}");
}

/// The test broker's address (`eval "$(scripts/test-env)"`), with a new topic of
/// `partitions` partitions on it.
async fn broker_with_topic(topic: &str, partitions: u64) -> String {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let bootstrap = std::env::var("KWPIPE_TEST_KAFKA")
        .expect("KWPIPE_TEST_KAFKA: run eval \"$(scripts/test-env)\" first");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let new = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(1));
    for r in admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.map_err(|(t, e)| format!("{t}: {e}")).unwrap();
    }
    bootstrap
}

/// `psql \copy` of `file` (COPY text) into `table`; seconds.
fn psql_copy(db_url: &str, table: &str, file: &Path) -> f64 {
    let t = Instant::now();
    let out = Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", db_url, "-c"])
        .arg(format!("\\copy {table} FROM '{}'", file.display()))
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

/// Produces the messages into the topic and, in the order they were generated
/// (time order), one per line into `in_order`.
fn preload(
    bootstrap: &str,
    topic: &str,
    messages: u64,
    rows_per: u64,
    partitions: u64,
    in_order: &Path,
) -> u64 {
    let mut file = std::io::BufWriter::new(std::fs::File::create(in_order).unwrap());
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.type", "lz4")
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .unwrap();
    let mut payload = String::new();
    let mut bytes = 0u64;
    for m in 0..messages {
        message(m * rows_per, rows_per, &mut payload);
        bytes += payload.len() as u64;
        file.write_all(payload.as_bytes()).unwrap();
        file.write_all(b"\n").unwrap();
        // Round-robin: consecutive rows in different partitions, so the consumer
        // hands the database rows out of time order (see benches/README.md).
        let partition = (m % partitions) as i32;
        // Keyed by the first row's primary tag, as a device's producer would.
        let key = format!("loc{}", (m * rows_per) % 10);
        loop {
            match producer.send(
                BaseRecord::<str, str>::to(topic)
                    .partition(partition)
                    .key(&key)
                    .payload(&payload),
            ) {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(e.to_string().contains("Queue full"), "{e}");
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(300)).unwrap();
    file.flush().unwrap();
    // Every message is on the broker, from offset 0.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let mut total = 0;
    for p in 0..partitions as i32 {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        assert_eq!(low, 0, "the broker dropped data of partition {p}");
        total += high;
    }
    assert_eq!(total as u64, messages);
    bytes
}

/// The sum of a counter on kwpipe's /metrics (optionally of one component); 0
/// while it is not up.
fn metric(port: u16, name: &str, component: Option<&str>) -> u64 {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let req =
        format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut body = String::new();
    if s.read_to_string(&mut body).is_err() {
        return 0;
    }
    let label = component.map(|c| format!("component_id=\"{c}\""));
    body.lines()
        .filter(|l| l.starts_with(name) && label.as_ref().is_none_or(|c| l.contains(c.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// User + system CPU seconds the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// What one kwpipe process did.
#[derive(Clone, Copy)]
struct Run {
    /// Process start to the last row (or message) in place.
    secs: f64,
    /// Process start to the first one.
    first: f64,
    peak_rss_kib: u64,
    cpu: f64,
}

/// Fails the bench when kwpipe has exited, or has not got there in 30 minutes.
fn still_going(child: &mut Child, started: Instant, progress: &str) {
    assert!(
        child.try_wait().unwrap().is_none(),
        "kwpipe exited early at {progress}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1800),
        "only {progress} after 30 minutes"
    );
}

/// Runs `kwpipe run` on `topology` until `progress` (read from its /metrics)
/// reaches `target`, then stops it with SIGTERM (which drains and flushes).
async fn run_kwpipe(
    topology: &Path,
    api_port: u16,
    target: u64,
    progress: impl Fn(u16) -> u64,
    db: Option<(&str, u64)>,
) -> Run {
    // KWPIPE_BIN measures another build (e.g. the one before a change) in the same
    // conditions.
    let kwpipe =
        std::env::var("KWPIPE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_kwpipe").to_string());
    let started = Instant::now();
    let mut child = Command::new(&kwpipe)
        .arg("run")
        .arg(topology)
        .env(
            "KWPIPE_LOG",
            std::env::var("KWPIPE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Progress comes from kwpipe's own counters (/metrics), so the watching costs
    // the machine nothing: a count(*) every 50 ms took a third of a core from
    // PostgreSQL. The table is counted once at the end.
    let mut first = None;
    let mut hwm = 0;
    loop {
        let n = progress(api_port);
        hwm = hwm.max(vm_hwm_kib(pid));
        if n > 0 && first.is_none() {
            first = Some(started.elapsed());
        }
        if n >= target {
            break;
        }
        still_going(&mut child, started, &format!("{n} of {target}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some((db_url, rows)) = db {
        // The counter also counts rows written twice (messages re-read after a
        // rebalance; the table's key keeps one copy), so the table may still lack a
        // few: count until they are there.
        let (c, conn) = tokio_postgres::connect(db_url, NoTls).await.unwrap();
        tokio::spawn(conn);
        loop {
            let n: i64 = c
                .query_one("SELECT count(*) FROM ts_json_kaiwudb_tb", &[])
                .await
                .unwrap()
                .get(0);
            if n as u64 >= rows {
                assert_eq!(n as u64, rows, "rows in the table");
                break;
            }
            still_going(
                &mut child,
                started,
                &format!("{n} of {rows} rows in the table"),
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    hwm = hwm.max(vm_hwm_kib(pid));
    let cpu = cpu_seconds(pid);
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "kwpipe exited with {status}");
    Run {
        secs,
        first: first.unwrap_or_default().as_secs_f64(),
        peak_rss_kib: hwm,
        cpu,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The run with the median duration (peak RSS and CPU are that run's).
fn median(runs: &[Run]) -> Run {
    let mut order = runs.to_vec();
    order.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    order[order.len() / 2]
}

async fn drop_database(admin: &tokio_postgres::Client, name: &str) {
    admin
        .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
}

async fn create_database(admin: &tokio_postgres::Client, name: &str) -> String {
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    format!("{}/{name}", server())
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let messages = env_or("KWPIPE_BENCH_MESSAGES", 1_000_000);
    let rows_per = env_or("KWPIPE_BENCH_ROWS_PER_MESSAGE", 1);
    let partitions = env_or("KWPIPE_BENCH_PARTITIONS", 24);
    let concurrency = env_or("KWPIPE_BENCH_CONCURRENCY", 1);
    // Unset: the source's own default.
    let max_in_flight = [
        ("KWPIPE_BENCH_MAX_IN_FLIGHT", "max_in_flight"),
        ("KWPIPE_BENCH_MAX_IN_FLIGHT_BYTES", "max_in_flight_bytes"),
    ]
    .iter()
    .filter_map(|(var, key)| Some(format!("{key} = {}\n", std::env::var(var).ok()?)))
    .collect::<String>();
    // More lines for the sink's config, e.g. "copy_max_rows = 5000".
    let sink_extra = std::env::var("KWPIPE_BENCH_SINK").unwrap_or_default();
    // librdkafka options for the source, "k=v,k=v" (e.g. queued.max.messages.kbytes).
    let prefetch = std::env::var("KWPIPE_BENCH_LIBRDKAFKA")
        .map(|v| {
            let kv: Vec<String> = v
                .split(',')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| format!("\"{k}\" = \"{v}\""))
                .collect();
            format!("librdkafka_options = {{ {} }}", kv.join(", "))
        })
        .unwrap_or_default();
    let batch_rows = env_or("KWPIPE_BENCH_BATCH_ROWS", 1000);
    let batch_timeout =
        std::env::var("KWPIPE_BENCH_BATCH_TIMEOUT").unwrap_or_else(|_| "100ms".into());
    let rounds = env_or("KWPIPE_BENCH_ROUNDS", 3).max(1);
    let rows = messages * rows_per;
    // A topic of this run's own on the shared broker.
    let topic = &format!("kw-tsdb-json_kaiwudb_with_tag_tb-{}", std::process::id());

    let dbname = format!("kwbench_kafka_{}", std::process::id());
    let dir = std::env::temp_dir().join(&dbname);
    std::fs::create_dir_all(&dir).unwrap();
    let capture = dir.join("messages.jsonl");
    let in_order = dir.join("in-order.jsonl");
    let bootstrap = broker_with_topic(topic, partitions).await;
    let t = Instant::now();
    let bytes = preload(&bootstrap, topic, messages, rows_per, partitions, &in_order);
    eprintln!(
        "preloaded {messages} messages ({:.0} MB) in {:.1} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let (admin, conn) = tokio_postgres::connect(&format!("{}/postgres", server()), NoTls)
        .await
        .expect("PostgreSQL reachable (eval \"$(scripts/test-env)\")");
    tokio::spawn(conn);
    let kafka_source = |group: &str| {
        format!(
            r#"
[sources.in]
type = "kafka"
bootstrap_servers = "{bootstrap}"
group_id = "{group}"
topics = ["{topic}"]
concurrency = {concurrency}
{max_in_flight}
{prefetch}
"#
        )
    };
    let to_database = |url: &str| {
        format!(
            r#"
[transforms.decode]
type = "decode"
inputs = ["in"]
format = "json_kaiwudb"

[transforms.batch]
type = "batch"
inputs = ["decode"]
max_rows = {batch_rows}
timeout = "{batch_timeout}"

[sinks.kwdb]
type = "kwdb"
inputs = ["batch"]
url = "{url}"
batch_size = {batch_rows}
{sink_extra}
"#
        )
    };
    let write_topology = |name: &str, body: String| {
        let port = free_port();
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("[api]\naddress = \"127.0.0.1:{port}\"\n{body}"),
        )
        .unwrap();
        (path, port)
    };
    let rows_written = |port| metric(port, "kwdb_sink_rows_written_total", None);

    // 1. The messages as the consumer hands them over, into a file: the order the
    //    database gets them in from Kafka, and the Kafka source's own rate.
    let (topology, port) = write_topology(
        "capture.toml",
        format!(
            "{}\n[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}\"\ntruncate = true\n",
            kafka_source("capture"),
            capture.display()
        ),
    );
    let captured = run_kwpipe(
        &topology,
        port,
        messages,
        |port| metric(port, "component_received_events_total", Some("out")),
        None,
    )
    .await;
    let lines = BufReader::new(std::fs::File::open(&capture).unwrap())
        .lines()
        .count() as u64;
    assert_eq!(lines, messages, "messages captured");

    // 2., 3. and 4., alternating, `rounds` times, each into a database of its own:
    //    the messages from a file in time order, then in the order Kafka handed them
    //    over (the database leg alone: the same kwpipe, the same messages in the same
    //    order), then Kafka -> database (a new consumer group, from the first
    //    offset). The medians are reported: this machine's speed drifts by ±15%
    //    within minutes.
    let mut from_file = Vec::new();
    let mut in_time_order = Vec::new();
    let mut from_kafka = Vec::new();
    let mut psql_secs = Vec::new();
    for round in 0..rounds {
        for (file, runs) in [(&in_order, &mut in_time_order), (&capture, &mut from_file)] {
            let name = format!("{dbname}_file{round}");
            let url = create_database(&admin, &name).await;
            let (topology, port) = write_topology(
                "file.toml",
                format!(
                    "\n[sources.in]\ntype = \"file\"\npath = \"{}\"\nfollow = true\n{}",
                    file.display(),
                    to_database(&url)
                ),
            );
            runs.push(run_kwpipe(&topology, port, rows, rows_written, Some((&url, rows))).await);
            if file == &in_order {
                // 5. The baseline: the same rows, in time order, by psql \copy into a
                //    table of the same definition (its indexes included).
                let rows_file = dir.join("rows.copy");
                let export = Command::new("psql")
                    .args(["-q", "-v", "ON_ERROR_STOP=1", &url, "-c"])
                    .arg(format!(
                        "\\copy (SELECT * FROM ts_json_kaiwudb_tb ORDER BY ts, location) TO '{}'",
                        rows_file.display()
                    ))
                    .status()
                    .unwrap();
                assert!(export.success());
                let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
                tokio::spawn(conn);
                c.batch_execute("CREATE TABLE psql_copy (LIKE ts_json_kaiwudb_tb INCLUDING ALL)")
                    .await
                    .unwrap();
                psql_secs.push(psql_copy(&url, "psql_copy", &rows_file));
                let n: i64 = c
                    .query_one("SELECT count(*) FROM psql_copy", &[])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(n as u64, rows, "psql copied every row");
                drop(c);
                let _ = std::fs::remove_file(&rows_file);
            }
            drop_database(&admin, &name).await;
        }

        let name = format!("{dbname}_kafka{round}");
        let url = create_database(&admin, &name).await;
        let (topology, port) = write_topology(
            "kafka.toml",
            format!(
                "{}{}",
                kafka_source(&format!("bench{round}")),
                to_database(&url)
            ),
        );
        from_kafka.push(run_kwpipe(&topology, port, rows, rows_written, Some((&url, rows))).await);
        drop_database(&admin, &name).await;
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "messages: {messages} ({rows_per} row(s) each, {:.0} MB of JSON), partitions: {partitions}, \
         source concurrency: {concurrency}, \
         batch timeout: {batch_timeout}; \
         database leg and Kafka path alternated {rounds} times, medians\n",
        bytes as f64 / 1e6,
    );
    println!("| path | seconds | first row after | rows/s | peak RSS | CPU per message |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let line = |label: &str, r: &Run, n: u64| {
        println!(
            "| {label} | {:.2} | {:.2} | {:.0} | {:.1} MiB | {:.1} us |",
            r.secs,
            r.first,
            n as f64 / r.secs,
            r.peak_rss_kib as f64 / 1024.0,
            r.cpu * 1e6 / messages as f64
        );
    };
    let file = median(&from_file);
    let kafka = median(&from_kafka);
    line(
        "kwpipe kafka -> file (messages/s; the Kafka source alone)",
        &captured,
        messages,
    );
    line(
        "kwpipe file -> decode -> batch -> kwdb, the same messages in time order",
        &median(&in_time_order),
        rows,
    );
    line(
        "kwpipe file -> decode -> batch -> kwdb, the same messages in Kafka's order (database leg)",
        &file,
        rows,
    );
    line(
        "kwpipe kafka -> decode -> batch -> kwdb (start to last row)",
        &kafka,
        rows,
    );
    psql_secs.sort_by(f64::total_cmp);
    let psql = psql_secs[psql_secs.len() / 2];
    println!(
        "| psql \\copy of the same rows in time order (baseline) | {psql:.2} | | {:.0} | | |",
        rows as f64 / psql
    );
    let steady = kafka.secs - kafka.first;
    println!(
        "| same, first row to last row (without start-up and group join, {:.2} s) | {steady:.2} | | {:.0} | | |",
        kafka.first,
        rows as f64 / steady
    );
    let rates = |runs: &[Run]| {
        runs.iter()
            .map(|r| format!("{:.0}", rows as f64 / r.secs))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "\nrows/s of every round: time order {}; database leg {}; Kafka path {}",
        rates(&in_time_order),
        rates(&from_file),
        rates(&from_kafka)
    );
    println!(
        "Kafka leg cost against the same messages read from a file: {:.0}% (target <= 20%)",
        100.0 * (1.0 - file.secs / kafka.secs)
    );
    println!(
        "kwpipe Kafka -> database, start to last row, against psql \\copy of the same rows: {:.2}x psql's rate",
        psql / kafka.secs
    );
}
