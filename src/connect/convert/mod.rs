//! KaiwuDB Kafka Connector configs (the JSON posted to Kafka Connect's REST API)
//! turned into kwpipe topologies, so people migrating keep their files.
//!
//! A sink connector becomes `kafka` -> `decode` -> `batch` -> `kwdb`; a source
//! connector becomes `kwdb-poll` -> `encode` -> `kafka`. Every parameter of the
//! connector's tables maps to an option; anything else is an error naming it,
//! except where ignoring it is harmless (converters that pass strings through),
//! which is a warning.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value as Json;

use super::client;

pub const SINK_CLASS: &str = "com.kaiwudb.kafka.connect.sink.KwdbSinkConnector";
pub const SOURCE_CLASS: &str = "com.kaiwudb.kafka.connect.source.KwdbSourceConnector";

const FORMATS: [&str; 4] = [
    "json_kaiwudb",
    "json_opentsdb",
    "line_opentsdb",
    "line_influxdb",
];

/// Every connector parameter the converter reads, sink and source. Each has a row
/// in docs/migration.md's parameter table (a test holds the two together), and
/// reading one not listed here is a bug caught in debug builds: a parameter added
/// to the converter must be added to the table.
pub const PARAMETERS: &[&str] = &[
    "name",
    "connector.class",
    "tasks.max",
    "topics",
    "topics.regex",
    "connection.url",
    "connection.user",
    "connection.password",
    "connection.database",
    "connection.attempts",
    "connection.backoff.ms",
    "max.retries",
    "retry.backoff.ms",
    "batch.size",
    "protocol.type",
    "timestamp.precision",
    "topic.prefix",
    "topic.delimiter",
    "timestamp.initial",
    "poll.interval.ms",
    "fetch.max.rows",
    "query.interval.ms",
    "topic.per.stable",
    "topic.ignore.db",
    "out.format",
    "read.method",
    "key.converter",
    "value.converter",
    "errors.tolerance",
    "errors.deadletterqueue.topic.name",
    "errors.deadletterqueue.topic.replication.factor",
    "errors.deadletterqueue.context.headers.enable",
    "errors.log.enable",
    "errors.log.include.messages",
    // Any client setting of the connector's own consumer (sink) or producer
    // (source), over the worker's: see `client`.
    "consumer.override.*",
    "producer.override.*",
];

/// Converters that hand kwpipe the message bytes unchanged, as kwpipe reads them.
const PASS_THROUGH_CONVERTERS: [&str; 2] = [
    "org.apache.kafka.connect.storage.StringConverter",
    "org.apache.kafka.connect.converters.ByteArrayConverter",
];

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{file}: {}", .errors.join(&format!("\n{}: ", .file)))]
    Config { file: String, errors: Vec<String> },
}

/// The result of converting one connector config.
#[derive(Debug, Default)]
pub struct Converted {
    /// The TOML tables to merge into a topology, keyed by section then id.
    pub sections: BTreeMap<&'static str, BTreeMap<String, toml::Table>>,
    pub warnings: Vec<String>,
}

/// Options that do not come from the connector config itself.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Kafka Connect keeps the broker address in the worker config, so it comes
    /// from `--bootstrap-servers` or `KAFKA_BOOTSTRAP_SERVERS`; without either the
    /// topology refers to `${KAFKA_BOOTSTRAP_SERVERS}`.
    pub bootstrap_servers: Option<String>,
    /// The worker config's settings (`--worker-config`, `-X`): the clients'
    /// security, see [`client`].
    pub worker: BTreeMap<String, String>,
}

/// Reads a connector config file: `{"name":..,"config":{..}}` or a bare config.
pub fn convert_file(path: &Path, opts: &ConvertOptions) -> Result<Converted, ConvertError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConvertError::Invalid {
        file: file.clone(),
        message: format!("cannot read: {e}"),
    })?;
    convert_text(&file, &text, opts)
}

pub fn convert_text(
    file: &str,
    text: &str,
    opts: &ConvertOptions,
) -> Result<Converted, ConvertError> {
    let invalid = |message: String| ConvertError::Invalid {
        file: file.to_string(),
        message,
    };
    let json: Json = serde_json::from_str(text).map_err(|e| {
        invalid(format!(
            "not valid JSON: line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let Json::Object(mut top) = json else {
        return Err(invalid("expected a JSON object".into()));
    };
    // `{"name":..,"config":{..}}` as posted to Kafka Connect; `GET /connectors/NAME`
    // returns the same with "tasks" and "type" beside it, so those are accepted too.
    let (outer_name, config, kind) = match top.remove("config") {
        Some(Json::Object(config)) => {
            let name = match top.remove("name") {
                Some(Json::String(n)) => Some(n),
                None => None,
                Some(other) => {
                    return Err(invalid(format!(
                        "\"name\": expected a string, found {other}"
                    )))
                }
            };
            let kind = match top.remove("type") {
                None => None,
                Some(Json::String(t)) if t == "sink" || t == "source" => Some(t),
                Some(other) => {
                    return Err(invalid(format!(
                        "\"type\": expected \"sink\" or \"source\", found {other}"
                    )))
                }
            };
            top.remove("tasks");
            if let Some(k) = top.keys().next() {
                return Err(invalid(format!(
                    "unknown key \"{k}\" beside \"config\"; expected \"name\" (or \"tasks\" and \"type\", as Kafka Connect returns them)"
                )));
            }
            (name, config, kind)
        }
        Some(other) => {
            return Err(invalid(format!(
                "\"config\": expected an object, found {other}"
            )))
        }
        None => (None, top, None),
    };
    let mut params = Params::new(config);
    // Kafka Connect repeats the name inside "config" (`GET /connectors/NAME/config`).
    let inner_name = params.take_string("name");
    if let (Some(outer), Some(inner)) = (&outer_name, &inner_name) {
        if outer != inner {
            params.error(format!(
                "name: \"{inner}\" inside \"config\" differs from \"{outer}\" beside it"
            ));
        }
    }
    let name = outer_name.or(inner_name).unwrap_or_else(|| {
        Path::new(file)
            .file_stem()
            .map_or("connector".into(), |s| s.to_string_lossy().into_owned())
    });
    let id = sanitize_id(&name);
    let class = params.take_string("connector.class");
    let mut out = Converted::default();
    let class_kind = match class.as_deref() {
        Some(SINK_CLASS) => {
            sink(&id, &name, &mut params, opts, &mut out);
            Some("sink")
        }
        Some(SOURCE_CLASS) => {
            source(&id, &mut params, opts, &mut out);
            Some("source")
        }
        Some(other) => {
            params.error(format!(
                "connector.class: \"{other}\" is not a KaiwuDB connector; expected {SINK_CLASS} or {SOURCE_CLASS}"
            ));
            None
        }
        None => {
            params.error(format!(
                "connector.class: missing; expected {SINK_CLASS} or {SOURCE_CLASS}"
            ));
            None
        }
    };
    match (class_kind, kind.as_deref()) {
        (Some(c), Some(k)) if c != k => params.error(format!(
            "type: \"{k}\" does not match connector.class, a {c} connector"
        )),
        // Without a known class the other parameters cannot be judged: say only that.
        (None, _) => params.map.clear(),
        _ => {}
    }
    params.converters(&mut out.warnings);
    for w in &mut out.warnings {
        *w = format!("{file}: {w}");
    }
    params.finish(file, out)
}

fn sink(id: &str, name: &str, p: &mut Params, opts: &ConvertOptions, out: &mut Converted) {
    let tasks = p.take_tasks();
    let topics = p.take_string("topics");
    let topics_regex = p.take_string("topics.regex");
    let format = p.take_format("protocol.type", true);
    let precision = p.take_precision("timestamp.precision", format.as_deref());
    let batch_size = p.take_positive("batch.size");

    let mut source = toml::Table::new();
    source.insert("type".into(), "kafka".into());
    source.insert("bootstrap_servers".into(), bootstrap(opts).into());
    // Kafka Connect names a sink connector's consumer group `connect-<name>`;
    // keeping it lets kwpipe resume from the offsets the connector committed.
    source.insert("group_id".into(), format!("connect-{name}").into());
    match (topics, topics_regex) {
        (Some(t), None) => {
            let list: Vec<toml::Value> = t
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect();
            if list.is_empty() {
                p.error("topics: empty; list at least one topic".into());
            }
            source.insert("topics".into(), toml::Value::Array(list));
        }
        (None, Some(r)) => {
            let r = if r.starts_with('^') {
                r
            } else {
                format!("^{r}")
            };
            source.insert("topics".into(), toml::Value::Array(vec![r.into()]));
        }
        (Some(_), Some(_)) => p.error("topics and topics.regex: set only one".into()),
        (None, None) => p.error("topics: missing; the topics to consume, comma-separated".into()),
    }
    source.insert("concurrency".into(), toml::Value::Integer(tasks));
    p.client(client::Role::Consumer, opts, &mut source);

    let mut decode = toml::Table::new();
    decode.insert("type".into(), "decode".into());
    decode.insert("inputs".into(), inputs(&format!("{id}_kafka")));
    if let Some(f) = &format {
        decode.insert("format".into(), f.clone().into());
    }
    if let Some(pr) = &precision {
        decode.insert("timestamp_precision".into(), pr.clone().into());
    }

    let mut batch = toml::Table::new();
    batch.insert("type".into(), "batch".into());
    batch.insert("inputs".into(), inputs(&format!("{id}_decode")));
    batch.insert(
        "max_rows".into(),
        toml::Value::Integer(batch_size.unwrap_or(1000)),
    );

    let mut kwdb = toml::Table::new();
    kwdb.insert("type".into(), "kwdb".into());
    kwdb.insert("inputs".into(), inputs(&format!("{id}_batch")));
    p.connection(&mut kwdb);
    if !kwdb.contains_key("database") {
        // The connector cannot start without it either; say so before anything runs.
        p.error("connection.database: missing; the KWDB database to write into".into());
    }
    if let Some(n) = p.take_nonnegative("max.retries") {
        kwdb.insert("max_retries".into(), toml::Value::Integer(n));
    }
    if let Some(ms) = p.take_nonnegative("retry.backoff.ms") {
        kwdb.insert("retry_backoff".into(), format!("{ms}ms").into());
    }
    if let Some(n) = batch_size {
        kwdb.insert("batch_size".into(), toml::Value::Integer(n));
    }
    kwdb.insert("concurrency".into(), toml::Value::Integer(tasks));
    if format.as_deref() == Some("line_influxdb") {
        // The connector never creates tables for line protocol: it carries no types.
        kwdb.insert("auto_create".into(), "never".into());
    }

    out.add("sources", format!("{id}_kafka"), source);
    out.add("transforms", format!("{id}_decode"), decode);
    out.add("transforms", format!("{id}_batch"), batch);
    out.add("sinks", format!("{id}_kwdb"), kwdb);
    error_handling(id, &format!("{id}_kafka"), "decode", p, opts, out);
}

fn source(id: &str, p: &mut Params, opts: &ConvertOptions, out: &mut Converted) {
    let tasks = p.take_tasks();
    let mut poll = toml::Table::new();
    poll.insert("type".into(), "kwdb-poll".into());
    p.connection(&mut poll);
    let database = poll
        .get("database")
        .and_then(|d| d.as_str())
        .map(str::to_string);
    if database.is_none() {
        p.error("connection.database: missing; the time-series database to export".into());
    }
    if let Some(ms) = p.take_positive("poll.interval.ms") {
        poll.insert("discover_interval".into(), format!("{ms}ms").into());
    }
    if let Some(ms) = p.take_positive("query.interval.ms") {
        poll.insert("query_interval".into(), format!("{ms}ms").into());
    }
    if let Some(n) = p.take_positive("fetch.max.rows") {
        poll.insert("fetch_max_rows".into(), toml::Value::Integer(n));
    }
    if let Some(t) = p.take_string("timestamp.initial") {
        start_at(&t, p, &mut out.warnings);
        poll.insert("start_at".into(), t.into());
    }
    poll.insert("concurrency".into(), toml::Value::Integer(tasks));
    match p.take_string("read.method").as_deref() {
        None | Some("query") => {}
        Some(other) => p.error(format!(
            "read.method: \"{other}\" is not supported; the connector and kwpipe only know \"query\""
        )),
    }

    let format = p
        .take_format("out.format", false)
        .unwrap_or_else(|| "json_kaiwudb".into());
    // Not a parameter of the connector's source (it wrote ms): kwpipe's way to
    // export µs/ns columns as numbers. json_kaiwudb keeps finer digits as text
    // without it; the line formats need it for them.
    let precision = p.take_precision("timestamp.precision", Some(format.as_str()));
    let mut encode = toml::Table::new();
    encode.insert("type".into(), "encode".into());
    encode.insert("inputs".into(), inputs(id));
    encode.insert("format".into(), format.clone().into());
    if let Some(pr) = precision {
        encode.insert("timestamp_precision".into(), pr.into());
    }
    if matches!(format.as_str(), "line_influxdb" | "line_opentsdb") {
        // The connector writes one record per line, one line per message.
        encode.insert("message_per_line".into(), true.into());
    }

    let prefix = p.take_string("topic.prefix");
    let delimiter = p
        .take_string("topic.delimiter")
        .unwrap_or_else(|| "-".into());
    let per_table = p.take_bool("topic.per.stable").unwrap_or(true);
    let ignore_db = p.take_bool("topic.ignore.db").unwrap_or(false);
    let mut parts: Vec<String> = Vec::new();
    if let Some(prefix) = prefix.filter(|s| !s.is_empty()) {
        parts.push(escape_template(&prefix));
    }
    if !ignore_db {
        parts.push("{database}".into());
    }
    if per_table {
        parts.push("{table}".into());
    }
    if parts.is_empty() {
        p.error("topic.per.stable=false with topic.ignore.db=true and no topic.prefix leaves no topic name".into());
    }
    let topic = parts.join(&escape_template(&delimiter));

    let mut kafka = toml::Table::new();
    kafka.insert("type".into(), "kafka".into());
    kafka.insert("inputs".into(), inputs(&format!("{id}_encode")));
    kafka.insert("bootstrap_servers".into(), bootstrap(opts).into());
    kafka.insert("topic".into(), topic.into());
    p.client(client::Role::Producer, opts, &mut kafka);

    out.add("sources", id.to_string(), poll);
    out.add("transforms", format!("{id}_encode"), encode);
    out.add("sinks", format!("{id}_kafka"), kafka);
    error_handling(id, id, "encode", p, opts, out);
}

/// Connect's `errors.*`: what becomes of a record that cannot be converted or
/// written, set on the components already added. `errors.tolerance` sets the
/// source's `on_reject` (`none`, Connect's
/// default: stop there, keep the position; `all`: skip, count, log); with `all`, a
/// dead-letter topic gets what `rejecter` (the decode or encode transform) rejects,
/// through a `kafka` sink of its own reading `rejecter`'s `dropped` output.
fn error_handling(
    id: &str,
    source: &str,
    rejecter: &str,
    p: &mut Params,
    opts: &ConvertOptions,
    out: &mut Converted,
) {
    let tolerance = match p.take_string("errors.tolerance").as_deref() {
        None | Some("none") => "none",
        Some("all") => "all",
        Some(other) => {
            p.error(format!(
                "errors.tolerance: \"{other}\" is not allowed; expected none or all"
            ));
            "none"
        }
    };
    let on_reject = if tolerance == "all" { "skip" } else { "stop" };
    out.set("sources", source, "on_reject", on_reject.into());
    // kwpipe always logs a rejected record with its reason and origin (never
    // silently), so errors.log.enable changes nothing; the record's content only
    // on request.
    p.take_bool("errors.log.enable");
    if p.take_bool("errors.log.include.messages") == Some(true) {
        if rejecter == "decode" {
            out.set(
                "transforms",
                &format!("{id}_decode"),
                "log_records",
                true.into(),
            );
        } else {
            out.warnings.push(
                "errors.log.include.messages: a source connector logs rejected rows with their reason only".into(),
            );
        }
    }
    // kwpipe always adds its own context headers (kwpipe.error, kwpipe.topic,
    // kwpipe.partition, kwpipe.offset); Connect's are added on request.
    let connect_headers = p
        .take_bool("errors.deadletterqueue.context.headers.enable")
        .unwrap_or(false);
    if let Some(n) = p.take_positive("errors.deadletterqueue.topic.replication.factor") {
        out.warnings.push(format!(
            "errors.deadletterqueue.topic.replication.factor: {n} ignored; kwpipe does not create topics (the broker's auto.create.topics.enable and default.replication.factor apply)"
        ));
    }
    let Some(topic) = p
        .take_string("errors.deadletterqueue.topic.name")
        .filter(|t| !t.trim().is_empty())
    else {
        return;
    };
    if tolerance == "none" {
        // As in Connect: with tolerance none the task stops at the first error and
        // the dead-letter queue is never written.
        out.warnings.push(format!(
            "errors.deadletterqueue.topic.name: \"{topic}\" unused with errors.tolerance=none (as in Kafka Connect); set errors.tolerance=all to dead-letter rejected records"
        ));
        return;
    }
    if connect_headers {
        if rejecter == "decode" {
            out.set(
                "transforms",
                &format!("{id}_decode"),
                "connect_error_headers",
                true.into(),
            );
        } else {
            out.warnings.push(
                "errors.deadletterqueue.context.headers.enable: a source connector's dead letters carry kwpipe's headers only (Connect has no dead-letter queue for source connectors)".into(),
            );
        }
    }
    let mut dlq = toml::Table::new();
    dlq.insert("type".into(), "kafka".into());
    dlq.insert(
        "inputs".into(),
        inputs(&format!(
            "{id}_{rejecter}.{}",
            kwpipe_components::api::DROPPED_OUTPUT
        )),
    );
    dlq.insert("bootstrap_servers".into(), bootstrap(opts).into());
    dlq.insert("topic".into(), escape_template(&topic).into());
    out.add("sinks", format!("{id}_dead_letter"), dlq);
}

/// Braces in literal topic parts must not read as template fields.
fn escape_template(s: &str) -> String {
    s.replace('{', "{{").replace('}', "}}")
}

/// `timestamp.initial`, checked as kwdb-poll will read it (a real date and time,
/// not only its shape). Without an offset it is UTC in kwpipe; the connector read
/// it in the JVM's time zone, so that is said (issue 18, item 8).
fn start_at(t: &str, p: &mut Params, warnings: &mut Vec<String>) {
    if kwpipe_components::sources::kwdb_poll::parse_start_at(t).is_err() {
        p.error(format!(
            "timestamp.initial: \"{t}\" is not a time; expected yyyy-MM-dd HH:mm:ss"
        ));
        return;
    }
    let tail = t.trim().get(19..).unwrap_or("");
    let has_offset = tail.ends_with('Z') || tail.contains('+') || tail.contains('-');
    if !has_offset {
        warnings.push(format!(
            "timestamp.initial: \"{t}\" is read as UTC; the connector read it in the JVM's time zone: append that zone's offset (\"{t}+08:00\") if it was not UTC"
        ));
    }
}

fn bootstrap(opts: &ConvertOptions) -> String {
    opts.bootstrap_servers
        .clone()
        .unwrap_or_else(|| "${KAFKA_BOOTSTRAP_SERVERS}".into())
}

fn inputs(id: &str) -> toml::Value {
    toml::Value::Array(vec![toml::Value::String(id.to_string())])
}

/// Component ids keep to letters, digits, `_` and `-`.
fn sanitize_id(name: &str) -> String {
    let id: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if id.is_empty() {
        "connector".into()
    } else {
        id
    }
}

impl Converted {
    fn add(&mut self, section: &'static str, id: String, table: toml::Table) {
        self.sections.entry(section).or_default().insert(id, table);
    }

    /// Sets one option of a component added before.
    fn set(&mut self, section: &'static str, id: &str, key: &str, value: toml::Value) {
        if let Some(t) = self.sections.get_mut(section).and_then(|s| s.get_mut(id)) {
            t.insert(key.to_string(), value);
        }
    }

    /// Merges another connector's components (ids are distinct by construction
    /// unless two configs share a name, which is reported).
    pub fn merge(&mut self, other: Converted) -> Result<(), String> {
        for (section, tables) in other.sections {
            let mine = self.sections.entry(section).or_default();
            for (id, t) in tables {
                if mine.contains_key(&id) {
                    return Err(format!(
                        "{section}.{id}: two connector configs share the name behind this id"
                    ));
                }
                mine.insert(id, t);
            }
        }
        self.warnings.extend(other.warnings);
        Ok(())
    }

    /// The topology as TOML text.
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# Converted from KaiwuDB Kafka Connector configs by `kwpipe connect convert`.\n",
        );
        for section in ["sources", "transforms", "sinks"] {
            let Some(tables) = self.sections.get(section) else {
                continue;
            };
            for (id, table) in tables {
                let _ = writeln!(out, "\n[{section}.{id}]");
                // `type` and `inputs` first, as people write them.
                for key in ["type", "inputs"] {
                    if let Some(v) = table.get(key) {
                        let _ = writeln!(out, "{key} = {}", escape_dollars(v));
                    }
                }
                for (key, v) in table {
                    if key != "type" && key != "inputs" {
                        let _ = writeln!(out, "{key} = {}", escape_dollars(v));
                    }
                }
            }
        }
        out
    }
}

/// A `$` in a connector value is meant literally; in a topology it would start a
/// `${VAR}`. Only the bootstrap placeholder kwpipe itself writes stays live.
fn escape_dollars(v: &toml::Value) -> toml::Value {
    match v {
        toml::Value::String(s) if s != "${KAFKA_BOOTSTRAP_SERVERS}" => {
            toml::Value::String(s.replace('$', "$$"))
        }
        toml::Value::Array(a) => toml::Value::Array(a.iter().map(escape_dollars).collect()),
        other => other.clone(),
    }
}

/// Every parameter read is in `PARAMETERS`, and so in docs/migration.md's table.
fn listed(key: &str) {
    debug_assert!(
        PARAMETERS.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => *p == key,
        }),
        "connect: \"{key}\" is read but not in PARAMETERS (and docs/migration.md's parameter table)"
    );
}

/// Whether a parameter holds a secret: its value is never shown in a message,
/// whatever its type (a password given as `["SECRET"]` was echoed back).
fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "token",
        "credential",
        "private",
    ]
    .iter()
    .any(|w| k.contains(w))
        || k.ends_with(".key")
}

/// A parameter's value for a message: itself, or only its kind for a secret.
fn shown(key: &str, value: &Json) -> String {
    if !is_secret(key) {
        return value.to_string();
    }
    let kind = match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    };
    format!("{kind} (its value is not shown: {key} holds a secret)")
}

/// A URL with the password of its `user:password@` (and of `password=`
/// parameters) replaced by `***`, for messages.
fn without_password(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme) = out.find("://") {
        let rest = scheme + 3;
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let at = rest + at;
            if let Some(colon) = out[rest..at].find(':') {
                out.replace_range(rest + colon + 1..at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if is_secret(k) => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// The connector's parameters, taken one by one so what is left over is unknown.
struct Params {
    map: serde_json::Map<String, Json>,
    errors: Vec<String>,
}

impl Params {
    fn new(map: serde_json::Map<String, Json>) -> Self {
        Params {
            map,
            errors: Vec::new(),
        }
    }

    fn error(&mut self, message: String) {
        self.errors.push(message);
    }

    /// Connect accepts numbers and booleans written as strings; so do we.
    fn take_string(&mut self, key: &str) -> Option<String> {
        listed(key);
        match self.map.remove(key)? {
            Json::String(s) => Some(s),
            Json::Number(n) => Some(n.to_string()),
            Json::Bool(b) => Some(b.to_string()),
            Json::Null => None,
            other => {
                self.error(format!(
                    "{key}: expected a string, found {}",
                    shown(key, &other)
                ));
                None
            }
        }
    }

    fn take_int(&mut self, key: &str) -> Option<i64> {
        listed(key);
        let v = self.map.get(key)?.clone();
        let text = self.take_string(key)?;
        match text.trim().parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(format!(
                    "{key}: expected an integer, found {}",
                    shown(key, &v)
                ));
                None
            }
        }
    }

    fn take_positive(&mut self, key: &str) -> Option<i64> {
        let n = self.take_int(key)?;
        if n < 1 {
            self.error(format!(
                "{key}: {n} is not allowed; expected a positive integer"
            ));
            return None;
        }
        Some(n)
    }

    /// `tasks.max`: Connect runs that many tasks; kwpipe runs that many consumers
    /// or connections, up to 256 (what its components accept).
    fn take_tasks(&mut self) -> i64 {
        match self.take_positive("tasks.max") {
            Some(n) if n > 256 => {
                self.error(format!(
                    "tasks.max: {n} is not allowed; kwpipe runs at most 256 tasks"
                ));
                1
            }
            Some(n) => n,
            None => 1,
        }
    }

    fn take_nonnegative(&mut self, key: &str) -> Option<i64> {
        let n = self.take_int(key)?;
        if n < 0 {
            self.error(format!("{key}: {n} is not allowed; expected 0 or more"));
            return None;
        }
        Some(n)
    }

    fn take_bool(&mut self, key: &str) -> Option<bool> {
        let text = self.take_string(key)?;
        match text.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.error(format!(
                    "{key}: \"{text}\" is not a boolean; expected true or false"
                ));
                None
            }
        }
    }

    fn take_format(&mut self, key: &str, required: bool) -> Option<String> {
        match self.take_string(key) {
            Some(f) if FORMATS.contains(&f.as_str()) => Some(f),
            Some(f) => {
                self.error(format!(
                    "{key}: unknown format \"{f}\"; expected one of {}",
                    FORMATS.join(", ")
                ));
                None
            }
            None => {
                if required {
                    self.error(format!("{key}: missing; one of {}", FORMATS.join(", ")));
                }
                None
            }
        }
    }

    /// The precisions the connector allows per format.
    fn take_precision(&mut self, key: &str, format: Option<&str>) -> Option<String> {
        let p = self.take_string(key)?;
        let allowed: &[&str] = match format {
            Some("json_opentsdb") | Some("line_opentsdb") => &["s", "ms"],
            Some("json_kaiwudb") | Some("line_influxdb") => &["ms", "us", "ns"],
            _ => &["s", "ms", "us", "ns"],
        };
        if allowed.contains(&p.as_str()) {
            Some(p)
        } else {
            self.error(format!(
                "{key}: \"{p}\" is not allowed{}; expected one of {}",
                format.map(|f| format!(" for {f}")).unwrap_or_default(),
                allowed.join(", ")
            ));
            None
        }
    }

    /// `connection.*` into the `kwdb` connection options.
    fn connection(&mut self, t: &mut toml::Table) {
        match self.take_string("connection.url") {
            Some(url) => {
                if !(url.starts_with("jdbc:kaiwudb://")
                    || url.starts_with("jdbc:postgresql://")
                    || url.starts_with("postgresql://")
                    || url.starts_with("postgres://"))
                {
                    self.error(format!(
                        "connection.url: \"{}\" is not a KWDB URL; expected jdbc:kaiwudb://host:port[/db]",
                        without_password(&url)
                    ));
                }
                t.insert("url".into(), url.into());
            }
            None => {
                self.error("connection.url: missing; e.g. jdbc:kaiwudb://localhost:26257".into())
            }
        }
        if let Some(u) = self.take_string("connection.user") {
            t.insert("user".into(), u.into());
        }
        if let Some(pw) = self.take_string("connection.password") {
            t.insert("password".into(), pw.into());
        }
        if let Some(db) = self.take_string("connection.database") {
            t.insert("database".into(), db.into());
        }
        if let Some(n) = self.take_positive("connection.attempts") {
            t.insert("connection_attempts".into(), toml::Value::Integer(n));
        }
        if let Some(ms) = self.take_nonnegative("connection.backoff.ms") {
            t.insert("connection_backoff".into(), format!("{ms}ms").into());
        }
    }

    /// The Kafka client's settings: the worker's, then the connector's
    /// `consumer.override.*` / `producer.override.*`.
    fn client(&mut self, role: client::Role, opts: &ConvertOptions, table: &mut toml::Table) {
        let prefix = match role {
            client::Role::Consumer => "consumer.override.",
            client::Role::Producer => "producer.override.",
        };
        let keys: Vec<String> = self
            .map
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        let mut overrides = BTreeMap::new();
        for k in keys {
            if let Some(v) = self.take_string(&k) {
                overrides.insert(k[prefix.len()..].to_string(), v);
            }
        }
        let settings = client::layered(role, &opts.worker, &overrides);
        client::apply(&settings, table, &mut self.errors);
    }

    fn converters(&mut self, warnings: &mut Vec<String>) {
        for key in ["key.converter", "value.converter"] {
            match self.take_string(key) {
                Some(c) if PASS_THROUGH_CONVERTERS.contains(&c.as_str()) => warnings.push(format!(
                    "{key}: ignored; kwpipe reads message bytes as they are, as {c} does"
                )),
                Some(c) => self.error(format!(
                    "{key}: \"{c}\" is not supported; kwpipe reads message bytes as they are (StringConverter)"
                )),
                None => {}
            }
        }
        let converter_options: Vec<String> = self
            .map
            .keys()
            .filter(|k| k.starts_with("key.converter.") || k.starts_with("value.converter."))
            .cloned()
            .collect();
        for k in converter_options {
            self.map.remove(&k);
            warnings.push(format!("{k}: ignored with the converter"));
        }
    }

    fn finish(mut self, file: &str, out: Converted) -> Result<Converted, ConvertError> {
        let leftover: Vec<String> = self.map.keys().cloned().collect();
        for k in leftover {
            self.errors
                .push(format!("{k}: unknown or unsupported parameter"));
        }
        if self.errors.is_empty() {
            Ok(out)
        } else {
            Err(ConvertError::Config {
                file: file.to_string(),
                errors: self.errors,
            })
        }
    }
}

#[cfg(test)]
mod secret_tests;
#[cfg(test)]
mod tests;
