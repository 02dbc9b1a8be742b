//! Templates over event metadata: `"kw-{database}-{table}"`.
//!
//! A template is parsed once when the config is built, so a typo in a field name
//! surfaces at render time as a per-event rejection that names the field, and a
//! malformed template (an unclosed `{`) fails at validate time. `{{` and `}}` stand
//! for literal braces.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::event::Metadata;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("template \"{template}\": unclosed '{{' at byte {at}")]
    Unclosed { template: String, at: usize },
    #[error("template \"{template}\": unmatched '}}' at byte {at}")]
    Unmatched { template: String, at: usize },
    #[error("template \"{template}\": empty field name at byte {at}")]
    EmptyField { template: String, at: usize },
    #[error("template \"{template}\": the event has no \"{field}\"")]
    MissingField { template: String, field: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(String),
}

/// A parsed template.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let bytes = source.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'{' if bytes.get(i + 1) == Some(&b'{') => {
                    literal.push('{');
                    i += 2;
                }
                b'}' if bytes.get(i + 1) == Some(&b'}') => {
                    literal.push('}');
                    i += 2;
                }
                b'{' => {
                    let end = source[i + 1..]
                        .find('}')
                        .ok_or_else(|| TemplateError::Unclosed {
                            template: source.into(),
                            at: i,
                        })?;
                    let name = source[i + 1..i + 1 + end].trim();
                    if name.is_empty() || name.contains('{') {
                        return Err(TemplateError::EmptyField {
                            template: source.into(),
                            at: i,
                        });
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(name.to_string()));
                    i += end + 2;
                }
                b'}' => {
                    return Err(TemplateError::Unmatched {
                        template: source.into(),
                        at: i,
                    })
                }
                _ => {
                    // Copy the whole UTF-8 character, not just its first byte.
                    let ch = source[i..].chars().next().expect("in bounds");
                    literal.push(ch);
                    i += ch.len_utf8();
                }
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template {
            source: source.into(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether it has no fields, so every event renders the same.
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// The names of the fields it refers to, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f) => Some(f.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Renders with any lookup (the kwdb-poll source names topics from its own tables).
    pub fn render_with<'a, F>(&self, mut lookup: F) -> Result<String, TemplateError>
    where
        F: FnMut(&str) -> Option<Cow<'a, str>>,
    {
        let mut out = String::with_capacity(self.source.len() + 16);
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Field(name) => match lookup(name) {
                    Some(v) => out.push_str(&v),
                    None => {
                        return Err(TemplateError::MissingField {
                            template: self.source.clone(),
                            field: name.clone(),
                        })
                    }
                },
            }
        }
        Ok(out)
    }

    /// Renders over an event's metadata: `{topic}`, `{partition}`, `{offset}`,
    /// `{timestamp}`, `{database}`, `{table}`, and any key of `meta.extra`.
    pub fn render(&self, meta: &Metadata) -> Result<String, TemplateError> {
        self.render_with(|name| meta.get(name).map(Cow::Owned))
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Template::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Metadata {
        let mut m = Metadata {
            topic: Some("in".into()),
            partition: Some(3),
            database: Some("db".into()),
            table: Some("t1".into()),
            ..Default::default()
        };
        m.extra.insert("region".into(), "north".into());
        m
    }

    #[test]
    fn renders_fields_and_literals() {
        let t = Template::parse("kw-{database}.{table}-{region}-p{partition}").unwrap();
        assert_eq!(t.render(&meta()).unwrap(), "kw-db.t1-north-p3");
        assert!(!t.is_static());
        assert_eq!(
            t.fields().collect::<Vec<_>>(),
            ["database", "table", "region", "partition"]
        );
    }

    #[test]
    fn static_templates_and_escaped_braces() {
        let t = Template::parse("a{{b}}c").unwrap();
        assert!(t.is_static());
        assert_eq!(t.render(&Metadata::default()).unwrap(), "a{b}c");
        let t = Template::parse("ünïcode-{ table }").unwrap();
        assert_eq!(t.render(&meta()).unwrap(), "ünïcode-t1");
    }

    #[test]
    fn missing_field_names_the_field() {
        let t = Template::parse("x-{nope}").unwrap();
        let err = t.render(&meta()).unwrap_err();
        assert_eq!(
            err,
            TemplateError::MissingField {
                template: "x-{nope}".into(),
                field: "nope".into()
            }
        );
        assert!(err.to_string().contains("has no \"nope\""));
        let t = Template::parse("{offset}").unwrap();
        assert!(t.render(&meta()).is_err());
    }

    #[test]
    fn malformed_templates_fail_to_parse() {
        assert!(matches!(
            Template::parse("a{b"),
            Err(TemplateError::Unclosed { at: 1, .. })
        ));
        assert!(matches!(
            Template::parse("a}b"),
            Err(TemplateError::Unmatched { at: 1, .. })
        ));
        assert!(matches!(
            Template::parse("a{}"),
            Err(TemplateError::EmptyField { .. })
        ));
    }

    #[test]
    fn custom_lookup() {
        let t = Template::parse("{prefix}{db}{delim}{table}").unwrap();
        let out = t
            .render_with(|n| match n {
                "prefix" => Some("p_".into()),
                "db" => Some("tsdb".into()),
                "delim" => Some(".".into()),
                "table" => Some(Cow::Borrowed("t")),
                _ => None,
            })
            .unwrap();
        assert_eq!(out, "p_tsdb.t");
    }
}
