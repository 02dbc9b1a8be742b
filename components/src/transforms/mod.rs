//! Transforms: components between sources and sinks.

pub mod batch;
