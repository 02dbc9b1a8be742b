//! Secrets in connector configs: shown masked in every response, and a config sent
//! back with the mask keeps the stored secret, so tools that GET, edit and PUT a
//! config do not overwrite the password with the mask.

use serde_json::{Map, Value as Json};

/// What a masked value reads as (Connect's own text for hidden passwords).
pub const MASK: &str = "[hidden]";

pub fn is_secret(key: &str) -> bool {
    kwpipe_components::kafka::is_sensitive(key)
}

pub fn mask(config: &Map<String, Json>) -> Map<String, Json> {
    config
        .iter()
        .map(|(k, v)| {
            let v = if is_secret(k) && !v.is_null() {
                Json::String(MASK.into())
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

/// `new` with every masked secret replaced by the value stored before.
pub fn unmask(mut new: Map<String, Json>, old: Option<&Map<String, Json>>) -> Map<String, Json> {
    for (k, v) in new.iter_mut() {
        if is_secret(k) && v.as_str() == Some(MASK) {
            if let Some(stored) = old.and_then(|o| o.get(k)) {
                *v = stored.clone();
            }
        }
    }
    new
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(v: Json) -> Map<String, Json> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn passwords_are_masked_and_a_mask_sent_back_keeps_the_secret() {
        let stored = map(
            json!({"connection.password": "s3cret", "connection.user": "u",
            "producer.override.sasl.jaas.config": "x password=\"p\";"}),
        );
        let shown = mask(&stored);
        assert_eq!(shown["connection.password"], MASK);
        assert_eq!(shown["producer.override.sasl.jaas.config"], MASK);
        assert_eq!(shown["connection.user"], "u");

        let mut edited = shown.clone();
        edited.insert("connection.user".into(), "v".into());
        let kept = unmask(edited, Some(&stored));
        assert_eq!(kept["connection.password"], "s3cret");
        assert_eq!(kept["connection.user"], "v");

        let mut changed = shown;
        changed.insert("connection.password".into(), "new".into());
        assert_eq!(unmask(changed, Some(&stored))["connection.password"], "new");
    }
}
