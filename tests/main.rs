//! kwpipe's integration tests: one binary, one module per area. Tests run the
//! `kwpipe` executable as a separate process against real services.

mod allocator;
mod api;
mod cli;
mod connect;
mod connect_worker;
mod docs;
mod e2e;
mod hostile;
mod kafka;
mod kafka_security;
mod kwdb_poll;
mod kwdb_sink;
mod layers;
mod mistakes;
mod multihop;
mod support;
mod transcode;
