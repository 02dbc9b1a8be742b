//! A compacted Kafka topic read as a key -> latest value map: how Kafka Connect
//! keeps connector configs, target states and statuses, so every worker sharing
//! the topics sees the same cluster state and a restarted worker picks it up.
//!
//! Each worker reads the whole topic from the beginning (no consumer group: every
//! worker needs every record) and keeps following it. A write is produced, and
//! returns only once this worker's reader has applied it, so a REST call that
//! changed something is followed by reads that show the change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value as Json;
use tokio::sync::watch;

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{topic}: cannot create the topic: {message}")]
    Create { topic: String, message: String },
    #[error("{topic}: {message}")]
    Kafka { topic: String, message: String },
    #[error("{topic}: not caught up within {TIMEOUT:?}")]
    CatchUp { topic: String },
}

/// The field that makes a record a create: applied only when its key has no value,
/// so that of two workers creating the same connector at once exactly one wins. Its
/// value is a token the writer looks for afterwards to learn whether it won. Every
/// worker applies the records in the topic's order, so all agree on the winner.
const CREATE_TOKEN: &str = "kwpipe.create";

/// What the reader has applied: the latest value of each key, and per partition
/// the next offset to read.
#[derive(Clone, Debug, Default)]
pub struct LogState {
    pub entries: BTreeMap<String, Json>,
    next: HashMap<i32, i64>,
    /// The tokens of the creates that were applied.
    created: HashSet<String>,
}

impl LogState {
    /// Applies one record: a tombstone removes the key, a create sets it only when
    /// absent, any other value replaces it.
    fn apply(&mut self, key: String, value: Option<Json>) {
        let Some(value) = value else {
            self.entries.remove(&key);
            return;
        };
        match value.get(CREATE_TOKEN).and_then(Json::as_str) {
            Some(_) if self.entries.contains_key(&key) => {}
            Some(token) => {
                self.created.insert(token.to_string());
                self.entries.insert(key, value);
            }
            None => {
                self.entries.insert(key, value);
            }
        }
    }
}

/// One storage topic: its reader's state and a producer for writes.
#[derive(Clone)]
pub struct TopicLog {
    topic: Arc<str>,
    /// A client of its own for watermarks: the reader's connection is busy with
    /// long-polling fetches, behind which the broker would queue these requests.
    meta: Arc<BaseConsumer>,
    producer: FutureProducer,
    state: watch::Receiver<LogState>,
}

/// How the storage topics are created when missing.
#[derive(Clone, Debug)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// -1: the broker's `default.replication.factor`.
    pub replication: i32,
}

impl TopicLog {
    /// Creates the topic when missing (compacted, as Connect requires), reads it to
    /// its end, and keeps following it in a task of its own.
    pub async fn open(client: &ClientConfig, spec: &TopicSpec) -> Result<TopicLog, StoreError> {
        let topic = spec.name.clone();
        let kafka = |e: rdkafka::error::KafkaError| StoreError::Kafka {
            topic: topic.clone(),
            message: e.to_string(),
        };
        create_topic(client, spec, true).await?;
        let producer: FutureProducer = client
            .clone()
            .set("enable.idempotence", "true")
            .create()
            .map_err(kafka)?;
        let consumer: StreamConsumer = client
            .clone()
            .set("group.id", format!("kwpipe-worker-reader-{topic}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create()
            .map_err(kafka)?;
        let consumer = Arc::new(consumer);
        // Every partition from the beginning, and the end each has now: opening
        // returns once the reader has reached it.
        let (assignment, ends) = {
            let consumer = consumer.clone();
            let topic = topic.clone();
            tokio::task::spawn_blocking(move || {
                // A topic just created has partitions without a leader for a moment.
                let deadline = std::time::Instant::now() + TIMEOUT;
                loop {
                    match partitions(&*consumer, &topic) {
                        Err(_) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(200))
                        }
                        r => return r,
                    }
                }
            })
            .await
            .expect("metadata task")
            .map_err(kafka)?
        };
        consumer.assign(&assignment).map_err(kafka)?;
        let (tx, rx) = watch::channel(LogState::default());
        tokio::spawn(follow(consumer.clone(), topic.clone(), tx));
        let log = TopicLog {
            topic: Arc::from(topic.as_str()),
            meta: Arc::new(client.create().map_err(kafka)?),
            producer,
            state: rx,
        };
        log.wait_for(&ends).await?;
        Ok(log)
    }

    /// Waits until this worker has read what the topic holds now, so an answer
    /// reflects what another worker wrote before the question.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let meta = self.meta.clone();
        let topic = self.topic.to_string();
        let ends = tokio::task::spawn_blocking(move || partitions(&*meta, &topic).map(|(_, e)| e))
            .await
            .expect("watermark task")
            .map_err(|e| StoreError::Kafka {
                topic: self.topic.to_string(),
                message: e.to_string(),
            })?;
        self.wait_for(&ends).await
    }

    pub fn snapshot(&self) -> LogState {
        self.state.borrow().clone()
    }

    pub fn get(&self, key: &str) -> Option<Json> {
        self.state.borrow().entries.get(key).cloned()
    }

    /// A receiver that wakes on every applied record.
    pub fn subscribe(&self) -> watch::Receiver<LogState> {
        self.state.clone()
    }

    /// Writes `value` (None: a tombstone) under `key` and waits until this worker's
    /// reader has applied it.
    pub async fn put(&self, key: &str, value: Option<&Json>) -> Result<(), StoreError> {
        let payload = value.map(|v| v.to_string());
        let mut record = FutureRecord::<str, str>::to(&self.topic).key(key);
        if let Some(p) = &payload {
            record = record.payload(p);
        }
        let delivered = self
            .producer
            .send(record, TIMEOUT)
            .await
            .map_err(|(e, _)| StoreError::Kafka {
                topic: self.topic.to_string(),
                message: e.to_string(),
            })?;
        let ends = HashMap::from([(delivered.partition, delivered.offset + 1)]);
        self.wait_for(&ends).await
    }

    /// Writes `value` under `key` unless the key has a value when the record is
    /// read back; true when this write created it. A create that lost leaves its
    /// record in the topic after the winner's, where compaction would keep it as
    /// the key's latest, so the loser writes the winner's value again after it.
    /// (An update another worker made between the two writes is then overwritten,
    /// as when two updates race.)
    pub async fn create(&self, key: &str, value: &Json) -> Result<bool, StoreError> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let token = format!(
            "{}-{nanos}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let mut record = value.clone();
        if let Json::Object(m) = &mut record {
            m.insert(CREATE_TOKEN.into(), Json::String(token.clone()));
        }
        self.put(key, Some(&record)).await?;
        let (won, current) = {
            let state = self.state.borrow();
            (
                state.created.contains(&token),
                state.entries.get(key).cloned(),
            )
        };
        if !won {
            if let Some(Json::Object(mut winner)) = current {
                winner.remove(CREATE_TOKEN);
                self.put(key, Some(&Json::Object(winner))).await?;
            }
        }
        Ok(won)
    }

    async fn wait_for(&self, ends: &HashMap<i32, i64>) -> Result<(), StoreError> {
        let mut rx = self.state.clone();
        let reached = tokio::time::timeout(TIMEOUT, async {
            rx.wait_for(|s| {
                ends.iter()
                    .all(|(p, end)| *end <= 0 || s.next.get(p).copied().unwrap_or(0) >= *end)
            })
            .await
            .is_ok()
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(StoreError::CatchUp {
                topic: self.topic.to_string(),
            }),
        }
    }
}

/// Every partition of `topic` from the beginning, and the end each has now.
fn partitions(
    consumer: &impl Consumer,
    topic: &str,
) -> Result<(TopicPartitionList, HashMap<i32, i64>), rdkafka::error::KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let mut list = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for t in metadata.topics() {
        if let Some(e) = t.error() {
            return Err(rdkafka::error::KafkaError::MetadataFetch(e.into()));
        }
        for p in t.partitions() {
            if let Some(e) = p.error() {
                return Err(rdkafka::error::KafkaError::MetadataFetch(e.into()));
            }
            list.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            let (_, high) = consumer.fetch_watermarks(topic, p.id(), TIMEOUT)?;
            ends.insert(p.id(), high);
        }
    }
    if list.count() == 0 {
        return Err(rdkafka::error::KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    Ok((list, ends))
}

async fn follow(consumer: Arc<StreamConsumer>, topic: String, tx: watch::Sender<LogState>) {
    loop {
        let message = tokio::select! {
            m = consumer.recv() => m,
            _ = tx.closed() => return,
        };
        match message {
            Ok(m) => {
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                let value = m.payload().map(serde_json::from_slice::<Json>);
                let (partition, offset) = (m.partition(), m.offset());
                tx.send_modify(|s| {
                    match (key, value) {
                        (Some(k), None) => s.apply(k, None),
                        (Some(k), Some(Ok(v))) => s.apply(k, Some(v)),
                        // Not ours to judge: another writer's record; keep reading.
                        (k, Some(Err(e))) => {
                            tracing::warn!(%topic, key = ?k, offset, "unreadable record skipped: {e}")
                        }
                        (None, _) => tracing::warn!(%topic, offset, "record without a key skipped"),
                    }
                    s.next.insert(partition, offset + 1);
                });
            }
            Err(e) => {
                tracing::warn!(%topic, "reading the storage topic: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Creates the topic when missing; storage topics are compacted, as Connect requires.
pub async fn create_topic(
    client: &ClientConfig,
    spec: &TopicSpec,
    compacted: bool,
) -> Result<(), StoreError> {
    let err = |message: String| StoreError::Create {
        topic: spec.name.clone(),
        message,
    };
    let admin: AdminClient<DefaultClientContext> =
        client.create().map_err(|e| err(e.to_string()))?;
    let mut topic = NewTopic::new(
        &spec.name,
        spec.partitions,
        TopicReplication::Fixed(spec.replication),
    );
    if compacted {
        topic = topic.set("cleanup.policy", "compact");
    }
    let results = admin
        .create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .map_err(|e| err(e.to_string()))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(err(code.to_string())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn of_two_creates_of_one_key_the_first_in_the_log_wins() {
        let mut s = LogState::default();
        s.apply("k".into(), Some(json!({"v": 1, CREATE_TOKEN: "a"})));
        s.apply("k".into(), Some(json!({"v": 2, CREATE_TOKEN: "b"})));
        assert_eq!(s.entries["k"]["v"], 1);
        assert!(s.created.contains("a"));
        assert!(!s.created.contains("b"));
        // An update replaces; after a tombstone a create applies again.
        s.apply("k".into(), Some(json!({"v": 3})));
        assert_eq!(s.entries["k"]["v"], 3);
        s.apply("k".into(), None);
        s.apply("k".into(), Some(json!({"v": 4, CREATE_TOKEN: "c"})));
        assert_eq!(s.entries["k"]["v"], 4);
        assert!(s.created.contains("c"));
    }
}
