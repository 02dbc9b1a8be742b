//! The keyset SELECT and the reading of its results into typed values.
//!
//! Rows are read in (timestamp, keys) order, and each query resumes strictly
//! after the last (timestamp, keys) handed on, so rows sharing a timestamp across
//! a fetch boundary are neither skipped nor repeated. The keys are the primary
//! tags (time-series) or the configured key columns (relational).
//!
//! PostgreSQL's results are read in binary: the server then formats no floats
//! and timestamps as text and this side parses none, which was most of the
//! export's cost on both sides. Types without a fixed binary form here (numeric,
//! and whatever the catalog maps to text) are cast to text in the SELECT, whose
//! binary form is the text itself. KWDB's results are read as text: its binary
//! encodings of its own types (nanosecond timestamps among them) cannot be
//! checked on this project's machines.

use std::fmt::Write as _;

use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::SimpleQueryRow;

use crate::event::{DataType, Field, Precision, Row, TableSchema, Timestamp, Value};
use crate::kwdb::values::{write_value, Literal};
use crate::kwdb::{Dialect, Ident, KwdbError, Sql};

/// How to read one table.
#[derive(Clone, Debug)]
pub struct TableQuery {
    pub dialect: Dialect,
    pub table: Ident,
    /// Every field in schema order (columns, then tags).
    pub fields: Vec<Ident>,
    /// Index of the timestamp (or incrementing) column.
    pub ts: usize,
    /// Indexes of the key columns, in order.
    pub keys: Vec<usize>,
}

/// Where to resume: strictly after this timestamp and these key values.
#[derive(Clone, Debug, PartialEq)]
pub struct Position {
    pub ts: Value,
    pub keys: Vec<Value>,
}

impl TableQuery {
    pub fn new(
        dialect: Dialect,
        table: &str,
        schema: &TableSchema,
        ts_column: &str,
        key_columns: &[String],
    ) -> Result<Self, KwdbError> {
        let sql = Sql(dialect);
        let fields = schema
            .fields()
            .map(|f| sql.ident(&f.name))
            .collect::<Result<Vec<_>, _>>()?;
        let ts = schema.position(ts_column).ok_or_else(|| {
            KwdbError::Schema(format!("table {table} has no column \"{ts_column}\""))
        })?;
        let keys = key_columns
            .iter()
            .map(|k| {
                schema.position(k).ok_or_else(|| {
                    KwdbError::Schema(format!("table {table} has no column \"{k}\""))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TableQuery {
            dialect,
            table: sql.ident(table)?,
            fields,
            ts,
            keys,
        })
    }

    /// The SELECT of the next statement: after `after` (or from `start_at`), up
    /// to `upper` (the `delay` horizon), at most `limit` rows (the statement's cap,
    /// not a batch: its rows are cut into batches as they stream in).
    pub fn select(
        &self,
        schema: &TableSchema,
        after: Option<&Position>,
        start_at: Option<Timestamp>,
        upper: Option<Timestamp>,
        limit: usize,
    ) -> Result<String, String> {
        let mut q = self.select_list(schema);
        let _ = write!(q, " FROM {}", self.table);
        let ts = &self.fields[self.ts];
        let ts_field = schema.field(self.ts);
        // `start_at` and `delay` are times: they do not apply to a table ordered
        // by an incrementing number.
        let timed = ts_field.ty.is_timestamp();
        let (start_at, upper) = (start_at.filter(|_| timed), upper.filter(|_| timed));
        let mut conds = Vec::new();
        if let Some(p) = after {
            conds.push(self.after(schema, p)?);
        } else if let Some(s) = start_at {
            conds.push(format!(
                "{ts} >= {}",
                literal(&Value::Timestamp(s), ts_field)?
            ));
        }
        if let Some(u) = upper {
            conds.push(format!(
                "{ts} <= {}",
                literal(&Value::Timestamp(u), ts_field)?
            ));
        }
        if !conds.is_empty() {
            let _ = write!(q, " WHERE {}", conds.join(" AND "));
        }
        q.push_str(" ORDER BY ");
        self.order_column(schema, self.ts, &mut q);
        for k in &self.keys {
            q.push_str(", ");
            self.order_column(schema, *k, &mut q);
        }
        let _ = write!(q, " LIMIT {limit}");
        Ok(q)
    }

    /// `SELECT` and every field, those read as text in the binary protocol cast.
    fn select_list(&self, schema: &TableSchema) -> String {
        let mut q = String::from("SELECT ");
        for (i, (f, field)) in self.fields.iter().zip(schema.fields()).enumerate() {
            if i > 0 {
                q.push_str(", ");
            }
            let _ = write!(q, "{f}");
            if self.cast_to_text(field) {
                q.push_str("::text");
            }
        }
        q
    }

    /// In ORDER BY a bare name means an output column first, and a cast output
    /// column keeps its name: the table's own column is named with the table, so
    /// rows are ordered by the column's type, as the keyset condition compares.
    fn order_column(&self, schema: &TableSchema, i: usize, q: &mut String) {
        if self.cast_to_text(schema.field(i)) {
            let _ = write!(q, "{}.", self.table);
        }
        let _ = write!(q, "{}", self.fields[i]);
    }

    fn cast_to_text(&self, field: &Field) -> bool {
        self.dialect == Dialect::Postgres
            && matches!(
                field.ty,
                DataType::Text | DataType::Decimal | DataType::Geometry
            )
    }

    /// All rows at exactly one timestamp (for tables without keys, whose page
    /// boundaries must not split a timestamp).
    pub fn select_at(&self, schema: &TableSchema, ts: &Value) -> Result<String, String> {
        let mut q = self.select_list(schema);
        let _ = write!(
            q,
            " FROM {} WHERE {} = {}",
            self.table,
            self.fields[self.ts],
            literal(ts, schema.field(self.ts))?
        );
        Ok(q)
    }

    /// `(ts, k1, k2) > (a, b, c)`: a row comparison in PostgreSQL (which can use an
    /// index for it), spelled out for KWDB.
    fn after(&self, schema: &TableSchema, p: &Position) -> Result<String, String> {
        let cols: Vec<usize> = std::iter::once(self.ts)
            .chain(self.keys.iter().copied())
            .collect();
        let vals: Vec<&Value> = std::iter::once(&p.ts).chain(p.keys.iter()).collect();
        if cols.len() != vals.len() {
            return Err("checkpoint keys do not match the table's keys".into());
        }
        let lits = cols
            .iter()
            .zip(&vals)
            .map(|(c, v)| literal(v, schema.field(*c)))
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<String> = cols.iter().map(|c| self.fields[*c].to_string()).collect();
        if cols.len() == 1 {
            return Ok(format!("{} > {}", names[0], lits[0]));
        }
        Ok(match self.dialect {
            Dialect::Postgres => format!("({}) > ({})", names.join(", "), lits.join(", ")),
            Dialect::Kwdb => {
                // a > x OR (a = x AND (b > y OR (b = y AND c > z)))
                let mut expr = format!("{} > {}", names[cols.len() - 1], lits[cols.len() - 1]);
                for i in (0..cols.len() - 1).rev() {
                    expr = format!(
                        "{n} > {l} OR ({n} = {l} AND ({expr}))",
                        n = names[i],
                        l = lits[i]
                    );
                }
                format!("({expr})")
            }
        })
    }
}

fn literal(v: &Value, field: &Field) -> Result<String, String> {
    let mut s = String::new();
    write_value(v, field, &mut Literal(&mut s))?;
    Ok(s)
}

/// A row of the text protocol into typed values, in schema order.
pub fn parse_row(r: &SimpleQueryRow, schema: &TableSchema, width: usize) -> Result<Row, String> {
    let mut row = Vec::with_capacity(width);
    for (i, field) in schema.fields().enumerate() {
        let text = r
            .try_get(i)
            .map_err(|e| format!("column \"{}\": {e}", field.name))?;
        // `Option<Value>` has `Value`'s layout, so the value is built in place; a
        // `Result<Value, String>` here cost a store-forwarding stall per value.
        let value = match text {
            None => Value::Null,
            Some(t) => match parse_value(t, field) {
                Some(v) => v,
                None => return Err(cannot_read(t, field)),
            },
        };
        row.push(value);
    }
    Ok(row)
}

/// A value's bytes as the server sent them in the binary protocol; the type was
/// checked once for the statement (`BinaryRows`).
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// How a column's binary value is read.
#[derive(Clone, Copy, Debug)]
enum Binary {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bool,
    Timestamp,
    Date,
    Bytes,
    Text,
}

impl Binary {
    /// The reading of a column the schema calls `field` and the server sends as
    /// `ty`; None when they do not agree.
    fn of(field: &Field, ty: &Type) -> Option<Binary> {
        Some(match field.ty {
            DataType::Int2 if *ty == Type::INT2 => Binary::Int2,
            DataType::Int4 if *ty == Type::INT4 => Binary::Int4,
            DataType::Int8 if *ty == Type::INT8 => Binary::Int8,
            DataType::Float4 if *ty == Type::FLOAT4 => Binary::Float4,
            DataType::Float8 if *ty == Type::FLOAT8 => Binary::Float8,
            DataType::Bool if *ty == Type::BOOL => Binary::Bool,
            t if t.is_timestamp() && (*ty == Type::TIMESTAMP || *ty == Type::TIMESTAMPTZ) => {
                Binary::Timestamp
            }
            DataType::Date if *ty == Type::DATE => Binary::Date,
            t if t.is_binary() && *ty == Type::BYTEA => Binary::Bytes,
            t if t.is_string()
                && [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(ty) =>
            {
                Binary::Text
            }
            _ => return None,
        })
    }

    fn read(self, raw: &[u8]) -> Option<Value> {
        fn be<const N: usize>(raw: &[u8]) -> Option<[u8; N]> {
            raw.try_into().ok()
        }
        Some(match self {
            Binary::Int2 => Value::Int2(i16::from_be_bytes(be(raw)?)),
            Binary::Int4 => Value::Int4(i32::from_be_bytes(be(raw)?)),
            Binary::Int8 => Value::Int8(i64::from_be_bytes(be(raw)?)),
            Binary::Float4 => Value::Float4(f32::from_be_bytes(be(raw)?)),
            Binary::Float8 => Value::Float8(f64::from_be_bytes(be(raw)?)),
            Binary::Bool => Value::Bool(*raw.first()? != 0),
            Binary::Timestamp => {
                let us = i64::from_be_bytes(be(raw)?);
                // +-infinity, which the text path cannot read either.
                if us == i64::MAX || us == i64::MIN {
                    return None;
                }
                let us = us.checked_add(PG_EPOCH_US)?;
                // The coarsest precision that holds it, as the text path reads it.
                Value::Timestamp(if us % 1000 == 0 {
                    Timestamp::new(us / 1000, Precision::Ms)
                } else {
                    Timestamp::new(us, Precision::Us)
                })
            }
            Binary::Date => {
                let days = i32::from_be_bytes(be(raw)?);
                if days == i32::MAX || days == i32::MIN {
                    return None;
                }
                Value::Date(days.checked_add(PG_EPOCH_DAYS)?)
            }
            Binary::Bytes => Value::Bytes(raw.to_vec()),
            Binary::Text => Value::String(std::str::from_utf8(raw).ok()?.to_owned()),
        })
    }
}

/// Microseconds and days from 2000-01-01, PostgreSQL's binary epoch.
const PG_EPOCH_US: i64 = 946_684_800_000_000;
const PG_EPOCH_DAYS: i32 = 10_957;

/// Rows of one statement in the binary protocol (PostgreSQL) into typed values,
/// in schema order. The columns' types are checked against the schema at the
/// first row, not at every value.
pub struct BinaryRows {
    schema: std::sync::Arc<TableSchema>,
    readers: Vec<Binary>,
}

impl BinaryRows {
    pub fn new(schema: std::sync::Arc<TableSchema>) -> Self {
        BinaryRows {
            schema,
            readers: Vec::new(),
        }
    }

    pub fn read(&mut self, r: &tokio_postgres::Row) -> Result<Row, String> {
        if self.readers.is_empty() {
            let columns = r.columns();
            if columns.len() != self.schema.width() {
                return Err(format!(
                    "the server sent {} columns for {} fields",
                    columns.len(),
                    self.schema.width()
                ));
            }
            self.readers = self
                .schema
                .fields()
                .zip(columns)
                .map(|(f, c)| {
                    Binary::of(f, c.type_()).ok_or_else(|| {
                        format!(
                            "column \"{}\": cannot read the server's {} as {}",
                            f.name,
                            c.type_(),
                            f.ty
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        let mut row = Vec::with_capacity(self.readers.len());
        for (i, reader) in self.readers.iter().enumerate() {
            let raw = r
                .try_get::<_, Option<Raw>>(i)
                .map_err(|e| format!("column \"{}\": {e}", self.schema.field(i).name))?;
            let value = match raw {
                None => Value::Null,
                Some(Raw(b)) => reader.read(b).ok_or_else(|| {
                    format!(
                        "column \"{}\": cannot read {} bytes as {}",
                        self.schema.field(i).name,
                        b.len(),
                        self.schema.field(i).ty
                    )
                })?,
            };
            row.push(value);
        }
        Ok(row)
    }
}

/// Parses a value of the text protocol into the field's type (`parse_row`, one
/// value at a time).
#[cfg(test)]
fn parse_text(text: Option<&str>, field: &Field) -> Result<Value, String> {
    match text {
        None => Ok(Value::Null),
        Some(t) => parse_value(t, field).ok_or_else(|| cannot_read(t, field)),
    }
}

fn cannot_read(t: &str, field: &Field) -> String {
    format!(
        "column \"{}\": cannot read {t:?} as {}",
        field.name, field.ty
    )
}

fn parse_value(t: &str, field: &Field) -> Option<Value> {
    Some(match field.ty {
        DataType::Int2 => Value::Int2(parse_int(t)?.try_into().ok()?),
        DataType::Int4 => Value::Int4(parse_int(t)?.try_into().ok()?),
        DataType::Int8 => Value::Int8(parse_int(t)?),
        DataType::Float4 => Value::Float4(parse_float(t)? as f32),
        DataType::Float8 => Value::Float8(parse_float(t)?),
        DataType::Bool => match t {
            "t" | "true" | "TRUE" | "True" => Value::Bool(true),
            "f" | "false" | "FALSE" | "False" => Value::Bool(false),
            _ => return None,
        },
        DataType::Timestamp | DataType::TimestampTz => Value::Timestamp(parse_timestamp(t)?),
        DataType::Date => Value::Date(parse_date(t)?),
        DataType::Varbytes | DataType::Bytes => match t.strip_prefix("\\x") {
            Some(hex) if hex.len() % 2 == 0 => Value::Bytes(
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                    .collect::<Option<Vec<u8>>>()?,
            ),
            _ => Value::Bytes(t.as_bytes().to_vec()),
        },
        DataType::Char
        | DataType::NChar
        | DataType::Varchar
        | DataType::NVarchar
        | DataType::Text
        | DataType::Decimal
        | DataType::Geometry => Value::String(t.to_owned()),
    })
}

/// An integer as the servers print it (`-?[0-9]+`). Most of a table's values
/// are integers; this skips `str::parse`'s generic radix and sign handling, and
/// checks for overflow only when the digits could overflow.
fn parse_int(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    let (neg, d) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if d.len() < 19 {
        let v = digits(d)?;
        return Some(if neg { -v } else { v });
    }
    // Accumulated negatively so i64::MIN fits.
    let mut v: i64 = 0;
    for &c in d {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub((c - b'0') as i64)?;
    }
    if neg {
        Some(v)
    } else {
        v.checked_neg()
    }
}

fn parse_float(t: &str) -> Option<f64> {
    match t {
        "NaN" => Some(f64::NAN),
        "Infinity" | "+Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => t.parse().ok(),
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The number in a run of ASCII digits (at most 18, so it cannot overflow);
/// None for anything else. Cheaper than `str::parse` for the fixed-width fields
/// of dates and times, which every row has.
fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 18 {
        return None;
    }
    let mut n: i64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (c - b'0') as i64;
    }
    Some(n)
}

fn parse_date(t: &str) -> Option<i32> {
    let b = t.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = digits(&b[0..4])?;
    let m = digits(&b[5..7])? as u32;
    let d = digits(&b[8..10])? as u32;
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    // A day the month lacks (`2024-02-30`, a typo in `start_at`) is no date.
    if !(1..=12).contains(&m) || !(1..=month_days).contains(&d) {
        return None;
    }
    i32::try_from(days_from_civil(y, m, d)).ok()
}

/// `YYYY-MM-DD[ T]HH:MM:SS[.f{1,9}][Z|±HH[:MM]]` into the coarsest of ms, us, ns
/// that holds it exactly.
pub fn parse_timestamp(t: &str) -> Option<Timestamp> {
    let t = t.trim_ascii();
    let days = parse_date(t)? as i64;
    let rest = t.get(10..)?;
    let rest = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('T'))?;
    let b = rest.as_bytes();
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let h = digits(&b[0..2])?;
    let mi = digits(&b[3..5])?;
    let s = digits(&b[6..8])?;
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &rest[8..];
    let mut nanos: i64 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits_len = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits_len == 0 || digits_len > 9 {
            return None;
        }
        let mut n = digits(&frac.as_bytes()[..digits_len])?;
        for _ in digits_len..9 {
            n *= 10;
        }
        nanos = n;
        rest = &frac[digits_len..];
    }
    let offset_secs: i64 = match rest {
        "" | "Z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let body = &rest[1..];
            let (oh, om) = match body.len() {
                2 => (body.parse::<i64>().ok()?, 0),
                4 => (
                    body[0..2].parse::<i64>().ok()?,
                    body[2..4].parse::<i64>().ok()?,
                ),
                5 if body.as_bytes()[2] == b':' => (
                    body[0..2].parse::<i64>().ok()?,
                    body[3..5].parse::<i64>().ok()?,
                ),
                8 if body.as_bytes()[2] == b':' && body.as_bytes()[5] == b':' => (
                    body[0..2].parse::<i64>().ok()?,
                    body[3..5].parse::<i64>().ok()?,
                ),
                _ => return None,
            };
            sign * (oh * 3600 + om * 60)
        }
    };
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_secs;
    let total = secs.checked_mul(1_000_000_000)?.checked_add(nanos)?;
    let ts = Timestamp::new(total, Precision::Ns);
    [Precision::Ms, Precision::Us]
        .into_iter()
        .find(|p| !ts.loses_digits_at(*p))
        .and_then(|p| ts.to_precision(p))
        .or(Some(ts))
}

/// `yyyy-MM-dd HH:mm:ss` (the connector's `timestamp.initial`), as UTC.
pub fn parse_start_at(t: &str) -> Result<Timestamp, String> {
    parse_timestamp(t).ok_or_else(|| {
        format!("start_at: \"{t}\" is not a time; expected the form \"2024-01-22 22:22:22\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::TableKind;

    fn cpu() -> TableSchema {
        TableSchema::new(
            TableKind::TimeSeries,
            vec![
                Field::column("k_timestamp", DataType::TimestampTz).not_null(),
                Field::column("usage_user", DataType::Int8),
            ],
            vec![
                Field::tag("id", DataType::Int8, true),
                Field::tag("hostname", DataType::Varchar, true).with_length(254),
            ],
        )
    }

    #[test]
    fn timestamps_parse_in_every_form_the_servers_print() {
        let ms = |v| Some(Timestamp::new(v, Precision::Ms));
        assert_eq!(
            parse_timestamp("2024-01-22 22:22:22.224"),
            ms(1_705_962_142_224)
        );
        assert_eq!(
            parse_timestamp("2024-01-22 22:22:22.224+00"),
            ms(1_705_962_142_224)
        );
        assert_eq!(
            parse_timestamp("2024-01-22 22:22:22.224+00:00"),
            ms(1_705_962_142_224)
        );
        assert_eq!(
            parse_timestamp("2024-01-23 00:22:22.224+02:00"),
            ms(1_705_962_142_224)
        );
        assert_eq!(
            parse_timestamp("2024-01-22T22:22:22.224Z"),
            ms(1_705_962_142_224)
        );
        assert_eq!(
            parse_timestamp("2024-01-22 22:22:22"),
            ms(1_705_962_142_000)
        );
        assert_eq!(
            parse_timestamp("2024-01-22 22:22:22.224001"),
            Some(Timestamp::new(1_705_962_142_224_001, Precision::Us))
        );
        assert_eq!(
            parse_timestamp("1969-12-31 23:59:59.999999999"),
            Some(Timestamp::new(-1, Precision::Ns))
        );
        assert_eq!(parse_timestamp("2024-13-01 00:00:00"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn text_values_read_into_their_types() {
        let f = |ty| Field::column("c", ty);
        assert_eq!(
            parse_text(Some("-32768"), &f(DataType::Int2)),
            Ok(Value::Int2(-32768))
        );
        assert_eq!(
            parse_text(Some("6.14545"), &f(DataType::Float4)),
            Ok(Value::Float4(6.14545))
        );
        assert_eq!(
            parse_text(Some("t"), &f(DataType::Bool)),
            Ok(Value::Bool(true))
        );
        assert_eq!(parse_text(None, &f(DataType::Int8)), Ok(Value::Null));
        assert_eq!(
            parse_text(Some("\\x00ff"), &f(DataType::Varbytes)),
            Ok(Value::Bytes(vec![0, 255]))
        );
        assert_eq!(
            parse_text(Some("1970-01-02"), &f(DataType::Date)),
            Ok(Value::Date(1))
        );
        assert!(parse_text(Some("70000"), &f(DataType::Int2))
            .unwrap_err()
            .contains("cannot read"));
        for (text, want) in [
            ("0", Some(0)),
            ("-42", Some(-42)),
            ("+7", Some(7)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("00000000000000000000001", Some(1)),
            ("", None),
            ("-", None),
            ("1.5", None),
            ("12a", None),
        ] {
            assert_eq!(parse_int(text), want, "{text:?}");
        }
    }

    #[test]
    fn keyset_select_resumes_strictly_after_the_position() {
        let schema = cpu();
        let keys = vec!["id".to_string(), "hostname".to_string()];
        let pos = Position {
            ts: Value::Timestamp(Timestamp::new(1_705_962_142_224, Precision::Ms)),
            keys: vec![Value::Int8(7), Value::String("o'h".into())],
        };
        let pg = TableQuery::new(Dialect::Postgres, "cpu", &schema, "k_timestamp", &keys).unwrap();
        assert_eq!(
            pg.select(&schema, Some(&pos), None, None, 100).unwrap(),
            "SELECT \"k_timestamp\", \"usage_user\", \"id\", \"hostname\" FROM \"cpu\" WHERE (\"k_timestamp\", \"id\", \"hostname\") > ('2024-01-22 22:22:22.224+00:00', 7, 'o''h') ORDER BY \"k_timestamp\", \"id\", \"hostname\" LIMIT 100"
        );
        let start = Timestamp::new(1_700_000_000_000, Precision::Ms);
        let upper = Timestamp::new(1_800_000_000_000, Precision::Ms);
        assert_eq!(
            pg.select(&schema, None, Some(start), Some(upper), 5).unwrap(),
            "SELECT \"k_timestamp\", \"usage_user\", \"id\", \"hostname\" FROM \"cpu\" WHERE \"k_timestamp\" >= '2023-11-14 22:13:20.000+00:00' AND \"k_timestamp\" <= '2027-01-15 08:00:00.000+00:00' ORDER BY \"k_timestamp\", \"id\", \"hostname\" LIMIT 5"
        );
    }

    #[test]
    fn postgres_reads_numerics_as_text_and_orders_them_as_numbers() {
        let schema = TableSchema::new(
            TableKind::Relational,
            vec![
                Field::column("at", DataType::Timestamp),
                Field::column("k", DataType::Decimal),
                Field::column("v", DataType::Float8),
            ],
            Vec::new(),
        );
        let keys = ["k".to_string()];
        let q = TableQuery::new(Dialect::Postgres, "r", &schema, "at", &keys).unwrap();
        assert_eq!(
            q.select(&schema, None, None, None, 10).unwrap(),
            "SELECT \"at\", \"k\"::text, \"v\" FROM \"r\" ORDER BY \"at\", \"r\".\"k\" LIMIT 10"
        );
        // KWDB is read as text: nothing to cast.
        let q = TableQuery::new(Dialect::Kwdb, "r", &schema, "at", &keys).unwrap();
        assert!(!q
            .select(&schema, None, None, None, 10)
            .unwrap()
            .contains("::"));
    }

    #[test]
    fn binary_values_read_as_the_text_ones_do() {
        let ts = |us: i64| Binary::Timestamp.read(&(us - PG_EPOCH_US).to_be_bytes());
        assert_eq!(
            ts(1_705_962_142_224_000),
            Some(Value::Timestamp(Timestamp::new(
                1_705_962_142_224,
                Precision::Ms
            )))
        );
        assert_eq!(
            ts(1_705_962_142_224_001),
            Some(Value::Timestamp(Timestamp::new(
                1_705_962_142_224_001,
                Precision::Us
            )))
        );
        assert_eq!(
            Binary::Timestamp.read(&i64::MAX.to_be_bytes()),
            None,
            "infinity"
        );
        assert_eq!(
            Binary::Date.read(&(-1i32).to_be_bytes()),
            Some(Value::Date(10_956))
        );
        assert_eq!(Binary::Int4.read(&[0, 1]), None, "wrong width");
        assert_eq!(Binary::Text.read(&[0xff]), None, "not UTF-8");
        assert_eq!(
            Binary::Float4.read(&6.25f32.to_be_bytes()),
            Some(Value::Float4(6.25))
        );
    }

    #[test]
    fn start_at_and_delay_do_not_apply_to_an_incrementing_column() {
        let schema = TableSchema::new(
            TableKind::Relational,
            vec![
                Field::column("seq", DataType::Int8),
                Field::column("what", DataType::Varchar),
            ],
            Vec::new(),
        );
        let q = TableQuery::new(Dialect::Postgres, "events", &schema, "seq", &[]).unwrap();
        let t = Some(Timestamp::new(1_700_000_000_000, Precision::Ms));
        assert_eq!(
            q.select(&schema, None, t, t, 10).unwrap(),
            "SELECT \"seq\", \"what\" FROM \"events\" ORDER BY \"seq\" LIMIT 10"
        );
    }

    #[test]
    fn the_kwdb_select_matches_its_golden_file() {
        let schema = cpu();
        let keys = vec!["id".to_string(), "hostname".to_string()];
        let q = TableQuery::new(
            Dialect::Kwdb,
            "cpu_kaiwudb_tb",
            &schema,
            "k_timestamp",
            &keys,
        )
        .unwrap();
        let pos = Position {
            ts: Value::Timestamp(Timestamp::new(1_705_962_142_224, Precision::Ms)),
            keys: vec![
                Value::Int8(647_470_401_348_904_608),
                Value::String("locahost".into()),
            ],
        };
        // Each statement reads a whole backlog up to its cap, cut into batches as
        // it streams; the LIMIT is that cap (fetch_max_rows = 100 here).
        let cap = super::super::table::statement_rows(100);
        let mut got = String::new();
        got.push_str("-- first statement, from the start\n");
        got.push_str(&q.select(&schema, None, None, None, cap).unwrap());
        got.push_str(
            ";\n-- next statement, strictly after the last (timestamp, primary tags) handed on\n",
        );
        got.push_str(&q.select(&schema, Some(&pos), None, None, cap).unwrap());
        got.push_str(";\n-- with start_at and delay\n");
        got.push_str(
            &q.select(
                &schema,
                None,
                Some(Timestamp::new(1_705_900_000_000, Precision::Ms)),
                Some(Timestamp::new(1_705_962_000_000, Precision::Ms)),
                cap,
            )
            .unwrap(),
        );
        got.push_str(
            ";\n-- a timestamp with more rows than a statement, in a table without keys\n",
        );
        got.push_str(&q.select_at(&schema, &pos.ts).unwrap());
        got.push_str(";\n");
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/golden/kwdb/poll_select.sql"
        );
        if std::env::var_os("KWPIPE_BLESS").is_some() {
            std::fs::write(path, &got).unwrap();
        }
        let want = std::fs::read_to_string(path).expect("golden file (KWPIPE_BLESS=1 writes it)");
        assert_eq!(got, want);
    }
}
