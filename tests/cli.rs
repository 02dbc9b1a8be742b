//! The command line: validate, graph, run of local topologies, exit codes, signals.

use std::io::Write;
use std::time::Duration;

use crate::support::agent::Agent;
use crate::support::{kwpipe, repo_root, run_kwpipe, write_topology};

#[test]
fn every_example_topology_validates() {
    let dir = repo_root().join("topologies");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = kwpipe()
                .args(["validate", "--no-environment"])
                .arg(&path)
                .envs(example_env())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} does not validate:\n{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no topologies found in {}", dir.display());
}

/// Variables the example topologies read, so they validate without a deployment.
fn example_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("KWDB_PASSWORD", "secret"),
        ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    ]
}

/// Each `tests/data/broken/NAME.toml` fails validation with exactly the error
/// lines in `NAME.errors`.
#[test]
fn broken_topologies_fail_with_the_expected_messages() {
    let dir = repo_root().join("tests/data/broken");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let expected = std::fs::read_to_string(path.with_extension("errors")).unwrap();
        let out = kwpipe()
            .current_dir(&dir)
            .args(["validate", "--no-environment"])
            .arg(path.file_name().unwrap())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", path.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let got: Vec<&str> = stderr.lines().collect();
        let want: Vec<&str> = expected.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(got, want, "{}", path.display());
        checked += 1;
    }
    assert!(checked >= 3);
}

#[test]
fn a_file_of_100000_lines_arrives_complete_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out.txt");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for i in 0..100_000 {
        writeln!(f, "line {i} ünïcode ☃").unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let topo = write_topology(
        dir.path(),
        "t.toml",
        &format!(
            "channel_capacity = 16\n[sources.in]\ntype = \"file\"\npath = \"{}\"\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}\"\n",
            input.display(),
            output.display()
        ),
    );
    let out = run_kwpipe(&["run", topo.to_str().unwrap()], Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&input).unwrap(),
        std::fs::read(&output).unwrap(),
        "output differs from input"
    );
}

#[test]
fn a_failing_sink_ends_the_run_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "a\nb\n").unwrap();
    let topo = write_topology(
        dir.path(),
        "t.toml",
        &format!(
            "[sources.in]\ntype = \"file\"\npath = \"{}\"\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}/no/such/dir/out\"\n",
            input.display(),
            dir.path().display()
        ),
    );
    let out = run_kwpipe(&["run", topo.to_str().unwrap()], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: sinks.out failed: cannot open") && last.contains("No such file"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out.txt");
    std::fs::write(&input, "first\nsecond\n").unwrap();
    let topo = write_topology(
        dir.path(),
        "t.toml",
        &format!(
            "shutdown_timeout = \"10s\"\n[sources.in]\ntype = \"file\"\nfollow = true\npath = \"{}\"\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}\"\n",
            input.display(),
            output.display()
        ),
    );
    let agent = Agent::run(&topo).log(dir.path().join("agent.log")).start();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&output).unwrap_or_default() != "first\nsecond\n" {
        assert!(std::time::Instant::now() < deadline, "lines never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = agent.terminate(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn graph_prints_dot_with_event_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let topo = write_topology(
        dir.path(),
        "t.toml",
        "[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"in\"]\n",
    );
    let out = kwpipe()
        .args(["graph", topo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let dot = String::from_utf8(out.stdout).unwrap();
    assert!(dot.starts_with("digraph kwpipe {"), "{dot}");
    assert!(dot.contains("\"in\" -> \"out\" [label=\"Raw\"];"), "{dot}");
}

#[test]
fn stdin_to_console_passes_lines_through() {
    let dir = tempfile::tempdir().unwrap();
    let topo = write_topology(
        dir.path(),
        "t.toml",
        "[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"in\"]\n",
    );
    let mut child = kwpipe()
        .args(["run", topo.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"one\ntwo\nthree")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\nthree\n");
}

#[test]
fn version_and_bad_log_level() {
    let out = kwpipe().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("kwpipe "));
    let out = kwpipe()
        .args(["--log-level", "verbose", "validate", "x.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: invalid log level"));
}
