//! The one list of component types. A topology's `type = "..."` is looked up here,
//! and its options are deserialized into that component's own strict config struct.

use serde::de::DeserializeOwned;

use crate::api::{ComponentClass, ComponentConfig};

type ParseFn = fn(toml::Table) -> Result<Box<dyn ComponentConfig>, String>;
type OptionNamesFn = fn(&[&str]) -> Option<&'static [&'static str]>;

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
    pub fn option_names(&self, path: &[&str]) -> Option<&'static [&'static str]> {
        (self.option_names)(path)
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
        option_names: probe::option_names::<T>,
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
    entry::<crate::sources::kwdb_poll::KwdbPollConfig>(Source, "kwdb-poll"),
    entry::<crate::transforms::batch::BatchConfig>(Transform, "batch"),
    entry::<crate::transforms::decode::DecodeConfig>(Transform, "decode"),
    entry::<crate::transforms::encode::EncodeConfig>(Transform, "encode"),
    entry::<crate::transforms::schema_infer::SchemaInferConfig>(Transform, "schema-infer"),
    entry::<crate::sinks::console::ConsoleConfig>(Sink, "console"),
    entry::<crate::sinks::file::FileSinkConfig>(Sink, "file"),
    entry::<crate::sinks::blackhole::BlackholeConfig>(Sink, "blackhole"),
    entry::<crate::sinks::kafka::KafkaSinkConfig>(Sink, "kafka"),
    entry::<crate::sinks::kwdb::KwdbSinkConfig>(Sink, "kwdb"),
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

/// Finds a config struct's option names without an instance: a `Deserializer` that
/// walks `path` (answering a struct with one `key = value` entry, an `Option` with
/// `Some`, a list with one element) and, where the path ends, records the field
/// names serde passes to `deserialize_struct`, then stops with an error.
mod probe {
    use serde::de::value::{Error, StrDeserializer};
    use serde::de::{
        self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor,
    };

    pub(super) fn option_names<T: DeserializeOwned>(
        path: &[&str],
    ) -> Option<&'static [&'static str]> {
        let mut found = None;
        let _ = T::deserialize(Probe {
            path,
            found: &mut found,
        });
        found
    }

    struct Probe<'p, 'f> {
        path: &'p [&'p str],
        found: &'f mut Option<&'static [&'static str]>,
    }

    fn stop() -> Error {
        de::Error::custom("probed")
    }

    impl<'de> de::Deserializer<'de> for Probe<'_, '_> {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(stop())
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            match self.path.split_first() {
                None => {
                    *self.found = Some(fields);
                    Err(stop())
                }
                Some((key, rest)) => visitor.visit_map(OneEntry {
                    key: Some(key),
                    value: Some(Probe {
                        path: rest,
                        found: self.found,
                    }),
                }),
            }
        }

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_some(self)
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            visitor: V,
        ) -> Result<V::Value, Error> {
            visitor.visit_newtype_struct(self)
        }

        fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_seq(OneElement(Some(self)))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf unit unit_struct tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    /// A table with one entry: the next key of the path, then the probe.
    struct OneEntry<'p, 'f> {
        key: Option<&'p str>,
        value: Option<Probe<'p, 'f>>,
    }

    impl<'de> MapAccess<'de> for OneEntry<'_, '_> {
        type Error = Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Error> {
            match self.key.take() {
                Some(key) => {
                    let key: StrDeserializer<Error> = key.into_deserializer();
                    seed.deserialize(key).map(Some)
                }
                None => Ok(None),
            }
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
            seed.deserialize(self.value.take().ok_or_else(stop)?)
        }
    }

    /// A list with one element: the probe.
    struct OneElement<'p, 'f>(Option<Probe<'p, 'f>>);

    impl<'de> SeqAccess<'de> for OneElement<'_, '_> {
        type Error = Error;

        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>, Error> {
            match self.0.take() {
                Some(probe) => seed.deserialize(probe).map(Some),
                None => Ok(None),
            }
        }
    }
}
