//! Transforms: components between sources and sinks.
