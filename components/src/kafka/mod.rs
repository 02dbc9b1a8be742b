//! What the Kafka source and sink share: the `librdkafka_options` pass-through map
//! (which may hold credentials, so it never prints them), the `tls` and `sasl`
//! tables ([`security`]), and client creation with errors that do not leak them
//! either.

pub mod diagnose;
pub mod security;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::Client;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use serde::{Deserialize, Deserializer};

pub use security::{SaslOptions, Security, SecurityError, TlsOptions};

#[derive(Debug, thiserror::Error)]
pub enum KafkaClientError {
    #[error(
        "librdkafka option \"{key}\" is set by kwpipe's own option `{ours}`; set that instead"
    )]
    Reserved { key: String, ours: &'static str },
    #[error("invalid librdkafka option \"{key}\": {reason}")]
    InvalidOption { key: String, reason: String },
    #[error("cannot create the Kafka client: {0}")]
    Create(String),
    #[error(transparent)]
    Security(#[from] SecurityError),
}

/// Whether a librdkafka property may hold a secret (`sasl.password`,
/// `ssl.key.password`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`...).
pub fn is_sensitive(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "ssl.key.pem",
        "private",
        "sasl.jaas",
        "token",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// Raw librdkafka properties, passed through as they are. Values may be TOML
/// strings, integers, floats or booleans; librdkafka takes them all as text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LibrdkafkaOptions(pub BTreeMap<String, String>);

impl LibrdkafkaOptions {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Fails when the user sets a property that one of kwpipe's options owns, so
    /// the two cannot silently disagree.
    pub fn check_reserved(
        &self,
        reserved: &[(&str, &'static str)],
    ) -> Result<(), KafkaClientError> {
        for (key, ours) in reserved {
            if self.0.contains_key(*key) {
                return Err(KafkaClientError::Reserved {
                    key: key.to_string(),
                    ours,
                });
            }
        }
        Ok(())
    }
}

impl fmt::Debug for LibrdkafkaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.0 {
            if is_sensitive(k) {
                map.entry(k, &"***");
            } else {
                map.entry(k, v);
            }
        }
        map.finish()
    }
}

impl<'de> Deserialize<'de> for LibrdkafkaOptions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            S(String),
            I(i64),
            F(f64),
            B(bool),
        }
        let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
        Ok(LibrdkafkaOptions(
            raw.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Scalar::S(s) => s,
                        Scalar::I(i) => i.to_string(),
                        Scalar::F(f) => f.to_string(),
                        Scalar::B(b) => b.to_string(),
                    };
                    (k, v)
                })
                .collect(),
        ))
    }
}

/// kwpipe's settings first, then the `tls` and `sasl` tables, then the user's
/// pass-through options (which may not repeat what the tables set).
pub fn client_config(
    base: &[(&str, String)],
    security: &Security,
    user: &LibrdkafkaOptions,
) -> Result<ClientConfig, KafkaClientError> {
    let mut config = ClientConfig::new();
    for (k, v) in base {
        config.set(*k, v);
    }
    for (k, v) in security.properties(user)? {
        config.set(k, v);
    }
    for (k, v) in user.iter() {
        config.set(k, v);
    }
    Ok(config)
}

/// Creates a client, describing a bad property without repeating a secret value.
pub fn create<T, C>(config: &ClientConfig, context: C) -> Result<T, KafkaClientError>
where
    T: FromClientConfigAndContext<C>,
    C: ClientContext,
{
    T::from_config_and_context(config, context).map_err(|e| match e {
        KafkaError::ClientConfig(_, desc, key, _value) => {
            let reason = if is_sensitive(&key) {
                "rejected by librdkafka (value not shown)".to_string()
            } else {
                desc
            };
            KafkaClientError::InvalidOption { key, reason }
        }
        KafkaError::ClientCreation(text) => KafkaClientError::Create(client_creation(&text)),
        other => KafkaClientError::Create(other.to_string()),
    })
}

/// librdkafka names the property whose file it could not load; say which of our
/// options that is, and the likely cause.
fn client_creation(text: &str) -> String {
    let named = [
        (
            "ssl.key.location",
            "`tls.key_file` cannot be loaded: a wrong or missing `tls.key_pass`, or not a \
             private key",
        ),
        (
            "ssl.certificate.location",
            "`tls.crt_file` cannot be loaded as a certificate",
        ),
        (
            "ssl.ca.location",
            "`tls.ca_file` cannot be loaded as certificates",
        ),
    ];
    for (property, what) in named {
        if text.contains(&format!("{property} failed")) {
            return format!("{what} ({text})");
        }
    }
    text.to_string()
}

/// The context of a client made for a check (`kwpipe validate`): librdkafka's own
/// log lines and error callbacks are kept, not printed, so a check says one thing;
/// the last transport error explains why the broker did not answer.
#[derive(Default)]
pub struct CheckContext {
    last_error: Mutex<Option<String>>,
    /// librdkafka logs some failures (a connection closed during the first request)
    /// without an error callback.
    last_failure_log: Mutex<Option<String>>,
    all_down: AtomicBool,
}

impl ClientContext for CheckContext {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::trace!(fac, "librdkafka: {message}");
        if fac == "FAIL" {
            *self
                .last_failure_log
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(message.to_string());
        }
    }

    fn stats_raw(&self, _statistics: &[u8]) {}

    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => self.all_down.store(true, Ordering::Release),
            _ => {
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(reason.to_string());
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for CheckContext {}

impl rdkafka::producer::ProducerContext for CheckContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

impl CheckContext {
    fn reason(&self) -> Option<String> {
        let last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        let log = self
            .last_failure_log
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        last.as_deref().or(log.as_deref()).map(describe_failure)
    }
}

/// One of librdkafka's connection failures as a short cause: `connection refused`
/// out of `127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection
/// refused (after 0ms in state CONNECT)`; the broker's own words for a refused
/// login; a hint where a TLS listener was addressed in plaintext.
// Not typed: librdkafka gives these causes only as text (its code is a generic
// _TRANSPORT, _SSL or _AUTHENTICATION, or none for a log line); the text is
// shortened for the operator and matched only to add a hint, never to decide.
fn describe_failure(text: &str) -> String {
    // "sasl_ssl://127.0.0.1:9096/bootstrap: ..." names a broker the error already
    // says; drop it.
    let text = match text.find("/bootstrap: ") {
        Some(i) => &text[i + "/bootstrap: ".len()..],
        None => text,
    };
    let short = match text.rfind("failed: ") {
        Some(i) if !text.contains("SASL authentication error") => &text[i + "failed: ".len()..],
        _ => text,
    };
    let short = short.split(" (after ").next().unwrap_or(short).trim();
    if short.contains("connection closed by peer") && text.contains("APIVERSION_QUERY") {
        return "the broker closed the connection at the first request: is this a TLS \
                listener? Set `tls` (and `sasl` when it asks for a login)"
            .to_string();
    }
    // "Connection refused" reads as "connection refused" after a colon; an acronym
    // such as "SASL" stays as it is.
    let mut chars = short.chars();
    match (chars.next(), chars.clone().next()) {
        (Some(c), Some(d)) if d.is_lowercase() => c.to_lowercase().chain(chars).collect(),
        _ => short.to_string(),
    }
}

/// Asks the brokers for metadata (up to `timeout`) and checks that each of `topics`
/// exists (names starting with `^` are patterns and are not checked). The error is
/// one line that names the brokers or the topic. `serve_callbacks` polls the client
/// (without taking messages) so its error callbacks run. `ca_file` (the `tls`
/// table's) lets a refused certificate be explained ([`diagnose`]).
/// A client the cluster check runs on: its librdkafka handle, and how to serve its
/// callbacks without consuming or producing anything.
pub trait CheckClient: FromClientConfigAndContext<CheckContext> + Send + 'static {
    fn handle(&self) -> &Client<CheckContext>;
    fn serve_callbacks(&self);
}

impl CheckClient for rdkafka::consumer::BaseConsumer<CheckContext> {
    fn handle(&self) -> &Client<CheckContext> {
        rdkafka::consumer::Consumer::client(self)
    }

    fn serve_callbacks(&self) {
        // Not subscribed: a poll serves callbacks and yields no message.
        let _ = self.poll(Duration::from_millis(100));
    }
}

impl CheckClient for rdkafka::producer::BaseProducer<CheckContext> {
    fn handle(&self) -> &Client<CheckContext> {
        rdkafka::producer::Producer::client(self)
    }

    fn serve_callbacks(&self) {
        self.poll(Duration::from_millis(100));
    }
}

/// The healthcheck of a Kafka source or sink: a client of kind `T` made from
/// `config` asks the cluster at `servers` about `topics` ([`check_cluster`], up to
/// 10 s), on a blocking thread.
pub async fn healthcheck<T: CheckClient>(
    config: ClientConfig,
    security: &Security<'_>,
    servers: String,
    topics: Vec<String>,
) -> Result<(), String> {
    let ca_file = security.tls().and_then(|t| t.ca_file.clone());
    tokio::task::spawn_blocking(move || {
        let client: T = create(&config, CheckContext::default()).map_err(|e| e.to_string())?;
        check_cluster(
            client.handle(),
            &|| client.serve_callbacks(),
            &servers,
            &topics,
            Duration::from_secs(10),
            ca_file.as_deref(),
        )
    })
    .await
    .map_err(|e| e.to_string())?
}

pub fn check_cluster(
    client: &Client<CheckContext>,
    serve_callbacks: &dyn Fn(),
    servers: &str,
    topics: &[String],
    timeout: Duration,
    ca_file: Option<&std::path::Path>,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let unreachable = |why: Option<String>| {
        let mut why = why.unwrap_or_else(|| format!("no answer within {timeout:?}"));
        // Text, not a code: see `describe_failure` (only a hint depends on it).
        if why.contains("certificate could not be verified") || why.contains("certificate verify") {
            let first = servers.split(',').next().unwrap_or(servers).trim();
            if let Some(cause) = ca_file
                .and_then(|ca| diagnose::certificate_problem(first, ca, Duration::from_secs(3)))
            {
                why = cause;
            }
        }
        format!("cannot connect to Kafka at {servers}: {why}")
    };
    // The brokers answer at all.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.fetch_metadata(None, left.min(Duration::from_secs(1))) {
            Ok(_) => break,
            Err(e) => {
                // Error callbacks arrive through the client's queue.
                serve_callbacks();
                let down = client.context().all_down.load(Ordering::Acquire);
                if down || Instant::now() >= deadline {
                    let why = client.context().reason().or_else(|| Some(e.to_string()));
                    return Err(unreachable(why));
                }
            }
        }
    }
    for topic in topics.iter().filter(|t| !t.starts_with('^')) {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let metadata = client
            .fetch_metadata(Some(topic), left)
            .map_err(|e| unreachable(client.context().reason().or(Some(e.to_string()))))?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        match found.map(|t| t.error()) {
            None | Some(Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)) => {
                return Err(format!("topic \"{topic}\" does not exist on {servers}"));
            }
            Some(Some(e)) => {
                let e = RDKafkaErrorCode::from(e);
                return Err(format!("topic \"{topic}\" on {servers}: {e}"));
            }
            Some(None) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_credentials() {
        let opts: LibrdkafkaOptions = toml::from_str(
            r#"
            "sasl.password" = "hunter2"
            "ssl.key.password" = "s3cret"
            "sasl.username" = "bob"
            "fetch.wait.max.ms" = 50
            "#,
        )
        .unwrap();
        let shown = format!("{opts:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("bob"));
        assert_eq!(opts.get("fetch.wait.max.ms"), Some("50"));
    }

    #[test]
    fn bad_sensitive_option_does_not_echo_its_value() {
        let mut user = LibrdkafkaOptions::default();
        user.0
            .insert("ssl.key.password.bogus".into(), "hunter2".into());
        let config = client_config(&[], &Security::default(), &user).unwrap();
        let err = create::<rdkafka::producer::BaseProducer, _>(
            &config,
            rdkafka::producer::DefaultProducerContext,
        )
        .err()
        .expect("unknown property must fail");
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("ssl.key.password.bogus"), "{text}");
    }

    #[test]
    fn failures_are_described_by_their_cause() {
        assert_eq!(
            describe_failure(
                "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused \
                 (after 0ms in state CONNECT)"
            ),
            "connection refused"
        );
        let sasl = describe_failure(
            "sasl_ssl://127.0.0.1:9096/bootstrap: SASL authentication error: Authentication \
             failed during authentication due to invalid credentials with SASL mechanism \
             SCRAM-SHA-512 (after 332ms in state AUTH_REQ)",
        );
        assert!(sasl.starts_with("SASL authentication error"), "{sasl}");
        assert!(sasl.contains("invalid credentials"), "{sasl}");
        let tls = describe_failure(
            "127.0.0.1:9095/bootstrap: Disconnected: connection closed by peer: receive 0 after \
             POLLIN (after 1ms in state APIVERSION_QUERY)",
        );
        assert!(tls.contains("TLS listener"), "{tls}");
    }

    #[test]
    fn reserved_keys_are_refused() {
        let mut user = LibrdkafkaOptions::default();
        user.0.insert("group.id".into(), "x".into());
        let err = user
            .check_reserved(&[("group.id", "group_id")])
            .unwrap_err();
        assert!(err.to_string().contains("group_id"));
    }
}
