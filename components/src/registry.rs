//! The one list of component types. A topology's `type = "..."` is looked up here,
//! and its options are deserialized into that component's own strict config struct.

use serde::de::DeserializeOwned;

use serde::Deserialize;

use crate::api::{ComponentClass, ComponentConfig};
use crate::kwdb::conn::ConnectionOptions;
use crate::kwdb::options_table::{self, WithConnection};
use crate::option_names;

type ParseFn = fn(toml::Table) -> Result<Box<dyn ComponentConfig>, String>;
type OptionNamesFn = fn(&[&str]) -> Option<Vec<&'static str>>;

/// One component type.
pub struct Registration {
    pub class: ComponentClass,
    pub name: &'static str,
    parse: ParseFn,
    option_names: OptionNamesFn,
}

impl Registration {
    /// Its options parsed as a topology's would be (`type` and `inputs` taken out).
    pub fn parse(&self, options: toml::Table) -> Result<Box<dyn ComponentConfig>, String> {
        (self.parse)(options)
    }

    /// The option names of its config struct (`path` empty), or of the option
    /// table at `path` (`["tls"]`, `["relational"]` for a list of tables); None
    /// when that option is not a table of named options. Read from what the
    /// struct's `Deserialize` tells serde, so it cannot drift from the struct
    /// (docs/components.md is checked against it). `#[serde(flatten)]` fields are
    /// not told to serde that way: no config struct uses one, and a struct that
    /// did would be reported as having no names at all, not silently fewer.
    pub fn option_names(&self, path: &[&str]) -> Option<Vec<&'static str>> {
        (self.option_names)(path)
    }
}

/// A component whose table holds the KWDB connection options beside its own (read
/// by `kwdb::options_table`, not by one derived struct): its names are the
/// connection's and its own struct's.
const fn entry_with_connection<T>(class: ComponentClass, name: &'static str) -> Registration
where
    T: ComponentConfig + DeserializeOwned + WithConnection + 'static,
{
    Registration {
        class,
        name,
        parse: options::<T>,
        option_names: connection_option_names::<T>,
    }
}

fn connection_option_names<T: WithConnection>(path: &[&str]) -> Option<Vec<&'static str>> {
    match path.first() {
        None => Some(options_table::field_names::<T>()),
        Some(first) if ConnectionOptions::FIELDS.contains(first) => {
            option_names::of_fn(path, |p| ConnectionOptions::deserialize(p))
        }
        Some(_) => option_names::of_fn(path, |p| T::deserialize_own(p)),
    }
}

const fn entry<T>(class: ComponentClass, name: &'static str) -> Registration
where
    T: ComponentConfig + DeserializeOwned + 'static,
{
    Registration {
        class,
        name,
        parse: options::<T>,
        option_names: option_names::of::<T>,
    }
}

/// Deserializes options into a `deny_unknown_fields` struct; the message says
/// which field is wrong and what was expected.
fn options<T>(table: toml::Table) -> Result<Box<dyn ComponentConfig>, String>
where
    T: ComponentConfig + DeserializeOwned + 'static,
{
    let config: T = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| e.message().trim().to_string())?;
    Ok(Box::new(config))
}

use ComponentClass::{Sink, Source, Transform};

/// Every component type kwpipe knows.
pub static COMPONENTS: &[Registration] = &[
    entry::<crate::sources::stdin::StdinConfig>(Source, "stdin"),
    entry::<crate::sources::file::FileSourceConfig>(Source, "file"),
    entry::<crate::sources::kafka::KafkaSourceConfig>(Source, "kafka"),
    entry_with_connection::<crate::sources::kwdb_poll::KwdbPollConfig>(Source, "kwdb-poll"),
    entry::<crate::transforms::batch::BatchConfig>(Transform, "batch"),
    entry::<crate::transforms::decode::DecodeConfig>(Transform, "decode"),
    entry::<crate::transforms::encode::EncodeConfig>(Transform, "encode"),
    entry::<crate::transforms::schema_infer::SchemaInferConfig>(Transform, "schema-infer"),
    entry::<crate::sinks::console::ConsoleConfig>(Sink, "console"),
    entry::<crate::sinks::file::FileSinkConfig>(Sink, "file"),
    entry::<crate::sinks::blackhole::BlackholeConfig>(Sink, "blackhole"),
    entry::<crate::sinks::kafka::KafkaSinkConfig>(Sink, "kafka"),
    entry_with_connection::<crate::sinks::kwdb::KwdbSinkConfig>(Sink, "kwdb"),
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RegistryError {
    #[error("unknown {class} type \"{name}\"; known types: {known}")]
    UnknownType {
        class: &'static str,
        name: String,
        known: String,
    },
    #[error("{0}")]
    Options(String),
}

impl ComponentClass {
    /// The singular name, as messages and the admin API say it: `source`, `transform`, `sink`.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentClass::Source => "source",
            ComponentClass::Transform => "transform",
            ComponentClass::Sink => "sink",
        }
    }
}

/// The type names of one class, in registry order.
pub fn names(class: ComponentClass) -> Vec<&'static str> {
    COMPONENTS
        .iter()
        .filter(|r| r.class == class)
        .map(|r| r.name)
        .collect()
}

/// Parses the options of a component of `class` and type `name`.
pub fn parse(
    class: ComponentClass,
    name: &str,
    options: toml::Table,
) -> Result<Box<dyn ComponentConfig>, RegistryError> {
    let Some(reg) = COMPONENTS
        .iter()
        .find(|r| r.class == class && r.name == name)
    else {
        return Err(RegistryError::UnknownType {
            class: class.as_str(),
            name: name.to_string(),
            known: names(class).join(", "),
        });
    };
    (reg.parse)(options).map_err(RegistryError::Options)
}
