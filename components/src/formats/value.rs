//! Values against fields: range and length checks, coercion between types, and
//! type widening for schema inference. Out-of-range values are errors, never
//! wrapped or cut.

use std::fmt;

use super::time::{self, TimeError};
use crate::event::{DataType, Field, Precision, Timestamp, Value};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("{value} is out of range for {ty}")]
    OutOfRange { value: String, ty: DataType },
    #[error("value of {len} {unit} is too long for {ty}({length})")]
    TooLong {
        len: usize,
        unit: &'static str,
        ty: DataType,
        length: u32,
    },
    #[error("expected {expected}, found {found}")]
    Expected {
        expected: &'static str,
        found: String,
    },
    #[error("null for a NOT NULL field")]
    Null,
    #[error("missing, and the field is NOT NULL")]
    Missing,
    #[error("{value} cannot be stored exactly as {ty}")]
    Inexact { value: String, ty: DataType },
    #[error("\"{0}\" is not valid hex after \\x")]
    BadHex(String),
    #[error(transparent)]
    Time(#[from] TimeError),
}

impl ValueError {
    pub(crate) fn out_of_range(value: impl fmt::Display, ty: DataType) -> Self {
        ValueError::OutOfRange {
            value: value.to_string(),
            ty,
        }
    }

    pub(crate) fn expected(expected: &'static str, found: impl fmt::Display) -> Self {
        ValueError::Expected {
            expected,
            found: found.to_string(),
        }
    }
}

/// What a field of this type expects, for error messages.
pub fn expectation(ty: DataType) -> &'static str {
    match ty {
        DataType::Int2 | DataType::Int4 | DataType::Int8 => "an integer",
        DataType::Float4 | DataType::Float8 => "a number",
        DataType::Bool => "a boolean",
        DataType::Timestamp | DataType::TimestampTz => "a timestamp",
        DataType::Date => "a date",
        DataType::Varbytes | DataType::Bytes => "bytes",
        _ => "a string",
    }
}

/// Checks an integer against an integer type and makes the value.
pub fn int_value(v: i64, ty: DataType) -> Result<Value, ValueError> {
    match ty {
        DataType::Int2 => i16::try_from(v)
            .map(Value::Int2)
            .map_err(|_| ValueError::out_of_range(v, ty)),
        DataType::Int4 => i32::try_from(v)
            .map(Value::Int4)
            .map_err(|_| ValueError::out_of_range(v, ty)),
        DataType::Int8 => Ok(Value::Int8(v)),
        _ => Err(ValueError::expected(expectation(ty), v)),
    }
}

/// A float for a float type: FLOAT4 takes finite values up to f32::MAX, NaN and ±inf.
pub fn float_value(v: f64, ty: DataType) -> Result<Value, ValueError> {
    match ty {
        DataType::Float8 => Ok(Value::Float8(v)),
        DataType::Float4 => {
            // Rounding decides, not f32::MAX itself: the shortest text of f32::MAX
            // reads as an f64 slightly above it.
            let f = v as f32;
            if f.is_infinite() && v.is_finite() {
                Err(ValueError::out_of_range(v, ty))
            } else {
                Ok(Value::Float4(f))
            }
        }
        _ => Err(ValueError::expected(expectation(ty), v)),
    }
}

/// The size of a string as its type's `length` counts it: characters for NCHAR
/// and NVARCHAR, bytes otherwise.
pub fn string_len(ty: DataType, s: &str) -> usize {
    match ty {
        DataType::NChar | DataType::NVarchar => s.chars().count(),
        _ => s.len(),
    }
}

/// Checks a string's size against the field's length (0 means unlimited).
pub fn check_len(field: &Field, len: usize) -> Result<(), ValueError> {
    if field.ty.has_length_limit() && field.length > 0 && len > field.length as usize {
        let unit = match field.ty {
            DataType::NChar | DataType::NVarchar => "characters",
            _ => "bytes",
        };
        return Err(ValueError::TooLong {
            len,
            unit,
            ty: field.ty,
            length: field.length,
        });
    }
    Ok(())
}

/// Whether a value suits a field: the variant matches the type, and the value is
/// within its range and length.
pub fn check_value(field: &Field, value: &Value) -> Result<(), ValueError> {
    let ty = field.ty;
    match value {
        Value::Null if field.nullable => Ok(()),
        Value::Null => Err(ValueError::Null),
        Value::Bool(_) if ty == DataType::Bool => Ok(()),
        Value::Int2(_) if ty == DataType::Int2 => Ok(()),
        Value::Int4(_) if ty == DataType::Int4 => Ok(()),
        Value::Int8(_) if ty == DataType::Int8 => Ok(()),
        Value::Float4(_) if ty == DataType::Float4 => Ok(()),
        Value::Float8(_) if ty == DataType::Float8 => Ok(()),
        Value::String(s) if ty.is_string() => check_len(field, string_len(ty, s)),
        Value::Bytes(b) if ty.is_binary() => check_len(field, b.len()),
        Value::Timestamp(t) if ty.is_timestamp() => {
            time::check_range(*t)?;
            Ok(())
        }
        Value::Date(_) if ty == DataType::Date => Ok(()),
        other => Err(ValueError::expected(expectation(ty), other.type_name())),
    }
}

/// Decodes `\x` followed by hex digits; None when `s` does not start with `\x`.
pub fn parse_hex_bytes(s: &str) -> Option<Result<Vec<u8>, ValueError>> {
    let hex = s.strip_prefix("\\x")?;
    let b = hex.as_bytes();
    if b.len() % 2 != 0 {
        return Some(Err(ValueError::BadHex(s.to_string())));
    }
    let mut out = Vec::with_capacity(b.len() / 2);
    for pair in b.chunks_exact(2) {
        match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(h), Some(l)) => out.push(h << 4 | l),
            _ => return Some(Err(ValueError::BadHex(s.to_string()))),
        }
    }
    Some(Ok(out))
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Bytes from their text form: `\x` + hex, or else the UTF-8 of the text itself.
pub fn bytes_from_text(s: &str) -> Result<Vec<u8>, ValueError> {
    parse_hex_bytes(s).unwrap_or_else(|| Ok(s.as_bytes().to_vec()))
}

/// `\x` + lowercase hex.
pub fn push_hex_bytes(b: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(2 + b.len() * 2);
    out.extend_from_slice(b"\\x");
    for &x in b {
        out.push(HEX[(x >> 4) as usize]);
        out.push(HEX[(x & 15) as usize]);
    }
}

/// The text of a value as a string column would hold it.
pub fn value_text(value: &Value) -> Option<String> {
    let mut out = Vec::new();
    push_value_text(value, &mut out);
    match value {
        Value::Null => None,
        _ => String::from_utf8(out).ok(),
    }
}

/// Appends the text of a value: numbers as written in SQL, timestamps as
/// `YYYY-MM-DD HH:MM:SS[.fff]`, bytes as `\x` + hex; nothing for null.
pub fn push_value_text(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int2(v) => super::text::push_int(out, i64::from(*v)),
        Value::Int4(v) => super::text::push_int(out, i64::from(*v)),
        Value::Int8(v) => super::text::push_int(out, *v),
        Value::Float4(v) => super::text::push_f32(out, *v),
        Value::Float8(v) => super::text::push_f64(out, *v),
        Value::String(s) => out.extend_from_slice(s.as_bytes()),
        Value::Bytes(b) => push_hex_bytes(b, out),
        Value::Timestamp(t) => time::format_timestamp(*t, out),
        Value::Date(d) => time::format_date_days(i64::from(*d), out),
    }
}

/// Parses a float the way the formats write them, plus `NaN`, `Infinity` and `-Infinity`.
pub fn parse_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" | "+Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => {
            // A number past f64 (`1e309`) parses to infinity: a value silently
            // changed, so none. Infinity spelled out (`inf`) stays what it says.
            let v: f64 = s.parse().ok()?;
            (v.is_finite() || !s.bytes().any(|b| b.is_ascii_digit())).then_some(v)
        }
    }
}

/// Converts a value to a field's type where that loses nothing: integers between
/// integer widths (range-checked) and to floats (exactly), FLOAT4 to FLOAT8,
/// anything to text, text to anything it parses as, integers to timestamps in
/// `precision`. Used by schema inference and by sinks writing into an existing table.
pub fn coerce_value(
    value: Value,
    field: &Field,
    precision: Precision,
) -> Result<Value, ValueError> {
    let ty = field.ty;
    let out = match value {
        Value::Null => Value::Null,
        Value::Int2(v) => coerce_int(i64::from(v), ty, precision)?,
        Value::Int4(v) => coerce_int(i64::from(v), ty, precision)?,
        Value::Int8(v) => coerce_int(v, ty, precision)?,
        Value::Float4(v) if ty == DataType::Float8 => Value::Float8(f64::from(v)),
        Value::Float4(v) if ty.is_string() => Value::String(text_of(&Value::Float4(v))),
        Value::Float8(v) => match ty {
            DataType::Float8 => Value::Float8(v),
            DataType::Float4 => {
                let f = v as f32;
                if f64::from(f) == v || v.is_nan() {
                    Value::Float4(f)
                } else {
                    return Err(ValueError::Inexact {
                        value: v.to_string(),
                        ty,
                    });
                }
            }
            t if t.is_integer() || t.is_timestamp() => {
                if v.fract() != 0.0 || !v.is_finite() || v.abs() >= 9.223_372_036_854_776e18 {
                    return Err(ValueError::Inexact {
                        value: v.to_string(),
                        ty,
                    });
                }
                coerce_int(v as i64, t, precision)?
            }
            t if t.is_string() => Value::String(text_of(&Value::Float8(v))),
            _ => return Err(ValueError::expected(expectation(ty), "FLOAT8")),
        },
        Value::String(s) => coerce_text(s, ty, precision)?,
        Value::Bytes(b) if ty.is_string() => Value::String(text_of(&Value::Bytes(b))),
        Value::Timestamp(t) if ty.is_timestamp() => Value::Timestamp(t),
        Value::Timestamp(t) if ty.is_string() => Value::String(text_of(&Value::Timestamp(t))),
        Value::Date(d) if ty.is_timestamp() => Value::Timestamp(
            Timestamp::new(i64::from(d) * 86_400, Precision::S)
                .to_precision(precision)
                .ok_or_else(|| ValueError::out_of_range(d, ty))?,
        ),
        v @ (Value::Bool(_) | Value::Date(_)) if ty.is_string() => Value::String(text_of(&v)),
        other => other,
    };
    check_value(field, &out)?;
    Ok(out)
}

fn text_of(v: &Value) -> String {
    value_text(v).unwrap_or_default()
}

fn coerce_int(v: i64, ty: DataType, precision: Precision) -> Result<Value, ValueError> {
    Ok(match ty {
        DataType::Int2 | DataType::Int4 | DataType::Int8 => int_value(v, ty)?,
        DataType::Float8 => {
            let f = v as f64;
            if f as i128 != i128::from(v) {
                return Err(ValueError::Inexact {
                    value: v.to_string(),
                    ty,
                });
            }
            Value::Float8(f)
        }
        DataType::Float4 => {
            let f = v as f32;
            if f as i128 != i128::from(v) {
                return Err(ValueError::Inexact {
                    value: v.to_string(),
                    ty,
                });
            }
            Value::Float4(f)
        }
        DataType::Timestamp | DataType::TimestampTz => {
            Value::Timestamp(time::check_range(Timestamp::new(v, precision))?)
        }
        t if t.is_string() => Value::String(v.to_string()),
        _ => return Err(ValueError::expected(expectation(ty), v)),
    })
}

fn coerce_text(s: String, ty: DataType, precision: Precision) -> Result<Value, ValueError> {
    let bad = |s: &str| ValueError::expected(expectation(ty), format!("\"{s}\""));
    Ok(match ty {
        t if t.is_string() => Value::String(s),
        DataType::Int2 | DataType::Int4 | DataType::Int8 => {
            let v: i64 = s.trim().parse().map_err(|_| bad(&s))?;
            int_value(v, ty)?
        }
        DataType::Float4 | DataType::Float8 => {
            float_value(parse_float(s.trim()).ok_or_else(|| bad(&s))?, ty)?
        }
        DataType::Bool => match s.trim() {
            "t" | "T" | "true" | "True" | "TRUE" | "1" => Value::Bool(true),
            "f" | "F" | "false" | "False" | "FALSE" | "0" => Value::Bool(false),
            _ => return Err(bad(&s)),
        },
        DataType::Timestamp | DataType::TimestampTz => match s.trim().parse::<i64>() {
            Ok(v) => Value::Timestamp(time::check_range(Timestamp::new(v, precision))?),
            Err(_) => Value::Timestamp(time::parse_timestamp(s.trim(), precision)?),
        },
        DataType::Date => Value::Date(time::parse_date(s.trim())?),
        DataType::Varbytes | DataType::Bytes => Value::Bytes(bytes_from_text(&s)?),
        _ => return Err(bad(&s)),
    })
}

/// The narrowest type that holds values of both types, for merging inferred
/// schemas: INT2 -> INT4 -> INT8 -> FLOAT8, FLOAT4 -> FLOAT8, CHAR -> VARCHAR,
/// any character type with an N type -> NVARCHAR, TIMESTAMP -> TIMESTAMPTZ.
/// None when no such type exists (BOOL with a number, a number with text...).
pub fn widen_type(a: DataType, b: DataType) -> Option<DataType> {
    use DataType::*;
    if a == b {
        return Some(a);
    }
    let rank_int = |t: DataType| match t {
        Int2 => Some(0),
        Int4 => Some(1),
        Int8 => Some(2),
        _ => None,
    };
    match (a, b) {
        (x, y) if rank_int(x).is_some() && rank_int(y).is_some() => {
            if rank_int(x) > rank_int(y) {
                Some(x)
            } else {
                Some(y)
            }
        }
        (x, y) if (x.is_integer() || x.is_float()) && (y.is_integer() || y.is_float()) => {
            Some(Float8)
        }
        (Char | Varchar, Char | Varchar) => Some(Varchar),
        (Char | Varchar | NChar | NVarchar, Char | Varchar | NChar | NVarchar) => Some(NVarchar),
        (Timestamp | TimestampTz, Timestamp | TimestampTz) => Some(TimestampTz),
        (Varbytes | Bytes, Varbytes | Bytes) => Some(Varbytes),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_errors_have_exact_messages() {
        assert_eq!(
            int_value(70000, DataType::Int2).unwrap_err().to_string(),
            "70000 is out of range for INT2"
        );
        assert_eq!(
            int_value(-2_147_483_649, DataType::Int4)
                .unwrap_err()
                .to_string(),
            "-2147483649 is out of range for INT4"
        );
        assert_eq!(
            float_value(1e39, DataType::Float4).unwrap_err().to_string(),
            "1000000000000000000000000000000000000000 is out of range for FLOAT4"
        );
        let f = Field::column("c", DataType::Varchar).with_length(4);
        assert_eq!(
            check_value(&f, &Value::String("0123456789".into()))
                .unwrap_err()
                .to_string(),
            "value of 10 bytes is too long for VARCHAR(4)"
        );
        let f = Field::column("c", DataType::NVarchar).with_length(2);
        assert!(check_value(&f, &Value::String("天津".into())).is_ok());
        assert_eq!(
            check_value(&f, &Value::String("天津市".into()))
                .unwrap_err()
                .to_string(),
            "value of 3 characters is too long for NVARCHAR(2)"
        );
        let f = Field::column("c", DataType::Int2).not_null();
        assert_eq!(
            check_value(&f, &Value::Null).unwrap_err().to_string(),
            "null for a NOT NULL field"
        );
        assert_eq!(
            check_value(&f, &Value::Bool(true)).unwrap_err().to_string(),
            "expected an integer, found BOOL"
        );
    }

    #[test]
    fn widening_follows_the_chain() {
        use DataType::*;
        assert_eq!(widen_type(Int2, Int4), Some(Int4));
        assert_eq!(widen_type(Int8, Int2), Some(Int8));
        assert_eq!(widen_type(Int8, Float4), Some(Float8));
        assert_eq!(widen_type(Float4, Float4), Some(Float4));
        assert_eq!(widen_type(Varchar, NChar), Some(NVarchar));
        assert_eq!(widen_type(Bool, Int2), None);
        assert_eq!(widen_type(Varchar, Float8), None);
    }

    #[test]
    fn coercion_is_exact_or_an_error() {
        let f8 = Field::column("c", DataType::Float8);
        assert_eq!(
            coerce_value(Value::Int8(1 << 53), &f8, Precision::Ms).unwrap(),
            Value::Float8(9_007_199_254_740_992.0)
        );
        assert_eq!(
            coerce_value(Value::Int8((1 << 53) + 1), &f8, Precision::Ms)
                .unwrap_err()
                .to_string(),
            "9007199254740993 cannot be stored exactly as FLOAT8"
        );
        let ts = Field::column("c", DataType::Timestamp);
        assert_eq!(
            coerce_value(Value::Float8(1_648_432_611_249.0), &ts, Precision::Ms).unwrap(),
            Value::Timestamp(Timestamp::new(1_648_432_611_249, Precision::Ms))
        );
        assert_eq!(
            coerce_value(
                Value::String("2023-08-11 12:12:10.249".into()),
                &ts,
                Precision::Ms
            )
            .unwrap(),
            Value::Timestamp(Timestamp::new(1_691_755_930_249, Precision::Ms))
        );
        let vb = Field::column("c", DataType::Varbytes);
        assert_eq!(
            coerce_value(Value::String("\\x313233".into()), &vb, Precision::Ms).unwrap(),
            Value::Bytes(b"123".to_vec())
        );
        let i2 = Field::column("c", DataType::Int2);
        assert_eq!(
            coerce_value(Value::Int8(70000), &i2, Precision::Ms)
                .unwrap_err()
                .to_string(),
            "70000 is out of range for INT2"
        );
    }
}
