//! Transforms: components between sources and sinks.

pub mod decode;
pub mod encode;
pub mod schema_infer;
