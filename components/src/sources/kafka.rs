//! `kafka` source: a consumer group member (or `concurrency` of them) whose offsets
//! follow end-to-end acknowledgements.
//!
//! Design, and why:
//! - Each group member is an rdkafka `BaseConsumer` polled by a thread of its own.
//!   Rebalance callbacks run on the polling thread and must block while in-flight
//!   events drain; on a thread of our own that blocks nothing else, and the tokio
//!   side never blocks.
//! - One async driver task emits the messages, tracks acknowledgements and stores
//!   offsets. Messages of one partition are cut into chunks (a run of consecutive
//!   messages polled together) that share one `BatchNotifier`, so tracking costs one
//!   future per chunk, not per message.
//! - Offsets: `enable.auto.offset.store=false`; the driver stores an offset only
//!   when every chunk up to it came back Delivered or Rejected, in order, per
//!   partition. librdkafka auto-commits what is stored every `commit_interval`.
//! - A Failed chunk blocks its partition: nothing after it is ever stored. The
//!   partition is seeked back to the chunk's first offset (after a backoff) and
//!   re-delivered in-process; acknowledgements of later chunks are ignored. Every
//!   (re)start of a partition carries an epoch so messages fetched before a seek or a
//!   rebalance are recognised and dropped, never emitted with a stale position.
//!   This is the opposite of Vector issue #24215, where later acks moved the offset
//!   past a failed message.
//! - On revoke (rebalance) and shutdown: wait up to `drain_timeout` for in-flight
//!   acknowledgements, store what completed, commit synchronously.
//! - Memory: at most `max_in_flight` messages and `max_in_flight_bytes` of payload
//!   polled and not yet acknowledged (plus librdkafka's bounded prefetch queue).
//!   Beyond that a polling thread stops polling, which keeps what librdkafka
//!   prefetched; after 5 s of that (an outage downstream) it pauses its partitions
//!   (purging the prefetch) and polls on, so group membership and rebalances are
//!   still served.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::{ClientContext, Offset};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::ack::{BatchNotifier, BatchStatusReceiver, EventStatus, RejectPolicy};
use crate::api::{
    Backoff, BuildContext, Component, ComponentConfig, ComponentContext, ComponentError, OutputDef,
};
use crate::durations;
use crate::event::{Event, EventKind, Metadata, RawMessage};
use crate::kafka::{self, KafkaClientError, LibrdkafkaOptions, SaslOptions, Security, TlsOptions};

#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error(transparent)]
    Client(#[from] KafkaClientError),
    #[error("invalid option: {0}")]
    Option(String),
    #[error("cannot subscribe to {topics:?}: {reason}")]
    Subscribe { topics: Vec<String>, reason: String },
    #[error("the consumer hit a fatal error: {0}")]
    Fatal(String),
    #[error("a polling thread failed: {0}")]
    Thread(String),
}

impl From<KafkaSourceError> for ComponentError {
    fn from(e: KafkaSourceError) -> Self {
        ComponentError::other(e)
    }
}

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
    fn security(&self) -> Security<'_> {
        Security {
            tls: self.tls.as_ref(),
            sasl: self.sasl.as_ref(),
        }
    }

    fn validate(&self) -> Result<(), KafkaSourceError> {
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

    fn client_config(
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

#[async_trait]
impl ComponentConfig for KafkaSourceConfig {
    fn type_name(&self) -> &'static str {
        "kafka"
    }

    fn input_kinds(&self) -> Vec<EventKind> {
        Vec::new()
    }

    fn outputs(&self) -> Vec<OutputDef> {
        vec![OutputDef::default(EventKind::Raw)]
    }

    fn check(&self) -> Result<(), ComponentError> {
        Ok(self.validate()?)
    }

    fn reject_policy(&self) -> Option<RejectPolicy> {
        Some(self.on_reject)
    }

    async fn healthcheck(&self, cx: &BuildContext) -> Result<(), ComponentError> {
        self.validate()?;
        let config = self
            .client_config(&cx.id, 0)
            .map_err(KafkaSourceError::from)?;
        let servers = self.bootstrap_servers.clone();
        let topics = self.topics.0.clone();
        let ca_file = self
            .tls
            .as_ref()
            .filter(|t| t.enabled)
            .and_then(|t| t.ca_file.clone());
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer<kafka::CheckContext> =
                kafka::create(&config, kafka::CheckContext::default())
                    .map_err(|e| ComponentError::msg(e.to_string()))?;
            kafka::check_cluster(
                consumer.client(),
                &|| {
                    // Not subscribed: a poll serves callbacks and yields no message.
                    let _ = consumer.poll(Duration::from_millis(100));
                },
                &servers,
                &topics,
                Duration::from_secs(10),
                ca_file.as_deref(),
            )
            .map_err(ComponentError::msg)
        })
        .await
        .map_err(ComponentError::other)??;
        Ok(())
    }

    async fn build(&self, cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        self.validate()?;
        let configs = (0..self.concurrency)
            .map(|member| self.client_config(&cx.id, member))
            .collect::<Result<_, _>>()
            .map_err(KafkaSourceError::from)?;
        Ok(Box::new(KafkaSource {
            configs,
            topics: self.topics.0.clone(),
            drain_timeout: self.drain_timeout,
            on_reject: self.on_reject,
            limits: Limits {
                messages: self.max_in_flight,
                bytes: self.max_in_flight_bytes,
            },
        }))
    }
}

struct KafkaSource {
    configs: Vec<rdkafka::ClientConfig>,
    topics: Vec<String>,
    drain_timeout: Duration,
    on_reject: RejectPolicy,
    limits: Limits,
}

/// Bounds on what is polled and not yet acknowledged.
#[derive(Clone, Copy, Debug)]
struct Limits {
    messages: usize,
    bytes: usize,
}

/// What is polled and not yet acknowledged, over every member.
#[derive(Debug, Default)]
struct Flow {
    messages: AtomicUsize,
    bytes: AtomicUsize,
}

impl Flow {
    fn add(&self, messages: usize, bytes: usize) {
        self.messages.fetch_add(messages, Ordering::AcqRel);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    fn sub(&self, messages: usize, bytes: usize) {
        self.messages.fetch_sub(messages, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    fn messages(&self) -> usize {
        self.messages.load(Ordering::Acquire)
    }

    /// At or past either bound.
    fn full(&self, l: Limits) -> bool {
        self.messages() >= l.messages || self.bytes.load(Ordering::Acquire) >= l.bytes
    }

    /// Messages and bytes left before the bounds.
    fn room(&self, l: Limits) -> (usize, usize) {
        (
            l.messages.saturating_sub(self.messages()),
            l.bytes.saturating_sub(self.bytes.load(Ordering::Acquire)),
        )
    }

    /// Down to half of both bounds.
    fn drained(&self, l: Limits) -> bool {
        self.messages() <= l.messages / 2 && self.bytes.load(Ordering::Acquire) <= l.bytes / 2
    }
}

/// One partition of one group member.
type Key = (usize, Arc<str>, i32);

/// Consecutive messages of one partition, polled together.
struct Polled {
    topic: Arc<str>,
    partition: i32,
    epoch: u64,
    first: i64,
    last: i64,
    /// Payload bytes of `messages`.
    bytes: usize,
    messages: Vec<RawMessage>,
}

enum FromMember {
    Messages {
        member: usize,
        chunks: Vec<Polled>,
    },
    Assigned {
        member: usize,
        partitions: Vec<(Arc<str>, i32, u64)>,
    },
    /// The member's thread waits (up to the deadline) for `done` before committing.
    Revoke {
        member: usize,
        partitions: Vec<(Arc<str>, i32)>,
        deadline: Instant,
        done: std_mpsc::SyncSender<()>,
    },
    Error {
        member: usize,
        error: String,
        fatal: bool,
    },
}

enum ToMember {
    /// Re-deliver from `offset`, if the partition is still at `from_epoch`.
    Seek {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        from_epoch: u64,
    },
}

/// State shared by a member's thread, its rebalance callbacks and the driver.
struct Shared {
    /// The component id, for metric labels.
    id: Arc<str>,
    member: usize,
    tx: mpsc::UnboundedSender<FromMember>,
    /// Epoch per partition, bumped by every assignment and every seek.
    epochs: Mutex<HashMap<(Arc<str>, i32), u64>>,
    /// Bumped by every rebalance, so the thread starts new chunks after one.
    rebalances: AtomicU64,
    drain_timeout: Duration,
}

struct MemberContext(Arc<Shared>);

impl ClientContext for MemberContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): the consumer lag
    /// of each assigned partition, high watermark minus committed offset.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 || p.consumer_lag < 0 || p.fetch_state == "none" {
                    continue;
                }
                metrics::gauge!(
                    "kafka_consumer_lag",
                    "component_id" => self.0.id.to_string(),
                    "topic" => topic.clone(),
                    "partition" => partition.to_string(),
                )
                .set(p.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let shared = &self.0;
        shared.rebalances.fetch_add(1, Ordering::AcqRel);
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions: Vec<_> = tpl
                .elements()
                .iter()
                .map(|e| (Arc::<str>::from(e.topic()), e.partition()))
                .collect();
            tracing::debug!(
                member = shared.member,
                ?partitions,
                "partitions revoked; draining"
            );
            let (done_tx, done_rx) = std_mpsc::sync_channel(1);
            let deadline = Instant::now() + shared.drain_timeout;
            let sent = shared.tx.send(FromMember::Revoke {
                member: shared.member,
                partitions,
                deadline,
                done: done_tx,
            });
            if sent.is_ok() {
                // The driver answers at its own deadline; the margin covers a driver
                // busy with a slow downstream.
                let _ = done_rx.recv_timeout(shared.drain_timeout + Duration::from_secs(2));
            }
            // Whatever the driver stored is final for this owner; the next one starts
            // right after it.
            commit_stored(consumer, shared.member);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let shared = &self.0;
        shared.rebalances.fetch_add(1, Ordering::AcqRel);
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut epochs = shared.epochs.lock().expect("epochs lock");
                let partitions: Vec<_> = tpl
                    .elements()
                    .iter()
                    .map(|e| {
                        let key = (Arc::<str>::from(e.topic()), e.partition());
                        let epoch = epochs.entry(key.clone()).or_insert(0);
                        *epoch += 1;
                        (key.0, key.1, *epoch)
                    })
                    .collect();
                tracing::debug!(member = shared.member, ?partitions, "partitions assigned");
                let _ = shared.tx.send(FromMember::Assigned {
                    member: shared.member,
                    partitions,
                });
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(member = shared.member, error = %e, "rebalance error");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::trace!(member = self.0.member, ?offsets, "offsets committed"),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(member = self.0.member, error = %e, "offset commit failed"),
        }
    }
}

fn commit_stored<C: ConsumerContext>(consumer: &BaseConsumer<C>, member: usize) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(member, error = %e, "synchronous offset commit failed"),
    }
}

type Member = BaseConsumer<MemberContext>;

/// How many messages one poll round gathers before handing them over.
const POLL_BATCH: usize = 1024;
/// How long a member may stop polling while downstream catches up before it
/// pauses its partitions instead (well inside `max.poll.interval.ms`).
const STALL_BEFORE_PAUSE: Duration = Duration::from_secs(5);
const STALL_SLEEP: Duration = Duration::from_millis(2);
const POLL_WAIT: Duration = Duration::from_millis(100);

fn to_raw(m: &BorrowedMessage<'_>, topic: &str) -> RawMessage {
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        // kwpipe's own prefix is kwpipe's alone (dead-letter headers).
                        crate::transforms::decode::incoming_header_name(h.key).into_owned(),
                        Bytes::copy_from_slice(h.value.unwrap_or_default()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    RawMessage {
        payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
        key: m.key().map(Bytes::copy_from_slice),
        headers,
        meta: Arc::new(Metadata {
            topic: Some(topic.to_string()),
            partition: Some(m.partition()),
            offset: Some(m.offset()),
            timestamp: m.timestamp().to_millis(),
            ..Default::default()
        }),
        finalizers: Default::default(),
    }
}

/// The polling loop of one group member.
fn poll_member(
    consumer: Arc<Member>,
    shared: Arc<Shared>,
    commands: std_mpsc::Receiver<ToMember>,
    stop: Arc<AtomicBool>,
    flow: Arc<Flow>,
    limits: Limits,
) {
    let mut paused = false;
    let mut stalled_since: Option<Instant> = None;
    let mut seen_rebalances = u64::MAX;
    let mut epoch_cache: HashMap<(Arc<str>, i32), u64> = HashMap::new();
    while !stop.load(Ordering::Acquire) {
        while let Ok(ToMember::Seek {
            topic,
            partition,
            offset,
            from_epoch,
        }) = commands.try_recv()
        {
            let mut epochs = shared.epochs.lock().expect("epochs lock");
            let key = (topic.clone(), partition);
            if epochs.get(&key) != Some(&from_epoch) {
                continue; // the partition moved on (rebalanced) since the seek was asked for
            }
            // The epoch moves even when the seek fails, so the driver, which already
            // counts on it, never accepts messages fetched from the old position.
            epochs.insert(key, from_epoch + 1);
            drop(epochs);
            epoch_cache.clear();
            if let Err(e) = consumer.seek(
                &topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(10),
            ) {
                tracing::warn!(%topic, partition, offset, error = %e, "seek for re-delivery failed");
            }
            tracing::info!(%topic, partition, offset, "re-delivering from a failed offset");
        }

        let rebalances = shared.rebalances.load(Ordering::Acquire);
        let full = flow.full(limits);
        if rebalances != seen_rebalances {
            epoch_cache.clear();
            seen_rebalances = rebalances;
            if paused {
                // A new assignment starts unpaused.
                if let Ok(a) = consumer.assignment() {
                    let _ = consumer.pause(&a);
                }
            }
        }
        // Over the limit, stop taking messages first: librdkafka's own queue fills
        // and its fetching stops, and nothing prefetched is thrown away (pausing
        // purges that queue, and resuming fetches it all again). Only after a long
        // stall (a database down for minutes) pause and go on polling, so the
        // group keeps this member instead of evicting it for not polling.
        if full && !paused {
            let since = *stalled_since.get_or_insert_with(Instant::now);
            if since.elapsed() < STALL_BEFORE_PAUSE {
                std::thread::sleep(STALL_SLEEP);
                continue;
            }
        } else if !full {
            stalled_since = None;
        }
        if !paused && full {
            if let Ok(a) = consumer.assignment() {
                if consumer.pause(&a).is_ok() {
                    paused = true;
                    tracing::debug!(
                        member = shared.member,
                        in_flight = flow.messages(),
                        "paused fetching"
                    );
                }
            }
        } else if paused && flow.drained(limits) {
            if let Ok(a) = consumer.assignment() {
                if consumer.resume(&a).is_ok() {
                    paused = false;
                    tracing::debug!(
                        member = shared.member,
                        in_flight = flow.messages(),
                        "resumed fetching"
                    );
                }
            }
        }

        let mut chunks: Vec<Polled> = Vec::new();
        let mut count = 0;
        let mut bytes = 0;
        let mut wait = POLL_WAIT;
        // A round takes no more than the room left, so the bounds hold to within a
        // message per member.
        let (room_messages, room_bytes) = flow.room(limits);
        while count < POLL_BATCH.min(room_messages.max(1)) && bytes < room_bytes.max(1) {
            let Some(result) = consumer.poll(wait) else {
                break;
            };
            wait = Duration::ZERO;
            let m = match result {
                Ok(m) => m,
                Err(e) => {
                    let fatal = consumer.client().fatal_error().is_some();
                    let _ = shared.tx.send(FromMember::Error {
                        member: shared.member,
                        error: e.to_string(),
                        fatal,
                    });
                    break;
                }
            };
            let rebalances = shared.rebalances.load(Ordering::Acquire);
            if rebalances != seen_rebalances {
                // Epochs may have moved under this batch; look them up afresh.
                epoch_cache.clear();
                seen_rebalances = rebalances;
                chunks.push(Polled {
                    topic: Arc::from(""),
                    partition: -1,
                    epoch: u64::MAX,
                    first: 0,
                    last: -1,
                    bytes: 0,
                    messages: Vec::new(),
                });
            }
            let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
            let same = chunks
                .last()
                .is_some_and(|c| c.partition == partition && &*c.topic == topic && c.last < offset);
            if !same {
                let topic: Arc<str> = Arc::from(topic);
                let epoch = *epoch_cache
                    .entry((topic.clone(), partition))
                    .or_insert_with(|| {
                        shared
                            .epochs
                            .lock()
                            .expect("epochs lock")
                            .get(&(topic.clone(), partition))
                            .copied()
                            .unwrap_or(0)
                    });
                chunks.push(Polled {
                    topic,
                    partition,
                    epoch,
                    first: offset,
                    last: offset,
                    bytes: 0,
                    messages: Vec::new(),
                });
            }
            let chunk = chunks.last_mut().expect("a chunk was just ensured");
            let raw = to_raw(&m, &chunk.topic);
            chunk.last = offset;
            chunk.bytes += raw.payload.len();
            bytes += raw.payload.len();
            chunk.messages.push(raw);
            count += 1;
        }
        chunks.retain(|c| !c.messages.is_empty());
        if count > 0 {
            flow.add(count, bytes);
            if shared
                .tx
                .send(FromMember::Messages {
                    member: shared.member,
                    chunks,
                })
                .is_err()
            {
                break;
            }
        }
    }
}

struct Chunk {
    id: u64,
    first: i64,
    last: i64,
    ok: bool,
}

struct PendingSeek {
    due: Instant,
    offset: i64,
    from_epoch: u64,
}

struct Part {
    incarnation: u64,
    /// The epoch of messages the driver accepts for this partition.
    epoch: u64,
    chunks: VecDeque<Chunk>,
    seek: Option<PendingSeek>,
    backoff: Backoff,
    revoking: bool,
}

struct AckDone {
    key: Key,
    incarnation: u64,
    chunk: u64,
    count: usize,
    bytes: usize,
    status: EventStatus,
}

type AckFuture = Pin<Box<dyn Future<Output = AckDone> + Send>>;

struct PendingRevoke {
    /// The partitions and the incarnation of each that is being revoked: a partition
    /// assigned again meanwhile is a new incarnation, and not this revoke's to remove.
    keys: Vec<(Key, u64)>,
    deadline: Instant,
    done: std_mpsc::SyncSender<()>,
}

const REDELIVERY_MIN: Duration = Duration::from_secs(1);
const REDELIVERY_MAX: Duration = Duration::from_secs(30);

struct Driver {
    members: Vec<Arc<Member>>,
    commands: Vec<std_mpsc::Sender<ToMember>>,
    parts: HashMap<Key, Part>,
    acks: FuturesUnordered<AckFuture>,
    revokes: Vec<PendingRevoke>,
    flow: Arc<Flow>,
    next_id: u64,
    on_reject: RejectPolicy,
}

impl Driver {
    fn assigned(&mut self, member: usize, partitions: Vec<(Arc<str>, i32, u64)>) {
        for (topic, partition, epoch) in partitions {
            self.next_id += 1;
            self.parts.insert(
                (member, topic, partition),
                Part {
                    incarnation: self.next_id,
                    epoch,
                    chunks: VecDeque::new(),
                    seek: None,
                    backoff: Backoff::new(REDELIVERY_MIN, REDELIVERY_MAX),
                    revoking: false,
                },
            );
        }
    }

    /// Registers a polled chunk; gives back its messages with finalizers attached,
    /// or None when the chunk is stale and dropped.
    fn accept(&mut self, member: usize, chunk: Polled) -> Option<Vec<RawMessage>> {
        let key: Key = (member, chunk.topic, chunk.partition);
        let (count, bytes) = (chunk.messages.len(), chunk.bytes);
        let part = match self.parts.get_mut(&key) {
            Some(p) if p.epoch == chunk.epoch && !p.revoking => p,
            _ => {
                // Fetched before a seek or a rebalance: never emitted, never stored.
                self.flow.sub(count, bytes);
                return None;
            }
        };
        self.next_id += 1;
        let id = self.next_id;
        part.chunks.push_back(Chunk {
            id,
            first: chunk.first,
            last: chunk.last,
            ok: false,
        });
        let (notifier, rx) = BatchNotifier::new_with_receiver();
        let incarnation = part.incarnation;
        let messages = chunk
            .messages
            .into_iter()
            .map(|mut m| {
                m.finalizers = notifier.finalizer();
                m
            })
            .collect();
        self.acks
            .push(Box::pin(wait_ack(rx, key, incarnation, id, count, bytes)));
        Some(messages)
    }

    fn acked(&mut self, done: AckDone) {
        self.flow.sub(done.count, done.bytes);
        let Some(part) = self.parts.get_mut(&done.key) else {
            return;
        };
        if part.incarnation != done.incarnation {
            return;
        }
        let Ok(index) = part.chunks.binary_search_by_key(&done.chunk, |c| c.id) else {
            return; // discarded by an earlier failure
        };
        let (member, topic, partition) = &done.key;
        if !self.on_reject.passes(done.status) {
            let first = part.chunks[index].first;
            part.chunks.truncate(index);
            let delay = part.backoff.next_delay();
            match &mut part.seek {
                Some(seek) => seek.offset = seek.offset.min(first),
                None => {
                    part.seek = Some(PendingSeek {
                        due: Instant::now() + delay,
                        offset: first,
                        from_epoch: part.epoch,
                    });
                    part.epoch += 1;
                }
            }
            if done.status == EventStatus::Rejected {
                tracing::error!(
                    %topic, partition, offset = first, retry_in = ?delay,
                    "a message was rejected and on_reject = \"stop\" (Connect: errors.tolerance = none): \
                     its partition is held there and re-delivers from it; fix the cause logged \
                     above, wire the rejecting component's `dropped` output, or set on_reject = \"skip\""
                );
            } else {
                tracing::warn!(
                    %topic, partition, offset = first, retry_in = ?delay,
                    "a message was not delivered; its partition is held there and re-delivers from it"
                );
            }
            return;
        }
        part.chunks[index].ok = true;
        let mut store = None;
        while part.chunks.front().is_some_and(|c| c.ok) {
            store = part.chunks.pop_front().map(|c| c.last);
        }
        if let Some(last) = store {
            part.backoff = Backoff::new(REDELIVERY_MIN, REDELIVERY_MAX);
            // rd_kafka_offset_store commits last + 1: the next message to read.
            if let Err(e) = self.members[*member].store_offset(topic, *partition, last) {
                tracing::debug!(%topic, partition, last, error = %e, "offset not stored");
            }
        }
    }

    fn due_seeks(&mut self, now: Instant) {
        for ((member, topic, partition), part) in &mut self.parts {
            if part.seek.as_ref().is_some_and(|s| s.due <= now) {
                let seek = part.seek.take().expect("checked");
                let _ = self.commands[*member].send(ToMember::Seek {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: seek.offset,
                    from_epoch: seek.from_epoch,
                });
            }
        }
    }

    fn next_seek(&self) -> Option<Instant> {
        self.parts
            .values()
            .filter_map(|p| p.seek.as_ref().map(|s| s.due))
            .min()
    }

    fn revoke(
        &mut self,
        member: usize,
        partitions: Vec<(Arc<str>, i32)>,
        deadline: Instant,
        done: std_mpsc::SyncSender<()>,
    ) {
        let mut keys = Vec::new();
        for (topic, partition) in partitions {
            let key = (member, topic, partition);
            if let Some(part) = self.parts.get_mut(&key) {
                part.revoking = true;
                part.seek = None;
                keys.push((key, part.incarnation));
            }
        }
        self.revokes.push(PendingRevoke {
            keys,
            deadline,
            done,
        });
        self.check_revokes(Instant::now());
    }

    fn check_revokes(&mut self, now: Instant) {
        let parts = &mut self.parts;
        self.revokes.retain(|r| {
            let drained = r.keys.iter().all(|(k, i)| {
                revoked(parts, k, *i).is_none_or(|p| p.chunks.is_empty())
            });
            if !drained && now < r.deadline {
                return true;
            }
            if !drained {
                tracing::warn!("drain_timeout passed with events in flight; they will be consumed again by the next owner");
            }
            for (k, i) in &r.keys {
                if revoked(parts, k, *i).is_some() {
                    parts.remove(k);
                }
            }
            let _ = r.done.send(());
            false
        });
    }

    fn in_flight_chunks(&self) -> usize {
        self.parts.values().map(|p| p.chunks.len()).sum()
    }
}

/// The part a revoke is about: the same partition in the same incarnation.
fn revoked<'a>(parts: &'a HashMap<Key, Part>, key: &Key, incarnation: u64) -> Option<&'a Part> {
    parts.get(key).filter(|p| p.incarnation == incarnation)
}

async fn wait_ack(
    rx: BatchStatusReceiver,
    key: Key,
    incarnation: u64,
    chunk: u64,
    count: usize,
    bytes: usize,
) -> AckDone {
    let status = rx.await;
    AckDone {
        key,
        incarnation,
        chunk,
        count,
        bytes,
        status,
    }
}

#[async_trait]
impl Component for KafkaSource {
    async fn run(self: Box<Self>, cx: ComponentContext) -> Result<(), ComponentError> {
        let ComponentContext {
            mut outputs,
            shutdown,
            id: cx_id,
            ..
        } = cx;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flow = Arc::new(Flow::default());
        let mut members = Vec::new();
        let mut commands = Vec::new();
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        for (index, config) in self.configs.iter().enumerate() {
            let shared = Arc::new(Shared {
                id: cx_id.clone(),
                member: index,
                tx: tx.clone(),
                epochs: Mutex::new(HashMap::new()),
                rebalances: AtomicU64::new(0),
                drain_timeout: self.drain_timeout,
            });
            let consumer: Member = kafka::create(config, MemberContext(shared.clone()))
                .map_err(KafkaSourceError::from)?;
            consumer
                .subscribe(&topics)
                .map_err(|e| KafkaSourceError::Subscribe {
                    topics: self.topics.clone(),
                    reason: e.to_string(),
                })?;
            let consumer = Arc::new(consumer);
            let (cmd_tx, cmd_rx) = std_mpsc::channel();
            let thread = {
                let consumer = consumer.clone();
                let stop = stop.clone();
                let flow = flow.clone();
                let limits = self.limits;
                std::thread::Builder::new()
                    .name(format!("kafka-poll-{index}"))
                    .spawn(move || poll_member(consumer, shared, cmd_rx, stop, flow, limits))
                    .map_err(|e| ComponentError::io("cannot start a polling thread", e))?
            };
            members.push(consumer);
            commands.push(cmd_tx);
            threads.push(thread);
        }
        drop(tx);
        let mut driver = Driver {
            members,
            commands,
            parts: HashMap::new(),
            acks: FuturesUnordered::new(),
            revokes: Vec::new(),
            flow,
            next_id: 0,
            on_reject: self.on_reject,
        };

        // Messages handed downstream and not yet acknowledged: at the bound, the
        // source waits (a stalled sink shows here first).
        let in_flight = metrics::gauge!(
            "kafka_source_in_flight_messages",
            "component_id" => cx_id.to_string(),
        );
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result: Result<(), ComponentError> = loop {
            let next_seek = driver.next_seek();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                Some(done) = driver.acks.next(), if !driver.acks.is_empty() => {
                    driver.acked(done);
                    if !driver.revokes.is_empty() {
                        driver.check_revokes(Instant::now());
                    }
                }
                msg = rx.recv() => match msg {
                    Some(FromMember::Messages { member, chunks }) => {
                        let mut failed = None;
                        for chunk in chunks {
                            if let Some(messages) = driver.accept(member, chunk) {
                                for m in messages {
                                    if let Err(e) = outputs.send(Event::Raw(m)).await {
                                        failed = Some(e);
                                        break;
                                    }
                                }
                            }
                            if failed.is_some() {
                                break;
                            }
                        }
                        if let Some(e) = failed {
                            break Err(e);
                        }
                    }
                    Some(FromMember::Assigned { member, partitions }) => driver.assigned(member, partitions),
                    Some(FromMember::Revoke { member, partitions, deadline, done }) => {
                        driver.revoke(member, partitions, deadline, done)
                    }
                    Some(FromMember::Error { member, error, fatal }) => {
                        if fatal {
                            break Err(KafkaSourceError::Fatal(error).into());
                        }
                        outputs.metrics().error("consume");
                        if error.contains("Unknown topic") {
                            // A topic that does not exist: the operator must hear of it.
                            tracing::warn!(member, "{error}");
                        } else {
                            // librdkafka logs connection trouble itself and retries it.
                            tracing::debug!(member, %error, "consumer error");
                        }
                    }
                    None => break Err(KafkaSourceError::Thread("every polling thread stopped".into()).into()),
                },
                _ = tokio::time::sleep_until(next_seek.unwrap_or_else(Instant::now)), if next_seek.is_some() => {
                    driver.due_seeks(Instant::now());
                }
                _ = tick.tick() => {
                    in_flight.set(driver.flow.messages() as f64);
                    if !driver.revokes.is_empty() {
                        driver.check_revokes(Instant::now());
                    }
                }
            }
        };

        // Stop fetching, let the graph drain, store what was acknowledged in time,
        // commit it, and leave the group.
        stop.store(true, Ordering::Release);
        drop(rx); // unblocks a rebalance callback waiting on us, and drops unsent messages
        driver.revokes.clear();
        drop(outputs);
        let deadline = Instant::now() + self.drain_timeout;
        while driver.in_flight_chunks() > 0 {
            tokio::select! {
                done = driver.acks.next() => match done {
                    Some(done) => driver.acked(done),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(
                        chunks = driver.in_flight_chunks(),
                        "drain_timeout passed at shutdown; unacknowledged messages will be consumed again"
                    );
                    break;
                }
            }
        }
        let members = std::mem::take(&mut driver.members);
        drop(driver);
        tokio::task::spawn_blocking(move || {
            for (index, thread) in threads.into_iter().enumerate() {
                if thread.join().is_err() {
                    tracing::error!(member = index, "polling thread panicked");
                }
            }
            for (index, member) in members.into_iter().enumerate() {
                commit_stored(&member, index);
                drop(member); // closes the consumer: leaves the group at once
            }
        })
        .await
        .map_err(ComponentError::other)?;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polled(topic: &Arc<str>, epoch: u64, offset: i64) -> Polled {
        Polled {
            topic: topic.clone(),
            partition: 0,
            epoch,
            first: offset,
            last: offset,
            bytes: 1,
            messages: vec![RawMessage {
                payload: Bytes::from_static(b"m"),
                key: None,
                headers: Vec::new(),
                meta: Default::default(),
                finalizers: Default::default(),
            }],
        }
    }

    /// A partition revoked and assigned again before the revoke finished (the
    /// rebalance callback gave up waiting for a busy driver) belongs to its new
    /// owner: finishing the old revoke must not remove it, or every message
    /// fetched for it afterwards would be dropped as stale.
    #[test]
    fn a_finished_revoke_leaves_a_reassigned_partition_alone() {
        let flow = Arc::new(Flow::default());
        let mut driver = Driver {
            members: Vec::new(),
            commands: Vec::new(),
            parts: HashMap::new(),
            acks: FuturesUnordered::new(),
            revokes: Vec::new(),
            flow: flow.clone(),
            next_id: 0,
            on_reject: RejectPolicy::Skip,
        };
        let topic: Arc<str> = Arc::from("t");
        driver.assigned(0, vec![(topic.clone(), 0, 1)]);
        flow.add(1, 1);
        let in_flight = driver
            .accept(0, polled(&topic, 1, 10))
            .expect("current epoch");
        let (done, revoke_done) = std_mpsc::sync_channel(1);
        let deadline = Instant::now() + Duration::from_secs(60);
        driver.revoke(0, vec![(topic.clone(), 0)], deadline, done);
        assert!(
            revoke_done.try_recv().is_err(),
            "a chunk is still in flight"
        );
        driver.assigned(0, vec![(topic.clone(), 0, 2)]);
        driver.check_revokes(Instant::now());
        assert!(
            revoke_done.try_recv().is_ok(),
            "the old incarnation is gone"
        );
        flow.add(1, 1);
        assert!(
            driver.accept(0, polled(&topic, 2, 10)).is_some(),
            "the new owner's messages are taken"
        );
        drop(in_flight);
    }

    /// Issue 18, item 2: a message rejected downstream with no `dropped` output
    /// taking it holds its partition under `on_reject = "stop"` (Connect's
    /// `errors.tolerance = none`), as a failed one does: no offset is stored
    /// past it and it is delivered again.
    #[test]
    fn a_rejected_message_holds_its_partition_under_stop() {
        let flow = Arc::new(Flow::default());
        let mut driver = Driver {
            members: Vec::new(),
            commands: Vec::new(),
            parts: HashMap::new(),
            acks: FuturesUnordered::new(),
            revokes: Vec::new(),
            flow: flow.clone(),
            next_id: 0,
            on_reject: RejectPolicy::Stop,
        };
        let topic: Arc<str> = Arc::from("t");
        driver.assigned(0, vec![(topic.clone(), 0, 1)]);
        flow.add(1, 1);
        let in_flight = driver
            .accept(0, polled(&topic, 1, 10))
            .expect("current epoch");
        let key = (0, topic.clone(), 0);
        let chunk = driver.parts[&key].chunks[0].id;
        driver.acked(AckDone {
            key: key.clone(),
            incarnation: driver.parts[&key].incarnation,
            chunk,
            count: 1,
            bytes: 1,
            status: EventStatus::Rejected,
        });
        let part = &driver.parts[&key];
        assert!(part.chunks.is_empty(), "nothing is left to store");
        assert_eq!(part.seek.as_ref().map(|s| s.offset), Some(10));
        drop(in_flight);
    }

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
