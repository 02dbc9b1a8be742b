//! The Kafka a company runs: TLS (server-verified and mutual), SASL PLAIN and SCRAM,
//! zstd, against the real broker's secure listeners (`scripts/test-env`), through
//! the `kwpipe` binary as a user runs it. And each way a secure connection goes
//! wrong gives one error naming the cause, before anything is consumed or committed.

use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

use crate::support::agent::Agent;
use crate::support::broker::{committed, create_topic, unique, Secure, TestKafka};
use crate::support::{run_kwpipe, write_topology};

/// `tls = {...}` and `sasl = {...}` lines for one listener.
fn security(s: &Secure, listener: &str) -> (String, String) {
    let tls_ca = format!("tls = {{ ca_file = \"{}\" }}", s.ca);
    match listener {
        "ssl" => (s.ssl.clone(), tls_ca),
        "mtls" => (
            s.mtls.clone(),
            format!(
                "tls = {{ ca_file = \"{}\", crt_file = \"{}\", key_file = \"{}\", key_pass = \"{}\" }}",
                s.ca, s.client_cert, s.client_key_encrypted, s.client_key_pass
            ),
        ),
        "sasl_ssl_scram512" => (
            s.sasl_ssl.clone(),
            format!(
                "{tls_ca}\nsasl = {{ mechanism = \"SCRAM-SHA-512\", username = \"{}\", password = \"{}\" }}",
                s.scram_user, s.scram_password
            ),
        ),
        "sasl_plaintext_plain" => (
            s.sasl_plaintext.clone(),
            format!(
                "sasl = {{ mechanism = \"PLAIN\", username = \"{}\", password = \"{}\" }}",
                s.plain_user, s.plain_password
            ),
        ),
        "sasl_plaintext_scram256" => (
            s.sasl_plaintext.clone(),
            format!(
                "sasl = {{ mechanism = \"SCRAM-SHA-256\", username = \"{}\", password = \"{}\" }}",
                s.scram_user, s.scram_password
            ),
        ),
        other => panic!("unknown listener {other}"),
    }
}

/// Lines of a file -> kafka sink over one listener; kafka source over another ->
/// a file. Returns the topology text.
fn round_trip_topology(
    dir: &Path,
    topic: &str,
    group: &str,
    sink: (&str, &str),
    source: (&str, &str),
    compression: &str,
) -> String {
    format!(
        r#"
data_dir = "{data}"

[sources.lines]
type = "file"
path = "{input}"

[sinks.to_kafka]
type = "kafka"
inputs = ["lines"]
bootstrap_servers = "{sink_servers}"
topic = "{topic}"
compression = "{compression}"
{sink_security}

[sources.from_kafka]
type = "kafka"
bootstrap_servers = "{source_servers}"
group_id = "{group}"
topics = ["{topic}"]
commit_interval = "200ms"
session_timeout = "6s"
{source_security}

[sinks.out]
type = "file"
inputs = ["from_kafka"]
path = "{out}"
"#,
        data = dir.join("data").display(),
        input = dir.join("in.txt").display(),
        out = dir.join("out.txt").display(),
        sink_servers = sink.0,
        sink_security = sink.1,
        source_servers = source.0,
        source_security = source.1,
    )
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Writes `n` lines into Kafka over `sink` and reads them back over `source`.
fn round_trip(sink: &str, source: &str, compression: &str, topic_config: Option<(&str, &str)>) {
    let kafka = TestKafka::start();
    let s = TestKafka::secure();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique(&format!("sec-{sink}"));
    match topic_config {
        None => create_topic(&kafka.bootstrap, &topic, 2),
        Some((k, v)) => create_topic_with(&kafka.bootstrap, &topic, k, v),
    }
    let n = 500;
    let expected: Vec<String> = (0..n).map(|i| format!("line {i} over {sink}")).collect();
    std::fs::write(dir.path().join("in.txt"), expected.join("\n") + "\n").unwrap();
    let (ss, sec_sink) = security(&s, sink);
    let (rs, sec_source) = security(&s, source);
    let topology = write_topology(
        dir.path(),
        "t.toml",
        &round_trip_topology(
            dir.path(),
            &topic,
            &unique("g"),
            (&ss, &sec_sink),
            (&rs, &sec_source),
            compression,
        ),
    );
    let agent = Agent::run(&topology)
        .env("KWPIPE_LOG", "info")
        .shared_log(dir.path().join("log"))
        .start();
    let out = dir.path().join("out.txt");
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines(&out).len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} lines came back over {source}; log:\n{}",
            lines(&out).len(),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = agent.log.clone();
    let status = agent.terminate(Duration::from_secs(40));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "exit {status:?}; log:\n{text}");
    let mut got = lines(&out);
    got.sort();
    let mut want = expected;
    want.sort();
    assert_eq!(got, want);
    for secret in [&s.scram_password, &s.plain_password, &s.client_key_pass] {
        assert!(
            !text.contains(secret.as_str()),
            "a secret in the log:\n{text}"
        );
    }
}

/// A topic with one config set (e.g. `compression.type=zstd`: the broker stores
/// every batch zstd-compressed whatever the producer sent).
fn create_topic_with(bootstrap: &str, name: &str, key: &str, value: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let topic = NewTopic::new(name, 2, TopicReplication::Fixed(1)).set(key, value);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for r in rt
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .unwrap()
    {
        r.map_err(|(t, e)| format!("{t}: {e}")).unwrap();
    }
}

#[test]
fn ssl_with_the_server_verified_in_and_out() {
    round_trip("ssl", "ssl", "none", None);
}

#[test]
fn mutual_tls_with_an_encrypted_key_in_and_out() {
    round_trip("mtls", "mtls", "none", None);
}

#[test]
fn sasl_ssl_with_scram_sha_512_in_and_out() {
    round_trip("sasl_ssl_scram512", "sasl_ssl_scram512", "none", None);
}

#[test]
fn sasl_plaintext_with_plain_and_scram_sha_256_in_and_out() {
    round_trip(
        "sasl_plaintext_plain",
        "sasl_plaintext_scram256",
        "none",
        None,
    );
}

/// zstd out of the sink, and a topic the broker keeps zstd-compressed into the
/// source: both need librdkafka built with zstd.
#[test]
fn zstd_compressed_topics_in_and_out() {
    round_trip("ssl", "sasl_ssl_scram512", "zstd", None);
    round_trip(
        "sasl_plaintext_plain",
        "ssl",
        "none",
        Some(("compression.type", "zstd")),
    );
}

// ---- what goes wrong, and what kwpipe says ----------------------------------------

/// A kafka source over `servers` with the given security lines, into a blackhole.
fn source_only(dir: &Path, servers: &str, group: &str, topic: &str, extra: &str) -> String {
    let text = format!(
        r#"
data_dir = "{data}"

[sources.in]
type = "kafka"
bootstrap_servers = "{servers}"
group_id = "{group}"
topics = ["{topic}"]
{extra}

[sinks.out]
type = "blackhole"
inputs = ["in"]
"#,
        data = dir.join("data").display(),
    );
    write_topology(dir, "bad.toml", &text)
        .to_str()
        .unwrap()
        .to_string()
}

/// `kwpipe validate` and `kwpipe run --require-healthy` both fail with one error
/// naming `cause`, and the group commits nothing.
fn fails_with(servers: &str, extra: &str, cause: &str, secret: Option<&str>) {
    let kafka = TestKafka::start();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("sec-bad");
    let group = unique("g");
    create_topic(&kafka.bootstrap, &topic, 1);
    // Something to consume, had the connection worked.
    assert!(produce_one(&kafka.bootstrap, &topic));
    let topology = source_only(dir.path(), servers, &group, &topic, extra);
    for args in [
        vec!["validate", topology.as_str()],
        vec!["run", "--require-healthy", topology.as_str()],
    ] {
        let out = run_kwpipe(&args, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: one error expected:\n{stderr}");
        assert!(
            errors[0].contains("sources.in") && errors[0].contains(cause),
            "{args:?}: expected {cause:?} in:\n{stderr}"
        );
        if let Some(secret) = secret {
            assert!(!stderr.contains(secret), "the secret in:\n{stderr}");
        }
    }
    assert_eq!(committed(&kafka.bootstrap, &group, &topic, 1), [None]);
}

fn produce_one(bootstrap: &str, topic: &str) -> bool {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    p.send(BaseRecord::<(), str>::to(topic).payload("x"))
        .unwrap();
    p.flush(Duration::from_secs(30)).is_ok()
}

#[test]
fn an_untrusted_certificate_is_named() {
    let s = TestKafka::secure();
    fails_with(
        &s.ssl,
        &format!("tls = {{ ca_file = \"{}\" }}", s.other_ca),
        "not signed by a certificate authority in `tls.ca_file`",
        None,
    );
}

#[test]
fn a_certificate_for_another_host_is_named() {
    let s = TestKafka::secure();
    fails_with(
        &s.wrong_host,
        &format!("tls = {{ ca_file = \"{}\" }}", s.ca),
        "not issued for \"127.0.0.1\"",
        None,
    );
}

#[test]
fn a_wrong_password_is_named_and_not_shown() {
    let s = TestKafka::secure();
    fails_with(
        &s.sasl_ssl,
        &format!(
            "tls = {{ ca_file = \"{}\" }}\nsasl = {{ mechanism = \"SCRAM-SHA-512\", username = \"{}\", password = \"not-the-password-42\" }}",
            s.ca, s.scram_user
        ),
        "invalid credentials",
        Some("not-the-password-42"),
    );
}

#[test]
fn a_wrong_key_passphrase_names_the_key_and_its_passphrase_and_is_not_shown() {
    let s = TestKafka::secure();
    fails_with(
        &s.mtls,
        &format!(
            "tls = {{ ca_file = \"{}\", crt_file = \"{}\", key_file = \"{}\", key_pass = \"not-the-key-pass-77\" }}",
            s.ca, s.client_cert, s.client_key_encrypted
        ),
        "tls.key_pass",
        Some("not-the-key-pass-77"),
    );
}

#[test]
fn a_tls_listener_addressed_in_plaintext_is_named() {
    let s = TestKafka::secure();
    fails_with(&s.ssl, "", "is this a TLS listener?", None);
}

#[test]
fn a_missing_client_certificate_is_named() {
    let s = TestKafka::secure();
    fails_with(
        &s.mtls,
        &format!("tls = {{ ca_file = \"{}\" }}", s.ca),
        "bad certificate",
        None,
    );
}

#[test]
fn an_unknown_mechanism_and_a_missing_file_fail_without_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    let topology = source_only(
        dir.path(),
        "127.0.0.1:1",
        "g",
        "t",
        "sasl = { mechanism = \"SCRAM-SHA-1\", username = \"u\", password = \"p\" }\n\
         tls = { ca_file = \"/nonexistent/ca.pem\" }",
    );
    let out = run_kwpipe(
        &["validate", "--no-environment", &topology],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The first problem found in the component is reported, with its option.
    assert!(
        stderr.contains("sources.in: `tls.ca_file` /nonexistent/ca.pem"),
        "{stderr}"
    );
    let topology = source_only(
        dir.path(),
        "127.0.0.1:1",
        "g",
        "t",
        "sasl = { mechanism = \"SCRAM-SHA-1\", username = \"u\", password = \"p\" }",
    );
    let out = run_kwpipe(
        &["validate", "--no-environment", &topology],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`sasl.mechanism` \"SCRAM-SHA-1\" is not one kwpipe speaks"),
        "{stderr}"
    );
}

// ---- Connect migrants: the worker's security settings --------------------------------

/// `kwpipe connect run --worker-config` with a worker file as a Connect user has it
/// for a SASL_SSL cluster (SCRAM, a PEM truststore, the `consumer.`/`producer.`
/// copies), and a connector-level `consumer.override.*`: the seed's sink config
/// lands its rows, the seed's source config exports its row, both over the secure
/// listeners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_run_takes_the_worker_configs_security_settings() {
    use crate::connect::{
        produce_lines, read_until, seed_config_for, wait_rows, SINK_JSON, SOURCE_JSON, STOP,
    };
    use crate::support::pg::TestDb;
    let kafka = TestKafka::start();
    let s = TestKafka::secure();
    let db = TestDb::new("connect_sec").await;
    db.client()
        .await
        .batch_execute(
            &std::fs::read_to_string(
                crate::support::repo_root().join("tests/data/seed/benchmark-cpu_kaiwudb_tb.sql"),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jaas = |user: &str, pass: &str| {
        format!(
            "org.apache.kafka.common.security.scram.ScramLoginModule required \\\n    username=\"{user}\" password=\"{pass}\";"
        )
    };
    let worker = dir.path().join("connect-distributed.properties");
    std::fs::write(
        &worker,
        format!(
            "bootstrap.servers={servers}\n\
             group.id=connect-cluster\n\
             security.protocol=SASL_SSL\n\
             sasl.mechanism=SCRAM-SHA-512\n\
             sasl.jaas.config={jaas}\n\
             ssl.truststore.location={ca}\n\
             ssl.truststore.type=PEM\n\
             producer.security.protocol=SASL_SSL\n\
             producer.sasl.mechanism=SCRAM-SHA-512\n\
             producer.sasl.jaas.config={jaas}\n\
             producer.ssl.truststore.location={ca}\n\
             producer.ssl.truststore.type=PEM\n",
            servers = s.sasl_ssl,
            jaas = jaas(&s.scram_user, &s.scram_password),
            ca = s.ca,
        ),
    )
    .unwrap();
    let sink_topic = unique("kw-sec-sink");
    let cpu_topic = format!("kw-{}-cpu_kaiwudb_tb", db.name);
    let back_topic = format!("kw-{}-ts_json_kaiwudb_tb", db.name);
    for t in [&sink_topic, &cpu_topic, &back_topic] {
        kafka.create_topic(t, 1);
    }
    let sink = dir.path().join("sink.json");
    std::fs::write(
        &sink,
        seed_config_for(SINK_JSON, &db, |c| {
            c.insert("topics".into(), sink_topic.clone().into());
            // The connector's own override: this sink's consumer logs in with PLAIN
            // on the SASL_PLAINTEXT listener instead.
            c.insert(
                "consumer.override.sasl.jaas.config".into(),
                format!(
                    "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"{}\" password=\"{}\";",
                    s.plain_user, s.plain_password
                )
                .into(),
            );
            c.insert("consumer.override.sasl.mechanism".into(), "PLAIN".into());
            c.insert(
                "consumer.override.security.protocol".into(),
                "SASL_PLAINTEXT".into(),
            );
            c.insert(
                "consumer.override.bootstrap.servers".into(),
                s.sasl_plaintext.clone().into(),
            );
        })
        .replace("\"KwdbSinkConnector\"", "\"SecSink\""),
    )
    .unwrap();
    let source = dir.path().join("source.json");
    std::fs::write(&source, seed_config_for(SOURCE_JSON, &db, |_| {})).unwrap();
    let data = std::fs::read_to_string(
        crate::support::repo_root().join("tests/data/seed/kw-json-kaiwudb-data.txt"),
    )
    .unwrap();
    let lines: Vec<&str> = data.lines().collect();
    produce_lines(&kafka.bootstrap, &sink_topic, &lines).await;

    let mut agent = Agent::command(["connect", "run", "--worker-config"])
        .arg(&worker)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg(&sink)
        .arg(&source)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .log(dir.path().join("agent.log"))
        .start();
    wait_rows(
        &db,
        "ts_json_kaiwudb_tb",
        5,
        Duration::from_secs(90),
        &mut agent,
    )
    .await;
    let cpu = read_until(&kafka.bootstrap, &cpu_topic, Duration::from_secs(60), |m| {
        !m.is_empty()
    })
    .await;
    assert!(cpu[0].contains("cpu_kaiwudb_tb"), "{cpu:?}");
    let text = agent.log_text();
    for secret in [&s.scram_password, &s.plain_password] {
        assert!(
            !text.contains(secret.as_str()),
            "a secret in the log:\n{text}"
        );
    }
    agent.stop(STOP);
}
