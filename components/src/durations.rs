//! Durations in configs: `"250ms"`, `"5s"`, `"2m"`, `"1h"`, `"1d"`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses `<integer><unit>` with unit one of ms, s, m, h, d.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!(
            "invalid duration \"{text}\"; expected a form like \"500ms\", \"5s\", \"2m\" or \"1h\""
        )
    })?;
    let unit_ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
            "invalid duration \"{text}\"; expected a form like \"500ms\", \"5s\", \"2m\" or \"1h\""
        ))
        }
    };
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration \"{text}\" is too long"))
}

/// `#[serde(deserialize_with = "durations::deserialize")]`
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// For `Option<Duration>` fields.
pub fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| parse(&t).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn rejects_bad_forms() {
        assert!(parse("5").unwrap_err().contains("expected a form like"));
        assert!(parse("s").is_err());
        assert!(parse("5 parsecs").is_err());
    }
}
