//! Source offsets in Connect's offsets topic: the kwdb-poll checkpoints of a source
//! connector mirrored there, so a connector that moves to another worker (or a
//! worker that lost its disk) resumes where the last one stood.
//!
//! kwdb-poll saves a checkpoint on disk after every page the Kafka sink confirmed;
//! the worker copies changed checkpoints to the topic within a tenth of a second
//! and once more after the connector drained. Records use Connect's layout: the key is
//! `["<connector>",{"table":"<table>"}]`, the value the checkpoint (JSON). A worker
//! starting the connector takes the topic's checkpoint of a table when it is ahead
//! of its own file (more rows exported), so at most the pages confirmed in the
//! last tenth of a second before a crash (beside those in flight) are exported again: at-least-once, never a gap.

use std::collections::BTreeMap;
use std::time::Duration;

use kwpipe_components::sources::kwdb_poll::checkpoint::{Checkpoint, CheckpointStore};
use serde_json::{json, Value as Json};

use super::store::TopicLog;

/// How often running sources' checkpoints are looked at; a checkpoint file that
/// changed is copied to the topic. Short, because after a kill -9 the pages
/// confirmed since the last copy are exported again; a look is one `stat` per table.
pub const MIRROR_INTERVAL: Duration = Duration::from_millis(100);

/// What `mirror` copied last, per table: the file's modification time and length
/// (to skip reading files that did not change) and the value written.
#[derive(Default)]
pub struct Mirrored(BTreeMap<String, (Option<(std::time::SystemTime, u64)>, Json)>);

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
        if stamp.is_some() && last.0.get(&table).map(|(s, _)| *s) == Some(stamp) {
            continue;
        }
        let Ok(Some(cp)) = store.load(&table) else {
            continue;
        };
        let Ok(value) = serde_json::to_value(&cp) else {
            continue;
        };
        if last.0.get(&table).map(|(_, v)| v) == Some(&value) {
            last.0.insert(table, (stamp, value));
            continue;
        }
        match offsets.put(&key(connector, &table), Some(&value)).await {
            Ok(()) => {
                last.0.insert(table, (stamp, value));
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
