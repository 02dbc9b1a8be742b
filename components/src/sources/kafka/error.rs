//! What can go wrong in the `kafka` source.

use rdkafka::error::KafkaError;

use crate::api::ComponentError;
use crate::kafka::KafkaClientError;

#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error(transparent)]
    Client(#[from] KafkaClientError),
    #[error("invalid option: {0}")]
    Option(String),
    #[error("cannot subscribe to {topics:?}: {source}")]
    Subscribe {
        topics: Vec<String>,
        source: KafkaError,
    },
    #[error("the consumer hit a fatal error: {0}")]
    Fatal(KafkaError),
    #[error("a polling thread failed: {0}")]
    Thread(String),
}

impl From<KafkaSourceError> for ComponentError {
    fn from(e: KafkaSourceError) -> Self {
        ComponentError::other(e)
    }
}
