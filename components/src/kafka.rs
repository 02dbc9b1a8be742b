//! What the Kafka source and sink share: the `librdkafka_options` pass-through map
//! (which may hold credentials, so it never prints them) and client creation with
//! errors that do not leak them either.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::error::KafkaError;
use rdkafka::ClientContext;
use serde::{Deserialize, Deserializer};

#[derive(Debug, thiserror::Error)]
pub enum KafkaClientError {
    #[error(
        "librdkafka option \"{key}\" is set by kwpipe's own option `{ours}`; set that instead"
    )]
    Reserved { key: String, ours: &'static str },
    #[error("invalid librdkafka option \"{key}\": {reason}")]
    InvalidOption { key: String, reason: String },
    #[error("cannot create the Kafka client: {0}")]
    Create(String),
}

/// Whether a librdkafka property may hold a secret (`sasl.password`,
/// `ssl.key.password`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`...).
pub fn is_sensitive(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "ssl.key.pem",
        "private",
        "sasl.jaas",
        "token",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// Raw librdkafka properties, passed through as they are. Values may be TOML
/// strings, integers, floats or booleans; librdkafka takes them all as text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LibrdkafkaOptions(pub BTreeMap<String, String>);

impl LibrdkafkaOptions {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Fails when the user sets a property that one of kwpipe's options owns, so
    /// the two cannot silently disagree.
    pub fn check_reserved(
        &self,
        reserved: &[(&str, &'static str)],
    ) -> Result<(), KafkaClientError> {
        for (key, ours) in reserved {
            if self.0.contains_key(*key) {
                return Err(KafkaClientError::Reserved {
                    key: key.to_string(),
                    ours,
                });
            }
        }
        Ok(())
    }
}

impl fmt::Debug for LibrdkafkaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.0 {
            if is_sensitive(k) {
                map.entry(k, &"***");
            } else {
                map.entry(k, v);
            }
        }
        map.finish()
    }
}

impl<'de> Deserialize<'de> for LibrdkafkaOptions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            S(String),
            I(i64),
            F(f64),
            B(bool),
        }
        let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
        Ok(LibrdkafkaOptions(
            raw.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Scalar::S(s) => s,
                        Scalar::I(i) => i.to_string(),
                        Scalar::F(f) => f.to_string(),
                        Scalar::B(b) => b.to_string(),
                    };
                    (k, v)
                })
                .collect(),
        ))
    }
}

/// kwpipe's settings first, then the user's pass-through options over them.
pub fn client_config(base: &[(&str, String)], user: &LibrdkafkaOptions) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in base {
        config.set(*k, v);
    }
    for (k, v) in user.iter() {
        config.set(k, v);
    }
    config
}

/// Creates a client, describing a bad property without repeating a secret value.
pub fn create<T, C>(config: &ClientConfig, context: C) -> Result<T, KafkaClientError>
where
    T: FromClientConfigAndContext<C>,
    C: ClientContext,
{
    T::from_config_and_context(config, context).map_err(|e| match e {
        KafkaError::ClientConfig(_, desc, key, _value) => {
            let reason = if is_sensitive(&key) {
                "rejected by librdkafka (value not shown)".to_string()
            } else {
                desc
            };
            KafkaClientError::InvalidOption { key, reason }
        }
        other => KafkaClientError::Create(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_credentials() {
        let opts: LibrdkafkaOptions = toml::from_str(
            r#"
            "sasl.password" = "hunter2"
            "ssl.key.password" = "s3cret"
            "sasl.username" = "bob"
            "fetch.wait.max.ms" = 50
            "#,
        )
        .unwrap();
        let shown = format!("{opts:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("bob"));
        assert_eq!(opts.get("fetch.wait.max.ms"), Some("50"));
    }

    #[test]
    fn bad_sensitive_option_does_not_echo_its_value() {
        let mut user = LibrdkafkaOptions::default();
        user.0
            .insert("ssl.key.password.bogus".into(), "hunter2".into());
        let config = client_config(&[], &user);
        let err = create::<rdkafka::producer::BaseProducer, _>(
            &config,
            rdkafka::producer::DefaultProducerContext,
        )
        .err()
        .expect("unknown property must fail");
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("ssl.key.password.bogus"), "{text}");
    }

    #[test]
    fn reserved_keys_are_refused() {
        let mut user = LibrdkafkaOptions::default();
        user.0.insert("group.id".into(), "x".into());
        let err = user
            .check_reserved(&[("group.id", "group_id")])
            .unwrap_err();
        assert!(err.to_string().contains("group_id"));
    }
}
