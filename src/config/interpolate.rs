//! `${VAR}` and `${VAR:-default}` in topology files, filled from the environment
//! before the TOML is parsed (so numbers and booleans can come from there too).
//!
//! A value substituted inside a double-quoted TOML string is escaped, so a password
//! holding `"` or `\` neither breaks the file nor changes its meaning. Comments are
//! left alone, and `$$` stands for a literal `$`.

use std::collections::HashMap;

/// One problem found while interpolating; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct InterpolationError {
    pub line: usize,
    pub message: String,
}

/// Replaces every reference in `text`, collecting every problem rather than
/// stopping at the first.
pub fn interpolate(
    text: &str,
    env: &HashMap<String, String>,
) -> Result<String, Vec<InterpolationError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut in_multiline: Option<&str> = None;
    for (idx, line) in text.split_inclusive('\n').enumerate() {
        let line_no = idx + 1;
        let mut quote = Quote::None;
        if let Some(delim) = in_multiline {
            quote = if delim == "\"\"\"" {
                Quote::Basic
            } else {
                Quote::Literal
            };
        }
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            // Multi-line string delimiters.
            if (c == b'"' || c == b'\'')
                && line[i..].starts_with(if c == b'"' { "\"\"\"" } else { "'''" })
            {
                let delim = if c == b'"' { "\"\"\"" } else { "'''" };
                match in_multiline {
                    Some(d) if d == delim => {
                        in_multiline = None;
                        quote = Quote::None;
                    }
                    None if quote == Quote::None => {
                        in_multiline = Some(delim);
                        quote = if c == b'"' {
                            Quote::Basic
                        } else {
                            Quote::Literal
                        };
                    }
                    _ => {}
                }
                out.push_str(delim);
                i += 3;
                continue;
            }
            match (quote, c) {
                (Quote::None, b'#') => {
                    out.push_str(&line[i..]);
                    break;
                }
                (Quote::None, b'"') if in_multiline.is_none() => quote = Quote::Basic,
                (Quote::Basic, b'"') if in_multiline.is_none() => quote = Quote::None,
                (Quote::None, b'\'') if in_multiline.is_none() => quote = Quote::Literal,
                (Quote::Literal, b'\'') if in_multiline.is_none() => quote = Quote::None,
                (Quote::Basic, b'\\') => {
                    // An escape: copy it and the escaped character as they are.
                    // The escaped character may be several bytes (`"C:\Données"`
                    // is a TOML error, not a panic here).
                    let end = match bytes.get(i + 1) {
                        Some(&next) => (i + 1 + utf8_len(next)).min(bytes.len()),
                        None => bytes.len(),
                    };
                    out.push_str(&line[i..end]);
                    i = end;
                    continue;
                }
                _ => {}
            }
            if c == b'$' {
                if line[i..].starts_with("$$") {
                    out.push('$');
                    i += 2;
                    continue;
                }
                if line[i..].starts_with("${") {
                    let Some(close) = line[i..].find('}') else {
                        errors.push(InterpolationError {
                            line: line_no,
                            message: "unclosed \"${\"; expected ${VAR} or ${VAR:-default}"
                                .to_string(),
                        });
                        out.push_str(&line[i..]);
                        break;
                    };
                    let inner = &line[i + 2..i + close];
                    match resolve(inner, env) {
                        Ok(value) => match escape_for(quote, &value) {
                            Ok(v) => out.push_str(&v),
                            Err(message) => errors.push(InterpolationError {
                                line: line_no,
                                message,
                            }),
                        },
                        Err(message) => errors.push(InterpolationError {
                            line: line_no,
                            message,
                        }),
                    }
                    i += close + 1;
                    continue;
                }
            }
            let ch_len = utf8_len(c);
            out.push_str(&line[i..(i + ch_len).min(line.len())]);
            i += ch_len;
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Basic,
    Literal,
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

fn resolve(inner: &str, env: &HashMap<String, String>) -> Result<String, String> {
    let (name, default) = match inner.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (inner, None),
    };
    let valid = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if !valid {
        return Err(format!(
            "invalid variable reference \"${{{inner}}}\"; expected ${{VAR}} or ${{VAR:-default}}"
        ));
    }
    match (env.get(name), default) {
        (Some(v), _) if v == NOT_UTF8 => Err(format!(
            "environment variable {name} is set to bytes that are not UTF-8"
        )),
        (Some(v), Some(d)) if v.is_empty() => Ok(d.to_string()),
        (Some(v), _) => Ok(v.clone()),
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) => Err(format!(
            "environment variable {name} is not set (use ${{{name}:-default}} for a default)"
        )),
    }
}

/// What [`process_env`] holds for a variable whose value is not UTF-8: a
/// reference to it is an error naming it (NUL cannot be in a real value).
const NOT_UTF8: &str = "\0kwpipe: not UTF-8\0";

/// The process environment, for `${VAR}`. `std::env::vars` panics on a
/// variable that is not UTF-8, any variable, referenced or not; such a value is
/// kept as a marker so only a reference to it fails, with its name.
pub fn process_env() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            Some((k, v.into_string().unwrap_or_else(|_| NOT_UTF8.to_string())))
        })
        .collect()
}

fn escape_for(quote: Quote, value: &str) -> Result<String, String> {
    match quote {
        // Outside quotes a value stays on its line: a line break would let it
        // add keys or tables of its own.
        Quote::None if value.contains(['\n', '\r']) => Err(
            "a value with a line break cannot be substituted outside quotes; put the reference in \"...\""
                .to_string(),
        ),
        Quote::None => Ok(value.to_string()),
        Quote::Basic => {
            let mut s = String::with_capacity(value.len());
            for ch in value.chars() {
                match ch {
                    '"' => s.push_str("\\\""),
                    '\\' => s.push_str("\\\\"),
                    '\n' => s.push_str("\\n"),
                    '\r' => s.push_str("\\r"),
                    '\t' => s.push_str("\\t"),
                    c if c.is_control() => s.push_str(&format!("\\u{:04X}", c as u32)),
                    c => s.push(c),
                }
            }
            Ok(s)
        }
        Quote::Literal => {
            if value.contains('\'') || value.contains('\n') {
                Err("a value with a single quote or a newline cannot go in a '...' string; use \"...\"".to_string())
            } else {
                Ok(value.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitutes_and_defaults() {
        let e = env(&[("HOST", "db1"), ("EMPTY", "")]);
        let out = interpolate(
            "url = \"postgresql://${HOST}:${PORT:-5432}\"\nx = \"${EMPTY:-d}\"\n",
            &e,
        )
        .unwrap();
        assert_eq!(out, "url = \"postgresql://db1:5432\"\nx = \"d\"\n");
    }

    #[test]
    fn numbers_can_come_from_the_environment() {
        let out = interpolate("batch_size = ${N}\n", &env(&[("N", "500")])).unwrap();
        let v: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(v["batch_size"].as_integer(), Some(500));
    }

    #[test]
    fn values_are_escaped_inside_strings() {
        let e = env(&[("PW", "a\"b\\c")]);
        let out = interpolate("password = \"${PW}\"\n", &e).unwrap();
        let v: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(v["password"].as_str(), Some("a\"b\\c"));
    }

    #[test]
    fn missing_variables_are_all_reported_with_lines() {
        let errs = interpolate("a = \"${A}\"\nb = 1\nc = \"${C}\"\n", &env(&[])).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(
            errs[0].to_string(),
            "line 1: environment variable A is not set (use ${A:-default} for a default)"
        );
        assert_eq!(errs[1].line, 3);
    }

    #[test]
    fn comments_and_dollar_escapes_are_left_alone() {
        let out = interpolate("a = \"$$HOME\" # ${NOT_SET}\n", &env(&[])).unwrap();
        assert_eq!(out, "a = \"$HOME\" # ${NOT_SET}\n");
    }

    #[test]
    fn bad_references_are_errors() {
        let errs = interpolate("a = \"${1X}\"\nb = \"${OPEN\"\n", &env(&[])).unwrap_err();
        assert!(errs[0].message.contains("invalid variable reference"));
        assert!(errs[1].message.contains("unclosed"));
    }

    #[test]
    fn unicode_passes_through() {
        let out = interpolate("a = \"温度 ${X}\"\n", &env(&[("X", "℃")])).unwrap();
        assert_eq!(out, "a = \"温度 ℃\"\n");
    }

    #[test]
    fn hostile_values_cannot_change_the_files_structure() {
        let e = env(&[("N", "1\n[sinks.evil]\ntype = \"console\""), ("B", "\u{0}")]);
        let errs = interpolate("batch = ${N}\n", &e).unwrap_err();
        assert!(errs[0].message.contains("line break"), "{errs:?}");
        let out = interpolate("a = \"${N}\"\nb = \"${B}\"\n", &e).unwrap();
        let t: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(t["a"].as_str(), Some("1\n[sinks.evil]\ntype = \"console\""));
        assert_eq!(t["b"].as_str(), Some("\u{0}"));
        assert_eq!(t.len(), 2);
        let e = env(&[("X", NOT_UTF8)]);
        let errs = interpolate("a = \"${X:-d}\"\n", &e).unwrap_err();
        assert!(
            errs[0]
                .message
                .contains("X is set to bytes that are not UTF-8"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_multibyte_character_after_a_backslash_is_copied_whole() {
        // Panicked: "end byte index is not a char boundary" (a Windows path).
        let out = interpolate("data_dir = \"C:\\Données\"\n", &env(&[])).unwrap();
        assert_eq!(out, "data_dir = \"C:\\Données\"\n");
        for c in ['é', '温', '😀', '\u{80}', '\u{10ffff}'] {
            for text in [
                format!("a = \"\\{c}\""),
                format!("a = \"\\{c}"),
                format!("a = \"x\\{c}${{X}}\"\n"),
                format!("a = \"\"\"\\{c}\n\\{c}\"\"\"\n"),
            ] {
                let out = interpolate(&text, &env(&[("X", "v")])).unwrap();
                assert!(out.contains(c), "{text:?} -> {out:?}");
            }
        }
    }
}
