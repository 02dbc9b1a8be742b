//! Which worker runs which source connector, decided by Kafka's own group protocol:
//! every worker joins the consumer group `<group.id>` (Connect's worker setting)
//! on a coordination topic of a fixed number of partitions, and runs the source
//! connectors whose name hashes to a partition the group assigned it. The broker
//! detects dead workers (session timeout) and rebalances; nothing here elects.
//!
//! The rebalance protocol is eager: before any new assignment every worker gives up
//! all its partitions, and the revocation waits (in librdkafka's callback) until
//! the herder has stopped the sources it no longer owns and their checkpoints are
//! in the offsets topic, so a source never runs on two workers at once while both
//! are alive. Sink connectors run on every worker: their consumer groups
//! (`connect-<name>`) spread partitions over the workers by themselves.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientConfig, ClientContext};
use tokio::sync::watch;

use super::store::{StoreError, TopicSpec};

/// How long a revocation waits for the herder to stop what it gives up.
const REVOKE_WAIT: Duration = Duration::from_secs(60);

/// The partitions this worker holds, and a generation the herder acknowledges.
#[derive(Clone, Debug, Default)]
pub struct Owned {
    pub partitions: BTreeSet<i32>,
    pub generation: u64,
}

#[derive(Default)]
struct Acks {
    acked: Mutex<u64>,
    changed: Condvar,
}

struct Context {
    owned: watch::Sender<Owned>,
    acks: Arc<Acks>,
    closing: Arc<AtomicBool>,
}

impl Context {
    fn set(&self, partitions: BTreeSet<i32>) -> u64 {
        let mut generation = 0;
        self.owned.send_modify(|o| {
            o.partitions = partitions;
            o.generation += 1;
            generation = o.generation;
        });
        generation
    }
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            let generation = self.set(BTreeSet::new());
            tracing::info!("worker group rebalancing: stopping the sources this worker runs");
            if self.closing.load(Ordering::SeqCst) {
                return;
            }
            let acked = self.acks.acked.lock().unwrap_or_else(|p| p.into_inner());
            let (acked, timeout) = self
                .acks
                .changed
                .wait_timeout_while(acked, REVOKE_WAIT, |a| *a < generation)
                .unwrap_or_else(|p| p.into_inner());
            if timeout.timed_out() && *acked < generation {
                tracing::warn!("sources did not stop within {REVOKE_WAIT:?}; rebalancing anyway");
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let partitions: BTreeSet<i32> = list.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(partitions = ?partitions, "worker group assignment");
            self.set(partitions);
        }
    }
}

/// This worker's membership in the worker group; [`Members::leave`] ends it.
pub struct Members {
    owned: watch::Receiver<Owned>,
    acks: Arc<Acks>,
    closing: Arc<AtomicBool>,
    partitions: i32,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Members {
    pub async fn join(
        client: &ClientConfig,
        group: &str,
        spec: &TopicSpec,
        session_timeout_ms: u32,
    ) -> Result<Members, StoreError> {
        super::store::create_topic(client, spec, false).await?;
        let (tx, rx) = watch::channel(Owned::default());
        let acks = Arc::new(Acks::default());
        let closing = Arc::new(AtomicBool::new(false));
        let context = Context {
            owned: tx,
            acks: acks.clone(),
            closing: closing.clone(),
        };
        let consumer: BaseConsumer<Context> = client
            .clone()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("partition.assignment.strategy", "roundrobin")
            .set("session.timeout.ms", session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (session_timeout_ms / 3).max(100).to_string(),
            )
            .create_with_context(context)
            .map_err(|e| StoreError::Kafka {
                topic: spec.name.clone(),
                message: e.to_string(),
            })?;
        consumer
            .subscribe(&[&spec.name])
            .map_err(|e| StoreError::Kafka {
                topic: spec.name.clone(),
                message: e.to_string(),
            })?;
        let stop = closing.clone();
        // librdkafka runs the rebalance callbacks from poll; the topic carries no
        // messages, so polling only keeps the membership alive.
        let thread = std::thread::Builder::new()
            .name("kwpipe-members".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let _ = consumer.poll(Duration::from_millis(200));
                }
                consumer.unsubscribe();
                drop(consumer);
            })
            .map_err(|e| StoreError::Kafka {
                topic: spec.name.clone(),
                message: e.to_string(),
            })?;
        Ok(Members {
            owned: rx,
            acks,
            closing,
            partitions: spec.partitions,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<Owned> {
        self.owned.clone()
    }

    /// Whether this worker runs the source connector `name` now.
    pub fn owns(&self, name: &str) -> bool {
        let partition = (fnv1a(name.as_bytes()) % self.partitions.max(1) as u64) as i32;
        self.owned.borrow().partitions.contains(&partition)
    }

    /// The herder has applied everything up to `generation`.
    pub fn ack(&self, generation: u64) {
        let mut acked = self.acks.acked.lock().unwrap_or_else(|p| p.into_inner());
        if *acked < generation {
            *acked = generation;
            self.acks.changed.notify_all();
        }
    }

    /// Leaves the group (after the herder stopped everything).
    pub fn leave(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// Stable across processes and versions (the assignment depends on it).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
