//! Ordered acknowledgement bookkeeping: the one place where a source's position
//! moves.
//!
//! A source hands on entries (Kafka chunks of one partition, kwdb-poll pages, a
//! lines source's buffer fills) in the order of its input and registers each
//! here with [`OrderedAcks::push`]. Their statuses come back in any order (sinks
//! run in parallel, fan-out copies finish at different times). The committable
//! position is that of the last entry of the longest prefix whose entries all
//! passed the source's [`RejectPolicy`]: it never moves over an entry that is
//! still in flight, failed, or rejected under `stop`. This is what Vector's
//! `finalizer.rs` does for ordered sources, and the opposite of Vector issue
//! #24215 (later acks moving the offset past a failed message).
//!
//! Fail closed: an entry that did not pass is *held*. It stays at its place and
//! blocks everything after it until the source decides what to do (re-deliver
//! from it with [`OrderedAcks::discard_from`], or give up with
//! [`OrderedAcks::clear`]). A second status for the same entry can only make it
//! worse, never better.
//!
//! Pure bookkeeping: no I/O, no clock, no channels. The caller keeps whatever
//! it awaits (a [`super::BatchStatusReceiver`]) beside the [`Ticket`].

use std::collections::VecDeque;

use super::{EventStatus, RejectPolicy};

/// Names one registered entry; handed back with its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

/// What an acknowledgement did to its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acked {
    /// The entry passed; [`OrderedAcks::pop_passed`] gives what became committable.
    Passed,
    /// The entry did not pass: it is held, and the position stops before it.
    /// The status says why (Failed, or Rejected under `stop`).
    Held(EventStatus),
    /// No such entry (any more): it was discarded after an earlier hold, or it
    /// already left as committed. Nothing changed.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    InFlight,
    Passed,
    Held(EventStatus),
}

#[derive(Debug)]
struct Entry<P> {
    ticket: Ticket,
    state: State,
    position: P,
}

/// Entries in the order they were handed on, each with its position `P`.
#[derive(Debug)]
pub struct OrderedAcks<P> {
    policy: RejectPolicy,
    next: u64,
    /// Ordered by ticket (tickets only grow), so a ticket is found by binary search.
    entries: VecDeque<Entry<P>>,
}

impl<P> OrderedAcks<P> {
    pub fn new(policy: RejectPolicy) -> Self {
        OrderedAcks {
            policy,
            next: 0,
            entries: VecDeque::new(),
        }
    }

    /// Registers the next entry, after every one registered before.
    pub fn push(&mut self, position: P) -> Ticket {
        let ticket = Ticket(self.next);
        self.next += 1;
        self.entries.push_back(Entry {
            ticket,
            state: State::InFlight,
            position,
        });
        ticket
    }

    fn index(&self, ticket: Ticket) -> Option<usize> {
        self.entries
            .binary_search_by_key(&ticket, |e| e.ticket)
            .ok()
    }

    /// Records an entry's status.
    pub fn ack(&mut self, ticket: Ticket, status: EventStatus) -> Acked {
        let policy = self.policy;
        let Some(index) = self.index(ticket) else {
            return Acked::Unknown;
        };
        let entry = &mut self.entries[index];
        entry.state = match entry.state {
            // Once held, always held: a later "delivered" cannot undo a failure.
            State::Held(held) => State::Held(held.max(status)),
            _ if policy.passes(status) => State::Passed,
            _ => State::Held(status),
        };
        match entry.state {
            State::Held(s) => Acked::Held(s),
            _ => Acked::Passed,
        }
    }

    /// The oldest entry, when it and so everything before it passed: the position
    /// may move to it. Call until None to take the whole committable prefix.
    pub fn pop_passed(&mut self) -> Option<P> {
        if self.entries.front()?.state != State::Passed {
            return None;
        }
        self.entries.pop_front().map(|e| e.position)
    }

    /// Forgets `ticket`'s entry and every one after it (they will be delivered
    /// again from it), giving back its position. Entries before it stay.
    pub fn discard_from(&mut self, ticket: Ticket) -> Option<P> {
        let index = self.index(ticket)?;
        self.entries.truncate(index + 1);
        self.entries.pop_back().map(|e| e.position)
    }

    /// Forgets every entry (the source reads again from its committed position).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Entries registered and not yet committed or discarded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries that did not pass and still block the position.
    pub fn held(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.state, State::Held(_)))
            .count()
    }

    /// The positions not yet committed or discarded, oldest first.
    pub fn positions(&self) -> impl Iterator<Item = &P> {
        self.entries.iter().map(|e| &e.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use EventStatus::*;

    fn drain(acks: &mut OrderedAcks<u32>) -> Vec<u32> {
        std::iter::from_fn(|| acks.pop_passed()).collect()
    }

    #[test]
    fn in_order_acks_commit_each_entry() {
        let mut acks = OrderedAcks::new(RejectPolicy::Skip);
        let a = acks.push(1);
        let b = acks.push(2);
        assert_eq!(acks.ack(a, Delivered), Acked::Passed);
        assert_eq!(drain(&mut acks), [1]);
        assert_eq!(acks.ack(b, Rejected), Acked::Passed, "skip passes rejects");
        assert_eq!(drain(&mut acks), [2]);
        assert!(acks.is_empty());
        assert_eq!(acks.ack(a, Delivered), Acked::Unknown, "already committed");
    }

    #[test]
    fn out_of_order_acks_commit_only_the_contiguous_prefix() {
        let mut acks = OrderedAcks::new(RejectPolicy::Skip);
        let t: Vec<Ticket> = (1..=4).map(|p| acks.push(p)).collect();
        acks.ack(t[1], Delivered);
        acks.ack(t[3], Delivered);
        assert_eq!(
            drain(&mut acks),
            Vec::<u32>::new(),
            "the first is in flight"
        );
        acks.ack(t[0], Delivered);
        assert_eq!(drain(&mut acks), [1, 2], "the third is in flight");
        acks.ack(t[2], Delivered);
        assert_eq!(drain(&mut acks), [3, 4]);
    }

    #[test]
    fn a_held_entry_blocks_until_discarded() {
        let mut acks = OrderedAcks::new(RejectPolicy::Stop);
        let t: Vec<Ticket> = (1..=4).map(|p| acks.push(p)).collect();
        acks.ack(t[0], Delivered);
        assert_eq!(acks.ack(t[1], Rejected), Acked::Held(Rejected));
        assert_eq!(acks.ack(t[2], Delivered), Acked::Passed);
        assert_eq!(drain(&mut acks), [1]);
        assert_eq!(drain(&mut acks), Vec::<u32>::new());
        assert_eq!(acks.held(), 1);
        // A later Delivered cannot undo the hold.
        assert_eq!(acks.ack(t[1], Delivered), Acked::Held(Rejected));
        assert_eq!(acks.discard_from(t[1]), Some(2));
        assert!(acks.is_empty(), "everything after the held entry went too");
        assert_eq!(acks.ack(t[3], Delivered), Acked::Unknown);
        // New entries after a discard commit normally.
        let n = acks.push(5);
        acks.ack(n, Delivered);
        assert_eq!(drain(&mut acks), [5]);
    }

    #[test]
    fn failed_never_passes() {
        for policy in [RejectPolicy::Skip, RejectPolicy::Stop] {
            let mut acks = OrderedAcks::new(policy);
            let a = acks.push(1);
            assert_eq!(acks.ack(a, Failed), Acked::Held(Failed));
            assert_eq!(acks.pop_passed(), None);
        }
    }

    proptest! {
        /// Whatever the order and statuses of the acks, the committed positions are
        /// exactly the prefix of entries before the first one that did not pass,
        /// in order, and never one that is in flight or held.
        #[test]
        fn the_position_never_passes_an_unfinished_or_held_entry(
            statuses in prop::collection::vec(
                prop::option::of(prop_oneof![Just(Delivered), Just(Rejected), Just(Failed)]),
                0..40,
            ),
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
            stop in any::<bool>(),
        ) {
            let policy = if stop { RejectPolicy::Stop } else { RejectPolicy::Skip };
            let mut acks = OrderedAcks::new(policy);
            let tickets: Vec<Ticket> = (0..statuses.len() as u32).map(|p| acks.push(p)).collect();
            // Ack the entries that have a status, in a shuffled order.
            let mut todo: Vec<usize> = (0..statuses.len()).filter(|i| statuses[*i].is_some()).collect();
            let mut committed = Vec::new();
            for pick in &order {
                if todo.is_empty() {
                    break;
                }
                let i = todo.remove(pick.index(todo.len()));
                acks.ack(tickets[i], statuses[i].unwrap());
                committed.extend(drain(&mut acks));
            }
            for i in todo {
                acks.ack(tickets[i], statuses[i].unwrap());
                committed.extend(drain(&mut acks));
            }
            let prefix = statuses
                .iter()
                .take_while(|s| s.is_some_and(|s| policy.passes(s)))
                .count() as u32;
            prop_assert_eq!(committed, (0..prefix).collect::<Vec<_>>());
            prop_assert_eq!(acks.len(), statuses.len() - prefix as usize);
        }
    }
}
