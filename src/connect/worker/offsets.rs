//! Source offsets in Connect's offsets topic: the kwdb-poll checkpoints of a source
//! connector mirrored there, so a connector that moves to another worker (or a
//! worker that lost its disk) resumes where the last one stood.
//!
//! kwdb-poll saves a checkpoint on disk after the pages the Kafka sink confirmed;
//! before each save it writes the checkpoint to the topic through [`TopicMirror`]
//! and waits for it, so the topic is never behind the file. The worker also copies
//! changed checkpoint files to the topic every second and once more after the
//! connector drained, for a write to the topic that failed. Records use Connect's layout: the key is
//! `["<connector>",{"table":"<table>"}]`, the value the checkpoint (JSON). A worker
//! starting the connector takes the topic's checkpoint of a table when it is ahead
//! of its own file (more rows exported), so after a crash only the pages in flight
//! (sent, not yet confirmed) are exported again: at-least-once, never a gap.

use std::collections::BTreeMap;
use std::time::Duration;

use kwpipe_components::sources::kwdb_poll::checkpoint::{Checkpoint, CheckpointStore};
use serde_json::{json, Value as Json};

use kwpipe_components::api::PositionMirror;

use super::store::TopicLog;

/// How often running sources' checkpoint files are looked at (one `stat` each) and
/// the changed ones copied to the topic when [`TopicMirror`] did not.
pub const MIRROR_INTERVAL: Duration = Duration::from_secs(1);

/// What `mirror` last looked at, per table: the file's modification time and
/// length, to skip reading files that did not change.
#[derive(Default)]
pub struct Mirrored(BTreeMap<String, Option<(std::time::SystemTime, u64)>>);

/// A source connector's checkpoints written to the offsets topic before kwdb-poll
/// saves them on disk (kwdb-poll calls it on a blocking thread and waits).
pub struct TopicMirror {
    offsets: TopicLog,
    connector: String,
    runtime: tokio::runtime::Handle,
}

impl TopicMirror {
    /// Must be made inside the worker's runtime, whose handle the writes use.
    pub fn new(offsets: TopicLog, connector: &str) -> TopicMirror {
        TopicMirror {
            offsets,
            connector: connector.to_string(),
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl std::fmt::Debug for TopicMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TopicMirror({})", self.connector)
    }
}

impl PositionMirror for TopicMirror {
    fn save(&self, table: &str, position: &Json) -> Result<(), String> {
        self.runtime
            .block_on(
                self.offsets
                    .put(&key(&self.connector, table), Some(position)),
            )
            .map_err(|e| e.to_string())
    }
}

fn key(connector: &str, table: &str) -> String {
    json!([connector, {"table": table}]).to_string()
}

/// This connector's entries of the offsets topic: table -> checkpoint.
pub fn stored(offsets: &TopicLog, connector: &str) -> BTreeMap<String, Json> {
    let mut out = BTreeMap::new();
    for (k, v) in offsets.snapshot().entries {
        let Ok(Json::Array(parts)) = serde_json::from_str::<Json>(&k) else {
            continue;
        };
        if parts.first().and_then(Json::as_str) != Some(connector) {
            continue;
        }
        if let Some(table) = parts
            .get(1)
            .and_then(|p| p.get("table"))
            .and_then(Json::as_str)
        {
            out.insert(table.to_string(), v);
        }
    }
    out
}

/// Copies the topic's checkpoints into `store` where they are ahead of its files.
pub fn restore(offsets: &TopicLog, connector: &str, store: &CheckpointStore) -> Result<(), String> {
    for (table, value) in stored(offsets, connector) {
        let Ok(remote) = serde_json::from_value::<Checkpoint>(value) else {
            tracing::warn!(
                connector,
                table,
                "unreadable offset in the offsets topic; the local checkpoint stays"
            );
            continue;
        };
        let local = store.load(&table).map_err(|e| e.to_string())?;
        if local.as_ref().is_none_or(|l| l.rows < remote.rows) {
            store.save(&table, &remote).map_err(|e| e.to_string())?;
            tracing::info!(
                connector,
                table,
                rows = remote.rows,
                "checkpoint taken from the offsets topic"
            );
        }
    }
    Ok(())
}

/// Copies checkpoints that changed since the last call to the topic.
pub async fn mirror(
    offsets: &TopicLog,
    connector: &str,
    store: &CheckpointStore,
    last: &mut Mirrored,
) {
    for table in store.tables() {
        let stamp = std::fs::metadata(store.path(&table))
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp.is_some() && last.0.get(&table) == Some(&stamp) {
            continue;
        }
        let Ok(Some(cp)) = store.load(&table) else {
            continue;
        };
        let Ok(value) = serde_json::to_value(&cp) else {
            continue;
        };
        let k = key(connector, &table);
        // Mostly the topic has it already (TopicMirror wrote it first).
        if offsets.get(&k).as_ref() == Some(&value) {
            last.0.insert(table, stamp);
            continue;
        }
        match offsets.put(&k, Some(&value)).await {
            Ok(()) => {
                last.0.insert(table, stamp);
            }
            Err(e) => tracing::warn!(
                connector,
                table,
                "cannot copy the checkpoint to the offsets topic: {e}"
            ),
        }
    }
}

/// Forgets where the connector stood: the topic's entries and this worker's files.
pub async fn reset(
    offsets: &TopicLog,
    connector: &str,
    store: Option<&CheckpointStore>,
) -> Result<(), super::store::StoreError> {
    for table in stored(offsets, connector).into_keys() {
        offsets.put(&key(connector, &table), None).await?;
    }
    if let Some(store) = store {
        for table in store.tables() {
            let _ = store.remove(&table);
        }
    }
    Ok(())
}

/// Sets a table's position (`PATCH .../offsets`): the topic's entry, and this
/// worker's file removed so the next start takes the topic's.
pub async fn alter(
    offsets: &TopicLog,
    connector: &str,
    table: &str,
    offset: &Json,
    store: Option<&CheckpointStore>,
) -> Result<(), String> {
    if offset.is_null() {
        offsets
            .put(&key(connector, table), None)
            .await
            .map_err(|e| e.to_string())?;
    } else {
        let checkpoint: Checkpoint = serde_json::from_value(offset.clone())
            .map_err(|e| format!("not a kwdb-poll checkpoint ({e}); GET the offsets for one"))?;
        let value = serde_json::to_value(&checkpoint).map_err(|e| e.to_string())?;
        offsets
            .put(&key(connector, table), Some(&value))
            .await
            .map_err(|e| e.to_string())?;
    }
    if let Some(store) = store {
        store.remove(table).map_err(|e| e.to_string())?;
    }
    Ok(())
}
