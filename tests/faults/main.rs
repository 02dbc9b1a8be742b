//! The fault suite: kwpipe as its own process through crashes, outages, bad data
//! and shutdowns, counting for each scenario the rows produced, written, rejected
//! and lost — and lost must be 0.
//!
//! Its own test binary (`cargo test --test faults`), run after the main one, with
//! one test that runs every scenario in order: they stop servers and kill
//! processes, so nothing else of this binary runs beside them. The table goes to
//! stderr (uncaptured) and to `target/fault-suite.md`.
//! `KWPIPE_FAULTS=kill9-kafka,flood` runs only the scenarios whose names contain
//! one of those words; `KWPIPE_FAULT_SEED` repeats a run's random instants.

#[path = "../support/mod.rs"]
mod support;

mod harness;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use harness::*;
use support::broker::{committed, unique, TestKafka};
use support::pg::{self, PrivatePg, TestDb};

const OUTAGE: Duration = Duration::from_secs(30);

type Scenario = fn(&mut Rng) -> Vec<Figures>;

#[test]
fn fault_suite() {
    let seed = std::env::var("KWPIPE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let only: Vec<String> = std::env::var("KWPIPE_FAULTS")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let scenarios: [(&str, Scenario); 6] = [
        ("flood", malformed_flood),
        ("sigterm", sigterm_under_load),
        ("kill9-kafka", kill9_kafka_to_kwdb),
        ("kill9-poll", kill9_kwdb_poll_to_kafka),
        ("pg-stop", postgres_stopped),
        ("broker-down", broker_down),
    ];
    let mut rng = Rng::new(seed);
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (name, scenario) in scenarios {
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&mut rng)));
        match result {
            Ok(mut figures) => {
                let secs = started.elapsed().as_secs_f64();
                for f in &mut figures {
                    if f.seconds == 0.0 {
                        f.seconds = secs;
                    }
                    if f.lost != 0 {
                        failures.push(format!("{}: {} rows lost", f.scenario, f.lost));
                    }
                }
                rows.extend(figures);
            }
            Err(e) => {
                let message = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{name}: {message}"));
                rows.push(Figures {
                    scenario: name.to_string(),
                    note: "FAILED".into(),
                    seconds: started.elapsed().as_secs_f64(),
                    ..Default::default()
                });
            }
        }
    }
    let table = render(&rows, seed);
    let _ = std::io::stderr().write_all(table.as_bytes());
    let target = support::repo_root().join("target");
    let _ = std::fs::create_dir_all(&target);
    let _ = std::fs::write(target.join("fault-suite.md"), &table);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn render(rows: &[Figures], seed: u64) -> String {
    let mut out = format!(
        "\nFault suite (seed {seed})\n\n\
         | scenario | produced | written | rejected | lost | replayed | time |\n\
         |---|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        out.push_str(&format!(
            "| {}{} | {} | {} | {} | {} | {} | {:.0} s |\n",
            r.scenario,
            if r.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.note)
            },
            r.produced,
            r.written,
            r.rejected,
            r.lost,
            r.replayed.map_or("-".to_string(), |n| n.to_string()),
            r.seconds
        ));
    }
    out
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Rows of `table` in `url`, and whether they are all distinct in `v`.
fn table_rows(url: &str, table: &str) -> u64 {
    pg::scalar(url, &format!("SELECT count(DISTINCT v) FROM {table}")).unwrap_or(0) as u64
}

fn wait_rows(url: &str, table: &str, want: u64, limit: Duration, agent: &Agent) {
    let started = Instant::now();
    loop {
        let n = table_rows(url, table);
        if n >= want {
            return;
        }
        if started.elapsed() > limit {
            panic!(
                "{n} of {want} rows in {table} after {limit:?}; missing v: {}\n{}",
                missing_ranges(url, table, want),
                agent.report()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The values of `v` below `want` that `table` lacks, as ranges.
fn missing_ranges(url: &str, table: &str, want: u64) -> String {
    let sql = format!(
        "SELECT string_agg(CASE WHEN lo = hi THEN lo::text ELSE lo || '-' || hi END, ', ' ORDER BY lo) \
         FROM (SELECT min(v) lo, max(v) hi FROM \
               (SELECT v, v - row_number() OVER (ORDER BY v) g FROM \
                (SELECT generate_series(0, {want} - 1) v EXCEPT SELECT v FROM {table}) m) r \
               GROUP BY g) s"
    );
    pg::text(url, &sql).unwrap_or_else(|| "(query failed)".into())
}

fn wait_kafka_rows(bootstrap: &str, topic: &str, want: u64, limit: Duration, agent: &Agent) {
    let started = Instant::now();
    loop {
        let (_, rows) = kafka_rows(bootstrap, topic);
        if rows.len() as u64 >= want {
            return;
        }
        if started.elapsed() > limit {
            panic!(
                "{} of {want} rows in {topic} after {limit:?}; {}",
                rows.len(),
                agent.report()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The figures of a Kafka -> kwdb run: every row 0..produced must be in `table`.
fn kwdb_figures(name: &str, url: &str, table: &str, produced: u64) -> Figures {
    let written = table_rows(url, table);
    let total = pg::scalar(url, &format!("SELECT count(*) FROM {table}")).unwrap_or(0) as u64;
    assert_eq!(total, written, "{table} holds a row twice");
    let present = pg::scalar(
        url,
        &format!("SELECT count(*) FROM {table} WHERE v >= 0 AND v < {produced}"),
    )
    .unwrap_or(0) as u64;
    Figures {
        scenario: name.to_string(),
        produced,
        written,
        lost: produced - present,
        ..Default::default()
    }
}

/// The figures of a kwdb-poll -> Kafka run: every row 0..produced must be in `topic`.
fn kafka_figures(name: &str, bootstrap: &str, topic: &str, produced: u64) -> Figures {
    let (_, rows) = kafka_rows(bootstrap, topic);
    let present = (0..produced as i64)
        .filter(|v| rows.contains_key(v))
        .count() as u64;
    let replayed: u64 = rows.values().map(|&n| u64::from(n) - 1).sum();
    Figures {
        scenario: name.to_string(),
        produced,
        written: rows.len() as u64,
        lost: produced - present,
        replayed: Some(replayed),
        ..Default::default()
    }
}

fn db(prefix: &str) -> TestDb {
    block_on(TestDb::new(prefix))
}

// ---- kill -9 ------------------------------------------------------------------------

fn kill9_kafka_to_kwdb(rng: &mut Rng) -> Vec<Figures> {
    let kafka = TestKafka::start();
    let dir = scratch();
    let db = db("f_kill");
    let topic = unique("kill");
    let group = unique("g");
    kafka.create_topic(&topic, 4);
    // ~90 s of messages at 100/s: the feed runs through every kill.
    let feed = Feed::kafka(&kafka.bootstrap, &topic, 4, 9_000, 100, |n| {
        json_message("kill", n)
    });
    let topology = kafka_to_kwdb(dir.path(), &kafka.bootstrap, &group, &topic, &db.url);
    let mut instants = Vec::new();
    for round in 0..10 {
        let before = table_rows(&db.url, "kill");
        let mut agent = start_agent(dir.path(), "agent", &topology);
        // A restarted member waits for the killed one's session to expire; kill it
        // at a random instant once it is writing again.
        let started = Instant::now();
        while table_rows(&db.url, "kill") <= before {
            assert!(
                started.elapsed() < Duration::from_secs(40),
                "round {round}: no progress; {}",
                agent.report()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let wait = rng.millis(0, 2000);
        std::thread::sleep(wait);
        instants.push(format!("{:.1}", (started.elapsed()).as_secs_f64()));
        agent.kill9();
    }
    let agent = start_agent(dir.path(), "agent", &topology);
    let produced = feed.finish() * ROWS_PER_MESSAGE;
    wait_rows(&db.url, "kill", produced, Duration::from_secs(120), &agent);
    let (status, _) = agent.terminate_timed(Duration::from_secs(40));
    assert!(status.success(), "exit {status:?}");
    eprintln!("kill9 kafka->kwdb: killed at {instants:?} s after each restart");
    vec![Figures {
        note: "10 kills".into(),
        ..kwdb_figures("kill -9 x10: kafka -> kwdb", &db.url, "kill", produced)
    }]
}

fn kill9_kwdb_poll_to_kafka(rng: &mut Rng) -> Vec<Figures> {
    let kafka = TestKafka::start();
    let dir = scratch();
    let db = db("f_pollkill");
    pg::exec(&db.url, SRC_TABLE);
    let topic = unique("pollkill");
    kafka.create_topic(&topic, 1);
    // 30,000 rows over ~20 s, while the agent is killed 10 times.
    let rows = RowFeed::start(&db.url, 30_000, 150, Duration::from_millis(100));
    let topology = kwdb_poll_to_kafka(dir.path(), &db.url, &db.name, &kafka.bootstrap, &topic);
    for _ in 0..10 {
        let mut agent = start_agent(dir.path(), "agent", &topology);
        std::thread::sleep(rng.millis(300, 2500));
        agent.kill9();
    }
    let agent = start_agent(dir.path(), "agent", &topology);
    rows.finish();
    wait_kafka_rows(
        &kafka.bootstrap,
        &topic,
        30_000,
        Duration::from_secs(120),
        &agent,
    );
    let (status, _) = agent.terminate_timed(Duration::from_secs(40));
    assert!(status.success(), "exit {status:?}");
    vec![Figures {
        note: "10 kills".into(),
        ..kafka_figures(
            "kill -9 x10: kwdb-poll -> kafka",
            &kafka.bootstrap,
            &topic,
            30_000,
        )
    }]
}

// ---- outages --------------------------------------------------------------------------

fn postgres_stopped(_rng: &mut Rng) -> Vec<Figures> {
    let pg = PrivatePg::start();
    let kafka = TestKafka::start();
    let dir_in = scratch();
    let dir_out = scratch();
    let sink_url = pg.create_database("sinkdb");
    let src_url = pg.create_database("srcdb");
    pg::exec(&src_url, SRC_TABLE);
    let (topic_in, topic_out) = (unique("pgin"), unique("pgout"));
    kafka.create_topic(&topic_in, 2);
    kafka.create_topic(&topic_out, 1);

    // Both directions through the same outage: ~50 s of input each.
    let feed = Feed::kafka(&kafka.bootstrap, &topic_in, 2, 5_000, 100, |n| {
        json_message("pgstop", n)
    });
    let rows = RowFeed::start(&src_url, 25_000, 50, Duration::from_millis(100));
    let sink = start_agent(
        dir_in.path(),
        "sink",
        &kafka_to_kwdb(
            dir_in.path(),
            &kafka.bootstrap,
            &unique("g"),
            &topic_in,
            &sink_url,
        ),
    );
    let poll = start_agent(
        dir_out.path(),
        "poll",
        &kwdb_poll_to_kafka(
            dir_out.path(),
            &src_url,
            "srcdb",
            &kafka.bootstrap,
            &topic_out,
        ),
    );
    sink.wait(
        "rows flowing before the outage",
        Duration::from_secs(30),
        || table_rows(&sink_url, "pgstop") > 1000,
    );
    pg.stop_server();
    let down = Instant::now();
    std::thread::sleep(OUTAGE / 2);
    // Mid-outage the sink says it cannot write.
    let health = sink.get("/health");
    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
    pg.start_server();
    assert!(
        matches!(&health, Some((503, body)) if body.contains("sinks.db")),
        "/health during the outage: {health:?}"
    );

    let produced_in = feed.finish() * ROWS_PER_MESSAGE;
    rows.finish();
    wait_rows(
        &sink_url,
        "pgstop",
        produced_in,
        Duration::from_secs(120),
        &sink,
    );
    wait_kafka_rows(
        &kafka.bootstrap,
        &topic_out,
        25_000,
        Duration::from_secs(120),
        &poll,
    );
    let retries = sink.metric("kwdb_sink_retries_total", &[]);
    assert!(retries > 0.0, "the sink retried during the outage");
    for agent in [sink, poll] {
        let (status, _) = agent.terminate_timed(Duration::from_secs(40));
        assert!(status.success(), "exit {status:?}");
    }
    vec![
        Figures {
            note: format!("{retries} retries"),
            ..kwdb_figures(
                "PostgreSQL down 30 s: kafka -> kwdb",
                &sink_url,
                "pgstop",
                produced_in,
            )
        },
        kafka_figures(
            "PostgreSQL down 30 s: kwdb-poll -> kafka",
            &kafka.bootstrap,
            &topic_out,
            25_000,
        ),
    ]
}

/// The broker killed (-9) under load in both directions, kept down 30 s, then
/// started again on its own data: a node of the scenario's own.
fn broker_down(_rng: &mut Rng) -> Vec<Figures> {
    let kafka = TestKafka::private();
    let dir_in = scratch();
    let dir_out = scratch();
    let sink_db = db("f_bd_sink");
    let src_db = db("f_bd_src");
    pg::exec(&src_db.url, SRC_TABLE);
    let (topic_in, topic_out) = (unique("bdin"), unique("bdout"));
    kafka.create_topic(&topic_in, 2);
    kafka.create_topic(&topic_out, 1);
    let feed = Feed::kafka(&kafka.bootstrap, &topic_in, 2, 5_000, 100, |n| {
        json_message("bdown", n)
    });
    let rows = RowFeed::start(&src_db.url, 25_000, 50, Duration::from_millis(100));
    let sink = start_agent(
        dir_in.path(),
        "sink",
        &kafka_to_kwdb(
            dir_in.path(),
            &kafka.bootstrap,
            &unique("g"),
            &topic_in,
            &sink_db.url,
        ),
    );
    let poll = start_agent(
        dir_out.path(),
        "poll",
        &kwdb_poll_to_kafka(
            dir_out.path(),
            &src_db.url,
            &src_db.name,
            &kafka.bootstrap,
            &topic_out,
        ),
    );
    sink.wait(
        "rows flowing before the outage",
        Duration::from_secs(30),
        || table_rows(&sink_db.url, "bdown") > 1000,
    );
    kafka.kill9();
    std::thread::sleep(OUTAGE);
    kafka.start_broker();

    let produced_in = feed.finish() * ROWS_PER_MESSAGE;
    rows.finish();
    wait_rows(
        &sink_db.url,
        "bdown",
        produced_in,
        Duration::from_secs(120),
        &sink,
    );
    wait_kafka_rows(
        &kafka.bootstrap,
        &topic_out,
        25_000,
        Duration::from_secs(120),
        &poll,
    );
    for agent in [sink, poll] {
        let (status, _) = agent.terminate_timed(Duration::from_secs(40));
        assert!(status.success(), "exit {status:?}");
    }
    vec![
        kwdb_figures(
            "broker killed, down 30 s: kafka -> kwdb",
            &sink_db.url,
            "bdown",
            produced_in,
        ),
        kafka_figures(
            "broker killed, down 30 s: kwdb-poll -> kafka",
            &kafka.bootstrap,
            &topic_out,
            25_000,
        ),
    ]
}

// ---- bad data ---------------------------------------------------------------------------

/// One good record `n` of each format, and a bad one.
fn flood_record(format: &str, n: u64) -> String {
    let ts = BASE_TS + n as i64;
    let bad = n % 10 == 9;
    match (format, bad) {
        ("json_kaiwudb", false) => json_message("fl_json", n),
        ("json_kaiwudb", true) => r#"{"table":"fl_json","columns":[{"name":"ts""#.to_string(),
        // Nanoseconds, as InfluxDB's writers send them (the decoder's default).
        ("line_influxdb", false) => format!("fl_influx,dev=d{} v={n}i64 {ts}000000", n % 4),
        ("line_influxdb", true) => format!("fl_influx,dev=d1 v={n}i64 notatime"),
        ("json_opentsdb", false) => format!(
            r#"[{{"metric":"fl_otsdb_json.v","timestamp":{ts},"value":{n},"tags":{{"dev":"d{}"}}}}]"#,
            n % 4
        ),
        ("json_opentsdb", true) => r#"[{"metric":"fl_otsdb_json.v","value":"#.to_string(),
        ("line_opentsdb", false) => format!("fl_otsdb_line.v {ts} {n} dev=d{}", n % 4),
        ("line_opentsdb", true) => format!("fl_otsdb_line.v soon {n} dev=d1"),
        _ => unreachable!(),
    }
}

fn malformed_flood(_rng: &mut Rng) -> Vec<Figures> {
    const FORMATS: [(&str, &str, &str); 4] = [
        ("json_kaiwudb", "json", "fl_json"),
        ("line_influxdb", "influx", "fl_influx"),
        ("json_opentsdb", "otsdb_json", "fl_otsdb_json"),
        ("line_opentsdb", "otsdb_line", "fl_otsdb_line"),
    ];
    const MESSAGES: u64 = 2_000;
    let kafka = TestKafka::start();
    let dir = scratch();
    let db = db("f_flood");
    // Line protocol's schema is guessed: its table must exist (DESIGN.md).
    pg::exec(
        &db.url,
        "CREATE TABLE fl_influx (ts TIMESTAMPTZ NOT NULL, v INT8, dev VARCHAR(16) NOT NULL, \
         PRIMARY KEY (ts, dev))",
    );
    let dlq = unique("dlq");
    kafka.create_topic(&dlq, 1);
    let mut topology = String::from("data_dir = \"DATA\"\n")
        .replace("DATA", &dir.path().join("data").display().to_string());
    let mut feeds = Vec::new();
    for (format, short, _) in FORMATS {
        let topic = unique(&format!("flood-{short}"));
        kafka.create_topic(&topic, 1);
        topology.push_str(&format!(
            r#"
[sources.k_{short}]
type = "kafka"
bootstrap_servers = "{bootstrap}"
group_id = "{group}"
topics = ["{topic}"]
session_timeout = "6s"

[transforms.d_{short}]
type = "decode"
inputs = ["k_{short}"]
format = "{format}"
"#,
            bootstrap = kafka.bootstrap,
            group = unique("g"),
        ));
        let f = format.to_string();
        feeds.push(Feed::kafka(
            &kafka.bootstrap,
            &topic,
            1,
            MESSAGES,
            0,
            move |n| flood_record(&f, n),
        ));
    }
    let shorts: Vec<&str> = FORMATS.iter().map(|f| f.1).collect();
    topology.push_str(&format!(
        r#"
[transforms.b]
type = "batch"
inputs = [{decoded}]
max_rows = 1000
timeout = "100ms"

[sinks.db]
type = "kwdb"
inputs = ["b"]
url = "{url}"

[sinks.dlq]
type = "kafka"
inputs = [{dropped}]
bootstrap_servers = "{bootstrap}"
topic = "{dlq}"
"#,
        decoded = shorts
            .iter()
            .map(|s| format!("\"d_{s}\""))
            .collect::<Vec<_>>()
            .join(", "),
        dropped = shorts
            .iter()
            .map(|s| format!("\"d_{s}.dropped\""))
            .collect::<Vec<_>>()
            .join(", "),
        url = db.url,
        bootstrap = kafka.bootstrap,
    ));
    let agent = start_agent(dir.path(), "agent", &topology);
    for f in feeds {
        assert_eq!(f.finish(), MESSAGES);
    }
    let bad = MESSAGES / 10;
    let good_rows = |format: &str| {
        let per = if format == "json_kaiwudb" {
            ROWS_PER_MESSAGE
        } else {
            1
        };
        (MESSAGES - bad) * per
    };
    let mut figures = Vec::new();
    for (format, short, table) in FORMATS {
        let want = good_rows(format);
        let count = || {
            pg::scalar(&db.url, &format!("SELECT count(DISTINCT v) FROM {table}")).unwrap_or(0)
                as u64
        };
        agent.wait(
            &format!("{want} rows in {table}"),
            Duration::from_secs(90),
            || count() >= want,
        );
        let label = format!("component_id=\"d_{short}\"");
        agent.wait(
            &format!("{bad} rejected by d_{short}"),
            Duration::from_secs(30),
            || agent.metric("component_rejected_events_total", &[&label]) >= bad as f64,
        );
        let rejected = agent.metric("component_rejected_events_total", &[&label]) as u64;
        let written = count();
        figures.push(Figures {
            scenario: format!("1 in 10 malformed: {format}"),
            produced: want + bad,
            written,
            rejected,
            lost: (want + bad).saturating_sub(written + rejected),
            ..Default::default()
        });
    }
    // Every rejected record is in the dead-letter topic, with its reason.
    let dead = {
        let started = Instant::now();
        loop {
            let n = dead_letters(&kafka.bootstrap, &dlq);
            if n >= 4 * bad || started.elapsed() > Duration::from_secs(30) {
                break n;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    assert_eq!(dead, 4 * bad, "dead letters");
    let metrics = agent.get("/metrics").map(|r| r.1).unwrap_or_default();
    for name in [
        "component_errors_total{",
        "kwdb_sink_batch_write_seconds_bucket{",
        "kwdb_sink_retries_total{",
        "kafka_consumer_lag{",
    ] {
        if name.starts_with("kafka_consumer_lag") {
            // Statistics come every 5 s.
            agent.wait(
                "kafka_consumer_lag in /metrics",
                Duration::from_secs(15),
                || agent.get("/metrics").is_some_and(|r| r.1.contains(name)),
            );
        } else if name.starts_with("kwdb_sink_retries") {
            // Registered, zero: no retry happened.
            continue;
        } else {
            assert!(
                metrics.contains(name),
                "{name} missing from /metrics: {:?}",
                metrics
                    .lines()
                    .filter(|l| l.starts_with("# TYPE"))
                    .collect::<Vec<_>>()
            );
        }
    }
    // Everything was acknowledged, dead letters included: nothing left in flight.
    agent.wait(
        "kafka_source_in_flight_messages back to 0",
        Duration::from_secs(10),
        || {
            agent.get("/metrics").is_some_and(|(_, text)| {
                text.contains("kafka_source_in_flight_messages{")
                    && agent.metric("kafka_source_in_flight_messages", &[]) == 0.0
            })
        },
    );
    let (status, _) = agent.terminate_timed(Duration::from_secs(40));
    assert!(status.success(), "exit {status:?}");
    for f in &mut figures {
        f.note = format!("{} dead-lettered", bad);
    }
    figures
}

fn dead_letters(bootstrap: &str, topic: &str) -> u64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "fault-suite-dlq")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    if high == 0 {
        return 0;
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.unwrap();
        let reason = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "kwpipe.error"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).to_string());
        assert!(
            reason.is_some_and(|r| !r.is_empty()),
            "a dead letter without its reason"
        );
        n += 1;
        if m.offset() + 1 >= high {
            break;
        }
    }
    n
}

// ---- SIGTERM ----------------------------------------------------------------------------

fn sigterm_under_load(rng: &mut Rng) -> Vec<Figures> {
    let mut out = vec![sigterm_kafka_to_kwdb(rng)];
    out.push(sigterm_kwdb_poll_to_kafka(rng));
    out
}

fn sigterm_kafka_to_kwdb(rng: &mut Rng) -> Figures {
    // Enough to be mid-stream at the signal; the mock keeps 5 MB per partition.
    const PARTITIONS: i32 = 8;
    const MESSAGES: u64 = 60_000;
    let kafka = TestKafka::start();
    let dir = scratch();
    let db = db("f_term");
    let topic = unique("term");
    let group = unique("g");
    kafka.create_topic(&topic, PARTITIONS);
    let feed = Feed::kafka(&kafka.bootstrap, &topic, PARTITIONS, MESSAGES, 0, |n| {
        json_message("term", n)
    });
    let topology = kafka_to_kwdb(dir.path(), &kafka.bootstrap, &group, &topic, &db.url);
    let agent = start_agent(dir.path(), "first", &topology);
    // Mid-stream at a random point of the feed: a row count, not a pause, since how
    // long the feed lasts varies several-fold between builds and machines (a pause
    // of up to a second once outlasted all of it).
    let at = (5_000 + rng.next() % 60_000) as f64;
    agent.wait_every(
        Duration::from_millis(10),
        &format!("{at} rows written"),
        Duration::from_secs(60),
        || agent.metric("kwdb_sink_rows_written_total", &[]) >= at,
    );
    let (status, took) = agent.terminate_timed(Duration::from_secs(40));
    assert!(status.success(), "SIGTERM: exit {status:?}");
    assert!(took < Duration::from_secs(30), "exit took {took:?}");
    let produced = feed.finish() * ROWS_PER_MESSAGE;

    // Committed offsets cover exactly the messages whose rows were written (-1: none).
    let offsets: Vec<i64> = committed(&kafka.bootstrap, &group, &topic, PARTITIONS)
        .into_iter()
        .map(|o| o.unwrap_or(-1))
        .collect();
    let messages: BTreeMap<i32, Vec<i64>> = {
        let mut m: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        let text = pg_messages(&db.url);
        for n in text {
            m.entry((n % PARTITIONS as i64) as i32)
                .or_default()
                .push(n / PARTITIONS as i64);
        }
        m
    };
    for p in 0..PARTITIONS {
        let got = messages.get(&p).cloned().unwrap_or_default();
        let expect: Vec<i64> = (0..offsets[p as usize].max(0)).collect();
        assert_eq!(
            got.len(),
            expect.len(),
            "partition {p}: committed {} but {} messages written",
            offsets[p as usize],
            got.len()
        );
        assert_eq!(
            got, expect,
            "partition {p}: written messages are not 0..committed"
        );
    }
    let acknowledged: i64 = offsets.iter().map(|o| o.max(&0)).sum();
    assert!(
        acknowledged > 0 && (acknowledged as u64) < MESSAGES,
        "{offsets:?}"
    );

    // The restart reads from there: nothing acknowledged comes again.
    let agent = start_agent(dir.path(), "second", &topology);
    wait_rows(&db.url, "term", produced, Duration::from_secs(120), &agent);
    let consumed = agent.metric("component_sent_events_total", &["component_id=\"in\""]) as i64;
    let (status, _) = agent.terminate_timed(Duration::from_secs(40));
    assert!(status.success());
    let replayed = consumed - (MESSAGES as i64 - acknowledged);
    assert_eq!(replayed, 0, "the restart consumed {consumed} messages");
    Figures {
        note: format!(
            "exit 0 in {:.1} s; {acknowledged} msgs committed",
            took.as_secs_f64()
        ),
        replayed: Some(replayed as u64 * ROWS_PER_MESSAGE),
        ..kwdb_figures(
            "SIGTERM under load: kafka -> kwdb",
            &db.url,
            "term",
            produced,
        )
    }
}

/// The message numbers whose rows are in `term` (every row of a message is written
/// together: they are one batch).
fn pg_messages(url: &str) -> Vec<i64> {
    block_on(async {
        let (c, conn) = kwpipe_components::kwdb::tokio_postgres::connect(
            url,
            kwpipe_components::kwdb::tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        c.query(
            &format!(
                "SELECT DISTINCT v / {ROWS_PER_MESSAGE} AS n, count(*) OVER (PARTITION BY v / {ROWS_PER_MESSAGE}) \
                 FROM term ORDER BY n"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r.get::<_, i64>(1), ROWS_PER_MESSAGE as i64, "a message half written");
            r.get::<_, i64>(0)
        })
        .collect()
    })
}

fn sigterm_kwdb_poll_to_kafka(rng: &mut Rng) -> Figures {
    const ROWS: u64 = 60_000;
    let kafka = TestKafka::start();
    let dir = scratch();
    let db = db("f_pollterm");
    pg::exec(&db.url, SRC_TABLE);
    let topic = unique("pollterm");
    kafka.create_topic(&topic, 1);
    RowFeed::start(&db.url, ROWS, 5_000, Duration::ZERO).finish();
    let topology = kwdb_poll_to_kafka(dir.path(), &db.url, &db.name, &kafka.bootstrap, &topic);
    let agent = start_agent(dir.path(), "first", &topology);
    agent.wait("rows flowing", Duration::from_secs(30), || {
        agent.metric("component_sent_events_total", &["component_id=\"out\""]) > 0.0
            || agent.metric("component_received_events_total", &["component_id=\"out\""]) > 0.0
    });
    std::thread::sleep(rng.millis(0, 500));
    let (status, took) = agent.terminate_timed(Duration::from_secs(40));
    assert!(status.success(), "SIGTERM: exit {status:?}");
    let (_, before) = kafka_rows(&kafka.bootstrap, &topic);
    let agent = start_agent(dir.path(), "second", &topology);
    wait_kafka_rows(
        &kafka.bootstrap,
        &topic,
        ROWS,
        Duration::from_secs(120),
        &agent,
    );
    let (status, _) = agent.terminate_timed(Duration::from_secs(40));
    assert!(status.success());
    let figures = kafka_figures(
        "SIGTERM under load: kwdb-poll -> kafka",
        &kafka.bootstrap,
        &topic,
        ROWS,
    );
    assert_eq!(
        figures.replayed,
        Some(0),
        "rows exported again after a clean stop ({} were out before it)",
        before.len()
    );
    Figures {
        note: format!(
            "exit 0 in {:.1} s; {} rows out before the stop",
            took.as_secs_f64(),
            before.len()
        ),
        ..figures
    }
}
