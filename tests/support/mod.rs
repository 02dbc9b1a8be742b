//! Shared helpers for the integration tests and the fault suite: one per kind of
//! thing a test runs against.
//!
//! - [`agent`]: a kwpipe process (start, log, admin API, SIGTERM or kill -9);
//! - [`broker`]: Kafka (the shared node, a private one, the mock) and what a test
//!   asks it (topics, committed offsets);
//! - [`pg`]: PostgreSQL (a database per test, a private server).

#![allow(dead_code)]

pub mod agent;
pub mod broker;
pub mod pg;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The kwpipe binary under test.
pub fn kwpipe() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kwpipe"));
    cmd.env_remove("KWPIPE_LOG");
    cmd
}

/// Runs kwpipe to completion with a time limit; panics if it hangs.
pub fn run_kwpipe(args: &[&str], limit: Duration) -> Output {
    let mut child = kwpipe()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kwpipe");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "kwpipe {args:?} did not finish within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The repository root (where `topologies/` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes a topology file into `dir` and returns its path.
pub fn write_topology(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write topology");
    path
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `done` holds, checking every 100 ms; panics naming `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The rows a `file` sink wrote to `path`, as (table, values); a line still being
/// written (not yet ending in `}`) is left out.
pub fn file_sink_rows(path: &Path) -> Vec<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
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
