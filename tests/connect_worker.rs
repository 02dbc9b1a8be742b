//! `kwpipe connect worker`: Kafka Connect's REST API on the real broker and
//! PostgreSQL.
//!
//! - the connector documentation's walkthrough, run with its own curl commands (the
//!   only change: `localhost:8083` becomes the test worker's address): `[]`, the sink
//!   config posted, rows landed, the connector deleted, the source config posted,
//!   the seed's example row on the topic; then the worker restarts and finds the
//!   source connector again in its configs topic;
//! - the other endpoints' status codes and bodies, read-only mode and masked secrets.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::connect::{
    produce_lines, read_until, seed_config_for, wait_rows, SINK_JSON, SOURCE_JSON, STOP,
};
use crate::support::agent::Agent;
use crate::support::broker::{unique, TestKafka};
use crate::support::pg::TestDb;
use crate::support::{free_port, repo_root, run_kwpipe};

/// The documentation's commands, as it prints them.
const LIST: &str = "curl http://localhost:8083/connectors";
const POST_SINK: &str = "curl -X POST -d @kw-json-kaiwudb-sink.json http://localhost:8083/connectors -H \"Content-Type: application/json\"";
const DELETE_SINK: &str = "curl -X DELETE http://localhost:8083/connectors/KwdbSinkConnector";
const POST_SOURCE: &str = "curl -X POST -d @kw-json-kaiwudb-source.json http://localhost:8083/connectors -H \"Content-Type: application/json\"";

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap()
}

/// A worker in the background, with storage topics of the test's own.
struct Worker {
    agent: Agent,
    port: u16,
}

impl Worker {
    fn start(dir: &Path, data: &str, bootstrap: &str, topics: &str, extra: &[&str]) -> Worker {
        let port = free_port();
        let agent = Agent::command(["connect", "worker", "--bootstrap-servers", bootstrap])
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .args(["-X", &format!("config.storage.topic={topics}-configs")])
            .args(["-X", &format!("status.storage.topic={topics}-status")])
            .args(["-X", &format!("offset.storage.topic={topics}-offsets")])
            .args(["-X", &format!("group.id={topics}")])
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.join(data))
            .args(extra)
            .log(dir.join(format!("worker-{port}.log")))
            .start();
        let mut worker = Worker { agent, port };
        worker
            .agent
            .wait_log("worker started", Duration::from_secs(60));
        worker
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A documentation command, run by the shell in `dir` against this worker.
    fn doc_command(&self, dir: &Path, command: &str) -> String {
        let command = command.replace("localhost:8083", &format!("127.0.0.1:{}", self.port));
        let out = Command::new("sh")
            .args(["-c", &format!("{command} --silent --show-error")])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// (status code, body as JSON or Null when empty)
    fn request(&self, method: &str, path: &str, body: Option<&Json>) -> (u16, Json) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "--silent",
            "--show-error",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ]);
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "-d", &b.to_string()]);
        }
        let out = cmd.arg(self.url(path)).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        let body = if body.is_empty() {
            Json::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body}"))
        };
        (code.parse().unwrap(), body)
    }

    /// Polls until the connector's status shows `state`.
    fn wait_state(&mut self, name: &str, state: &str) -> Json {
        let started = Instant::now();
        loop {
            let (code, body) = self.request("GET", &format!("/connectors/{name}/status"), None);
            if code == 200 && body["connector"]["state"] == state {
                return body;
            }
            self.agent.assert_running();
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{name} not {state}: {code} {body}\n{}",
                self.agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documentation_walkthrough_runs_with_its_own_curl_commands() {
    let kafka = TestKafka::start();
    let sink_db = TestDb::new("worker_sink").await;
    let source_db = TestDb::new("worker_source").await;
    let dir = tempfile::tempdir().unwrap();
    let topics = unique("worker-walkthrough");
    let mut worker = Worker::start(dir.path(), "data", &kafka.bootstrap, &topics, &[]);

    // "If the components have started successfully, you should see an empty array"
    assert_eq!(worker.doc_command(dir.path(), LIST), "[]");

    // The sink: the documentation's file, pointed at PostgreSQL and a topic of the
    // test's own (the shared broker may hold the documentation's topic).
    let sink_topic = unique("kw-tsdb-json_kaiwudb_with_tag_tb");
    kafka.create_topic(&sink_topic, 5);
    std::fs::write(
        dir.path().join("kw-json-kaiwudb-sink.json"),
        seed_config_for(SINK_JSON, &sink_db, |c| {
            c.insert("topics".into(), sink_topic.clone().into());
        }),
    )
    .unwrap();
    let created: Json = serde_json::from_str(&worker.doc_command(dir.path(), POST_SINK)).unwrap();
    assert_eq!(created["name"], "KwdbSinkConnector");
    assert_eq!(created["type"], "sink");
    assert_eq!(created["tasks"], json!([]));
    assert_eq!(created["config"]["connection.password"], "[hidden]");
    assert_eq!(
        worker.doc_command(dir.path(), LIST),
        "[\"KwdbSinkConnector\"]"
    );

    let data = read("tests/data/seed/kw-json-kaiwudb-data.txt");
    let line = data.lines().next().unwrap();
    produce_lines(&kafka.bootstrap, &sink_topic, &[line]).await;
    wait_rows(
        &sink_db,
        "ts_json_kaiwudb_tb",
        5,
        Duration::from_secs(90),
        &mut worker.agent,
    )
    .await;
    let status = worker.wait_state("KwdbSinkConnector", "RUNNING");
    assert_eq!(status["tasks"].as_array().unwrap().len(), 5);

    assert_eq!(worker.doc_command(dir.path(), DELETE_SINK), "");
    assert_eq!(worker.doc_command(dir.path(), LIST), "[]");

    // The source: the documentation's table and row, exported to kw-<db>-cpu_kaiwudb_tb.
    source_db
        .client()
        .await
        .batch_execute(&read("tests/data/seed/benchmark-cpu_kaiwudb_tb.sql"))
        .await
        .unwrap();
    let cpu_topic = format!("kw-{}-cpu_kaiwudb_tb", source_db.name);
    kafka.create_topic(&cpu_topic, 1);
    std::fs::write(
        dir.path().join("kw-json-kaiwudb-source.json"),
        seed_config_for(SOURCE_JSON, &source_db, |_| {}),
    )
    .unwrap();
    let created: Json = serde_json::from_str(&worker.doc_command(dir.path(), POST_SOURCE)).unwrap();
    assert_eq!(created["name"], "KwdbSourceConnector");
    assert_eq!(created["type"], "source");
    let cpu = read_until(&kafka.bootstrap, &cpu_topic, Duration::from_secs(60), |m| {
        !m.is_empty()
    })
    .await;
    let expected = read("components/src/formats/testdata/seed_source_output.json");
    assert_eq!(cpu.len(), 1);
    assert_eq!(cpu[0].trim_end(), expected.trim_end());

    // The source's position is in the offsets topic, in Connect's layout.
    let (code, offsets) = worker.request("GET", "/connectors/KwdbSourceConnector/offsets", None);
    assert_eq!(code, 200);
    assert_eq!(
        offsets["offsets"][0]["partition"],
        json!({"table": "cpu_kaiwudb_tb"})
    );
    assert_eq!(offsets["offsets"][0]["offset"]["rows"], 1);

    // The topics are the cluster's memory: a new worker with an empty data directory
    // (another machine) finds the source in the configs topic and resumes from the
    // offsets topic: the next row follows, the first is not exported again.
    worker.agent.stop(STOP);
    let mut again = Worker::start(dir.path(), "other-machine", &kafka.bootstrap, &topics, &[]);
    assert_eq!(
        again.doc_command(dir.path(), LIST),
        "[\"KwdbSourceConnector\"]"
    );
    again.wait_state("KwdbSourceConnector", "RUNNING");
    let (code, config) = again.request("GET", "/connectors/KwdbSourceConnector/config", None);
    assert_eq!(code, 200);
    assert_eq!(config["connection.database"], source_db.name.as_str());
    assert_eq!(config["connection.password"], "[hidden]");
    source_db
        .client()
        .await
        .batch_execute(
            "INSERT INTO cpu_kaiwudb_tb (k_timestamp, usage_user, id, hostname, region, datacenter) \
             VALUES ('2024-01-22 22:22:23.000', 42, 647470401348904608, 'locahost', 'beijing', 'center')",
        )
        .await
        .unwrap();
    let both = read_until(&kafka.bootstrap, &cpu_topic, Duration::from_secs(60), |m| {
        m.len() >= 2
    })
    .await;
    assert_eq!(both.len(), 2, "{both:#?}");
    assert_eq!(crate::connect::data_rows(&both[1..])[0]["usage_user"], 42);
    again.agent.stop(STOP);
}

/// One `json_kaiwudb` line holding one row, `i` apart in time from the others.
fn row_line(i: i64) -> String {
    json!({
        "table": "flow",
        "columns": [{"name": "ts", "type": "TIMESTAMPTZ", "length": 64}, {"name": "c1", "type": "INT8", "length": 64}],
        "tags": [{"name": "location", "type": "VARCHAR", "length": 64, "primary": true, "nullable": false}],
        "data": [{"ts": 1_690_000_000_000i64 + i, "c1": i, "location": "tianjin"}],
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_with_connects_codes_and_bodies() {
    let kafka = TestKafka::start();
    let db = TestDb::new("worker_rest").await;
    let dir = tempfile::tempdir().unwrap();
    let topics = unique("worker-rest");
    let mut worker = Worker::start(
        dir.path(),
        "data",
        &kafka.bootstrap,
        &topics,
        &["--log-level", "debug"],
    );

    let (code, root) = worker.request("GET", "/", None);
    assert_eq!(code, 200);
    assert_eq!(root["version"], env!("CARGO_PKG_VERSION"));
    assert!(root["commit"].is_string());
    assert!(
        !root["kafka_cluster_id"].as_str().unwrap().is_empty(),
        "{root}"
    );

    let (code, plugins) = worker.request("GET", "/connector-plugins", None);
    assert_eq!(code, 200);
    let classes: Vec<&str> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["class"].as_str().unwrap())
        .collect();
    assert_eq!(
        classes,
        [
            "com.kaiwudb.kafka.connect.sink.KwdbSinkConnector",
            "com.kaiwudb.kafka.connect.source.KwdbSourceConnector"
        ]
    );

    // Validation: Connect's body, with the converter's findings on their parameters.
    let (code, v) = worker.request(
        "PUT",
        "/connector-plugins/KwdbSinkConnector/config/validate",
        Some(&json!({"connector.class": "com.kaiwudb.kafka.connect.sink.KwdbSinkConnector", "topics": "t", "connection.url": "jdbc:kaiwudb://h:26257", "connection.database": "tsdb", "protocol.type": "xml", "name": "v"})),
    );
    assert_eq!(code, 200);
    assert_eq!(
        v["name"],
        "com.kaiwudb.kafka.connect.sink.KwdbSinkConnector"
    );
    assert_eq!(v["error_count"], 1);
    let protocol = v["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["value"]["name"] == "protocol.type")
        .unwrap();
    assert_eq!(
        protocol["value"]["errors"],
        json!(["protocol.type: unknown format \"xml\"; expected one of json_kaiwudb, json_opentsdb, line_opentsdb, line_influxdb"])
    );

    let (code, body) = worker.request("GET", "/connectors/nope", None);
    assert_eq!(
        (code, body),
        (
            404,
            json!({"error_code": 404, "message": "Connector nope not found"})
        )
    );
    let (code, body) = worker.request("GET", "/nowhere", None);
    assert_eq!((code, body["error_code"].clone()), (404, json!(404)));

    // A sink created by PUT .../config (201), then reconfigured while rows flow.
    let name = unique("sink");
    let topic = unique("worker-rest-rows");
    kafka.create_topic(&topic, 3);
    let sink: Json = serde_json::from_str(&seed_config_for(SINK_JSON, &db, |c| {
        c.insert("topics".into(), topic.clone().into());
        c.insert("tasks.max".into(), "3".into());
        c.insert("connection.password".into(), "kept-secret".into());
    }))
    .unwrap();
    let mut config = sink["config"].clone();
    let (code, created) =
        worker.request("PUT", &format!("/connectors/{name}/config"), Some(&config));
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["config"]["name"], name.as_str());
    let (code, body) = worker.request(
        "POST",
        "/connectors",
        Some(&json!({"name": name, "config": config})),
    );
    assert_eq!(
        (code, body),
        (
            409,
            json!({"error_code": 409, "message": format!("Connector {name} already exists")})
        )
    );
    let (code, body) = worker.request(
        "PUT",
        "/connectors/other/config",
        Some(&json!({"name": name})),
    );
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        format!(
            "Connector name configuration ({name}) doesn't match connector name in the URL (other)"
        )
    );
    let (code, body) = worker.request("POST", "/connectors", Some(&json!({"name": "bad", "config": {"connector.class": "com.kaiwudb.kafka.connect.sink.KwdbSinkConnector"}})));
    assert_eq!(code, 400);
    assert!(
        body["message"].as_str().unwrap().starts_with(
            "Connector configuration is invalid and contains the following 4 error(s):\n"
        ),
        "{body}"
    );

    // Rows flow while the config changes: 300 on the first topic, produced in the
    // background; the new config adds a second topic, whose rows land only if the
    // new config is in effect.
    let topic2 = unique("worker-rest-rows2");
    kafka.create_topic(&topic2, 1);
    let lines: Vec<String> = (0..350).map(row_line).collect();
    let first: Vec<String> = lines[..300].to_vec();
    let bootstrap = kafka.bootstrap.clone();
    let flowing = {
        let topic = topic.clone();
        tokio::spawn(async move {
            let refs: Vec<&str> = first.iter().map(String::as_str).collect();
            for chunk in refs.chunks(10) {
                produce_lines(&bootstrap, &topic, chunk).await;
            }
        })
    };
    let client = db.client().await;
    let started = Instant::now();
    while client
        .query_one("SELECT count(*) FROM flow", &[])
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(0)
        == 0
    {
        worker.agent.assert_running();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            worker.agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The masked password sent back keeps the stored one.
    let (code, shown) = worker.request("GET", &format!("/connectors/{name}/config"), None);
    assert_eq!(code, 200);
    assert_eq!(shown["connection.password"], "[hidden]");
    config = shown.clone();
    config["batch.size"] = json!("7");
    config["topics"] = json!(format!("{topic},{topic2}"));
    let (code, updated) =
        worker.request("PUT", &format!("/connectors/{name}/config"), Some(&config));
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["config"]["batch.size"], "7");
    flowing.await.unwrap();
    let refs: Vec<&str> = lines[300..].iter().map(String::as_str).collect();
    produce_lines(&kafka.bootstrap, &topic2, &refs).await;
    wait_rows(&db, "flow", 350, Duration::from_secs(90), &mut worker.agent).await;
    let stored = read_until(
        &kafka.bootstrap,
        &format!("{topics}-configs"),
        Duration::from_secs(30),
        |m| m.iter().any(|p| p.contains("\"batch.size\":\"7\"")),
    )
    .await;
    let last: Json = serde_json::from_str(stored.last().unwrap()).unwrap();
    assert_eq!(last["properties"]["connection.password"], "kept-secret");
    assert_eq!(last["properties"]["batch.size"], "7");

    // Status, tasks, topics, expansions.
    let status = worker.wait_state(&name, "RUNNING");
    assert_eq!(status["type"], "sink");
    assert_eq!(status["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(status["tasks"][2]["id"], 2);
    let (code, tasks) = worker.request("GET", &format!("/connectors/{name}/tasks"), None);
    assert_eq!(code, 200);
    assert_eq!(tasks[1]["id"], json!({"connector": name, "task": 1}));
    assert_eq!(tasks[1]["config"]["connection.password"], "[hidden]");
    let (code, t) = worker.request("GET", &format!("/connectors/{name}/tasks/1/status"), None);
    assert_eq!(
        (code, t["id"].clone(), t["state"].clone()),
        (200, json!(1), json!("RUNNING"))
    );
    let (code, _) = worker.request("GET", &format!("/connectors/{name}/tasks/3/status"), None);
    assert_eq!(code, 404);
    let (code, t) = worker.request("GET", &format!("/connectors/{name}/topics"), None);
    assert_eq!(
        (code, t),
        (200, json!({ name.clone(): {"topics": [topic, topic2]} }))
    );
    let (code, all) = worker.request("GET", "/connectors?expand=status&expand=info", None);
    assert_eq!(code, 200);
    assert_eq!(all[&name]["status"]["connector"]["state"], "RUNNING");
    assert_eq!(all[&name]["info"]["type"], "sink");
    // Offsets are committed after the rows are written: wait for the last commit.
    let started = Instant::now();
    loop {
        let (code, offsets) = worker.request("GET", &format!("/connectors/{name}/offsets"), None);
        assert_eq!(code, 200);
        let committed: i64 = offsets["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["offset"]["kafka_offset"].as_i64().unwrap())
            .sum();
        if committed == 350 {
            assert_eq!(
                offsets["offsets"][0]["partition"]["kafka_topic"],
                topic.as_str()
            );
            break;
        }
        assert!(committed < 350, "{offsets}");
        assert!(started.elapsed() < Duration::from_secs(60), "{offsets}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Pause, resume, stop, restart.
    assert_eq!(
        worker.request("PUT", &format!("/connectors/{name}/pause"), None),
        (202, Json::Null)
    );
    worker.wait_state(&name, "PAUSED");
    assert_eq!(
        worker.request("PUT", &format!("/connectors/{name}/resume"), None),
        (202, Json::Null)
    );
    worker.wait_state(&name, "RUNNING");
    let (code, body) = worker.request("DELETE", &format!("/connectors/{name}/offsets"), None);
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        worker.request("PUT", &format!("/connectors/{name}/stop"), None),
        (204, Json::Null)
    );
    let stopped = worker.wait_state(&name, "STOPPED");
    assert_eq!(stopped["tasks"], json!([]));
    let (code, body) = worker.request("DELETE", &format!("/connectors/{name}/offsets"), None);
    assert_eq!(
        (code, body),
        (
            200,
            json!({"message": "The offsets for this connector have been reset successfully"})
        )
    );
    let patch = json!({"offsets": [{"partition": {"kafka_topic": topic, "kafka_partition": 1}, "offset": {"kafka_offset": 5}}]});
    let (code, body) = worker.request(
        "PATCH",
        &format!("/connectors/{name}/offsets"),
        Some(&patch),
    );
    assert_eq!(
        (code, body),
        (
            200,
            json!({"message": "The offsets for this connector have been altered successfully"})
        )
    );
    let (_, offsets) = worker.request("GET", &format!("/connectors/{name}/offsets"), None);
    assert_eq!(offsets["offsets"], patch["offsets"]);
    assert_eq!(
        worker.request("PUT", &format!("/connectors/{name}/resume"), None),
        (202, Json::Null)
    );
    worker.wait_state(&name, "RUNNING");
    assert_eq!(
        worker.request("POST", &format!("/connectors/{name}/restart"), None),
        (204, Json::Null)
    );
    let (code, body) = worker.request(
        "POST",
        &format!("/connectors/{name}/restart?includeTasks=true"),
        None,
    );
    assert_eq!(code, 202);
    assert_eq!(body["name"], name.as_str());

    // A read-only worker on the same topics shows everything and changes nothing.
    let mut reader = Worker::start(
        dir.path(),
        "reader",
        &kafka.bootstrap,
        &topics,
        &["--rest-read-only"],
    );
    let (code, list) = reader.request("GET", "/connectors", None);
    assert_eq!((code, list), (200, json!([name])));
    for (method, path) in [
        ("DELETE", format!("/connectors/{name}")),
        ("PUT", format!("/connectors/{name}/pause")),
    ] {
        let (code, body) = reader.request(method, &path, None);
        assert_eq!(code, 403, "{method} {path}");
        assert!(
            body["message"].as_str().unwrap().contains("read-only"),
            "{body}"
        );
    }
    reader.agent.assert_running();

    assert_eq!(
        worker.request("DELETE", &format!("/connectors/{name}"), None),
        (204, Json::Null)
    );
    assert_eq!(worker.request("GET", "/connectors", None), (200, json!([])));
    // The password is nowhere in what the workers logged (one of them at debug level).
    for w in [&reader, &worker] {
        assert!(
            !w.agent.log_text().contains("kept-secret"),
            "{}",
            w.agent.log_text()
        );
    }
    reader.agent.stop(STOP);
    worker.agent.stop(STOP);
}

/// Where `recorded` (real Kafka Connect 4.1's response) and `ours` differ in shape:
/// the same keys in objects, the same JSON types in values, arrays compared by their
/// first elements. Connector configs are free string maps and maps keyed by
/// connector name are compared entry by entry, so only their values' shapes count.
fn shape_differences(path: &str, recorded: &Json, ours: &Json, out: &mut Vec<String>) {
    let kind = |v: &Json| match v {
        Json::Null => "null",
        Json::Bool(_) => "bool",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    };
    match (recorded, ours) {
        (Json::Object(r), Json::Object(o)) => {
            let free_strings = path.ends_with("config") || path == "config";
            let keyed_by_name = path == "expand" || path == "topics";
            if free_strings {
                for (k, v) in o {
                    if !v.is_string() {
                        out.push(format!(
                            "{path}.{k}: {} where Connect has only strings",
                            kind(v)
                        ));
                    }
                }
            } else if keyed_by_name {
                if let (Some(rv), Some(ov)) = (r.values().next(), o.values().next()) {
                    shape_differences(&format!("{path}.*"), rv, ov, out);
                }
            } else {
                for k in r.keys().filter(|k| !o.contains_key(*k)) {
                    out.push(format!("{path}.{k}: missing"));
                }
                for k in o.keys().filter(|k| !r.contains_key(*k)) {
                    out.push(format!("{path}.{k}: not in Connect's response"));
                }
                for (k, rv) in r {
                    if let Some(ov) = o.get(k) {
                        shape_differences(&format!("{path}.{k}"), rv, ov, out);
                    }
                }
            }
        }
        (Json::Array(r), Json::Array(o)) => {
            if let (Some(rv), Some(ov)) = (r.first(), o.first()) {
                shape_differences(&format!("{path}[0]"), rv, ov, out);
            }
        }
        (r, o) if kind(r) != kind(o) => {
            out.push(format!("{path}: {} where Connect has {}", kind(o), kind(r)))
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_have_the_shape_of_real_connects() {
    let kafka = TestKafka::start();
    let db = TestDb::new("worker_shapes").await;
    let dir = tempfile::tempdir().unwrap();
    let topics = unique("worker-shapes");
    let mut worker = Worker::start(dir.path(), "data", &kafka.bootstrap, &topics, &[]);
    let topic = unique("worker-shapes-rows");
    kafka.create_topic(&topic, 2);
    let rec = unique("rec");
    let rec2 = unique("rec2");
    let sink: Json = serde_json::from_str(&seed_config_for(SINK_JSON, &db, |c| {
        c.insert("topics".into(), topic.clone().into());
        c.insert("tasks.max".into(), "2".into());
    }))
    .unwrap();
    let config = sink["config"].clone();
    let invalid = json!({"name": "bad", "config": {"connector.class": "com.kaiwudb.kafka.connect.sink.KwdbSinkConnector"}});
    let validate = json!({"connector.class": "com.kaiwudb.kafka.connect.sink.KwdbSinkConnector", "topics": "t", "tasks.max": "x"});

    // The recording script's sequence (scripts/kafka-connect-record), step by step.
    enum Step {
        Call(&'static str, &'static str, String, Option<Json>),
        Wait(String, &'static str),
    }
    use Step::{Call, Wait};
    let c = |p: &str| format!("/connectors/{rec}{p}");
    let steps = vec![
        Call("root", "GET", "/".into(), None),
        Call("plugins", "GET", "/connector-plugins".into(), None),
        Call("list_empty", "GET", "/connectors".into(), None),
        Call(
            "create",
            "POST",
            "/connectors".into(),
            Some(json!({"name": rec, "config": config})),
        ),
        Call(
            "create_conflict",
            "POST",
            "/connectors".into(),
            Some(json!({"name": rec, "config": config})),
        ),
        Call(
            "create_invalid",
            "POST",
            "/connectors".into(),
            Some(invalid),
        ),
        Wait(rec.clone(), "RUNNING"),
        Call("info", "GET", c(""), None),
        Call("config", "GET", c("/config"), None),
        Call(
            "put_config_update",
            "PUT",
            c("/config"),
            Some(config.clone()),
        ),
        Call(
            "put_config_create",
            "PUT",
            format!("/connectors/{rec2}/config"),
            Some(config.clone()),
        ),
        Call(
            "name_mismatch",
            "PUT",
            "/connectors/other/config".into(),
            Some(json!({"name": rec})),
        ),
        Wait(rec.clone(), "RUNNING"),
        Call("status", "GET", c("/status"), None),
        Call("task_status", "GET", c("/tasks/1/status"), None),
        Call("task_status_missing", "GET", c("/tasks/9/status"), None),
        Call("tasks", "GET", c("/tasks"), None),
        Call("topics", "GET", c("/topics"), None),
        Call(
            "expand",
            "GET",
            "/connectors?expand=status&expand=info".into(),
            None,
        ),
        Call("list", "GET", "/connectors".into(), None),
        Call("offsets", "GET", c("/offsets"), None),
        Call("delete_offsets_running", "DELETE", c("/offsets"), None),
        Call("pause", "PUT", c("/pause"), None),
        Wait(rec.clone(), "PAUSED"),
        Call("status_paused", "GET", c("/status"), None),
        Call("resume", "PUT", c("/resume"), None),
        Wait(rec.clone(), "RUNNING"),
        Call("restart", "POST", c("/restart"), None),
        Call(
            "restart_tasks",
            "POST",
            c("/restart?includeTasks=true"),
            None,
        ),
        Wait(rec.clone(), "RUNNING"),
        Call("stop", "PUT", c("/stop"), None),
        Wait(rec.clone(), "STOPPED"),
        Call("status_stopped", "GET", c("/status"), None),
        Call("delete_offsets", "DELETE", c("/offsets"), None),
        Call("not_found", "GET", "/connectors/nope".into(), None),
        Call("no_route", "GET", "/nowhere".into(), None),
        Call(
            "validate",
            "PUT",
            "/connector-plugins/KwdbSinkConnector/config/validate".into(),
            Some(validate),
        ),
        Call("delete", "DELETE", c(""), None),
        Call("delete_rec2", "DELETE", format!("/connectors/{rec2}"), None),
    ];
    let mut differences = Vec::new();
    let mut compared = 0;
    for step in steps {
        let (name, method, path, body) = match step {
            Wait(connector, state) => {
                worker.wait_state(&connector, state);
                continue;
            }
            Call(name, method, path, body) => (name, method, path, body),
        };
        let recorded: Json =
            serde_json::from_str(&read(&format!("tests/data/connect/recorded/{name}.json")))
                .unwrap();
        let (code, ours) = worker.request(method, &path, body.as_ref());
        if recorded["status"] != code {
            differences.push(format!(
                "{name}: status {code} where Connect answers {}",
                recorded["status"]
            ));
        }
        shape_differences(name, &recorded["body"], &ours, &mut differences);
        compared += 1;
    }
    // Every recording is compared.
    let recordings = std::fs::read_dir(repo_root().join("tests/data/connect/recorded"))
        .unwrap()
        .count();
    assert_eq!(compared, recordings);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    worker.agent.stop(STOP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_connectors_and_the_survivor_of_a_kill_9_takes_over() {
    let kafka = TestKafka::start();
    let sink_db = TestDb::new("workers_sink").await;
    let source_db = TestDb::new("workers_source").await;
    source_db
        .client()
        .await
        .batch_execute(&read("tests/data/seed/benchmark-cpu_kaiwudb_tb.sql"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let topics = unique("workers");
    // The broker's smallest session timeout: a dead worker is noticed in seconds.
    let fast = ["-X", "session.timeout.ms=6000"];
    let mut a = Worker::start(dir.path(), "a", &kafka.bootstrap, &topics, &fast);
    let b = Worker::start(dir.path(), "b", &kafka.bootstrap, &topics, &fast);

    let rows_topic = unique("workers-rows");
    kafka.create_topic(&rows_topic, 4);
    let cpu_topic = format!("kw-{}-cpu_kaiwudb_tb", source_db.name);
    kafka.create_topic(&cpu_topic, 1);
    let sink = unique("sink");
    let source = unique("source");
    let sink_config: Json = serde_json::from_str(&seed_config_for(SINK_JSON, &sink_db, |c| {
        c.insert("topics".into(), rows_topic.clone().into());
        c.insert("tasks.max".into(), "2".into());
    }))
    .unwrap();
    let source_config: Json =
        serde_json::from_str(&seed_config_for(SOURCE_JSON, &source_db, |_| {})).unwrap();
    // Created through one worker, visible through the other.
    let (code, _) = a.request(
        "PUT",
        &format!("/connectors/{sink}/config"),
        Some(&sink_config["config"]),
    );
    assert_eq!(code, 201);
    let (code, _) = b.request(
        "PUT",
        &format!("/connectors/{source}/config"),
        Some(&source_config["config"]),
    );
    assert_eq!(code, 201);
    let mut names = vec![sink.clone(), source.clone()];
    names.sort();
    assert_eq!(a.request("GET", "/connectors", None), (200, json!(names)));
    assert_eq!(b.request("GET", "/connectors", None), (200, json!(names)));

    let lines: Vec<String> = (0..400).map(row_line).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    produce_lines(&kafka.bootstrap, &rows_topic, &refs[..200]).await;
    wait_rows(&sink_db, "flow", 200, Duration::from_secs(90), &mut a.agent).await;
    read_until(&kafka.bootstrap, &cpu_topic, Duration::from_secs(60), |m| {
        !m.is_empty()
    })
    .await;

    // The source runs on exactly one of them; wait until its position is in the
    // offsets topic, then kill that worker without a chance to clean up.
    let status = a.wait_state(&source, "RUNNING");
    let owner = status["connector"]["worker_id"]
        .as_str()
        .unwrap()
        .to_string();
    let started = Instant::now();
    loop {
        let (_, offsets) = a.request("GET", &format!("/connectors/{source}/offsets"), None);
        if offsets["offsets"][0]["offset"]["rows"] == 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{offsets}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (mut victim, mut survivor) = if owner.ends_with(&format!(":{}", a.port)) {
        (a, b)
    } else {
        (b, a)
    };
    assert!(owner.ends_with(&format!(":{}", victim.port)), "{owner}");
    victim.agent.kill9();

    // Everything keeps flowing through the survivor.
    produce_lines(&kafka.bootstrap, &rows_topic, &refs[200..]).await;
    source_db
        .client()
        .await
        .batch_execute(
            "INSERT INTO cpu_kaiwudb_tb (k_timestamp, usage_user, id, hostname, region, datacenter) \
             VALUES ('2024-01-22 22:22:23.000', 42, 647470401348904608, 'locahost', 'beijing', 'center')",
        )
        .await
        .unwrap();
    wait_rows(
        &sink_db,
        "flow",
        400,
        Duration::from_secs(120),
        &mut survivor.agent,
    )
    .await;
    let started = Instant::now();
    loop {
        let (_, status) = survivor.request("GET", &format!("/connectors/{source}/status"), None);
        let here = status["connector"]["worker_id"]
            .as_str()
            .unwrap_or("")
            .ends_with(&format!(":{}", survivor.port));
        if here && status["connector"]["state"] == "RUNNING" {
            break;
        }
        survivor.agent.assert_running();
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{status}\n{}",
            survivor.agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The source resumed from the offsets topic: the new row, the old one not again.
    let all = read_until(&kafka.bootstrap, &cpu_topic, Duration::from_secs(60), |m| {
        m.len() >= 2
    })
    .await;
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(crate::connect::data_rows(&all[1..])[0]["usage_user"], 42);
    // The sink's status no longer names the dead worker.
    let started = Instant::now();
    loop {
        let (_, status) = survivor.request("GET", &format!("/connectors/{sink}/status"), None);
        let worker = status["connector"]["worker_id"].as_str().unwrap_or("");
        if worker.ends_with(&format!(":{}", survivor.port)) {
            assert_eq!(status["connector"]["state"], "RUNNING", "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the sink's status still names {worker}: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The source's topics are the ones it wrote to; the sink's, its configured ones.
    assert_eq!(
        survivor.request("GET", &format!("/connectors/{source}/topics"), None),
        (200, json!({ &source: {"topics": [cpu_topic]} }))
    );
    assert_eq!(
        survivor.request("GET", &format!("/connectors/{sink}/topics"), None),
        (200, json!({ &sink: {"topics": [rows_topic]} }))
    );
    survivor.agent.stop(STOP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_creating_one_name_at_once_give_one_201_and_one_409() {
    let kafka = TestKafka::start();
    let db = TestDb::new("workers_create").await;
    let dir = tempfile::tempdir().unwrap();
    let topics = unique("create-race");
    let a = Worker::start(dir.path(), "a", &kafka.bootstrap, &topics, &[]);
    let b = Worker::start(dir.path(), "b", &kafka.bootstrap, &topics, &[]);
    let body = |name: &str, tasks: &str| {
        let mut c: Json = serde_json::from_str(&seed_config_for(SINK_JSON, &db, |c| {
            c.insert("tasks.max".into(), tasks.into());
        }))
        .unwrap();
        c["name"] = name.into();
        // Nothing needs to run: the race is over the configs topic.
        c["initial_state"] = "STOPPED".into();
        c
    };
    let names: Vec<String> = (0..6).map(|i| format!("{}-{i}", unique("twin"))).collect();
    let bodies_a: Vec<Json> = names.iter().map(|n| body(n, "1")).collect();
    let bodies_b: Vec<Json> = names.iter().map(|n| body(n, "2")).collect();
    let post_all = |w: &Worker, bodies: &[Json]| -> Vec<u16> {
        bodies
            .iter()
            .map(|b| w.request("POST", "/connectors", Some(b)).0)
            .collect()
    };
    let (from_a, from_b) = std::thread::scope(|scope| {
        let ta = scope.spawn(|| post_all(&a, &bodies_a));
        let tb = scope.spawn(|| post_all(&b, &bodies_b));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    for (i, name) in names.iter().enumerate() {
        let codes = [from_a[i], from_b[i]];
        assert!(
            codes == [201, 409] || codes == [409, 201],
            "{name}: {codes:?}\n{}\n{}",
            a.agent.log_text(),
            b.agent.log_text()
        );
        let winner = if codes[0] == 201 { "1" } else { "2" };
        for w in [&a, &b] {
            let (code, config) = w.request("GET", &format!("/connectors/{name}/config"), None);
            assert_eq!(code, 200);
            assert_eq!(config["tasks.max"], winner, "{name} on :{}", w.port);
        }
    }
    // A third worker reading the topic from the start agrees with both.
    let c = Worker::start(dir.path(), "c", &kafka.bootstrap, &topics, &[]);
    for (i, name) in names.iter().enumerate() {
        let winner = if from_a[i] == 201 { "1" } else { "2" };
        let (_, config) = c.request("GET", &format!("/connectors/{name}/config"), None);
        assert_eq!(config["tasks.max"], winner, "{name} on the new worker");
        let (_, status) = c.request("GET", &format!("/connectors/{name}/status"), None);
        assert_eq!(status["connector"]["state"], "STOPPED", "{status}");
    }
    for w in [a, b, c] {
        w.agent.stop(STOP);
    }
}

#[test]
fn basic_auth_protects_every_endpoint() {
    let kafka = TestKafka::start();
    let dir = tempfile::tempdir().unwrap();
    // Connect's credentials file for BasicAuthSecurityRestExtension: `user: password`.
    let credentials = dir.path().join("credentials.properties");
    std::fs::write(&credentials, "admin: s3cret\nviewer=other\n").unwrap();
    let worker = Worker::start(
        dir.path(),
        "data",
        &kafka.bootstrap,
        &unique("worker-auth"),
        &["--rest-basic-auth", credentials.to_str().unwrap()],
    );
    let code = |user: Option<&str>, path: &str| -> String {
        let mut cmd = Command::new("curl");
        cmd.args(["--silent", "-o", "/dev/null", "-w", "%{http_code}"]);
        if let Some(u) = user {
            cmd.args(["-u", u]);
        }
        String::from_utf8(cmd.arg(worker.url(path)).output().unwrap().stdout).unwrap()
    };
    assert_eq!(code(None, "/connectors"), "401");
    assert_eq!(code(Some("admin:wrong"), "/connectors"), "401");
    assert_eq!(code(Some("nobody:s3cret"), "/"), "401");
    assert_eq!(code(None, "/nowhere"), "401");
    assert_eq!(code(Some("admin:s3cret"), "/connectors"), "200");
    assert_eq!(code(Some("viewer:other"), "/"), "200");
    worker.agent.stop(STOP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_that_cannot_run_is_failed_with_its_trace() {
    let kafka = TestKafka::start();
    let db = TestDb::new("worker_failed").await;
    let dir = tempfile::tempdir().unwrap();
    let mut worker = Worker::start(
        dir.path(),
        "data",
        &kafka.bootstrap,
        &unique("worker-failed"),
        &[],
    );
    // A topic pattern the consumer cannot compile: the config is well formed, the
    // connector cannot start.
    let sink: Json = serde_json::from_str(&seed_config_for(SINK_JSON, &db, |c| {
        c.remove("topics");
        c.insert("topics.regex".into(), "kw-(".into());
    }))
    .unwrap();
    let name = unique("failing");
    let (code, body) = worker.request(
        "PUT",
        &format!("/connectors/{name}/config"),
        Some(&sink["config"]),
    );
    assert_eq!(code, 201, "{body}");
    let status = worker.wait_state(&name, "FAILED");
    assert!(
        !status["connector"]["trace"].as_str().unwrap().is_empty(),
        "{status}"
    );
    assert_eq!(status["tasks"][0]["state"], "FAILED");
    assert!(status["tasks"][0]["trace"].is_string(), "{status}");
    // Restarting only what failed restarts it (and it fails again, as it must).
    let (code, body) = worker.request(
        "POST",
        &format!("/connectors/{name}/restart?includeTasks=true&onlyFailed=true"),
        None,
    );
    assert_eq!(code, 202, "{body}");
    worker.wait_state(&name, "FAILED");
    worker.agent.stop(STOP);
}

/// `listeners=https://...` with Connect's listener settings: the API over TLS with
/// the test CA's certificate, then with client certificates required.
#[test]
fn an_https_listener_serves_the_api_and_can_require_client_certificates() {
    let kafka = TestKafka::start();
    // The test node's certificates: broker.pem holds its key and chain (a Kafka PEM
    // keystore) for 127.0.0.1, signed by ca.crt, which also signed client.crt.
    let secure = TestKafka::secure();
    let certs = Path::new(&secure.ca).parent().unwrap().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let keystore = format!(
        "listeners.https.ssl.keystore.location={}",
        certs.join("broker.pem").display()
    );
    let curl = |worker: &Worker, extra: &[&str]| -> (bool, String) {
        let url = worker.url("/").replace("http://", "https://");
        let out = Command::new("curl")
            .args(["--silent", "--show-error", "--cacert"])
            .arg(certs.join("ca.crt"))
            .args(extra)
            .arg(url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let plain = |worker: &Worker| {
        Command::new("curl")
            .args(["--silent", "--max-time", "5"])
            .arg(worker.url("/"))
            .output()
            .unwrap()
    };

    let worker = Worker::start(
        dir.path(),
        "tls",
        &kafka.bootstrap,
        &unique("worker-https"),
        &[
            "-X",
            "listeners=https://127.0.0.1:8443",
            "-X",
            "listeners.https.ssl.keystore.type=PEM",
            "-X",
            &keystore,
        ],
    );
    let (ok, body) = curl(&worker, &[]);
    assert!(ok, "{body}");
    let root: Json = serde_json::from_str(&body).unwrap();
    assert!(root["version"].is_string(), "{root}");
    // Plain HTTP to a TLS listener gets no answer from the API.
    let out = plain(&worker);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("version"),
        "{out:?}"
    );
    worker.agent.stop(STOP);

    let worker = Worker::start(
        dir.path(),
        "mtls",
        &kafka.bootstrap,
        &unique("worker-mtls"),
        &[
            "-X",
            "listeners=https://127.0.0.1:8443",
            "-X",
            &keystore,
            "-X",
            "listeners.https.ssl.client.auth=required",
            "-X",
            &format!(
                "listeners.https.ssl.truststore.location={}",
                certs.join("ca.crt").display()
            ),
        ],
    );
    let (ok, body) = curl(&worker, &[]);
    assert!(!ok, "served without a client certificate: {body}");
    let cert = certs.join("client.crt");
    let key = certs.join("client.key");
    let (ok, body) = curl(
        &worker,
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert!(ok, "{body}");
    assert!(body.contains("\"version\""), "{body}");
    worker.agent.stop(STOP);

    // A Java keystore cannot be read: the worker stops at once and says what to do.
    let data = dir.path().join("jks");
    let out = run_kwpipe(
        &[
            "connect",
            "worker",
            "--bootstrap-servers",
            &kafka.bootstrap,
            "-X",
            "listeners=https://127.0.0.1:0",
            "-X",
            "ssl.keystore.location=/etc/kafka/server.jks",
            "-X",
            "ssl.keystore.type=JKS",
            "-X",
            "ssl.keystore.password=hunter2-secret",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("ssl.keystore.type: a JKS store needs a JVM to read"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2-secret"), "{stderr}");
}

/// The worker running a source connector is killed -9 in the middle of an export.
/// The survivor resumes from the offsets topic: every row arrives, and no more rows
/// are exported twice than were in flight (kwdb-poll's `max_in_flight`, 4, pages of
/// `fetch.max.rows`), because each checkpoint is in the offsets topic before it is
/// in the dead worker's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_moved_by_a_kill_9_repeats_no_more_than_its_in_flight_pages() {
    const ROWS: i64 = 200_000;
    const PAGE: i64 = 100;
    const IN_FLIGHT: i64 = 4;
    let kafka = TestKafka::start();
    let db = TestDb::new("workers_move").await;
    let client = db.client().await;
    client
        .batch_execute(&read("tests/data/seed/benchmark-cpu_kaiwudb_tb.sql"))
        .await
        .unwrap();
    // usage_user numbers the rows; ten devices.
    client
        .batch_execute(&format!(
            "INSERT INTO cpu_kaiwudb_tb (k_timestamp, usage_user, id, hostname, region, datacenter) \
             SELECT timestamp '2024-01-01' + i * interval '1 millisecond', i, i % 10, 'h', 'r', 'd' \
             FROM generate_series(0, {}) AS i",
            ROWS - 1
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let topics = unique("move");
    let fast = ["-X", "session.timeout.ms=6000"];
    let a = Worker::start(dir.path(), "a", &kafka.bootstrap, &topics, &fast);
    let b = Worker::start(dir.path(), "b", &kafka.bootstrap, &topics, &fast);
    let topic = format!("kw-{}-cpu_kaiwudb_tb", db.name);
    kafka.create_topic(&topic, 1);
    let source = unique("mover");
    let config: Json = serde_json::from_str(&seed_config_for(SOURCE_JSON, &db, |c| {
        c.insert("fetch.max.rows".into(), PAGE.to_string().into());
    }))
    .unwrap();
    let (code, _) = a.request(
        "PUT",
        &format!("/connectors/{source}/config"),
        Some(&config["config"]),
    );
    assert_eq!(code, 201);

    // Kill the owner once a tenth of the rows is out, while it exports the rest.
    let started = Instant::now();
    let exported = loop {
        let (_, offsets) = a.request("GET", &format!("/connectors/{source}/offsets"), None);
        let rows = offsets["offsets"][0]["offset"]["rows"]
            .as_i64()
            .unwrap_or(0);
        if rows >= ROWS / 10 {
            break rows;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{offsets}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let (_, status) = a.request("GET", &format!("/connectors/{source}/status"), None);
    let owner = status["connector"]["worker_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut victim, survivor) = if owner.ends_with(&format!(":{}", a.port)) {
        (a, b)
    } else {
        (b, a)
    };
    // At a moment unrelated to when the offsets were last written.
    std::thread::sleep(Duration::from_millis(700));
    victim.agent.kill9();
    let (_, offsets) = survivor.request("GET", &format!("/connectors/{source}/offsets"), None);
    let at_kill = offsets["offsets"][0]["offset"]["rows"]
        .as_i64()
        .unwrap_or(0);
    assert!(
        at_kill < ROWS,
        "the export ended before the kill ({exported} rows when seen); the test needs more rows"
    );

    // Every row arrives through the survivor; count the ones that came twice.
    let bootstrap = kafka.bootstrap.clone();
    let (total, distinct) = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::Message;
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", unique("reader"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut seen = std::collections::HashSet::new();
        let mut total = 0i64;
        while (seen.len() as i64) < ROWS {
            assert!(
                Instant::now() < deadline,
                "{} of {ROWS} rows arrived",
                seen.len()
            );
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let v: Json = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
                for row in v["data"].as_array().unwrap() {
                    total += 1;
                    seen.insert(row["usage_user"].as_i64().unwrap());
                }
            }
        }
        // Anything still on its way.
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let v: Json = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
                total += v["data"].as_array().unwrap().len() as i64;
            }
        }
        (total, seen.len() as i64)
    })
    .await
    .unwrap();
    assert_eq!(distinct, ROWS);
    let repeated = total - ROWS;
    assert!(
        repeated <= IN_FLIGHT * PAGE,
        "{repeated} rows exported twice; at most {} were in flight (killed at {at_kill} rows)",
        IN_FLIGHT * PAGE
    );
    eprintln!("killed at {at_kill} of {ROWS} rows; {repeated} exported twice");
    survivor.agent.stop(STOP);
}
