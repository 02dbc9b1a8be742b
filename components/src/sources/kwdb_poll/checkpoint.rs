//! Where a table's export stands, kept in `data_dir` so a restart resumes exactly
//! after the last row the sinks acknowledged.
//!
//! Written atomically and durably: a temporary file, fsync, rename over the old
//! one, fsync of the directory. A crash at any point leaves either the old or the
//! new checkpoint, never a torn one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::event::{Precision, Timestamp, Value};

/// The position after the last acknowledged row: its timestamp and key values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The timestamp as an integer at `precision`.
    pub ts: i64,
    pub precision: String,
    /// The key columns' values (primary tags, or the configured key columns).
    pub keys: Vec<KeyValue>,
    /// Rows exported so far (for progress after a restart).
    #[serde(default)]
    pub rows: u64,
}

/// A key value in a form that survives JSON exactly (i64 beyond 2^53 included).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "lowercase")]
pub enum KeyValue {
    Null,
    Bool(bool),
    Int(String),
    Float(String),
    Text(String),
    Bytes(String),
    Ts(String),
    Date(i32),
}

impl KeyValue {
    pub fn from_value(v: &Value) -> KeyValue {
        match v {
            Value::Null => KeyValue::Null,
            Value::Bool(b) => KeyValue::Bool(*b),
            Value::Int2(i) => KeyValue::Int(i.to_string()),
            Value::Int4(i) => KeyValue::Int(i.to_string()),
            Value::Int8(i) => KeyValue::Int(i.to_string()),
            Value::Float4(f) => KeyValue::Float(format!("{f:?}")),
            Value::Float8(f) => KeyValue::Float(format!("{f:?}")),
            Value::String(s) => KeyValue::Text(s.clone()),
            Value::Bytes(b) => KeyValue::Bytes(b.iter().map(|x| format!("{x:02x}")).collect()),
            Value::Timestamp(t) => KeyValue::Ts(format!("{}:{}", t.value, t.precision)),
            Value::Date(d) => KeyValue::Date(*d),
        }
    }

    pub fn to_value(&self) -> Option<Value> {
        Some(match self {
            KeyValue::Null => Value::Null,
            KeyValue::Bool(b) => Value::Bool(*b),
            KeyValue::Int(s) => Value::Int8(s.parse().ok()?),
            KeyValue::Float(s) => Value::Float8(s.parse().ok()?),
            KeyValue::Text(s) => Value::String(s.clone()),
            KeyValue::Bytes(h) => Value::Bytes(
                (0..h.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
                    .collect::<Option<Vec<u8>>>()?,
            ),
            KeyValue::Ts(s) => {
                let (v, p) = s.split_once(':')?;
                Value::Timestamp(Timestamp::new(v.parse().ok()?, p.parse().ok()?))
            }
            KeyValue::Date(d) => Value::Date(*d),
        })
    }
}

impl Checkpoint {
    pub fn timestamp(&self) -> Option<Timestamp> {
        let p: Precision = self.precision.parse().ok()?;
        Some(Timestamp::new(self.ts, p))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {path} is unreadable ({reason}); move it away to export the table from the start")]
    Corrupt { path: PathBuf, reason: String },
}

/// Checkpoints of one source, one file per table.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    pub fn open(dir: PathBuf) -> Result<Self, CheckpointError> {
        std::fs::create_dir_all(&dir).map_err(|source| CheckpointError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(CheckpointStore { dir })
    }

    fn path(&self, table: &str) -> PathBuf {
        // Table names are checked identifiers (ASCII, no `/`), but keep file names
        // tame regardless.
        let safe: String = table
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '%'
                }
            })
            .collect();
        self.dir.join(format!("{safe}.json"))
    }

    pub fn load(&self, table: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.path(table);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| CheckpointError::Corrupt {
                        path,
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CheckpointError::Io { path, source }),
        }
    }

    pub fn save(&self, table: &str, cp: &Checkpoint) -> Result<(), CheckpointError> {
        let path = self.path(table);
        let tmp = path.with_extension("json.tmp");
        let io = |source| CheckpointError::Io {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec(cp).expect("checkpoints serialize");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io)?;
        sync_dir(&self.dir).map_err(io)?;
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().join("cp")).unwrap();
        assert_eq!(store.load("t").unwrap(), None);
        let keys = vec![
            Value::Int8(i64::MAX),
            Value::String("o'hare; --".into()),
            Value::Timestamp(Timestamp::new(-5, Precision::Ns)),
            Value::Bytes(vec![0, 255]),
        ];
        let cp = Checkpoint {
            ts: 1_705_962_142_224,
            precision: "ms".into(),
            keys: keys.iter().map(KeyValue::from_value).collect(),
            rows: 7,
        };
        store.save("t", &cp).unwrap();
        let back = store.load("t").unwrap().unwrap();
        assert_eq!(back, cp);
        let values: Vec<Value> = back.keys.iter().map(|k| k.to_value().unwrap()).collect();
        assert_eq!(values, keys);
        assert_eq!(
            back.timestamp(),
            Some(Timestamp::new(1_705_962_142_224, Precision::Ms))
        );
    }

    #[test]
    fn a_corrupt_checkpoint_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().to_path_buf()).unwrap();
        std::fs::write(dir.path().join("t.json"), b"{nope").unwrap();
        let e = store.load("t").unwrap_err().to_string();
        assert!(e.contains("move it away"), "{e}");
    }
}
