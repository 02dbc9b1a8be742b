//! `batch`: gathers rows of the same table (target and schema) into larger batches,
//! so a sink writes 1000-row statements instead of one per message. A batch goes
//! out when it reaches `max_rows` or `max_bytes`, when its oldest row has waited
//! `timeout`, and when the input ends. Acknowledgements travel along: the merged
//! batch carries the finalizers of every batch it took in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::time::Instant;

use crate::api::{
    BuildContext, Component, ComponentConfig, ComponentContext, ComponentError, OutputDef,
};
use crate::durations;
use crate::event::{Event, EventKind, RowBatch, TableSchema, Target};

fn default_max_rows() -> usize {
    1000
}
fn default_max_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    #[serde(
        default = "default_timeout",
        deserialize_with = "durations::deserialize"
    )]
    pub timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_rows: default_max_rows(),
            max_bytes: default_max_bytes(),
            timeout: default_timeout(),
        }
    }
}

#[async_trait]
impl ComponentConfig for BatchConfig {
    fn type_name(&self) -> &'static str {
        "batch"
    }

    fn input_kinds(&self) -> Vec<EventKind> {
        vec![EventKind::Rows]
    }

    fn outputs(&self) -> Vec<OutputDef> {
        vec![OutputDef::default(EventKind::Rows)]
    }

    async fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        if self.max_rows == 0 || self.max_bytes == 0 {
            return Err(ComponentError::msg(
                "max_rows and max_bytes must be at least 1",
            ));
        }
        Ok(Box::new(Batcher {
            max_rows: self.max_rows,
            max_bytes: self.max_bytes,
            timeout: self.timeout,
        }))
    }
}

struct Batcher {
    max_rows: usize,
    max_bytes: usize,
    timeout: Duration,
}

struct Pending {
    batch: RowBatch,
    bytes: usize,
    deadline: Instant,
}

/// Same table and same schema: rows of two schema versions never share a batch.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key(Target, SameSchema);

/// A schema hashed by its shape only: hashing every field name and type for each
/// one-row message cost more than the rest of the batching. Equality is `Arc`'s,
/// which compares pointers before contents (decoders hand out one `Arc` per schema).
#[derive(Clone, PartialEq, Eq)]
struct SameSchema(Arc<TableSchema>);

impl std::hash::Hash for SameSchema {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.0.kind, self.0.columns.len(), self.0.tags.len()).hash(state);
    }
}

#[async_trait]
impl Component for Batcher {
    async fn run(self: Box<Self>, mut cx: ComponentContext) -> Result<(), ComponentError> {
        let mut input = cx.take_input();
        let mut pending: HashMap<Key, Pending> = HashMap::new();
        loop {
            let next_deadline = pending.values().map(|p| p.deadline).min();
            let event = tokio::select! {
                e = input.recv() => e,
                _ = sleep_until(next_deadline) => {
                    let now = Instant::now();
                    let due: Vec<Key> = pending
                        .iter()
                        .filter(|(_, p)| p.deadline <= now)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in due {
                        let p = pending.remove(&k).expect("key listed");
                        cx.outputs.send(Event::Rows(p.batch)).await?;
                    }
                    continue;
                }
            };
            let Some(event) = event else { break };
            let mut batch = match event {
                Event::Rows(b) => b,
                other => {
                    // The graph is type-checked; pass anything else on untouched.
                    cx.outputs.send(other).await?;
                    continue;
                }
            };
            let bytes = batch.size_hint();
            let key = Key(batch.target.clone(), SameSchema(batch.schema.clone()));
            let full = match pending.get_mut(&key) {
                Some(p) => {
                    p.batch.rows.append(&mut batch.rows);
                    p.batch
                        .finalizers
                        .merge(std::mem::take(&mut batch.finalizers));
                    p.bytes += bytes;
                    p.batch.rows.len() >= self.max_rows || p.bytes >= self.max_bytes
                }
                None => {
                    let full = batch.rows.len() >= self.max_rows || bytes >= self.max_bytes;
                    pending.insert(
                        key.clone(),
                        Pending {
                            batch,
                            bytes,
                            deadline: Instant::now() + self.timeout,
                        },
                    );
                    full
                }
            };
            if full {
                let p = pending.remove(&key).expect("just inserted");
                cx.outputs.send(Event::Rows(p.batch)).await?;
            }
        }
        // End of input: flush everything, oldest first.
        let mut rest: Vec<Pending> = pending.into_values().collect();
        rest.sort_by_key(|p| p.deadline);
        for p in rest {
            cx.outputs.send(Event::Rows(p.batch)).await?;
        }
        Ok(())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::ack::{BatchNotifier, EventStatus};
    use crate::event::{DataType, Field, TableKind, Value};

    fn schema() -> Arc<TableSchema> {
        Arc::new(TableSchema::new(
            TableKind::Relational,
            vec![Field::column("a", DataType::Int4)],
            vec![],
        ))
    }

    async fn start(cfg: BatchConfig) -> (mpsc::Sender<Event>, mpsc::Receiver<Event>) {
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, out_rx) = mpsc::channel(16);
        let cx = ComponentContext::standalone("b", "batch", Some(in_rx), Some(out_tx));
        let c = cfg
            .build(&BuildContext {
                id: "b".into(),
                globals: cx.globals.clone(),
            })
            .await
            .unwrap();
        tokio::spawn(c.run(cx));
        (in_tx, out_rx)
    }

    fn rows(table: &str, s: &Arc<TableSchema>, n: i32) -> (Event, crate::ack::BatchStatusReceiver) {
        let (fin, rx) = BatchNotifier::pair();
        let mut b = RowBatch::new(
            Target::table(table),
            s.clone(),
            (0..n).map(|i| vec![Value::Int4(i)]).collect(),
        );
        b.finalizers = fin;
        (Event::Rows(b), rx)
    }

    #[tokio::test]
    async fn groups_by_table_and_flushes_on_size() {
        let (tx, mut out) = start(BatchConfig {
            max_rows: 5,
            ..Default::default()
        })
        .await;
        let s = schema();
        let (a1, ra1) = rows("a", &s, 3);
        let (b1, _rb1) = rows("b", &s, 1);
        let (a2, ra2) = rows("a", &s, 3);
        for e in [a1, b1, a2] {
            tx.send(e).await.unwrap();
        }
        let Some(Event::Rows(first)) = out.recv().await else {
            panic!()
        };
        assert_eq!((first.target.table.as_str(), first.rows.len()), ("a", 6));
        assert_eq!(first.finalizers.len(), 2);
        first.finalizers.finish(EventStatus::Delivered);
        assert_eq!(ra1.await, EventStatus::Delivered);
        assert_eq!(ra2.await, EventStatus::Delivered);
        drop(tx);
        let Some(Event::Rows(rest)) = out.recv().await else {
            panic!()
        };
        assert_eq!((rest.target.table.as_str(), rest.rows.len()), ("b", 1));
        assert!(out.recv().await.is_none());
    }

    #[tokio::test]
    async fn flushes_on_timeout() {
        let (tx, mut out) = start(BatchConfig {
            timeout: Duration::from_millis(50),
            ..Default::default()
        })
        .await;
        let (e, _rx) = rows("a", &schema(), 2);
        let started = Instant::now();
        tx.send(e).await.unwrap();
        let Some(Event::Rows(b)) = out.recv().await else {
            panic!()
        };
        assert_eq!(b.rows.len(), 2);
        assert!(started.elapsed() >= Duration::from_millis(45));
        drop(tx);
    }
}
