//! Kafka brokers for tests. Three kinds, each for what only it can do:
//!
//! - [`TestKafka::start`]: the shared real Apache Kafka node that `scripts/test-env`
//!   starts (`KWPIPE_TEST_KAFKA` and the variables after it), or any other cluster
//!   named by `KWPIPE_TEST_KAFKA=host:port`. Without the variable, the first test
//!   starts that node itself through `scripts/kafka-broker` (the same directory and
//!   ports as `scripts/test-env`, so either reuses the other's). Every test uses
//!   unique topic and group names, so they share it.
//! - [`TestKafka::private`]: a real Kafka node of the test's own, for faults that
//!   would break every other test on a shared one: kill -9 and restart, the broker
//!   down for a while.
//! - [`TestKafka::mock`]: librdkafka's mock cluster (`kwpipe-test-broker`) in a
//!   process of its own, only for what a real broker cannot do on demand:
//!   request-level error injection (`request-errors API ERROR,...`). It keeps at most
//!   5 MB per partition and deletes older messages: never load it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Where `scripts/test-env` keeps its node; a test run without its variables starts
/// the same node.
const SHARED_DIR: &str = "/tmp/kwpipe-kafka";
const SHARED_PORT: u16 = 19092;

enum Kind {
    Shared,
    /// A node in a directory of the test's own; dropped with the test.
    Private {
        dir: tempfile::TempDir,
        port: u16,
    },
    Mock {
        child: Child,
        stdin: ChildStdin,
        stdout: BufReader<ChildStdout>,
    },
}

pub struct TestKafka {
    pub bootstrap: String,
    kind: Mutex<Kind>,
}

/// The secure listeners of the shared node, with their users and files.
#[derive(Clone, Debug)]
pub struct Secure {
    pub sasl_plaintext: String,
    pub ssl: String,
    pub sasl_ssl: String,
    pub mtls: String,
    pub wrong_host: String,
    pub ca: String,
    pub other_ca: String,
    pub client_cert: String,
    pub client_key: String,
    pub client_key_encrypted: String,
    pub client_key_pass: String,
    pub plain_user: String,
    pub plain_password: String,
    pub scram_user: String,
    pub scram_password: String,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `scripts/kafka-broker ARGS`, panicking with its output when it fails.
fn kafka_broker(args: &[&str]) -> String {
    let out = Command::new(repo().join("scripts/kafka-broker"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("scripts/kafka-broker runs");
    assert!(
        out.status.success(),
        "scripts/kafka-broker {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The shared node's variables: from the environment (`eval "$(scripts/test-env)"`),
/// or from the node this process started.
fn shared_env() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut vars: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("KWPIPE_TEST_KAFKA"))
            .collect();
        if !vars.contains_key("KWPIPE_TEST_KAFKA") {
            let port = SHARED_PORT.to_string();
            kafka_broker(&["start", SHARED_DIR, &port, "--secure"]);
            for line in kafka_broker(&["env", SHARED_DIR, &port]).lines() {
                if let Some((k, v)) = line.split_once('=') {
                    vars.insert(k.to_string(), v.to_string());
                }
            }
        }
        vars
    })
}

/// Two consecutive loopback ports nothing listens on (the node's and its controller's).
fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two consecutive free ports");
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

/// Builds the mock broker's binary once if this test run does not have it yet.
pub fn mock_broker_binary() -> PathBuf {
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
    /// The shared real broker (or `KWPIPE_TEST_KAFKA`'s cluster).
    pub fn start() -> TestKafka {
        TestKafka {
            bootstrap: shared_env()["KWPIPE_TEST_KAFKA"].clone(),
            kind: Mutex::new(Kind::Shared),
        }
    }

    /// A real Kafka node of this test's own (PLAINTEXT only), which the test may kill
    /// and restart. Its topics and offsets survive a restart.
    pub fn private() -> TestKafka {
        let dir = tempfile::Builder::new()
            .prefix("kwpipe-kafka-")
            .tempdir()
            .unwrap();
        let port = free_port_pair();
        kafka_broker(&["start", dir.path().to_str().unwrap(), &port.to_string()]);
        TestKafka {
            bootstrap: format!("127.0.0.1:{port}"),
            kind: Mutex::new(Kind::Private { dir, port }),
        }
    }

    /// librdkafka's mock cluster, for request-level error injection only.
    pub fn mock() -> TestKafka {
        let mut child = Command::new(mock_broker_binary())
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
            kind: Mutex::new(Kind::Mock {
                child,
                stdin,
                stdout,
            }),
        }
    }

    /// The shared node's secure listeners, users and certificate files.
    pub fn secure() -> Secure {
        let env = shared_env();
        let get = |k: &str| {
            env.get(&format!("KWPIPE_TEST_KAFKA_{k}"))
                .unwrap_or_else(|| panic!("KWPIPE_TEST_KAFKA_{k} is not set (scripts/test-env)"))
                .clone()
        };
        Secure {
            sasl_plaintext: get("SASL_PLAINTEXT"),
            ssl: get("SSL"),
            sasl_ssl: get("SASL_SSL"),
            mtls: get("MTLS"),
            wrong_host: get("WRONG_HOST"),
            ca: get("CA"),
            other_ca: get("OTHER_CA"),
            client_cert: get("CLIENT_CERT"),
            client_key: get("CLIENT_KEY"),
            client_key_encrypted: get("CLIENT_KEY_ENCRYPTED"),
            client_key_pass: get("CLIENT_KEY_PASS"),
            plain_user: get("PLAIN_USER"),
            plain_password: get("PLAIN_PASSWORD"),
            scram_user: get("SCRAM_USER"),
            scram_password: get("SCRAM_PASSWORD"),
        }
    }

    fn private_node(&self) -> (String, u16) {
        match &*self.kind.lock().unwrap() {
            Kind::Private { dir, port } => (dir.path().to_str().unwrap().to_string(), *port),
            _ => panic!("only a TestKafka::private() node can be stopped and started"),
        }
    }

    /// kill -9 of the broker process: no shutdown, no final flush of its own.
    pub fn kill9(&self) {
        let (dir, _) = self.private_node();
        let pid = std::fs::read_to_string(Path::new(&dir).join("pid")).expect("node pid");
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -9 {pid}");
        // Wait until the process is gone, so a restart cannot race it for the ports.
        for _ in 0..200 {
            if !Path::new(&format!("/proc/{}", pid.trim())).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(Path::new(&dir).join("pid"));
    }

    /// A graceful stop (SIGTERM, as an operator's restart does).
    pub fn stop_broker(&self) {
        let (dir, _) = self.private_node();
        kafka_broker(&["stop", &dir]);
    }

    /// Starts the node again on the same directory and ports; returns once it serves.
    pub fn start_broker(&self) {
        let (dir, port) = self.private_node();
        kafka_broker(&["start", &dir, &port.to_string()]);
    }

    /// Sends a control command to the mock cluster; panics when it refuses it.
    pub fn command(&self, cmd: &str) {
        let mut kind = self.kind.lock().unwrap();
        let Kind::Mock { stdin, stdout, .. } = &mut *kind else {
            panic!("{cmd:?}: only a TestKafka::mock() takes control commands");
        };
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        let mut answer = String::new();
        stdout.read_line(&mut answer).unwrap();
        assert_eq!(answer.trim(), "ok", "broker answered {answer:?} to {cmd:?}");
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        if matches!(*self.kind.lock().unwrap(), Kind::Mock { .. }) {
            // The mock has no Admin API.
            self.command(&format!("create-topic {name} {partitions}"));
            return;
        }
        create_topic(&self.bootstrap, name, partitions);
    }
}

/// Creates a topic through the Admin API of a real cluster (one that exists already
/// is left as it is).
pub fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
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
        match r {
            // A test with a fixed name (the seed's topic) run again on the same node.
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => panic!("topic {t} not created: {e}"),
        }
    }
}

/// `f`, blocking, from sync code or from a (multi-threaded) runtime's task.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// The offsets `group` has committed for partitions `0..partitions` of `topic`:
/// None for a partition without one.
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    blocking(|| {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let got = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        (0..partitions)
            .map(|p| match got.find_partition(topic, p).unwrap().offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .collect()
    })
}

/// Waits until `group` has committed exactly `want` (one offset per partition from
/// 0) on `topic`; panics with what it has after `within`.
pub async fn wait_committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    want: &[i64],
    within: Duration,
) {
    let deadline = std::time::Instant::now() + within;
    let want: Vec<Option<i64>> = want.iter().copied().map(Some).collect();
    loop {
        let got = committed(bootstrap, group, topic, want.len() as i32);
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "committed offsets {got:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Drop for TestKafka {
    fn drop(&mut self) {
        match &mut *self.kind.lock().unwrap() {
            Kind::Mock { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Kind::Private { dir, .. } => {
                // Killed, not stopped: its data is thrown away with the directory.
                if let Ok(pid) = std::fs::read_to_string(dir.path().join("pid")) {
                    let _ = Command::new("kill").args(["-9", pid.trim()]).status();
                }
            }
            Kind::Shared => {}
        }
    }
}
