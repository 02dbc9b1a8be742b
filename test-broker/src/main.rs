//! `kwpipe-test-broker`: librdkafka's mock Kafka cluster in a process of its own.
//!
//! No Apache Kafka can be installed on the project's machines, so integration tests
//! talk to this instead: real Kafka protocol over loopback TCP, consumer groups and
//! offset commits included, plus fault injection. Running it as its own process keeps
//! kwpipe honest: it shares no memory with the broker it is tested against.
//!
//! ```text
//! kwpipe-test-broker [--brokers N] [--topic NAME:PARTITIONS]... [--bootstrap-file PATH]
//!                    [--control-addr HOST:PORT] [--no-stdin]
//!                    [--group-initial-rebalance-delay-ms MS]
//! ```
//!
//! `--group-initial-rebalance-delay-ms` is the broker setting of that name: how
//! long the first member of an empty group waits for others before the group is
//! formed. Kafka's default, and ours, is 3000; benchmarks set 0, as Kafka's own
//! development configs do, so a run's start-up is not mostly this wait.
//!
//! Stdout, one line each, then nothing more:
//! `bootstrap=127.0.0.1:PORT[,127.0.0.1:PORT...]` and `control=127.0.0.1:PORT`.
//!
//! Commands, one per line on stdin or on a TCP connection to the control address;
//! each is answered with `ok` or `error: REASON`:
//! - `create-topic NAME PARTITIONS`
//! - `broker-down ID` / `broker-up ID` (ID 1..N, or -1 for every broker)
//! - `request-errors API ERROR[,ERROR...]`: the next requests of that API fail with
//!   those errors in turn (API: produce, fetch, metadata, offset-commit, offset-fetch,
//!   find-coordinator, join-group, heartbeat, sync-group, leave-group, init-producer-id;
//!   ERROR: transport, not-leader, request-timed-out, not-coordinator,
//!   coordinator-not-available, rebalance-in-progress, unknown-topic-or-part,
//!   broker-not-available, network-exception)
//! - `clear-request-errors API`
//! - `rtt ID MILLISECONDS`: delay every response of a broker
//! - `ping`
//! - `shutdown`
//!
//! The mock keeps at most ~100,000 messages or 5 MB per partition (hard-coded in
//! librdkafka) and silently drops older segments beyond that.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::ClientConfig;

struct Args {
    brokers: i32,
    topics: Vec<(String, i32)>,
    bootstrap_file: Option<String>,
    control_addr: String,
    stdin: bool,
    rebalance_delay_ms: i32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        brokers: 1,
        topics: Vec::new(),
        bootstrap_file: None,
        control_addr: "127.0.0.1:0".into(),
        stdin: true,
        rebalance_delay_ms: 3000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--brokers" => {
                args.brokers = value("--brokers")?
                    .parse()
                    .map_err(|_| "--brokers takes a number".to_string())?
            }
            "--topic" => {
                let v = value("--topic")?;
                let (name, parts) = v.rsplit_once(':').ok_or("--topic takes NAME:PARTITIONS")?;
                let parts = parts
                    .parse()
                    .map_err(|_| "--topic takes NAME:PARTITIONS".to_string())?;
                args.topics.push((name.to_string(), parts));
            }
            "--bootstrap-file" => args.bootstrap_file = Some(value("--bootstrap-file")?),
            "--control-addr" => args.control_addr = value("--control-addr")?,
            "--no-stdin" => args.stdin = false,
            "--group-initial-rebalance-delay-ms" => {
                args.rebalance_delay_ms = value("--group-initial-rebalance-delay-ms")?
                    .parse()
                    .ok()
                    .filter(|ms: &i32| *ms >= 0)
                    .ok_or("--group-initial-rebalance-delay-ms takes milliseconds")?
            }
            "-h" | "--help" => {
                println!(
                    "usage: kwpipe-test-broker [--brokers N] [--topic NAME:PARTITIONS]... \
                     [--bootstrap-file PATH] [--control-addr HOST:PORT] [--no-stdin] \
                     [--group-initial-rebalance-delay-ms MS]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn api_key(name: &str) -> Result<RDKafkaApiKey, String> {
    Ok(match name {
        "produce" => RDKafkaApiKey::Produce,
        "fetch" => RDKafkaApiKey::Fetch,
        "list-offsets" => RDKafkaApiKey::ListOffsets,
        "metadata" => RDKafkaApiKey::Metadata,
        "offset-commit" => RDKafkaApiKey::OffsetCommit,
        "offset-fetch" => RDKafkaApiKey::OffsetFetch,
        "find-coordinator" => RDKafkaApiKey::FindCoordinator,
        "join-group" => RDKafkaApiKey::JoinGroup,
        "heartbeat" => RDKafkaApiKey::Heartbeat,
        "leave-group" => RDKafkaApiKey::LeaveGroup,
        "sync-group" => RDKafkaApiKey::SyncGroup,
        "init-producer-id" => RDKafkaApiKey::InitProducerId,
        other => return Err(format!("unknown API {other}")),
    })
}

fn error_code(name: &str) -> Result<RDKafkaRespErr, String> {
    use RDKafkaRespErr::*;
    Ok(match name {
        "transport" => RD_KAFKA_RESP_ERR__TRANSPORT,
        "not-leader" => RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        "request-timed-out" => RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        "not-coordinator" => RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        "coordinator-not-available" => RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
        "rebalance-in-progress" => RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
        "unknown-topic-or-part" => RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        "broker-not-available" => RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE,
        "network-exception" => RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION,
        other => return Err(format!("unknown error {other}")),
    })
}

enum Outcome {
    Continue,
    Shutdown,
}

fn execute<C: rdkafka::ClientContext>(
    cluster: &MockCluster<'_, C>,
    line: &str,
) -> (Result<(), String>, Outcome) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let int = |s: Option<&&str>, what: &str| -> Result<i32, String> {
        s.ok_or_else(|| format!("missing {what}"))?
            .parse()
            .map_err(|_| format!("{what} must be a number"))
    };
    let result = match words.as_slice() {
        [] | ["ping"] => Ok(()),
        ["shutdown"] => return (Ok(()), Outcome::Shutdown),
        ["create-topic", name, rest @ ..] => int(rest.first(), "PARTITIONS").and_then(|n| {
            cluster
                .create_topic(name, n, 1)
                .map_err(|e| format!("cannot create topic {name}: {e}"))
        }),
        ["broker-down", rest @ ..] => int(rest.first(), "ID")
            .and_then(|id| cluster.broker_down(id).map_err(|e| e.to_string())),
        ["broker-up", rest @ ..] => {
            int(rest.first(), "ID").and_then(|id| cluster.broker_up(id).map_err(|e| e.to_string()))
        }
        ["rtt", rest @ ..] => int(rest.first(), "ID").and_then(|id| {
            let ms = int(rest.get(1), "MILLISECONDS")?;
            cluster
                .broker_round_trip_time(id, Duration::from_millis(ms.max(0) as u64))
                .map_err(|e| e.to_string())
        }),
        ["request-errors", api, errors] => api_key(api).and_then(|api| {
            let errors = errors
                .split(',')
                .map(error_code)
                .collect::<Result<Vec<_>, _>>()?;
            cluster.request_errors(api, &errors);
            Ok(())
        }),
        ["clear-request-errors", api] => api_key(api).map(|api| cluster.clear_request_errors(api)),
        _ => Err(format!("unknown command: {line}")),
    };
    (result, Outcome::Continue)
}

type Command = (String, mpsc::Sender<String>);

/// Feeds lines from a reader to the cluster thread and writes back the answers.
fn serve_lines(
    reader: impl BufRead,
    mut writer: impl Write,
    tx: mpsc::Sender<Command>,
) -> std::io::Result<()> {
    for line in reader.lines() {
        let line = line?;
        let (reply_tx, reply_rx) = mpsc::channel();
        if tx.send((line, reply_tx)).is_err() {
            break;
        }
        let answer = reply_rx.recv().unwrap_or_else(|_| "ok".into());
        writeln!(writer, "{answer}")?;
        writer.flush()?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kwpipe-test-broker: {e}");
            return ExitCode::from(2);
        }
    };
    // The cluster is created through a client (`test.mock.num.brokers`) rather than
    // `MockCluster::new`, because only a client hands out the raw cluster pointer
    // the rebalance-delay setting needs.
    let host: BaseProducer = match ClientConfig::new()
        .set("test.mock.num.brokers", args.brokers.to_string())
        .create()
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kwpipe-test-broker: cannot start the mock cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(cluster) = host.client().mock_cluster() else {
        eprintln!("kwpipe-test-broker: librdkafka created no mock cluster");
        return ExitCode::FAILURE;
    };
    // SAFETY: the pointer belongs to `host`, which outlives every use here.
    unsafe {
        let raw = rdkafka::bindings::rd_kafka_handle_mock_cluster(host.client().native_ptr());
        rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(
            raw,
            args.rebalance_delay_ms,
        );
    }
    for (name, parts) in &args.topics {
        if let Err(e) = cluster.create_topic(name, *parts, 1) {
            eprintln!("kwpipe-test-broker: cannot create topic {name}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let listener = match TcpListener::bind(&args.control_addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "kwpipe-test-broker: cannot listen on {}: {e}",
                args.control_addr
            );
            return ExitCode::FAILURE;
        }
    };
    let control = listener
        .local_addr()
        .expect("bound listener has an address");
    let bootstrap = cluster.bootstrap_servers();
    if let Some(path) = &args.bootstrap_file {
        // Written whole and renamed so a reader never sees half a line.
        let tmp = format!("{path}.tmp");
        let text = format!("{bootstrap}\n{control}\n");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, path)) {
            eprintln!("kwpipe-test-broker: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!("bootstrap={bootstrap}");
    println!("control={control}");
    let _ = std::io::stdout().flush();

    // The mock cluster handle is not Send: it stays on this thread, and the readers
    // of stdin and of the control port hand their commands over.
    let (tx, rx) = mpsc::channel::<Command>();
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let reader = match stream.try_clone() {
                        Ok(s) => BufReader::new(s),
                        Err(_) => return,
                    };
                    let _ = serve_lines(reader, &stream as &TcpStream, tx);
                });
            }
        });
    }
    if args.stdin {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            let _ = serve_lines(stdin.lock(), std::io::stdout(), tx.clone());
            // The test that started us is gone (stdin closed): so are we.
            let (reply, _) = mpsc::channel();
            let _ = tx.send(("shutdown".into(), reply));
        });
    }
    drop(tx);
    for (line, reply) in rx {
        let (result, outcome) = execute(&cluster, line.trim());
        let answer = match result {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("error: {e}"),
        };
        let _ = reply.send(answer);
        if let Outcome::Shutdown = outcome {
            break;
        }
    }
    ExitCode::SUCCESS
}
