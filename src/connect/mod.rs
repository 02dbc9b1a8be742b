//! Kafka Connect compatibility, for people moving from the KaiwuDB Kafka
//! Connectors: their connector configs converted to topologies (`convert`), the
//! Kafka clients' settings taken from a Connect worker config (`client`), and a
//! Connect worker that runs connectors as topologies (`worker`).

pub mod client;
pub mod convert;
pub mod worker;
