//! Source offsets in Connect's offsets topic: the kwdb-poll checkpoints of a source
//! connector mirrored there, so a connector that moves to another worker (or a
//! worker that lost its disk) resumes where the last one stood.
//!
//! kwdb-poll saves a checkpoint on disk after the pages the Kafka sink confirmed;
//! before each save it writes the checkpoint to the topic through [`TopicMirror`]
//! and waits for it, so the topic is never behind the file. A table whose write
//! failed (or whose file was ahead of the topic at start) is copied from its file
//! by [`TopicMirror::catch_up`], every second and once more after the connector
//! drained. Records use Connect's layout: the key is
//! `["<connector>",{"table":"<table>"}]`, the value the checkpoint (JSON). A worker
//! starting the connector takes the topic's checkpoint of a table when it is ahead
//! of its own file (more rows exported), so after a crash only the pages in flight
//! (sent, not yet confirmed) are exported again: at-least-once, never a gap.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use kwpipe_components::sources::kwdb_poll::checkpoint::{Checkpoint, CheckpointStore};
use serde_json::{json, Value as Json};

use kwpipe_components::api::PositionMirror;

use super::store::TopicLog;

/// How often tables whose checkpoint the topic is behind on are copied again.
pub const MIRROR_INTERVAL: Duration = Duration::from_secs(1);

/// A source connector's checkpoints written to the offsets topic before kwdb-poll
/// saves them on disk (kwdb-poll calls it on a blocking thread and waits).
pub struct TopicMirror {
    offsets: TopicLog,
    connector: String,
    runtime: tokio::runtime::Handle,
    /// Tables whose latest checkpoint the topic may lack: a write failed, or the
    /// file was there before the connector started.
    behind: Mutex<BTreeSet<String>>,
}

impl TopicMirror {
    /// Must be made inside the worker's runtime, whose handle the writes use.
    /// Every table `store` has a file for starts out behind, so a file ahead of
    /// the topic (this worker ran the connector before) is copied up.
    pub fn new(offsets: TopicLog, connector: &str, store: &CheckpointStore) -> TopicMirror {
        TopicMirror {
            offsets,
            connector: connector.to_string(),
            runtime: tokio::runtime::Handle::current(),
            behind: Mutex::new(store.tables().into_iter().collect()),
        }
    }

    /// Copies the checkpoint files of the tables the topic is behind on.
    pub async fn catch_up(&self, store: &CheckpointStore) {
        let tables = std::mem::take(&mut *self.behind.lock().expect("mirror lock"));
        for table in tables {
            let value = match store.load(&table).map(|cp| cp.map(serde_json::to_value)) {
                Ok(Some(Ok(value))) => value,
                Ok(None) => continue,
                Ok(Some(Err(e))) => {
                    tracing::warn!(connector = %self.connector, table, "cannot copy the checkpoint: {e}");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(connector = %self.connector, table, "cannot read the checkpoint: {e}");
                    self.behind.lock().expect("mirror lock").insert(table);
                    continue;
                }
            };
            let k = key(&self.connector, &table);
            if self.offsets.get(&k).as_ref() == Some(&value) {
                continue;
            }
            if let Err(e) = self.offsets.put(&k, Some(&value)).await {
                tracing::warn!(connector = %self.connector, table, "cannot copy the checkpoint to the offsets topic: {e}");
                self.behind.lock().expect("mirror lock").insert(table);
            }
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
        let written = self.runtime.block_on(
            self.offsets
                .put(&key(&self.connector, table), Some(position)),
        );
        let mut behind = self.behind.lock().expect("mirror lock");
        match written {
            Ok(()) => {
                behind.remove(table);
                Ok(())
            }
            Err(e) => {
                behind.insert(table.to_string());
                Err(e.to_string())
            }
        }
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
