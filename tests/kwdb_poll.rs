//! The `kwdb-poll` source against a real PostgreSQL (postgres dialect), with the
//! agent as its own process writing what it exports to a file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::pg::TestDb;
use crate::support::{kwpipe, write_topology};

/// A running agent exporting `db` into `out`.
struct Agent {
    child: Child,
}

impl Agent {
    fn start(dir: &Path, db: &TestDb, extra: &str) -> Agent {
        let topo = write_topology(
            dir,
            "poll.toml",
            &format!(
                "data_dir = \"{data}\"\nshutdown_timeout = \"20s\"\n\
                 [sources.db]\ntype = \"kwdb-poll\"\nurl = \"{url}\"\ndatabase = \"{name}\"\n\
                 discover_interval = \"300ms\"\nquery_interval = \"100ms\"\n{extra}\n\
                 [sinks.out]\ntype = \"file\"\ninputs = [\"db\"]\npath = \"{out}\"\n",
                data = dir.join("data").display(),
                url = db.url,
                name = db.name,
                out = out_path(dir).display(),
            ),
        );
        let child = kwpipe()
            .args(["run", topo.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Agent { child }
    }

    fn stop(self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let out = self.child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "agent failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn out_path(dir: &Path) -> PathBuf {
    dir.join("out.jsonl")
}

/// Exported rows as (table, values) from the file sink's JSON lines.
fn exported(dir: &Path) -> Vec<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(out_path(dir)).unwrap_or_default();
    text.lines()
        .filter(|l| l.ends_with('}'))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["table"].as_str().unwrap().to_string(),
                v["values"].clone(),
            )
        })
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (ts, dev) -> how often it was exported.
fn counts(rows: &[(String, serde_json::Value)]) -> HashMap<(i64, i64), usize> {
    let mut m = HashMap::new();
    for (_, v) in rows {
        let key = (v["ts"].as_i64().unwrap(), v["dev"].as_i64().unwrap());
        *m.entry(key).or_default() += 1;
    }
    m
}

/// `n_ts` timestamps one second apart from 2024-01-01, `per_ts` devices each.
async fn readings(db: &TestDb, table: &str, n_ts: i64, per_ts: i64) {
    let c = db.client().await;
    c.batch_execute(&format!(
        "CREATE TABLE {table} (ts timestamptz NOT NULL, v bigint, dev int NOT NULL, PRIMARY KEY (ts, dev));
         INSERT INTO {table} SELECT timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => t), t * 1000 + d, d
         FROM generate_series(0, {}) t, generate_series(0, {}) d;",
        n_ts - 1,
        per_ts - 1
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_sharing_timestamps_across_pages_arrive_exactly_once() {
    let db = TestDb::new("poll_once").await;
    readings(&db, "readings", 100, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &db, "fetch_max_rows = 100");
    wait_for("100,000 rows", Duration::from_secs(120), || {
        exported(dir.path()).len() >= 100_000
    });
    agent.stop();
    let rows = exported(dir.path());
    let c = counts(&rows);
    assert_eq!(c.len(), 100_000, "distinct rows");
    assert_eq!(rows.len(), 100_000, "no row twice");
    // Values survive: v = t * 1000 + d with ts = 2024-01-01 + t seconds.
    for (_, v) in rows.iter().take(1000) {
        let t = (v["ts"].as_i64().unwrap() - 1_704_067_200_000) / 1000;
        assert_eq!(
            v["v"].as_i64().unwrap(),
            t * 1000 + v["dev"].as_i64().unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_created_later_are_exported_and_dropped_ones_let_go() {
    let db = TestDb::new("poll_discover").await;
    readings(&db, "first", 2, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &db, "");
    wait_for("the first table", Duration::from_secs(30), || {
        exported(dir.path()).len() >= 6
    });
    readings(&db, "later", 2, 2).await;
    wait_for("the table created later", Duration::from_secs(30), || {
        exported(dir.path())
            .iter()
            .filter(|(t, _)| t == "later")
            .count()
            >= 4
    });
    db.client()
        .await
        .batch_execute("DROP TABLE first")
        .await
        .unwrap();
    // The agent keeps running and exporting the other table.
    std::thread::sleep(Duration::from_secs(1));
    db.client()
        .await
        .batch_execute("INSERT INTO later VALUES ('2025-01-01 00:00:00+00', 1, 99)")
        .await
        .unwrap();
    wait_for(
        "a new row of the remaining table",
        Duration::from_secs(30),
        || exported(dir.path()).iter().any(|(_, v)| v["dev"] == 99),
    );
    agent.stop();
    let rows = exported(dir.path());
    assert_eq!(rows.iter().filter(|(t, _)| t == "first").count(), 6);
    assert_eq!(rows.iter().filter(|(t, _)| t == "later").count(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_and_restart_loses_nothing_and_repeats_only_what_was_in_flight() {
    let db = TestDb::new("poll_kill").await;
    readings(&db, "big", 200, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = "fetch_max_rows = 500\nmax_in_flight = 4";
    let agent = Agent::start(dir.path(), &db, settings);
    wait_for("part of the export", Duration::from_secs(120), || {
        exported(dir.path()).len() >= 60_000
    });
    agent.kill9();
    let before = exported(dir.path()).len();
    assert!(before < 200_000, "killed too late to prove anything");
    let agent = Agent::start(dir.path(), &db, settings);
    wait_for("the whole table", Duration::from_secs(180), || {
        counts(&exported(dir.path())).len() >= 200_000
    });
    agent.stop();
    let rows = exported(dir.path());
    let c = counts(&rows);
    assert_eq!(c.len(), 200_000, "every row present");
    let repeated = rows.len() - c.len();
    // Only pages handed on and not yet acknowledged may come again.
    assert!(repeated <= 4 * 500, "{repeated} rows repeated");
}

#[tokio::test(flavor = "multi_thread")]
async fn start_at_skips_older_rows() {
    let db = TestDb::new("poll_start").await;
    readings(&db, "r", 10, 2).await;
    let dir = tempfile::tempdir().unwrap();
    // 2024-01-01 00:00:05 onwards: t = 5..9.
    let agent = Agent::start(dir.path(), &db, "start_at = \"2024-01-01 00:00:05\"");
    wait_for("the newer rows", Duration::from_secs(30), || {
        exported(dir.path()).len() >= 10
    });
    std::thread::sleep(Duration::from_millis(500));
    agent.stop();
    let rows = exported(dir.path());
    assert_eq!(rows.len(), 10);
    assert!(rows
        .iter()
        .all(|(_, v)| v["ts"].as_i64().unwrap() >= 1_704_067_205_000));
}

#[tokio::test(flavor = "multi_thread")]
async fn delay_catches_a_row_that_arrives_late() {
    let db = TestDb::new("poll_delay").await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE live (ts timestamptz NOT NULL, v bigint, dev int NOT NULL, PRIMARY KEY (ts, dev))",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &db, "delay = \"3s\"");
    c.batch_execute("INSERT INTO live VALUES (now(), 1, 1)")
        .await
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    // Arrives after row 1 but carries an earlier time.
    c.batch_execute("INSERT INTO live VALUES (now() - interval '1500 milliseconds', 2, 2)")
        .await
        .unwrap();
    wait_for("both rows", Duration::from_secs(30), || {
        exported(dir.path()).len() >= 2
    });
    agent.stop();
    let devs: Vec<i64> = exported(dir.path())
        .iter()
        .map(|(_, v)| v["dev"].as_i64().unwrap())
        .collect();
    assert_eq!(
        devs,
        vec![2, 1],
        "exported in time order, the late row included"
    );
}
