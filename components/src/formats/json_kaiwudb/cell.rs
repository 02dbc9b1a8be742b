//! One JSON value made into a column's value: the one dispatch on the column's type
//! that both decoding paths use. The serde path calls it from its visitor; the fast
//! scanner calls it for the tokens it recognises (and gives up on an error, so the
//! serde path reports it). One function per kind of JSON value, so a type accepted
//! or refused here is accepted or refused the same whichever path read it.

use std::borrow::Cow;
use std::fmt;

use crate::event::{DataType, Field, Precision, Timestamp, Value};
use crate::formats::value::{self, check_len, expectation, float_value, int_value, string_len};
use crate::formats::{text, time, Reason, ValueError};

pub(super) type ValueOutcome = Result<Value, Reason>;

/// The column a value is for, and the precision of timestamps given as numbers.
#[derive(Clone, Copy)]
pub(super) struct Cell<'f> {
    pub field: &'f Field,
    pub precision: Precision,
}

impl Cell<'_> {
    pub fn mismatch(&self, found: impl fmt::Display) -> ValueOutcome {
        Err(ValueError::expected(expectation(self.field.ty), found).into())
    }

    pub fn null(&self) -> ValueOutcome {
        if self.field.nullable {
            Ok(Value::Null)
        } else {
            Err(ValueError::Null.into())
        }
    }

    pub fn bool(&self, v: bool) -> ValueOutcome {
        match self.field.ty {
            DataType::Bool => Ok(Value::Bool(v)),
            t if t.is_string() => self.string(v.to_string()),
            _ => self.mismatch(v),
        }
    }

    /// An integer JSON number that fits i64.
    pub fn int(&self, v: i64) -> ValueOutcome {
        let ty = self.field.ty;
        match ty {
            DataType::Int2 | DataType::Int4 | DataType::Int8 => Ok(int_value(v, ty)?),
            DataType::Float4 | DataType::Float8 => Ok(float_value(v as f64, ty)?),
            DataType::Timestamp | DataType::TimestampTz => self.timestamp(v),
            t if t.is_string() => self.string(v.to_string()),
            _ => self.mismatch(v),
        }
    }

    /// A non-negative integer JSON number, perhaps beyond i64.
    pub fn uint(&self, v: u64) -> ValueOutcome {
        match i64::try_from(v) {
            Ok(v) => self.int(v),
            Err(_) => match self.field.ty {
                t if t.is_integer() || t.is_timestamp() => Err(ValueError::out_of_range(
                    v,
                    if t.is_integer() { t } else { DataType::Int8 },
                )
                .into()),
                t if t.is_float() => float_value(v as f64, t).map_err(Reason::from),
                t if t.is_string() => self.string(v.to_string()),
                _ => self.mismatch(v),
            },
        }
    }

    /// A JSON number with a fraction or an exponent.
    pub fn float(&self, v: f64) -> ValueOutcome {
        let ty = self.field.ty;
        match ty {
            DataType::Float4 | DataType::Float8 => float_value(v, ty).map_err(Reason::from),
            t if t.is_integer() && v.fract() == 0.0 && v.abs() >= 9.2e18 => {
                Err(ValueError::out_of_range(v, t).into())
            }
            t if t.is_string() => {
                let mut b = ryu::Buffer::new();
                self.string(b.format(v).to_string())
            }
            _ => self.mismatch(v),
        }
    }

    /// A JSON string.
    pub fn text(&self, s: Cow<str>) -> ValueOutcome {
        let ty = self.field.ty;
        match ty {
            t if t.is_string() => self.string(s.into_owned()),
            DataType::Float4 | DataType::Float8 => match s.as_ref() {
                "NaN" | "Infinity" | "-Infinity" => {
                    Ok(float_value(value::parse_float(&s).unwrap_or(f64::NAN), ty)?)
                }
                _ => self.mismatch(format_args!("\"{}\"", text::Escaped(&s))),
            },
            DataType::Timestamp | DataType::TimestampTz => {
                Ok(Value::Timestamp(time::parse_timestamp(&s, self.precision)?))
            }
            DataType::Date => Ok(Value::Date(time::parse_date(&s)?)),
            DataType::Varbytes | DataType::Bytes => {
                let b = value::bytes_from_text(&s)?;
                check_len(self.field, b.len())?;
                Ok(Value::Bytes(b))
            }
            _ => self.mismatch(format_args!("\"{}\"", text::Escaped(&s))),
        }
    }

    fn string(&self, s: String) -> ValueOutcome {
        check_len(self.field, string_len(self.field.ty, &s))?;
        Ok(Value::String(s))
    }

    fn timestamp(&self, v: i64) -> ValueOutcome {
        Ok(Value::Timestamp(time::check_range(Timestamp::new(
            v,
            self.precision,
        ))?))
    }
}
