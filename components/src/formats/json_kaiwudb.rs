//! `json_kaiwudb`: one JSON object per line carrying a table's schema and rows:
//! `{"table":..., "columns":[...], "tags":[...], "data":[{...}, ...]}`.
//!
//! Decoding streams straight into typed rows with serde (no `serde_json::Value`):
//! when `table`, `columns` and `tags` come before `data` (the seed's sink example),
//! rows are parsed in one pass; otherwise (the seed's source output, with `tags`
//! last, or a relational payload without tags) `data` is first captured as raw
//! text, then parsed once the schema is known.
//!
//! - Tags take `primary` or `isPrimary`; type names are read in any case.
//! - A table with tags is time-series: its first column must be a timestamp and
//!   it needs a primary tag. Without tags (absent, null or empty) it is relational.
//! - Columns are nullable unless they say `"nullable":false`, except the first
//!   column of a time-series table; tags are nullable unless primary.
//! - Timestamps are integers in the configured precision or text
//!   `YYYY-MM-DD HH:MM:SS[.fff]` (UTC). Floats also take `"NaN"`, `"Infinity"`,
//!   `"-Infinity"`. Bytes are `\x` + hex, or else the UTF-8 of the text.
//! - A data row naming a field the schema lacks, or missing a NOT NULL field, is
//!   rejected; a missing nullable field is null.
//! - Bad rows are rejected one by one; a bad schema or bad JSON rejects the object.
//!   An object may also span several lines (pretty-printed).

mod cell;
mod ctx;
mod error;
mod fast;
mod schema;

pub use error::JsonKaiwudbError;
#[cfg(test)]
pub(crate) use fast::serde_path_only;
pub use schema::SchemaCache;

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use cell::{Cell, ValueOutcome};
use ctx::{batch_for, Ctx};
use schema::{build_schema, ColumnSpecs, FieldIndex, FieldSpec, Str, TagSpecs};

use super::text::{push_f32, push_f64, push_int, push_json_str};
use super::value::{self, expectation, ValueError};
use super::{
    convert_ts, time, DecodeOptions, Decoded, EncodeOptions, Item, Reason, RecordError,
    RowEncodeError,
};
use crate::event::{Field, Precision, Row, RowBatch, TableKind, TableSchema, Timestamp, Value};

// ---- decoding ----

/// Decodes every object of a payload.
pub fn decode(payload: &[u8], options: &DecodeOptions) -> Decoded {
    decode_cached(payload, options, &mut SchemaCache::default())
}

/// Decodes every object of a payload, reusing schemas seen in earlier payloads.
pub fn decode_cached(
    payload: &[u8],
    options: &DecodeOptions,
    schemas: &mut SchemaCache,
) -> Decoded {
    let mut ctx = Ctx {
        options,
        schemas,
        batches: Vec::new(),
        errors: Vec::new(),
        last_schema: None,
        object_error: None,
        line: 0,
        span: 0..0,
        seen: Vec::new(),
    };
    let mut pos = 0usize;
    let mut line = 0usize;
    let mut mid_line = false;
    while pos < payload.len() {
        if !mid_line {
            line += 1;
        }
        mid_line = false;
        let end = memchr::memchr(b'\n', &payload[pos..]).map_or(payload.len(), |i| pos + i);
        let next = (end + 1).min(payload.len().max(end));
        let text = &payload[pos..end];
        if text.iter().all(u8::is_ascii_whitespace) {
            pos = end + 1;
            continue;
        }
        ctx.line = line;
        ctx.span = pos..end;
        match decode_object(&mut ctx, text) {
            Ok(()) => pos = next.max(end + 1),
            Err(e) if e.is_eof() => {
                // Perhaps an object spread over several lines.
                let rest = &payload[pos..];
                let mut stream =
                    serde_json::Deserializer::from_slice(rest).into_iter::<IgnoredAny>();
                match stream.next() {
                    Some(Ok(_)) => {
                        let used = stream.byte_offset();
                        ctx.span = pos..pos + used;
                        if let Err(e) = decode_object(&mut ctx, &rest[..used]) {
                            report(&mut ctx, e);
                        }
                        line += rest[..used].iter().filter(|&&b| b == b'\n').count();
                        pos += used;
                        mid_line = true;
                    }
                    _ => {
                        report(&mut ctx, e);
                        pos = end + 1;
                    }
                }
            }
            Err(e) => {
                report(&mut ctx, e);
                pos = end + 1;
            }
        }
    }
    Decoded {
        batches: ctx.batches,
        errors: ctx.errors,
    }
}

fn report(ctx: &mut Ctx, e: serde_json::Error) {
    let (field, reason) = ctx
        .object_error
        .take()
        .unwrap_or_else(|| (None, Reason::from(JsonKaiwudbError::Syntax(e.to_string()))));
    let mut err = RecordError::new(ctx.line, ctx.span.clone(), reason);
    err.field = field;
    ctx.errors.push(err);
}

/// Decodes one object; on error, every row it had added is taken back.
fn decode_object(ctx: &mut Ctx, text: &[u8]) -> Result<(), serde_json::Error> {
    if fast::enabled() && fast::decode_object(ctx, text) {
        return Ok(());
    }
    ctx.object_error = None;
    let errors_before = ctx.errors.len();
    let mut undo: Option<(usize, usize)> = None;
    let mut de = serde_json::Deserializer::from_slice(text);
    let result = ObjectSeed {
        ctx: &mut *ctx,
        undo: &mut undo,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if result.is_err() {
        if let Some((b, len)) = undo {
            ctx.batches[b].rows.truncate(len);
        }
        ctx.errors.truncate(errors_before);
    }
    result
}

struct ObjectSeed<'c, 'o> {
    ctx: &'c mut Ctx<'o>,
    undo: &'c mut Option<(usize, usize)>,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

fn fail<E: serde::de::Error>(ctx: &mut Ctx, field: Option<String>, reason: impl Into<Reason>) -> E {
    let reason = reason.into();
    let msg = reason.to_string();
    ctx.object_error = Some((field, reason));
    E::custom(msg)
}

impl<'de> Visitor<'de> for ObjectSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a json_kaiwudb object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        let mut table: Option<Cow<'de, str>> = None;
        let mut database: Option<Cow<'de, str>> = None;
        let mut columns: Option<Vec<FieldSpec<'de>>> = None;
        let mut tags: Option<Option<Vec<FieldSpec<'de>>>> = None;
        let mut raw_data: Option<&'de RawValue> = None;
        let mut target_batch: Option<usize> = None;
        // `database` given after `data` read in the same pass: the rows move to
        // that database's batch at the end (the fast path honours it too).
        let mut database_after_data = false;
        while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
            match key.as_ref() {
                "table" => table = Some(map.next_value::<Str<'de>>()?.0),
                "database" => {
                    database = map.next_value::<Option<Str<'de>>>()?.map(|s| s.0);
                    database_after_data = target_batch.is_some();
                }
                "columns" => {
                    let specs = map.next_value::<ColumnSpecs<'de>>()?.0;
                    columns = Some(specs.map_err(|e| fail(ctx, None, e))?);
                }
                "tags" => {
                    tags = Some(match map.next_value::<Option<TagSpecs<'de>>>()? {
                        Some(specs) => Some(specs.0.map_err(|e| fail(ctx, None, e))?),
                        None => None,
                    })
                }
                "data" => {
                    if let (Some(t), Some(c), Some(g)) = (&table, &columns, &tags) {
                        let schema =
                            build_schema(&mut ctx.last_schema, c, g.as_deref().unwrap_or(&[]))
                                .map_err(|(f, r)| fail(ctx, f, r))?;
                        let b = batch_for(ctx, t, database.as_deref(), schema);
                        *self.undo = Some((b, ctx.batches[b].rows.len()));
                        target_batch = Some(b);
                        map.next_value_seed(RowsSeed { ctx, batch: b })?;
                    } else {
                        raw_data = map.next_value()?;
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let table = table.ok_or_else(|| fail(ctx, None, JsonKaiwudbError::Missing("table")))?;
        let columns =
            columns.ok_or_else(|| fail(ctx, None, JsonKaiwudbError::Missing("columns")))?;
        if let Some(b) = target_batch {
            if database_after_data {
                let (_, len) = self.undo.expect("set with the batch");
                let rows = ctx.batches[b].rows.split_off(len);
                let schema = ctx.batches[b].schema.clone();
                let to = batch_for(ctx, &table, database.as_deref(), schema);
                *self.undo = Some((to, ctx.batches[to].rows.len()));
                ctx.batches[to].rows.extend(rows);
            }
            return Ok(());
        }
        let tags = tags.flatten().unwrap_or_default();
        let schema = build_schema(&mut ctx.last_schema, &columns, &tags)
            .map_err(|(f, r)| fail(ctx, f, r))?;
        let b = batch_for(ctx, &table, database.as_deref(), schema);
        *self.undo = Some((b, ctx.batches[b].rows.len()));
        if let Some(raw) = raw_data {
            let mut de = serde_json::Deserializer::from_str(raw.get());
            RowsSeed { ctx, batch: b }
                .deserialize(&mut de)
                .map_err(serde::de::Error::custom)?;
        }
        Ok(())
    }
}

struct RowsSeed<'c, 'o> {
    ctx: &'c mut Ctx<'o>,
    batch: usize,
}

impl<'de> DeserializeSeed<'de> for RowsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        let schema = ctx.batches[self.batch].schema.clone();
        let precision = ctx.options.precision;
        let mut index = 0usize;
        let mut seen = std::mem::take(&mut ctx.seen);
        let index_of = FieldIndex::new(&schema);
        while let Some(outcome) = seq.next_element_seed(RowSeed {
            schema: &schema,
            index: &index_of,
            precision,
            seen: &mut seen,
        })? {
            index += 1;
            match outcome {
                Ok(row) => ctx.batches[self.batch].rows.push(row),
                Err((field, reason)) => {
                    let mut err = RecordError::new(ctx.line, ctx.span.clone(), reason)
                        .with_item(Item::Row(index));
                    err.field = field;
                    ctx.errors.push(err);
                }
            }
        }
        ctx.seen = seen;
        Ok(())
    }
}

type RowOutcome = Result<Row, (Option<String>, Reason)>;

struct RowSeed<'s> {
    schema: &'s TableSchema,
    index: &'s FieldIndex<'s>,
    precision: Precision,
    seen: &'s mut Vec<bool>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = RowOutcome;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<RowOutcome, D::Error> {
        d.deserialize_any(self)
    }
}

fn not_object(what: &'static str) -> RowOutcome {
    Err((None, JsonKaiwudbError::RowNotObject(what).into()))
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = RowOutcome;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a data row")
    }

    fn visit_bool<E>(self, _: bool) -> Result<RowOutcome, E> {
        Ok(not_object("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<RowOutcome, E> {
        Ok(not_object("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<RowOutcome, E> {
        Ok(not_object("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<RowOutcome, E> {
        Ok(not_object("a number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<RowOutcome, E> {
        Ok(not_object("a string"))
    }
    fn visit_unit<E>(self) -> Result<RowOutcome, E> {
        Ok(not_object("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RowOutcome, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(not_object("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RowOutcome, A::Error> {
        let schema = self.schema;
        let width = schema.width();
        let seen = self.seen;
        seen.clear();
        seen.resize(width, false);
        let mut row: Row = vec![Value::Null; width];
        let mut error: Option<(Option<String>, Reason)> = None;
        let mut expect = 0usize;
        while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
            let index = if expect < width && schema.field(expect).name == key.as_ref() {
                Some(expect)
            } else {
                self.index.position(&key)
            };
            let Some(i) = index else {
                map.next_value::<IgnoredAny>()?;
                if error.is_none() {
                    error = Some((
                        Some(key.into_owned()),
                        JsonKaiwudbError::UnknownField.into(),
                    ));
                }
                continue;
            };
            let field = schema.field(i);
            let outcome = map.next_value_seed(ValueSeed(Cell {
                field,
                precision: self.precision,
            }))?;
            expect = i + 1;
            if seen[i] {
                if error.is_none() {
                    error = Some((
                        Some(field.name.clone()),
                        JsonKaiwudbError::DuplicateValue.into(),
                    ));
                }
                continue;
            }
            seen[i] = true;
            match outcome {
                Ok(v) => row[i] = v,
                Err(e) => {
                    if error.is_none() {
                        error = Some((Some(field.name.clone()), e));
                    }
                }
            }
        }
        if let Some(e) = error {
            return Ok(Err(e));
        }
        for (i, f) in schema.fields().enumerate() {
            if !seen[i] && !f.nullable {
                return Ok(Err((Some(f.name.clone()), ValueError::Missing.into())));
            }
        }
        Ok(Ok(row))
    }
}

/// Reads one value with serde and hands it to the shared [`Cell`] dispatch.
struct ValueSeed<'f>(Cell<'f>);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ValueOutcome;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<ValueOutcome, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ValueOutcome;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(expectation(self.0.field.ty))
    }

    fn visit_unit<E>(self) -> Result<ValueOutcome, E> {
        Ok(self.0.null())
    }

    fn visit_bool<E>(self, v: bool) -> Result<ValueOutcome, E> {
        Ok(self.0.bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<ValueOutcome, E> {
        Ok(self.0.int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<ValueOutcome, E> {
        Ok(self.0.uint(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<ValueOutcome, E> {
        Ok(self.0.float(v))
    }

    fn visit_str<E>(self, s: &str) -> Result<ValueOutcome, E> {
        Ok(self.0.text(Cow::Borrowed(s)))
    }

    fn visit_string<E>(self, s: String) -> Result<ValueOutcome, E> {
        Ok(self.0.text(Cow::Owned(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ValueOutcome, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(self.0.mismatch("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ValueOutcome, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(self.0.mismatch("an object"))
    }
}

// ---- encoding ----

fn push_field_spec(out: &mut Vec<u8>, f: &Field, tag: bool, implied_not_null: bool) {
    out.extend_from_slice(b"{\"name\":");
    push_json_str(out, &f.name);
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(f.ty.name().as_bytes());
    out.extend_from_slice(b"\",\"length\":");
    push_int(out, i64::from(f.length));
    if tag {
        out.extend_from_slice(if f.primary {
            b",\"isPrimary\":true"
        } else {
            b",\"isPrimary\":false"
        });
        out.extend_from_slice(if f.nullable {
            b",\"nullable\":true"
        } else {
            b",\"nullable\":false"
        });
    } else if !f.nullable && !implied_not_null {
        // The seed's columns carry no `nullable`; say it only when it matters.
        out.extend_from_slice(b",\"nullable\":false");
    }
    out.push(b'}');
}

/// Writes one object for the batch, in the shape of the seed's source output:
/// `table`, `columns`, `data` (every field of every row, nulls included), then
/// `tags` with `isPrimary` and `nullable`. Relational tables get no `tags` and
/// text timestamps.
pub(crate) fn encode(
    batch: &RowBatch,
    options: &EncodeOptions,
    out: &mut Vec<u8>,
    skip: &dyn Fn(usize) -> bool,
    on_error: &mut dyn FnMut(usize, RowEncodeError) -> bool,
) {
    let schema = &batch.schema;
    let ts_table = schema.kind == TableKind::TimeSeries;
    let start = out.len();
    out.extend_from_slice(b"{\"table\":");
    push_json_str(out, &batch.target.table);
    out.extend_from_slice(b",\"columns\":[");
    for (i, c) in schema.columns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_field_spec(out, c, false, ts_table && i == 0 && c.ty.is_timestamp());
    }
    out.extend_from_slice(b"],\"data\":[");
    // Keys are the same for every row: escape them once.
    let keys: Vec<Vec<u8>> = schema
        .fields()
        .map(|f| {
            let mut k = Vec::with_capacity(f.name.len() + 3);
            push_json_str(&mut k, &f.name);
            k.push(b':');
            k
        })
        .collect();
    let mut written = 0usize;
    for (r, row) in batch.rows.iter().enumerate() {
        if skip(r) {
            continue;
        }
        let row_start = out.len();
        if written > 0 {
            out.push(b',');
        }
        out.push(b'{');
        let mut result = Ok(());
        for (i, (v, key)) in row.iter().zip(&keys).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key);
            if let Err(e) = push_value(out, v, schema.field(i), ts_table, options.precision) {
                result = Err(e);
                break;
            }
        }
        match result {
            Ok(()) => {
                out.push(b'}');
                written += 1;
            }
            Err(e) => {
                out.truncate(row_start);
                if !on_error(r, e) {
                    out.truncate(start);
                    return;
                }
            }
        }
    }
    out.push(b']');
    if !schema.tags.is_empty() {
        out.extend_from_slice(b",\"tags\":[");
        for (i, t) in schema.tags.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_field_spec(out, t, true, false);
        }
        out.push(b']');
    }
    out.extend_from_slice(b"}\n");
    if written == 0 {
        // Nothing left to say: every row was rejected (or there were none).
        out.truncate(start);
    }
}

fn push_value(
    out: &mut Vec<u8>,
    v: &Value,
    field: &Field,
    ts_table: bool,
    precision: Precision,
) -> Result<(), RowEncodeError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int2(x) => push_int(out, i64::from(*x)),
        Value::Int4(x) => push_int(out, i64::from(*x)),
        Value::Int8(x) => push_int(out, *x),
        Value::Float4(x) => {
            if x.is_finite() {
                push_f32(out, *x);
            } else {
                out.push(b'"');
                push_f32(out, *x);
                out.push(b'"');
            }
        }
        Value::Float8(x) => {
            if x.is_finite() {
                push_f64(out, *x);
            } else {
                out.push(b'"');
                push_f64(out, *x);
                out.push(b'"');
            }
        }
        Value::String(s) => push_json_str(out, s),
        Value::Bytes(b) => {
            // `\x` + hex, its backslash escaped for JSON.
            out.extend_from_slice(b"\"\\");
            value::push_hex_bytes(b, out);
            out.push(b'"');
        }
        Value::Timestamp(t) if t.loses_digits_at(precision) => {
            // Finer than the numbers' precision (a `now()` row of a TIMESTAMPTZ(6)
            // column under the default ms): the format's text form keeps every
            // digit, and readers of numbers in `precision` are not misled.
            out.push(b'"');
            time::format_timestamp(*t, out);
            out.push(b'"');
        }
        Value::Timestamp(t) => {
            let value = convert_ts(*t, precision, &field.name)?;
            if ts_table {
                push_int(out, value);
            } else {
                out.push(b'"');
                time::format_timestamp(Timestamp::new(value, precision), out);
                out.push(b'"');
            }
        }
        Value::Date(d) => {
            out.push(b'"');
            time::format_date_days(i64::from(*d), out);
            out.push(b'"');
        }
    }
    Ok(())
}
