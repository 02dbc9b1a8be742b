//! `kwpipe connect`: the KaiwuDB Kafka Connector's JSON configs, converted and run.
//!
//! - `connect convert` on the seed's two configs gives a topology `kwpipe validate`
//!   accepts (the field-by-field mapping is unit-tested in `src/connect/tests.rs`;
//!   here the command line: output, warnings, environment, exit codes);
//! - `connect run` of the seed's sink and source configs (their `connection.url` in
//!   the `jdbc:postgresql://` form, which selects the postgres dialect) moves the
//!   seed's sink test data from Kafka into PostgreSQL and exports it back out, along
//!   with the seed's source example row, which comes out byte for byte as the seed
//!   shows it;
//! - every kind of bad connector config fails with its exact message.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use serde_json::Value as Json;

use crate::support::agent::Agent;
use crate::support::broker::{committed, unique, TestKafka};
use crate::support::pg::TestDb;
use crate::support::{kwpipe, repo_root};

pub(crate) const SINK_JSON: &str = "tests/data/connect/kw-json-kaiwudb-sink.json";
pub(crate) const SOURCE_JSON: &str = "tests/data/connect/kw-json-kaiwudb-source.json";

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap()
}

/// kwpipe with the broker variable Kafka Connect users may have set removed, so
/// tests see only what they pass.
fn kwpipe_clean() -> Command {
    let mut cmd = kwpipe();
    cmd.env_remove("KAFKA_BOOTSTRAP_SERVERS");
    cmd
}

/// Error lines of a failed run, without log prefixes (timestamps, levels).
fn error_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.starts_with("error: "))
        .map(str::to_string)
        .collect()
}

fn warn_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| l.split_once(" WARN ").map(|(_, w)| w.to_string()))
        .collect()
}

#[test]
fn convert_of_the_seed_configs_gives_a_topology_validate_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = kwpipe_clean()
        .current_dir(repo_root())
        .args(["connect", "convert", SINK_JSON, SOURCE_JSON])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // Converters that pass strings through are harmless to ignore: warnings, one each.
    let converter = "org.apache.kafka.connect.storage.StringConverter";
    let mut expected_warnings = Vec::new();
    for file in [SINK_JSON, SOURCE_JSON] {
        for key in ["key.converter", "value.converter"] {
            expected_warnings.push(format!(
                "{file}: {key}: ignored; kwpipe reads message bytes as they are, as {converter} does"
            ));
        }
    }
    assert_eq!(warn_lines(&out.stderr), expected_warnings);

    // Without --bootstrap-servers the topology reads the broker from the environment.
    let parsed: toml::Table = toml::from_str(&text).unwrap();
    let ids = |section: &str| -> Vec<String> {
        parsed[section]
            .as_table()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(
        ids("sources"),
        ["KwdbSinkConnector_kafka", "KwdbSourceConnector"]
    );
    assert_eq!(
        ids("transforms"),
        [
            "KwdbSinkConnector_batch",
            "KwdbSinkConnector_decode",
            "KwdbSourceConnector_encode"
        ]
    );
    assert_eq!(
        ids("sinks"),
        ["KwdbSinkConnector_kwdb", "KwdbSourceConnector_kafka"]
    );
    assert_eq!(
        parsed["sources"]["KwdbSinkConnector_kafka"]["bootstrap_servers"].as_str(),
        Some("${KAFKA_BOOTSTRAP_SERVERS}")
    );
    assert_eq!(
        parsed["sinks"]["KwdbSourceConnector_kafka"]["topic"].as_str(),
        Some("kw-{database}-{table}")
    );

    let topo = dir.path().join("converted.toml");
    std::fs::write(&topo, &text).unwrap();
    let validate = |env: Option<&str>| {
        let mut cmd = kwpipe_clean();
        cmd.args(["validate", "--no-environment"]).arg(&topo);
        if let Some(b) = env {
            cmd.env("KAFKA_BOOTSTRAP_SERVERS", b);
        }
        cmd.output().unwrap()
    };
    let ok = validate(Some("127.0.0.1:9092"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "valid: 7 component(s)"
    );
    // The variable is required: validation names it when it is missing.
    let missing = validate(None);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("KAFKA_BOOTSTRAP_SERVERS"), "{stderr}");

    // The graph draws, with the edges the connector implies.
    let graph = kwpipe_clean()
        .env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
        .arg("graph")
        .arg(&topo)
        .output()
        .unwrap();
    assert!(graph.status.success());
    let dot = String::from_utf8_lossy(&graph.stdout);
    for edge in [
        "KwdbSinkConnector_kafka\" -> \"KwdbSinkConnector_decode",
        "KwdbSinkConnector_decode\" -> \"KwdbSinkConnector_batch",
        "KwdbSinkConnector_batch\" -> \"KwdbSinkConnector_kwdb",
        "KwdbSourceConnector\" -> \"KwdbSourceConnector_encode",
        "KwdbSourceConnector_encode\" -> \"KwdbSourceConnector_kafka",
    ] {
        assert!(dot.contains(edge), "no edge {edge} in\n{dot}");
    }
}

#[test]
fn the_broker_comes_from_the_flag_or_kafka_bootstrap_servers() {
    let with_flag = kwpipe_clean()
        .current_dir(repo_root())
        .args([
            "connect",
            "convert",
            "--bootstrap-servers",
            "k1:9092,k2:9092",
        ])
        .arg(SINK_JSON)
        .output()
        .unwrap();
    assert!(with_flag.status.success());
    let text = String::from_utf8_lossy(&with_flag.stdout);
    assert!(
        text.contains("bootstrap_servers = \"k1:9092,k2:9092\""),
        "{text}"
    );
    let from_env = kwpipe_clean()
        .current_dir(repo_root())
        .env("KAFKA_BOOTSTRAP_SERVERS", "k3:9092")
        .args(["connect", "convert", SOURCE_JSON])
        .output()
        .unwrap();
    assert!(from_env.status.success());
    let text = String::from_utf8_lossy(&from_env.stdout);
    assert!(text.contains("bootstrap_servers = \"k3:9092\""), "{text}");

    // `connect run` cannot start without a broker: a command-line error (exit 2).
    let out = kwpipe_clean()
        .current_dir(repo_root())
        .args(["connect", "run", SINK_JSON])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bootstrap-servers"));
}

/// Each bad config, written as `NAME.json`, fails `connect convert` (and `connect
/// run`, before starting anything) with exactly these lines.
#[test]
fn every_kind_of_bad_connector_config_fails_with_its_message() {
    const SINK: &str = "com.kaiwudb.kafka.connect.sink.KwdbSinkConnector";
    const SOURCE: &str = "com.kaiwudb.kafka.connect.source.KwdbSourceConnector";
    let sink = format!(
        r#""connector.class":"{SINK}","topics":"t","connection.url":"jdbc:kaiwudb://h:26257","connection.database":"db","protocol.type":"json_kaiwudb""#
    );
    let source = format!(
        r#""connector.class":"{SOURCE}","connection.url":"jdbc:kaiwudb://h:26257","connection.database":"db","out.format":"json_kaiwudb""#
    );
    let classes = format!("expected {SINK} or {SOURCE}");
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "not_json",
            r#"{"name": "x","#.into(),
            vec!["not valid JSON: line 1, column 13: EOF while parsing a value at line 1 column 13".into()],
        ),
        ("not_object", "[1,2]".into(), vec!["expected a JSON object".into()]),
        (
            "config_not_object",
            r#"{"name":"x","config":"y"}"#.into(),
            vec![r#""config": expected an object, found "y""#.into()],
        ),
        (
            "key_beside_config",
            r#"{"name":"x","config":{},"tasks.max":1}"#.into(),
            vec![r#"unknown key "tasks.max" beside "config"; expected "name" (or "tasks" and "type", as Kafka Connect returns them)"#.into()],
        ),
        (
            "no_class",
            r#"{"topics":"t"}"#.into(),
            vec![format!("connector.class: missing; {classes}")],
        ),
        (
            "other_class",
            r#"{"connector.class":"io.confluent.connect.jdbc.JdbcSinkConnector","topics":"t"}"#.into(),
            vec![format!(
                "connector.class: \"io.confluent.connect.jdbc.JdbcSinkConnector\" is not a KaiwuDB connector; {classes}"
            )],
        ),
        (
            "unknown_parameters",
            format!(r#"{{{sink},"topics.dir":"x","errors.tolerance":"sometimes"}}"#),
            vec![
                r#"errors.tolerance: "sometimes" is not allowed; expected none or all"#.into(),
                "topics.dir: unknown or unsupported parameter".into(),
            ],
        ),
        (
            "unknown_format",
            format!(r#"{{{sink},"protocol.type":"csv"}}"#),
            vec!["protocol.type: unknown format \"csv\"; expected one of json_kaiwudb, json_opentsdb, line_opentsdb, line_influxdb".into()],
        ),
        (
            "no_format",
            format!(
                r#"{{"connector.class":"{SINK}","topics":"t","connection.url":"jdbc:kaiwudb://h:26257","connection.database":"db"}}"#
            ),
            vec!["protocol.type: missing; one of json_kaiwudb, json_opentsdb, line_opentsdb, line_influxdb".into()],
        ),
        (
            "zero_tasks",
            format!(r#"{{{sink},"tasks.max":0}}"#),
            vec!["tasks.max: 0 is not allowed; expected a positive integer".into()],
        ),
        (
            "not_an_integer",
            format!(r#"{{{sink},"batch.size":"many"}}"#),
            vec![r#"batch.size: expected an integer, found "many""#.into()],
        ),
        (
            "negative_retries",
            format!(r#"{{{sink},"max.retries":-1}}"#),
            vec!["max.retries: -1 is not allowed; expected 0 or more".into()],
        ),
        (
            "precision_for_format",
            format!(r#"{{{sink},"protocol.type":"json_opentsdb","timestamp.precision":"us"}}"#),
            vec![r#"timestamp.precision: "us" is not allowed for json_opentsdb; expected one of s, ms"#.into()],
        ),
        (
            "no_topics",
            format!(
                r#"{{"connector.class":"{SINK}","connection.url":"jdbc:kaiwudb://h:26257","connection.database":"db","protocol.type":"json_kaiwudb"}}"#
            ),
            vec!["topics: missing; the topics to consume, comma-separated".into()],
        ),
        (
            "sink_without_database",
            format!(
                r#"{{"connector.class":"{SINK}","topics":"t","connection.url":"jdbc:kaiwudb://h:26257","protocol.type":"json_kaiwudb"}}"#
            ),
            vec!["connection.database: missing; the KWDB database to write into".into()],
        ),
        (
            "too_many_tasks",
            format!(r#"{{{sink},"tasks.max":"257"}}"#),
            vec!["tasks.max: 257 is not allowed; kwpipe runs at most 256 tasks".into()],
        ),
        (
            "impossible_initial_timestamp",
            format!(r#"{{{source},"timestamp.initial":"2023-02-29 10:00:00"}}"#),
            vec![r#"timestamp.initial: "2023-02-29 10:00:00" is not a time; expected yyyy-MM-dd HH:mm:ss"#.into()],
        ),
        (
            "topics_and_regex",
            format!(r#"{{{sink},"topics.regex":"kw-.*"}}"#),
            vec!["topics and topics.regex: set only one".into()],
        ),
        (
            "not_a_kwdb_url",
            format!(r#"{{{sink},"connection.url":"jdbc:mysql://h:3306"}}"#),
            vec![r#"connection.url: "jdbc:mysql://h:3306" is not a KWDB URL; expected jdbc:kaiwudb://host:port[/db]"#.into()],
        ),
        (
            "no_url",
            format!(r#"{{"connector.class":"{SOURCE}","connection.database":"db"}}"#),
            vec!["connection.url: missing; e.g. jdbc:kaiwudb://localhost:26257".into()],
        ),
        (
            "no_database",
            format!(r#"{{"connector.class":"{SOURCE}","connection.url":"jdbc:kaiwudb://h:26257"}}"#),
            vec!["connection.database: missing; the time-series database to export".into()],
        ),
        (
            "not_a_boolean",
            format!(r#"{{{source},"topic.per.stable":"yes"}}"#),
            vec![r#"topic.per.stable: "yes" is not a boolean; expected true or false"#.into()],
        ),
        (
            "no_topic_name",
            format!(r#"{{{source},"topic.per.stable":false,"topic.ignore.db":true}}"#),
            vec!["topic.per.stable=false with topic.ignore.db=true and no topic.prefix leaves no topic name".into()],
        ),
        (
            "bad_initial_timestamp",
            format!(r#"{{{source},"timestamp.initial":"2024-01-22"}}"#),
            vec![r#"timestamp.initial: "2024-01-22" is not a time; expected yyyy-MM-dd HH:mm:ss"#.into()],
        ),
        (
            "other_read_method",
            format!(r#"{{{source},"read.method":"incrementing"}}"#),
            vec![r#"read.method: "incrementing" is not supported; the connector and kwpipe only know "query""#.into()],
        ),
        (
            "other_converter",
            format!(r#"{{{sink},"value.converter":"io.confluent.connect.avro.AvroConverter"}}"#),
            vec![r#"value.converter: "io.confluent.connect.avro.AvroConverter" is not supported; kwpipe reads message bytes as they are (StringConverter)"#.into()],
        ),
        (
            "names_disagree",
            format!(r#"{{"name":"a","config":{{"name":"b",{sink}}}}}"#),
            vec![r#"name: "b" inside "config" differs from "a" beside it"#.into()],
        ),
        (
            "type_disagrees",
            format!(r#"{{"name":"a","config":{{{sink}}},"type":"source"}}"#),
            vec![r#"type: "source" does not match connector.class, a sink connector"#.into()],
        ),
        (
            "several_at_once",
            format!(r#"{{{sink},"tasks.max":"0","protocol.type":"xml","foo":1}}"#),
            vec![
                "tasks.max: 0 is not allowed; expected a positive integer".into(),
                "protocol.type: unknown format \"xml\"; expected one of json_kaiwudb, json_opentsdb, line_opentsdb, line_influxdb".into(),
                "foo: unknown or unsupported parameter".into(),
            ],
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, json, want) in &cases {
        let file = format!("{name}.json");
        std::fs::write(dir.path().join(&file), json).unwrap();
        let want: Vec<String> = want.iter().map(|m| format!("error: {file}: {m}")).collect();
        for command in ["convert", "run"] {
            let mut cmd = kwpipe_clean();
            cmd.current_dir(dir.path()).args(["connect", command]);
            if command == "run" {
                cmd.args(["--bootstrap-servers", "127.0.0.1:1", "--data-dir", "data"]);
            }
            let out = cmd.arg(&file).output().unwrap();
            assert_eq!(out.status.code(), Some(1), "{command} {name}");
            assert!(out.stdout.is_empty(), "{command} {name} printed a topology");
            assert_eq!(error_lines(&out.stderr), want, "{command} {name}");
        }
    }

    // Files that cannot be read, and two configs whose names collide.
    std::fs::write(
        dir.path().join("a.json"),
        format!(r#"{{"name":"same","config":{{{sink}}}}}"#),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.json"),
        format!(r#"{{"name":"same","config":{{{sink}}}}}"#),
    )
    .unwrap();
    let out = kwpipe_clean()
        .current_dir(dir.path())
        .args(["connect", "convert", "missing.json", "a.json", "b.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        error_lines(&out.stderr),
        [
            "error: missing.json: cannot read: No such file or directory (os error 2)",
            "error: sinks.same_kwdb: two connector configs share the name behind this id",
        ]
    );
}

// ---------------------------------------------------------------------------------
// Running the seed's configs against PostgreSQL and the test broker.

/// The seed's config `path`, pointed at the test database: `connection.url` in the
/// `jdbc:postgresql://` form (the postgres dialect), the server's user (the seed's
/// `test` has no role here) and the per-test database; `edit` changes the rest.
pub(crate) fn seed_config_for(
    path: &str,
    db: &TestDb,
    edit: impl FnOnce(&mut serde_json::Map<String, Json>),
) -> String {
    let mut json: Json = serde_json::from_str(&read(path)).unwrap();
    let config = json["config"].as_object_mut().unwrap();
    let server = crate::support::pg::server_url();
    let (user, hostport) = server
        .strip_prefix("postgresql://")
        .and_then(|r| r.split_once('@'))
        .expect("KWPIPE_TEST_PG is postgresql://USER@HOST:PORT");
    config.insert(
        "connection.url".into(),
        format!("jdbc:postgresql://{hostport}").into(),
    );
    config.insert("connection.user".into(), user.into());
    config.insert("connection.database".into(), db.name.clone().into());
    edit(config);
    serde_json::to_string_pretty(&json).unwrap()
}

/// `kwpipe connect run` of the connector `files` in the background, logging into
/// `dir/agent.log`.
pub(crate) fn connect_run(dir: &Path, bootstrap: &str, files: &[&Path]) -> Agent {
    Agent::command([
        "connect",
        "run",
        "--bootstrap-servers",
        bootstrap,
        "--data-dir",
    ])
    .arg(dir.join("data"))
    .args(files)
    .env_remove("KAFKA_BOOTSTRAP_SERVERS")
    .log(dir.join("agent.log"))
    .start()
}

/// How long a SIGTERM may take before the test fails.
pub(crate) const STOP: Duration = Duration::from_secs(60);

pub(crate) async fn produce_lines(bootstrap: &str, topic: &str, lines: &[&str]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for line in lines {
        producer
            .send(
                FutureRecord::<(), str>::to(topic).payload(line),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("test producer delivered");
    }
}

/// Reads `topic` from the beginning until `done` says the payloads so far are all,
/// or panics after `limit`; then checks that nothing more arrives for a moment.
pub(crate) async fn read_until(
    bootstrap: &str,
    topic: &str,
    limit: Duration,
    done: impl Fn(&[String]) -> bool + Send + 'static,
) -> Vec<String> {
    let bootstrap = bootstrap.to_string();
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
        let deadline = Instant::now() + limit;
        let mut got: Vec<String> = Vec::new();
        while !done(&got) {
            assert!(
                Instant::now() < deadline,
                "{topic}: gave up after {limit:?} with {} message(s): {got:#?}",
                got.len()
            );
            // Errors (the topic may not exist yet; it will) and timeouts: poll again.
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into());
            }
        }
        let end = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < end {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                panic!(
                    "{topic}: an unexpected extra message: {}",
                    String::from_utf8_lossy(m.payload().unwrap_or_default())
                );
            }
        }
        got
    })
    .await
    .unwrap()
}

/// Rows in the `data` arrays of `json_kaiwudb` messages.
pub(crate) fn data_rows(messages: &[String]) -> Vec<Json> {
    messages
        .iter()
        .flat_map(|m| {
            let v: Json = serde_json::from_str(m).unwrap();
            v["data"].as_array().unwrap().clone()
        })
        .collect()
}

pub(crate) async fn wait_rows(
    db: &TestDb,
    table: &str,
    n: i64,
    limit: Duration,
    agent: &mut Agent,
) {
    let client = db.client().await;
    let started = Instant::now();
    loop {
        let count = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
        if count == n {
            return;
        }
        assert!(count < n, "{table}: {count} rows, more than {n}");
        agent.assert_running();
        assert!(
            started.elapsed() < limit,
            "{table}: {count} of {n} rows after {limit:?}:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_run_lands_the_seed_data_in_postgres_and_exports_it_back() {
    let kafka = TestKafka::start();
    let db = TestDb::new("connect_run").await;
    // The seed's source example: its table and INSERT, in the postgres dialect.
    db.client()
        .await
        .batch_execute(&read("tests/data/seed/benchmark-cpu_kaiwudb_tb.sql"))
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    // Unique names, so the test also runs against a shared cluster.
    let name = unique("KwdbSinkConnector");
    let sink_topic = unique("kw-tsdb-json_kaiwudb_with_tag_tb");
    let sink = dir.path().join("kw-json-kaiwudb-sink.json");
    std::fs::write(
        &sink,
        seed_config_for(SINK_JSON, &db, |c| {
            c.insert("topics".into(), sink_topic.clone().into());
        })
        .replace("\"KwdbSinkConnector\"", &format!("\"{name}\"")),
    )
    .unwrap();
    // The source exports the same database: the rows the sink wrote go back out,
    // beside the seed's cpu_kaiwudb_tb row.
    let source = dir.path().join("kw-json-kaiwudb-source.json");
    std::fs::write(&source, seed_config_for(SOURCE_JSON, &db, |_| {})).unwrap();
    let cpu_topic = format!("kw-{}-cpu_kaiwudb_tb", db.name);
    let back_topic = format!("kw-{}-ts_json_kaiwudb_tb", db.name);
    for t in [&sink_topic, &cpu_topic, &back_topic] {
        kafka.create_topic(t, 1);
    }

    let data = read("tests/data/seed/kw-json-kaiwudb-data.txt");
    let lines: Vec<&str> = data.lines().collect();
    produce_lines(&kafka.bootstrap, &sink_topic, &lines).await;

    let mut agent = connect_run(dir.path(), &kafka.bootstrap, &[&sink, &source]);
    wait_rows(
        &db,
        "ts_json_kaiwudb_tb",
        5,
        Duration::from_secs(90),
        &mut agent,
    )
    .await;

    // Landed as the seed's JSON says: postgres dialect, tags as columns, the primary
    // tag and the timestamp as the key, the tag roles in the comment.
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT (extract(epoch FROM ts) * 1000)::int8, c1, c2, c3, c4, c5, c6, location, temperature \
             FROM ts_json_kaiwudb_tb ORDER BY ts",
            &[],
        )
        .await
        .unwrap();
    let first = &rows[0];
    assert_eq!(first.get::<_, i64>(0), 1_690_855_924_005);
    assert_eq!(first.get::<_, i16>(1), 11);
    assert_eq!(first.get::<_, i32>(2), 21);
    assert_eq!(first.get::<_, i64>(3), 2_535_208_944_865_431_245);
    assert_eq!(first.get::<_, f32>(4), 6.14545);
    assert_eq!(first.get::<_, f64>(5), 5.15656);
    assert!(first.get::<_, bool>(6));
    assert_eq!(first.get::<_, &str>(7), "tianjin");
    assert_eq!(first.get::<_, f32>(8), 35.5);
    let key: String = client
        .query_one(
            "SELECT string_agg(a.attname, ',' ORDER BY array_position(i.indkey, a.attnum)) \
             FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = 'ts_json_kaiwudb_tb'::regclass AND i.indisprimary",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(key, "location,ts");

    // The seed's source example comes out exactly as the seed shows it.
    let cpu = read_until(&kafka.bootstrap, &cpu_topic, Duration::from_secs(60), |m| {
        !m.is_empty()
    })
    .await;
    // (The encoder ends each message with a line break, as it does for every format.)
    let expected = read("components/src/formats/testdata/seed_source_output.json");
    assert_eq!(cpu.len(), 1);
    assert_eq!(cpu[0].trim_end(), expected.trim_end());

    // And the rows the sink wrote go back out with the values they came in with.
    let back = read_until(
        &kafka.bootstrap,
        &back_topic,
        Duration::from_secs(60),
        |m| data_rows(m).len() >= 5,
    )
    .await;
    let sent: Json = serde_json::from_str(lines[0]).unwrap();
    let want: BTreeSet<String> = sent["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(Json::to_string)
        .collect();
    let got: BTreeSet<String> = data_rows(&back).iter().map(Json::to_string).collect();
    assert_eq!(got, want);
    let out: Json = serde_json::from_str(&back[0]).unwrap();
    assert_eq!(out["table"], "ts_json_kaiwudb_tb");
    assert_eq!(out["columns"], sent["columns"]);
    let tag_roles = |v: &Json| -> Vec<(String, bool)> {
        v["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let primary = t.get("isPrimary").or_else(|| t.get("primary"));
                (
                    t["name"].as_str().unwrap().to_string(),
                    primary.and_then(Json::as_bool).unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(tag_roles(&out), tag_roles(&sent));

    agent.stop(STOP);
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(
        log.contains("created table table=\"ts_json_kaiwudb_tb\""),
        "{log}"
    );
}

/// Issue 18, item 2, Kafka -> database, every record counted. A record the
/// pipeline rejects (INT2 70000) sits among good ones. Under Connect's default,
/// `errors.tolerance = none`, the partition is held: the offset is never committed
/// past the bad record. Run again with `errors.tolerance = all` and a dead-letter
/// topic: every good record is in the table, the bad one in the dead-letter topic,
/// and the offset moves past all of them. Before the fix the bad record was
/// logged, its offset committed, and it was gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_tolerance_none_holds_the_offset_and_all_dead_letters() {
    let kafka = TestKafka::start();
    let db = TestDb::new("connect_tolerance").await;
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("kw-tolerance");
    let dlq = unique("kw-tolerance-dlq");
    kafka.create_topic(&topic, 1);
    kafka.create_topic(&dlq, 1);
    let message = |i: i64, v: i64| {
        format!(
            r#"{{"table":"r","columns":[{{"name":"ts","type":"TIMESTAMPTZ","length":64}},{{"name":"v","type":"INT2","length":16}}],"tags":[{{"name":"dev","type":"VARCHAR","length":16,"primary":true,"nullable":false}}],"data":[{{"ts":{},"v":{v},"dev":"d"}}]}}"#,
            1_705_962_142_000 + i
        )
    };
    let records: Vec<String> = (0..10)
        .map(|i| {
            if i == 5 {
                message(i, 70_000)
            } else {
                message(i, i)
            }
        })
        .collect();
    let lines: Vec<&str> = records.iter().map(String::as_str).collect();
    produce_lines(&kafka.bootstrap, &topic, &lines).await;

    let name = unique("tolerance");
    let group = format!("connect-{name}");
    let config = |extra: &[(&str, &str)]| {
        let text = seed_config_for(SINK_JSON, &db, |c| {
            c.insert("topics".into(), topic.clone().into());
            c.insert("tasks.max".into(), "1".into());
            for (k, v) in extra {
                c.insert((*k).into(), (*v).into());
            }
        });
        let mut json: Json = serde_json::from_str(&text).unwrap();
        json["name"] = name.clone().into();
        let path = dir.path().join(format!("sink-{}.json", extra.len()));
        std::fs::write(&path, json.to_string()).unwrap();
        path
    };

    // errors.tolerance = none (the default): held at the bad record.
    let held = config(&[]);
    let mut agent = connect_run(dir.path(), &kafka.bootstrap, &[&held]);
    agent.wait_log("on_reject = \"stop\"", Duration::from_secs(90));
    // A moment for auto-commits that would have moved it (commit_interval 5s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let offset = committed(&kafka.bootstrap, &group, &topic, 1)[0];
    assert!(
        !matches!(offset, Some(o) if o > 5),
        "committed {offset:?}, past the rejected record at 5:\n{}",
        agent.log_text()
    );
    agent.assert_running();
    agent.stop(STOP);

    // errors.tolerance = all with a dead-letter topic: nothing is lost either.
    let tolerant = config(&[
        ("errors.tolerance", "all"),
        ("errors.deadletterqueue.topic.name", dlq.as_str()),
    ]);
    let mut agent = connect_run(dir.path(), &kafka.bootstrap, &[&tolerant]);
    wait_rows(&db, "r", 9, Duration::from_secs(90), &mut agent).await;
    let dead = read_until(&kafka.bootstrap, &dlq, Duration::from_secs(60), |m| {
        !m.is_empty()
    })
    .await;
    assert_eq!(dead, vec![records[5].clone()]);
    let client = db.client().await;
    let vs: Vec<i16> = client
        .query("SELECT v FROM r ORDER BY ts", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(vs, [0, 1, 2, 3, 4, 6, 7, 8, 9]);
    let started = Instant::now();
    while committed(&kafka.bootstrap, &group, &topic, 1) != [Some(10)] {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "offset not committed past every record:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    agent.stop(STOP);
}

/// Issue 18, item 1, database -> Kafka, every row counted: a TIMESTAMPTZ(6)
/// table whose every third row has µs digits. json_kaiwudb at the default
/// precision exports all 300 (the µs ones as text timestamps with every digit),
/// line_influxdb with `timestamp.precision = us` too. A line_influxdb export at
/// ms cannot carry them: under `errors.tolerance = none` its table is held, its
/// checkpoint never passes the first of them. Before the fix every µs row was
/// rejected and checkpointed past: 100 rows lost per export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_source_exports_every_row_with_its_microseconds() {
    let kafka = TestKafka::start();
    let db = TestDb::new("connect_us").await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE m (ts TIMESTAMPTZ(6) NOT NULL, v INT4, dev VARCHAR(16) NOT NULL, PRIMARY KEY (dev, ts));
             INSERT INTO m SELECT TIMESTAMPTZ '2024-01-22 22:22:22+00' + i * INTERVAL '1 millisecond'
                 + CASE WHEN i % 3 = 0 THEN INTERVAL '7 microseconds' ELSE INTERVAL '0' END, i, 'd'
             FROM generate_series(0, 299) AS i;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = |name: &str, prefix: &str, extra: &[(&str, &str)]| {
        let text = seed_config_for(SOURCE_JSON, &db, |c| {
            c.insert("topic.prefix".into(), prefix.into());
            c.insert("query.interval.ms".into(), "200".into());
            for (k, v) in extra {
                c.insert((*k).into(), (*v).into());
            }
        });
        let mut json: Json = serde_json::from_str(&text).unwrap();
        json["name"] = name.into();
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, json.to_string()).unwrap();
        path
    };
    let json_prefix = unique("json");
    let us_prefix = unique("us");
    let ms_prefix = unique("ms");
    let dlq_prefix = unique("dl");
    let dlq = unique("dead-letters");
    let files = [
        source("json", &json_prefix, &[]),
        source(
            "us",
            &us_prefix,
            &[
                ("out.format", "line_influxdb"),
                ("timestamp.precision", "us"),
            ],
        ),
        source(
            "ms",
            &ms_prefix,
            &[
                ("out.format", "line_influxdb"),
                ("timestamp.precision", "ms"),
            ],
        ),
        // The same at ms, tolerating errors into a dead-letter topic.
        source(
            "dl",
            &dlq_prefix,
            &[
                ("out.format", "line_influxdb"),
                ("timestamp.precision", "ms"),
                ("errors.tolerance", "all"),
                ("errors.deadletterqueue.topic.name", dlq.as_str()),
            ],
        ),
    ];
    let topic = |prefix: &str| format!("{prefix}-{}-m", db.name);
    for p in [&json_prefix, &us_prefix, &ms_prefix, &dlq_prefix] {
        kafka.create_topic(&topic(p), 1);
    }
    kafka.create_topic(&dlq, 1);
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let mut agent = connect_run(dir.path(), &kafka.bootstrap, &paths);

    let expected_us = |i: i64| (1_705_962_142_000 + i) * 1000 + if i % 3 == 0 { 7 } else { 0 };
    let json = read_until(
        &kafka.bootstrap,
        &topic(&json_prefix),
        Duration::from_secs(90),
        |m| data_rows(m).len() >= 300,
    )
    .await;
    let mut got: Vec<(i64, Json)> = data_rows(&json)
        .into_iter()
        .map(|r| (r["v"].as_i64().unwrap(), r["ts"].clone()))
        .collect();
    got.sort_by_key(|(v, _)| *v);
    let want: Vec<(i64, Json)> = (0..300)
        .map(|i| {
            let ts = if i % 3 == 0 {
                Json::from(format!("2024-01-22 22:22:22.{i:03}007"))
            } else {
                Json::from(1_705_962_142_000 + i)
            };
            (i, ts)
        })
        .collect();
    assert_eq!(got, want);

    let influx = read_until(
        &kafka.bootstrap,
        &topic(&us_prefix),
        Duration::from_secs(90),
        |m| m.iter().map(|p| p.lines().count()).sum::<usize>() >= 300,
    )
    .await;
    let mut stamps: Vec<i64> = influx
        .iter()
        .flat_map(|p| p.lines())
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    stamps.sort();
    assert_eq!(stamps, (0..300).map(expected_us).collect::<Vec<_>>());

    // The ms export: held before row 0 (it has µs digits), with the reason logged.
    agent.wait_log("would lose digits in ms precision", Duration::from_secs(30));
    agent.wait_log("on_reject = \"stop\"", Duration::from_secs(30));
    // Rows a source's checkpoint of table `m` says were exported; None without one.
    let exported = |id: &str| -> Option<u64> {
        use kwpipe_components::sources::kwdb_poll::checkpoint::CheckpointStore;
        CheckpointStore::open(dir.path().join("data").join(id), &db.name)
            .ok()?
            .load("m")
            .ok()?
            .map(|c| c.rows)
    };
    let started = Instant::now();
    while exported("json") != Some(300) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "json checkpoint {:?}",
            exported("json")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        matches!(exported("ms"), None | Some(0)),
        "the checkpoint moved past a held row: {:?}",
        exported("ms")
    );

    // Tolerated: the 200 ms rows as lines, the 100 µs rows dead-lettered whole
    // (one-row json_kaiwudb with every digit), and only then checkpointed past.
    let lines = read_until(
        &kafka.bootstrap,
        &topic(&dlq_prefix),
        Duration::from_secs(60),
        |m| m.len() >= 200,
    )
    .await;
    let dead = read_until(&kafka.bootstrap, &dlq, Duration::from_secs(60), |m| {
        m.len() >= 100
    })
    .await;
    let mut vs: Vec<i64> = lines
        .iter()
        .map(|l| {
            let v = l
                .split(" v=")
                .nth(1)
                .unwrap()
                .split(['i', ' '])
                .next()
                .unwrap();
            v.parse().unwrap()
        })
        .chain(data_rows(&dead).iter().map(|r| r["v"].as_i64().unwrap()))
        .collect();
    vs.sort();
    assert_eq!(vs, (0..300).collect::<Vec<_>>(), "every row, once");
    for r in data_rows(&dead) {
        let i = r["v"].as_i64().unwrap();
        assert_eq!(
            r["ts"],
            Json::from(format!("2024-01-22 22:22:22.{i:03}007"))
        );
    }
    let started = Instant::now();
    while exported("dl") != Some(300) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "dl checkpoint {:?}",
            exported("dl")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.stop(STOP);
}
