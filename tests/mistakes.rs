//! Configuration mistakes an operator makes: each is one clear line naming the
//! component and what is wrong (`kwpipe validate` checks the outside world unless
//! told `--no-environment`; `kwpipe run --require-healthy` does the same before
//! starting), never a panic or a backtrace, never the password.

use std::time::Duration;

use crate::support::broker::{unique, TestKafka};
use crate::support::pg::server_url;
use crate::support::{free_port, run_kwpipe, write_topology};

/// The role `scripts/test-env` creates with a password, whose logins PostgreSQL
/// checks (scram-sha-256) even though every other role is trusted.
const AUTH_ROLE: &str = "kwpipe_auth";

/// Runs `kwpipe <args> topology` and returns (exit code, stderr).
fn kwpipe_on(args: &[&str], topology: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_topology(dir.path(), "t.toml", topology);
    let mut all: Vec<&str> = args.to_vec();
    all.push(path.to_str().unwrap());
    let out = run_kwpipe(&all, Duration::from_secs(60));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `validate` fails with exactly `line` on stderr.
fn assert_one_line(topology: &str, line: &str) {
    let (code, stderr) = kwpipe_on(&["validate"], topology);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.trim_end(), line, "validate's stderr");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
}

fn stdin_to_kwdb(sink: &str) -> String {
    format!(
        "[sources.in]\ntype = \"stdin\"\n\
         [transforms.d]\ntype = \"decode\"\ninputs = [\"in\"]\nformat = \"json_kaiwudb\"\n\
         [sinks.db]\ntype = \"kwdb\"\ninputs = [\"d\"]\n{sink}\n"
    )
}

fn pg_host_port() -> String {
    let url = server_url();
    let rest = url.split("://").nth(1).unwrap();
    let rest = rest.rsplit('@').next().unwrap();
    rest.split('/').next().unwrap().to_string()
}

#[test]
fn wrong_password_says_so_without_showing_it() {
    let hp = pg_host_port();
    let topology = stdin_to_kwdb(&format!(
        "url = \"postgresql://{AUTH_ROLE}:pw-in-url-xyz@{hp}/postgres\"\npassword = \"pw-in-config-xyz\""
    ));
    let line = format!(
        "error: sinks.db: cannot connect to {hp}: password authentication failed for user \"{AUTH_ROLE}\""
    );
    let (code, stderr) = kwpipe_on(&["validate"], &topology);
    assert_eq!(
        stderr.trim_end(),
        line,
        "(is the {AUTH_ROLE} role set up? run `eval \"$(scripts/test-env)\"`)"
    );
    assert_eq!(code, Some(1));
    assert!(!stderr.contains("pw-in"), "{stderr}");
    // `run --require-healthy` stops at the same line.
    let (code, stderr) = kwpipe_on(&["run", "--require-healthy"], &topology);
    assert_eq!(code, Some(1));
    assert_eq!(stderr.trim_end(), line);
}

#[test]
fn unreachable_database_host() {
    let port = free_port();
    assert_one_line(
        &stdin_to_kwdb(&format!(
            "url = \"postgresql://postgres:secret-xyz@127.0.0.1:{port}/db\""
        )),
        &format!("error: sinks.db: cannot connect to 127.0.0.1:{port}: connection refused"),
    );
}

#[test]
fn database_that_does_not_exist() {
    let hp = pg_host_port();
    assert_one_line(
        &stdin_to_kwdb(&format!(
            "url = \"postgresql://postgres@{hp}/kwt_no_such_db\""
        )),
        &format!(
            "error: sinks.db: cannot connect to {hp}: database \"kwt_no_such_db\" does not exist"
        ),
    );
}

#[test]
fn table_and_database_names_that_are_not_allowed() {
    let db = crate::support::pg::TestDb::blocking("mistake_names");
    let topology = format!(
        "data_dir = \"/tmp\"\n\
         [sources.poll]\ntype = \"kwdb-poll\"\nurl = \"{}\"\ndatabase = \"{}\"\ntables = [\"temperatur\u{e9}\"]\n\
         [sinks.out]\ntype = \"blackhole\"\ninputs = [\"poll\"]\n",
        db.url, db.name
    );
    let line = "error: sources.poll: tables: invalid name \"temperatur\u{e9}\": contains non-ASCII characters";
    assert_one_line(&topology, line);
    // `run` refuses to start with it, with the same words.
    let (code, stderr) = kwpipe_on(&["run"], &topology);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr
            .trim_end()
            .ends_with(line.trim_start_matches("error: ")),
        "{stderr}"
    );

    // Names are shown shortened.
    let long = "x".repeat(70);
    assert_one_line(
        &stdin_to_kwdb(&format!("url = \"{}\"\ndatabase = \"{long}\"", db.url)),
        &format!(
            "error: sinks.db: database: invalid name \"{}...\": is 70 bytes long; the postgres dialect allows at most 63",
            &long[..64]
        ),
    );
}

#[test]
fn kafka_topic_that_does_not_exist_and_broker_that_is_not_there() {
    let kafka = TestKafka::start();
    let topic = unique("nope");
    let kafka_to_blackhole = |bootstrap: &str| {
        format!(
            "[sources.in]\ntype = \"kafka\"\nbootstrap_servers = \"{bootstrap}\"\n\
             group_id = \"g\"\ntopics = [\"{topic}\"]\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"in\"]\n"
        )
    };
    assert_one_line(
        &kafka_to_blackhole(&kafka.bootstrap),
        &format!(
            "error: sources.in: topic \"{topic}\" does not exist on {}",
            kafka.bootstrap
        ),
    );
    let port = free_port();
    assert_one_line(
        &kafka_to_blackhole(&format!("127.0.0.1:{port}")),
        &format!(
            "error: sources.in: cannot connect to Kafka at 127.0.0.1:{port}: connection refused"
        ),
    );
    // The sink's check names the broker too.
    assert_one_line(
        &format!(
            "[sources.in]\ntype = \"stdin\"\n\
             [sinks.out]\ntype = \"kafka\"\ninputs = [\"in\"]\n\
             bootstrap_servers = \"127.0.0.1:{port}\"\ntopic = \"t\"\n"
        ),
        &format!(
            "error: sinks.out: cannot connect to Kafka at 127.0.0.1:{port}: connection refused"
        ),
    );
    // And a topic that exists passes.
    kafka.create_topic(&topic, 1);
    let (code, stderr) = kwpipe_on(&["validate"], &kafka_to_blackhole(&kafka.bootstrap));
    assert_eq!(code, Some(0), "{stderr}");
}
