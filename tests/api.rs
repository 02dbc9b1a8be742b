//! The admin API and `kwpipe top` against a running agent.

use std::time::{Duration, Instant};

use crate::support::agent::Agent;
use crate::support::{free_port, kwpipe, write_topology};

#[test]
fn health_metrics_components_and_top() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "a\nb\nc\n").unwrap();
    let port = free_port();
    let topo = write_topology(
        dir.path(),
        "t.toml",
        &format!(
            "[api]\naddress = \"127.0.0.1:{port}\"\n\
             [sources.in]\ntype = \"file\"\nfollow = true\npath = \"{}\"\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}/out.txt\"\n",
            input.display(),
            dir.path().display()
        ),
    );
    let agent = Agent::run(&topo)
        .log(dir.path().join("agent.log"))
        .api(port)
        .start();
    let base = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let (code, body) = loop {
        match rt.block_on(kwpipe::top::fetch(&base, "/health")) {
            Ok(r) if r.0 == 200 => break r,
            _ if started.elapsed() > Duration::from_secs(20) => panic!("api never became healthy"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_eq!(code, 200);
    assert!(body.contains("\"healthy\":true"), "{body}");

    // Counters arrive once the three lines went through.
    let components = loop {
        let c = rt.block_on(kwpipe::top::components(&base)).unwrap();
        let sent = c
            .iter()
            .find(|c| c.id == "in")
            .and_then(|c| c.counters.get("sent_events").copied());
        if sent == Some(3.0) {
            break c;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{c:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = components.iter().find(|c| c.id == "out").unwrap();
    assert_eq!(out.kind, "sink");
    assert_eq!(out.type_name, "file");
    assert_eq!(out.state, "running");
    assert_eq!(out.counters.get("received_events"), Some(&3.0));

    let (code, metrics) = rt.block_on(kwpipe::top::fetch(&base, "/metrics")).unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains(
            "component_received_events_total{component_id=\"out\",component_type=\"file\"} 3"
        ),
        "{metrics}"
    );

    let top = kwpipe().args(["top", "--once", &base]).output().unwrap();
    assert!(
        top.status.success(),
        "{}",
        String::from_utf8_lossy(&top.stderr)
    );
    let screen = String::from_utf8(top.stdout).unwrap();
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("in ") && l.contains("running")),
        "{screen}"
    );
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("out ") && l.contains("sink")),
        "{screen}"
    );

    // `top` with the topology file finds the address itself.
    let top = kwpipe()
        .args(["top", "--once", topo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        top.status.success(),
        "{}",
        String::from_utf8_lossy(&top.stderr)
    );

    let status = agent.terminate(Duration::from_secs(60));
    assert!(status.success());
}

#[test]
fn top_without_an_api_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let topo = write_topology(
        dir.path(),
        "t.toml",
        "[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"in\"]\n",
    );
    let out = kwpipe()
        .args(["top", "--once", topo.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no [api] section"), "{stderr}");
}
