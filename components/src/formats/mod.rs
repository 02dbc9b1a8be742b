//! Wire formats: pure codecs between bytes and `RowBatch`es. No I/O here.
//!
//! Every decoder takes a whole payload (one Kafka message, one file) that may hold
//! several records, and rejects bad records one by one: a [`RecordError`] names the
//! line, the row or point inside it, the field, and the reason, while the good
//! records still decode. Decoded rows are grouped by target table into
//! [`DecodedBatch`]es whose schema is shared by all their rows.
//!
//! Decisions the seed leaves open are written down in `docs/formats.md`.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};

use crate::event::{Precision, Row, RowBatch, TableSchema, Target, Timestamp};

mod dyn_table;
pub mod json_kaiwudb;
pub mod line_influxdb;
pub mod opentsdb;
pub mod text;
pub mod time;
pub mod value;

pub use time::{format_timestamp, parse_timestamp, TimeError};
pub use value::{check_value, coerce_value, widen_type, ValueError};

/// The four formats of the KaiwuDB Kafka Connector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    JsonKaiwudb,
    JsonOpentsdb,
    LineOpentsdb,
    LineInfluxdb,
}

impl Format {
    pub const ALL: [Format; 4] = [
        Format::JsonKaiwudb,
        Format::JsonOpentsdb,
        Format::LineOpentsdb,
        Format::LineInfluxdb,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::JsonKaiwudb => "json_kaiwudb",
            Format::JsonOpentsdb => "json_opentsdb",
            Format::LineOpentsdb => "line_opentsdb",
            Format::LineInfluxdb => "line_influxdb",
        }
    }

    /// Whether the format carries a full schema (types, lengths, primary tags).
    pub fn carries_schema(self) -> bool {
        matches!(self, Format::JsonKaiwudb)
    }

    /// Whether a payload is lines, one record each.
    pub fn is_line_format(self) -> bool {
        matches!(self, Format::LineInfluxdb | Format::LineOpentsdb)
    }

    /// The unit of numeric timestamps when none is configured: what the format's
    /// writers send. InfluxDB's clients write ns (and so does the seed's line
    /// example); the connector's JSON examples are ms.
    pub fn default_precision(self) -> Precision {
        match self {
            Format::LineInfluxdb => Precision::Ns,
            Format::JsonKaiwudb | Format::JsonOpentsdb | Format::LineOpentsdb => Precision::Ms,
        }
    }

    /// Timestamp precisions the encoder can write (the seed's
    /// `timestamp.precision` table).
    pub fn encode_precisions(self) -> &'static [Precision] {
        match self {
            Format::JsonKaiwudb | Format::LineInfluxdb => {
                &[Precision::S, Precision::Ms, Precision::Us, Precision::Ns]
            }
            Format::JsonOpentsdb | Format::LineOpentsdb => &[Precision::S, Precision::Ms],
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("unknown format \"{0}\"; expected one of json_kaiwudb, json_opentsdb, line_opentsdb, line_influxdb")]
    UnknownFormat(String),
}

impl FromStr for Format {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, FormatError> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| FormatError::UnknownFormat(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// For config structs: a `Precision` from its name (`s`, `ms`, `us`, `ns`).
pub fn deserialize_precision<'de, D: Deserializer<'de>>(d: D) -> Result<Precision, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// For config structs: an optional `Precision` (unset: the format's default).
pub fn deserialize_precision_opt<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Precision>, D::Error> {
    deserialize_precision(d).map(Some)
}

/// What a decoder needs besides the bytes.
#[derive(Clone, Debug, Default)]
pub struct DecodeOptions {
    /// Unit of numeric timestamps (json_kaiwudb, line_influxdb). OpenTSDB ignores
    /// it: there 10 digits are seconds and 13 digits milliseconds.
    pub precision: Precision,
    /// The time given to influx lines without a timestamp; None reads the clock
    /// once per payload.
    pub now: Option<Timestamp>,
    /// Database of the targets; None leaves it to the sink.
    pub database: Option<String>,
    /// line_influxdb: the device key of the rows, which a time-series table needs
    /// to be created (line protocol has no primary tags of its own).
    pub device_key: DeviceKey,
}

/// Which tags of a line are its table's primary tags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DeviceKey {
    /// None: the rows fit only tables that exist (the connector's rule).
    #[default]
    None,
    /// A synthetic `primary_tag VARCHAR(64)` holding the hex SHA-256 of the sorted
    /// `k=v` tag pairs, the key OpenTSDB points get (and KWDB's schemaless writer).
    Hash,
    /// These tags, which every line must have.
    Tags(Vec<String>),
}

impl DecodeOptions {
    pub fn new(precision: Precision) -> Self {
        DecodeOptions {
            precision,
            ..Default::default()
        }
    }
}

/// What an encoder needs besides the rows.
#[derive(Clone, Debug, Default)]
pub struct EncodeOptions {
    /// Unit of the numeric timestamps written (ms by default, as the seed's
    /// source output shows).
    pub precision: Precision,
}

/// Rows for one table decoded from one payload.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedBatch {
    pub target: Target,
    pub schema: Arc<TableSchema>,
    pub rows: Vec<Row>,
}

impl DecodedBatch {
    pub fn into_row_batch(self) -> RowBatch {
        RowBatch::new(self.target, self.schema, self.rows)
    }
}

/// The outcome of decoding one payload: the good rows and the rejected records.
#[derive(Debug, Default)]
pub struct Decoded {
    pub batches: Vec<DecodedBatch>,
    pub errors: Vec<RecordError>,
}

impl Decoded {
    pub fn row_count(&self) -> usize {
        self.batches.iter().map(|b| b.rows.len()).sum()
    }
}

/// Which record within a line was rejected, when a line holds several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// 1-based index into a json_kaiwudb object's `data`.
    Row(usize),
    /// 1-based index into an OpenTSDB JSON array.
    Point(usize),
}

/// Why a record was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reason {
    #[error(transparent)]
    Value(#[from] ValueError),
    #[error(transparent)]
    Time(#[from] TimeError),
    #[error(transparent)]
    JsonKaiwudb(#[from] json_kaiwudb::JsonKaiwudbError),
    #[error(transparent)]
    Influx(#[from] line_influxdb::InfluxError),
    #[error(transparent)]
    OpenTsdb(#[from] opentsdb::OpenTsdbError),
}

/// One rejected record. Displays as `line 3, field "c1": 70000 is out of range for INT2`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordError {
    /// 1-based line of the payload the record starts on.
    pub line: usize,
    pub item: Option<Item>,
    /// The column or tag at fault, when one is.
    pub field: Option<String>,
    pub reason: Reason,
    /// Bytes of the payload the rejected record came from (its line or point), to
    /// pass on to a dead-letter output.
    pub span: Range<usize>,
}

impl RecordError {
    pub fn new(line: usize, span: Range<usize>, reason: impl Into<Reason>) -> Self {
        RecordError {
            line,
            item: None,
            field: None,
            reason: reason.into(),
            span,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_item(mut self, item: Item) -> Self {
        self.item = Some(item);
        self
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        match self.item {
            Some(Item::Row(n)) => write!(f, ", row {n}")?,
            Some(Item::Point(n)) => write!(f, ", point {n}")?,
            None => {}
        }
        if let Some(field) = &self.field {
            write!(f, ", field \"{}\"", text::Escaped(field))?;
        }
        // Reasons quote names and values from the input: their control
        // characters (ESC, line breaks) must not reach a log, a dead-letter header
        // or a terminal raw.
        f.write_str(": ")?;
        let reason = self.reason.to_string();
        for c in reason.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for RecordError {}

/// Decodes a payload in `format`.
pub fn decode(format: Format, payload: &[u8], options: &DecodeOptions) -> Decoded {
    decode_with(
        format,
        payload,
        options,
        &mut json_kaiwudb::SchemaCache::default(),
    )
}

fn decode_with(
    format: Format,
    payload: &[u8],
    options: &DecodeOptions,
    schemas: &mut json_kaiwudb::SchemaCache,
) -> Decoded {
    let mut decoded = match format {
        Format::JsonKaiwudb => json_kaiwudb::decode_cached(payload, options, schemas),
        Format::JsonOpentsdb => opentsdb::decode_json(payload, options),
        Format::LineOpentsdb => opentsdb::decode_telnet(payload, options),
        Format::LineInfluxdb => line_influxdb::decode(payload, options),
    };
    // A batch without rows (its object rejected after its schema was read, or
    // declaring no data) would still make a sink create its table: a rejected
    // message must leave no trace but its rejection.
    decoded.batches.retain(|b| !b.rows.is_empty());
    decoded
}

/// Decodes a stream of payloads in one format, remembering what one payload
/// teaches about the next (the schemas json_kaiwudb messages repeat).
#[derive(Debug)]
pub struct Decoder {
    format: Format,
    options: DecodeOptions,
    schemas: json_kaiwudb::SchemaCache,
}

impl Decoder {
    pub fn new(format: Format, options: DecodeOptions) -> Self {
        Decoder {
            format,
            options,
            schemas: Default::default(),
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn decode(&mut self, payload: &[u8]) -> Decoded {
        decode_with(self.format, payload, &self.options, &mut self.schemas)
    }
}

/// Why a row could not be encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("{format} cannot write timestamps in {precision} precision")]
    UnsupportedPrecision {
        format: Format,
        precision: Precision,
    },
    #[error("row {row}: {reason}")]
    Row { row: usize, reason: RowEncodeError },
    #[error("the schema has {schema} fields but row {row} has {values} values")]
    Width {
        row: usize,
        schema: usize,
        values: usize,
    },
}

impl EncodeError {
    /// The 0-based row the error is about, if it is about one row.
    pub fn row(&self) -> Option<usize> {
        match self {
            EncodeError::Row { row, .. } | EncodeError::Width { row, .. } => Some(*row),
            EncodeError::UnsupportedPrecision { .. } => None,
        }
    }
}

/// Why one row cannot be written in a format.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowEncodeError {
    #[error("field \"{field}\": timestamp {value} {from} would lose digits in {to} precision")]
    LosesDigits {
        field: String,
        value: i64,
        from: Precision,
        to: Precision,
    },
    #[error("field \"{field}\": timestamp does not fit in {to} precision")]
    TimestampOverflow { field: String, to: Precision },
    #[error("field \"{field}\": {format} cannot carry {what}")]
    Unrepresentable {
        field: String,
        format: Format,
        what: &'static str,
    },
    #[error("nothing to write: every column of the row is null")]
    NoFields,
    #[error("{what} \"{name}\" cannot be written in {format}: {why}")]
    BadName {
        what: &'static str,
        name: String,
        format: Format,
        why: &'static str,
    },
}

/// `t`'s value in precision `to` for field `field`, or why it cannot be without
/// losing digits or overflowing.
pub(crate) fn convert_ts(t: Timestamp, to: Precision, field: &str) -> Result<i64, RowEncodeError> {
    time::in_precision(t, to).map_err(|e| match e {
        time::Conversion::LosesDigits => RowEncodeError::LosesDigits {
            field: field.to_string(),
            value: t.value,
            from: t.precision,
            to,
        },
        time::Conversion::Overflow => RowEncodeError::TimestampOverflow {
            field: field.to_string(),
            to,
        },
    })
}

/// Encodes a whole batch; on the first bad row nothing is written and the row is named.
pub fn encode(
    format: Format,
    batch: &RowBatch,
    options: &EncodeOptions,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    let mut first_error = None;
    encode_with(format, batch, options, out, &mut |e| {
        first_error = Some(e);
        false
    })?;
    match first_error {
        Some(e) => {
            out.truncate(start);
            Err(e)
        }
        None => Ok(()),
    }
}

/// Encodes the rows that can be encoded and returns the errors of the others.
/// Fails as a whole only for errors that concern every row (an unsupported precision).
pub fn encode_lenient(
    format: Format,
    batch: &RowBatch,
    options: &EncodeOptions,
    out: &mut Vec<u8>,
) -> Result<Vec<EncodeError>, EncodeError> {
    let mut errors = Vec::new();
    encode_with(format, batch, options, out, &mut |e| {
        errors.push(e);
        true
    })?;
    Ok(errors)
}

/// `on_error` gets each bad row's error (the row is left out) and says whether to go on.
fn encode_with(
    format: Format,
    batch: &RowBatch,
    options: &EncodeOptions,
    out: &mut Vec<u8>,
    on_error: &mut dyn FnMut(EncodeError) -> bool,
) -> Result<(), EncodeError> {
    if !format.encode_precisions().contains(&options.precision) {
        return Err(EncodeError::UnsupportedPrecision {
            format,
            precision: options.precision,
        });
    }
    let width = batch.schema.width();
    // A row of the wrong width is a bug upstream, but still only that row's problem.
    let bad_width: Vec<usize> = batch
        .rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.len() != width)
        .map(|(i, _)| i)
        .collect();
    for &row in &bad_width {
        if !on_error(EncodeError::Width {
            row,
            schema: width,
            values: batch.rows[row].len(),
        }) {
            return Ok(());
        }
    }
    let mut on_row_error =
        |row: usize, reason: RowEncodeError| on_error(EncodeError::Row { row, reason });
    let skip = |i: usize| bad_width.binary_search(&i).is_ok();
    match format {
        Format::JsonKaiwudb => {
            json_kaiwudb::encode(batch, options, out, &skip, &mut on_row_error);
        }
        Format::JsonOpentsdb => {
            opentsdb::encode_json(batch, options, out, &skip, &mut on_row_error);
        }
        Format::LineOpentsdb => {
            opentsdb::encode_telnet(batch, options, out, &skip, &mut on_row_error);
        }
        Format::LineInfluxdb => {
            line_influxdb::encode(batch, options, out, &skip, &mut on_row_error);
        }
    }
    Ok(())
}

/// Lines of a payload: (1-based number, byte range without the line break).
/// A `\r` before the `\n` is not part of the line.
pub(crate) fn lines(payload: &[u8]) -> impl Iterator<Item = (usize, Range<usize>)> + '_ {
    let mut start = 0usize;
    let mut number = 0usize;
    std::iter::from_fn(move || {
        if start >= payload.len() {
            return None;
        }
        number += 1;
        let rest = &payload[start..];
        let (end, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (start + i, start + i + 1),
            None => (payload.len(), payload.len()),
        };
        let mut stop = end;
        if stop > start && payload[stop - 1] == b'\r' {
            stop -= 1;
        }
        let range = start..stop;
        start = next;
        Some((number, range))
    })
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
