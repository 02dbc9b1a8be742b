//! Timestamps as text: `YYYY-MM-DD HH:MM:SS[.fff...]`, UTC.
//!
//! The range is years 0001 to 9999, what the text form can spell; values outside it
//! are errors rather than wrapped. A text with more fractional digits than the
//! target precision holds is an error too, never cut.

use crate::event::{Precision, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("\"{0}\" is not a timestamp; expected YYYY-MM-DD HH:MM:SS[.fff]")]
    Syntax(String),
    #[error("\"{0}\" is not a valid date and time")]
    InvalidDate(String),
    #[error("\"{text}\" has more fractional digits than {precision} precision holds")]
    TooPrecise { text: String, precision: Precision },
    #[error("timestamp {value} ({precision}) is out of range (years 0001 to 9999)")]
    OutOfRange { value: i64, precision: Precision },
    #[error("\"{0}\" is not a date; expected YYYY-MM-DD")]
    DateSyntax(String),
}

/// Why a timestamp cannot be given in another precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// The target is coarser and the value has digits it would drop.
    LosesDigits,
    /// The value does not fit an i64 in the finer target.
    Overflow,
}

/// `t`'s value in precision `to`, never cutting digits or wrapping. Every encoder
/// names the field in its own error; this only says what went wrong.
pub fn in_precision(t: Timestamp, to: Precision) -> Result<i64, Conversion> {
    if t.loses_digits_at(to) {
        return Err(Conversion::LosesDigits);
    }
    t.to_precision(to)
        .map(|t| t.value)
        .ok_or(Conversion::Overflow)
}

/// The current time in `precision` (a record without a timestamp gets it).
pub fn now(precision: Precision) -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let value = match precision {
        Precision::S => since.as_secs() as i64,
        Precision::Ms => since.as_millis() as i64,
        Precision::Us => since.as_micros() as i64,
        Precision::Ns => since.as_nanos() as i64,
    };
    Timestamp::new(value, precision)
}

/// Seconds of 0001-01-01 00:00:00 and of 9999-12-31 23:59:59 since the epoch.
pub const MIN_SECONDS: i64 = -62_135_596_800;
pub const MAX_SECONDS: i64 = 253_402_300_799;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 {
                29
            } else {
                28
            }
        }
    }
}

/// Whether a timestamp lies within years 0001..=9999.
pub fn check_range(ts: Timestamp) -> Result<Timestamp, TimeError> {
    let (secs, _) = ts.split();
    if (MIN_SECONDS..=MAX_SECONDS).contains(&secs) {
        Ok(ts)
    } else {
        Err(TimeError::OutOfRange {
            value: ts.value,
            precision: ts.precision,
        })
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    let mut v = 0u32;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// Parses `YYYY-MM-DD`, returning days since the epoch.
pub fn parse_date(text: &str) -> Result<i32, TimeError> {
    let b = text.as_bytes();
    let (days, used) = date_prefix(b).ok_or_else(|| TimeError::DateSyntax(text.to_string()))?;
    if used != b.len() {
        return Err(TimeError::DateSyntax(text.to_string()));
    }
    let days = days.map_err(|()| TimeError::InvalidDate(text.to_string()))?;
    i32::try_from(days).map_err(|_| TimeError::DateSyntax(text.to_string()))
}

/// `YYYY-MM-DD` at the start of `b`: Some((Ok(days) or Err for an impossible date, bytes used)).
#[allow(clippy::type_complexity)]
fn date_prefix(b: &[u8]) -> Option<(Result<i64, ()>, usize)> {
    let year = digits(b, 0, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let year = i64::from(year);
    if year == 0 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Some((Err(()), 10));
    }
    Some((Ok(days_from_civil(year, month, day)), 10))
}

/// Parses `YYYY-MM-DD[ T]HH:MM:SS[.f{1,9}][Z|±HH:MM]` (UTC when no offset is given;
/// a date alone is its midnight) into a timestamp of `precision`.
pub fn parse_timestamp(text: &str, precision: Precision) -> Result<Timestamp, TimeError> {
    let b = text.as_bytes();
    let syntax = || TimeError::Syntax(text.to_string());
    let (days, mut i) = date_prefix(b).ok_or_else(syntax)?;
    let days = days.map_err(|()| TimeError::InvalidDate(text.to_string()))?;
    let mut secs_of_day = 0i64;
    let mut nanos = 0i64;
    if i < b.len() && (b[i] == b' ' || b[i] == b'T') {
        let h = digits(b, i + 1, 2).ok_or_else(syntax)?;
        let m = digits(b, i + 4, 2).ok_or_else(syntax)?;
        let s = digits(b, i + 7, 2).ok_or_else(syntax)?;
        if b.get(i + 3) != Some(&b':') || b.get(i + 6) != Some(&b':') {
            return Err(syntax());
        }
        if h > 23 || m > 59 || s > 59 {
            return Err(TimeError::InvalidDate(text.to_string()));
        }
        secs_of_day = i64::from(h * 3600 + m * 60 + s);
        i += 9;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 9 {
                    nanos = nanos * 10 + i64::from(b[i] - b'0');
                } else if b[i] != b'0' {
                    return Err(TimeError::TooPrecise {
                        text: text.to_string(),
                        precision,
                    });
                }
                i += 1;
            }
            let frac_digits = (i - start).min(9);
            if i == start {
                return Err(syntax());
            }
            nanos *= 10i64.pow(9 - frac_digits as u32);
        }
    }
    let mut offset = 0i64;
    match b.get(i) {
        None => {}
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => i += 1,
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits(b, i + 1, 2).ok_or_else(syntax)?;
            let om = if b.get(i + 3) == Some(&b':') {
                let v = digits(b, i + 4, 2).ok_or_else(syntax)?;
                i += 6;
                v
            } else if b.len() == i + 3 {
                i += 3;
                0
            } else {
                let v = digits(b, i + 3, 2).ok_or_else(syntax)?;
                i += 5;
                v
            };
            if oh > 23 || om > 59 {
                return Err(syntax());
            }
            offset = i64::from(oh * 3600 + om * 60);
            if sign == b'-' {
                offset = -offset;
            }
        }
        Some(_) => return Err(syntax()),
    }
    if i != b.len() {
        return Err(syntax());
    }
    let secs = days * 86_400 + secs_of_day - offset;
    let per = precision.per_second();
    let unit_nanos = 1_000_000_000 / per;
    if nanos % unit_nanos != 0 {
        return Err(TimeError::TooPrecise {
            text: text.to_string(),
            precision,
        });
    }
    // In i128: near i64::MIN the seconds overflow before the fraction is added.
    let value = i128::from(secs) * i128::from(per) + i128::from(nanos / unit_nanos);
    let value = i64::try_from(value).map_err(|_| TimeError::OutOfRange {
        value: if value < 0 { i64::MIN } else { i64::MAX },
        precision,
    })?;
    check_range(Timestamp::new(value, precision))
}

/// Appends `YYYY-MM-DD HH:MM:SS` and as many fractional digits as the precision has.
pub fn format_timestamp(ts: Timestamp, out: &mut Vec<u8>) {
    let (secs, nanos) = ts.split();
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    format_date_days(days, out);
    out.push(b' ');
    push2(out, sod / 3600);
    out.push(b':');
    push2(out, sod / 60 % 60);
    out.push(b':');
    push2(out, sod % 60);
    let n = ts.precision.fraction_digits();
    if n > 0 {
        out.push(b'.');
        let frac = nanos / 10u32.pow(9 - n);
        let mut buf = [b'0'; 9];
        let mut v = frac;
        for i in (0..n as usize).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

/// The text form of a timestamp, as a String.
pub fn timestamp_string(ts: Timestamp) -> String {
    let mut v = Vec::with_capacity(32);
    format_timestamp(ts, &mut v);
    String::from_utf8(v).unwrap_or_default()
}

/// Appends `YYYY-MM-DD` for a day count since the epoch.
pub fn format_date_days(days: i64, out: &mut Vec<u8>) {
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        let y = y as u32;
        push2(out, y / 100);
        push2(out, y % 100);
    } else {
        // Outside the checked range; still written unambiguously.
        let mut b = itoa::Buffer::new();
        out.extend_from_slice(b.format(y).as_bytes());
    }
    out.push(b'-');
    push2(out, m);
    out.push(b'-');
    push2(out, d);
}

fn push2(out: &mut Vec<u8>, v: u32) {
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_text_timestamps() {
        let t = parse_timestamp("2023-08-11 12:12:10.249", Precision::Ms).unwrap();
        assert_eq!(t, Timestamp::new(1_691_755_930_249, Precision::Ms));
        let t = parse_timestamp("2024-01-22 22:22:22.224", Precision::Us).unwrap();
        assert_eq!(t, Timestamp::new(1_705_962_142_224_000, Precision::Us));
    }

    #[test]
    fn formats_with_the_precision_digits() {
        let mut out = Vec::new();
        format_timestamp(Timestamp::new(1_691_755_930_249, Precision::Ms), &mut out);
        assert_eq!(out, b"2023-08-11 12:12:10.249");
        out.clear();
        format_timestamp(Timestamp::new(-1, Precision::Ns), &mut out);
        assert_eq!(out, b"1969-12-31 23:59:59.999999999");
        out.clear();
        format_timestamp(Timestamp::new(0, Precision::S), &mut out);
        assert_eq!(out, b"1970-01-01 00:00:00");
    }

    #[test]
    fn offsets_and_t_separator() {
        let a = parse_timestamp("2023-08-11T14:12:10.249+02:00", Precision::Ms).unwrap();
        let b = parse_timestamp("2023-08-11 12:12:10.249Z", Precision::Ms).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn errors_have_exact_messages() {
        assert_eq!(
            parse_timestamp("2023-08-11 12:12:10.2491", Precision::Ms)
                .unwrap_err()
                .to_string(),
            "\"2023-08-11 12:12:10.2491\" has more fractional digits than ms precision holds"
        );
        assert_eq!(
            parse_timestamp("2023-02-30 00:00:00", Precision::Ms)
                .unwrap_err()
                .to_string(),
            "\"2023-02-30 00:00:00\" is not a valid date and time"
        );
        assert_eq!(
            parse_timestamp("yesterday", Precision::Ms)
                .unwrap_err()
                .to_string(),
            "\"yesterday\" is not a timestamp; expected YYYY-MM-DD HH:MM:SS[.fff]"
        );
        assert_eq!(
            check_range(Timestamp::new(i64::MAX, Precision::Ms))
                .unwrap_err()
                .to_string(),
            "timestamp 9223372036854775807 (ms) is out of range (years 0001 to 9999)"
        );
        // Trailing zeros beyond the precision are not digits lost.
        assert!(parse_timestamp("2023-08-11 12:12:10.249000", Precision::Ms).is_ok());
    }

    #[test]
    fn range_edges() {
        let lo = parse_timestamp("0001-01-01 00:00:00", Precision::S).unwrap();
        assert_eq!(lo.value, MIN_SECONDS);
        let hi = parse_timestamp("9999-12-31 23:59:59", Precision::S).unwrap();
        assert_eq!(hi.value, MAX_SECONDS);
        assert!(check_range(Timestamp::new(MAX_SECONDS + 1, Precision::S)).is_err());
    }

    #[test]
    fn civil_round_trip() {
        for days in (-800_000..3_000_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(parse_date("1970-01-02").unwrap(), 1);
    }
}
