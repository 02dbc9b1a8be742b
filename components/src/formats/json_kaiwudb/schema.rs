//! A `json_kaiwudb` object's `columns` and `tags`: read, checked, turned into a
//! table schema, and cached by their bytes. Both decoding paths (serde and the
//! fast scanner) build schemas here, so they accept and reject the same ones.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use super::error::JsonKaiwudbError;
use crate::event::{DataType, Field, TableKind, TableSchema};
use crate::formats::{dyn_table, Reason};

/// A `columns` or `tags` list, read up to KWDB's limit (`MAX` declarations, the
/// same as every other format's) and skipped past it: a message declaring a
/// million columns costs one pass over its bytes, then is rejected.
pub(super) struct Specs<'a, const MAX: usize>(pub Result<Vec<FieldSpec<'a>>, JsonKaiwudbError>);

pub(super) type ColumnSpecs<'a> = Specs<'a, { dyn_table::MAX_COLUMNS }>;
pub(super) type TagSpecs<'a> = Specs<'a, { dyn_table::MAX_TAGS }>;

impl<'de: 'a, 'a, const MAX: usize> Deserialize<'de> for Specs<'a, MAX> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a, const MAX: usize>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a, const MAX: usize> Visitor<'de> for V<'a, MAX> {
            type Value = Specs<'a, MAX>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of declarations")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(spec) = seq.next_element::<FieldSpec<'a>>()? {
                    if out.len() == MAX {
                        while seq.next_element::<IgnoredAny>()?.is_some() {}
                        return Ok(Specs(Err(JsonKaiwudbError::TooMany)));
                    }
                    out.push(spec);
                }
                Ok(Specs(Ok(out)))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

/// Where each field of a schema is in a row, by name: a row's keys out of the
/// declared order are found in constant time, not by a scan of the schema (a
/// scan per key made a wide row quadratic).
pub(super) struct FieldIndex<'s> {
    schema: &'s TableSchema,
    /// Built for wide schemas only; a scan of a few names is faster.
    by_name: Option<std::collections::HashMap<&'s str, usize>>,
}

impl<'s> FieldIndex<'s> {
    pub(super) fn new(schema: &'s TableSchema) -> Self {
        let by_name = (schema.width() > 16).then(|| {
            let mut m = std::collections::HashMap::with_capacity(schema.width());
            for (i, f) in schema.fields().enumerate() {
                m.entry(f.name.as_str()).or_insert(i);
            }
            m
        });
        FieldIndex { schema, by_name }
    }

    pub(super) fn position(&self, name: &str) -> Option<usize> {
        match &self.by_name {
            Some(m) => m.get(name).copied(),
            None => self.schema.position(name),
        }
    }
}

/// A string borrowed from the input when it has no escapes (serde's own `Cow`
/// impl always copies).
pub(super) struct Str<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Deserialize)]
pub(super) struct FieldSpec<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default)]
    length: Option<u32>,
    #[serde(default)]
    nullable: Option<bool>,
    #[serde(default)]
    primary: Option<bool>,
    #[serde(default, rename = "isPrimary")]
    is_primary: Option<bool>,
}

/// Schemas met recently, by the bytes that declared them. Messages of one table
/// repeat their `columns` and `tags` verbatim, so a match skips parsing and
/// checking them again, and hands out the same `Arc`, which later stages (batching,
/// the sink's plans) compare by pointer before they compare contents.
#[derive(Debug, Default)]
pub struct SchemaCache {
    /// Most recently used first.
    entries: Vec<CachedSchema>,
}

#[derive(Debug)]
struct CachedSchema {
    columns: Box<[u8]>,
    tags: Box<[u8]>,
    schema: Arc<TableSchema>,
}

/// Enough for a topic carrying several tables, small enough that a miss is cheap.
const CACHED_SCHEMAS: usize = 16;

impl SchemaCache {
    /// The length of a cached `columns` (or `tags`) value that `text` starts with.
    /// A JSON array or object ends where its bytes end, so a cached value that is a
    /// prefix of `text` is exactly the value there.
    pub(crate) fn known_prefix(&self, text: &[u8], tags: bool) -> Option<usize> {
        self.entries
            .iter()
            .map(|e| if tags { &e.tags } else { &e.columns })
            .find(|v| text.starts_with(v))
            .map(|v| v.len())
    }

    pub(super) fn get(&mut self, columns: &[u8], tags: &[u8]) -> Option<Arc<TableSchema>> {
        let i = self
            .entries
            .iter()
            .position(|e| &*e.columns == columns && &*e.tags == tags)?;
        if i > 0 {
            let e = self.entries.remove(i);
            self.entries.insert(0, e);
        }
        Some(self.entries[0].schema.clone())
    }

    pub(super) fn insert(&mut self, columns: &[u8], tags: &[u8], schema: Arc<TableSchema>) {
        self.entries.truncate(CACHED_SCHEMAS - 1);
        self.entries.insert(
            0,
            CachedSchema {
                columns: columns.into(),
                tags: tags.into(),
                schema,
            },
        );
    }
}

pub(super) type SchemaError = (Option<String>, Reason);

fn spec_field(spec: &FieldSpec, is_tag: bool, first_ts: bool) -> Result<Field, SchemaError> {
    let ty = DataType::parse(&spec.ty).ok_or_else(|| {
        (
            Some(spec.name.to_string()),
            JsonKaiwudbError::UnknownType(spec.ty.to_string()).into(),
        )
    })?;
    let primary = is_tag && spec.primary.or(spec.is_primary).unwrap_or(false);
    let nullable = spec.nullable.unwrap_or(!(primary || first_ts));
    Ok(Field {
        name: spec.name.to_string(),
        ty,
        length: spec.length.unwrap_or_else(|| ty.default_length()),
        nullable,
        primary,
    })
}

/// The schema `columns` and `tags` declare, checked; `last` (the previous object's
/// schema) is handed out again when it is the same, so equal schemas share one `Arc`.
pub(super) fn build_schema(
    last: &mut Option<Arc<TableSchema>>,
    columns: &[FieldSpec],
    tags: &[FieldSpec],
) -> Result<Arc<TableSchema>, SchemaError> {
    if columns.is_empty() {
        return Err((None, JsonKaiwudbError::Missing("columns").into()));
    }
    let kind = if tags.is_empty() {
        TableKind::Relational
    } else {
        TableKind::TimeSeries
    };
    let ts = kind == TableKind::TimeSeries;
    let mut cols = Vec::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        cols.push(spec_field(c, false, ts && i == 0)?);
    }
    let mut tgs = Vec::with_capacity(tags.len());
    for t in tags {
        tgs.push(spec_field(t, true, false)?);
    }
    let schema = TableSchema::new(kind, cols, tgs);
    if let Some(last) = &*last {
        if **last == schema {
            return Ok(last.clone());
        }
    }
    if columns.len() > dyn_table::MAX_COLUMNS || tags.len() > dyn_table::MAX_TAGS {
        return Err((None, JsonKaiwudbError::TooMany.into()));
    }
    // A set, not a scan per name: linear in the declarations.
    let mut names = std::collections::HashSet::with_capacity(schema.width());
    for f in schema.fields() {
        if !names.insert(f.name.as_str()) {
            return Err((
                Some(f.name.clone()),
                JsonKaiwudbError::DuplicateName(f.name.clone()).into(),
            ));
        }
    }
    if ts {
        let first = &schema.columns[0];
        if !first.ty.is_timestamp() {
            return Err((
                Some(first.name.clone()),
                JsonKaiwudbError::FirstColumnNotTimestamp(first.ty).into(),
            ));
        }
        if schema.primary_tags().next().is_none() {
            return Err((None, JsonKaiwudbError::NoPrimaryTag.into()));
        }
    }
    let schema = Arc::new(schema);
    *last = Some(schema.clone());
    Ok(schema)
}
