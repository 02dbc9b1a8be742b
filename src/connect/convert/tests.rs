use super::*;

fn seed(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/data/connect/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn opts() -> ConvertOptions {
    ConvertOptions {
        bootstrap_servers: Some("127.0.0.1:9092".into()),
        ..Default::default()
    }
}

fn convert(text: &str) -> Result<Converted, ConvertError> {
    convert_text("c.json", text, &opts())
}

fn errors(text: &str) -> Vec<String> {
    match convert(text).unwrap_err() {
        ConvertError::Config { errors, .. } => errors,
        ConvertError::Invalid { message, .. } => vec![message],
    }
}

fn table<'a>(c: &'a Converted, section: &str, id: &str) -> &'a toml::Table {
    &c.sections[section][id]
}

#[test]
fn the_seed_sink_config_carries_every_value() {
    let c = convert(&seed("kw-json-kaiwudb-sink.json")).unwrap();
    let src = table(&c, "sources", "KwdbSinkConnector_kafka");
    assert_eq!(src["type"].as_str(), Some("kafka"));
    assert_eq!(src["bootstrap_servers"].as_str(), Some("127.0.0.1:9092"));
    assert_eq!(src["group_id"].as_str(), Some("connect-KwdbSinkConnector"));
    assert_eq!(
        src["topics"].as_array().unwrap()[0].as_str(),
        Some("kw-tsdb-json_kaiwudb_with_tag_tb")
    );
    assert_eq!(src["concurrency"].as_integer(), Some(5));

    let decode = table(&c, "transforms", "KwdbSinkConnector_decode");
    assert_eq!(decode["format"].as_str(), Some("json_kaiwudb"));
    assert_eq!(decode["timestamp_precision"].as_str(), Some("ms"));
    assert_eq!(
        decode["inputs"].as_array().unwrap()[0].as_str(),
        Some("KwdbSinkConnector_kafka")
    );

    let batch = table(&c, "transforms", "KwdbSinkConnector_batch");
    assert_eq!(batch["max_rows"].as_integer(), Some(1000));

    let sink = table(&c, "sinks", "KwdbSinkConnector_kwdb");
    assert_eq!(sink["url"].as_str(), Some("jdbc:kaiwudb://localhost:26257"));
    assert_eq!(sink["user"].as_str(), Some("test"));
    assert_eq!(sink["password"].as_str(), Some("<password>"));
    assert_eq!(sink["database"].as_str(), Some("tsdb"));
    assert_eq!(sink["connection_attempts"].as_integer(), Some(3));
    assert_eq!(sink["connection_backoff"].as_str(), Some("5000ms"));
    assert_eq!(sink["max_retries"].as_integer(), Some(3));
    assert_eq!(sink["retry_backoff"].as_str(), Some("3000ms"));
    assert_eq!(sink["batch_size"].as_integer(), Some(1000));
    assert_eq!(sink["concurrency"].as_integer(), Some(5));
    assert_eq!(
        sink["inputs"].as_array().unwrap()[0].as_str(),
        Some("KwdbSinkConnector_batch")
    );

    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(
        c.warnings[0].starts_with("c.json: key.converter: ignored"),
        "{:?}",
        c.warnings
    );
}

#[test]
fn the_seed_source_config_carries_every_value() {
    let c = convert(&seed("kw-json-kaiwudb-source.json")).unwrap();
    let poll = table(&c, "sources", "KwdbSourceConnector");
    assert_eq!(poll["type"].as_str(), Some("kwdb-poll"));
    assert_eq!(poll["url"].as_str(), Some("jdbc:kaiwudb://localhost:26257"));
    assert_eq!(poll["user"].as_str(), Some("test"));
    assert_eq!(poll["password"].as_str(), Some("<password>"));
    assert_eq!(poll["database"].as_str(), Some("benchmark"));
    assert_eq!(poll["connection_attempts"].as_integer(), Some(3));
    assert_eq!(poll["connection_backoff"].as_str(), Some("5000ms"));
    assert_eq!(poll["discover_interval"].as_str(), Some("5000ms"));
    assert_eq!(poll["query_interval"].as_str(), Some("1000ms"));
    assert_eq!(poll["fetch_max_rows"].as_integer(), Some(100));
    assert_eq!(poll["concurrency"].as_integer(), Some(1));

    let encode = table(&c, "transforms", "KwdbSourceConnector_encode");
    assert_eq!(encode["format"].as_str(), Some("json_kaiwudb"));

    let kafka = table(&c, "sinks", "KwdbSourceConnector_kafka");
    assert_eq!(kafka["topic"].as_str(), Some("kw-{database}-{table}"));
    assert_eq!(kafka["bootstrap_servers"].as_str(), Some("127.0.0.1:9092"));
}

#[test]
fn topic_naming_follows_the_connector_switches() {
    let base = r#"{"connector.class":"com.kaiwudb.kafka.connect.source.KwdbSourceConnector","connection.url":"jdbc:kaiwudb://h:26257","connection.database":"db""#;
    let topic = |extra: &str| {
        let c = convert(&format!("{base}{extra}}}")).unwrap();
        c.sections["sinks"]["c_kafka"]["topic"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(topic(""), "{database}-{table}");
    assert_eq!(
        topic(r#","topic.prefix":"kw","topic.delimiter":"_""#),
        "kw_{database}_{table}"
    );
    assert_eq!(
        topic(r#","topic.prefix":"kw","topic.ignore.db":"true""#),
        "kw-{table}"
    );
    assert_eq!(
        topic(r#","topic.prefix":"kw","topic.per.stable":false"#),
        "kw-{database}"
    );
    assert_eq!(
        topic(r#","topic.prefix":"a{b}""#),
        "a{{b}}-{database}-{table}"
    );
}

#[test]
fn a_bare_config_object_is_accepted() {
    let c = convert(r#"{"name":"s","connector.class":"com.kaiwudb.kafka.connect.sink.KwdbSinkConnector","topics":"a, b","connection.url":"jdbc:kaiwudb://h:26257","connection.database":"d","protocol.type":"line_influxdb"}"#).unwrap();
    let src = table(&c, "sources", "s_kafka");
    let topics: Vec<&str> = src["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(topics, vec!["a", "b"]);
    assert_eq!(
        table(&c, "sinks", "s_kwdb")["auto_create"].as_str(),
        Some("never")
    );
}

#[test]
fn impossible_values_and_unknown_keys_are_errors_naming_them() {
    let errs = errors(
        r#"{"name":"x","config":{"connector.class":"com.kaiwudb.kafka.connect.sink.KwdbSinkConnector","tasks.max":"0","topics":"t","connection.url":"jdbc:kaiwudb://h:1","protocol.type":"csv","batch.size":"many","errors.tolerance":"some","value.converter":"io.confluent.connect.avro.AvroConverter"}}"#,
    );
    assert_eq!(
        errs,
        vec![
            "tasks.max: 0 is not allowed; expected a positive integer",
            "protocol.type: unknown format \"csv\"; expected one of json_kaiwudb, json_opentsdb, line_opentsdb, line_influxdb",
            "batch.size: expected an integer, found \"many\"",
            "connection.database: missing; the KWDB database to write into",
            "errors.tolerance: \"some\" is not allowed; expected none or all",
            "value.converter: \"io.confluent.connect.avro.AvroConverter\" is not supported; kwpipe reads message bytes as they are (StringConverter)",
        ]
    );
}

#[test]
fn precision_must_suit_the_format() {
    let errs = errors(
        r#"{"connector.class":"com.kaiwudb.kafka.connect.sink.KwdbSinkConnector","topics":"t","connection.url":"jdbc:kaiwudb://h:1","connection.database":"d","protocol.type":"json_opentsdb","timestamp.precision":"ns"}"#,
    );
    assert_eq!(
        errs,
        vec!["timestamp.precision: \"ns\" is not allowed for json_opentsdb; expected one of s, ms"]
    );
}

#[test]
fn wrong_class_and_bad_json_are_errors() {
    assert_eq!(
        errors(r#"{"connector.class":"io.confluent.connect.jdbc.JdbcSinkConnector"}"#),
        vec![format!("connector.class: \"io.confluent.connect.jdbc.JdbcSinkConnector\" is not a KaiwuDB connector; expected {SINK_CLASS} or {SOURCE_CLASS}")]
    );
    let e = convert("{nope").unwrap_err().to_string();
    assert!(
        e.starts_with("c.json: not valid JSON: line 1, column 2"),
        "{e}"
    );
    assert_eq!(
        errors(r#"{"connector.class":"com.kaiwudb.kafka.connect.source.KwdbSourceConnector","connection.url":"jdbc:kaiwudb://h:1","connection.database":"d","read.method":"stream","timestamp.initial":"yesterday"}"#),
        vec![
            "timestamp.initial: \"yesterday\" is not a time; expected yyyy-MM-dd HH:mm:ss",
            "read.method: \"stream\" is not supported; the connector and kwpipe only know \"query\"",
        ]
    );
}

#[test]
fn the_toml_output_parses_back_to_the_same_tables() {
    let c = convert(&seed("kw-json-kaiwudb-sink.json")).unwrap();
    let text = c.to_toml();
    let parsed: toml::Table = toml::from_str(&text).unwrap();
    let sink = &parsed["sinks"]["KwdbSinkConnector_kwdb"];
    assert_eq!(
        sink.as_table().unwrap(),
        table(&c, "sinks", "KwdbSinkConnector_kwdb")
    );
    assert!(text.contains("[sinks.KwdbSinkConnector_kwdb]\ntype = \"kwdb\"\ninputs = [\"KwdbSinkConnector_batch\"]\n"), "{text}");
}

#[test]
fn what_kafka_connect_returns_for_a_connector_is_accepted() {
    // `GET /connectors/NAME`: the name again inside "config", plus "tasks" and "type".
    let c = convert(r#"{"name":"s","config":{"name":"s","connector.class":"com.kaiwudb.kafka.connect.sink.KwdbSinkConnector","topics":"t","connection.url":"jdbc:kaiwudb://h:26257","connection.database":"d","protocol.type":"json_kaiwudb"},"tasks":[{"connector":"s","task":0}],"type":"sink"}"#).unwrap();
    assert_eq!(
        table(&c, "sources", "s_kafka")["group_id"].as_str(),
        Some("connect-s")
    );
    assert_eq!(
        errors(
            r#"{"name":"s","config":{"name":"t","connector.class":"com.kaiwudb.kafka.connect.sink.KwdbSinkConnector","topics":"t","connection.url":"jdbc:kaiwudb://h:26257","connection.database":"d","protocol.type":"json_kaiwudb"},"type":"source"}"#
        ),
        vec![
            "name: \"t\" inside \"config\" differs from \"s\" beside it",
            "type: \"source\" does not match connector.class, a sink connector",
        ]
    );
}

#[test]
fn without_a_known_class_only_the_class_is_reported() {
    assert_eq!(
        errors(r#"{"topics":"t","whatever":1}"#),
        vec![format!(
            "connector.class: missing; expected {SINK_CLASS} or {SOURCE_CLASS}"
        )]
    );
}

const SINK: &str = r#""connector.class":"com.kaiwudb.kafka.connect.sink.KwdbSinkConnector","topics":"t","connection.url":"jdbc:kaiwudb://h:26257","connection.database":"d","protocol.type":"json_kaiwudb""#;
const SOURCE: &str = r#""connector.class":"com.kaiwudb.kafka.connect.source.KwdbSourceConnector","connection.url":"jdbc:kaiwudb://h:26257","connection.database":"d""#;

/// Issue 18, item 2: Connect's `errors.*` are mapped, and the default
/// (`errors.tolerance = none`) holds the position instead of skipping.
#[test]
fn errors_tolerance_and_the_dead_letter_queue_are_mapped() {
    let c = convert(&format!("{{{SINK}}}")).unwrap();
    assert_eq!(
        table(&c, "sources", "c_kafka")["on_reject"].as_str(),
        Some("stop")
    );
    assert!(!c.sections["sinks"].contains_key("c_dead_letter"));

    let c = convert(&format!(
        r#"{{{SINK},"errors.tolerance":"all","errors.deadletterqueue.topic.name":"dlq-{{x}}","errors.deadletterqueue.context.headers.enable":"true","errors.deadletterqueue.topic.replication.factor":"1","errors.log.enable":true,"errors.log.include.messages":"false"}}"#
    ))
    .unwrap();
    assert_eq!(
        table(&c, "sources", "c_kafka")["on_reject"].as_str(),
        Some("skip")
    );
    assert_eq!(
        table(&c, "transforms", "c_decode")["connect_error_headers"].as_bool(),
        Some(true)
    );
    assert!(
        !table(&c, "transforms", "c_decode").contains_key("log_records"),
        "errors.log.include.messages is false"
    );
    let logged = convert(&format!(
        r#"{{{SINK},"errors.log.include.messages":"true"}}"#
    ))
    .unwrap();
    assert_eq!(
        table(&logged, "transforms", "c_decode")["log_records"].as_bool(),
        Some(true)
    );
    let dlq = table(&c, "sinks", "c_dead_letter");
    assert_eq!(dlq["type"].as_str(), Some("kafka"));
    assert_eq!(dlq["topic"].as_str(), Some("dlq-{{x}}"));
    assert_eq!(
        dlq["inputs"].as_array().unwrap()[0].as_str(),
        Some("c_decode.dropped")
    );
    assert!(c
        .warnings
        .iter()
        .any(|w| w.contains("replication.factor: 1 ignored")));

    // As in Connect, tolerance none never writes the dead-letter queue.
    let c = convert(&format!(
        r#"{{{SINK},"errors.deadletterqueue.topic.name":"dlq"}}"#
    ))
    .unwrap();
    assert!(!c.sections["sinks"].contains_key("c_dead_letter"));
    assert!(
        c.warnings[0].contains("unused with errors.tolerance=none"),
        "{:?}",
        c.warnings
    );

    // The source connector: its encode's rejects, its kwdb-poll's checkpoint.
    let c = convert(&format!(
        r#"{{{SOURCE},"errors.tolerance":"all","errors.deadletterqueue.topic.name":"dlq"}}"#
    ))
    .unwrap();
    assert_eq!(
        table(&c, "sources", "c")["on_reject"].as_str(),
        Some("skip")
    );
    assert_eq!(
        table(&c, "sinks", "c_dead_letter")["inputs"]
            .as_array()
            .unwrap()[0]
            .as_str(),
        Some("c_encode.dropped")
    );
    let c = convert(&format!("{{{SOURCE}}}")).unwrap();
    assert_eq!(
        table(&c, "sources", "c")["on_reject"].as_str(),
        Some("stop")
    );
}

/// Issue 18, item 7: values that could only fail at start fail `convert`.
#[test]
fn values_that_would_fail_at_start_fail_the_conversion() {
    assert_eq!(
        errors(&format!(r#"{{{SINK},"tasks.max":"300"}}"#)),
        vec!["tasks.max: 300 is not allowed; kwpipe runs at most 256 tasks"]
    );
    assert_eq!(
        errors(
            r#"{"connector.class":"com.kaiwudb.kafka.connect.sink.KwdbSinkConnector","topics":"t","connection.url":"jdbc:kaiwudb://h:26257","protocol.type":"json_kaiwudb"}"#
        ),
        vec!["connection.database: missing; the KWDB database to write into"]
    );
    assert_eq!(
        errors(&format!(
            r#"{{{SOURCE},"timestamp.initial":"2024-02-30 10:00:00"}}"#
        )),
        vec!["timestamp.initial: \"2024-02-30 10:00:00\" is not a time; expected yyyy-MM-dd HH:mm:ss"]
    );
}

/// Issue 18, item 8: `timestamp.initial` without an offset is UTC in kwpipe, the
/// JVM's zone in the connector: said, and an offset is accepted.
#[test]
fn timestamp_initial_without_an_offset_is_said_to_be_utc() {
    let c = convert(&format!(
        r#"{{{SOURCE},"timestamp.initial":"2024-01-22 22:22:22"}}"#
    ))
    .unwrap();
    assert!(
        c.warnings.iter().any(|w| w.contains("is read as UTC")),
        "{:?}",
        c.warnings
    );
    let c = convert(&format!(
        r#"{{{SOURCE},"timestamp.initial":"2024-01-22 22:22:22+08:00"}}"#
    ))
    .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(
        table(&c, "sources", "c")["start_at"].as_str(),
        Some("2024-01-22 22:22:22+08:00")
    );
}

/// Issue 18, item 6: the connector's source writes one line per record.
#[test]
fn line_formats_out_of_the_source_are_one_line_per_message() {
    for (format, split) in [
        ("line_influxdb", true),
        ("line_opentsdb", true),
        ("json_kaiwudb", false),
        ("json_opentsdb", false),
    ] {
        let c = convert(&format!(r#"{{{SOURCE},"out.format":"{format}"}}"#)).unwrap();
        let encode = table(&c, "transforms", "c_encode");
        assert_eq!(
            encode
                .get("message_per_line")
                .and_then(toml::Value::as_bool),
            split.then_some(true),
            "{format}"
        );
    }
}

/// The parameter table of docs/migration.md lists exactly the parameters the
/// converter reads (`PARAMETERS`, which `Params` checks every read against in
/// debug builds), each with a kwpipe meaning and a same/differs verdict: adding a
/// parameter to the converter without its row fails here.
#[test]
fn the_migration_table_lists_every_parameter_the_converter_reads() {
    let doc = include_str!("../../../docs/migration.md");
    let start = doc
        .find("## Every parameter")
        .expect("docs/migration.md has its parameter table");
    let section = &doc[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut rows = std::collections::BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let name = cells[0]
            .trim_start_matches("| `")
            .split('`')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(cells.len(), 5, "{name}: five columns: {line}");
        let verdict = cells[4];
        assert!(
            verdict.starts_with("same") || verdict.starts_with("**differs**"),
            "{name}: the last column says same or **differs**: {verdict}"
        );
        assert!(rows.insert(name.clone(), ()).is_none(), "{name} twice");
    }
    let listed: std::collections::BTreeSet<&str> = rows.keys().map(String::as_str).collect();
    let read: std::collections::BTreeSet<&str> = PARAMETERS.iter().copied().collect();
    assert_eq!(
        read.difference(&listed).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "read by the converter, missing from docs/migration.md's table"
    );
    assert_eq!(
        listed.difference(&read).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "in docs/migration.md's table, not read by the converter"
    );
    // Every parameter of the seed's two tables is there.
    for p in [
        "name",
        "connector.class",
        "tasks.max",
        "topics",
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
        "key.converter",
        "value.converter",
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
    ] {
        assert!(listed.contains(p), "the seed's {p} is not in the table");
    }
}
