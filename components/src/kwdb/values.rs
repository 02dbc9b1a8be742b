//! Values as SQL text: literals for INSERT statements and fields for COPY's text
//! format. Both go through [`write_value`], which first coerces a value to the type
//! of the column it lands in, so the line-protocol path (which cannot know column
//! types) and the JSON path agree on what a column receives.
//!
//! Timestamps are always written as text with every digit of their precision: KWDB
//! cuts binary-format timestamp parameters to milliseconds, text keeps us and ns.

use std::fmt::Write as _;

use serde::Deserialize;

use super::rules;
use super::server::Dialect;
use crate::event::{DataType, Field, Precision, Timestamp, Value};

/// What the sink does with NaN and ±Infinity bound for a float column. KWDB's
/// time-series insert path refuses them ([`rules::FINITE_FLOATS`]), so the choice
/// is made here, the same in both dialects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonFinite {
    /// Reject the row, saying why.
    #[default]
    Reject,
    /// Write NULL instead.
    Null,
}

/// How the sink encodes values: the dialect (VARBYTES literals differ) and the
/// choice for non-finite floats. [`write_value`] without it sends NaN as text,
/// which is what a query condition wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoding {
    pub dialect: Dialect,
    pub non_finite: NonFinite,
}

impl Encoding {
    pub fn new(dialect: Dialect) -> Self {
        Encoding {
            dialect,
            non_finite: NonFinite::default(),
        }
    }

    /// `value` as an SQL literal of this dialect, checked against KWDB's rules.
    pub fn literal(&self, value: &Value, target: &Field, out: &mut String) -> Result<(), String> {
        match self.dialect {
            Dialect::Kwdb => write(value, target, &mut KwdbLiteral(out), Some(self.non_finite)),
            Dialect::Postgres => write(value, target, &mut Literal(out), Some(self.non_finite)),
        }
    }

    /// `value` as a field of COPY's text format (postgres only).
    pub fn copy(&self, value: &Value, target: &Field, out: &mut Vec<u8>) -> Result<(), String> {
        write(value, target, &mut CopyText(out), Some(self.non_finite))
    }
}

/// KWDB's literals: as [`Literal`], but bytes as `b'\x31\x32'`. KWDB's time-series
/// insert path checks the length of the literal's text against the column's
/// width before decoding an `E'\\x..'` string, so a 6-byte value into VARBYTES(10)
/// was refused; a `b'..'` literal is decoded first ([`rules::VARBYTES_LENGTH`]).
pub struct KwdbLiteral<'a>(pub &'a mut String);

impl ValueOut for KwdbLiteral<'_> {
    fn null(&mut self) {
        Literal(self.0).null()
    }
    fn token(&mut self, s: &str) {
        Literal(self.0).token(s)
    }
    fn text(&mut self, s: &str) {
        Literal(self.0).text(s)
    }
    fn bytes(&mut self, b: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.0.push_str("b'");
        for &x in b {
            self.0.push_str("\\x");
            self.0.push(HEX[(x >> 4) as usize] as char);
            self.0.push(HEX[(x & 15) as usize] as char);
        }
        self.0.push('\'');
    }
}

/// Where rendered values go.
pub trait ValueOut {
    fn null(&mut self);
    /// A token that needs no quoting: a number or a boolean keyword.
    fn token(&mut self, s: &str);
    /// Text the server parses for the column's type (strings, timestamps, NaN...).
    fn text(&mut self, s: &str);
    fn bytes(&mut self, b: &[u8]);
}

/// SQL literals, safe whatever `standard_conforming_strings` is set to: text with a
/// backslash becomes an `E'...'` string where both `\` and `'` are escaped, other
/// text a plain `'...'` string with `'` doubled.
pub struct Literal<'a>(pub &'a mut String);

impl ValueOut for Literal<'_> {
    fn null(&mut self) {
        self.0.push_str("NULL");
    }
    fn token(&mut self, s: &str) {
        self.0.push_str(s);
    }
    fn text(&mut self, s: &str) {
        push_string_literal(self.0, s);
    }
    fn bytes(&mut self, b: &[u8]) {
        // E'\\x..' reads as `\x..`, bytea's hex input, in every server setting.
        self.0.push_str("E'\\\\x");
        push_hex(self.0, b);
        self.0.push('\'');
    }
}

/// One multi-row INSERT: `prefix` (from [`super::Sql::insert_prefix`]), the rows'
/// values coerced to `fields` (the table's fields, in row order), then `suffix`.
/// PostgreSQL's literals, NaN as text: [`render_insert_with`] is what the sink sends.
pub fn render_insert(
    prefix: &str,
    fields: &[Field],
    rows: &[crate::event::Row],
    suffix: &str,
) -> Result<String, String> {
    render(prefix, fields, rows, suffix, |v, f, out| {
        write_value(v, f, &mut Literal(out))
    })
}

/// [`render_insert`] as the sink renders it with `enc`.
pub fn render_insert_with(
    enc: Encoding,
    prefix: &str,
    fields: &[Field],
    rows: &[crate::event::Row],
    suffix: &str,
) -> Result<String, String> {
    render(prefix, fields, rows, suffix, |v, f, out| {
        enc.literal(v, f, out)
    })
}

fn render(
    prefix: &str,
    fields: &[Field],
    rows: &[crate::event::Row],
    suffix: &str,
    lit: impl Fn(&Value, &Field, &mut String) -> Result<(), String>,
) -> Result<String, String> {
    let mut out = String::from(prefix);
    for (r, row) in rows.iter().enumerate() {
        if r > 0 {
            out.push(',');
        }
        out.push('(');
        for (k, f) in fields.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            lit(row.get(k).unwrap_or(&Value::Null), f, &mut out)?;
        }
        out.push(')');
    }
    out.push_str(suffix);
    Ok(out)
}

/// Appends `s` as a quoted SQL string literal.
pub fn push_string_literal(out: &mut String, s: &str) {
    if s.contains('\\') {
        out.push_str("E'");
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("''"),
                c => out.push(c),
            }
        }
    } else {
        out.push('\'');
        for c in s.chars() {
            if c == '\'' {
                out.push('\'');
            }
            out.push(c);
        }
    }
    out.push('\'');
}

/// COPY ... FROM STDIN text format: tab-separated, `\N` for NULL, backslash escapes.
pub struct CopyText<'a>(pub &'a mut Vec<u8>);

impl ValueOut for CopyText<'_> {
    fn null(&mut self) {
        self.0.extend_from_slice(b"\\N");
    }
    fn token(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }
    fn text(&mut self, s: &str) {
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let esc: &[u8] = match b {
                b'\\' => b"\\\\",
                b'\t' => b"\\t",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                _ => continue,
            };
            self.0.extend_from_slice(&bytes[start..i]);
            self.0.extend_from_slice(esc);
            start = i + 1;
        }
        self.0.extend_from_slice(&bytes[start..]);
    }
    fn bytes(&mut self, b: &[u8]) {
        // bytea hex input `\x..`, its backslash escaped for COPY.
        self.0.extend_from_slice(b"\\\\x");
        let mut s = String::with_capacity(b.len() * 2);
        push_hex(&mut s, b);
        self.0.extend_from_slice(s.as_bytes());
    }
}

fn push_hex(out: &mut String, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &x in b {
        out.push(HEX[(x >> 4) as usize] as char);
        out.push(HEX[(x & 15) as usize] as char);
    }
}

/// Writes `value` coerced to `target`'s type, or says why it cannot be. NaN and
/// ±Infinity are written as text (what a query condition wants); the sink writes
/// through [`Encoding`], which decides them by KWDB's rule.
pub fn write_value(value: &Value, target: &Field, out: &mut impl ValueOut) -> Result<(), String> {
    write(value, target, out, None)
}

/// `non_finite`: None writes NaN as text; Some applies KWDB's rules (floats
/// finite, VARBYTES within the column's length).
fn write(
    value: &Value,
    target: &Field,
    out: &mut impl ValueOut,
    non_finite: Option<NonFinite>,
) -> Result<(), String> {
    let ty = target.ty;
    let mut tok = String::new();
    match (value, ty) {
        (Value::Null, _) => out.null(),
        (v, DataType::Int2 | DataType::Int4 | DataType::Int8) => {
            let n = as_i64(v).ok_or_else(|| mismatch(v, target))?;
            let (lo, hi) = match ty {
                DataType::Int2 => (i16::MIN as i64, i16::MAX as i64),
                DataType::Int4 => (i32::MIN as i64, i32::MAX as i64),
                _ => (i64::MIN, i64::MAX),
            };
            if n < lo || n > hi {
                return Err(format!(
                    "{n} is out of range for {ty} column \"{}\"",
                    target.name
                ));
            }
            out.token(itoa::Buffer::new().format(n));
        }
        (v, DataType::Float4 | DataType::Float8) => {
            let f = match v {
                Value::Float4(f) => *f as f64,
                Value::Float8(f) => *f,
                Value::Int2(n) => *n as f64,
                Value::Int4(n) => *n as f64,
                Value::Int8(n) => *n as f64,
                Value::String(s) => s.trim().parse::<f64>().map_err(|_| mismatch(v, target))?,
                _ => return Err(mismatch(v, target)),
            };
            if !f.is_finite() && non_finite == Some(NonFinite::Null) {
                out.null();
            } else if !f.is_finite() && non_finite.is_some() {
                rules::check_finite(f, &target.name)?;
            } else if f.is_nan() {
                out.text("NaN");
            } else if f.is_infinite() {
                out.text(if f > 0.0 { "Infinity" } else { "-Infinity" });
            } else {
                // The shortest text that reads back to the same number (with an
                // exponent instead of 300 digits); a FLOAT4 value keeps its own
                // shortest form so the server rounds it to the same float4.
                let mut buf = ryu::Buffer::new();
                out.token(match (v, ty) {
                    (Value::Float4(f4), _) => buf.format_finite(*f4),
                    (_, DataType::Float4) => buf.format_finite(f as f32),
                    _ => buf.format_finite(f),
                });
            }
        }
        (v, DataType::Bool) => {
            let b = match v {
                Value::Bool(b) => *b,
                Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                    "t" | "true" | "1" => true,
                    "f" | "false" | "0" => false,
                    _ => return Err(mismatch(v, target)),
                },
                Value::Int2(_) | Value::Int4(_) | Value::Int8(_) => match as_i64(v) {
                    Some(0) => false,
                    Some(1) => true,
                    _ => return Err(mismatch(v, target)),
                },
                _ => return Err(mismatch(v, target)),
            };
            out.token(if b { "TRUE" } else { "FALSE" });
        }
        (v, DataType::Timestamp | DataType::TimestampTz) => {
            match v {
                Value::Timestamp(t) => write_timestamp(&mut tok, *t, ty == DataType::TimestampTz)?,
                // Bare integers are epoch milliseconds, as in every seed format. Line
                // protocol types an unsuffixed number as FLOAT8 (the seed's
                // `c13=1648432611249`): a whole one counts as an integer here.
                Value::Int8(_) | Value::Int4(_) | Value::Float8(_) => write_timestamp(
                    &mut tok,
                    Timestamp::new(as_i64(v).ok_or_else(|| mismatch(v, target))?, Precision::Ms),
                    ty == DataType::TimestampTz,
                )?,
                Value::Date(d) => write_date(&mut tok, *d)?,
                Value::String(s) => {
                    check_text(s)?;
                    tok.push_str(s)
                }
                _ => return Err(mismatch(v, target)),
            }
            out.text(&tok);
        }
        (v, DataType::Date) => {
            match v {
                Value::Date(d) => write_date(&mut tok, *d)?,
                Value::Timestamp(t) => {
                    let days = t.split().0.div_euclid(86_400);
                    write_date(
                        &mut tok,
                        i32::try_from(days).map_err(|_| mismatch(v, target))?,
                    )?
                }
                Value::String(s) => {
                    check_text(s)?;
                    tok.push_str(s)
                }
                _ => return Err(mismatch(v, target)),
            }
            out.text(&tok);
        }
        (v, DataType::Varbytes | DataType::Bytes) => {
            let decoded;
            let b: &[u8] = match v {
                Value::Bytes(b) => b,
                Value::String(s) => match s.strip_prefix("\\x").and_then(decode_hex) {
                    Some(b) => {
                        decoded = b;
                        &decoded
                    }
                    None => s.as_bytes(),
                },
                _ => return Err(mismatch(v, target)),
            };
            if non_finite.is_some() {
                rules::check_varbytes_len(b.len(), target)?;
            }
            out.bytes(b)
        }
        // Every string-like type: strings as they are, other values as their text.
        (v, _) => match v {
            Value::String(s) => {
                check_text(s)?;
                out.text(s)
            }
            Value::Bool(b) => out.text(if *b { "true" } else { "false" }),
            Value::Int2(_) | Value::Int4(_) | Value::Int8(_) => {
                let _ = write!(tok, "{}", as_i64(v).unwrap_or_default());
                out.text(&tok)
            }
            Value::Float4(f) => {
                let _ = write!(tok, "{f}");
                out.text(&tok)
            }
            Value::Float8(f) => {
                let _ = write!(tok, "{f}");
                out.text(&tok)
            }
            Value::Timestamp(t) => {
                write_timestamp(&mut tok, *t, true)?;
                out.text(&tok)
            }
            Value::Date(d) => {
                write_date(&mut tok, *d)?;
                out.text(&tok)
            }
            Value::Bytes(_) | Value::Null => return Err(mismatch(v, target)),
        },
    }
    Ok(())
}

/// The length `value` has once written into `target`, a VARCHAR-like field
/// (characters for NCHAR/NVARCHAR, bytes otherwise); None for NULL and for values
/// that do not fit at all.
pub fn text_len(value: &Value, target: &Field) -> Option<usize> {
    struct Measure(Option<String>);
    impl ValueOut for Measure {
        fn null(&mut self) {}
        fn token(&mut self, s: &str) {
            self.0 = Some(s.to_string());
        }
        fn text(&mut self, s: &str) {
            self.0 = Some(s.to_string());
        }
        fn bytes(&mut self, _: &[u8]) {}
    }
    if let Value::String(s) = value {
        return Some(crate::formats::value::string_len(target.ty, s));
    }
    let mut m = Measure(None);
    write_value(value, target, &mut m).ok()?;
    m.0.map(|s| crate::formats::value::string_len(target.ty, &s))
}

fn check_text(s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err("string contains a NUL character, which the database cannot store".into());
    }
    Ok(())
}

fn mismatch(v: &Value, target: &Field) -> String {
    let shown = match v {
        Value::String(s) if s.chars().count() > 40 => {
            format!("{:?}...", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("{s:?}"),
        Value::Bytes(b) => format!("{} bytes", b.len()),
        other => format!("{other:?}"),
    };
    format!(
        "{} value {shown} does not fit {} column \"{}\"",
        v.type_name(),
        target.ty,
        target.name
    )
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int2(n) => Some(*n as i64),
        Value::Int4(n) => Some(*n as i64),
        Value::Int8(n) => Some(*n),
        Value::Float4(f) => float_to_i64(*f as f64),
        Value::Float8(f) => float_to_i64(*f),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(*b as i64),
        _ => None,
    }
}

fn float_to_i64(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f))
        .then_some(f as i64)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn write_date(out: &mut String, days: i32) -> Result<(), String> {
    let (y, m, d) = civil_from_days(days as i64);
    if !(1..=9999).contains(&y) {
        return Err(format!("date of year {y} is outside 0001..9999"));
    }
    push_date(out, y, m, d);
    Ok(())
}

/// `YYYY-MM-DD`; digits by hand, as `write!` with padding cost a tenth of the
/// COPY encoding.
fn push_date(out: &mut String, y: i64, m: u32, d: u32) {
    push_padded(out, y as u64, 4);
    out.push('-');
    push_padded(out, m as u64, 2);
    out.push('-');
    push_padded(out, d as u64, 2);
}

/// `n` in decimal, zero-padded to at least `width` digits.
fn push_padded(out: &mut String, n: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}

/// `YYYY-MM-DD HH:MM:SS[.fff|.ffffff|.fffffffff][+00:00]`, with exactly the digits
/// of the value's precision.
pub fn write_timestamp(out: &mut String, t: Timestamp, with_zone: bool) -> Result<(), String> {
    let per = t.precision.per_second();
    let secs = t.value.div_euclid(per);
    let frac = t.value.rem_euclid(per);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    if !(1..=9999).contains(&y) {
        return Err(format!(
            "timestamp {} ({}) is outside years 0001..9999",
            t.value, t.precision
        ));
    }
    let sod = secs.rem_euclid(86_400) as u64;
    push_date(out, y, m, d);
    out.push(' ');
    push_padded(out, sod / 3600, 2);
    out.push(':');
    push_padded(out, sod / 60 % 60, 2);
    out.push(':');
    push_padded(out, sod % 60, 2);
    let digits = t.precision.fraction_digits() as usize;
    if digits > 0 {
        out.push('.');
        push_padded(out, frac as u64, digits);
    }
    if with_zone {
        out.push_str("+00:00");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(v: Value, ty: DataType) -> Result<String, String> {
        let mut s = String::new();
        write_value(&v, &Field::column("c", ty), &mut Literal(&mut s))?;
        Ok(s)
    }

    fn copy(v: Value, ty: DataType) -> String {
        let mut b = Vec::new();
        write_value(&v, &Field::column("c", ty), &mut CopyText(&mut b)).unwrap();
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn timestamps_keep_their_digits() {
        let ts = |v, p| {
            lit(
                Value::Timestamp(Timestamp::new(v, p)),
                DataType::TimestampTz,
            )
        };
        assert_eq!(
            ts(1_690_855_924_005, Precision::Ms).unwrap(),
            "'2023-08-01 02:12:04.005+00:00'"
        );
        assert_eq!(
            ts(1_690_855_924_005_123_456, Precision::Ns).unwrap(),
            "'2023-08-01 02:12:04.005123456+00:00'"
        );
        assert_eq!(
            ts(-1, Precision::Us).unwrap(),
            "'1969-12-31 23:59:59.999999+00:00'"
        );
        assert!(ts(i64::MAX, Precision::Ms).is_err());
        // Bare numbers are epoch milliseconds; line protocol's unsuffixed numbers
        // arrive as FLOAT8 (the seed's `c13=1648432611249`).
        let want = "'2022-03-28 01:56:51.249+00:00'";
        assert_eq!(
            lit(Value::Int8(1_648_432_611_249), DataType::TimestampTz).unwrap(),
            want
        );
        assert_eq!(
            lit(Value::Float8(1_648_432_611_249.0), DataType::TimestampTz).unwrap(),
            want
        );
        assert!(lit(Value::Float8(1.5), DataType::TimestampTz).is_err());
    }

    #[test]
    fn strings_cannot_escape_their_literal() {
        assert_eq!(
            lit(Value::String("it's".into()), DataType::Varchar).unwrap(),
            "'it''s'"
        );
        assert_eq!(
            lit(Value::String(r"a\'; DROP".into()), DataType::Varchar).unwrap(),
            r"E'a\\''; DROP'"
        );
        assert!(lit(Value::String("a\0b".into()), DataType::Varchar).is_err());
        assert_eq!(
            copy(Value::String("a\tb\\c\nd".into()), DataType::Text),
            r"a\tb\\c\nd"
        );
    }

    #[test]
    fn numbers_coerce_or_refuse() {
        assert_eq!(
            lit(Value::Int8(i64::MIN), DataType::Int8).unwrap(),
            "-9223372036854775808"
        );
        assert!(lit(Value::Int8(70_000), DataType::Int2).is_err());
        assert_eq!(lit(Value::Float8(3.0), DataType::Int4).unwrap(), "3");
        assert!(lit(Value::Float8(3.5), DataType::Int4).is_err());
        assert_eq!(
            lit(Value::Float4(6.14545), DataType::Float4).unwrap(),
            "6.14545"
        );
        assert_eq!(
            lit(Value::Float8(f64::NAN), DataType::Float8).unwrap(),
            "'NaN'"
        );
        assert_eq!(
            lit(Value::Float8(1e300), DataType::Float8).unwrap(),
            "1e300"
        );
        assert_eq!(lit(Value::Float8(2.5), DataType::Varchar).unwrap(), "'2.5'");
        assert_eq!(lit(Value::Bool(true), DataType::Bool).unwrap(), "TRUE");
    }

    fn kwdb(v: Value, f: Field, non_finite: NonFinite) -> Result<String, String> {
        let mut s = String::new();
        Encoding {
            dialect: Dialect::Kwdb,
            non_finite,
        }
        .literal(&v, &f, &mut s)?;
        Ok(s)
    }

    /// insert_direct.go checks the width against the literal's text before an
    /// E'\\x..' string is decoded; b'\x..' is decoded first.
    #[test]
    fn kwdb_bytes_are_byte_literals_checked_against_the_length() {
        let f = Field::column("c7", DataType::Varbytes).with_length(6);
        assert_eq!(
            kwdb(Value::String("112132".into()), f.clone(), NonFinite::Reject).unwrap(),
            r"b'\x31\x31\x32\x31\x33\x32'"
        );
        assert_eq!(
            kwdb(
                Value::String(r"\x313233".into()),
                f.clone(),
                NonFinite::Reject
            )
            .unwrap(),
            r"b'\x31\x32\x33'"
        );
        let e = kwdb(Value::Bytes(vec![0; 7]), f, NonFinite::Reject).unwrap_err();
        assert!(e.contains("7 bytes do not fit VARBYTES(6)"), "{e}");
    }

    #[test]
    fn non_finite_floats_are_decided_here() {
        let f = Field::column("v", DataType::Float8);
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let e = kwdb(Value::Float8(x), f.clone(), NonFinite::Reject).unwrap_err();
            assert!(e.contains("convertFloat"), "{e}");
            assert_eq!(
                kwdb(Value::Float8(x), f.clone(), NonFinite::Null).unwrap(),
                "NULL"
            );
        }
        let e = kwdb(Value::String("NaN".into()), f.clone(), NonFinite::Reject).unwrap_err();
        assert!(e.contains("NaN"), "{e}");
        assert_eq!(
            kwdb(Value::Float8(1.5), f, NonFinite::Reject).unwrap(),
            "1.5"
        );
    }

    #[test]
    fn text_lengths_as_written() {
        let v = Field::column("c1", DataType::Varchar).with_length(3);
        assert_eq!(text_len(&Value::Float8(10.3), &v), Some(4));
        assert_eq!(text_len(&Value::String("天津".into()), &v), Some(6));
        let n = Field::column("c1", DataType::NVarchar);
        assert_eq!(text_len(&Value::String("天津".into()), &n), Some(2));
        assert_eq!(text_len(&Value::Null, &v), None);
    }

    #[test]
    fn bytes_are_hex() {
        assert_eq!(
            lit(Value::Bytes(vec![0, 255]), DataType::Varbytes).unwrap(),
            r"E'\\x00ff'"
        );
        assert_eq!(
            lit(Value::String(r"\x313233".into()), DataType::Varbytes).unwrap(),
            r"E'\\x313233'"
        );
        assert_eq!(copy(Value::Bytes(vec![1]), DataType::Bytes), r"\\x01");
    }
}
