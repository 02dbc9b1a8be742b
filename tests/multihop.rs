//! The chained pipeline of `docs/deployment.md`, end to end, with the example
//! topologies as they are shipped:
//!
//!   edge database --(edge agent: topologies/edge-kwdb-to-kafka.toml)--> broker
//!     --(center agent: topologies/center-kafka-to-kwdb.toml)--> central database
//!
//! Two kwpipe processes, two PostgreSQL databases (postgres dialect), one broker.
//! Rows already there, rows added while both run, and rows added while the edge
//! agent is stopped all reach the center with their values; a message that is not
//! json_kaiwudb lands in the center's dead-letter topic with its reason.

use std::path::Path;
use std::time::Duration;

use crate::connect::{read_until, wait_rows, STOP};
use crate::support::agent::Agent;
use crate::support::broker::{unique, TestKafka};
use crate::support::pg::{server_url, TestDb};
use crate::support::{free_port, repo_root};

const TABLE: &str = "readings";

/// A time-series table as kwpipe's postgres dialect keeps one: tags as columns, the
/// primary tag and the timestamp as the key, tag roles in the comment.
async fn create_readings(db: &TestDb) {
    db.client()
        .await
        .batch_execute(&format!(
            "CREATE TABLE {TABLE} (ts timestamptz(3) NOT NULL, temperature float8, humidity real, \
               ok bool, device varchar(64) NOT NULL, site varchar(32), PRIMARY KEY (device, ts)); \
             COMMENT ON TABLE {TABLE} IS 'kwpipe {{\"tags\":[\"device\",\"site\"],\"primary_tags\":[\"device\"]}}';"
        ))
        .await
        .unwrap();
}

/// `n` readings per device for devices d0..d9, starting `from` seconds after 2024-01-01.
async fn insert_readings(db: &TestDb, from: i64, n: i64) {
    db.client()
        .await
        .batch_execute(&format!(
            "INSERT INTO {TABLE} SELECT timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => t) \
               + make_interval(secs => d * 0.001), t * 0.25 + d, (t % 100)::real / 3, t % 2 = 0, 'd' || d, \
               CASE WHEN d % 3 = 0 THEN NULL ELSE 'north' END \
             FROM generate_series({from}, {}) t, generate_series(0, 9) d",
            from + n - 1
        ))
        .await
        .unwrap();
}

/// Every row as text, in key order.
async fn contents(db: &TestDb) -> Vec<String> {
    db.client()
        .await
        .query(
            &format!("SELECT ({TABLE}.*)::text FROM {TABLE} ORDER BY device, ts"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn jdbc_url() -> (String, String) {
    let server = server_url();
    let (user, hostport) = server
        .strip_prefix("postgresql://")
        .and_then(|r| r.split_once('@'))
        .expect("KWPIPE_TEST_PG is postgresql://USER@HOST:PORT");
    (format!("jdbc:postgresql://{hostport}"), user.to_string())
}

fn start(dir: &Path, name: &str, topology: &str, env: &[(&str, String)]) -> Agent {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let mut env = env.to_vec();
    env.push(("KWPIPE_DATA_DIR", data.display().to_string()));
    env.push(("KWPIPE_API_ADDRESS", format!("127.0.0.1:{}", free_port())));
    Agent::run(&repo_root().join("topologies").join(topology))
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .envs(&env)
        .log(dir.join(format!("{name}.log")))
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_to_center_through_the_broker_with_the_example_topologies() {
    let kafka = TestKafka::start();
    let edge_db = TestDb::new("edge").await;
    let center_db = TestDb::new("center").await;
    create_readings(&edge_db).await;
    insert_readings(&edge_db, 0, 100).await; // 1000 rows

    let dir = tempfile::tempdir().unwrap();
    let (url, user) = jdbc_url();
    let prefix = unique("kwpipe-edge");
    let site = "site7";
    let topic = format!("{prefix}-{site}");
    let rejected = unique("kwpipe-center-rejected");
    // The center subscribes by regex: the topic exists before it starts.
    kafka.create_topic(&topic, 2);
    kafka.create_topic(&rejected, 1);
    let common = [
        ("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap.clone()),
        ("KWDB_PASSWORD", "unused-with-trust-auth".to_string()),
        ("EDGE_TOPIC_PREFIX", prefix.clone()),
    ];
    let mut edge_env = common.to_vec();
    edge_env.extend([
        ("EDGE_SITE", site.to_string()),
        ("EDGE_KWDB_URL", url.clone()),
        ("EDGE_KWDB_USER", user.clone()),
        ("EDGE_DATABASE", edge_db.name.clone()),
    ]);
    let mut center_env = common.to_vec();
    center_env.extend([
        ("CENTER_KWDB_URL", url.clone()),
        ("CENTER_KWDB_USER", user.clone()),
        ("CENTER_DATABASE", center_db.name.clone()),
        ("CENTER_GROUP", unique("kwpipe-center")),
        ("CENTER_REJECTED_TOPIC", rejected.clone()),
    ]);

    let mut center = start(
        dir.path(),
        "center",
        "center-kafka-to-kwdb.toml",
        &center_env,
    );
    let mut edge = start(dir.path(), "edge", "edge-kwdb-to-kafka.toml", &edge_env);

    // What was there before the agents started.
    wait_rows(
        &center_db,
        TABLE,
        1000,
        Duration::from_secs(120),
        &mut center,
    )
    .await;
    edge.assert_running();
    // What arrives while both run.
    insert_readings(&edge_db, 100, 50).await;
    wait_rows(
        &center_db,
        TABLE,
        1500,
        Duration::from_secs(60),
        &mut center,
    )
    .await;

    // The edge agent stops (an uplink or box outage); rows keep arriving locally and
    // go out when it is back, from its checkpoint.
    edge.stop(STOP);
    insert_readings(&edge_db, 150, 30).await;
    let edge = start(dir.path(), "edge", "edge-kwdb-to-kafka.toml", &edge_env);
    wait_rows(
        &center_db,
        TABLE,
        1800,
        Duration::from_secs(60),
        &mut center,
    )
    .await;

    // Same rows, same values, at both ends.
    assert_eq!(contents(&center_db).await, contents(&edge_db).await);
    // The center created the table from the declared schema, with the same key and tags.
    let comment: String = center_db
        .client()
        .await
        .query_one(&format!("SELECT obj_description('{TABLE}'::regclass)"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        comment,
        r#"kwpipe {"tags":["device","site"],"primary_tags":["device"]}"#
    );

    // The graceful stop and restart repeated nothing: the topic holds each row once.
    let messages = read_until(&kafka.bootstrap, &topic, Duration::from_secs(60), |m| {
        crate::connect::data_rows(m).len() >= 1800
    })
    .await;
    assert_eq!(crate::connect::data_rows(&messages).len(), 1800);

    // Something that is not json_kaiwudb on an edge topic: dead-lettered with a reason.
    crate::connect::produce_lines(&kafka.bootstrap, &topic, &["not json at all"]).await;
    let dead = read_until(&kafka.bootstrap, &rejected, Duration::from_secs(60), |m| {
        !m.is_empty()
    })
    .await;
    assert_eq!(dead, ["not json at all"]);
    center.assert_running();

    edge.stop(STOP);
    center.stop(STOP);
}
