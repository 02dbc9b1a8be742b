//! End-to-end acknowledgements.
//!
//! A source makes a [`BatchNotifier`] for what it emits and keeps the matching
//! [`BatchStatusReceiver`]. Each event carries [`EventFinalizers`], one per source
//! batch it came from. A sink sets the status of the finalizers of what it wrote;
//! when the last finalizer of a batch is dropped, the notifier sends the merged
//! status to the source. Forking an event for fan-out gives the copy finalizers of
//! its own, so a batch is Delivered only when every consumer reported Delivered.
//!
//! A finalizer dropped without a status reports `Failed`: an event lost to a panic,
//! a forced shutdown or a bug must block the source's progress, never advance it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use smallvec::SmallVec;
use tokio::sync::oneshot;

pub mod ordered;

pub use ordered::{Acked, OrderedAcks, Ticket};

/// What became of an event. Merging keeps the worst: Failed > Rejected > Delivered.
///
/// A record sent to a `dropped` output is not Rejected: the component that
/// rejected it settles it Delivered, and the dead-letter copy gets the status of
/// its own write (a failed dead-letter write is Failed). Rejected means nobody
/// took the record: it was only logged and counted, and the source's
/// [`RejectPolicy`] decides whether its position may move past it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum EventStatus {
    /// Durably written.
    Delivered = 1,
    /// Permanently bad and taken by nobody (logged and counted only); retrying the
    /// same record cannot help. A source moves past it only under
    /// [`RejectPolicy::Skip`].
    Rejected = 2,
    /// Could not be written; the source must not move past it.
    Failed = 3,
}

impl EventStatus {
    fn from_u8(v: u8) -> Option<EventStatus> {
        match v {
            1 => Some(EventStatus::Delivered),
            2 => Some(EventStatus::Rejected),
            3 => Some(EventStatus::Failed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Delivered => "delivered",
            EventStatus::Rejected => "rejected",
            EventStatus::Failed => "failed",
        }
    }
}

/// What a source does with a record that a component downstream rejected and no
/// `dropped` output took (status [`EventStatus::Rejected`]). One rule for every
/// source, applied where positions move, so no rejecting component needs a policy
/// of its own: it reports Rejected, and the source that owns the position decides.
/// `kwpipe connect` sets it from Connect's `errors.tolerance`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RejectPolicy {
    /// Log, count and move on (`errors.tolerance = all`).
    #[default]
    Skip,
    /// Hold the position at the record, as for a failed write: the source does
    /// not commit past it and delivers it again after a backoff, so nothing after
    /// it in the same partition or table moves until it is written (the table was
    /// fixed, the value fits) or the policy changes (`errors.tolerance = none`).
    Stop,
}

impl RejectPolicy {
    /// Whether a source may move its position past an event that ended so.
    pub fn passes(self, status: EventStatus) -> bool {
        match status {
            EventStatus::Delivered => true,
            EventStatus::Rejected => self == RejectPolicy::Skip,
            EventStatus::Failed => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RejectPolicy::Skip => "skip",
            RejectPolicy::Stop => "stop",
        }
    }
}

const UNSET: u8 = 0;

fn merge_into(cell: &AtomicU8, status: EventStatus) {
    cell.fetch_max(status as u8, Ordering::AcqRel);
}

struct Notifier {
    status: AtomicU8,
    tx: Mutex<Option<oneshot::Sender<EventStatus>>>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        // No finalizer ever existed: nothing was emitted, so nothing can be lost.
        let status = EventStatus::from_u8(self.status.load(Ordering::Acquire))
            .unwrap_or(EventStatus::Delivered);
        let tx = self.tx.get_mut().ok().and_then(|tx| tx.take());
        if let Some(tx) = tx {
            let _ = tx.send(status);
        }
    }
}

/// The source's handle on one batch of emitted events.
#[derive(Clone)]
pub struct BatchNotifier(Arc<Notifier>);

impl BatchNotifier {
    pub fn new_with_receiver() -> (BatchNotifier, BatchStatusReceiver) {
        let (tx, rx) = oneshot::channel();
        let notifier = Notifier {
            status: AtomicU8::new(UNSET),
            tx: Mutex::new(Some(tx)),
        };
        (BatchNotifier(Arc::new(notifier)), BatchStatusReceiver(rx))
    }

    /// A finalizer to attach to an event of this batch.
    pub fn finalizer(&self) -> EventFinalizers {
        EventFinalizers::new(EventFinalizer::new(self.clone()))
    }

    /// Finalizers for a new event plus the receiver that resolves when it is done.
    pub fn pair() -> (EventFinalizers, BatchStatusReceiver) {
        let (notifier, rx) = BatchNotifier::new_with_receiver();
        (notifier.finalizer(), rx)
    }
}

impl std::fmt::Debug for BatchNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchNotifier")
            .field("status", &self.0.status.load(Ordering::Relaxed))
            .finish()
    }
}

/// Resolves to the merged status once every event of the batch is finished.
#[derive(Debug)]
pub struct BatchStatusReceiver(oneshot::Receiver<EventStatus>);

impl BatchStatusReceiver {
    /// The status if it is already known.
    pub fn try_recv(&mut self) -> Option<EventStatus> {
        match self.0.try_recv() {
            Ok(s) => Some(s),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(EventStatus::Failed),
        }
    }
}

impl Future for BatchStatusReceiver {
    type Output = EventStatus;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<EventStatus> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(EventStatus::Failed))
    }
}

/// One event's link to one source batch.
pub struct EventFinalizer {
    status: AtomicU8,
    notifier: BatchNotifier,
}

impl EventFinalizer {
    pub fn new(notifier: BatchNotifier) -> Self {
        EventFinalizer {
            status: AtomicU8::new(UNSET),
            notifier,
        }
    }

    pub fn update_status(&self, status: EventStatus) {
        merge_into(&self.status, status);
    }

    fn fork(&self) -> EventFinalizer {
        EventFinalizer::new(self.notifier.clone())
    }

    /// Takes over `other`, a finalizer of the same source batch: a status it
    /// already has carries over, and it is released without counting as lost.
    fn absorb(&self, other: EventFinalizer) {
        if let Some(status) = EventStatus::from_u8(other.status.load(Ordering::Acquire)) {
            self.update_status(status);
        }
        // The lowest status: merged into the batch's, it changes nothing.
        other.update_status(EventStatus::Delivered);
    }
}

impl Drop for EventFinalizer {
    fn drop(&mut self) {
        let status = EventStatus::from_u8(self.status.load(Ordering::Acquire))
            .unwrap_or(EventStatus::Failed);
        merge_into(&self.notifier.0.status, status);
    }
}

impl std::fmt::Debug for EventFinalizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFinalizer")
            .field("status", &self.status.load(Ordering::Relaxed))
            .finish()
    }
}

/// The finalizers an event carries: one per source batch it stems from.
#[derive(Debug, Default)]
pub struct EventFinalizers(SmallVec<[EventFinalizer; 1]>);

impl EventFinalizers {
    pub fn new(finalizer: EventFinalizer) -> Self {
        let mut v = SmallVec::new();
        v.push(finalizer);
        EventFinalizers(v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Takes over the finalizers of another event (batching, merging).
    pub fn merge(&mut self, other: EventFinalizers) {
        for f in other.0 {
            match self.0.last() {
                // Consecutive events of one source batch (one-row Kafka messages
                // merged into a batch) need one finalizer, not one each: the batch
                // gets one status, so the one kept stands for both.
                Some(last) if Arc::ptr_eq(&last.notifier.0, &f.notifier.0) => last.absorb(f),
                _ => self.0.push(f),
            }
        }
    }

    pub fn update_status(&self, status: EventStatus) {
        for f in &self.0 {
            f.update_status(status);
        }
    }

    /// Sets the status and releases the finalizers at once.
    pub fn finish(self, status: EventStatus) {
        self.update_status(status);
    }

    /// New finalizers reporting to the same sources (for a copy or a part of the event).
    /// The status of every fork counts towards the source's merged status.
    pub fn fork(&self) -> EventFinalizers {
        EventFinalizers(self.0.iter().map(EventFinalizer::fork).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivered_when_every_copy_is_delivered() {
        let (fin, rx) = BatchNotifier::pair();
        let copy = fin.fork();
        fin.finish(EventStatus::Delivered);
        copy.finish(EventStatus::Delivered);
        assert_eq!(rx.await, EventStatus::Delivered);
    }

    #[tokio::test]
    async fn merged_finalizers_of_one_batch_fold_into_one_and_keep_every_status() {
        let (notifier, rx) = BatchNotifier::new_with_receiver();
        let mut merged = notifier.finalizer();
        for _ in 0..1000 {
            merged.merge(notifier.finalizer());
        }
        assert_eq!(merged.len(), 1);
        let rejected = notifier.finalizer();
        rejected.update_status(EventStatus::Rejected);
        merged.merge(rejected);
        let (other, other_rx) = BatchNotifier::pair();
        merged.merge(other);
        assert_eq!(merged.len(), 2, "another batch keeps its own");
        drop(notifier);
        merged.finish(EventStatus::Delivered);
        assert_eq!(
            rx.await,
            EventStatus::Rejected,
            "the absorbed status counts"
        );
        assert_eq!(other_rx.await, EventStatus::Delivered);

        // Folded finalizers still fail the batch when the merged one is lost.
        let (notifier, rx) = BatchNotifier::new_with_receiver();
        let mut merged = notifier.finalizer();
        merged.merge(notifier.finalizer());
        drop(notifier);
        drop(merged);
        assert_eq!(rx.await, EventStatus::Failed);
    }

    #[tokio::test]
    async fn worst_status_wins_across_fanout() {
        let (fin, rx) = BatchNotifier::pair();
        let a = fin.fork();
        let b = fin.fork();
        fin.finish(EventStatus::Delivered);
        a.finish(EventStatus::Rejected);
        b.finish(EventStatus::Delivered);
        assert_eq!(rx.await, EventStatus::Rejected);
    }

    #[tokio::test]
    async fn dropped_without_status_is_failed() {
        let (fin, rx) = BatchNotifier::pair();
        let copy = fin.fork();
        fin.finish(EventStatus::Delivered);
        drop(copy);
        assert_eq!(rx.await, EventStatus::Failed);
    }

    #[tokio::test]
    async fn resolves_only_after_the_last_finalizer() {
        let (fin, mut rx) = BatchNotifier::pair();
        let copy = fin.fork();
        fin.finish(EventStatus::Delivered);
        assert_eq!(rx.try_recv(), None);
        copy.finish(EventStatus::Delivered);
        assert_eq!(rx.try_recv(), Some(EventStatus::Delivered));
    }

    #[test]
    fn reject_policy_holds_rejects_only_under_stop() {
        use EventStatus::*;
        for status in [Delivered, Rejected, Failed] {
            assert_eq!(RejectPolicy::Skip.passes(status), status != Failed);
            assert_eq!(RejectPolicy::Stop.passes(status), status == Delivered);
        }
        let parsed: RejectPolicy = serde_json::from_str("\"stop\"").unwrap();
        assert_eq!(parsed, RejectPolicy::Stop);
        assert_eq!(RejectPolicy::default(), RejectPolicy::Skip);
    }

    #[tokio::test]
    async fn merged_batches_report_to_each_source() {
        let (a, rx_a) = BatchNotifier::pair();
        let (b, rx_b) = BatchNotifier::pair();
        let mut merged = a;
        merged.merge(b);
        assert_eq!(merged.len(), 2);
        merged.finish(EventStatus::Delivered);
        assert_eq!(rx_a.await, EventStatus::Delivered);
        assert_eq!(rx_b.await, EventStatus::Delivered);
    }
}
