//! Hostile input: what a message, a table name, a file, an environment variable
//! or a socket holds must never lose data, stop the agent, hang it or flood it.
//! Each case states its expected outcome: a clear error or a rejection with its
//! reason, nothing lost, no panic, bounded memory and time (time only as a
//! generous upper bound, never measured).
//!
//! Issue 19's probes are kept here so they stay fixed.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::agent::Agent;
use crate::support::pg::TestDb;
use crate::support::{file_sink_rows, free_port, kwpipe, run_kwpipe, wait_for, write_topology};

// ---- helpers -----------------------------------------------------------------

/// An agent running `topology`, its standard error in `dir/agent.log` so the test
/// can look at its log while it runs.
fn start(dir: &Path, topology: &str) -> Agent {
    let topo = write_topology(dir, "hostile.toml", topology);
    Agent::run(&topo).log(dir.join("agent.log")).start()
}

/// How long a SIGTERM may take before the test fails.
const STOP: Duration = Duration::from_secs(120);

/// A time-series-shaped table (timestamp first, a key) of `n` rows, named as given
/// (quoted, so any name the server accepts).
async fn table(db: &TestDb, name: &str, n: i64) {
    let q = format!("\"{}\"", name.replace('"', "\"\""));
    db.client()
        .await
        .batch_execute(&format!(
            "CREATE TABLE {q} (ts timestamptz NOT NULL, v bigint, dev int NOT NULL, PRIMARY KEY (ts, dev));
             INSERT INTO {q} SELECT timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => t), t, 0
             FROM generate_series(0, {}) t;",
            n - 1
        ))
        .await
        .unwrap();
}

fn poll_topology(dir: &Path, db: &TestDb, data: &Path, extra: &str) -> String {
    format!(
        "data_dir = \"{data}\"\nshutdown_timeout = \"20s\"\n\
         [sources.db]\ntype = \"kwdb-poll\"\nurl = \"{url}\"\ndatabase = \"{name}\"\n\
         discover_interval = \"300ms\"\nquery_interval = \"100ms\"\n{extra}\n\
         [sinks.out]\ntype = \"file\"\ninputs = [\"db\"]\npath = \"{out}\"\n",
        data = data.display(),
        url = db.url,
        name = db.name,
        out = dir.join("out.jsonl").display(),
    )
}

// ---- kwdb-poll: table names --------------------------------------------------

/// Issue 19 (1): tables `a.b` and `a b` shared one checkpoint file, so `a b`,
/// exported after `a.b` with the same data_dir, resumed after `a.b`'s last row
/// and exported nothing. Expected: each table exports all of its rows.
#[tokio::test(flavor = "multi_thread")]
async fn tables_whose_names_differ_in_punctuation_each_export_every_row() {
    let db = TestDb::new("hostile_ckpt").await;
    table(&db, "a.b", 6).await;
    table(&db, "a b", 6).await;
    table(&db, "a/b", 6).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out.jsonl");
    for name in ["a.b", "a b", "a/b"] {
        let agent = start(
            dir.path(),
            &poll_topology(dir.path(), &db, &data, &format!("tables = [\"{name}\"]")),
        );
        wait_for(&format!("table {name:?}"), Duration::from_secs(60), || {
            file_sink_rows(&out)
                .iter()
                .filter(|(t, _)| t == name)
                .count()
                >= 6
        });
        agent.stop(STOP);
    }
    // And all three at once, from a fresh data_dir (concurrent saves shared a
    // `.tmp` file and failed the source).
    let _ = std::fs::remove_file(&out);
    let fresh = dir.path().join("fresh");
    let mut agent = start(
        dir.path(),
        &poll_topology(dir.path(), &db, &fresh, "concurrency = 3"),
    );
    wait_for("all three tables", Duration::from_secs(60), || {
        file_sink_rows(&out).len() >= 18
    });
    assert!(agent.running(), "{}", agent.log_text());
    agent.stop(STOP);
    let rows = file_sink_rows(&out);
    for name in ["a.b", "a b", "a/b"] {
        assert_eq!(rows.iter().filter(|(t, _)| t == name).count(), 6, "{name}");
    }
}

/// Issue 19 (1): the same source config against another database with a table
/// of the same name must not resume from the first database's position.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_of_another_database_is_exported_from_its_start() {
    let a = TestDb::new("hostile_dba").await;
    let b = TestDb::new("hostile_dbb").await;
    table(&a, "t", 6).await;
    table(&b, "t", 4).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out.jsonl");
    let agent = start(dir.path(), &poll_topology(dir.path(), &a, &data, ""));
    wait_for("database a", Duration::from_secs(60), || {
        file_sink_rows(&out).len() >= 6
    });
    agent.stop(STOP);
    let agent = start(dir.path(), &poll_topology(dir.path(), &b, &data, ""));
    wait_for("database b", Duration::from_secs(60), || {
        file_sink_rows(&out).len() >= 10
    });
    agent.stop(STOP);
    assert_eq!(file_sink_rows(&out).len(), 10);
}

/// Issue 19 (2): a table kwpipe cannot export (a non-ASCII name, a name with a
/// newline or ESC) is skipped with an error naming it, in the log and in
/// `/components`; the other tables go on and the agent keeps running. The names
/// reach the log escaped: no forged line, no raw ESC.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_that_cannot_be_exported_is_skipped_and_the_others_go_on() {
    let db = TestDb::new("hostile_names").await;
    let forged = "evil\n2026-01-01T00:00:00.000000Z ERROR forged line";
    table(&db, "température", 3).await;
    table(&db, forged, 3).await;
    table(&db, "esc\u{1b}[31mred", 3).await;
    table(&db, "good", 5).await;
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let out = dir.path().join("out.jsonl");
    let mut agent = start(
        dir.path(),
        &poll_topology(
            dir.path(),
            &db,
            &dir.path().join("data"),
            &format!("[api]\naddress = \"127.0.0.1:{api}\"\n"),
        ),
    );
    wait_for("the good table", Duration::from_secs(60), || {
        file_sink_rows(&out)
            .iter()
            .filter(|(t, _)| t == "good")
            .count()
            >= 5
    });
    wait_for("three tables reported", Duration::from_secs(60), || {
        agent.log_text().matches("cannot export the table").count() >= 3
    });
    // Still running a few discoveries later.
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent.running(), "the agent stopped: {}", agent.log_text());
    let (status, body) = kwpipe::top::fetch(&format!("http://127.0.0.1:{api}"), "/components")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let views: Vec<kwpipe::admin::ComponentView> = serde_json::from_str(&body).unwrap();
    let source = views.iter().find(|v| v.id == "db").unwrap();
    assert_eq!(source.state, "running");
    assert_eq!(source.problems.len(), 3, "{source:?}");
    assert!(
        source.problems.iter().any(|p| p.contains("température")),
        "{source:?}"
    );
    let (_, metrics) = kwpipe::top::fetch(&format!("http://127.0.0.1:{api}"), "/metrics")
        .await
        .unwrap();
    let table_errors: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("component_errors_total{")
                && l.contains("component_id=\"db\"")
                && l.contains("error_type=\"table\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(table_errors >= 3.0, "{metrics}");
    let raw = agent.raw_log();
    assert!(!raw.contains(&0x1b), "raw ESC in the log");
    let log = agent.stop(STOP);
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2026-01-01T00:00:00.000000Z")),
        "a forged log line:\n{log}"
    );
    assert!(log.contains("température"), "{log}");
    assert_eq!(
        file_sink_rows(&out)
            .iter()
            .filter(|(t, _)| t == "good")
            .count(),
        5
    );
}

// ---- Kafka: headers ----------------------------------------------------------

/// Issue 19 (9): a bad message carrying its own `kwpipe.error` and
/// `kwpipe.offset` reached the dead-letter topic with those first. Expected: the
/// dead-letter record's `kwpipe.*` headers are kwpipe's alone (one each, the true
/// reason and offset); the message's own are kept renamed `incoming.kwpipe.*`.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_cannot_spoof_kwpipes_dead_letter_headers() {
    use crate::support::broker::{unique, TestKafka};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Header, Headers, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{ClientConfig, Message};

    let kafka = TestKafka::start();
    let topic = unique("hostile-spoof");
    let dlq = unique("hostile-dlq");
    kafka.create_topic(&topic, 1);
    kafka.create_topic(&dlq, 1);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .create()
        .unwrap();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "kwpipe.error",
            value: Some("spoofed reason"),
        })
        .insert(Header {
            key: "kwpipe.offset",
            value: Some("999"),
        })
        .insert(Header {
            key: "trace",
            value: Some("t1"),
        });
    producer
        .send(
            BaseRecord::<(), str>::to(&topic)
                .payload("not json at all")
                .headers(headers),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let agent = start(
        dir.path(),
        &format!(
            "data_dir = \"{data}\"\n\
             [sources.kafka]\ntype = \"kafka\"\nbootstrap_servers = \"{b}\"\ngroup_id = \"{g}\"\n\
             topics = [\"{topic}\"]\ncommit_interval = \"200ms\"\n\
             [transforms.decode]\ntype = \"decode\"\ninputs = [\"kafka\"]\nformat = \"json_kaiwudb\"\n\
             [sinks.rows]\ntype = \"blackhole\"\ninputs = [\"decode\"]\n\
             [sinks.dead]\ntype = \"kafka\"\ninputs = [\"decode.dropped\"]\nbootstrap_servers = \"{b}\"\n\
             topic = \"{dlq}\"\n",
            data = dir.path().display(),
            b = kafka.bootstrap,
            g = unique("g"),
        ),
    );
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&dlq]).unwrap();
    let started = Instant::now();
    let headers: Vec<(String, String)> = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing on the dead-letter topic: {}",
            agent.log_text()
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            break m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
        }
    };
    agent.stop(STOP);
    let all = |k: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(name, _)| name == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(all("kwpipe.offset"), ["0"], "{headers:?}");
    let reason = all("kwpipe.error");
    assert_eq!(reason.len(), 1, "{headers:?}");
    assert!(reason[0].contains("invalid JSON"), "{headers:?}");
    assert_eq!(all("incoming.kwpipe.error"), ["spoofed reason"]);
    assert_eq!(all("incoming.kwpipe.offset"), ["999"]);
    assert_eq!(all("trace"), ["t1"]);
}

// ---- logs --------------------------------------------------------------------

/// Issue 19 (10): one message with 50,000 bad values wrote one WARN line each.
/// Expected: a handful of lines, then the count of what was left out (logged by
/// the time the agent exits); every rejection still counted in the metric.
#[test]
fn a_message_full_of_bad_values_does_not_flood_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<String> = (0..50_000)
        .map(|i| format!(r#"{{"ts":{i},"v":70000,"h":1}}"#))
        .collect();
    let message = format!(
        r#"{{"table":"t","columns":[{{"name":"ts","type":"TIMESTAMP"}},{{"name":"v","type":"INT2"}}],"tags":[{{"name":"h","type":"INT4","primary":true}}],"data":[{}]}}"#,
        rows.join(",")
    );
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, format!("{message}\n")).unwrap();
    let topo = write_topology(
        dir.path(),
        "t.toml",
        &format!(
            "data_dir = \"{d}\"\n[sources.in]\ntype = \"file\"\npath = \"{i}\"\n\
             [transforms.decode]\ntype = \"decode\"\ninputs = [\"in\"]\nformat = \"json_kaiwudb\"\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"decode\"]\n",
            d = dir.path().display(),
            i = input.display()
        ),
    );
    let out = run_kwpipe(&["run", topo.to_str().unwrap()], Duration::from_secs(120));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let written = log
        .lines()
        .filter(|l| l.contains("record rejected") && !l.contains("suppressed"))
        .count();
    let suppressed: u64 = log
        .lines()
        .filter(|l| l.contains("repeated log messages suppressed"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("suppressed="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum();
    assert!(written <= 100, "{written} lines of rejections");
    assert_eq!(written as u64 + suppressed, 50_000, "{log}");
    assert!(log.len() < 100_000, "{} bytes of log", log.len());
}

// ---- configuration and environment -------------------------------------------

/// Issue 19 (5): a non-ASCII character after a backslash (a Windows path)
/// panicked interpolation (exit 101). Expected: a TOML error naming the line.
#[test]
fn a_backslash_before_a_multibyte_character_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for text in [
        "data_dir = \"/tmp/\\\u{e9}\"\n",
        "data_dir = \"C:\\Donn\u{e9}es\"\n",
        "data_dir = \"\\\u{1F600}\"\n",
    ] {
        let p = dir.path().join("p.toml");
        std::fs::write(&p, text).unwrap();
        let out = run_kwpipe(
            &["validate", "--no-environment", p.to_str().unwrap()],
            Duration::from_secs(60),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(101), "panicked on {text:?}: {err}");
        assert!(!out.status.success());
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains("line 1") || err.contains("escape"), "{err}");
    }
}

/// Hostile environment values: a variable that is not UTF-8 (std::env::vars
/// panicked on any such variable, even one never referenced), and values that try
/// to add tables of their own. Expected: unreferenced ones change nothing;
/// referenced ones are clear errors naming the variable or kept inside their
/// string; no panic.
#[test]
fn hostile_environment_values_are_errors_or_plain_strings() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    let topo = |extra: &str| {
        format!(
            "data_dir = \"{}\"\n{extra}\n[sources.in]\ntype = \"stdin\"\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"in\"]\n",
            dir.path().display()
        )
    };
    let bad = std::ffi::OsStr::from_bytes(b"\xff\xfe");
    let validate = |text: &str, envs: &[(&str, &std::ffi::OsStr)]| {
        std::fs::write(&p, text).unwrap();
        let mut cmd = kwpipe();
        cmd.args(["validate", "--no-environment", p.to_str().unwrap()]);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Not referenced: nothing changes.
    let (code, err) = validate(&topo(""), &[("KWPIPE_HOSTILE_UNUSED", bad)]);
    assert_eq!(code, Some(0), "{err}");
    // Referenced: an error naming it.
    let (code, err) = validate(
        &topo("[api]\naddress = \"${KWPIPE_HOSTILE_ADDR}\""),
        &[("KWPIPE_HOSTILE_ADDR", bad)],
    );
    assert_ne!(code, Some(101), "{err}");
    assert_ne!(code, Some(0));
    assert!(err.contains("KWPIPE_HOSTILE_ADDR"), "{err}");
    // A value that would add a table outside quotes: refused.
    let injected = std::ffi::OsStr::new("1\n[sinks.evil]\ntype = \"console\"\ninputs = [\"in\"]");
    let (code, err) = validate(
        &topo("channel_capacity = ${KWPIPE_HOSTILE_N}"),
        &[("KWPIPE_HOSTILE_N", injected)],
    );
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("line break"), "{err}");
    // Inside quotes: a plain string, whatever it holds.
    let (code, err) = validate(
        &topo("[api]\naddress = \"${KWPIPE_HOSTILE_S}\""),
        &[(
            "KWPIPE_HOSTILE_S",
            std::ffi::OsStr::new("\"\n[sinks.evil]\u{1b}[2J"),
        )],
    );
    assert_ne!(code, Some(101), "{err}");
    assert!(!err.contains('\u{1b}'), "raw ESC: {err:?}");
}

// ---- identifiers from every format, into a database -----------------------------

/// Table and column names from every format, as an attacker would write them,
/// through `decode` into the kwdb sink (PostgreSQL). Expected: a name the server
/// can hold becomes a table of exactly that name (quoted, never SQL); one it
/// cannot (non-ASCII for KWDB's rules, a line break, NUL, too long) rejects its
/// record with a reason naming it; the canary table is untouched; the agent ends
/// cleanly; a rejected message creates no table.
#[tokio::test(flavor = "multi_thread")]
async fn identifiers_from_every_format_are_quoted_or_rejected() {
    let db = TestDb::new("hostile_idents").await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE canary (x int); INSERT INTO canary VALUES (1);")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kw = |table: &str, column: &str| {
        format!(
            r#"{{"table":{},"columns":[{{"name":"ts","type":"TIMESTAMP"}},{{"name":{},"type":"INT4"}}],"tags":[{{"name":"h","type":"INT4","primary":true}}],"data":[{{"ts":1700000000000,{}:1,"h":1}}]}}"#,
            serde_json::to_string(table).unwrap(),
            serde_json::to_string(column).unwrap(),
            serde_json::to_string(column).unwrap(),
        )
    };
    let injection = "x\"; DROP TABLE canary; --";
    let inputs = [
        (
            "json_kaiwudb",
            vec![
                kw(injection, "c\"1"),
                kw("température", "v"),
                kw("line\nbreak", "v"),
                kw("nul\u{0}", "v"),
                kw(&"l".repeat(64), "v"),
                kw("ok_kw", "v\u{1b}[2J"),
                // A valid schema, then invalid JSON: no table "e".
                kw("e", "v").replace(":1,\"h\"", ":\"\\ud800\",\"h\""),
            ],
        ),
        (
            "line_influxdb",
            vec![
                "in\"flux\\;\\ DROP\\ TABLE\\ canary,h=1 v=1i 1700000000000000000".into(),
                "influx_ok,h=1 v\"=1i 1700000000000000000".into(),
            ],
        ),
        (
            "json_opentsdb",
            vec![
                r#"{"metric":"ts\"db.v","timestamp":1700000000,"value":1,"tags":{"h\"":"a"}}"#
                    .into(),
            ],
        ),
        (
            "line_opentsdb",
            vec!["put tel;net'.v 1700000000 1 h=a".into()],
        ),
    ];
    let mut topo = format!("data_dir = \"{}\"\n", dir.path().display());
    for (i, (format, lines)) in inputs.iter().enumerate() {
        let path = dir.path().join(format!("in{i}.txt"));
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        // Line protocol carries no key: with a device key and `auto_create =
        // "always"` its tables are created too (without, its rows would wait for
        // tables someone else creates).
        let key = if *format == "line_influxdb" {
            "device_key = true\n"
        } else {
            ""
        };
        topo.push_str(&format!(
            "[sources.in{i}]\ntype = \"file\"\npath = \"{}\"\n\
             [transforms.dec{i}]\ntype = \"decode\"\ninputs = [\"in{i}\"]\nformat = \"{format}\"\n{key}",
            path.display()
        ));
    }
    let decoders: Vec<String> = (0..inputs.len()).map(|i| format!("\"dec{i}\"")).collect();
    topo.push_str(&format!(
        "[sinks.db]\ntype = \"kwdb\"\ninputs = [{}]\nurl = \"{}\"\nauto_create = \"always\"\n",
        decoders.join(", "),
        db.url
    ));
    let t = write_topology(dir.path(), "t.toml", &topo);
    let out = run_kwpipe(&["run", t.to_str().unwrap()], Duration::from_secs(120));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains('\u{1b}'), "raw ESC in the log");
    let canary: i64 = c
        .query_one("SELECT count(*) FROM canary", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(canary, 1, "the canary table was touched");
    let tables: Vec<String> = c
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Written under exactly its own name, whatever the name holds.
    assert!(tables.contains(&injection.to_string()), "{tables:?}\n{log}");
    let rows: i64 = c
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{}\"",
                injection.replace('"', "\"\"")
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
    for never in ["line\nbreak", "nul\u{0}", "e"] {
        assert!(
            !tables.contains(&never.to_string()),
            "{never:?} created: {tables:?}"
        );
    }
    // Every table there is one the input named, and nothing else.
    for t in &tables {
        assert!(
            t == "canary"
                || t.contains('"')
                || t.contains(';')
                || t.contains("ok")
                || t == "température",
            "unexpected table {t:?}"
        );
    }
    // What was refused says so, naming the name (escaped).
    assert!(log.contains("line\\nbreak"), "{log}");
}

// ---- the admin API against slow and malformed clients ----------------------------

/// Issue 19 (6): 2000 connections sending half a header were held open
/// indefinitely. Expected: with the agent's limits (here a 1 s header timeout and
/// 8 connections), a burst of slow and malformed clients is cut off, turned away
/// or answered with errors, and a well-behaved client is served again within a
/// timeout or so; the agent keeps running.
#[test]
fn slow_and_malformed_http_clients_cannot_hold_the_admin_api() {
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "").unwrap();
    let api = free_port();
    let mut agent = start(
        dir.path(),
        &format!(
            "data_dir = \"{d}\"\n[api]\naddress = \"127.0.0.1:{api}\"\n\
             header_read_timeout = \"1s\"\nmax_connections = 8\n\
             [sources.in]\ntype = \"file\"\npath = \"{i}\"\nfollow = true\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"in\"]\n",
            d = dir.path().display(),
            i = input.display()
        ),
    );
    let addr = format!("127.0.0.1:{api}");
    wait_for("the api", Duration::from_secs(30), || {
        TcpStream::connect(&addr).is_ok()
    });
    let get = |request: &[u8]| -> Vec<u8> {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let _ = s.write_all(request);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    };
    // Slow clients: half a header each, many more than the cap.
    let mut slow = Vec::new();
    for _ in 0..200 {
        if let Ok(mut s) = TcpStream::connect(&addr) {
            let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n");
            slow.push(s);
        }
    }
    // Malformed requests: each answered with an error or closed (or turned away
    // at the cap), none served.
    let long_header = format!("GET /health HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(1 << 20));
    for request in [
        &b"\x00\xff\xfe garbage\r\n\r\n"[..],
        b"GET /health HTTP/9.9\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        long_header.as_bytes(),
    ] {
        let answer = get(request);
        assert!(
            !answer.starts_with(b"HTTP/1.1 200"),
            "{:?} was served",
            String::from_utf8_lossy(&request[..request.len().min(40)])
        );
    }
    // A well-behaved client is served: turned away while the cap is full (at
    // once, never queued behind the slow ones), served once they are cut off.
    let mut answer = Vec::new();
    wait_for(
        "a well-behaved client served",
        Duration::from_secs(60),
        || {
            answer = get(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            !answer.is_empty()
        },
    );
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // The slow ones were closed by the server.
    for mut s in slow.into_iter().take(8) {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    assert!(agent.running(), "{}", agent.log_text());
    agent.stop(STOP);
}

// ---- odd topic names ------------------------------------------------------------

/// Topics made from names in the data (`kw-{table}`): a name Kafka cannot take
/// (a slash, a space, a quote, ESC, 300 bytes) rejects its record to `dropped`
/// with the reason; the others are written; nothing is lost in between.
#[tokio::test(flavor = "multi_thread")]
async fn records_whose_topic_name_kafka_cannot_take_are_rejected_with_a_reason() {
    use crate::support::broker::{unique, TestKafka};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Message};

    let kafka = TestKafka::start();
    let prefix = unique("ht");
    let good = format!("{prefix}-ok");
    kafka.create_topic(&format!("kw-{good}"), 1);
    let dir = tempfile::tempdir().unwrap();
    let object = |table: &str| {
        format!(
            r#"{{"table":{},"columns":[{{"name":"ts","type":"TIMESTAMP"}},{{"name":"v","type":"INT4"}}],"tags":[{{"name":"h","type":"INT4","primary":true}}],"data":[{{"ts":1700000000000,"v":1,"h":1}}]}}"#,
            serde_json::to_string(table).unwrap()
        )
    };
    let odd = ["a/b", "x y", "q\"uote", "esc\u{1b}[2J", &"l".repeat(300)];
    let mut lines: Vec<String> = odd.iter().map(|t| object(t)).collect();
    lines.insert(3, object(&good));
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let dropped = dir.path().join("dropped.txt");
    let topo = write_topology(
        dir.path(),
        "t.toml",
        &format!(
            "data_dir = \"{d}\"\n[sources.in]\ntype = \"file\"\npath = \"{i}\"\n\
             [transforms.dec]\ntype = \"decode\"\ninputs = [\"in\"]\nformat = \"json_kaiwudb\"\n\
             [transforms.enc]\ntype = \"encode\"\ninputs = [\"dec\"]\nformat = \"json_kaiwudb\"\n\
             [sinks.out]\ntype = \"kafka\"\ninputs = [\"enc\"]\nbootstrap_servers = \"{b}\"\n\
             topic = \"kw-{{table}}\"\n\
             [sinks.bad]\ntype = \"file\"\ninputs = [\"out.dropped\"]\npath = \"{p}\"\n",
            d = dir.path().display(),
            i = input.display(),
            b = kafka.bootstrap,
            p = dropped.display(),
        ),
    );
    let out = run_kwpipe(&["run", topo.to_str().unwrap()], Duration::from_secs(120));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let rejected = std::fs::read_to_string(&dropped).unwrap_or_default();
    assert_eq!(rejected.lines().count(), odd.len(), "{rejected}\n{log}");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&format!("kw-{good}")]).unwrap();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing in kw-{good}"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let payload = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            assert!(payload.contains(&good), "{payload}");
            break;
        }
    }
    assert!(!log.contains('\u{1b}'), "raw ESC in the log");
}

// ---- kwpipe top against a bad server ----------------------------------------------

/// A server for `kwpipe top`: answers each connection with `answer` (or holds it
/// without a word when None).
fn fake_agent(answer: Option<Vec<u8>>) -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            match &answer {
                Some(a) => {
                    let _ = s.write_all(a);
                }
                None => held.push(s),
            }
        }
    });
    base
}

/// Issue 19 (11): `kwpipe top` hung forever on a server that never answers,
/// buffered whatever it was sent, and printed terminal escapes from component
/// ids. Expected: an error naming the server within its timeout; an error past
/// the size cap; ids shown escaped.
#[test]
fn kwpipe_top_is_bounded_and_escapes_what_the_server_sends() {
    let silent = fake_agent(None);
    let out = run_kwpipe(&["top", "--once", &silent], Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("did not answer"), "{err}");

    let mut huge = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
    huge.resize(20 << 20, b' ');
    let out = run_kwpipe(
        &["top", "--once", &fake_agent(Some(huge))],
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("more than"), "{err}");

    let body = r#"[{"id":"evil\u001b[2J\u001b]0;owned\u0007","kind":"source\n","type":"kafka","state":"running","error":"x\u001b[31m","counters":{}}]"#;
    let answer = format!("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{body}");
    let out = run_kwpipe(
        &["top", "--once", &fake_agent(Some(answer.into_bytes()))],
        Duration::from_secs(60),
    );
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(screen.contains("evil"), "{screen}");
    assert!(
        !screen.contains('\u{1b}') && !screen.contains('\u{7}'),
        "{screen:?}"
    );
}

// ---- decoders, through the binary -------------------------------------------------

fn transcode(dir: &Path, from: &str, to: &str, input: &str) -> (bool, String, String) {
    let file = dir.join("in.txt");
    std::fs::write(&file, input).unwrap();
    let out = run_kwpipe(
        &[
            "transcode",
            "--from",
            from,
            "--to",
            to,
            file.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 19 (3), (4), (7) through the binary (the decoders' own tests hold both
/// parser paths to them): a message declaring 200,000 columns is rejected with the
/// reason the other formats give, within a generous bound; `"database"` after
/// `"data"` is honoured with or without an escape in a value; OpenTSDB integers
/// beyond i64 are rejected, not rounded.
#[test]
fn decoder_probes_of_issue_19_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let cols: Vec<String> = (0..200_000)
        .map(|i| format!(r#"{{"name":"c{i}","type":"INT4"}}"#))
        .collect();
    let wide = format!(
        r#"{{"table":"w","columns":[{{"name":"ts","type":"TIMESTAMP"}},{}],"data":[{{"ts":1}}]}}"#,
        cols.join(",")
    );
    let (_, _, err) = transcode(dir.path(), "json_kaiwudb", "rows", &(wide + "\n"));
    assert!(
        err.contains("more than 4096 columns"),
        "{}",
        &err[..err.len().min(500)]
    );

    for value in ["x", "x\\ny"] {
        let message = format!(
            r#"{{"table":"t","columns":[{{"name":"ts","type":"TIMESTAMP"}},{{"name":"s","type":"VARCHAR"}}],"tags":[{{"name":"h","type":"INT4","primary":true}}],"data":[{{"ts":1,"s":"{value}","h":1}}],"database":"other"}}"#
        );
        let (ok, out, err) = transcode(dir.path(), "json_kaiwudb", "rows", &(message + "\n"));
        assert!(ok, "{err}");
        assert!(out.starts_with("table other.t "), "{value}: {out}");
    }

    let (_, out, err) = transcode(
        dir.path(),
        "line_opentsdb",
        "rows",
        "put t.m 1700000000 18446744073709551617 h=a\n",
    );
    assert!(!out.contains("1.8446744073709552e19"), "{out}");
    assert!(err.contains("18446744073709551617"), "{err}");
}

/// Issue 19 (12): `connect convert` echoed a malformed secret
/// (`"connection.password": ["SECRET"]`). Expected: the error names the
/// parameter, never its value, whatever its type.
#[test]
fn connect_convert_never_echoes_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    for value in [r#"["SECRET"]"#, r#"{"a":"SECRET"}"#, r#"[1,"SECRET"]"#] {
        let file = dir.path().join("c.json");
        std::fs::write(
            &file,
            format!(
                r#"{{"name":"s","config":{{"connector.class":"{}","topics":"t","in.format":"json_kaiwudb","connection.url":"jdbc:kaiwudb://u:SECRET@h:26257/db?password=SECRET","connection.password":{value}}}}}"#,
                kwpipe::connect::convert::SINK_CLASS
            ),
        )
        .unwrap();
        let out = run_kwpipe(
            &["connect", "convert", file.to_str().unwrap()],
            Duration::from_secs(60),
        );
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{all}");
        assert!(all.contains("connection.password"), "{all}");
        assert!(!all.contains("SECRET"), "{all}");
    }
}

/// Issue 19 (10): an unreachable broker made librdkafka log ~20 lines a second
/// (294 in 15 s), without end. Expected: a few lines per reason per window, for a
/// source and a sink alike; the agent still stops cleanly.
#[test]
fn an_unreachable_broker_does_not_flood_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let input = dir.path().join("in.txt");
    // Nothing to send: the sink's client still connects (and fails) all along,
    // and the agent can stop without waiting on undeliverable records.
    std::fs::write(&input, "").unwrap();
    let agent = start(
        dir.path(),
        &format!(
            "data_dir = \"{d}\"\n\
             [sources.k]\ntype = \"kafka\"\nbootstrap_servers = \"127.0.0.1:{port}\"\n\
             group_id = \"g\"\ntopics = [\"t\"]\n\
             [sinks.drop]\ntype = \"blackhole\"\ninputs = [\"k\"]\n\
             [sources.f]\ntype = \"file\"\npath = \"{i}\"\nfollow = true\n\
             [sinks.out]\ntype = \"kafka\"\ninputs = [\"f\"]\n\
             bootstrap_servers = \"127.0.0.1:{port}\"\ntopic = \"t\"\n",
            d = dir.path().display(),
            i = input.display(),
        ),
    );
    std::thread::sleep(Duration::from_secs(12));
    let log = agent.stop(STOP);
    let lines = log.lines().count();
    assert!(lines < 120, "{lines} lines in 12 s:\n{log}");
}

/// Huge and deeply nested messages through the agent: a line past
/// `max_line_bytes`, a million nested brackets, an object a million levels deep.
/// Expected: each rejected with a reason (never a crash: no signal, no panic), and
/// the good message after them written.
#[test]
fn huge_and_deeply_nested_messages_are_rejected_and_the_next_one_written() {
    use std::os::unix::process::ExitStatusExt as _;
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"table":"t","columns":[{"name":"ts","type":"TIMESTAMP"},{"name":"v","type":"INT4"}],"tags":[{"name":"h","type":"INT4","primary":true}],"data":[{"ts":1,"v":7,"h":1}]}"#;
    let input = dir.path().join("in.jsonl");
    let mut text = String::new();
    text.push_str(&"[".repeat(1_000_000));
    text.push('\n');
    text.push_str(&"{\"a\":".repeat(1_000_000));
    text.push('\n');
    text.push_str(&format!("{{\"table\":\"{}\"}}\n", "x".repeat(17 << 20)));
    text.push_str(good);
    text.push('\n');
    std::fs::write(&input, text).unwrap();
    let out_file = dir.path().join("out.jsonl");
    let topo = write_topology(
        dir.path(),
        "t.toml",
        &format!(
            "data_dir = \"{d}\"\n[sources.in]\ntype = \"file\"\npath = \"{i}\"\n\
             [transforms.dec]\ntype = \"decode\"\ninputs = [\"in\"]\nformat = \"json_kaiwudb\"\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"dec\"]\npath = \"{o}\"\n",
            d = dir.path().display(),
            i = input.display(),
            o = out_file.display(),
        ),
    );
    let out = run_kwpipe(&["run", topo.to_str().unwrap()], Duration::from_secs(120));
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), None, "killed by a signal: {log}");
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let rows = file_sink_rows(&out_file);
    assert_eq!(rows.len(), 1, "{log}");
    assert_eq!(rows[0].1["v"], 7);
    assert!(log.matches("record rejected").count() >= 2, "{log}");
    // The line past max_line_bytes is reported too, not buffered.
    assert!(log.contains("longer than max_line_bytes"), "{log}");
    assert!(log.len() < 200_000, "{} bytes of log", log.len());
    // And through `transcode`, the same way.
    let (_, _, err) = transcode(dir.path(), "json_kaiwudb", "rows", &"[".repeat(1_000_000));
    assert!(err.contains("line 1"), "{}", &err[..err.len().min(300)]);
}
