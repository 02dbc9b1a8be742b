//! Sinks: where events leave a topology.

pub mod blackhole;
pub mod console;
pub mod file;
pub mod kafka;
pub mod kwdb;
mod lines;
