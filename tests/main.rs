//! The integration test binary: one module per area, against real services.

mod kwdb_sink;
mod support;
