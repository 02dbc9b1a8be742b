//! kwpipe's integration tests: one binary, one module per area.

#[path = "support/broker.rs"]
mod broker;
mod kafka;
