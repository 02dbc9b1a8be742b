//! Reading a component's options table that holds the [`ConnectionOptions`]
//! beside the component's own, at the same level, as users write them (`url`,
//! `sslmode`... next to `batch_size`).
//!
//! Not `#[serde(flatten)]`: it loses `deny_unknown_fields` and the "expected one
//! of" list of its errors (DESIGN.md). Instead the table is split by name, each
//! part is read by its own strict struct, and a name neither takes is reported
//! with every name the component takes, in the order they are declared
//! (connection first), exactly as one derived struct would report it.
//!
//! Entries are checked one by one in the table's order, so a table with several
//! mistakes reports the same first one as a single derived struct would.

use serde::de::{Deserialize, Deserializer, Error as _};

use super::conn::ConnectionOptions;

/// A component config whose table also holds the connection options.
pub trait WithConnection: Sized {
    /// Reads the component's own options, strictly: derive `Deserialize` with
    /// `#[serde(remote = "Self", deny_unknown_fields)]` and mark the field that
    /// takes the connection `#[serde(skip, default = "...")]`. Each of its
    /// options must have a default (each is checked alone).
    fn deserialize_own<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;

    /// Puts the connection options read beside them in place.
    fn set_connection(&mut self, connection: ConnectionOptions);
}

/// What `Deserialize for` a [`WithConnection`] config calls.
pub fn deserialize<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: WithConnection,
{
    let table = toml::Table::deserialize(deserializer)?;
    let own_fields = fields_of::<T>();
    let inner = |e: toml::de::Error| D::Error::custom(e.message());
    let (mut connection, mut own) = (toml::Table::new(), toml::Table::new());
    // Entry by entry, in the table's order, as a derived struct reads them: the
    // first unknown name or wrong value is the one reported.
    for (key, value) in table {
        let mut alone = toml::Table::new();
        alone.insert(key.clone(), value.clone());
        if ConnectionOptions::FIELDS.contains(&key.as_str()) {
            // `url` is required: a stand-in lets any other option be checked alone.
            if key != "url" {
                alone.insert("url".into(), toml::Value::String(String::new()));
            }
            ConnectionOptions::deserialize(toml::Value::Table(alone)).map_err(inner)?;
            connection.insert(key, value);
        } else if own_fields.contains(&key.as_str()) {
            T::deserialize_own(toml::Value::Table(alone)).map_err(inner)?;
            own.insert(key, value);
        } else {
            return Err(D::Error::custom(unknown_field(&key, &field_names::<T>())));
        }
    }
    // Every value is right: what is left to report is a missing field.
    let connection =
        ConnectionOptions::deserialize(toml::Value::Table(connection)).map_err(inner)?;
    let mut config = T::deserialize_own(toml::Value::Table(own)).map_err(inner)?;
    config.set_connection(connection);
    Ok(config)
}

/// Every option name a config takes, in the order they are declared (the
/// connection's first): what its errors list, and what its documentation names.
pub fn field_names<T: WithConnection>() -> Vec<&'static str> {
    let mut names = ConnectionOptions::FIELDS.to_vec();
    names.extend(fields_of::<T>());
    names
}

/// serde's own wording for an unknown field (`Error::unknown_field`, which
/// takes only a `'static` list).
fn unknown_field(field: &str, expected: &[&str]) -> String {
    let quoted: Vec<String> = expected.iter().map(|f| format!("`{f}`")).collect();
    match quoted.as_slice() {
        [] => format!("unknown field `{field}`, there are no fields"),
        [one] => format!("unknown field `{field}`, expected {one}"),
        [a, b] => format!("unknown field `{field}`, expected {a} or {b}"),
        _ => format!(
            "unknown field `{field}`, expected one of {}",
            quoted.join(", ")
        ),
    }
}

/// The names a derived struct takes, as its `Deserialize` hands them to the
/// deserializer.
fn fields_of<T: WithConnection>() -> Vec<&'static str> {
    crate::option_names::of_fn(&[], |p| T::deserialize_own(p)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_worded_as_serde_does() {
        assert_eq!(
            unknown_field("x", &["a", "b", "c"]),
            "unknown field `x`, expected one of `a`, `b`, `c`"
        );
        assert_eq!(
            unknown_field("x", &["a", "b"]),
            "unknown field `x`, expected `a` or `b`"
        );
    }

    #[test]
    fn the_connection_fields_are_those_of_the_struct() {
        let probed = crate::option_names::of::<ConnectionOptions>(&[]).unwrap();
        assert_eq!(probed, ConnectionOptions::FIELDS);
    }
}
