//! kwpipe, the agent: topology configuration, the graph, the runtime and telemetry.
//! The components themselves live in the `kwpipe-components` crate (`components/`).
//!
//! From the bottom up: `suggest`, `status`, `telemetry` and `config` know nothing
//! of the others; `graph` checks what `config` parsed and `load` runs the two;
//! `runtime` runs a loaded topology and writes the status board that `admin`
//! serves; `top` reads `admin` over HTTP; `connect` turns Kafka Connect configs
//! into topologies and runs them; `main.rs` wires the commands together.

pub mod admin;
pub mod config;
pub mod connect;
pub mod graph;
pub mod load;
pub mod runtime;
pub mod status;
pub mod suggest;
pub mod telemetry;
pub mod top;
pub mod transcode;
