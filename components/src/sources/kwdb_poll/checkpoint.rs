//! Where a table's export stands, kept in `data_dir` so a restart resumes exactly
//! after the last row the sinks acknowledged.
//!
//! A checkpoint's file is named by an injective function of (database, table)
//! (see [`file_stem`]), and each slot records the (database, table) it belongs
//! to: a file found holding another table's position is an error, never a place
//! to resume from (two tables sharing a file was silent loss: the second table
//! resumed after the first one's last row).
//!
//! Written atomically and durably, and cheaply enough to do once per batch: a
//! table's file (`<database>.<table>.ckpt`, escaped) holds two slots of equal size, and each save
//! overwrites the older slot in place and `fdatasync`s it. The newer slot stays
//! intact while the other is written, so a crash at any point leaves the last
//! saved checkpoint or the one before it, never a torn one: each slot carries a
//! checksum and a sequence number, and loading takes the newest slot whose
//! checksum holds. An in-place overwrite changes no file metadata, so the sync is
//! one data flush: 0.09 ms here, against 0.5 ms for the temporary file, fsync,
//! rename and directory fsync it replaces (which is now only how the file is
//! created, or grown when a checkpoint outgrows its slots).
//!
//! Each slot is one line of text: the checksum (FNV-1a, 16 hex digits), a space,
//! the checkpoint as JSON with its sequence number, spaces up to the slot's end.

use crate::api::PositionMirror;
use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    #[error("checkpoint {path} belongs to table {found_table:?} of database {found_database:?}, not to table {table:?} of database {database:?}; move it away to export the table from the start")]
    Mismatch {
        path: PathBuf,
        database: String,
        table: String,
        found_database: String,
        found_table: String,
    },
    #[error("checkpoint {path} was written by an earlier kwpipe whose file names several tables could share (table {table:?} is one of them); if it is this table's, rename it to {wanted:?}, otherwise move it away: the table is exported from the start")]
    Ambiguous {
        path: PathBuf,
        table: String,
        wanted: String,
    },
}

/// Checkpoints of one source (one database), one file per table.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    database: String,
    /// Per table, the sequence number and slot size this store last wrote, so a
    /// save (one per batch) does not read the file back to find its slot. Only a
    /// table's own poller saves its checkpoint, so this is what the file holds.
    written: Arc<Mutex<HashMap<String, (u64, usize)>>>,
    /// A copy elsewhere, written before each durable save (the Connect worker's
    /// offsets topic).
    mirror: Option<Arc<dyn PositionMirror>>,
}

/// A slot's size is a multiple of this (a page: one write the device can do whole
/// in the common case, though the checksum does not count on it).
const SLOT_UNIT: usize = 4096;

/// A checkpoint as a slot holds it. `database` and `table` are absent only in
/// files of an earlier version (migrated on load).
#[derive(Serialize, Deserialize)]
struct Slot {
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table: Option<String>,
    #[serde(flatten)]
    checkpoint: Checkpoint,
}

/// File names stay well under the usual 255-byte limit; a longer escaped name is
/// cut and completed with a hash (`~` marks it: escaping never produces one). Two
/// names sharing a hash would share a file, which the identity in the slots then
/// reports as an error.
const MAX_STEM: usize = 200;

/// Bytes of an identifier kept as they are in a file name; every other byte is
/// `%XX`. Injective: `%` itself is escaped.
fn escape(out: &mut String, name: &str) {
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The identifier `escape` wrote, or None when `escaped` is not its output.
fn unescape(escaped: &str) -> Option<String> {
    let b = escaped.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = escaped.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The file name (without extension) of a table's checkpoint: the escaped
/// database and table joined by `.` (which escaping never produces, so the pair
/// is recovered unambiguously), cut and hashed when too long.
pub fn file_stem(database: &str, table: &str) -> String {
    let mut stem = String::new();
    escape(&mut stem, database);
    stem.push('.');
    escape(&mut stem, table);
    if stem.len() <= MAX_STEM {
        return stem;
    }
    // The stem is ASCII, so any cut is a char boundary; a cut inside a `%XX`
    // costs nothing, the hash identifies the pair.
    let cut = MAX_STEM - 17;
    let mut id = database.as_bytes().to_vec();
    id.push(0);
    id.extend_from_slice(table.as_bytes());
    format!("{}~{:016x}", &stem[..cut], fnv1a(&id))
}

/// The file name an earlier version gave a table: every byte outside
/// `[A-Za-z0-9_-]` became `%`, so `a.b`, `a b` and `a/b` shared one file. Only a
/// name made of those characters alone maps to its file without ambiguity.
fn legacy_stem(table: &str) -> (String, bool) {
    let mut unambiguous = true;
    let stem = table
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                unambiguous = false;
                '%'
            }
        })
        .collect();
    (stem, unambiguous)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The slot's line: checksum, body, padding to `size`. None if it does not fit.
fn encode_slot(slot: &Slot, size: usize) -> Option<Vec<u8>> {
    let body = serde_json::to_vec(slot).expect("checkpoints serialize");
    let mut line = format!("{:016x} ", fnv1a(&body)).into_bytes();
    line.extend_from_slice(&body);
    if line.len() + 1 > size {
        return None;
    }
    line.resize(size - 1, b' ');
    line.push(b'\n');
    Some(line)
}

/// A slot's checkpoint, if the slot holds one whose checksum holds.
fn decode_slot(bytes: &[u8]) -> Option<Slot> {
    let line = bytes.trim_ascii_end();
    let (sum, body) = line.split_at_checked(17)?;
    let sum = u64::from_str_radix(std::str::from_utf8(sum).ok()?.trim_end(), 16).ok()?;
    if fnv1a(body) != sum {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// The newest slot of a file whose checksum holds.
fn read_slots(path: &Path, bytes: &[u8]) -> Result<Slot, CheckpointError> {
    let half = bytes.len() / 2;
    if half == 0 || !bytes.len().is_multiple_of(2) {
        return Err(CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("{} bytes is not two slots", bytes.len()),
        });
    }
    [&bytes[..half], &bytes[half..]]
        .into_iter()
        .filter_map(decode_slot)
        .max_by_key(|s| s.seq)
        .ok_or_else(|| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason: "no slot holds a checkpoint whose checksum matches".into(),
        })
}

impl CheckpointStore {
    /// The checkpoints of `database`'s tables, in `dir`.
    pub fn open(dir: PathBuf, database: &str) -> Result<Self, CheckpointError> {
        std::fs::create_dir_all(&dir).map_err(|source| CheckpointError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(CheckpointStore {
            dir,
            database: database.to_owned(),
            written: Arc::default(),
            mirror: None,
        })
    }

    /// The same store, copying each durable save to `mirror` first.
    pub fn with_mirror(mut self, mirror: Option<Arc<dyn PositionMirror>>) -> Self {
        self.mirror = mirror;
        self
    }

    /// A source's save of its position: to the mirror first (when there is one),
    /// then to the file, so the copy is never behind the file. A mirror that fails
    /// is logged; the file still moves, and the copy catches up with a later save.
    /// Blocks: call it on a blocking thread.
    pub fn save_durably(&self, table: &str, cp: &Checkpoint) -> Result<(), CheckpointError> {
        if let Some(mirror) = &self.mirror {
            match serde_json::to_value(cp) {
                Ok(value) => {
                    if let Err(e) = mirror.save(table, &value) {
                        tracing::warn!(table, "cannot copy the checkpoint: {e}");
                    }
                }
                Err(e) => tracing::warn!(table, "cannot copy the checkpoint: {e}"),
            }
        }
        self.save(table, cp)
    }

    /// The tables of this store's database that have a checkpoint file (the ones
    /// whose names were cut and hashed cannot be named back and are left out).
    pub fn tables(&self) -> Vec<String> {
        let mut prefix = String::new();
        escape(&mut prefix, &self.database);
        prefix.push('.');
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut tables: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let escaped = name.strip_prefix(&prefix)?.strip_suffix(".ckpt")?;
                let table = unescape(escaped)?;
                // Only a name that maps back to this file (not a hashed one).
                (file_stem(&self.database, &table) == format!("{prefix}{escaped}")).then_some(table)
            })
            .collect();
        tables.sort();
        tables
    }

    /// Forgets a table's position: its file is removed.
    pub fn remove(&self, table: &str) -> Result<(), CheckpointError> {
        let path = self.path(table);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(CheckpointError::Io { path, source }),
        }
        self.written.lock().expect("checkpoint lock").remove(table);
        Ok(())
    }

    /// Where a table's checkpoint is kept.
    pub fn path(&self, table: &str) -> PathBuf {
        self.dir
            .join(format!("{}.ckpt", file_stem(&self.database, table)))
    }

    pub fn load(&self, table: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        Ok(self.load_slot(table)?.map(|s| s.checkpoint))
    }

    fn load_slot(&self, table: &str) -> Result<Option<Slot>, CheckpointError> {
        let path = self.path(table);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.migrate(table),
            Err(source) => return Err(CheckpointError::Io { path, source }),
        };
        let slot = read_slots(&path, &bytes)?;
        match (&slot.database, &slot.table) {
            (Some(d), Some(t)) if *d == self.database && t == table => Ok(Some(slot)),
            (d, t) => Err(CheckpointError::Mismatch {
                database: self.database.clone(),
                table: table.to_owned(),
                found_database: d.clone().unwrap_or_default(),
                found_table: t.clone().unwrap_or_default(),
                path,
            }),
        }
    }

    /// A checkpoint of an earlier version, under its old name: a slotted
    /// `<table>.ckpt`, or older still a JSON `<table>.json`, both without their
    /// (database, table). Taken as this table's (of the database the source is
    /// configured with, as it was then) only when its old name could not be
    /// another table's; it is then written under the new name at once and the
    /// old file removed.
    fn migrate(&self, table: &str) -> Result<Option<Slot>, CheckpointError> {
        let (stem, unambiguous) = legacy_stem(table);
        let slotted = self.dir.join(format!("{stem}.ckpt"));
        let json = self.dir.join(format!("{stem}.json"));
        let found = match std::fs::read(&slotted) {
            Ok(bytes) => {
                let slot = read_slots(&slotted, &bytes)?;
                Some((slotted, slot))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::read(&json) {
                Ok(bytes) => {
                    let checkpoint =
                        serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
                            path: json.clone(),
                            reason: e.to_string(),
                        })?;
                    let slot = Slot {
                        seq: 0,
                        database: None,
                        table: None,
                        checkpoint,
                    };
                    Some((json, slot))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => return Err(CheckpointError::Io { path: json, source }),
            },
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: slotted,
                    source,
                })
            }
        };
        let Some((old, slot)) = found else {
            return Ok(None);
        };
        if !unambiguous {
            return Err(CheckpointError::Ambiguous {
                path: old,
                table: table.to_owned(),
                wanted: self.path(table).display().to_string(),
            });
        }
        self.save(table, &slot.checkpoint)?;
        let _ = std::fs::remove_file(&old);
        tracing::info!(
            from = %old.display(),
            to = %self.path(table).display(),
            "checkpoint of an earlier version migrated"
        );
        self.load_slot(table)
    }

    pub fn save(&self, table: &str, cp: &Checkpoint) -> Result<(), CheckpointError> {
        let path = self.path(table);
        let io = |source| CheckpointError::Io {
            path: path.clone(),
            source,
        };
        let (prev_seq, size) = match self.written(table) {
            Some(w) => w,
            None => {
                let size = match std::fs::metadata(&path) {
                    Ok(m) => m.len() as usize / 2,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                    Err(e) => return Err(io(e)),
                };
                let seq = match size {
                    0 => 0,
                    _ => match self.load_slot(table) {
                        Ok(slot) => slot.map_or(0, |s| s.seq),
                        // Never overwrite another table's position.
                        Err(e @ CheckpointError::Mismatch { .. }) => return Err(e),
                        Err(_) => 0,
                    },
                };
                (seq, size)
            }
        };
        let seq = prev_seq + 1;
        let slot = Slot {
            seq,
            database: Some(self.database.clone()),
            table: Some(table.to_owned()),
            checkpoint: cp.clone(),
        };
        if size >= SLOT_UNIT {
            if let Some(line) = encode_slot(&slot, size) {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io)?;
                f.write_all_at(&line, (seq % 2) * size as u64).map_err(io)?;
                f.sync_data().map_err(io)?;
                self.set_written(table, (seq, size));
                return Ok(());
            }
        }
        // A new file, or slots too small for this checkpoint: write the whole file
        // aside, with the previous checkpoint in the other slot, then put it in place.
        let last = match size {
            0 => None,
            _ => self.load_slot(table).ok().flatten(),
        };
        let mut size = SLOT_UNIT;
        let line = loop {
            match encode_slot(&slot, size) {
                Some(line) => break line,
                None => size += SLOT_UNIT,
            }
        };
        let mut file = vec![b' '; 2 * size];
        file[size - 1] = b'\n';
        file[2 * size - 1] = b'\n';
        let at = (seq % 2) as usize * size;
        file[at..at + size].copy_from_slice(&line);
        if let Some(prev) = last.and_then(|s| encode_slot(&s, size)) {
            let at = ((seq + 1) % 2) as usize * size;
            file[at..at + size].copy_from_slice(&prev);
        }
        let tmp = path.with_extension("ckpt.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&file).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io)?;
        sync_dir(&self.dir).map_err(io)?;
        self.set_written(table, (seq, size));
        Ok(())
    }

    fn written(&self, table: &str) -> Option<(u64, usize)> {
        self.written
            .lock()
            .expect("checkpoint lock")
            .get(table)
            .copied()
    }

    fn set_written(&self, table: &str, w: (u64, usize)) {
        let mut written = self.written.lock().expect("checkpoint lock");
        match written.get_mut(table) {
            Some(e) => *e = w,
            None => {
                written.insert(table.to_owned(), w);
            }
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Connect worker mirrors a store's checkpoints by listing them: every
    /// table of the store's database comes back under its own name, whatever it
    /// holds, and no other database's.
    #[test]
    fn a_store_lists_and_removes_its_own_tables() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint {
            ts: 1,
            precision: "ms".into(),
            keys: Vec::new(),
            rows: 1,
        };
        let store = CheckpointStore::open(dir.path().to_path_buf(), "db.1").unwrap();
        let other = CheckpointStore::open(dir.path().to_path_buf(), "db").unwrap();
        for t in ["a.b", "a b", "température", "plain_t-1"] {
            store.save(t, &cp).unwrap();
        }
        other.save("x", &cp).unwrap();
        assert_eq!(store.tables(), ["a b", "a.b", "plain_t-1", "température"]);
        assert_eq!(other.tables(), ["x"]);
        store.remove("a.b").unwrap();
        store.remove("never-saved").unwrap();
        assert_eq!(store.load("a.b").unwrap(), None);
        assert_eq!(store.tables().len(), 3);
    }

    #[test]
    fn checkpoints_round_trip_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().join("cp"), "db").unwrap();
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

    fn cp(rows: u64, key: &str) -> Checkpoint {
        Checkpoint {
            ts: rows as i64,
            precision: "ms".into(),
            keys: vec![KeyValue::Text(key.into())],
            rows,
        }
    }

    #[test]
    fn saves_alternate_slots_and_a_torn_one_leaves_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().to_path_buf(), "db").unwrap();
        for n in 1..=5 {
            store.save("t", &cp(n, "k")).unwrap();
            assert_eq!(store.load("t").unwrap(), Some(cp(n, "k")));
        }
        let path = store.path("t");
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 2 * SLOT_UNIT, "saved in place, never grown");
        // Save 5 went to slot 1; a write torn inside it (a crash: the agent
        // starts again with a fresh store) leaves save 4.
        bytes[SLOT_UNIT + 40] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let store = CheckpointStore::open(dir.path().to_path_buf(), "db").unwrap();
        assert_eq!(store.load("t").unwrap(), Some(cp(4, "k")));
        // The next save (sequence 5 again) rewrites the torn slot, not save 4's.
        store.save("t", &cp(6, "k")).unwrap();
        assert_eq!(store.load("t").unwrap(), Some(cp(6, "k")));
        // Both slots torn: an error that says what to do.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 1;
        bytes[SLOT_UNIT + 40] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = store.load("t").unwrap_err().to_string();
        assert!(e.contains("move it away"), "{e}");
    }

    #[test]
    fn a_checkpoint_larger_than_a_slot_grows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().to_path_buf(), "db").unwrap();
        store.save("t", &cp(1, "short")).unwrap();
        let long = "x".repeat(3 * SLOT_UNIT);
        store.save("t", &cp(2, &long)).unwrap();
        assert_eq!(store.load("t").unwrap(), Some(cp(2, &long)));
        let len = std::fs::metadata(store.path("t")).unwrap().len() as usize;
        assert_eq!(len, 2 * 4 * SLOT_UNIT);
        store.save("t", &cp(3, "short")).unwrap();
        assert_eq!(store.load("t").unwrap(), Some(cp(3, "short")));
        assert!(!store.path("t").with_extension("ckpt.tmp").exists());
    }

    #[test]
    fn an_earlier_versions_checkpoint_is_read_then_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().to_path_buf(), "db").unwrap();
        std::fs::write(
            dir.path().join("t.json"),
            serde_json::to_vec(&cp(9, "old")).unwrap(),
        )
        .unwrap();
        assert_eq!(store.load("t").unwrap(), Some(cp(9, "old")));
        store.save("t", &cp(10, "new")).unwrap();
        assert_eq!(store.load("t").unwrap(), Some(cp(10, "new")));
        assert!(!dir.path().join("t.json").exists());
    }

    #[test]
    fn a_corrupt_checkpoint_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().to_path_buf(), "db").unwrap();
        std::fs::write(dir.path().join("t.json"), b"{nope").unwrap();
        let e = store.load("t").unwrap_err().to_string();
        assert!(e.contains("move it away"), "{e}");
    }

    #[test]
    fn tables_whose_names_differ_only_in_odd_characters_keep_their_own_positions() {
        // `a.b`, `a b`, `a/b` and `a%b` shared `a%b.ckpt`: the second table
        // resumed after the first one's last row and exported nothing.
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().to_path_buf(), "db").unwrap();
        let names = [
            "a.b", "a b", "a/b", "a%b", "a%2Eb", "ab", "a\nb", "a\u{1b}b", "é",
        ];
        for (n, name) in names.iter().enumerate() {
            assert_eq!(store.load(name).unwrap(), None, "{name:?} starts fresh");
            store.save(name, &cp(n as u64 + 1, name)).unwrap();
        }
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, names.len(), "one file per table, no .tmp left");
        for (n, name) in names.iter().enumerate() {
            assert_eq!(store.load(name).unwrap(), Some(cp(n as u64 + 1, name)));
        }
    }

    #[test]
    fn a_table_of_another_database_does_not_resume_from_this_ones_position() {
        let dir = tempfile::tempdir().unwrap();
        let a = CheckpointStore::open(dir.path().to_path_buf(), "a").unwrap();
        a.save("t", &cp(6, "k")).unwrap();
        let b = CheckpointStore::open(dir.path().to_path_buf(), "b").unwrap();
        assert_eq!(b.load("t").unwrap(), None);
        b.save("t", &cp(1, "k")).unwrap();
        assert_eq!(a.load("t").unwrap(), Some(cp(6, "k")));
        assert_eq!(b.load("t").unwrap(), Some(cp(1, "k")));
    }

    #[test]
    fn a_file_holding_another_tables_position_is_an_error_not_a_resume_point() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().to_path_buf(), "db").unwrap();
        store.save("x", &cp(6, "k")).unwrap();
        std::fs::copy(store.path("x"), store.path("y")).unwrap();
        let e = store.load("y").unwrap_err();
        assert!(matches!(e, CheckpointError::Mismatch { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains("\"x\"") && e.contains("move it away"), "{e}");
        // And a save does not overwrite it either.
        assert!(store.save("y", &cp(1, "k")).is_err());
        let other = CheckpointStore::open(dir.path().to_path_buf(), "other").unwrap();
        std::fs::copy(store.path("x"), other.path("x")).unwrap();
        assert!(matches!(
            other.load("x"),
            Err(CheckpointError::Mismatch { .. })
        ));
    }

    #[test]
    fn an_earlier_slotted_checkpoint_is_migrated_when_its_name_is_unambiguous() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().to_path_buf(), "db").unwrap();
        // As the earlier version wrote it: no identity, under the table's name.
        let slot = Slot {
            seq: 3,
            database: None,
            table: None,
            checkpoint: cp(7, "k"),
        };
        let line = encode_slot(&slot, SLOT_UNIT).unwrap();
        let blank = encode_slot(&Slot { seq: 2, ..slot }, SLOT_UNIT).unwrap();
        std::fs::write(dir.path().join("t_1.ckpt"), [line.clone(), blank].concat()).unwrap();
        assert_eq!(store.load("t_1").unwrap(), Some(cp(7, "k")));
        assert!(!dir.path().join("t_1.ckpt").exists(), "old file removed");
        assert!(store.path("t_1").exists());
        // A name the old scheme shared between tables is not guessed at.
        std::fs::write(dir.path().join("a%b.ckpt"), [line.clone(), line].concat()).unwrap();
        let e = store.load("a.b").unwrap_err();
        assert!(matches!(e, CheckpointError::Ambiguous { .. }), "{e}");
        assert!(e.to_string().contains("rename it to"), "{e}");
    }

    #[test]
    fn long_names_get_short_distinct_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().to_path_buf(), &"d".repeat(300)).unwrap();
        let a = format!("{}a", "é".repeat(200));
        let b = format!("{}b", "é".repeat(200));
        for (n, name) in [&a, &b].into_iter().enumerate() {
            let file = store.path(name);
            assert!(file.file_name().unwrap().len() < 255);
            store.save(name, &cp(n as u64, "k")).unwrap();
        }
        assert_ne!(store.path(&a), store.path(&b));
        assert_eq!(store.load(&a).unwrap(), Some(cp(0, "k")));
        assert_eq!(store.load(&b).unwrap(), Some(cp(1, "k")));
    }

    proptest::proptest! {
        #[test]
        fn file_stems_are_injective(
            d1 in ".{0,12}", t1 in ".{0,12}", d2 in ".{0,12}", t2 in ".{0,12}"
        ) {
            if (&d1, &t1) != (&d2, &t2) {
                proptest::prop_assert_ne!(file_stem(&d1, &t1), file_stem(&d2, &t2));
            }
            // And a pair differing by one character sharing the others.
            let t3 = format!("{t1}.");
            let t4 = format!("{t1} ");
            proptest::prop_assert_ne!(file_stem(&d1, &t3), file_stem(&d1, &t4));
        }
    }
}
