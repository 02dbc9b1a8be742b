//! Finds a config struct's option names without an instance: a `Deserializer` that
//! walks `path` (answering a struct with one `key = value` entry, an `Option` with
//! `Some`, a list with one element) and, where the path ends, records the field
//! names serde passes to `deserialize_struct`, then stops with an error.
//!
//! The registry lists each component's options with it (docs/components.md is
//! checked against them), and `kwdb::options_table` reads the names of the structs
//! it splits a table between.

use serde::de::value::{Error, StrDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

pub(crate) fn of<T: DeserializeOwned>(path: &[&str]) -> Option<Vec<&'static str>> {
    of_fn(path, |p| T::deserialize(p))
}

/// The same through any deserializing function (a `remote` derive's).
pub(crate) fn of_fn<T>(
    path: &[&str],
    deserialize: impl for<'p, 'f> FnOnce(Probe<'p, 'f>) -> Result<T, Error>,
) -> Option<Vec<&'static str>> {
    let mut found = None;
    let _ = deserialize(Probe {
        path,
        found: &mut found,
    });
    found.map(<[&str]>::to_vec)
}

pub(crate) struct Probe<'p, 'f> {
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
