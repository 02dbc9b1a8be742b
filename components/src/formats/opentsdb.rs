//! `json_opentsdb` and `line_opentsdb` (telnet): one value per point, merged into rows.
//!
//! - The metric `table.column` is split at its last dot.
//! - Timestamps below 10^10 are seconds, below 10^13 milliseconds; anything else is
//!   an error. Decoded timestamps are milliseconds.
//! - Points with the same table, timestamp and tags in one payload become one row.
//! - Schema: `timestamp TIMESTAMPTZ NOT NULL`, one nullable column per metric
//!   column typed from its values (FLOAT8 for numbers, BOOL, VARCHAR for strings;
//!   the JSON strings `"NaN"`, `"Infinity"`, `"-Infinity"` are FLOAT8), the tags as
//!   VARCHAR, and the primary tag `primary_tag VARCHAR(64)`: the lowercase hex
//!   SHA-256 of the tags sorted by key and joined as `k1=v1,k2=v2` (no tags: the
//!   hash of the empty string).
//! - Integers that a FLOAT8 cannot hold exactly (beyond 2^53) are rejected rather
//!   than rounded.
//! - Telnet lines: `[put ]metric timestamp value tag=value ...`, whitespace
//!   separated; values are numbers (or `true`/`false`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use super::dyn_table::{self, DynTables, InsertError, Named};
use serde::de::Visitor;
use serde::Deserialize;
use serde_json::value::RawValue;
// Public here as before: the primary tag is what OpenTSDB points are keyed by.
pub use super::dyn_table::{primary_tag_value, PRIMARY_TAG};
use super::text::{excerpt, push_f64, push_int, push_json_str};
use super::value::{push_value_text, ValueError};
use super::{
    convert_ts, lines, DecodeOptions, Decoded, EncodeOptions, Format, Item, Reason, RecordError,
    RowEncodeError,
};
use crate::event::{DataType, Precision, RowBatch, Timestamp, Value};

/// The timestamp column of OpenTSDB tables.
pub const TIMESTAMP_COLUMN: &str = "timestamp";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenTsdbError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("line is not valid UTF-8")]
    Utf8,
    #[error("expected: metric timestamp value [tag=value ...]")]
    Incomplete,
    #[error("metric \"{0}\" is not table.column")]
    BadMetric(String),
    #[error("invalid timestamp \"{0}\"")]
    BadTimestamp(String),
    #[error("timestamp {0} is neither seconds (up to 10 digits) nor milliseconds (13 digits)")]
    TimestampDigits(i64),
    #[error("invalid value \"{0}\"; expected a number or a boolean")]
    BadValue(String),
    #[error("invalid tag \"{0}\"; expected key=value")]
    BadTag(String),
    #[error("tag \"{0}\" is given twice")]
    DuplicateTag(String),
    #[error("\"{0}\" is given twice")]
    Duplicate(String),
    #[error("\"timestamp\" names the timestamp column; it cannot be a metric column or a tag")]
    Reserved,
    #[error("more than 4096 columns or 128 tags for one table")]
    TooMany,
}

type PointError = (Option<String>, Reason);

fn err(e: impl Into<Reason>) -> PointError {
    (None, e.into())
}

/// A point's value, typed.
fn number_value(v: f64) -> (DataType, Value) {
    (DataType::Float8, Value::Float8(v))
}

fn exact_int(v: i64) -> Result<(DataType, Value), PointError> {
    let f = v as f64;
    if f as i128 != i128::from(v) {
        return Err(err(ValueError::Inexact {
            value: v.to_string(),
            ty: DataType::Float8,
        }));
    }
    Ok(number_value(f))
}

/// The digit rule: seconds below 10^10, milliseconds below 10^13.
fn timestamp_ms(v: i64) -> Result<Timestamp, PointError> {
    if (0..10_000_000_000).contains(&v) {
        Ok(Timestamp::new(v * 1000, Precision::Ms))
    } else if (0..10_000_000_000_000).contains(&v) {
        Ok(Timestamp::new(v, Precision::Ms))
    } else {
        Err(err(OpenTsdbError::TimestampDigits(v)))
    }
}

fn split_metric(metric: &str) -> Result<(&str, &str), PointError> {
    match metric.rsplit_once('.') {
        Some((t, c)) if !t.is_empty() && !c.is_empty() => Ok((t, c)),
        _ => Err(err(OpenTsdbError::BadMetric(metric.to_string()))),
    }
}

/// Adds one point; `tags` must be sorted by key.
fn add_point(
    tables: &mut DynTables,
    metric: &str,
    ts: Timestamp,
    value: (DataType, Value),
    tags: &[(Cow<str>, Cow<str>)],
) -> Result<(), PointError> {
    let (table, column) = split_metric(metric)?;
    if let Some(w) = tags.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err((
            Some(w[0].0.to_string()),
            OpenTsdbError::DuplicateTag(w[0].0.to_string()).into(),
        ));
    }
    let joined = dyn_table::join_tags(tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref())));
    let mut named_tags = Vec::with_capacity(tags.len() + 1);
    named_tags.push(Named {
        name: Cow::Borrowed(PRIMARY_TAG),
        ty: DataType::Varchar,
        value: Value::String(dyn_table::hash_hex(&joined)),
    });
    for (k, v) in tags {
        named_tags.push(Named {
            name: Cow::Owned(k.to_string()),
            ty: DataType::Varchar,
            value: Value::String(v.to_string()),
        });
    }
    let mut fields = vec![Named {
        name: Cow::Owned(column.to_string()),
        ty: value.0,
        value: value.1,
    }];
    tables
        .insert(
            table,
            ts,
            &mut fields,
            &mut named_tags,
            Some((ts.value, joined)),
        )
        .map_err(|e| match e {
            InsertError::TooManyFields => err(OpenTsdbError::TooMany),
            InsertError::Duplicate(name) if name == TIMESTAMP_COLUMN => {
                (Some(name), OpenTsdbError::Reserved.into())
            }
            InsertError::Duplicate(name) => {
                (Some(name.clone()), OpenTsdbError::Duplicate(name).into())
            }
        })
}

// ---- JSON ----

#[derive(Deserialize)]
struct PointJson<'a> {
    #[serde(borrow)]
    metric: Cow<'a, str>,
    timestamp: TsJson,
    /// Raw, so an integer beyond i64 is seen as one (serde_json hands it on as
    /// the nearest f64, and it was stored rounded).
    #[serde(borrow)]
    value: &'a serde_json::value::RawValue,
    #[serde(default, borrow)]
    tags: Option<BTreeMap<Cow<'a, str>, TagJson<'a>>>,
}

struct TsJson(Result<i64, String>);

impl<'de> Deserialize<'de> for TsJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TsJson;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a timestamp")
            }
            fn visit_i64<E>(self, v: i64) -> Result<TsJson, E> {
                Ok(TsJson(Ok(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<TsJson, E> {
                Ok(TsJson(i64::try_from(v).map_err(|_| v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<TsJson, E> {
                Ok(TsJson(Err(v.to_string())))
            }
            fn visit_str<E>(self, v: &str) -> Result<TsJson, E> {
                Ok(TsJson(v.parse().map_err(|_| excerpt(v.as_bytes()))))
            }
        }
        d.deserialize_any(V)
    }
}

enum ValueJson<'a> {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Str(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for ValueJson<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = ValueJson<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, a boolean or a string")
            }
            fn visit_i64<E>(self, v: i64) -> Result<ValueJson<'a>, E> {
                Ok(ValueJson::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ValueJson<'a>, E> {
                Ok(ValueJson::UInt(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<ValueJson<'a>, E> {
                Ok(ValueJson::Float(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<ValueJson<'a>, E> {
                Ok(ValueJson::Bool(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<ValueJson<'a>, E> {
                Ok(ValueJson::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<ValueJson<'a>, E> {
                Ok(ValueJson::Str(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Tag values are text; numbers and booleans are taken as their text.
struct TagJson<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for TagJson<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = TagJson<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a tag value")
            }
            fn visit_i64<E>(self, v: i64) -> Result<TagJson<'a>, E> {
                Ok(TagJson(Cow::Owned(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<TagJson<'a>, E> {
                Ok(TagJson(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<TagJson<'a>, E> {
                let mut b = ryu::Buffer::new();
                Ok(TagJson(Cow::Owned(b.format(v).to_string())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<TagJson<'a>, E> {
                Ok(TagJson(Cow::Owned(v.to_string())))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<TagJson<'a>, E> {
                Ok(TagJson(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<TagJson<'a>, E> {
                Ok(TagJson(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

fn json_point(tables: &mut DynTables, raw: &str) -> Result<(), PointError> {
    let p: PointJson =
        serde_json::from_str(raw).map_err(|e| err(OpenTsdbError::Json(e.to_string())))?;
    let ts = match p.timestamp.0 {
        Ok(v) => timestamp_ms(v)?,
        Err(text) => return Err(err(OpenTsdbError::BadTimestamp(text))),
    };
    let column = split_metric(&p.metric)?.1.to_string();
    let raw = p.value.get();
    let value = if is_integer_syntax(raw) && raw.parse::<i64>().is_err() {
        return Err((
            Some(column),
            ValueError::Inexact {
                value: excerpt(raw.as_bytes()),
                ty: DataType::Float8,
            }
            .into(),
        ));
    } else {
        serde_json::from_str::<ValueJson>(raw)
            .map_err(|e| err(OpenTsdbError::Json(e.to_string())))?
    };
    let value = match value {
        ValueJson::Int(v) => exact_int(v),
        ValueJson::UInt(v) => match i64::try_from(v) {
            Ok(v) => exact_int(v),
            Err(_) => Err(err(ValueError::Inexact {
                value: v.to_string(),
                ty: DataType::Float8,
            })),
        },
        ValueJson::Float(v) => Ok(number_value(v)),
        ValueJson::Bool(b) => Ok((DataType::Bool, Value::Bool(b))),
        ValueJson::Str(s) => Ok(match s.as_ref() {
            "NaN" | "Infinity" | "-Infinity" => {
                number_value(super::value::parse_float(&s).unwrap_or(f64::NAN))
            }
            _ => (DataType::Varchar, Value::String(s.into_owned())),
        }),
    }
    .map_err(|(_, r)| (Some(column.clone()), r))?;
    let tags: Vec<(Cow<str>, Cow<str>)> = p
        .tags
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    add_point(tables, &p.metric, ts, value, &tags)
}

/// Decodes OpenTSDB JSON: per line, one point object or an array of them (a
/// document may also span lines).
pub fn decode_json(payload: &[u8], options: &DecodeOptions) -> Decoded {
    let mut tables = DynTables::new(TIMESTAMP_COLUMN, true, options.database.clone());
    let mut errors = Vec::new();
    let mut pos = 0usize;
    let mut line = 0usize;
    let mut mid_line = false;
    while pos < payload.len() {
        if !mid_line {
            line += 1;
        }
        mid_line = false;
        let end = payload[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(payload.len(), |i| pos + i);
        let text = &payload[pos..end];
        if text.iter().all(u8::is_ascii_whitespace) {
            pos = end + 1;
            continue;
        }
        let (doc, used) = match serde_json::from_slice::<&RawValue>(text) {
            Ok(doc) => (Some(doc), end - pos),
            Err(e) => {
                let rest = &payload[pos..];
                let mut stream =
                    serde_json::Deserializer::from_slice(rest).into_iter::<&RawValue>();
                match stream.next() {
                    Some(Ok(doc)) if e.is_eof() => (Some(doc), stream.byte_offset()),
                    _ => {
                        errors.push(RecordError::new(
                            line,
                            pos..end,
                            OpenTsdbError::Json(e.to_string()),
                        ));
                        (None, end - pos)
                    }
                }
            }
        };
        if let Some(doc) = doc {
            let base = payload.as_ptr() as usize;
            let doc_line = line;
            let mut each = |index: Option<usize>, raw: &RawValue| {
                if let Err((field, reason)) = json_point(&mut tables, raw.get()) {
                    let start = raw.get().as_ptr() as usize - base;
                    let mut e = RecordError::new(doc_line, start..start + raw.get().len(), reason);
                    e.field = field;
                    e.item = index.map(Item::Point);
                    errors.push(e);
                }
            };
            let trimmed = doc.get().trim_start();
            if trimmed.starts_with('[') {
                match serde_json::from_str::<Vec<&RawValue>>(doc.get()) {
                    Ok(points) => {
                        for (i, p) in points.into_iter().enumerate() {
                            each(Some(i + 1), p);
                        }
                    }
                    Err(e) => errors.push(RecordError::new(
                        line,
                        pos..pos + used,
                        OpenTsdbError::Json(e.to_string()),
                    )),
                }
            } else {
                each(None, doc);
            }
            line += payload[pos..pos + used]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
        }
        if used == end - pos {
            pos = end + 1;
        } else {
            pos += used;
            mid_line = true;
        }
    }
    Decoded {
        batches: tables.finish(),
        errors,
    }
}

/// An optional sign and digits only: an integer, however large.
fn is_integer_syntax(token: &str) -> bool {
    let digits = token.strip_prefix(['-', '+']).unwrap_or(token);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

// ---- telnet ----

fn telnet_value(token: &str) -> Result<(DataType, Value), PointError> {
    match token {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok((DataType::Bool, Value::Bool(true))),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok((DataType::Bool, Value::Bool(false))),
        _ => {}
    }
    if let Ok(v) = token.parse::<i64>() {
        return exact_int(v);
    }
    if is_integer_syntax(token) {
        // Beyond i64: no column type holds it exactly, and a FLOAT8 would round it.
        return Err(err(ValueError::Inexact {
            value: excerpt(token.as_bytes()),
            ty: DataType::Float8,
        }));
    }
    let body = token.strip_prefix(['-', '+']).unwrap_or(token);
    let numeric = matches!(body, "NaN" | "Infinity" | "inf")
        || (body.starts_with(|c: char| c.is_ascii_digit() || c == '.')
            && body
                .bytes()
                .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+')));
    match super::value::parse_float(token).filter(|_| numeric) {
        Some(v) => Ok(number_value(v)),
        None => Err(err(OpenTsdbError::BadValue(excerpt(token.as_bytes())))),
    }
}

fn telnet_line(tables: &mut DynTables, line: &str) -> Result<(), PointError> {
    let line = line.trim();
    let line = line.strip_prefix("put ").unwrap_or(line);
    let mut parts = line.split_ascii_whitespace();
    let (Some(metric), Some(ts), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(err(OpenTsdbError::Incomplete));
    };
    let (_, column) = split_metric(metric)?;
    let ts: i64 = ts
        .parse()
        .map_err(|_| err(OpenTsdbError::BadTimestamp(excerpt(ts.as_bytes()))))?;
    let ts = timestamp_ms(ts)?;
    let value = telnet_value(value).map_err(|(_, r)| (Some(column.to_string()), r))?;
    let mut tags: Vec<(Cow<str>, Cow<str>)> = Vec::new();
    for t in parts {
        match t.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                tags.push((Cow::Borrowed(k), Cow::Borrowed(v)))
            }
            _ => return Err(err(OpenTsdbError::BadTag(excerpt(t.as_bytes())))),
        }
    }
    tags.sort_by(|a, b| a.0.cmp(&b.0));
    add_point(tables, metric, ts, value, &tags)
}

/// Decodes OpenTSDB telnet lines; blank lines and `#` comments are skipped.
pub fn decode_telnet(payload: &[u8], options: &DecodeOptions) -> Decoded {
    let mut tables = DynTables::new(TIMESTAMP_COLUMN, true, options.database.clone());
    let mut errors = Vec::new();
    for (number, range) in lines(payload) {
        let Ok(line) = std::str::from_utf8(&payload[range.clone()]) else {
            errors.push(RecordError::new(number, range, OpenTsdbError::Utf8));
            continue;
        };
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Err((field, reason)) = telnet_line(&mut tables, line) {
            let mut e = RecordError::new(number, range, reason);
            e.field = field;
            errors.push(e);
        }
    }
    Decoded {
        batches: tables.finish(),
        errors,
    }
}

// ---- encoding ----

/// A timestamp as OpenTSDB reads it back: seconds below 10^10 or milliseconds
/// from 10^10 up to 10^13.
fn opentsdb_ts(t: Timestamp, precision: Precision, field: &str) -> Result<i64, RowEncodeError> {
    let v = convert_ts(t, precision, field)?;
    let ok = match precision {
        Precision::S => (0..10_000_000_000).contains(&v),
        _ => (10_000_000_000..10_000_000_000_000).contains(&v),
    };
    if ok {
        Ok(v)
    } else {
        Err(RowEncodeError::Unrepresentable {
            field: field.to_string(),
            format: Format::JsonOpentsdb,
            what: "a timestamp that would not read back (OpenTSDB takes 10-digit seconds or 13-digit milliseconds)",
        })
    }
}

struct Common<'b> {
    batch: &'b RowBatch,
    /// Tags to write: (index in row, name), the synthetic primary tag left out.
    tags: Vec<(usize, &'b str)>,
}

fn common<'b>(batch: &'b RowBatch, format: Format) -> Result<Common<'b>, RowEncodeError> {
    let schema = &batch.schema;
    match schema.columns.first() {
        Some(c) if c.ty.is_timestamp() => {}
        _ => {
            return Err(RowEncodeError::BadName {
                what: "table",
                name: batch.target.table.clone(),
                format,
                why: "its first column is not a timestamp",
            })
        }
    }
    for c in schema.columns.iter().skip(1) {
        if c.name.contains('.') || c.name.is_empty() {
            return Err(RowEncodeError::BadName {
                what: "column",
                name: c.name.clone(),
                format,
                why: "a metric is table.column, split at the last dot",
            });
        }
    }
    let telnet = format == Format::LineOpentsdb;
    let bad_space = |s: &str| telnet && s.chars().any(char::is_whitespace);
    if batch.target.table.is_empty() || bad_space(&batch.target.table) {
        return Err(RowEncodeError::BadName {
            what: "table",
            name: batch.target.table.clone(),
            format,
            why: "it is empty or holds whitespace",
        });
    }
    let ncols = schema.columns.len();
    let mut tags = Vec::new();
    for (i, t) in schema.tags.iter().enumerate() {
        if t.name == PRIMARY_TAG {
            continue;
        }
        if t.name.is_empty() || bad_space(&t.name) || (telnet && t.name.contains('=')) {
            return Err(RowEncodeError::BadName {
                what: "tag",
                name: t.name.clone(),
                format,
                why: "it is empty or holds whitespace or '='",
            });
        }
        tags.push((ncols + i, t.name.as_str()));
    }
    Ok(Common { batch, tags })
}

fn each_row(
    batch: &RowBatch,
    format: Format,
    out: &mut Vec<u8>,
    skip: &dyn Fn(usize) -> bool,
    on_error: &mut dyn FnMut(usize, RowEncodeError) -> bool,
    mut write: impl FnMut(&Common, usize, &mut Vec<u8>) -> Result<Wrote, RowEncodeError>,
) {
    let c = match common(batch, format) {
        Ok(c) => Some(c),
        Err(e) => {
            for r in 0..batch.rows.len() {
                if !skip(r) && !on_error(r, e.clone()) {
                    return;
                }
            }
            None
        }
    };
    let Some(c) = c else { return };
    for r in 0..batch.rows.len() {
        if skip(r) {
            continue;
        }
        let start = out.len();
        let error = match write(&c, r, out) {
            Ok(Wrote::All) => continue,
            // What was written stays: the row's other points are good.
            Ok(Wrote::Partly(e)) => e,
            Err(e) => {
                out.truncate(start);
                e
            }
        };
        if !on_error(r, error) {
            return;
        }
    }
}

/// How much of a row a writer could carry.
enum Wrote {
    All,
    /// Its other points are written; this value is not (telnet text).
    Partly(RowEncodeError),
}

/// Writes the batch as one JSON array of points per line.
pub(crate) fn encode_json(
    batch: &RowBatch,
    options: &EncodeOptions,
    out: &mut Vec<u8>,
    skip: &dyn Fn(usize) -> bool,
    on_error: &mut dyn FnMut(usize, RowEncodeError) -> bool,
) {
    let start = out.len();
    out.push(b'[');
    let mut tags_json = Vec::new();
    each_row(
        batch,
        Format::JsonOpentsdb,
        out,
        skip,
        on_error,
        |c, r, out| {
            let row = &c.batch.rows[r];
            let schema = &c.batch.schema;
            let Value::Timestamp(t) = row[0] else {
                return Err(RowEncodeError::NoFields);
            };
            let ts = opentsdb_ts(t, options.precision, &schema.columns[0].name)?;
            tags_json.clear();
            tags_json.push(b'{');
            let mut n = 0;
            let mut text = Vec::new();
            for &(i, name) in &c.tags {
                if row[i].is_null() {
                    continue;
                }
                if n > 0 {
                    tags_json.push(b',');
                }
                n += 1;
                push_json_str(&mut tags_json, name);
                tags_json.push(b':');
                text.clear();
                push_value_text(&row[i], &mut text);
                push_json_str(
                    &mut tags_json,
                    std::str::from_utf8(&text).unwrap_or_default(),
                );
            }
            tags_json.push(b'}');
            let mut any = false;
            for (i, col) in schema.columns.iter().enumerate().skip(1) {
                let v = &row[i];
                if v.is_null() {
                    continue;
                }
                any = true;
                if out.len() > start + 1 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"metric\":");
                let metric = format!("{}.{}", c.batch.target.table, col.name);
                push_json_str(out, &metric);
                out.extend_from_slice(b",\"timestamp\":");
                push_int(out, ts);
                out.extend_from_slice(b",\"value\":");
                match v {
                    Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
                    Value::Int2(x) => push_int(out, i64::from(*x)),
                    Value::Int4(x) => push_int(out, i64::from(*x)),
                    Value::Int8(x) => push_int(out, *x),
                    Value::Float4(x) if x.is_finite() => super::text::push_f32(out, *x),
                    Value::Float8(x) if x.is_finite() => push_f64(out, *x),
                    Value::Float4(x) => push_json_str(out, super::text::non_finite(f64::from(*x))),
                    Value::Float8(x) => push_json_str(out, super::text::non_finite(*x)),
                    other => {
                        text.clear();
                        push_value_text(other, &mut text);
                        push_json_str(out, std::str::from_utf8(&text).unwrap_or_default());
                    }
                }
                out.extend_from_slice(b",\"tags\":");
                out.extend_from_slice(&tags_json);
                out.push(b'}');
            }
            if !any {
                return Err(RowEncodeError::NoFields);
            }
            Ok(Wrote::All)
        },
    );
    if out.len() == start + 1 {
        out.truncate(start);
    } else {
        out.extend_from_slice(b"]\n");
    }
}

/// Writes one telnet line per non-null value: `table.column timestamp value tag=value...`.
pub(crate) fn encode_telnet(
    batch: &RowBatch,
    options: &EncodeOptions,
    out: &mut Vec<u8>,
    skip: &dyn Fn(usize) -> bool,
    on_error: &mut dyn FnMut(usize, RowEncodeError) -> bool,
) {
    let mut tags_text = Vec::new();
    each_row(
        batch,
        Format::LineOpentsdb,
        out,
        skip,
        on_error,
        |c, r, out| {
            let row = &c.batch.rows[r];
            let schema = &c.batch.schema;
            let Value::Timestamp(t) = row[0] else {
                return Err(RowEncodeError::NoFields);
            };
            let ts = opentsdb_ts(t, options.precision, &schema.columns[0].name).map_err(
                |e| match e {
                    RowEncodeError::Unrepresentable { field, what, .. } => {
                        RowEncodeError::Unrepresentable {
                            field,
                            format: Format::LineOpentsdb,
                            what,
                        }
                    }
                    e => e,
                },
            )?;
            tags_text.clear();
            for &(i, name) in &c.tags {
                if row[i].is_null() {
                    continue;
                }
                tags_text.push(b' ');
                tags_text.extend_from_slice(name.as_bytes());
                tags_text.push(b'=');
                let vstart = tags_text.len();
                push_value_text(&row[i], &mut tags_text);
                let v = &tags_text[vstart..];
                if v.is_empty() || v.iter().any(|b| b.is_ascii_whitespace()) {
                    return Err(RowEncodeError::Unrepresentable {
                        field: name.to_string(),
                        format: Format::LineOpentsdb,
                        what: "an empty tag value or one with whitespace",
                    });
                }
            }
            let mut any = false;
            // A text column cannot be a telnet point; the row's numeric points
            // still go out (issue 18: the whole row was dropped), the first text
            // column is reported.
            let mut text_column = None;
            for (i, col) in schema.columns.iter().enumerate().skip(1) {
                let v = &row[i];
                if v.is_null() {
                    continue;
                }
                any = true;
                if !matches!(
                    v,
                    Value::Bool(_)
                        | Value::Int2(_)
                        | Value::Int4(_)
                        | Value::Int8(_)
                        | Value::Float4(_)
                        | Value::Float8(_)
                ) {
                    text_column.get_or_insert(col.name.clone());
                    continue;
                }
                out.extend_from_slice(c.batch.target.table.as_bytes());
                out.push(b'.');
                out.extend_from_slice(col.name.as_bytes());
                out.push(b' ');
                push_int(out, ts);
                out.push(b' ');
                match v {
                    Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
                    Value::Int2(x) => push_int(out, i64::from(*x)),
                    Value::Int4(x) => push_int(out, i64::from(*x)),
                    Value::Int8(x) => push_int(out, *x),
                    Value::Float4(x) => super::text::push_f32(out, *x),
                    Value::Float8(x) => push_f64(out, *x),
                    _ => unreachable!("checked above"),
                }
                out.extend_from_slice(&tags_text);
                out.push(b'\n');
            }
            if !any {
                return Err(RowEncodeError::NoFields);
            }
            Ok(match text_column {
                Some(field) => Wrote::Partly(RowEncodeError::Unrepresentable {
                    field,
                    format: Format::LineOpentsdb,
                    what: "text values (telnet values are numbers)",
                }),
                None => Wrote::All,
            })
        },
    );
}
