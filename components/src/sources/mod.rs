//! Sources: where events enter a topology.

pub mod file;
pub mod kafka;
pub mod kwdb_poll;
mod lines;
pub mod stdin;

/// The longest line the line sources (`file`, `stdin`) take unless told: 16 MiB.
pub(crate) fn default_max_line_bytes() -> usize {
    16 * 1024 * 1024
}
