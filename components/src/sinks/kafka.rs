//! `kafka` sink: Raw events produced to a topic named by a template.
//!
//! An event is Delivered only when the broker acknowledged it (acks=all with the
//! idempotent producer by default). Broker outages never drop anything: the producer
//! retries without a message timeout, and an error librdkafka gives up on anyway is
//! retried here with backoff. Only a record that can never be written (a template
//! field it lacks, an invalid topic name, too large for the broker) is Rejected: sent
//! to the `dropped` output with the reason in a `kwpipe.error` header when something
//! reads it, logged and counted otherwise.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, DeliveryFuture, FutureProducer, FutureRecord, Producer};
use serde::Deserialize;
use tokio::time::Instant;

use crate::ack::EventStatus;
use crate::api::{
    Backoff, BuildContext, Component, ComponentConfig, ComponentContext, ComponentError, OutputDef,
    DROPPED_OUTPUT,
};
use crate::durations;
use crate::event::{Event, EventKind, RawMessage};
use crate::kafka::{self, KafkaClientError, LibrdkafkaOptions, SaslOptions, Security, TlsOptions};
use crate::template::Template;

/// Header naming why a record went to the `dropped` output (one name for every
/// component, in `crate::headers`).
pub use crate::headers::ERROR_HEADER;

#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    #[error(transparent)]
    Client(#[from] KafkaClientError),
    #[error("the idempotent producer hit a fatal error ({0}); restarting replays what was not acknowledged")]
    Fatal(String),
    #[error("invalid option: {0}")]
    Option(String),
}

impl From<KafkaSinkError> for ComponentError {
    fn from(e: KafkaSinkError) -> Self {
        ComponentError::other(e)
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    pub bootstrap_servers: String,
    /// Topic per event, e.g. `"kw-{database}-{table}"` or a plain name.
    pub topic: Template,
    /// Message key per event; without it the event's own key (if any) is kept.
    #[serde(default)]
    pub key: Option<Template>,
    /// Headers added to every message, after the event's own.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub compression: Compression,
    /// The idempotent producer (acks=all, no duplicates or reordering from retries).
    #[serde(default = "yes")]
    pub idempotence: bool,
    /// How long librdkafka keeps retrying one message before reporting it; unset
    /// means forever, which is what an edge agent wants. A timed-out message is
    /// retried by the sink anyway: nothing is dropped.
    #[serde(default, deserialize_with = "durations::deserialize_opt")]
    pub message_timeout: Option<Duration>,
    /// Encrypt and verify the connection (see `kafka::security`).
    #[serde(default)]
    pub tls: Option<TlsOptions>,
    /// Authenticate (see `kafka::security`).
    #[serde(default)]
    pub sasl: Option<SaslOptions>,
    #[serde(default)]
    pub librdkafka_options: LibrdkafkaOptions,
}

const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "bootstrap_servers"),
    ("enable.idempotence", "idempotence"),
    ("compression.type", "compression"),
    ("compression.codec", "compression"),
    ("message.timeout.ms", "message_timeout"),
    ("delivery.timeout.ms", "message_timeout"),
];

impl KafkaSinkConfig {
    fn security(&self) -> Security<'_> {
        Security {
            tls: self.tls.as_ref(),
            sasl: self.sasl.as_ref(),
        }
    }

    fn client_config(&self, id: &str) -> Result<rdkafka::ClientConfig, KafkaSinkError> {
        self.librdkafka_options.check_reserved(RESERVED)?;
        let security = self.security();
        security.check().map_err(KafkaClientError::Security)?;
        let timeout_ms = self.message_timeout.map_or(0, |d| d.as_millis().max(1));
        let base = [
            ("bootstrap.servers", self.bootstrap_servers.clone()),
            ("client.id", format!("kwpipe-{id}")),
            ("enable.idempotence", self.idempotence.to_string()),
            ("acks", "all".to_string()),
            ("compression.type", self.compression.as_str().to_string()),
            ("message.timeout.ms", timeout_ms.to_string()),
        ];
        Ok(kafka::client_config(
            &base,
            &security,
            &self.librdkafka_options,
        )?)
    }
}

#[async_trait]
impl ComponentConfig for KafkaSinkConfig {
    fn type_name(&self) -> &'static str {
        "kafka"
    }

    fn input_kinds(&self) -> Vec<EventKind> {
        vec![EventKind::Raw]
    }

    fn outputs(&self) -> Vec<OutputDef> {
        vec![OutputDef::named(DROPPED_OUTPUT, EventKind::Raw)]
    }

    fn check(&self) -> Result<(), ComponentError> {
        self.client_config("check")?;
        Ok(())
    }

    async fn healthcheck(&self, cx: &BuildContext) -> Result<(), ComponentError> {
        let config = self.client_config(&cx.id)?;
        let servers = self.bootstrap_servers.clone();
        // A fixed topic can be looked up (a cluster that creates topics on demand
        // creates it then); a templated one is known only per event.
        let topics: Vec<String> = if self.topic.is_static() {
            self.topic.render_with(|_| None).into_iter().collect()
        } else {
            Vec::new()
        };
        kafka::healthcheck::<BaseProducer<kafka::CheckContext>>(
            config,
            &self.security(),
            servers,
            topics,
        )
        .await
        .map_err(ComponentError::msg)
    }

    async fn build(&self, cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        let config = self.client_config(&cx.id)?;
        let producer: FutureProducer =
            kafka::create(&config, DefaultClientContext).map_err(KafkaSinkError::from)?;
        let headers = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Bytes::from(v.clone())))
            .collect();
        Ok(Box::new(KafkaSink {
            producer,
            topic: self.topic.clone(),
            key: self.key.clone(),
            headers,
        }))
    }
}

struct KafkaSink {
    producer: FutureProducer,
    topic: Template,
    key: Option<Template>,
    headers: Vec<(String, Bytes)>,
}

/// A record in flight: the event stays here (its payload is shared, not copied)
/// until the broker answers, so a failed delivery can be produced again.
type Pending = Pin<Box<dyn Future<Output = (RawMessage, Result<(), DeliveryError>)> + Send>>;

enum DeliveryError {
    Permanent(String),
    Retry(String),
    Fatal(String),
}

/// How many produced-but-unanswered records the sink holds at most; librdkafka's
/// own queue (`queue.buffering.max.messages`) usually fills first.
const MAX_PENDING: usize = 200_000;
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

fn topic_name_problem(topic: &str) -> Option<String> {
    if topic.is_empty() {
        return Some("topic name is empty".into());
    }
    if topic.len() > 249 {
        return Some(format!(
            "topic name is {} bytes long (max 249)",
            topic.len()
        ));
    }
    if topic == "." || topic == ".." {
        return Some(format!("\"{topic}\" is not a valid topic name"));
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "topic name \"{topic}\" has the character {c:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    None
}

fn classify(e: &KafkaError, producer: &FutureProducer) -> DeliveryError {
    if let Some((_, reason)) = producer.client().fatal_error() {
        return DeliveryError::Fatal(reason);
    }
    let text = e.to_string();
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::BadMessage,
        ) => DeliveryError::Permanent(text),
        _ => DeliveryError::Retry(text),
    }
}

struct Run<'a> {
    sink: &'a KafkaSink,
    cx: &'a mut ComponentContext,
    pending: FuturesUnordered<Pending>,
    retry: VecDeque<(Instant, RawMessage)>,
    backoff: Backoff,
}

impl Run<'_> {
    /// Produces one record, waiting for room when librdkafka's queue is full.
    async fn produce(&mut self, msg: RawMessage) -> Result<(), ComponentError> {
        let topic = match self.sink.topic.render(&msg.meta) {
            Ok(t) => t,
            Err(e) => return self.reject(msg, e.to_string()).await,
        };
        if let Some(problem) = topic_name_problem(&topic) {
            return self.reject(msg, problem).await;
        }
        let key = match &self.sink.key {
            Some(t) => match t.render(&msg.meta) {
                Ok(k) => Some(Bytes::from(k)),
                Err(e) => return self.reject(msg, e.to_string()).await,
            },
            None => msg.key.clone(),
        };
        loop {
            let mut headers =
                OwnedHeaders::new_with_capacity(msg.headers.len() + self.sink.headers.len());
            for (k, v) in msg.headers.iter().chain(self.sink.headers.iter()) {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_ref()),
                });
            }
            let mut record = FutureRecord::<[u8], [u8]>::to(&topic)
                .payload(msg.payload.as_ref())
                .headers(headers);
            if let Some(k) = &key {
                record = record.key(k.as_ref());
            }
            if let Some(ts) = msg.meta.timestamp {
                record = record.timestamp(ts);
            }
            match self.sink.producer.send_result(record) {
                Ok(delivery) => {
                    self.pending
                        .push(track(delivery, msg, self.sink.producer.clone()));
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // Room appears as the broker acknowledges what is queued.
                    match self.pending.next().await {
                        Some(done) => self.finish(done).await?,
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err((e, _)) => {
                    drop(key);
                    return match classify(&e, &self.sink.producer) {
                        DeliveryError::Permanent(reason) => self.reject(msg, reason).await,
                        DeliveryError::Fatal(reason) => {
                            msg.finalizers.finish(EventStatus::Failed);
                            Err(KafkaSinkError::Fatal(reason).into())
                        }
                        DeliveryError::Retry(reason) => {
                            self.schedule_retry(msg, &reason);
                            Ok(())
                        }
                    };
                }
            }
        }
    }

    fn schedule_retry(&mut self, msg: RawMessage, reason: &str) {
        let delay = self.backoff.next_delay();
        self.cx.outputs.metrics().error("produce");
        tracing::warn!(%reason, retry_in = ?delay, "producing failed; will retry");
        self.retry.push_back((Instant::now() + delay, msg));
    }

    async fn finish(
        &mut self,
        (msg, result): (RawMessage, Result<(), DeliveryError>),
    ) -> Result<(), ComponentError> {
        match result {
            Ok(()) => {
                self.backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
                self.cx.outputs.metrics().passed(1);
                msg.finalizers.finish(EventStatus::Delivered);
                Ok(())
            }
            Err(DeliveryError::Permanent(reason)) => self.reject(msg, reason).await,
            Err(DeliveryError::Retry(reason)) => {
                self.schedule_retry(msg, &reason);
                Ok(())
            }
            Err(DeliveryError::Fatal(reason)) => {
                msg.finalizers.finish(EventStatus::Failed);
                Err(KafkaSinkError::Fatal(reason).into())
            }
        }
    }

    async fn reject(&mut self, mut msg: RawMessage, reason: String) -> Result<(), ComponentError> {
        self.cx.outputs.metrics().rejected(1);
        if self.cx.outputs.is_connected(DROPPED_OUTPUT) {
            // The finalizers travel on: the dead-letter sink's status is what counts.
            msg.headers
                .push((ERROR_HEADER.to_string(), Bytes::from(reason)));
            self.cx
                .outputs
                .send_to(DROPPED_OUTPUT, Event::Raw(msg))
                .await
        } else {
            tracing::warn!(
                %reason,
                topic = msg.meta.topic.as_deref(),
                partition = msg.meta.partition,
                offset = msg.meta.offset,
                "record rejected"
            );
            msg.finalizers.finish(EventStatus::Rejected);
            Ok(())
        }
    }
}

fn track(delivery: DeliveryFuture, msg: RawMessage, producer: FutureProducer) -> Pending {
    Box::pin(async move {
        let result = match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(classify(&e, &producer)),
            Err(_) => Err(DeliveryError::Retry(
                "the producer dropped the record".into(),
            )),
        };
        (msg, result)
    })
}

#[async_trait]
impl Component for KafkaSink {
    async fn run(self: Box<Self>, mut cx: ComponentContext) -> Result<(), ComponentError> {
        let mut input = cx.take_input();
        let mut run = Run {
            sink: &self,
            cx: &mut cx,
            pending: FuturesUnordered::new(),
            retry: VecDeque::new(),
            backoff: Backoff::new(RETRY_MIN, RETRY_MAX),
        };
        let mut input_done = false;
        loop {
            let next_retry = run.retry.front().map(|(at, _)| *at);
            if input_done && run.pending.is_empty() && next_retry.is_none() {
                break;
            }
            tokio::select! {
                biased;
                Some(done) = run.pending.next(), if !run.pending.is_empty() => {
                    run.finish(done).await?;
                }
                _ = tokio::time::sleep_until(next_retry.unwrap_or_else(Instant::now)),
                    if next_retry.is_some() =>
                {
                    let (_, msg) = run.retry.pop_front().expect("a retry is due");
                    run.produce(msg).await?;
                }
                event = input.recv(), if !input_done && run.pending.len() < MAX_PENDING => {
                    match event {
                        Some(Event::Raw(msg)) => run.produce(msg).await?,
                        Some(Event::Rows(batch)) => {
                            // The graph's type check keeps Rows away; be explicit anyway.
                            batch.finalizers.finish(EventStatus::Rejected);
                            run.cx.outputs.metrics().rejected(batch.rows.len() as u64);
                            tracing::error!("the kafka sink takes Raw events; a Rows batch was rejected");
                        }
                        None => {
                            input_done = true;
                            tracing::debug!(pending = run.pending.len(), "input ended; flushing");
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked() {
        assert!(topic_name_problem("kw-db.t_1").is_none());
        assert!(topic_name_problem("").is_some());
        assert!(topic_name_problem("a b").unwrap().contains("' '"));
        assert!(topic_name_problem(&"x".repeat(250)).is_some());
    }

    #[test]
    fn config_parses_with_defaults() {
        let c: KafkaSinkConfig = toml::from_str(
            r#"
            bootstrap_servers = "127.0.0.1:9092"
            topic = "kw-{database}-{table}"
            librdkafka_options = { "sasl.password" = "hunter2" }
            "#,
        )
        .unwrap();
        assert!(c.idempotence);
        assert_eq!(c.compression, Compression::None);
        assert!(!format!("{c:?}").contains("hunter2"));
        let cfg = c.client_config("s").unwrap();
        assert_eq!(cfg.get("message.timeout.ms"), Some("0"));
        assert_eq!(cfg.get("acks"), Some("all"));
    }

    #[test]
    fn reserved_options_are_refused() {
        let c: KafkaSinkConfig = toml::from_str(
            r#"
            bootstrap_servers = "x:1"
            topic = "t"
            librdkafka_options = { "enable.idempotence" = "false" }
            "#,
        )
        .unwrap();
        let err = c.client_config("s").unwrap_err().to_string();
        assert!(err.contains("idempotence"), "{err}");
    }

    #[test]
    fn malformed_topic_template_fails_at_parse() {
        let err = toml::from_str::<KafkaSinkConfig>(
            "bootstrap_servers = \"x:1\"\ntopic = \"kw-{table\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unclosed"), "{err}");
    }
}
