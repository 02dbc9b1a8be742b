//! Transforms: components between sources and sinks.

pub mod batch;
pub mod decode;
pub mod encode;
pub mod schema_infer;
