//! Names from data (tables, columns, tags) become SQL only through [`Ident`]: checked
//! against KWDB's naming rules, then always double-quoted, so no name can end the
//! identifier early or change how the statement parses.

use std::fmt;

use super::error::KwdbError;
use super::server::Dialect;

/// A checked identifier. Display writes it quoted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    /// KWDB: ASCII, at most 128 bytes. PostgreSQL silently truncates names longer
    /// than 63 bytes (NAMEDATALEN), which would make the catalog disagree with the
    /// data, so that dialect refuses them instead. Control characters (NUL above
    /// all) are refused everywhere: neither server can store them in a name.
    pub fn new(name: &str, dialect: Dialect) -> Result<Ident, KwdbError> {
        let max = match dialect {
            Dialect::Kwdb => 128,
            Dialect::Postgres => 63,
        };
        let reason = if name.is_empty() {
            Some("is empty".to_string())
        } else if !name.is_ascii() {
            Some("contains non-ASCII characters".to_string())
        } else if name.len() > max {
            Some(format!(
                "is {} bytes long; the {dialect} dialect allows at most {max}",
                name.len()
            ))
        } else if name.bytes().any(|b| b.is_ascii_control()) {
            Some("contains control characters".to_string())
        } else {
            None
        };
        if reason.is_none() && dialect == Dialect::Kwdb {
            super::rules::check_kwdb_name(name)?;
        }
        match reason {
            Some(reason) => Err(KwdbError::InvalidIdentifier {
                name: printable(name),
                reason,
            }),
            None => Ok(Ident(name.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        f.write_str(&self.0.replace('"', "\"\""))?;
        f.write_str("\"")
    }
}

/// A name shortened and stripped of control characters, for error messages.
fn printable(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if name.chars().count() > 64 {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled() {
        let id = Ident::new(r#"a"; DROP TABLE x; --"#, Dialect::Kwdb).unwrap();
        assert_eq!(id.to_string(), r#""a""; DROP TABLE x; --""#);
    }

    #[test]
    fn rules_per_dialect() {
        assert!(Ident::new("", Dialect::Kwdb).is_err());
        assert!(Ident::new("température", Dialect::Kwdb).is_err());
        assert!(Ident::new("a\0b", Dialect::Postgres).is_err());
        let long = "x".repeat(100);
        assert!(Ident::new(&long, Dialect::Kwdb).is_ok());
        let err = Ident::new(&long, Dialect::Postgres)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 63"), "{err}");
        assert!(Ident::new(&"x".repeat(129), Dialect::Kwdb).is_err());
    }

    /// KWDB's SHOW TAGS FROM builds `'<table>'` itself: a quote in a name breaks it.
    #[test]
    fn quotes_in_names_are_refused_for_kwdb_only() {
        let e = Ident::new("it's", Dialect::Kwdb).unwrap_err().to_string();
        assert!(e.contains("show_attributes.go"), "{e}");
        assert!(Ident::new("it's", Dialect::Postgres).is_ok());
    }
}
