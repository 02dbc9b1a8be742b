//! kwpipe, the agent: topology configuration, the graph, the runtime and telemetry.
//! The components themselves live in the `components` crate.

pub mod api;
pub mod config;
pub mod connect;
pub mod graph;
pub mod runtime;
pub mod telemetry;
pub mod top;
pub mod transcode;
