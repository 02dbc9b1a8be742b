//! One consumer group member: its rdkafka callbacks and the thread that polls it.
//!
//! Rebalance callbacks run on the polling thread and block there while the task
//! drains in-flight events; on a thread of its own that blocks nothing else.
//! Every (re)start of a partition (an assignment, a seek) bumps its *epoch*;
//! every chunk carries the epoch it was fetched in, so the task drops messages
//! fetched before a seek or a rebalance instead of emitting them with a stale
//! position.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::{ClientContext, Offset};
use tokio::sync::mpsc;

use super::flow::{Flow, Limits};
use super::messages::{FromMember, PartitionKey, Polled, ToMember};
use crate::event::{Metadata, RawMessage};
use crate::headers::incoming_header_name;

/// A group member's consumer.
pub(super) type Member = BaseConsumer<MemberContext>;

/// State shared by a member's thread, its rebalance callbacks and the task.
pub(super) struct Shared {
    /// The component id, for metric labels.
    pub id: Arc<str>,
    pub member: usize,
    pub tx: mpsc::UnboundedSender<FromMember>,
    /// Epoch per partition, bumped by every assignment and every seek.
    pub epochs: Mutex<HashMap<PartitionKey, u64>>,
    /// Bumped by every rebalance, so the thread starts new chunks after one.
    pub rebalances: AtomicU64,
    pub drain_timeout: Duration,
}

pub(super) struct MemberContext(pub Arc<Shared>);

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

fn partitions_of(tpl: &TopicPartitionList) -> impl Iterator<Item = PartitionKey> + '_ {
    tpl.elements()
        .into_iter()
        .map(|e| PartitionKey::new(e.topic(), e.partition()))
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let shared = &self.0;
        shared.rebalances.fetch_add(1, Ordering::AcqRel);
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions: Vec<_> = partitions_of(tpl).collect();
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
                // The task answers at its own deadline; the margin covers a task
                // busy with a slow downstream.
                let _ = done_rx.recv_timeout(shared.drain_timeout + Duration::from_secs(2));
            }
            // Whatever the task stored is final for this owner; the next one starts
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
                let partitions: Vec<_> = partitions_of(tpl)
                    .map(|key| {
                        let epoch = epochs.entry(key.clone()).or_insert(0);
                        *epoch += 1;
                        (key, *epoch)
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

/// Commits the offsets stored so far, synchronously (a revoke, shutdown).
pub(super) fn commit_stored<C: ConsumerContext>(consumer: &BaseConsumer<C>, member: usize) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(member, error = %e, "synchronous offset commit failed"),
    }
}

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
                        incoming_header_name(h.key).into_owned(),
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

/// The polling loop of one group member, run on a thread of its own.
pub(super) struct PollLoop {
    pub consumer: Arc<Member>,
    pub shared: Arc<Shared>,
    pub commands: std_mpsc::Receiver<ToMember>,
    pub stop: Arc<AtomicBool>,
    pub flow: Arc<Flow>,
    pub limits: Limits,
    paused: bool,
    stalled_since: Option<Instant>,
    seen_rebalances: u64,
    /// The epochs of the partitions seen since the last rebalance or seek, so a
    /// round does not take the shared lock per message.
    epoch_cache: HashMap<PartitionKey, u64>,
}

/// What one round of polls gathered.
struct Round {
    chunks: Vec<Polled>,
    count: usize,
    bytes: usize,
}

impl PollLoop {
    pub fn new(
        consumer: Arc<Member>,
        shared: Arc<Shared>,
        commands: std_mpsc::Receiver<ToMember>,
        stop: Arc<AtomicBool>,
        flow: Arc<Flow>,
        limits: Limits,
    ) -> Self {
        PollLoop {
            consumer,
            shared,
            commands,
            stop,
            flow,
            limits,
            paused: false,
            stalled_since: None,
            seen_rebalances: u64::MAX,
            epoch_cache: HashMap::new(),
        }
    }

    pub fn run(mut self) {
        while !self.stop.load(Ordering::Acquire) {
            self.apply_seeks();
            let full = self.flow.full(self.limits);
            if self.rebalanced() && self.paused {
                // A new assignment starts unpaused.
                if let Ok(a) = self.consumer.assignment() {
                    let _ = self.consumer.pause(&a);
                }
            }
            if self.wait_for_room(full) {
                continue;
            }
            self.pause_or_resume(full);
            let round = self.poll_round();
            if round.count > 0 && !self.hand_over(round) {
                break; // the task is gone
            }
        }
    }

    /// Seeks the task asked for (re-delivery after a failed chunk).
    fn apply_seeks(&mut self) {
        while let Ok(ToMember::Seek {
            partition: key,
            offset,
            from_epoch,
        }) = self.commands.try_recv()
        {
            let mut epochs = self.shared.epochs.lock().expect("epochs lock");
            if epochs.get(&key) != Some(&from_epoch) {
                continue; // the partition moved on (rebalanced) since the seek was asked for
            }
            // The epoch moves even when the seek fails, so the task, which already
            // counts on it, never accepts messages fetched from the old position.
            epochs.insert(key.clone(), from_epoch + 1);
            drop(epochs);
            self.epoch_cache.clear();
            let PartitionKey { topic, partition } = &key;
            if let Err(e) = self.consumer.seek(
                topic,
                *partition,
                Offset::Offset(offset),
                Duration::from_secs(10),
            ) {
                tracing::warn!(%topic, partition, offset, error = %e, "seek for re-delivery failed");
            }
            tracing::info!(%topic, partition, offset, "re-delivering from a failed offset");
        }
    }

    /// Whether a rebalance happened since the last look; epochs may have moved,
    /// so the cache is dropped.
    fn rebalanced(&mut self) -> bool {
        let rebalances = self.shared.rebalances.load(Ordering::Acquire);
        if rebalances == self.seen_rebalances {
            return false;
        }
        self.epoch_cache.clear();
        self.seen_rebalances = rebalances;
        true
    }

    /// Over the limit, stop taking messages first: librdkafka's own queue fills
    /// and its fetching stops, and nothing prefetched is thrown away (pausing
    /// purges that queue, and resuming fetches it all again). Only after a long
    /// stall (a database down for minutes) pause and go on polling, so the
    /// group keeps this member instead of evicting it for not polling. True when
    /// the loop should go round again without polling.
    fn wait_for_room(&mut self, full: bool) -> bool {
        if full && !self.paused {
            let since = *self.stalled_since.get_or_insert_with(Instant::now);
            if since.elapsed() < STALL_BEFORE_PAUSE {
                std::thread::sleep(STALL_SLEEP);
                return true;
            }
        } else if !full {
            self.stalled_since = None;
        }
        false
    }

    /// Pauses the assignment when still full after the stall, resumes it once
    /// down to half the bounds.
    fn pause_or_resume(&mut self, full: bool) {
        if !self.paused && full {
            if let Ok(a) = self.consumer.assignment() {
                if self.consumer.pause(&a).is_ok() {
                    self.paused = true;
                    tracing::debug!(
                        member = self.shared.member,
                        in_flight = self.flow.messages(),
                        "paused fetching"
                    );
                }
            }
        } else if self.paused && self.flow.drained(self.limits) {
            if let Ok(a) = self.consumer.assignment() {
                if self.consumer.resume(&a).is_ok() {
                    self.paused = false;
                    tracing::debug!(
                        member = self.shared.member,
                        in_flight = self.flow.messages(),
                        "resumed fetching"
                    );
                }
            }
        }
    }

    /// The partition's current epoch, from the cache or the shared map.
    fn epoch_of(&mut self, key: &PartitionKey) -> u64 {
        let shared = &self.shared;
        *self.epoch_cache.entry(key.clone()).or_insert_with(|| {
            shared
                .epochs
                .lock()
                .expect("epochs lock")
                .get(key)
                .copied()
                .unwrap_or(0)
        })
    }

    /// Polls until a batch is gathered, the room left is used up or nothing more
    /// is waiting; cuts what came into chunks of consecutive messages of one
    /// partition. A round takes no more than the room left, so the bounds hold
    /// to within a message per member.
    fn poll_round(&mut self) -> Round {
        let mut round = Round {
            chunks: Vec::new(),
            count: 0,
            bytes: 0,
        };
        let mut wait = POLL_WAIT;
        let (room_messages, room_bytes) = self.flow.room(self.limits);
        let consumer = self.consumer.clone();
        while round.count < POLL_BATCH.min(room_messages.max(1)) && round.bytes < room_bytes.max(1)
        {
            let Some(result) = consumer.poll(wait) else {
                break;
            };
            wait = Duration::ZERO;
            let m = match result {
                Ok(m) => m,
                Err(error) => {
                    let fatal = consumer.client().fatal_error().is_some();
                    let _ = self.shared.tx.send(FromMember::Error {
                        member: self.shared.member,
                        error,
                        fatal,
                    });
                    break;
                }
            };
            // After a rebalance the epochs may have moved under this round: the
            // next message starts a chunk of its own, with its epoch looked up afresh.
            let rebalanced = self.rebalanced();
            let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
            let continues = !rebalanced
                && round.chunks.last().is_some_and(|c| {
                    c.partition.partition == partition
                        && &*c.partition.topic == topic
                        && c.last < offset
                });
            if !continues {
                let key = PartitionKey::new(topic, partition);
                let epoch = self.epoch_of(&key);
                round.chunks.push(Polled {
                    partition: key,
                    epoch,
                    first: offset,
                    last: offset,
                    bytes: 0,
                    messages: Vec::new(),
                });
            }
            let chunk = round.chunks.last_mut().expect("a chunk was just ensured");
            let raw = to_raw(&m, &chunk.partition.topic);
            chunk.last = offset;
            chunk.bytes += raw.payload.len();
            round.bytes += raw.payload.len();
            chunk.messages.push(raw);
            round.count += 1;
        }
        round
    }

    /// Counts the round in flight and sends it to the task; false when the task
    /// is gone.
    fn hand_over(&self, round: Round) -> bool {
        self.flow.add(round.count, round.bytes);
        self.shared
            .tx
            .send(FromMember::Messages {
                member: self.shared.member,
                chunks: round.chunks,
            })
            .is_ok()
    }
}
