//! Sources: where events enter a topology.

pub mod file;
pub mod kafka;
pub mod kwdb_poll;
mod lines;
pub mod stdin;
