//! Sinks: where events leave a topology.

pub mod blackhole;
pub mod console;
pub mod file;
pub mod kwdb;
pub mod kafka;
mod lines;
