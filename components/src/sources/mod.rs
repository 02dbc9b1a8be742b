//! Sources: where events enter a topology.

pub mod file;
pub mod kwdb_poll;
pub mod kafka;
mod lines;
pub mod stdin;
