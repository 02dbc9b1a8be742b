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
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::connect::{
    produce_lines, read_until, seed_config_for, wait_rows, Agent, SINK_JSON, SOURCE_JSON,
};
use crate::support::broker::{unique, TestKafka};
use crate::support::pg::TestDb;
use crate::support::{free_port, kwpipe, repo_root};

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
        let log = dir.join(format!("worker-{port}.log"));
        let child = kwpipe()
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .args(["connect", "worker", "--bootstrap-servers", bootstrap])
            .args(["-X", &format!("config.storage.topic={topics}-configs")])
            .args(["-X", &format!("status.storage.topic={topics}-status")])
            .args(["-X", &format!("offset.storage.topic={topics}-offsets")])
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.join(data))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut worker = Worker {
            agent: Agent { child, log },
            port,
        };
        let started = Instant::now();
        while !worker.agent.log_text().contains("worker started") {
            worker.agent.assert_running();
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "worker did not start:\n{}",
                worker.agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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

    let data = read("examples/kw-json-kaiwudb-data.txt");
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
        .batch_execute(&read("examples/benchmark-cpu_kaiwudb_tb.sql"))
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
    worker.agent.stop();
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
    again.agent.stop();
}
