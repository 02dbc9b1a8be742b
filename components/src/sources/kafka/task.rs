//! The source's task: starts the members' polling threads, emits what they poll,
//! feeds acknowledgements to the [`Driver`] and carries out what it decides
//! (store an offset, seek back, answer a revoke), and at shutdown drains and
//! commits.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::mpsc;

use super::driver::{AckTag, Driver, Offsets, Store};
use super::error::KafkaSourceError;
use super::flow::{Flow, Limits};
use super::member::{commit_stored, Member, MemberContext, PollLoop, Shared};
use super::messages::{FromMember, Polled, ToMember};
use crate::ack::{BatchNotifier, BatchStatusReceiver, EventStatus, RejectPolicy};
use crate::api::{Component, ComponentContext, ComponentError, Outputs};
use crate::event::Event;
use crate::kafka;

pub(super) struct KafkaSource {
    pub configs: Vec<rdkafka::ClientConfig>,
    pub topics: Vec<String>,
    pub drain_timeout: Duration,
    pub on_reject: RejectPolicy,
    pub limits: Limits,
}

/// A chunk's status, with what the flow control and the driver need of it.
struct AckDone {
    tag: AckTag,
    count: usize,
    bytes: usize,
    status: EventStatus,
}

type AckFuture = Pin<Box<dyn Future<Output = AckDone> + Send>>;

async fn wait_ack(rx: BatchStatusReceiver, tag: AckTag, count: usize, bytes: usize) -> AckDone {
    let status = rx.await;
    AckDone {
        tag,
        count,
        bytes,
        status,
    }
}

/// The running members: their consumers, command channels and polling threads.
struct Members {
    consumers: Vec<Arc<Member>>,
    commands: Vec<std_mpsc::Sender<ToMember>>,
    threads: Vec<JoinHandle<()>>,
}

/// Everything the task's loop works on.
struct Task {
    driver: Driver<std_mpsc::SyncSender<()>>,
    consumers: Vec<Arc<Member>>,
    commands: Vec<std_mpsc::Sender<ToMember>>,
    acks: FuturesUnordered<AckFuture>,
    flow: Arc<Flow>,
}

/// Whether a consumer error says a topic does not exist (the operator must
/// hear of it, unlike connection trouble librdkafka retries by itself).
fn is_unknown_topic(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopicId
        )
    )
}

impl KafkaSource {
    /// Creates and subscribes each member, and starts its polling thread.
    fn start_members(
        &self,
        id: &Arc<str>,
        tx: &mpsc::UnboundedSender<FromMember>,
        stop: &Arc<AtomicBool>,
        flow: &Arc<Flow>,
    ) -> Result<Members, ComponentError> {
        let mut members = Members {
            consumers: Vec::new(),
            commands: Vec::new(),
            threads: Vec::new(),
        };
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        for (index, config) in self.configs.iter().enumerate() {
            let shared = Arc::new(Shared {
                id: id.clone(),
                member: index,
                tx: tx.clone(),
                epochs: Mutex::new(Default::default()),
                rebalances: AtomicU64::new(0),
                drain_timeout: self.drain_timeout,
            });
            let consumer: Member = kafka::create(config, MemberContext(shared.clone()))
                .map_err(KafkaSourceError::from)?;
            consumer
                .subscribe(&topics)
                .map_err(|source| KafkaSourceError::Subscribe {
                    topics: self.topics.clone(),
                    source,
                })?;
            let consumer = Arc::new(consumer);
            let (cmd_tx, cmd_rx) = std_mpsc::channel();
            let poll = PollLoop::new(
                consumer.clone(),
                shared,
                cmd_rx,
                stop.clone(),
                flow.clone(),
                self.limits,
            );
            let thread = std::thread::Builder::new()
                .name(format!("kafka-poll-{index}"))
                .spawn(move || poll.run())
                .map_err(|e| ComponentError::io("cannot start a polling thread", e))?;
            members.consumers.push(consumer);
            members.commands.push(cmd_tx);
            members.threads.push(thread);
        }
        Ok(members)
    }
}

impl Task {
    /// Registers a round's chunks and emits the messages of those that are
    /// current; stale ones are dropped unsent.
    async fn emit(
        &mut self,
        outputs: &mut Outputs,
        member: usize,
        chunks: Vec<Polled>,
    ) -> Result<(), ComponentError> {
        for chunk in chunks {
            let (count, bytes) = (chunk.messages.len(), chunk.bytes);
            let offsets = Offsets {
                first: chunk.first,
                last: chunk.last,
            };
            let Some(tag) = self
                .driver
                .accept(member, chunk.partition, chunk.epoch, offsets)
            else {
                // Fetched before a seek or a rebalance: never emitted, never stored.
                self.flow.sub(count, bytes);
                continue;
            };
            // One notifier per chunk: tracking costs one future per chunk, not
            // per message.
            let (notifier, rx) = BatchNotifier::new_with_receiver();
            let messages: Vec<_> = chunk
                .messages
                .into_iter()
                .map(|mut m| {
                    m.finalizers = notifier.finalizer();
                    m
                })
                .collect();
            drop(notifier);
            self.acks.push(Box::pin(wait_ack(rx, tag, count, bytes)));
            for m in messages {
                outputs.send(Event::Raw(m)).await?;
            }
        }
        Ok(())
    }

    /// A chunk's status came back: it is out of flight; store what the driver
    /// says may be stored.
    fn acked(&mut self, done: AckDone) {
        self.flow.sub(done.count, done.bytes);
        let Some(Store {
            member,
            partition,
            offset,
        }) = self.driver.acked(&done.tag, done.status, Instant::now())
        else {
            return;
        };
        let topic = &partition.topic;
        let partition = partition.partition;
        // rd_kafka_offset_store commits offset + 1: the next message to read.
        if let Err(e) = self.consumers[member].store_offset(topic, partition, offset) {
            tracing::debug!(%topic, partition, last = offset, error = %e, "offset not stored");
        }
    }

    /// Answers the revokes that are done.
    fn check_revokes(&mut self) {
        for done in self.driver.check_revokes(Instant::now()) {
            let _ = done.send(());
        }
    }

    /// Hands the seeks that are due to their members' threads.
    fn due_seeks(&mut self) {
        for seek in self.driver.due_seeks(Instant::now()) {
            let _ = self.commands[seek.member].send(ToMember::Seek {
                partition: seek.partition,
                offset: seek.offset,
                from_epoch: seek.from_epoch,
            });
        }
    }

    /// What a member said. Err ends the source.
    async fn on_member(
        &mut self,
        outputs: &mut Outputs,
        msg: Option<FromMember>,
    ) -> Result<(), ComponentError> {
        match msg {
            Some(FromMember::Messages { member, chunks }) => {
                self.emit(outputs, member, chunks).await?
            }
            Some(FromMember::Assigned { member, partitions }) => {
                self.driver.assigned(member, partitions)
            }
            Some(FromMember::Revoke {
                member,
                partitions,
                deadline,
                done,
            }) => {
                self.driver.revoke(member, partitions, deadline, done);
                self.check_revokes();
            }
            Some(FromMember::Error {
                member,
                error,
                fatal,
            }) => {
                if fatal {
                    return Err(KafkaSourceError::Fatal(error).into());
                }
                outputs.metrics().error("consume");
                if is_unknown_topic(&error) {
                    // A topic that does not exist: the operator must hear of it.
                    tracing::warn!(member, "{error}");
                } else {
                    // librdkafka logs connection trouble itself and retries it.
                    tracing::debug!(member, %error, "consumer error");
                }
            }
            None => {
                return Err(KafkaSourceError::Thread("every polling thread stopped".into()).into())
            }
        }
        Ok(())
    }

    /// At shutdown: waits up to `drain_timeout` for what is in flight, storing
    /// what comes back in time.
    async fn drain(&mut self, drain_timeout: Duration) {
        let deadline = tokio::time::Instant::now() + drain_timeout;
        while self.driver.in_flight_chunks() > 0 {
            tokio::select! {
                done = self.acks.next() => match done {
                    Some(done) => self.acked(done),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(
                        chunks = self.driver.in_flight_chunks(),
                        "drain_timeout passed at shutdown; unacknowledged messages will be consumed again"
                    );
                    break;
                }
            }
        }
    }
}

/// Joins the polling threads, then commits each member's stored offsets and
/// closes it (which leaves the group at once).
fn close_members(threads: Vec<JoinHandle<()>>, consumers: Vec<Arc<Member>>) {
    for (index, thread) in threads.into_iter().enumerate() {
        if thread.join().is_err() {
            tracing::error!(member = index, "polling thread panicked");
        }
    }
    for (index, member) in consumers.into_iter().enumerate() {
        commit_stored(&member, index);
        drop(member);
    }
}

#[async_trait]
impl Component for KafkaSource {
    async fn run(self: Box<Self>, cx: ComponentContext) -> Result<(), ComponentError> {
        let ComponentContext {
            mut outputs,
            shutdown,
            id,
            ..
        } = cx;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flow = Arc::new(Flow::default());
        let Members {
            consumers,
            commands,
            threads,
        } = self.start_members(&id, &tx, &stop, &flow)?;
        drop(tx);
        let mut task = Task {
            driver: Driver::new(self.on_reject),
            consumers,
            commands,
            acks: FuturesUnordered::new(),
            flow,
        };

        // Messages handed downstream and not yet acknowledged: at the bound, the
        // source waits (a stalled sink shows here first).
        let in_flight = metrics::gauge!(
            "kafka_source_in_flight_messages",
            "component_id" => id.to_string(),
        );
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result: Result<(), ComponentError> = loop {
            let next_seek = task.driver.next_seek().map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                Some(done) = task.acks.next(), if !task.acks.is_empty() => {
                    task.acked(done);
                    if task.driver.has_revokes() {
                        task.check_revokes();
                    }
                }
                msg = rx.recv() => {
                    if let Err(e) = task.on_member(&mut outputs, msg).await {
                        break Err(e);
                    }
                }
                _ = tokio::time::sleep_until(next_seek.unwrap_or_else(tokio::time::Instant::now)), if next_seek.is_some() => {
                    task.due_seeks();
                }
                _ = tick.tick() => {
                    in_flight.set(task.flow.messages() as f64);
                    if task.driver.has_revokes() {
                        task.check_revokes();
                    }
                }
            }
        };

        // Stop fetching, let the graph drain, store what was acknowledged in time,
        // commit it, and leave the group.
        stop.store(true, Ordering::Release);
        drop(rx); // unblocks a rebalance callback waiting on us, and drops unsent messages
        task.driver.drop_revokes();
        drop(outputs);
        task.drain(self.drain_timeout).await;
        let consumers = std::mem::take(&mut task.consumers);
        drop(task);
        tokio::task::spawn_blocking(move || close_members(threads, consumers))
            .await
            .map_err(ComponentError::other)?;
        result
    }
}
