use std::collections::HashMap;
use std::path::PathBuf;

use async_trait::async_trait;
use kwpipe_components::api::{
    BuildContext, Component, ComponentClass, ComponentConfig, ComponentError, OutputDef,
};
use kwpipe_components::event::EventKind;

use super::*;
use crate::config::{
    ComponentKey, ConfigError, Node, OutputRef, Topology, DEFAULT_CHANNEL_CAPACITY,
    DEFAULT_SHUTDOWN_TIMEOUT,
};

fn load(text: &str) -> Result<Topology, ConfigError> {
    load_with_env(text, &[])
}

fn load_with_env(text: &str, env: &[(&str, &str)]) -> Result<Topology, ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load_texts(&[(PathBuf::from("t.toml"), text.to_string())], &env)
}

fn errors(text: &str) -> Vec<String> {
    load(text).unwrap_err().errors
}

const GOOD: &str = r#"
data_dir = "/tmp/kwpipe"
channel_capacity = 64
shutdown_timeout = "10s"

[api]
address = "127.0.0.1:9999"

[sources.readings]
type = "file"
path = "/tmp/in.txt"

[sinks.out]
type = "file"
inputs = ["readings"]
path = "/tmp/out.txt"
"#;

#[test]
fn a_good_topology_loads_with_its_globals() {
    let t = load(GOOD).unwrap();
    assert_eq!(t.globals.data_dir, PathBuf::from("/tmp/kwpipe"));
    assert_eq!(t.channel_capacity, 64);
    assert_eq!(t.shutdown_timeout, std::time::Duration::from_secs(10));
    assert_eq!(t.api.as_ref().unwrap().address.port(), 9999);
    assert_eq!(t.nodes.len(), 2);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
}

#[test]
fn defaults_apply() {
    let t = load(
        "[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"in\"]\n",
    )
    .unwrap();
    assert_eq!(t.channel_capacity, DEFAULT_CHANNEL_CAPACITY);
    assert_eq!(t.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
    assert!(t.api.is_none());
}

#[test]
fn every_error_is_reported_at_once_with_its_component() {
    let errs = errors(
        r#"
bogus = 1

[sources.readings]
type = "file"
path = "/tmp/in"
inputs = ["x"]

[sources.other]
type = "fiel"

[transforms.decode]
type = "nope"
inputs = ["readings"]

[sinks.out]
type = "file"
inputs = ["readngs"]
path = "/tmp/out"
pth = 3

[sinks.noinputs]
type = "blackhole"

[sinks.readings]
type = "blackhole"
inputs = ["other"]
"#,
    );
    let expect = [
        "unknown top-level key \"bogus\"",
        "sources.readings: sources take no \"inputs\"",
        "sources.other: unknown source type \"fiel\"; known types: stdin, file, kafka, kwdb-poll; did you mean \"file\"?",
        "transforms.decode: unknown transform type \"nope\"",
        "sinks.out: unknown field `pth`, expected",
        "sinks.noinputs: missing \"inputs\"",
        "sinks.readings: id \"readings\" is also used by sources.readings",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|x| x.contains(e)),
            "missing error {e:?} in {errs:#?}"
        );
    }
}

#[test]
fn a_dangling_input_suggests_the_near_miss() {
    let errs = errors(
        r#"
[sources.readings]
type = "stdin"

[sinks.out]
type = "console"
inputs = ["readngs"]
"#,
    );
    assert_eq!(
        errs,
        vec!["sinks.out: input \"readngs\" does not exist; did you mean \"readings\"?"]
    );
}

#[test]
fn bad_option_values_name_the_expected_form() {
    let errs = errors(
        r#"
shutdown_timeout = "soon"
channel_capacity = 0

[sources.in]
type = "stdin"
max_line_bytes = "big"

[sinks.out]
type = "blackhole"
inputs = ["in"]
print_interval = "5 parsecs"
"#,
    );
    assert!(
        errs.iter()
            .any(|e| e
                .starts_with("shutdown_timeout: invalid duration \"soon\"; expected a form like")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("channel_capacity: expected an integer from 1")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("sources.in: invalid type: string \"big\", expected usize")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("sinks.out: invalid duration \"5 parsecs\"")),
        "{errs:?}"
    );
}

#[test]
fn toml_syntax_errors_name_file_and_line() {
    let errs = errors("[sources.in]\ntype = \"stdin\"\nbroken = \n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("t.toml: line 3, column"), "{errs:?}");
}

#[test]
fn environment_variables_fill_values_and_missing_ones_are_errors() {
    let text = "[sources.in]\ntype = \"file\"\npath = \"${DIR}/in.txt\"\n[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"${OUT:-/tmp/o}\"\n";
    let t = load_with_env(text, &[("DIR", "/data")]).unwrap();
    assert!(format!("{:?}", t.nodes[0].config).contains("/data/in.txt"));
    let errs = load(text).unwrap_err().errors;
    assert_eq!(
        errs,
        vec!["t.toml: line 3: environment variable DIR is not set (use ${DIR:-default} for a default)"]
    );
}

#[test]
fn several_files_merge_and_conflicts_are_errors() {
    let env = HashMap::new();
    let a = (
        PathBuf::from("a.toml"),
        "data_dir = \"/d\"\n[sources.in]\ntype = \"stdin\"\n".to_string(),
    );
    let b = (
        PathBuf::from("b.toml"),
        "[sinks.out]\ntype = \"console\"\ninputs = [\"in\"]\n".to_string(),
    );
    let t = load_texts(&[a.clone(), b], &env).unwrap();
    assert_eq!(t.nodes.len(), 2);

    let c = (
        PathBuf::from("c.toml"),
        "data_dir = \"/other\"\n[sources.in]\ntype = \"stdin\"\n".to_string(),
    );
    let errs = load_texts(&[a, c], &env).unwrap_err().errors;
    assert!(
        errs.contains(&"sources.in: defined in both a.toml and c.toml".to_string()),
        "{errs:?}"
    );
    assert!(
        errs.contains(&"data_dir: set differently in a.toml and c.toml".to_string()),
        "{errs:?}"
    );
}

#[test]
fn api_section_is_checked() {
    let base =
        "[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"in\"]\n";
    let errs = errors(&format!("{base}[api]\naddress = \"nowhere\"\n"));
    assert_eq!(
        errs,
        vec![
            "api: address: \"nowhere\" is not an address; expected a form like \"127.0.0.1:8686\""
        ]
    );
    let t = load(&format!("{base}[api]\nenabled = false\n")).unwrap();
    assert!(t.api.is_none());
}

#[test]
fn an_output_nobody_reads_is_a_warning() {
    let t = load("[sources.in]\ntype = \"stdin\"\n[sources.other]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"in\"]\n").unwrap();
    assert_eq!(t.warnings, vec!["sources.other: nothing reads its output"]);
}

/// Issue 18: `validate` says where rejected records would be skipped because the
/// source that owns their position skips them and no `dropped` output is wired.
#[test]
fn rejects_nobody_takes_under_skip_are_a_warning() {
    let topology = |on_reject: &str, dropped: bool| {
        format!(
            r#"
[sources.k]
type = "kafka"
bootstrap_servers = "127.0.0.1:9092"
group_id = "g"
topics = ["t"]
{on_reject}
[transforms.d]
type = "decode"
inputs = ["k"]
format = "line_influxdb"
[sinks.out]
type = "console"
inputs = ["d"]
{}
"#,
            if dropped {
                "[sinks.dlq]\ntype = \"console\"\ninputs = [\"d.dropped\"]"
            } else {
                ""
            }
        )
    };
    let t = load(&topology("", false)).unwrap();
    assert_eq!(
        t.warnings,
        vec!["sources.k: records rejected by transforms.d with no `dropped` output reading them are logged, counted and skipped (on_reject = \"skip\", the default); wire their `dropped` output to keep them, or set on_reject = \"stop\" to hold the position"]
    );
    let t = load(&topology("on_reject = \"stop\"", false)).unwrap();
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let t = load(&topology("", true)).unwrap();
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
}

/// Issue 18, item 7: a `start_at` that is no time fails at load (and so
/// `validate --no-environment`), not only when the source starts.
#[test]
fn an_impossible_start_at_fails_at_load() {
    let errs = errors(
        r#"
[sources.p]
type = "kwdb-poll"
url = "postgresql://127.0.0.1:5432"
database = "d"
start_at = "2023-02-29 10:00:00"
[sinks.out]
type = "console"
inputs = ["p"]
"#,
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("start_at: \"2023-02-29 10:00:00\" is not a time"),
        "{errs:?}"
    );
}

/// A component of given kinds, for graph checks the registered ones cannot show.
#[derive(Debug)]
struct Kinds {
    takes: Vec<EventKind>,
    gives: Vec<OutputDef>,
}

#[async_trait]
impl ComponentConfig for Kinds {
    fn type_name(&self) -> &'static str {
        "kinds"
    }
    fn input_kinds(&self) -> Vec<EventKind> {
        self.takes.clone()
    }
    fn outputs(&self) -> Vec<OutputDef> {
        self.gives.clone()
    }
    async fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        Err(ComponentError::msg("not buildable"))
    }
}

fn node(
    class: ComponentClass,
    id: &str,
    inputs: &[&str],
    takes: &[EventKind],
    gives: Vec<OutputDef>,
) -> Node {
    Node {
        key: ComponentKey {
            class,
            id: id.into(),
        },
        type_name: "kinds".into(),
        inputs: inputs.iter().map(|s| OutputRef::parse(s)).collect(),
        config: Box::new(Kinds {
            takes: takes.to_vec(),
            gives,
        }),
    }
}

#[test]
fn event_kinds_must_match_along_every_edge() {
    use ComponentClass::*;
    use EventKind::*;
    let nodes = vec![
        node(Source, "raw", &[], &[], vec![OutputDef::default(Raw)]),
        node(
            Transform,
            "decode",
            &["raw"],
            &[Raw],
            vec![OutputDef::default(Rows), OutputDef::named("dropped", Raw)],
        ),
        node(Sink, "db", &["raw"], &[Rows], vec![]),
        node(Sink, "ok", &["decode"], &[Rows], vec![]),
        node(Sink, "dlq", &["decode.dropped"], &[Raw], vec![]),
        node(Sink, "missing", &["decode.nope"], &[Raw], vec![]),
        node(Sink, "fromsink", &["db"], &[Raw], vec![]),
    ];
    let mut errs = Vec::new();
    crate::graph::check(&nodes, &[], &mut errs);
    assert_eq!(
        errs,
        vec![
            "sinks.db: input \"raw\" gives Raw events, but a kinds sink takes Rows",
            "sinks.missing: input \"decode.nope\": transforms.decode has no output \"nope\"; it has dropped",
            "sinks.fromsink: input \"db\" is a sink; sinks have no default output",
        ]
    );
}

#[test]
fn cycles_are_found() {
    use ComponentClass::*;
    use EventKind::*;
    let nodes = vec![
        node(Source, "src", &[], &[], vec![OutputDef::default(Raw)]),
        node(
            Transform,
            "a",
            &["src", "c"],
            &[Raw],
            vec![OutputDef::default(Raw)],
        ),
        node(
            Transform,
            "b",
            &["a"],
            &[Raw],
            vec![OutputDef::default(Raw)],
        ),
        node(
            Transform,
            "c",
            &["b"],
            &[Raw],
            vec![OutputDef::default(Raw)],
        ),
        node(Sink, "out", &["c"], &[Raw], vec![]),
    ];
    let mut errs = Vec::new();
    crate::graph::check(&nodes, &[], &mut errs);
    assert_eq!(errs, vec!["transforms.a: cycle a -> b -> c -> a"]);
}
