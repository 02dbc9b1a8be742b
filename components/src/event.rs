//! The data model: what flows along the edges of a topology.
//!
//! Two kinds of event exist. `Raw` is a message as bytes (what Kafka carries);
//! `Rows` is a batch of typed rows for one table (what a database takes). Formats
//! turn one into the other. Every event carries the finalizers of the source
//! events it came from, so the status of its delivery reaches those sources.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::ack::EventFinalizers;

/// The kinds of event a component takes or gives; used to type-check edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Raw,
    Rows,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Raw => "Raw",
            EventKind::Rows => "Rows",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug)]
pub enum Event {
    Raw(RawMessage),
    Rows(RowBatch),
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Raw(_) => EventKind::Raw,
            Event::Rows(_) => EventKind::Rows,
        }
    }

    pub fn finalizers_mut(&mut self) -> &mut EventFinalizers {
        match self {
            Event::Raw(m) => &mut m.finalizers,
            Event::Rows(b) => &mut b.finalizers,
        }
    }

    pub fn take_finalizers(&mut self) -> EventFinalizers {
        std::mem::take(self.finalizers_mut())
    }

    /// Approximate payload size in bytes, for byte counters and `max_bytes`.
    pub fn size_hint(&self) -> usize {
        match self {
            Event::Raw(m) => m.payload.len() + m.key.as_ref().map_or(0, |k| k.len()),
            Event::Rows(b) => b.size_hint(),
        }
    }

    /// Number of records it stands for: one message, or the rows of a batch.
    pub fn count(&self) -> usize {
        match self {
            Event::Raw(_) => 1,
            Event::Rows(b) => b.rows.len(),
        }
    }

    /// A copy for a second consumer (fan-out). The copy gets finalizers of its own
    /// that report to the same sources, so each consumer's status counts.
    pub fn fork(&self) -> Event {
        match self {
            Event::Raw(m) => Event::Raw(RawMessage {
                payload: m.payload.clone(),
                key: m.key.clone(),
                headers: m.headers.clone(),
                meta: m.meta.clone(),
                finalizers: m.finalizers.fork(),
            }),
            Event::Rows(b) => Event::Rows(RowBatch {
                target: b.target.clone(),
                schema: b.schema.clone(),
                rows: b.rows.clone(),
                meta: b.meta.clone(),
                finalizers: b.finalizers.fork(),
            }),
        }
    }
}

impl From<RawMessage> for Event {
    fn from(m: RawMessage) -> Self {
        Event::Raw(m)
    }
}

impl From<RowBatch> for Event {
    fn from(b: RowBatch) -> Self {
        Event::Rows(b)
    }
}

/// How sure a batch's schema is, which decides whether a sink may create a
/// table from it. Metadata for the components, not for templates: a typed
/// field, not an `extra` entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SchemaCertainty {
    /// Stated by the payload (json_kaiwudb, OpenTSDB) or by whoever made the batch.
    #[default]
    Declared,
    /// Widened over the data by `schema-infer`: whoever put it in the path asked
    /// for tables from inferred types.
    Inferred,
    /// Types guessed from the values (line_influxdb): a sink creates tables from
    /// it only when told to.
    Partial,
}

/// Where an event came from and what templates may refer to (`{topic}`, `{table}`...).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    /// Message timestamp in epoch milliseconds.
    pub timestamp: Option<i64>,
    pub database: Option<String>,
    pub table: Option<String>,
    /// Anything else a source or transform wants templates to see.
    pub extra: BTreeMap<String, String>,
    /// How sure the schema of the rows is (rows only; templates do not see it).
    pub schema_certainty: SchemaCertainty,
}

impl Metadata {
    /// Looks up a template field by name.
    pub fn get(&self, name: &str) -> Option<String> {
        match name {
            "topic" => self.topic.clone(),
            "partition" => self.partition.map(|p| p.to_string()),
            "offset" => self.offset.map(|o| o.to_string()),
            "timestamp" => self.timestamp.map(|t| t.to_string()),
            "database" => self.database.clone(),
            "table" => self.table.clone(),
            other => self.extra.get(other).cloned(),
        }
    }
}

#[derive(Debug, Default)]
pub struct RawMessage {
    pub payload: Bytes,
    pub key: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
    pub meta: Arc<Metadata>,
    pub finalizers: EventFinalizers,
}

impl RawMessage {
    pub fn new(payload: impl Into<Bytes>) -> Self {
        RawMessage {
            payload: payload.into(),
            ..Default::default()
        }
    }

    pub fn with_finalizers(mut self, finalizers: EventFinalizers) -> Self {
        self.finalizers = finalizers;
        self
    }
}

/// The table a batch is meant for. `database` is None when the sink's own
/// database applies.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub database: Option<String>,
    pub table: String,
}

impl Target {
    pub fn table(table: impl Into<String>) -> Self {
        Target {
            database: None,
            table: table.into(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.database {
            Some(db) => write!(f, "{db}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

/// Rows for one table, all shaped by one schema.
#[derive(Debug)]
pub struct RowBatch {
    pub target: Target,
    pub schema: Arc<TableSchema>,
    /// Values in schema order: the columns, then the tags.
    pub rows: Vec<Row>,
    /// Metadata of the message the rows were decoded from (the first, after merging).
    pub meta: Arc<Metadata>,
    pub finalizers: EventFinalizers,
}

pub type Row = Vec<Value>;

impl RowBatch {
    pub fn new(target: Target, schema: Arc<TableSchema>, rows: Vec<Row>) -> Self {
        RowBatch {
            target,
            schema,
            rows,
            meta: Arc::default(),
            finalizers: EventFinalizers::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Roughly the bytes of the values: exact for small batches, and from an even
    /// sample of rows for large ones, since every stage's byte metrics ask for it
    /// and walking every value of a 10,000-row batch each time showed in profiles.
    pub fn size_hint(&self) -> usize {
        const SAMPLE: usize = 64;
        let row_size = |r: &Row| r.iter().map(Value::size_hint).sum::<usize>();
        let n = self.rows.len();
        if n <= SAMPLE {
            return self.rows.iter().map(row_size).sum();
        }
        let step = n / SAMPLE;
        let sampled: usize = self
            .rows
            .iter()
            .step_by(step)
            .take(SAMPLE)
            .map(row_size)
            .sum();
        sampled * n / SAMPLE
    }
}

/// Time-series tables have a leading timestamp column and tags; relational ones neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableKind {
    TimeSeries,
    Relational,
}

/// A column or a tag. `primary` is only ever true for tags.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Field {
    pub name: String,
    pub ty: DataType,
    /// As in `json_kaiwudb`: bits for numbers (INT2 = 16), bytes or characters for strings.
    pub length: u32,
    pub nullable: bool,
    pub primary: bool,
}

impl Field {
    pub fn column(name: impl Into<String>, ty: DataType) -> Self {
        Field {
            name: name.into(),
            ty,
            length: ty.default_length(),
            nullable: true,
            primary: false,
        }
    }

    pub fn tag(name: impl Into<String>, ty: DataType, primary: bool) -> Self {
        Field {
            name: name.into(),
            ty,
            length: ty.default_length(),
            nullable: !primary,
            primary,
        }
    }

    pub fn with_length(mut self, length: u32) -> Self {
        self.length = length;
        self
    }

    pub fn not_null(mut self) -> Self {
        self.nullable = false;
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableSchema {
    pub kind: TableKind,
    pub columns: Vec<Field>,
    pub tags: Vec<Field>,
}

impl TableSchema {
    pub fn new(kind: TableKind, columns: Vec<Field>, tags: Vec<Field>) -> Self {
        TableSchema {
            kind,
            columns,
            tags,
        }
    }

    /// Columns then tags: the order of values in a row.
    pub fn fields(&self) -> impl Iterator<Item = &Field> {
        self.columns.iter().chain(self.tags.iter())
    }

    pub fn width(&self) -> usize {
        self.columns.len() + self.tags.len()
    }

    pub fn position(&self, name: &str) -> Option<usize> {
        self.fields().position(|f| f.name == name)
    }

    pub fn field(&self, index: usize) -> &Field {
        if index < self.columns.len() {
            &self.columns[index]
        } else {
            &self.tags[index - self.columns.len()]
        }
    }

    pub fn is_tag(&self, index: usize) -> bool {
        index >= self.columns.len()
    }

    pub fn primary_tags(&self) -> impl Iterator<Item = &Field> {
        self.tags.iter().filter(|t| t.primary)
    }
}

/// Precision of a timestamp value: the unit of its integer since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Precision {
    S,
    #[default]
    Ms,
    Us,
    Ns,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::S => "s",
            Precision::Ms => "ms",
            Precision::Us => "us",
            Precision::Ns => "ns",
        }
    }

    /// Units of this precision in one second.
    pub fn per_second(self) -> i64 {
        match self {
            Precision::S => 1,
            Precision::Ms => 1_000,
            Precision::Us => 1_000_000,
            Precision::Ns => 1_000_000_000,
        }
    }

    /// Digits after the decimal point of a second.
    pub fn fraction_digits(self) -> u32 {
        match self {
            Precision::S => 0,
            Precision::Ms => 3,
            Precision::Us => 6,
            Precision::Ns => 9,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "s" => Ok(Precision::S),
            "ms" => Ok(Precision::Ms),
            "us" => Ok(Precision::Us),
            "ns" => Ok(Precision::Ns),
            other => Err(format!(
                "unknown timestamp precision \"{other}\"; expected one of s, ms, us, ns"
            )),
        }
    }
}

/// A point in time as an integer count of `precision` units since the Unix epoch (UTC).
/// The precision is kept so that a us or ns value is never cut to ms on its way through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timestamp {
    pub value: i64,
    pub precision: Precision,
}

impl Timestamp {
    pub fn new(value: i64, precision: Precision) -> Self {
        Timestamp { value, precision }
    }

    /// The same instant in another precision; None when it does not fit in i64.
    /// Converting to a coarser precision truncates toward negative infinity.
    pub fn to_precision(self, precision: Precision) -> Option<Timestamp> {
        let from = self.precision.per_second();
        let to = precision.per_second();
        let value = if to >= from {
            self.value.checked_mul(to / from)?
        } else {
            self.value.div_euclid(from / to)
        };
        Some(Timestamp { value, precision })
    }

    /// Whether converting to `precision` would lose digits.
    pub fn loses_digits_at(self, precision: Precision) -> bool {
        let from = self.precision.per_second();
        let to = precision.per_second();
        to < from && self.value.rem_euclid(from / to) != 0
    }

    pub fn as_millis(self) -> i64 {
        self.to_precision(Precision::Ms)
            .map_or(i64::MAX, |t| t.value)
    }

    /// Seconds since the epoch and the nanoseconds within that second.
    pub fn split(self) -> (i64, u32) {
        let per = self.precision.per_second();
        let secs = self.value.div_euclid(per);
        let frac = self.value.rem_euclid(per);
        let nanos = frac * (1_000_000_000 / per);
        (secs, nanos as u32)
    }
}

/// Column and tag types, as KWDB names them (plus the relational types users send).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Timestamp,
    TimestampTz,
    Date,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bool,
    Char,
    NChar,
    Varchar,
    NVarchar,
    Varbytes,
    Bytes,
    Text,
    Decimal,
    Geometry,
}

impl DataType {
    pub const ALL: [DataType; 18] = [
        DataType::Timestamp,
        DataType::TimestampTz,
        DataType::Date,
        DataType::Int2,
        DataType::Int4,
        DataType::Int8,
        DataType::Float4,
        DataType::Float8,
        DataType::Bool,
        DataType::Char,
        DataType::NChar,
        DataType::Varchar,
        DataType::NVarchar,
        DataType::Varbytes,
        DataType::Bytes,
        DataType::Text,
        DataType::Decimal,
        DataType::Geometry,
    ];

    /// The canonical (KWDB) spelling.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Timestamp => "TIMESTAMP",
            DataType::TimestampTz => "TIMESTAMPTZ",
            DataType::Date => "DATE",
            DataType::Int2 => "INT2",
            DataType::Int4 => "INT4",
            DataType::Int8 => "INT8",
            DataType::Float4 => "FLOAT4",
            DataType::Float8 => "FLOAT8",
            DataType::Bool => "BOOL",
            DataType::Char => "CHAR",
            DataType::NChar => "NCHAR",
            DataType::Varchar => "VARCHAR",
            DataType::NVarchar => "NVARCHAR",
            DataType::Varbytes => "VARBYTES",
            DataType::Bytes => "BYTES",
            DataType::Text => "TEXT",
            DataType::Decimal => "DECIMAL",
            DataType::Geometry => "GEOMETRY",
        }
    }

    /// Parses a type name in any case, with the usual SQL aliases.
    pub fn parse(name: &str) -> Option<DataType> {
        let upper = name.trim().to_ascii_uppercase();
        Some(match upper.as_str() {
            "TIMESTAMP" => DataType::Timestamp,
            "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" => DataType::TimestampTz,
            "DATE" => DataType::Date,
            "INT2" | "SMALLINT" => DataType::Int2,
            "INT4" | "INT" | "INTEGER" => DataType::Int4,
            "INT8" | "BIGINT" | "INT64" => DataType::Int8,
            "FLOAT4" | "REAL" => DataType::Float4,
            "FLOAT8" | "FLOAT" | "DOUBLE" | "DOUBLE PRECISION" => DataType::Float8,
            "BOOL" | "BOOLEAN" => DataType::Bool,
            "CHAR" | "CHARACTER" => DataType::Char,
            "NCHAR" => DataType::NChar,
            "VARCHAR" | "CHARACTER VARYING" | "STRING" => DataType::Varchar,
            "NVARCHAR" => DataType::NVarchar,
            "VARBYTES" => DataType::Varbytes,
            "BYTES" | "BYTEA" => DataType::Bytes,
            "TEXT" => DataType::Text,
            "DECIMAL" | "NUMERIC" => DataType::Decimal,
            "GEOMETRY" => DataType::Geometry,
            _ => return None,
        })
    }

    /// The `length` the `json_kaiwudb` format gives a type when none is known.
    pub fn default_length(self) -> u32 {
        match self {
            DataType::Int2 => 16,
            DataType::Int4 | DataType::Float4 => 32,
            DataType::Int8 | DataType::Float8 => 64,
            DataType::Timestamp | DataType::TimestampTz | DataType::Date => 64,
            DataType::Bool => 1,
            DataType::Char | DataType::NChar => 1,
            DataType::Varchar | DataType::NVarchar | DataType::Varbytes => 254,
            DataType::Bytes | DataType::Text | DataType::Decimal | DataType::Geometry => 0,
        }
    }

    pub fn is_timestamp(self) -> bool {
        matches!(self, DataType::Timestamp | DataType::TimestampTz)
    }

    pub fn is_string(self) -> bool {
        matches!(
            self,
            DataType::Char
                | DataType::NChar
                | DataType::Varchar
                | DataType::NVarchar
                | DataType::Text
                | DataType::Decimal
                | DataType::Geometry
        )
    }

    pub fn is_binary(self) -> bool {
        matches!(self, DataType::Varbytes | DataType::Bytes)
    }

    pub fn is_integer(self) -> bool {
        matches!(self, DataType::Int2 | DataType::Int4 | DataType::Int8)
    }

    pub fn is_float(self) -> bool {
        matches!(self, DataType::Float4 | DataType::Float8)
    }

    /// Whether `length` limits the size of a value of this type.
    pub fn has_length_limit(self) -> bool {
        matches!(
            self,
            DataType::Char
                | DataType::NChar
                | DataType::Varchar
                | DataType::NVarchar
                | DataType::Varbytes
        )
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A typed value. Which variant a row holds at a position is given by the schema;
/// `Null` may stand anywhere the field is nullable.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int2(i16),
    Int4(i32),
    Int8(i64),
    Float4(f32),
    Float8(f64),
    /// CHAR/NCHAR/VARCHAR/NVARCHAR/TEXT, and DECIMAL and GEOMETRY as their text.
    String(String),
    Bytes(Vec<u8>),
    Timestamp(Timestamp),
    /// Days since 1970-01-01.
    Date(i32),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn size_hint(&self) -> usize {
        match self {
            Value::Null => 1,
            Value::Bool(_) => 1,
            Value::Int2(_) => 2,
            Value::Int4(_) | Value::Float4(_) | Value::Date(_) => 4,
            Value::Int8(_) | Value::Float8(_) | Value::Timestamp(_) => 8,
            Value::String(s) => s.len(),
            Value::Bytes(b) => b.len(),
        }
    }

    /// The name of the variant, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "BOOL",
            Value::Int2(_) => "INT2",
            Value::Int4(_) => "INT4",
            Value::Int8(_) => "INT8",
            Value::Float4(_) => "FLOAT4",
            Value::Float8(_) => "FLOAT8",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Timestamp(_) => "timestamp",
            Value::Date(_) => "DATE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How sure a schema is, is the components' business: a template asking for
    /// `{schema}` finds nothing (it used to be an `extra` entry).
    #[test]
    fn schema_certainty_is_not_a_template_field() {
        let m = Metadata {
            schema_certainty: SchemaCertainty::Partial,
            ..Default::default()
        };
        assert_eq!(m.get("schema"), None);
        assert!(m.extra.is_empty());
        assert_eq!(
            Metadata::default().schema_certainty,
            SchemaCertainty::Declared
        );
    }

    #[test]
    fn precision_conversion_is_exact_or_refused() {
        let t = Timestamp::new(1_690_855_924_005, Precision::Ms);
        assert_eq!(
            t.to_precision(Precision::Ns).unwrap().value,
            1_690_855_924_005_000_000
        );
        assert_eq!(t.to_precision(Precision::S).unwrap().value, 1_690_855_924);
        assert!(t.loses_digits_at(Precision::S));
        assert!(!t.loses_digits_at(Precision::Us));
        let far = Timestamp::new(i64::MAX / 10, Precision::Ms);
        assert_eq!(far.to_precision(Precision::Ns), None);
    }

    #[test]
    fn negative_timestamps_split_toward_the_past() {
        let t = Timestamp::new(-1, Precision::Ms);
        assert_eq!(t.split(), (-1, 999_000_000));
        assert_eq!(t.to_precision(Precision::S).unwrap().value, -1);
    }

    #[test]
    fn type_names_parse_in_any_case() {
        for ty in DataType::ALL {
            assert_eq!(DataType::parse(&ty.name().to_lowercase()), Some(ty));
        }
        assert_eq!(DataType::parse("Int2"), Some(DataType::Int2));
        assert_eq!(DataType::parse("nope"), None);
    }

    #[test]
    fn schema_orders_columns_then_tags() {
        let s = TableSchema::new(
            TableKind::TimeSeries,
            vec![
                Field::column("ts", DataType::TimestampTz).not_null(),
                Field::column("c1", DataType::Int2),
            ],
            vec![Field::tag("loc", DataType::Varchar, true)],
        );
        assert_eq!(s.position("loc"), Some(2));
        assert!(s.is_tag(2));
        assert_eq!(s.field(1).name, "c1");
        assert_eq!(s.primary_tags().count(), 1);
    }
}
