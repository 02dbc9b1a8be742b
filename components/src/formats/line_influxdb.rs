//! `line_influxdb`: InfluxDB line protocol in the KaiwuDB connector's flavour.
//!
//! `measurement[,tag=value...] field=value[,field=value...] [timestamp]`, one record
//! per line; blank lines and lines starting with `#` are skipped. Field values:
//! integers with `i16`, `i32`, `i64`/`i` (or `u`, read as INT8), floats with `f32`,
//! `f64` or no suffix (FLOAT8), booleans `t`, `true`, `f`, `false` in any case,
//! strings in `"..."` or `'...'` (VARCHAR) and `L"..."` (NVARCHAR). A backslash
//! escapes space, `,`, `=`, `"`, `'` and `\` in names, tag values and strings; before
//! any other character it is a plain backslash (so `"\x313233"` is the 8 characters).
//! The line timestamp is in the configured precision (ns unless told otherwise,
//! as InfluxDB's clients write it); absent, it is the time of decoding. The timestamp column is called `time`, as InfluxDB calls it.
//!
//! Lines copied out of a JSON array of strings, as the seed's example is (`\"` for
//! quotes, `\\` for backslashes, a stray `"` or `",` at the end), are accepted:
//! when a field value starts with `\"` the line is JSON-unescaped and read again,
//! and a trailing `"` or `",` after the timestamp is ignored.
//!
//! No schema travels with the lines: types come from the suffixes and quotes, and
//! the sink coerces them to the existing table (timestamp-valued fields arrive as
//! numbers or text).

use std::borrow::Cow;

use super::dyn_table::{self, DynTables, InsertError, Named};
use super::text::{excerpt, push_f32, push_f64, push_int};
use super::value::{push_hex_bytes, push_value_text, ValueError};
use super::{
    convert_ts, lines, time, DecodeOptions, Decoded, DeviceKey, EncodeOptions, Format, RecordError,
    RowEncodeError,
};
use crate::event::{DataType, RowBatch, Timestamp, Value};

/// The name decoded rows give the line timestamp.
pub const TIME_COLUMN: &str = "time";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfluxError {
    #[error("line is not valid UTF-8")]
    Utf8,
    #[error("missing measurement")]
    NoMeasurement,
    #[error("empty {0} name")]
    EmptyName(&'static str),
    #[error("expected \"=\" after {what} \"{name}\"")]
    ExpectedEquals { what: &'static str, name: String },
    #[error("no fields; a line needs at least one field after the measurement and tags")]
    NoFields,
    #[error("missing value")]
    MissingValue,
    #[error("unterminated string")]
    Unterminated,
    #[error("invalid value \"{0}\"")]
    BadValue(String),
    #[error("invalid timestamp \"{0}\"")]
    BadTimestamp(String),
    #[error("unexpected \"{0}\" after the field set")]
    Trailing(String),
    #[error("\"{0}\" is given twice")]
    Duplicate(String),
    #[error("\"time\" names the line timestamp; it cannot be a field or a tag")]
    Reserved,
    #[error("more than 4096 fields or 128 tags for one table")]
    TooMany,
    #[error("no tag \"{0}\"; primary_tags makes it the device key, so every line needs it")]
    MissingPrimaryTag(String),
    /// Nearly always a precision setting that is not the writers' unit: say which.
    #[error("{0}; the line timestamp's unit is the timestamp_precision option (connector: timestamp.precision), which must be what the writers send (InfluxDB's clients send ns, the default)")]
    TimestampRange(super::time::TimeError),
}

/// A rejected line: the reason and, when known, the field.
struct LineError {
    field: Option<String>,
    reason: super::Reason,
}

impl<E: Into<super::Reason>> From<E> for LineError {
    fn from(e: E) -> Self {
        LineError {
            field: None,
            reason: e.into(),
        }
    }
}

fn at_field(name: &str, e: impl Into<super::Reason>) -> LineError {
    LineError {
        field: Some(name.to_string()),
        reason: e.into(),
    }
}

/// Decodes every line of a payload.
pub fn decode(payload: &[u8], options: &DecodeOptions) -> Decoded {
    let mut tables = match &options.device_key {
        DeviceKey::None => DynTables::new(TIME_COLUMN, false, options.database.clone()),
        DeviceKey::Hash => DynTables::new(TIME_COLUMN, true, options.database.clone()),
        DeviceKey::Tags(names) => {
            DynTables::new(TIME_COLUMN, false, options.database.clone()).with_primary_tags(names)
        }
    };
    let mut errors = Vec::new();
    let now = options.now.unwrap_or_else(|| time::now(options.precision));
    let mut fields = Vec::new();
    let mut tags = Vec::new();
    for (number, range) in lines(payload) {
        let raw = &payload[range.clone()];
        let Ok(line) = std::str::from_utf8(raw) else {
            errors.push(RecordError::new(number, range, InfluxError::Utf8));
            continue;
        };
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') || line.trim_end().is_empty() {
            continue;
        }
        let result = match parse_line(line, options, now, &mut fields, &mut tags, true) {
            Err(Parse::JsonCopy) => {
                let unescaped = json_unescape(line);
                let (mut f2, mut t2) = (Vec::new(), Vec::new());
                match parse_line(&unescaped, options, now, &mut f2, &mut t2, false) {
                    Ok(p) => insert(&mut tables, p, &mut f2, &mut t2, &options.device_key),
                    Err(_) => {
                        f2.clear();
                        t2.clear();
                        let stripped = strip_copy_tail(&unescaped);
                        match parse_line(stripped, options, now, &mut f2, &mut t2, false) {
                            Ok(p) => insert(&mut tables, p, &mut f2, &mut t2, &options.device_key),
                            Err(e) => Err(e.into_line_error()),
                        }
                    }
                }
            }
            Err(e) => Err(e.into_line_error()),
            Ok(p) => insert(&mut tables, p, &mut fields, &mut tags, &options.device_key),
        };
        if let Err(e) = result {
            let mut err = RecordError::new(number, range, e.reason);
            err.field = e.field;
            errors.push(err);
        }
        fields.clear();
        tags.clear();
    }
    Decoded {
        batches: tables.finish(),
        errors,
    }
}

fn insert(
    tables: &mut DynTables,
    p: Parsed,
    fields: &mut Vec<Named>,
    tags: &mut Vec<Named>,
    key: &DeviceKey,
) -> Result<(), LineError> {
    match key {
        DeviceKey::None => {}
        DeviceKey::Hash => {
            let mut pairs: Vec<(&str, &str)> = tags
                .iter()
                .map(|t| match &t.value {
                    Value::String(v) => (t.name.as_ref(), v.as_str()),
                    _ => (t.name.as_ref(), ""),
                })
                .collect();
            pairs.sort_unstable();
            let hash = dyn_table::primary_tag_value(pairs.into_iter());
            tags.insert(
                0,
                Named {
                    name: Cow::Borrowed(dyn_table::PRIMARY_TAG),
                    ty: DataType::Varchar,
                    value: Value::String(hash),
                },
            );
        }
        DeviceKey::Tags(names) => {
            if let Some(missing) = names.iter().find(|n| !tags.iter().any(|t| t.name == **n)) {
                return Err(InfluxError::MissingPrimaryTag(missing.clone()).into());
            }
        }
    }
    tables
        .insert(&p.measurement, p.ts, fields, tags, None)
        .map_err(|e| match e {
            InsertError::TooManyFields => LineError::from(InfluxError::TooMany),
            InsertError::Duplicate(name) if name == TIME_COLUMN => {
                at_field(&name, InfluxError::Reserved)
            }
            InsertError::Duplicate(name) => at_field(&name, InfluxError::Duplicate(name.clone())),
        })
}

/// `\\` -> `\` and `\"` -> `"`, as a JSON string literal's content would be read.
fn json_unescape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&n @ ('\\' | '"')) = chars.peek() {
                out.push(n);
                chars.next();
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Drops the `"` or `",` a line copied from a JSON array ends with.
fn strip_copy_tail(line: &str) -> &str {
    let t = line.trim_end();
    let t = t.strip_suffix(',').unwrap_or(t);
    t.strip_suffix('"').unwrap_or(t)
}

struct Parsed<'a> {
    measurement: Cow<'a, str>,
    ts: Timestamp,
}

enum Parse {
    /// The line looks copied out of a JSON string; read it again unescaped.
    JsonCopy,
    Error(LineError),
}

impl Parse {
    fn into_line_error(self) -> LineError {
        match self {
            Parse::Error(e) => e,
            Parse::JsonCopy => LineError::from(InfluxError::BadValue("\\\"".into())),
        }
    }
}

impl<E: Into<super::Reason>> From<E> for Parse {
    fn from(e: E) -> Self {
        Parse::Error(LineError::from(e))
    }
}

#[inline]
fn escapable(c: u8) -> bool {
    matches!(c, b' ' | b',' | b'=' | b'"' | b'\'' | b'\\')
}

/// Reads a name or tag value from `pos` up to an unescaped byte in `stops`.
#[inline]
fn scan<'a>(s: &'a str, mut pos: usize, stops: &[u8]) -> (Cow<'a, str>, usize) {
    let b = s.as_bytes();
    let start = pos;
    let mut escaped = false;
    while pos < b.len() {
        let c = b[pos];
        if c == b'\\' && pos + 1 < b.len() && escapable(b[pos + 1]) {
            escaped = true;
            pos += 2;
            continue;
        }
        if stops.contains(&c) {
            break;
        }
        pos += 1;
    }
    let raw = &s[start..pos];
    if !escaped {
        return (Cow::Borrowed(raw), pos);
    }
    let mut out = String::with_capacity(raw.len());
    let rb = raw.as_bytes();
    let mut i = 0;
    let mut from = 0;
    while i < rb.len() {
        if rb[i] == b'\\' && i + 1 < rb.len() && escapable(rb[i + 1]) {
            out.push_str(&raw[from..i]);
            from = i + 1;
            i += 2;
            continue;
        }
        i += 1;
    }
    out.push_str(&raw[from..]);
    (Cow::Owned(out), pos)
}

/// Reads a quoted string whose opening quote is at `pos - 1`; returns it and the
/// position after the closing quote.
fn scan_string(s: &str, mut pos: usize, quote: u8) -> Result<(String, usize), InfluxError> {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut from = pos;
    while pos < b.len() {
        let c = b[pos];
        if c == b'\\' && pos + 1 < b.len() && escapable(b[pos + 1]) {
            out.push_str(&s[from..pos]);
            from = pos + 1;
            pos += 2;
            continue;
        }
        if c == quote {
            out.push_str(&s[from..pos]);
            return Ok((out, pos + 1));
        }
        pos += 1;
    }
    Err(InfluxError::Unterminated)
}

fn parse_line<'a>(
    line: &'a str,
    options: &DecodeOptions,
    now: Timestamp,
    fields: &mut Vec<Named<'a>>,
    tags: &mut Vec<Named<'a>>,
    allow_copy: bool,
) -> Result<Parsed<'a>, Parse> {
    let b = line.as_bytes();
    let (measurement, mut pos) = scan(line, 0, b", ");
    if measurement.is_empty() {
        return Err(InfluxError::NoMeasurement.into());
    }
    while pos < b.len() && b[pos] == b',' {
        let (key, p) = scan(line, pos + 1, b"=, ");
        if key.is_empty() {
            return Err(InfluxError::EmptyName("tag").into());
        }
        if b.get(p) != Some(&b'=') {
            return Err(InfluxError::ExpectedEquals {
                what: "tag",
                name: key.into_owned(),
            }
            .into());
        }
        let (value, p) = scan(line, p + 1, b", ");
        pos = p;
        tags.push(Named {
            name: key,
            ty: DataType::Varchar,
            value: Value::String(value.into_owned()),
        });
    }
    while pos < b.len() && b[pos] == b' ' {
        pos += 1;
    }
    if pos >= b.len() {
        return Err(InfluxError::NoFields.into());
    }
    loop {
        let (key, p) = scan(line, pos, b"=, ");
        if key.is_empty() {
            return Err(InfluxError::EmptyName("field").into());
        }
        if b.get(p) != Some(&b'=') {
            return Err(Parse::Error(at_field(
                &key,
                InfluxError::ExpectedEquals {
                    what: "field",
                    name: key.to_string(),
                },
            )));
        }
        pos = p + 1;
        let (ty, value, p) = match parse_value(line, pos, allow_copy) {
            Ok(v) => v,
            Err(Parse::Error(mut e)) => {
                e.field = Some(key.into_owned());
                return Err(Parse::Error(e));
            }
            Err(Parse::JsonCopy) => return Err(Parse::JsonCopy),
        };
        fields.push(Named {
            name: key,
            ty,
            value,
        });
        pos = p;
        match b.get(pos) {
            Some(b',') => pos += 1,
            Some(b' ') | None => break,
            Some(_) => {
                return Err(InfluxError::Trailing(excerpt(&b[pos..])).into());
            }
        }
    }
    while pos < b.len() && b[pos] == b' ' {
        pos += 1;
    }
    let ts = if pos >= b.len() {
        now
    } else {
        let end = b[pos..]
            .iter()
            .position(|&c| c == b' ')
            .map_or(b.len(), |i| pos + i);
        let token = &line[pos..end];
        if !line[end..].trim_end().is_empty() {
            return Err(InfluxError::Trailing(excerpt(line[end..].trim().as_bytes())).into());
        }
        let v: i64 = token
            .parse()
            .map_err(|_| InfluxError::BadTimestamp(excerpt(token.as_bytes())))?;
        super::time::check_range(Timestamp::new(v, options.precision))
            .map_err(InfluxError::TimestampRange)?
    };
    Ok(Parsed { measurement, ts })
}

fn parse_value(
    line: &str,
    pos: usize,
    allow_copy: bool,
) -> Result<(DataType, Value, usize), Parse> {
    let b = line.as_bytes();
    match b.get(pos) {
        None | Some(b',') | Some(b' ') => Err(InfluxError::MissingValue.into()),
        Some(b'"') => {
            let (s, p) = scan_string(line, pos + 1, b'"')?;
            Ok((DataType::Varchar, Value::String(s), p))
        }
        Some(b'\'') => {
            let (s, p) = scan_string(line, pos + 1, b'\'')?;
            Ok((DataType::Varchar, Value::String(s), p))
        }
        Some(b'L') if b.get(pos + 1) == Some(&b'"') => {
            let (s, p) = scan_string(line, pos + 2, b'"')?;
            Ok((DataType::NVarchar, Value::String(s), p))
        }
        Some(b'\\') if allow_copy && b.get(pos + 1) == Some(&b'"') => Err(Parse::JsonCopy),
        Some(b'L') if allow_copy && b[pos + 1..].starts_with(b"\\\"") => Err(Parse::JsonCopy),
        Some(_) => {
            let end = b[pos..]
                .iter()
                .position(|&c| c == b',' || c == b' ')
                .map_or(b.len(), |i| pos + i);
            let token = &line[pos..end];
            let (ty, v) = parse_scalar(token)?;
            Ok((ty, v, end))
        }
    }
}

/// A bare field value: a boolean or a number with its type suffix.
fn parse_scalar(token: &str) -> Result<(DataType, Value), Parse> {
    // Case-insensitive, as the seed's type table says (`tRuE`); InfluxDB's own
    // spellings are among them.
    if token.eq_ignore_ascii_case("t") || token.eq_ignore_ascii_case("true") {
        return Ok((DataType::Bool, Value::Bool(true)));
    }
    if token.eq_ignore_ascii_case("f") || token.eq_ignore_ascii_case("false") {
        return Ok((DataType::Bool, Value::Bool(false)));
    }
    let bad = || InfluxError::BadValue(excerpt(token.as_bytes()));
    let int = |digits: &str, ty: DataType| -> Result<(DataType, Value), Parse> {
        match digits.parse::<i64>() {
            Ok(v) => Ok((ty, super::value::int_value(v, ty)?)),
            Err(e) => match e.kind() {
                std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                    Err(ValueError::out_of_range(digits, ty).into())
                }
                _ => Err(bad().into()),
            },
        }
    };
    if let Some(d) = token.strip_suffix("i16") {
        return int(d, DataType::Int2);
    }
    if let Some(d) = token.strip_suffix("i32") {
        return int(d, DataType::Int4);
    }
    if let Some(d) = token.strip_suffix("i64") {
        return int(d, DataType::Int8);
    }
    if let Some(d) = token.strip_suffix('i') {
        return int(d, DataType::Int8);
    }
    if let Some(d) = token.strip_suffix('u') {
        if d.starts_with(['-', '+']) {
            return Err(bad().into());
        }
        return int(d, DataType::Int8);
    }
    if let Some(d) = token.strip_suffix("f32") {
        let v = super::value::parse_float(d)
            .filter(|_| number_like(d))
            .ok_or_else(bad)?;
        let f: f32 = d.parse().unwrap_or(v as f32);
        if f.is_infinite() && v.is_finite() {
            return Err(ValueError::out_of_range(d, DataType::Float4).into());
        }
        return Ok((DataType::Float4, Value::Float4(f)));
    }
    let d = token.strip_suffix("f64").unwrap_or(token);
    let v = super::value::parse_float(d)
        .filter(|_| number_like(d))
        .ok_or_else(bad)?;
    Ok((DataType::Float8, Value::Float8(v)))
}

/// Rust's float parser also takes words like "infinity" in any case; we take
/// digits and the spellings our encoders write (`NaN`, `Infinity`, `inf`).
fn number_like(d: &str) -> bool {
    let d = d.strip_prefix(['-', '+']).unwrap_or(d);
    matches!(d, "NaN" | "nan" | "Infinity" | "inf")
        || (d.starts_with(|c: char| c.is_ascii_digit() || c == '.')
            && d.bytes()
                .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+')))
}

// ---- encoding ----

fn escape_into(out: &mut Vec<u8>, s: &str, set: &[u8]) {
    let b = s.as_bytes();
    let mut from = 0;
    for (i, &c) in b.iter().enumerate() {
        if set.contains(&c) {
            out.extend_from_slice(&b[from..i]);
            out.push(b'\\');
            from = i;
        }
    }
    out.extend_from_slice(&b[from..]);
}

const NAME_ESCAPES: &[u8] = b" ,=\"'\\";
const STRING_ESCAPES: &[u8] = b"\"\\";

fn has_line_break(s: &[u8]) -> bool {
    s.iter().any(|&c| c == b'\n' || c == b'\r')
}

fn check_name(what: &'static str, name: &str) -> Result<(), RowEncodeError> {
    let why = if name.is_empty() {
        "it is empty"
    } else if has_line_break(name.as_bytes()) {
        "it holds a line break"
    } else if what == "measurement" && name.starts_with('#') {
        "a line starting with # is a comment"
    } else if what != "measurement" && name == TIME_COLUMN {
        "\"time\" names the line timestamp"
    } else {
        return Ok(());
    };
    Err(RowEncodeError::BadName {
        what,
        name: name.to_string(),
        format: Format::LineInfluxdb,
        why,
    })
}

/// Writes one line per row.
pub(crate) fn encode(
    batch: &RowBatch,
    options: &EncodeOptions,
    out: &mut Vec<u8>,
    skip: &dyn Fn(usize) -> bool,
    on_error: &mut dyn FnMut(usize, RowEncodeError) -> bool,
) {
    let schema = &batch.schema;
    let ts_col = schema
        .columns
        .first()
        .filter(|c| c.ty.is_timestamp())
        .map(|_| 0usize);
    let first_field = ts_col.map_or(0, |_| 1);
    // Names are the same for every row: check them once.
    let mut name_error = check_name("measurement", &batch.target.table).err();
    for f in schema.fields().skip(first_field) {
        if name_error.is_none() {
            let what = if schema.tags.iter().any(|t| std::ptr::eq(t, f)) {
                "tag"
            } else {
                "field"
            };
            name_error = check_name(what, &f.name).err();
        }
    }
    let mut scratch = Vec::new();
    for (r, row) in batch.rows.iter().enumerate() {
        if skip(r) {
            continue;
        }
        if let Some(e) = &name_error {
            if !on_error(r, e.clone()) {
                return;
            }
            continue;
        }
        let start = out.len();
        if let Err(e) = encode_row(batch, row, ts_col, options, out, &mut scratch) {
            out.truncate(start);
            if !on_error(r, e) {
                return;
            }
        }
    }
}

fn encode_row(
    batch: &RowBatch,
    row: &[Value],
    ts_col: Option<usize>,
    options: &EncodeOptions,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<(), RowEncodeError> {
    let schema = &batch.schema;
    escape_into(out, &batch.target.table, NAME_ESCAPES);
    let ncols = schema.columns.len();
    for (i, tag) in schema.tags.iter().enumerate() {
        let v = &row[ncols + i];
        if v.is_null() {
            continue;
        }
        scratch.clear();
        push_value_text(v, scratch);
        if has_line_break(scratch) {
            return Err(unrepresentable(&tag.name, "a line break"));
        }
        out.push(b',');
        escape_into(out, &tag.name, NAME_ESCAPES);
        out.push(b'=');
        // Tag values are text: escape them like names.
        let text = std::str::from_utf8(scratch).unwrap_or_default();
        escape_into(out, text, NAME_ESCAPES);
    }
    out.push(b' ');
    let first_field = ts_col.map_or(0, |_| 1);
    let mut any = false;
    for (i, col) in schema.columns.iter().enumerate().skip(first_field) {
        let v = &row[i];
        if v.is_null() {
            continue;
        }
        if any {
            out.push(b',');
        }
        any = true;
        escape_into(out, &col.name, NAME_ESCAPES);
        out.push(b'=');
        match v {
            Value::Null => {}
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Int2(x) => {
                push_int(out, i64::from(*x));
                out.extend_from_slice(b"i16");
            }
            Value::Int4(x) => {
                push_int(out, i64::from(*x));
                out.extend_from_slice(b"i32");
            }
            Value::Int8(x) => {
                push_int(out, *x);
                out.extend_from_slice(b"i64");
            }
            Value::Float4(x) => {
                push_f32(out, *x);
                out.extend_from_slice(b"f32");
            }
            Value::Float8(x) => {
                push_f64(out, *x);
                out.extend_from_slice(b"f64");
            }
            Value::String(s) => {
                if has_line_break(s.as_bytes()) {
                    return Err(unrepresentable(&col.name, "a line break"));
                }
                if matches!(col.ty, DataType::NChar | DataType::NVarchar) {
                    out.push(b'L');
                }
                out.push(b'"');
                escape_into(out, s, STRING_ESCAPES);
                out.push(b'"');
            }
            Value::Bytes(bytes) => {
                out.push(b'"');
                scratch.clear();
                push_hex_bytes(bytes, scratch);
                escape_into(
                    out,
                    std::str::from_utf8(scratch).unwrap_or_default(),
                    STRING_ESCAPES,
                );
                out.push(b'"');
            }
            Value::Timestamp(_) | Value::Date(_) => {
                out.push(b'"');
                push_value_text(v, out);
                out.push(b'"');
            }
        }
    }
    if !any {
        return Err(RowEncodeError::NoFields);
    }
    if let Some(c) = ts_col {
        if let Value::Timestamp(t) = &row[c] {
            let name = &schema.columns[c].name;
            out.push(b' ');
            push_int(out, convert_ts(*t, options.precision, name)?);
        }
    }
    out.push(b'\n');
    Ok(())
}

fn unrepresentable(field: &str, what: &'static str) -> RowEncodeError {
    RowEncodeError::Unrepresentable {
        field: field.to_string(),
        format: Format::LineInfluxdb,
        what,
    }
}
