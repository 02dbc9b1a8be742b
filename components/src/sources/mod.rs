//! Sources: where events enter a topology.

pub mod file;
mod lines;
pub mod stdin;
