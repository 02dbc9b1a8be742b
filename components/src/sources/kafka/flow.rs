//! Flow control shared by the polling threads and the task: how much is polled
//! and not yet acknowledged, against the source's bounds. Atomics, because the
//! polling threads read it while the task updates it.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bounds on what is polled and not yet acknowledged.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub messages: usize,
    pub bytes: usize,
}

/// What is polled and not yet acknowledged, over every member.
#[derive(Debug, Default)]
pub(super) struct Flow {
    messages: AtomicUsize,
    bytes: AtomicUsize,
}

impl Flow {
    pub(super) fn add(&self, messages: usize, bytes: usize) {
        self.messages.fetch_add(messages, Ordering::AcqRel);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    pub(super) fn sub(&self, messages: usize, bytes: usize) {
        self.messages.fetch_sub(messages, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    pub(super) fn messages(&self) -> usize {
        self.messages.load(Ordering::Acquire)
    }

    /// At or past either bound.
    pub(super) fn full(&self, l: Limits) -> bool {
        self.messages() >= l.messages || self.bytes.load(Ordering::Acquire) >= l.bytes
    }

    /// Messages and bytes left before the bounds.
    pub(super) fn room(&self, l: Limits) -> (usize, usize) {
        (
            l.messages.saturating_sub(self.messages()),
            l.bytes.saturating_sub(self.bytes.load(Ordering::Acquire)),
        )
    }

    /// Down to half of both bounds.
    pub(super) fn drained(&self, l: Limits) -> bool {
        self.messages() <= l.messages / 2 && self.bytes.load(Ordering::Acquire) <= l.bytes / 2
    }
}
