//! The Kafka client settings of a Kafka Connect deployment, turned into the `kafka`
//! components' `tls`, `sasl` and `librdkafka_options`.
//!
//! Kafka Connect configures a connector's clients in three layers, each over the
//! one before: the worker's own settings (`security.protocol`, `sasl.jaas.config`,
//! `ssl.truststore.location`...), the worker's `consumer.` / `producer.` prefixed
//! ones (what Connect actually gives sink consumers and source producers), and the
//! connector's `consumer.override.` / `producer.override.` ones. kwpipe reads the
//! same three layers in the same order. Connect would not use the unprefixed worker
//! settings for a connector's clients; kwpipe does, as the base, because a worker
//! that talks to a secured cluster at all has them and the prefixed copies almost
//! always repeat them.
//!
//! Java keystores (JKS, PKCS12) cannot be read without a JVM: they are errors that
//! say how to export PEM files instead.

use std::collections::BTreeMap;

/// Which client of a connector: a sink's consumer or a source's producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Consumer,
    Producer,
}

impl Role {
    fn prefix(self) -> &'static str {
        match self {
            Role::Consumer => "consumer.",
            Role::Producer => "producer.",
        }
    }
}

/// Properties that configure a client's security, mapped here.
const SECURITY: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.jaas.config",
    "sasl.kerberos.service.name",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.truststore.password",
    "ssl.truststore.certificates",
    "ssl.keystore.location",
    "ssl.keystore.type",
    "ssl.keystore.password",
    "ssl.keystore.key",
    "ssl.keystore.certificate.chain",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
];

/// Java client properties librdkafka knows under the same name and meaning.
const SAME_IN_LIBRDKAFKA: &[&str] = &[
    "client.id",
    "linger.ms",
    "batch.size",
    "acks",
    "fetch.min.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "request.timeout.ms",
    "reconnect.backoff.ms",
    "reconnect.backoff.max.ms",
    "max.in.flight.requests.per.connection",
    "receive.buffer.bytes",
    "send.buffer.bytes",
    "metadata.max.age.ms",
];

/// The settings of one client: the three layers merged.
pub fn layered(
    role: Role,
    worker: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut merged = BTreeMap::new();
    for (k, v) in worker {
        if SECURITY.contains(&k.as_str()) {
            merged.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in worker {
        if let Some(rest) = k.strip_prefix(role.prefix()) {
            merged.insert(rest.to_string(), v.clone());
        }
    }
    for (k, v) in overrides {
        merged.insert(k.clone(), v.clone());
    }
    merged
}

/// Adds `tls`, `sasl` and `librdkafka_options` to a `kafka` component's table for
/// the merged settings; each problem is pushed to `errors`, named by its property
/// (values of secrets never appear).
pub fn apply(
    settings: &BTreeMap<String, String>,
    table: &mut toml::Table,
    errors: &mut Vec<String>,
) {
    let get = |k: &str| {
        settings
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let protocol = get("security.protocol")
        .unwrap_or("PLAINTEXT")
        .to_ascii_uppercase();
    let (tls_on, sasl_on) = match protocol.as_str() {
        "PLAINTEXT" => (false, false),
        "SSL" => (true, false),
        "SASL_PLAINTEXT" => (false, true),
        "SASL_SSL" => (true, true),
        other => {
            errors.push(format!(
                "security.protocol: \"{other}\" is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
            ));
            return;
        }
    };
    if tls_on {
        let mut tls = toml::Table::new();
        truststore(settings, &mut tls, errors);
        keystore(settings, &mut tls, errors);
        if get("ssl.endpoint.identification.algorithm").is_none()
            && settings.contains_key("ssl.endpoint.identification.algorithm")
        {
            // An empty algorithm is how Java clients turn host name checks off.
            tls.insert("verify_hostname".into(), false.into());
        }
        table.insert("tls".into(), tls.into());
    }
    // As Java clients do, ssl.* settings without TLS and sasl.* settings without
    // SASL are ignored: a worker's base settings may be overridden to a protocol
    // that does not use them.
    if sasl_on {
        match sasl(settings) {
            Ok(s) => {
                table.insert("sasl".into(), s.into());
            }
            Err(e) => errors.push(e),
        }
    } else if settings.contains_key("sasl.jaas.config") || settings.contains_key("sasl.mechanism") {
        errors.push(format!(
            "sasl.* settings are given but security.protocol is {protocol}; use SASL_PLAINTEXT or SASL_SSL"
        ));
    }
    let mut options = toml::Table::new();
    for (k, v) in settings {
        if SECURITY.contains(&k.as_str()) {
            continue;
        }
        if k == "bootstrap.servers" {
            // A client of its own cluster or listener (`consumer.override.bootstrap.servers`).
            table.insert("bootstrap_servers".into(), v.clone().into());
            continue;
        }
        if SAME_IN_LIBRDKAFKA.contains(&k.as_str()) {
            options.insert(k.clone(), v.clone().into());
        } else {
            errors.push(format!(
                "{k}: no kwpipe equivalent is known for this client setting; \
                 set the librdkafka property of the same meaning in the topology's \
                 librdkafka_options"
            ));
        }
    }
    if !options.is_empty() {
        table.insert("librdkafka_options".into(), options.into());
    }
}

fn truststore(
    settings: &BTreeMap<String, String>,
    tls: &mut toml::Table,
    errors: &mut Vec<String>,
) {
    if settings.contains_key("ssl.truststore.certificates") {
        errors.push(
            "ssl.truststore.certificates: certificates inline are not supported; put them in a \
             PEM file and give it as ssl.truststore.location with ssl.truststore.type=PEM"
                .into(),
        );
    }
    let Some(location) = settings.get("ssl.truststore.location") else {
        return;
    };
    match store_type(settings, "ssl.truststore.type", location).as_str() {
        "PEM" => {
            tls.insert("ca_file".into(), location.clone().into());
        }
        other => errors.push(format!(
            "ssl.truststore.type: a {other} truststore needs a JVM to read; export its CA \
             certificates to PEM (keytool -exportcert -rfc -alias <ca> -keystore {location} \
             -file ca.pem) and give ssl.truststore.location=ca.pem with ssl.truststore.type=PEM"
        )),
    }
}

fn keystore(settings: &BTreeMap<String, String>, tls: &mut toml::Table, errors: &mut Vec<String>) {
    for inline in ["ssl.keystore.key", "ssl.keystore.certificate.chain"] {
        if settings.contains_key(inline) {
            errors.push(format!(
                "{inline}: a key or certificate inline is not supported; put the key and the \
                 certificate in a PEM file and give it as ssl.keystore.location with \
                 ssl.keystore.type=PEM"
            ));
        }
    }
    let Some(location) = settings.get("ssl.keystore.location") else {
        return;
    };
    match store_type(settings, "ssl.keystore.type", location).as_str() {
        "PEM" => {
            // One PEM file holding the private key and the certificate chain, as
            // Kafka's PEM keystores do: librdkafka reads each from it.
            tls.insert("crt_file".into(), location.clone().into());
            tls.insert("key_file".into(), location.clone().into());
            if let Some(pass) = settings.get("ssl.key.password").filter(|p| !p.is_empty()) {
                tls.insert("key_pass".into(), pass.clone().into());
            }
        }
        other => errors.push(format!(
            "ssl.keystore.type: a {other} keystore needs a JVM to read; export the key and \
             certificate to one PEM file (e.g. keytool -importkeystore -srckeystore {location} \
             -destkeystore client.p12 -deststoretype PKCS12, then openssl pkcs12 -in client.p12 \
             -out client.pem) and give ssl.keystore.location=client.pem with \
             ssl.keystore.type=PEM"
        )),
    }
}

/// The store's declared type, or Java's default (JKS) unless the file is PEM.
fn store_type(settings: &BTreeMap<String, String>, key: &str, location: &str) -> String {
    match settings.get(key) {
        Some(t) => t.to_ascii_uppercase(),
        None => {
            let pem = std::fs::read(location)
                .map(|b| b.starts_with(b"-----BEGIN") || b.windows(11).any(|w| w == b"-----BEGIN "))
                .unwrap_or(false);
            if pem { "PEM" } else { "JKS" }.to_string()
        }
    }
}

fn sasl(settings: &BTreeMap<String, String>) -> Result<toml::Table, String> {
    let mechanism = settings
        .get("sasl.mechanism")
        .map(|m| m.to_ascii_uppercase())
        // Java clients default to GSSAPI.
        .unwrap_or_else(|| "GSSAPI".into());
    let jaas = settings.get("sasl.jaas.config").ok_or_else(|| {
        "sasl.jaas.config: missing; the login module with its user and password".to_string()
    })?;
    let (module, options) = parse_jaas(jaas)?;
    let mut t = toml::Table::new();
    t.insert("mechanism".into(), mechanism.clone().into());
    let short = module.rsplit('.').next().unwrap_or(&module);
    match (short, mechanism.as_str()) {
        ("PlainLoginModule", "PLAIN") | ("ScramLoginModule", "SCRAM-SHA-256" | "SCRAM-SHA-512") => {
            for (key, ours) in [("username", "username"), ("password", "password")] {
                let v = options
                    .get(key)
                    .ok_or_else(|| format!("sasl.jaas.config: {short} without {key}=\"...\""))?;
                t.insert(ours.into(), v.clone().into());
            }
        }
        ("Krb5LoginModule", "GSSAPI") => {
            if let Some(p) = options.get("principal") {
                t.insert("kerberos_principal".into(), p.clone().into());
            }
            if let Some(k) = options.get("keyTab") {
                t.insert("kerberos_keytab".into(), k.clone().into());
            }
            let service = options
                .get("serviceName")
                .or(settings.get("sasl.kerberos.service.name"));
            if let Some(s) = service {
                t.insert("kerberos_service_name".into(), s.clone().into());
            }
        }
        (module, mechanism) => {
            return Err(format!(
                "sasl.jaas.config: login module {module} with sasl.mechanism {mechanism} is not \
                 supported; kwpipe speaks PLAIN (PlainLoginModule), SCRAM-SHA-256/512 \
                 (ScramLoginModule) and GSSAPI (Krb5LoginModule)"
            ))
        }
    }
    Ok(t)
}

/// `org.apache...PlainLoginModule required username="u" password="p";` into the
/// module's class name and its options. The message of an error never holds a value.
pub fn parse_jaas(text: &str) -> Result<(String, BTreeMap<String, String>), String> {
    let err = |what: &str| format!("sasl.jaas.config: {what}");
    let text = text.trim();
    let body = text
        .strip_suffix(';')
        .ok_or_else(|| err("does not end with ';'"))?
        .trim();
    let mut words = body.splitn(2, char::is_whitespace);
    let module = words
        .next()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| err("no login module"))?;
    let rest = words.next().unwrap_or("").trim_start();
    let flag_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let flag = &rest[..flag_end];
    if !["required", "requisite", "sufficient", "optional"].contains(&flag) {
        return Err(err(
            "the login module must be followed by a flag such as `required`",
        ));
    }
    let mut options = BTreeMap::new();
    let mut chars = rest[flag_end..].chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        if chars.next() != Some('=') || key.is_empty() {
            return Err(err("expected key=value options after the flag"));
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            loop {
                match chars.next() {
                    Some('\\') => v.extend(chars.next()),
                    Some('"') => break,
                    Some(c) => v.push(c),
                    None => return Err(err(&format!("the value of {key} has no closing quote"))),
                }
            }
            v
        } else {
            std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())).collect()
        };
        options.insert(key, value);
    }
    Ok((module.to_string(), options))
}

/// A `connect-distributed.properties` file: `key=value` or `key: value` lines, `#`
/// and `!` comments, a trailing backslash continuing a line (as `sasl.jaas.config`
/// often is), `\` escapes as Java's `Properties.load` reads them.
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut logical = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let mut line = line.trim_start().to_string();
        if logical.is_empty() && (line.starts_with('#') || line.starts_with('!') || line.is_empty())
        {
            continue;
        }
        // An odd number of trailing backslashes continues the line.
        while line.ends_with('\\') && (line.len() - line.trim_end_matches('\\').len()) % 2 == 1 {
            line.pop();
            logical.push_str(&line);
            line = lines
                .next()
                .map(|l| l.trim_start().to_string())
                .unwrap_or_default();
        }
        logical.push_str(&line);
        let entry = std::mem::take(&mut logical);
        let split = entry
            .char_indices()
            .find(|(i, c)| matches!(c, '=' | ':') && !entry[..*i].ends_with('\\'))
            .map(|(i, _)| i);
        let (k, v) = match split {
            Some(i) => (&entry[..i], &entry[i + 1..]),
            None => (entry.as_str(), ""),
        };
        out.insert(unescape(k.trim()), unescape(v.trim_start()));
    }
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_worker_file_with_a_continued_jaas_line() {
        let props = parse_properties(
            "# worker\nbootstrap.servers=kafka:9093\nsecurity.protocol = SASL_SSL\n\
             sasl.mechanism: SCRAM-SHA-512\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n\
             \x20   username=\"app\" \\\n    password=\"pa ss=word\";\n\
             ! another comment\nssl.truststore.location=/etc/ca.pem\n",
        );
        assert_eq!(props["bootstrap.servers"], "kafka:9093");
        assert_eq!(props["security.protocol"], "SASL_SSL");
        assert_eq!(props["sasl.mechanism"], "SCRAM-SHA-512");
        let (module, opts) = parse_jaas(&props["sasl.jaas.config"]).unwrap();
        assert!(module.ends_with("ScramLoginModule"));
        assert_eq!(opts["username"], "app");
        assert_eq!(opts["password"], "pa ss=word");
    }

    #[test]
    fn layers_apply_in_connects_order() {
        let worker = map(&[
            ("security.protocol", "SSL"),
            ("consumer.security.protocol", "SASL_SSL"),
            ("producer.security.protocol", "SSL"),
            ("group.id", "connect-cluster"),
        ]);
        let overrides = map(&[("security.protocol", "SASL_PLAINTEXT")]);
        let c = layered(Role::Consumer, &worker, &BTreeMap::new());
        assert_eq!(c["security.protocol"], "SASL_SSL");
        assert!(!c.contains_key("group.id"), "worker-only settings stay out");
        let p = layered(Role::Producer, &worker, &overrides);
        assert_eq!(p["security.protocol"], "SASL_PLAINTEXT");
    }

    #[test]
    fn sasl_ssl_with_scram_maps_to_both_tables() {
        let settings = map(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
            (
                "sasl.jaas.config",
                "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"u\" password=\"secret-1\";",
            ),
            ("ssl.truststore.location", "/etc/kafka/ca.pem"),
            ("ssl.truststore.type", "PEM"),
            ("ssl.endpoint.identification.algorithm", ""),
            ("linger.ms", "5"),
        ]);
        let mut t = toml::Table::new();
        let mut errors = Vec::new();
        apply(&settings, &mut t, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let tls = t["tls"].as_table().unwrap();
        assert_eq!(tls["ca_file"].as_str(), Some("/etc/kafka/ca.pem"));
        assert_eq!(tls["verify_hostname"].as_bool(), Some(false));
        let sasl = t["sasl"].as_table().unwrap();
        assert_eq!(sasl["mechanism"].as_str(), Some("SCRAM-SHA-256"));
        assert_eq!(sasl["password"].as_str(), Some("secret-1"));
        assert_eq!(t["librdkafka_options"]["linger.ms"].as_str(), Some("5"));
    }

    #[test]
    fn java_keystores_and_unknown_settings_say_what_to_give_instead() {
        let settings = map(&[
            ("security.protocol", "SSL"),
            ("ssl.truststore.location", "/etc/kafka/truststore.jks"),
            ("ssl.truststore.password", "changeit-secret"),
            ("ssl.keystore.location", "/etc/kafka/client.p12"),
            ("ssl.keystore.type", "PKCS12"),
            ("max.poll.records", "500"),
        ]);
        let mut t = toml::Table::new();
        let mut errors = Vec::new();
        apply(&settings, &mut t, &mut errors);
        let all = errors.join("\n");
        assert!(
            all.contains("a JKS truststore needs a JVM") && all.contains("keytool -exportcert"),
            "{all}"
        );
        assert!(all.contains("a PKCS12 keystore needs a JVM"), "{all}");
        assert!(
            all.contains("max.poll.records: no kwpipe equivalent"),
            "{all}"
        );
        assert!(!all.contains("changeit-secret"), "{all}");
    }

    #[test]
    fn bad_jaas_never_echoes_its_values() {
        let settings = map(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "PLAIN"),
            (
                "sasl.jaas.config",
                "org.apache.kafka.common.security.plain.PlainLoginModule required password=\"hunter2\";",
            ),
        ]);
        let mut errors = Vec::new();
        apply(&settings, &mut toml::Table::new(), &mut errors);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("without username"), "{errors:?}");
        assert!(parse_jaas("Module required password=\"hunter2;")
            .unwrap_err()
            .contains("no closing quote"));
        assert!(!parse_jaas("Module required password=\"hunter2;")
            .unwrap_err()
            .contains("hunter2"));
        let mut errors = Vec::new();
        apply(
            &map(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "OAUTHBEARER"),
                (
                    "sasl.jaas.config",
                    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
                ),
            ]),
            &mut toml::Table::new(),
            &mut errors,
        );
        assert!(
            errors[0].contains(
                "OAuthBearerLoginModule with sasl.mechanism OAUTHBEARER is not supported"
            ),
            "{errors:?}"
        );
    }
}
