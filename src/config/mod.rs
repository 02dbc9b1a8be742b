//! From topology texts to a [`Topology`]: interpolate, parse, merge, parse each
//! component's options and inputs — collecting every error on the way, each
//! prefixed with where it is, so a person fixes them all in one go. Checking the
//! wiring between components is the graph's job (`crate::graph`), and reading
//! files and running both steps is `crate::load`'s: config sits below both.

pub mod interpolate;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kwpipe_components::api::{ComponentClass, ComponentConfig, GlobalOptions};
use kwpipe_components::{durations, registry};

use crate::suggest::suggest;

/// `sources.readings`, `transforms.decode`, `sinks.db`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentKey {
    pub class: ComponentClass,
    pub id: String,
}

impl fmt::Display for ComponentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.class.section(), self.id)
    }
}

/// An output of a component, as an `inputs` entry names it: `id` (its default
/// output) or `id.name`. Parsed once at load; the graph and the runtime use it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutputRef {
    pub id: String,
    pub output: Option<String>,
}

impl OutputRef {
    /// Splits at the first `.`; every text parses, and `to_string` gives it back.
    pub fn parse(text: &str) -> OutputRef {
        match text.split_once('.') {
            Some((id, output)) => OutputRef {
                id: id.to_string(),
                output: Some(output.to_string()),
            },
            None => OutputRef {
                id: text.to_string(),
                output: None,
            },
        }
    }
}

impl fmt::Display for OutputRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.output {
            Some(o) => write!(f, "{}.{o}", self.id),
            None => f.write_str(&self.id),
        }
    }
}

/// One component of a topology.
#[derive(Debug)]
pub struct Node {
    pub key: ComponentKey,
    pub type_name: String,
    /// The outputs it reads, in the order its `inputs` lists them.
    pub inputs: Vec<OutputRef>,
    pub config: Box<dyn ComponentConfig>,
}

/// `[api]`: the admin HTTP endpoint (off unless configured).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiOptions {
    pub address: SocketAddr,
    pub limits: ApiLimits,
}

/// What the admin endpoint allows a client (`crate::admin::guard` enforces it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// How long a client may take to send a request's header (and to read a
    /// response) before its connection is closed. Default 10s.
    pub header_read_timeout: Duration,
    /// Connections served at once; more are closed at once. Default 64.
    pub max_connections: usize,
}

impl Default for ApiLimits {
    /// A header in 10 s; 64 connections at once.
    fn default() -> Self {
        ApiLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 64,
        }
    }
}

/// A checked topology, ready to build and run.
#[derive(Debug)]
pub struct Topology {
    pub globals: Arc<GlobalOptions>,
    pub api: Option<ApiOptions>,
    /// Events each channel holds; bounds memory whatever the input rate.
    pub channel_capacity: usize,
    /// How long a graceful shutdown may take before it is forced.
    pub shutdown_timeout: Duration,
    pub nodes: Vec<Node>,
    /// Things worth telling but not wrong (an output nobody reads).
    pub warnings: Vec<String>,
}

pub const DEFAULT_CHANNEL_CAPACITY: usize = 128;
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Every problem found in a set of topology files.
#[derive(Debug, thiserror::Error)]
#[error("{}", .errors.join("\n"))]
pub struct ConfigError {
    pub errors: Vec<String>,
}

impl ConfigError {
    fn one(message: String) -> Self {
        ConfigError {
            errors: vec![message],
        }
    }
}

/// The topology as written, before its wiring is checked: `topology` holds the
/// components that parsed, `broken` the ids of those that did not (the graph
/// check does not report inputs naming them again), `errors` everything wrong so far.
#[derive(Debug)]
pub struct Parsed {
    pub topology: Topology,
    pub broken: Vec<String>,
    pub errors: Vec<String>,
}

/// Interpolates, parses and merges topology texts (`path` only names them).
/// Fails at once when a text cannot be read as TOML at all; otherwise returns
/// what parsed with every error found.
pub fn parse_texts(
    files: &[(PathBuf, String)],
    env: &HashMap<String, String>,
) -> Result<Parsed, ConfigError> {
    if files.is_empty() {
        return Err(ConfigError::one("no topology file given".into()));
    }
    let mut errors = Vec::new();
    let mut merged = toml::Table::new();
    let mut origin: HashMap<String, PathBuf> = HashMap::new();
    for (path, text) in files {
        let name = path.display();
        let text = match interpolate::interpolate(text, env) {
            Ok(t) => t,
            Err(errs) => {
                errors.extend(errs.into_iter().map(|e| format!("{name}: {e}")));
                continue;
            }
        };
        let table: toml::Table = match toml::from_str(&text) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{name}: {}", describe_toml_error(&e, &text)));
                continue;
            }
        };
        merge_file(&mut merged, table, path, &mut origin, &mut errors);
    }
    if !errors.is_empty() {
        return Err(ConfigError { errors });
    }
    Ok(compile(merged))
}

/// `toml`'s message names line and column; keep it to one readable line.
fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_string(),
    }
}

const SECTIONS: [ComponentClass; 3] = [
    ComponentClass::Source,
    ComponentClass::Transform,
    ComponentClass::Sink,
];

/// Merges one file into the topology: components by id, a component defined twice
/// is an error, as is a global set differently in two files.
fn merge_file(
    merged: &mut toml::Table,
    table: toml::Table,
    path: &Path,
    origin: &mut HashMap<String, PathBuf>,
    errors: &mut Vec<String>,
) {
    for (key, value) in table {
        let is_section = SECTIONS.iter().any(|c| c.section() == key);
        match (is_section, value) {
            (true, toml::Value::Table(components)) => {
                let section = merged
                    .entry(key.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .expect("sections are tables");
                for (id, body) in components {
                    let full = format!("{key}.{id}");
                    if section.contains_key(&id) {
                        errors.push(format!(
                            "{full}: defined in both {} and {}",
                            origin[&full].display(),
                            path.display()
                        ));
                        continue;
                    }
                    origin.insert(full, path.to_path_buf());
                    section.insert(id, body);
                }
            }
            (true, other) => errors.push(format!(
                "{}: {key}: expected a table of components, found {}",
                path.display(),
                other.type_str()
            )),
            (false, value) => match merged.get(&key) {
                Some(existing) if existing != &value => errors.push(format!(
                    "{key}: set differently in {} and {}",
                    origin[&key].display(),
                    path.display()
                )),
                Some(_) => {}
                None => {
                    origin.insert(key.clone(), path.to_path_buf());
                    merged.insert(key, value);
                }
            },
        }
    }
}

fn compile(mut merged: toml::Table) -> Parsed {
    let mut errors = Vec::new();
    let mut globals = GlobalOptions::default();
    let mut api = None;
    let mut channel_capacity = DEFAULT_CHANNEL_CAPACITY;
    let mut shutdown_timeout = DEFAULT_SHUTDOWN_TIMEOUT;

    let keys: Vec<String> = merged.keys().cloned().collect();
    for key in keys {
        if SECTIONS.iter().any(|c| c.section() == key) {
            continue;
        }
        let value = merged.remove(&key).expect("key listed");
        match key.as_str() {
            "data_dir" => match value.as_str() {
                Some(s) => globals.data_dir = PathBuf::from(s),
                None => errors.push(format!("data_dir: expected a path string, found {}", value.type_str())),
            },
            "channel_capacity" => match value.as_integer() {
                Some(n) if (1..=1_000_000).contains(&n) => channel_capacity = n as usize,
                _ => errors.push(format!(
                    "channel_capacity: expected an integer from 1 to 1000000, found {value}"
                )),
            },
            "shutdown_timeout" => match value.as_str().map(durations::parse) {
                Some(Ok(d)) => shutdown_timeout = d,
                Some(Err(e)) => errors.push(format!("shutdown_timeout: {e}")),
                None => errors.push(format!(
                    "shutdown_timeout: expected a duration string like \"30s\", found {}",
                    value.type_str()
                )),
            },
            "api" => match parse_api(value) {
                Ok(a) => api = a,
                Err(e) => errors.push(format!("api: {e}")),
            },
            other => errors.push(format!(
                "unknown top-level key \"{other}\"; expected one of data_dir, channel_capacity, shutdown_timeout, api, sources, transforms, sinks{}",
                suggest(other, &["data_dir", "channel_capacity", "shutdown_timeout", "api", "sources", "transforms", "sinks"])
                    .map(|s| format!("; did you mean \"{s}\"?"))
                    .unwrap_or_default()
            )),
        }
    }

    let mut nodes = Vec::new();
    let mut broken = Vec::new();
    for class in SECTIONS {
        let Some(section) = merged.remove(class.section()) else {
            continue;
        };
        let toml::Value::Table(section) = section else {
            continue;
        };
        for (id, body) in section {
            let key = ComponentKey {
                class,
                id: id.clone(),
            };
            match parse_node(key, body, &mut errors) {
                Some(node) => nodes.push(node),
                None => broken.push(id),
            }
        }
    }
    if nodes.iter().all(|n| n.key.class != ComponentClass::Source) && errors.is_empty() {
        errors.push("the topology has no sources; add a [sources.ID] table".into());
    }
    Parsed {
        topology: Topology {
            globals: Arc::new(globals),
            api,
            channel_capacity,
            shutdown_timeout,
            nodes,
            warnings: Vec::new(),
        },
        broken,
        errors,
    }
}

fn parse_api(value: toml::Value) -> Result<Option<ApiOptions>, String> {
    let toml::Value::Table(mut t) = value else {
        return Err("expected a table like [api] address = \"127.0.0.1:8686\"".into());
    };
    let enabled = match t.remove("enabled") {
        None => true,
        Some(toml::Value::Boolean(b)) => b,
        Some(other) => return Err(format!("enabled: expected true or false, found {other}")),
    };
    let address = match t.remove("address") {
        Some(toml::Value::String(s)) => s.parse::<SocketAddr>().map_err(|_| {
            format!("address: \"{s}\" is not an address; expected a form like \"127.0.0.1:8686\"")
        })?,
        Some(other) => {
            return Err(format!(
                "address: expected a string like \"127.0.0.1:8686\", found {other}"
            ))
        }
        None => "127.0.0.1:8686".parse().expect("valid default"),
    };
    let defaults = ApiLimits::default();
    let header_read_timeout = match t.remove("header_read_timeout") {
        None => defaults.header_read_timeout,
        Some(toml::Value::String(s)) => match kwpipe_components::durations::parse(&s) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => return Err("header_read_timeout: must be more than 0".into()),
            Err(e) => return Err(format!("header_read_timeout: {e}")),
        },
        Some(other) => {
            return Err(format!(
                "header_read_timeout: expected a duration like \"10s\", found {other}"
            ))
        }
    };
    let max_connections = match t.remove("max_connections") {
        None => defaults.max_connections,
        Some(toml::Value::Integer(n)) if (1..=100_000).contains(&n) => n as usize,
        Some(other) => {
            return Err(format!(
                "max_connections: expected an integer from 1 to 100000, found {other}"
            ))
        }
    };
    if let Some(k) = t.keys().next() {
        return Err(format!(
            "unknown key \"{k}\"; expected address, enabled, header_read_timeout or max_connections"
        ));
    }
    Ok(enabled.then_some(ApiOptions {
        address,
        limits: ApiLimits {
            header_read_timeout,
            max_connections,
        },
    }))
}

fn parse_node(key: ComponentKey, body: toml::Value, errors: &mut Vec<String>) -> Option<Node> {
    let toml::Value::Table(mut table) = body else {
        errors.push(format!(
            "{key}: expected a table, found {}",
            body.type_str()
        ));
        return None;
    };
    if let Err(e) = check_id(&key.id) {
        errors.push(format!("{key}: {e}"));
    }
    let type_name = match table.remove("type") {
        Some(toml::Value::String(t)) => Some(t),
        Some(other) => {
            errors.push(format!(
                "{key}: type: expected a string, found {}",
                other.type_str()
            ));
            None
        }
        None => {
            let known = registry::names(key.class).join(", ");
            errors.push(format!("{key}: missing \"type\"; one of {known}"));
            None
        }
    };
    let inputs = match (key.class, table.remove("inputs")) {
        (ComponentClass::Source, Some(_)) => {
            errors.push(format!("{key}: sources take no \"inputs\""));
            Vec::new()
        }
        (ComponentClass::Source, None) => Vec::new(),
        (_, None) => {
            errors.push(format!(
                "{key}: missing \"inputs\"; list the components it reads, e.g. inputs = [\"my_source\"]"
            ));
            Vec::new()
        }
        (_, Some(toml::Value::Array(items))) => {
            let mut inputs = Vec::new();
            for item in items {
                match item {
                    toml::Value::String(s) => inputs.push(OutputRef::parse(&s)),
                    other => errors.push(format!(
                        "{key}: inputs: expected strings, found {}",
                        other.type_str()
                    )),
                }
            }
            if inputs.is_empty() {
                errors.push(format!(
                    "{key}: \"inputs\" is empty; list at least one component"
                ));
            }
            inputs
        }
        (_, Some(other)) => {
            errors.push(format!(
                "{key}: inputs: expected a list like [\"my_source\"], found {}",
                other.type_str()
            ));
            Vec::new()
        }
    };
    let type_name = type_name?;
    match registry::parse(key.class, &type_name, table) {
        Ok(config) => {
            if let Err(e) = config.check() {
                errors.push(format!("{key}: {e}"));
            }
            Some(Node {
                key,
                type_name,
                inputs,
                config,
            })
        }
        Err(e) => {
            let suggestion = match &e {
                registry::RegistryError::UnknownType { .. } => {
                    suggest(&type_name, &registry::names(key.class))
                        .map(|s| format!("; did you mean \"{s}\"?"))
                        .unwrap_or_default()
                }
                _ => String::new(),
            };
            errors.push(format!("{key}: {e}{suggestion}"));
            None
        }
    }
}

/// Ids name metrics and outputs (`id.dropped`), so they keep to a plain alphabet.
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("empty id".into());
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "id \"{id}\" may only hold letters, digits, \"_\" and \"-\""
        ));
    }
    Ok(())
}
