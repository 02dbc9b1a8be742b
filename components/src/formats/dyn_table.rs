//! Tables built from records that carry no schema (line protocol, OpenTSDB): the
//! schema is the union of the fields seen, typed from the values; a record whose
//! value types clash with a table's goes to another batch for the same table, and
//! schema inference (or the sink) reconciles them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::value::string_len;
use super::DecodedBatch;
use crate::event::{DataType, Field, Row, TableKind, TableSchema, Target, Timestamp, Value};

/// KWDB's limits: 4096 columns, 128 tags. Also bounds the work per payload.
pub(crate) const MAX_COLUMNS: usize = 4096;
pub(crate) const MAX_TAGS: usize = 128;

/// The synthetic primary tag of tables from records whose tags are many and
/// free-form (OpenTSDB points, line protocol): one tag keyed by all of them.
pub const PRIMARY_TAG: &str = "primary_tag";

/// The primary tag's value: hex SHA-256 of `k1=v1,k2=v2` (tags sorted by key).
pub fn primary_tag_value<'a>(sorted_tags: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    hash_hex(&join_tags(sorted_tags))
}

/// `k1=v1,k2=v2`: the text the primary tag hashes (and the device key of a point).
pub(crate) fn join_tags<'a>(sorted_tags: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut joined = String::new();
    for (i, (k, v)) in sorted_tags.enumerate() {
        if i > 0 {
            joined.push(',');
        }
        joined.push_str(k);
        joined.push('=');
        joined.push_str(v);
    }
    joined
}

/// Hex SHA-256 of `joined` (what [`join_tags`] made).
pub(crate) fn hash_hex(joined: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(joined.as_bytes());
    let mut s = String::with_capacity(64);
    for b in digest.iter() {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// One named value of a record.
pub(crate) struct Named<'a> {
    pub name: Cow<'a, str>,
    pub ty: DataType,
    pub value: Value,
}

pub(crate) enum InsertError {
    TooManyFields,
    /// A name given twice in one record, or the name of the timestamp column.
    Duplicate(String),
}

struct Slot {
    field: Field,
    is_tag: bool,
}

struct DynTable {
    target: Target,
    /// Fields in order of first appearance; slot 0 is the timestamp.
    slots: Vec<Slot>,
    by_name: HashMap<String, usize>,
    columns: usize,
    tags: usize,
    /// Whether the slots are already columns-then-tags.
    ordered: bool,
    rows: Vec<Row>,
    merge: HashMap<(i64, String), usize>,
    /// Slots of the previous record's values, in record order.
    hint: Vec<usize>,
}

impl DynTable {
    fn new(target: Target, ts_name: &str) -> Self {
        let ts = Field::column(ts_name, DataType::TimestampTz).not_null();
        let mut by_name = HashMap::new();
        by_name.insert(ts_name.to_string(), 0);
        DynTable {
            target,
            slots: vec![Slot {
                field: ts,
                is_tag: false,
            }],
            by_name,
            columns: 1,
            tags: 0,
            ordered: true,
            rows: Vec::new(),
            merge: HashMap::new(),
            hint: Vec::new(),
        }
    }

    /// Whether every value of the record fits the slots already there.
    fn accepts(&self, fields: &[Named], tags: &[Named]) -> bool {
        let fits = |n: &Named, is_tag: bool| match self.by_name.get(n.name.as_ref()) {
            Some(&i) => {
                let s = &self.slots[i];
                i != 0 && s.is_tag == is_tag && s.field.ty == n.ty
            }
            None => true,
        };
        fields.iter().all(|n| fits(n, false)) && tags.iter().all(|n| fits(n, true))
    }

    fn slot_for(
        &mut self,
        n: &Named,
        is_tag: bool,
        primary_tag: bool,
    ) -> Result<usize, InsertError> {
        if let Some(&i) = self.by_name.get(n.name.as_ref()) {
            return Ok(i);
        }
        if is_tag {
            if self.tags >= MAX_TAGS {
                return Err(InsertError::TooManyFields);
            }
            self.tags += 1;
        } else {
            if self.columns >= MAX_COLUMNS {
                return Err(InsertError::TooManyFields);
            }
            self.columns += 1;
            if self.tags > 0 {
                self.ordered = false;
            }
        }
        let field = if is_tag && primary_tag {
            Field::tag(n.name.as_ref(), n.ty, true).with_length(64)
        } else if is_tag {
            Field::tag(n.name.as_ref(), n.ty, false)
        } else {
            Field::column(n.name.as_ref(), n.ty)
        };
        let i = self.slots.len();
        self.slots.push(Slot { field, is_tag });
        self.by_name.insert(n.name.to_string(), i);
        Ok(i)
    }

    fn finish(self) -> DecodedBatch {
        let DynTable {
            target,
            mut slots,
            ordered,
            mut rows,
            ..
        } = self;
        let width = slots.len();
        for row in &mut rows {
            row.resize(width, Value::Null);
        }
        // Inferred string lengths: the longest value seen.
        for (i, slot) in slots.iter_mut().enumerate() {
            let ty = slot.field.ty;
            if ty.has_length_limit() && !(slot.is_tag && slot.field.primary) {
                let longest = rows
                    .iter()
                    .map(|r| match &r[i] {
                        Value::String(s) => string_len(ty, s),
                        Value::Bytes(b) => b.len(),
                        _ => 0,
                    })
                    .max()
                    .unwrap_or(0);
                slot.field.length = longest.max(1) as u32;
            }
        }
        let order: Vec<usize> = if ordered {
            (0..width).collect()
        } else {
            let mut o: Vec<usize> = (0..width).filter(|&i| !slots[i].is_tag).collect();
            o.extend((0..width).filter(|&i| slots[i].is_tag));
            o
        };
        if !ordered {
            for row in &mut rows {
                let mut old = std::mem::take(row);
                *row = order
                    .iter()
                    .map(|&i| std::mem::replace(&mut old[i], Value::Null))
                    .collect();
            }
        }
        let mut columns = Vec::new();
        let mut tags = Vec::new();
        let mut slots: Vec<Option<Slot>> = slots.into_iter().map(Some).collect();
        for &i in &order {
            if let Some(s) = slots[i].take() {
                if s.is_tag {
                    tags.push(s.field);
                } else {
                    columns.push(s.field);
                }
            }
        }
        DecodedBatch {
            target,
            schema: Arc::new(TableSchema::new(TableKind::TimeSeries, columns, tags)),
            rows,
        }
    }
}

pub(crate) struct DynTables {
    ts_name: &'static str,
    /// Tags that are primary: the synthetic `primary_tag` (OpenTSDB, line
    /// protocol with `device_key`), or the ones a `primary_tags` option names.
    primary: Vec<String>,
    database: Option<String>,
    tables: Vec<DynTable>,
    last: usize,
}

impl DynTables {
    /// `primary_tag`: whether a tag named `primary_tag` is the synthetic primary tag.
    pub fn new(ts_name: &'static str, primary_tag: bool, database: Option<String>) -> Self {
        DynTables {
            ts_name,
            primary: if primary_tag {
                vec!["primary_tag".to_string()]
            } else {
                Vec::new()
            },
            database,
            tables: Vec::new(),
            last: 0,
        }
    }

    /// Makes these tags primary (NOT NULL, the device key), besides any synthetic one.
    pub fn with_primary_tags(mut self, names: &[String]) -> Self {
        self.primary.extend(names.iter().cloned());
        self
    }

    fn find(&mut self, table: &str, fields: &[Named], tags: &[Named]) -> usize {
        if let Some(t) = self.tables.get(self.last) {
            if t.target.table == table && t.accepts(fields, tags) {
                return self.last;
            }
        }
        if let Some(i) = self
            .tables
            .iter()
            .position(|t| t.target.table == table && t.accepts(fields, tags))
        {
            return i;
        }
        let target = Target {
            database: self.database.clone(),
            table: table.to_string(),
        };
        self.tables.push(DynTable::new(target, self.ts_name));
        self.tables.len() - 1
    }

    /// Adds a record; with `merge_key`, a record with the same key in the same
    /// table fills in the row already there instead of adding one.
    pub fn insert(
        &mut self,
        table: &str,
        ts: Timestamp,
        fields: &mut Vec<Named>,
        tags: &mut Vec<Named>,
        merge_key: Option<(i64, String)>,
    ) -> Result<(), InsertError> {
        // Fast path: the same layout as the previous record of the same table, which
        // is what a stream of lines from one device looks like.
        let fast = self.tables.get(self.last).is_some_and(|t| {
            t.target.table == table
                && t.hint.len() == fields.len() + tags.len()
                && fields
                    .iter()
                    .map(|n| (n, false))
                    .chain(tags.iter().map(|n| (n, true)))
                    .zip(&t.hint)
                    .all(|((n, is_tag), &i)| {
                        let s = &t.slots[i];
                        s.is_tag == is_tag && s.field.ty == n.ty && s.field.name == n.name
                    })
        });
        let ti = if fast {
            self.last
        } else {
            let ti = self.find(table, fields, tags);
            self.last = ti;
            let primary_names = &self.primary;
            let t = &mut self.tables[ti];
            let mut idx: Vec<usize> = Vec::with_capacity(fields.len() + tags.len());
            let before = t.slots.len();
            let (cols_before, tags_before, ordered_before) = (t.columns, t.tags, t.ordered);
            let named = fields
                .iter()
                .map(|n| (n, false))
                .chain(tags.iter().map(|n| (n, true)));
            for (n, is_tag) in named {
                let primary = is_tag && primary_names.iter().any(|p| *p == n.name);
                match t.slot_for(n, is_tag, primary) {
                    Ok(i) => idx.push(i),
                    Err(e) => {
                        rollback(t, before, cols_before, tags_before, ordered_before);
                        return Err(e);
                    }
                }
            }
            let mut sorted = idx.clone();
            sorted.sort_unstable();
            let dup = if sorted.first() == Some(&0) {
                Some(0)
            } else {
                sorted.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
            };
            if let Some(dup) = dup {
                let name = t.slots[dup].field.name.clone();
                rollback(t, before, cols_before, tags_before, ordered_before);
                return Err(InsertError::Duplicate(name));
            }
            t.hint = idx;
            ti
        };
        let t = &mut self.tables[ti];
        let existing = match merge_key {
            Some(key) => match t.merge.get(&key) {
                Some(&r) => Some(r),
                None => {
                    t.merge.insert(key, t.rows.len());
                    None
                }
            },
            None => None,
        };
        let width = t.slots.len();
        let row = match existing {
            Some(r) => &mut t.rows[r],
            None => {
                let mut row = Vec::with_capacity(width);
                row.push(Value::Timestamp(ts));
                t.rows.push(row);
                let last = t.rows.len() - 1;
                &mut t.rows[last]
            }
        };
        if row.len() < width {
            row.resize(width, Value::Null);
        }
        for (n, &i) in fields.drain(..).chain(tags.drain(..)).zip(&t.hint) {
            row[i] = n.value;
        }
        Ok(())
    }

    pub fn finish(self) -> Vec<DecodedBatch> {
        self.tables
            .into_iter()
            .filter(|t| !t.rows.is_empty())
            .map(DynTable::finish)
            .collect()
    }
}

fn rollback(t: &mut DynTable, len: usize, columns: usize, tags: usize, ordered: bool) {
    for s in t.slots.drain(len..) {
        t.by_name.remove(&s.field.name);
    }
    t.columns = columns;
    t.tags = tags;
    t.ordered = ordered;
}
