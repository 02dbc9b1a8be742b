//! The `kafka` source's options, their defaults and checks, and the librdkafka
//! configuration they make. No client is created here.

use std::time::Duration;

use serde::Deserialize;

use super::error::KafkaSourceError;
use crate::ack::RejectPolicy;
use crate::durations;
use crate::kafka::{self, KafkaClientError, LibrdkafkaOptions, SaslOptions, Security, TlsOptions};

/// `topics = ["a", "b"]`, or one string; a name starting with `^` is a regex
/// (librdkafka's own syntax) matched against every topic in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics(pub Vec<String>);

impl<'de> Deserialize<'de> for Topics {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(Topics(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }))
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    #[default]
    Earliest,
    Latest,
    /// Fail instead of guessing when the group has no committed offset.
    Error,
}

impl OffsetReset {
    fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
            OffsetReset::Error => "error",
        }
    }
}

fn default_commit_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_session_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_concurrency() -> usize {
    1
}
fn default_max_in_flight() -> usize {
    // Several of the sink's statements' worth of one-row messages, so the source
    // polls while the database writes; fewer made the pipeline run stop-and-go.
    20_000
}
fn default_max_in_flight_bytes() -> usize {
    // Everything in a COPY is in flight until it commits, so the window must hold
    // about two of the sink's statements. With 6 MiB (~9,500 of the seed's one-row
    // messages) the sink wrote half-size COPYs and the source stalled at its bound
    // half the time. Ten-row messages gain nothing (their COPYs are full either
    // way), and a default agent stays inside 64 MB with the prefetch queue below
    // (benches/README.md, "Kafka -> kwdb" and "Resources", fifth round).
    10 * 1024 * 1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    pub bootstrap_servers: String,
    pub group_id: String,
    pub topics: Topics,
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
    #[serde(
        default = "default_commit_interval",
        deserialize_with = "durations::deserialize"
    )]
    pub commit_interval: Duration,
    /// How long a rebalance or shutdown waits for in-flight events to be acknowledged
    /// before committing what was acknowledged so far.
    #[serde(
        default = "default_drain_timeout",
        deserialize_with = "durations::deserialize"
    )]
    pub drain_timeout: Duration,
    #[serde(
        default = "default_session_timeout",
        deserialize_with = "durations::deserialize"
    )]
    pub session_timeout: Duration,
    /// Group members run by this source (Kafka Connect's `tasks.max`): partitions
    /// are spread over them and polled in parallel; order holds within a partition.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Messages polled and not yet acknowledged, over all partitions; past it the
    /// source pauses fetching.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// The same bound in payload bytes, for large messages.
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: usize,
    /// Encrypt and verify the connection (see `kafka::security`).
    #[serde(default)]
    pub tls: Option<TlsOptions>,
    /// Authenticate (see `kafka::security`).
    #[serde(default)]
    pub sasl: Option<SaslOptions>,
    #[serde(default)]
    pub librdkafka_options: LibrdkafkaOptions,
    /// A message that a component downstream rejected and no `dropped` output
    /// took: `skip` (default) logs, counts and commits past it; `stop` holds its
    /// partition there and delivers it again after a backoff (see `ack::RejectPolicy`).
    #[serde(default)]
    pub on_reject: RejectPolicy,
}

const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "bootstrap_servers"),
    ("group.id", "group_id"),
    ("auto.offset.reset", "auto_offset_reset"),
    ("enable.auto.commit", "commit_interval"),
    ("auto.commit.interval.ms", "commit_interval"),
    (
        "enable.auto.offset.store",
        "the source's acknowledgement tracking",
    ),
    ("session.timeout.ms", "session_timeout"),
];

impl KafkaSourceConfig {
    pub(super) fn security(&self) -> Security<'_> {
        Security {
            tls: self.tls.as_ref(),
            sasl: self.sasl.as_ref(),
        }
    }

    pub(super) fn validate(&self) -> Result<(), KafkaSourceError> {
        self.librdkafka_options.check_reserved(RESERVED)?;
        self.security()
            .check()
            .map_err(KafkaClientError::Security)?;
        if self.topics.0.is_empty() || self.topics.0.iter().any(|t| t.is_empty()) {
            return Err(KafkaSourceError::Option(
                "`topics` needs at least one non-empty topic name or ^regex".into(),
            ));
        }
        if self.group_id.is_empty() {
            return Err(KafkaSourceError::Option("`group_id` is empty".into()));
        }
        if !(1..=256).contains(&self.concurrency) {
            return Err(KafkaSourceError::Option(format!(
                "`concurrency` is {}; it must be between 1 and 256",
                self.concurrency
            )));
        }
        if self.max_in_flight == 0 || self.max_in_flight_bytes == 0 {
            return Err(KafkaSourceError::Option(
                "`max_in_flight` and `max_in_flight_bytes` must be at least 1".into(),
            ));
        }
        if self.commit_interval.is_zero() {
            return Err(KafkaSourceError::Option(
                "`commit_interval` must be longer than 0".into(),
            ));
        }
        let max_poll = self
            .librdkafka_options
            .get("max.poll.interval.ms")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(300_000);
        // A rebalance callback blocked longer than this gets the member thrown out.
        if self.drain_timeout.as_millis() as u64 >= max_poll {
            return Err(KafkaSourceError::Option(format!(
                "`drain_timeout` ({:?}) must be shorter than max.poll.interval.ms ({max_poll} ms)",
                self.drain_timeout
            )));
        }
        Ok(())
    }

    pub(super) fn client_config(
        &self,
        id: &str,
        member: usize,
    ) -> Result<rdkafka::ClientConfig, KafkaClientError> {
        let base = [
            ("bootstrap.servers", self.bootstrap_servers.clone()),
            ("group.id", self.group_id.clone()),
            ("client.id", format!("kwpipe-{id}-{member}")),
            (
                "auto.offset.reset",
                self.auto_offset_reset.as_str().to_string(),
            ),
            ("enable.auto.commit", "true".to_string()),
            (
                "auto.commit.interval.ms",
                self.commit_interval.as_millis().to_string(),
            ),
            ("enable.auto.offset.store", "false".to_string()),
            (
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            ),
            // Bounded prefetch: the default (64 MB per member) dwarfs max_in_flight.
            // Override with librdkafka_options for more read-ahead.
            ("queued.max.messages.kbytes", "4096".to_string()),
            // With a queue that small, librdkafka's default pause of 1 s whenever it
            // is full ran the consumer stop-and-go at half speed (benches/README.md,
            // "Kafka -> kwdb").
            ("fetch.queue.backoff.ms", "10".to_string()),
            // Consumer lag per partition for /metrics (`kafka_consumer_lag`).
            ("statistics.interval.ms", "5000".to_string()),
        ];
        kafka::client_config(&base, &self.security(), &self.librdkafka_options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_topic_forms() {
        let c: KafkaSourceConfig = toml::from_str(
            r#"
            bootstrap_servers = "127.0.0.1:9092"
            group_id = "g"
            topics = "^kw-.*"
            "#,
        )
        .unwrap();
        assert_eq!(c.topics.0, ["^kw-.*"]);
        assert_eq!(c.auto_offset_reset, OffsetReset::Earliest);
        assert_eq!(c.commit_interval, Duration::from_secs(5));
        assert_eq!(c.concurrency, 1);
        c.validate().unwrap();
        let cfg = c.client_config("src", 0).unwrap();
        assert_eq!(cfg.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(cfg.get("auto.commit.interval.ms"), Some("5000"));
        let c: KafkaSourceConfig = toml::from_str(
            r#"
            bootstrap_servers = "x:1"
            group_id = "g"
            topics = ["a", "b"]
            auto_offset_reset = "latest"
            commit_interval = "1s"
            concurrency = 4
            "#,
        )
        .unwrap();
        assert_eq!(c.topics.0, ["a", "b"]);
        assert_eq!(c.concurrency, 4);
    }

    #[test]
    fn bad_options_are_explained() {
        let parse = |extra: &str| {
            let c: KafkaSourceConfig = toml::from_str(&format!(
                "bootstrap_servers = \"x:1\"\ngroup_id = \"g\"\ntopics = [\"a\"]\n{extra}"
            ))
            .unwrap();
            c.validate().unwrap_err().to_string()
        };
        assert!(parse("concurrency = 0").contains("concurrency"));
        assert!(parse("drain_timeout = \"10m\"").contains("max.poll.interval.ms"));
        assert!(
            parse("librdkafka_options = { \"enable.auto.offset.store\" = true }")
                .contains("enable.auto.offset.store")
        );
        assert!(toml::from_str::<KafkaSourceConfig>(
            "bootstrap_servers = \"x:1\"\ngroup_id = \"g\"\ntopics = [\"a\"]\nnope = 1"
        )
        .is_err());
    }
}
