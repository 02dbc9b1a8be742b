//! A Kafka broker for tests: `kwpipe-test-broker` (librdkafka's mock cluster in a
//! process of its own), started per test, or the cluster named by
//! `KWPIPE_TEST_KAFKA=host:port` when that is set. Against a real cluster every test
//! runs unchanged, with unique topic and group names; fault injection needs the test
//! broker's control port (`KWPIPE_TEST_KAFKA_CONTROL`, printed by
//! `scripts/test-broker`), and tests that need it are skipped without one.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

enum Control {
    Child {
        child: Child,
        stdin: ChildStdin,
        stdout: BufReader<ChildStdout>,
    },
    Tcp(String),
    None,
}

pub struct TestKafka {
    pub bootstrap: String,
    control: Mutex<Control>,
}

/// The directory cargo puts binaries in, found from this test binary's own path
/// (`target/debug/deps/integration-...`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Builds the broker binary once if this test run does not have it yet.
pub fn broker_binary() -> PathBuf {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let path = bin_dir().join("kwpipe-test-broker");
    let mut built = BUILT.lock().unwrap();
    if !*built && !path.exists() {
        let target = bin_dir().parent().expect("target dir").to_path_buf();
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", "kwpipe-test-broker"])
            .env("CARGO_TARGET_DIR", target)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building kwpipe-test-broker failed");
    }
    *built = true;
    path
}

/// A name no other test (or earlier run against a shared cluster) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestKafka {
    pub fn start() -> TestKafka {
        if let Ok(bootstrap) = std::env::var("KWPIPE_TEST_KAFKA") {
            let control = match std::env::var("KWPIPE_TEST_KAFKA_CONTROL") {
                Ok(addr) => Control::Tcp(addr),
                Err(_) => Control::None,
            };
            return TestKafka {
                bootstrap,
                control: Mutex::new(control),
            };
        }
        let mut child = Command::new(broker_binary())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kwpipe-test-broker starts");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let bootstrap = line
            .trim()
            .strip_prefix("bootstrap=")
            .unwrap_or_else(|| panic!("unexpected first line from the broker: {line:?}"))
            .to_string();
        line.clear();
        stdout.read_line(&mut line).unwrap(); // control=...
        TestKafka {
            bootstrap,
            control: Mutex::new(Control::Child {
                child,
                stdin,
                stdout,
            }),
        }
    }

    pub fn can_inject_faults(&self) -> bool {
        !matches!(*self.control.lock().unwrap(), Control::None)
    }

    /// Sends a control command; panics when the broker refuses it.
    pub fn command(&self, cmd: &str) {
        let mut control = self.control.lock().unwrap();
        let answer = match &mut *control {
            Control::Child { stdin, stdout, .. } => {
                writeln!(stdin, "{cmd}").unwrap();
                stdin.flush().unwrap();
                let mut line = String::new();
                stdout.read_line(&mut line).unwrap();
                line
            }
            Control::Tcp(addr) => {
                let mut s = TcpStream::connect(&*addr).expect("control port answers");
                writeln!(s, "{cmd}").unwrap();
                let mut line = String::new();
                BufReader::new(s).read_line(&mut line).unwrap();
                line
            }
            Control::None => panic!("no control port for {cmd:?}; check can_inject_faults()"),
        };
        assert_eq!(answer.trim(), "ok", "broker answered {answer:?} to {cmd:?}");
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        // A control port means the test broker (per test, or `scripts/test-broker`'s
        // through KWPIPE_TEST_KAFKA_CONTROL), which has no Admin API.
        let mock = !matches!(*self.control.lock().unwrap(), Control::None);
        if mock {
            self.command(&format!("create-topic {name} {partitions}"));
            return;
        }
        // A real cluster: the Admin API (which the mock does not implement).
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let create = || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(admin.create_topics(
                [&topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            ))
            .expect("create_topics")
        };
        // Called from async tests too: a runtime of its own, off the test's.
        let results = if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(create)
        } else {
            create()
        };
        for r in results {
            r.map_err(|(t, e)| format!("{t}: {e}"))
                .expect("topic created");
        }
    }
}

impl Drop for TestKafka {
    fn drop(&mut self) {
        if let Control::Child { child, .. } = &mut *self.control.lock().unwrap() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
