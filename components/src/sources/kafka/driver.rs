//! The source's bookkeeping as a state machine: which partitions each member
//! owns, the chunks in flight per partition, which offsets may be stored, when
//! to seek back for re-delivery, and when a revoke has drained.
//!
//! Pure: no rdkafka, no tokio, no channels; the time comes in as an argument.
//! It answers with what to do (an offset to store, seeks that are due, revokes
//! that are done) and the task does it. That is what makes it testable without
//! a broker.
//!
//! - Offsets: a partition's chunks are registered in order in an
//!   [`OrderedAcks`]; an offset is stored only when every chunk up to it came
//!   back passing the source's [`RejectPolicy`].
//! - A chunk that did not pass holds its partition: it and every later chunk are
//!   discarded, the partition is seeked back to the chunk's first offset after a
//!   backoff, and its epoch moves on so messages fetched before the seek are
//!   dropped.
//! - A partition assigned again is a new *incarnation*: acknowledgements of the
//!   old one change nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::messages::{MemberPartition, PartitionKey};
use crate::ack::{Acked, EventStatus, OrderedAcks, RejectPolicy, Ticket};
use crate::api::Backoff;

const REDELIVERY_MIN: Duration = Duration::from_secs(1);
const REDELIVERY_MAX: Duration = Duration::from_secs(30);

/// The offsets of a chunk (consecutive messages of one partition).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Offsets {
    pub first: i64,
    pub last: i64,
}

/// What a chunk handed on carries back with its status.
#[derive(Clone, Debug)]
pub(super) struct AckTag {
    pub key: MemberPartition,
    pub incarnation: u64,
    pub ticket: Ticket,
}

/// An offset to store (librdkafka commits `offset + 1`, the next to read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Store {
    pub member: usize,
    pub partition: PartitionKey,
    pub offset: i64,
}

/// A seek that is due: re-deliver from `offset` if the partition is still at
/// `from_epoch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Seek {
    pub member: usize,
    pub partition: PartitionKey,
    pub offset: i64,
    pub from_epoch: u64,
}

struct PendingSeek {
    due: Instant,
    offset: i64,
    from_epoch: u64,
}

/// One partition of one member.
struct Part {
    incarnation: u64,
    /// The epoch of messages the driver accepts for this partition.
    epoch: u64,
    chunks: OrderedAcks<Offsets>,
    seek: Option<PendingSeek>,
    backoff: Backoff,
    revoking: bool,
}

/// A revoke waiting for its partitions' chunks; `D` is what tells the member
/// thread it is done (a channel in the task, anything in a test).
struct PendingRevoke<D> {
    /// The partitions and the incarnation of each that is being revoked: a partition
    /// assigned again meanwhile is a new incarnation, and not this revoke's to remove.
    keys: Vec<(MemberPartition, u64)>,
    deadline: Instant,
    done: D,
}

pub(super) struct Driver<D> {
    parts: HashMap<MemberPartition, Part>,
    revokes: Vec<PendingRevoke<D>>,
    next_incarnation: u64,
    on_reject: RejectPolicy,
}

fn redelivery_backoff() -> Backoff {
    Backoff::new(REDELIVERY_MIN, REDELIVERY_MAX)
}

impl<D> Driver<D> {
    pub fn new(on_reject: RejectPolicy) -> Self {
        Driver {
            parts: HashMap::new(),
            revokes: Vec::new(),
            next_incarnation: 0,
            on_reject,
        }
    }

    /// A member was assigned partitions, each at the epoch its thread gave it.
    pub fn assigned(&mut self, member: usize, partitions: Vec<(PartitionKey, u64)>) {
        for (partition, epoch) in partitions {
            self.next_incarnation += 1;
            self.parts.insert(
                MemberPartition { member, partition },
                Part {
                    incarnation: self.next_incarnation,
                    epoch,
                    chunks: OrderedAcks::new(self.on_reject),
                    seek: None,
                    backoff: redelivery_backoff(),
                    revoking: false,
                },
            );
        }
    }

    /// Registers a polled chunk fetched at `epoch`: the tag to hand back with its
    /// status, or None when the chunk is stale (fetched before a seek or a
    /// rebalance, or for a partition being revoked) and must be dropped unsent.
    pub fn accept(
        &mut self,
        member: usize,
        partition: PartitionKey,
        epoch: u64,
        offsets: Offsets,
    ) -> Option<AckTag> {
        let key = MemberPartition { member, partition };
        let part = self
            .parts
            .get_mut(&key)
            .filter(|p| p.epoch == epoch && !p.revoking)?;
        let ticket = part.chunks.push(offsets);
        Some(AckTag {
            incarnation: part.incarnation,
            key,
            ticket,
        })
    }

    /// A chunk's status came back at `now`: the offset to store, if the committed
    /// prefix moved.
    pub fn acked(&mut self, tag: &AckTag, status: EventStatus, now: Instant) -> Option<Store> {
        let part = self
            .parts
            .get_mut(&tag.key)
            .filter(|p| p.incarnation == tag.incarnation)?;
        let PartitionKey { topic, partition } = &tag.key.partition;
        match part.chunks.ack(tag.ticket, status) {
            // Discarded by an earlier failure, or already stored.
            Acked::Unknown => None,
            Acked::Held(status) => {
                let first = part
                    .chunks
                    .discard_from(tag.ticket)
                    .expect("a held chunk is tracked")
                    .first;
                let delay = part.backoff.next_delay();
                match &mut part.seek {
                    Some(seek) => seek.offset = seek.offset.min(first),
                    None => {
                        part.seek = Some(PendingSeek {
                            due: now + delay,
                            offset: first,
                            from_epoch: part.epoch,
                        });
                        part.epoch += 1;
                    }
                }
                if status == EventStatus::Rejected {
                    tracing::error!(
                        %topic, partition, offset = first, retry_in = ?delay,
                        "a message was rejected and on_reject = \"stop\" (Connect: errors.tolerance = none): \
                         its partition is held there and re-delivers from it; fix the cause logged \
                         above, wire the rejecting component's `dropped` output, or set on_reject = \"skip\""
                    );
                } else {
                    tracing::warn!(
                        %topic, partition, offset = first, retry_in = ?delay,
                        "a message was not delivered; its partition is held there and re-delivers from it"
                    );
                }
                None
            }
            Acked::Passed => {
                let last = std::iter::from_fn(|| part.chunks.pop_passed()).last()?;
                part.backoff = redelivery_backoff();
                Some(Store {
                    member: tag.key.member,
                    partition: tag.key.partition.clone(),
                    offset: last.last,
                })
            }
        }
    }

    /// The seeks due at `now`; each is asked for once.
    pub fn due_seeks(&mut self, now: Instant) -> Vec<Seek> {
        let mut due = Vec::new();
        for (key, part) in &mut self.parts {
            if part.seek.as_ref().is_some_and(|s| s.due <= now) {
                let seek = part.seek.take().expect("checked");
                due.push(Seek {
                    member: key.member,
                    partition: key.partition.clone(),
                    offset: seek.offset,
                    from_epoch: seek.from_epoch,
                });
            }
        }
        due
    }

    /// When the next seek is due.
    pub fn next_seek(&self) -> Option<Instant> {
        self.parts
            .values()
            .filter_map(|p| p.seek.as_ref().map(|s| s.due))
            .min()
    }

    /// A member is losing partitions: accept nothing more for them and, once
    /// their chunks are acknowledged or `deadline` passes (see
    /// [`Driver::check_revokes`]), forget them and give back `done`.
    pub fn revoke(
        &mut self,
        member: usize,
        partitions: Vec<PartitionKey>,
        deadline: Instant,
        done: D,
    ) {
        let mut keys = Vec::new();
        for partition in partitions {
            let key = MemberPartition { member, partition };
            if let Some(part) = self.parts.get_mut(&key) {
                part.revoking = true;
                part.seek = None;
                keys.push((key, part.incarnation));
            }
        }
        self.revokes.push(PendingRevoke {
            keys,
            deadline,
            done,
        });
    }

    /// The revokes that finished at `now` (drained, or past their deadline).
    pub fn check_revokes(&mut self, now: Instant) -> Vec<D> {
        let parts = &mut self.parts;
        let mut finished = Vec::new();
        let mut waiting = Vec::new();
        for r in self.revokes.drain(..) {
            let drained = r
                .keys
                .iter()
                .all(|(k, i)| revoked(parts, k, *i).is_none_or(|p| p.chunks.is_empty()));
            if !drained && now < r.deadline {
                waiting.push(r);
                continue;
            }
            if !drained {
                tracing::warn!("drain_timeout passed with events in flight; they will be consumed again by the next owner");
            }
            for (k, i) in &r.keys {
                if revoked(parts, k, *i).is_some() {
                    parts.remove(k);
                }
            }
            finished.push(r.done);
        }
        self.revokes = waiting;
        finished
    }

    pub fn has_revokes(&self) -> bool {
        !self.revokes.is_empty()
    }

    /// Forgets pending revokes without answering them (shutdown: the member
    /// threads stop waiting when the answer's sender is dropped).
    pub fn drop_revokes(&mut self) {
        self.revokes.clear();
    }

    /// Chunks handed on and not yet acknowledged (or discarded), over every partition.
    pub fn in_flight_chunks(&self) -> usize {
        self.parts.values().map(|p| p.chunks.len()).sum()
    }
}

/// The part a revoke is about: the same partition in the same incarnation.
fn revoked<'a>(
    parts: &'a HashMap<MemberPartition, Part>,
    key: &MemberPartition,
    incarnation: u64,
) -> Option<&'a Part> {
    parts.get(key).filter(|p| p.incarnation == incarnation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use EventStatus::*;

    fn key(partition: i32) -> PartitionKey {
        PartitionKey::new("t", partition)
    }

    fn chunk(first: i64, last: i64) -> Offsets {
        Offsets { first, last }
    }

    fn store(partition: i32, offset: i64) -> Option<Store> {
        Some(Store {
            member: 0,
            partition: key(partition),
            offset,
        })
    }

    /// A driver with partition 0 of member 0 assigned at epoch 1.
    fn driver(on_reject: RejectPolicy) -> Driver<u32> {
        let mut d = Driver::new(on_reject);
        d.assigned(0, vec![(key(0), 1)]);
        d
    }

    #[test]
    fn only_assigned_partitions_at_their_epoch_are_accepted() {
        let mut d = driver(RejectPolicy::Skip);
        assert!(d.accept(0, key(0), 1, chunk(0, 9)).is_some());
        assert!(d.accept(0, key(0), 0, chunk(10, 19)).is_none(), "old epoch");
        assert!(
            d.accept(0, key(1), 1, chunk(0, 9)).is_none(),
            "not assigned"
        );
        assert!(
            d.accept(1, key(0), 1, chunk(0, 9)).is_none(),
            "another member's"
        );
        assert_eq!(d.in_flight_chunks(), 1);
    }

    #[test]
    fn out_of_order_acks_store_only_the_contiguous_prefix() {
        let mut d = driver(RejectPolicy::Skip);
        let now = Instant::now();
        let a = d.accept(0, key(0), 1, chunk(0, 9)).unwrap();
        let b = d.accept(0, key(0), 1, chunk(10, 19)).unwrap();
        let c = d.accept(0, key(0), 1, chunk(20, 29)).unwrap();
        assert_eq!(d.acked(&c, Delivered, now), None, "a and b are in flight");
        assert_eq!(d.acked(&a, Delivered, now), store(0, 9));
        assert_eq!(
            d.acked(&b, Rejected, now),
            store(0, 29),
            "skip passes rejects"
        );
        assert_eq!(d.in_flight_chunks(), 0);
    }

    #[test]
    fn a_failed_chunk_holds_its_partition_and_seeks_back() {
        let mut d = driver(RejectPolicy::Skip);
        let now = Instant::now();
        let a = d.accept(0, key(0), 1, chunk(0, 9)).unwrap();
        let b = d.accept(0, key(0), 1, chunk(10, 19)).unwrap();
        let c = d.accept(0, key(0), 1, chunk(20, 29)).unwrap();
        assert_eq!(d.acked(&b, Failed, now), None);
        assert_eq!(
            d.acked(&c, Delivered, now),
            None,
            "discarded with the failed one"
        );
        assert_eq!(d.next_seek(), Some(now + REDELIVERY_MIN));
        assert!(
            d.accept(0, key(0), 1, chunk(30, 39)).is_none(),
            "fetched before the seek: stale"
        );
        assert!(d.due_seeks(now).is_empty(), "not due yet");
        assert_eq!(
            d.due_seeks(now + REDELIVERY_MIN),
            vec![Seek {
                member: 0,
                partition: key(0),
                offset: 10,
                from_epoch: 1
            }]
        );
        assert_eq!(d.next_seek(), None, "asked for once");
        // The chunk before the failed one still stores its offset.
        assert_eq!(d.acked(&a, Delivered, now), store(0, 9));
        // Re-delivered at the new epoch, it stores past the failure.
        let again = d.accept(0, key(0), 2, chunk(10, 29)).unwrap();
        assert_eq!(d.acked(&again, Delivered, now), store(0, 29));
    }

    #[test]
    fn an_earlier_failure_while_a_seek_is_pending_seeks_further_back() {
        let mut d = driver(RejectPolicy::Skip);
        let now = Instant::now();
        let a = d.accept(0, key(0), 1, chunk(0, 9)).unwrap();
        let b = d.accept(0, key(0), 1, chunk(10, 19)).unwrap();
        d.acked(&b, Failed, now);
        d.acked(&a, Failed, now);
        let seeks = d.due_seeks(now + REDELIVERY_MAX);
        assert_eq!(seeks.len(), 1);
        assert_eq!((seeks[0].offset, seeks[0].from_epoch), (0, 1));
    }

    /// Issue 18, item 2: a message rejected downstream with no `dropped` output
    /// taking it holds its partition under `on_reject = "stop"` (Connect's
    /// `errors.tolerance = none`), as a failed one does: no offset is stored
    /// past it and it is delivered again.
    #[test]
    fn a_rejected_message_holds_its_partition_under_stop() {
        let mut d = driver(RejectPolicy::Stop);
        let now = Instant::now();
        let tag = d.accept(0, key(0), 1, chunk(10, 10)).unwrap();
        assert_eq!(d.acked(&tag, Rejected, now), None);
        assert_eq!(d.in_flight_chunks(), 0, "nothing is left to store");
        let seeks = d.due_seeks(now + REDELIVERY_MIN);
        assert_eq!(seeks.iter().map(|s| s.offset).collect::<Vec<_>>(), [10]);
    }

    #[test]
    fn a_revoke_waits_for_in_flight_acks() {
        let mut d = driver(RejectPolicy::Skip);
        let now = Instant::now();
        let tag = d.accept(0, key(0), 1, chunk(0, 9)).unwrap();
        d.revoke(0, vec![key(0)], now + Duration::from_secs(10), 7);
        assert!(d.check_revokes(now).is_empty(), "a chunk is in flight");
        assert!(
            d.accept(0, key(0), 1, chunk(10, 19)).is_none(),
            "nothing more is taken while revoking"
        );
        // Its ack still stores: the revoking member commits it.
        assert_eq!(d.acked(&tag, Delivered, now), store(0, 9));
        assert_eq!(d.check_revokes(now), vec![7]);
        assert!(!d.has_revokes());
        assert!(
            d.accept(0, key(0), 1, chunk(10, 19)).is_none(),
            "the partition is gone"
        );
    }

    #[test]
    fn a_revoke_gives_up_at_its_deadline() {
        let mut d = driver(RejectPolicy::Skip);
        let now = Instant::now();
        let tag = d.accept(0, key(0), 1, chunk(0, 9)).unwrap();
        let deadline = now + Duration::from_secs(10);
        d.revoke(0, vec![key(0)], deadline, 7);
        assert!(d
            .check_revokes(deadline - Duration::from_millis(1))
            .is_empty());
        assert_eq!(d.check_revokes(deadline), vec![7]);
        assert_eq!(d.in_flight_chunks(), 0, "the partition is forgotten");
        assert_eq!(
            d.acked(&tag, Delivered, now),
            None,
            "a late ack stores nothing"
        );
    }

    #[test]
    fn a_revoke_of_nothing_owned_finishes_at_once() {
        let mut d = driver(RejectPolicy::Skip);
        let now = Instant::now();
        d.revoke(0, vec![key(5)], now + Duration::from_secs(10), 1);
        assert_eq!(d.check_revokes(now), vec![1]);
    }

    /// A partition revoked and assigned again before the revoke finished (the
    /// rebalance callback gave up waiting for a busy driver) belongs to its new
    /// owner: finishing the old revoke must not remove it, or every message
    /// fetched for it afterwards would be dropped as stale.
    #[test]
    fn a_finished_revoke_leaves_a_reassigned_partition_alone() {
        let mut d = driver(RejectPolicy::Skip);
        let now = Instant::now();
        let old = d
            .accept(0, key(0), 1, chunk(10, 10))
            .expect("current epoch");
        d.revoke(0, vec![key(0)], now + Duration::from_secs(60), 7);
        assert!(
            d.check_revokes(now).is_empty(),
            "a chunk is still in flight"
        );
        d.assigned(0, vec![(key(0), 2)]);
        assert_eq!(d.check_revokes(now), vec![7], "the old incarnation is gone");
        let new = d.accept(0, key(0), 2, chunk(10, 10));
        assert!(new.is_some(), "the new owner's messages are taken");
        // An ack of the old incarnation changes nothing for the new one.
        assert_eq!(d.acked(&old, Delivered, now), None);
        assert_eq!(d.acked(&old, Failed, now), None);
        assert_eq!(d.next_seek(), None);
        assert_eq!(d.acked(&new.unwrap(), Delivered, now), store(0, 10));
    }

    #[test]
    fn acks_of_an_earlier_incarnation_are_ignored() {
        let mut d = driver(RejectPolicy::Skip);
        let now = Instant::now();
        let old = d.accept(0, key(0), 1, chunk(0, 9)).unwrap();
        // Assigned again (a rebalance that gave it back): a new incarnation.
        d.assigned(0, vec![(key(0), 2)]);
        assert_eq!(d.in_flight_chunks(), 0);
        assert_eq!(d.acked(&old, Delivered, now), None, "stores nothing");
        assert_eq!(d.acked(&old, Failed, now), None, "seeks nowhere");
        assert_eq!(d.next_seek(), None);
        let new = d.accept(0, key(0), 2, chunk(0, 9)).unwrap();
        assert_eq!(d.acked(&new, Delivered, now), store(0, 9));
    }

    #[test]
    fn partitions_of_members_are_tracked_apart() {
        let mut d: Driver<u32> = Driver::new(RejectPolicy::Skip);
        d.assigned(0, vec![(key(0), 1)]);
        d.assigned(1, vec![(key(1), 1)]);
        let now = Instant::now();
        let a = d.accept(0, key(0), 1, chunk(0, 0)).unwrap();
        let b = d.accept(1, key(1), 1, chunk(5, 5)).unwrap();
        assert_eq!(
            d.acked(&b, Delivered, now),
            Some(Store {
                member: 1,
                partition: key(1),
                offset: 5
            })
        );
        assert_eq!(d.acked(&a, Delivered, now), store(0, 0));
    }

    proptest! {
        /// Whatever the statuses and the order their acks come in, the offsets
        /// stored only grow, end at the last chunk of the passed prefix, and the
        /// partition seeks back to the first chunk that did not pass.
        #[test]
        fn stored_offsets_never_pass_an_unfinished_or_held_chunk(
            statuses in prop::collection::vec(
                prop_oneof![
                    Just(Delivered),
                    Just(Rejected),
                    Just(Failed),
                ],
                1..20,
            ),
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
            stop in any::<bool>(),
        ) {
            let policy = if stop { RejectPolicy::Stop } else { RejectPolicy::Skip };
            let mut d = driver(policy);
            let now = Instant::now();
            let tags: Vec<AckTag> = (0..statuses.len() as i64)
                .map(|i| d.accept(0, key(0), 1, chunk(10 * i, 10 * i + 9)).unwrap())
                .collect();
            let mut todo: Vec<usize> = (0..statuses.len()).collect();
            let mut picks = order.iter();
            let mut stored: Vec<i64> = Vec::new();
            while !todo.is_empty() {
                let i = match picks.next() {
                    Some(pick) => todo.remove(pick.index(todo.len())),
                    None => todo.remove(0),
                };
                if let Some(s) = d.acked(&tags[i], statuses[i], now) {
                    stored.push(s.offset);
                }
            }
            let prefix = statuses.iter().take_while(|s| policy.passes(**s)).count() as i64;
            prop_assert!(stored.windows(2).all(|w| w[0] < w[1]), "{:?}", stored);
            prop_assert_eq!(stored.last().copied(), (prefix > 0).then(|| 10 * prefix - 1));
            let seeks: Vec<i64> = d.due_seeks(now + REDELIVERY_MAX).iter().map(|s| s.offset).collect();
            if prefix < statuses.len() as i64 {
                prop_assert_eq!(seeks, vec![10 * prefix]);
            } else {
                prop_assert!(seeks.is_empty());
            }
            prop_assert_eq!(d.in_flight_chunks(), 0);
        }
    }
}
