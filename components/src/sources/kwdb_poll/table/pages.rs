//! The pages (batches) of a table handed on and not yet acknowledged, and how
//! their statuses move the table's committed position: through the shared
//! ordered bookkeeping ([`OrderedAcks`]), so the checkpoint never passes a page
//! that is in flight, failed, or rejected under `on_reject = "stop"`.

use std::collections::VecDeque;

use super::super::query::Position;
use crate::ack::{
    Acked, BatchNotifier, BatchStatusReceiver, EventStatus, OrderedAcks, RejectPolicy, Ticket,
};

/// A page handed on: where the table is read up to after it, and its rows.
pub(super) struct Page {
    pub after: Position,
    pub rows: u64,
}

/// What settling the statuses that came back did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Settled {
    /// Pages whose acknowledgement moved the committed position.
    pub moved: usize,
    /// Set when a page did not pass: every page in flight was forgotten and the
    /// table must be read again from the committed position.
    pub held: Option<EventStatus>,
}

/// The pages in flight, oldest first, and the committed position behind them.
pub(super) struct Pages {
    order: OrderedAcks<Page>,
    /// The status each page awaits, in the order handed on. Statuses are taken
    /// only from the front, so pages are settled in the order they were read.
    statuses: VecDeque<(Ticket, BatchStatusReceiver)>,
    /// After the last acknowledged row.
    pub committed: Option<Position>,
    /// Rows acknowledged over the table's life (carried in the checkpoint).
    pub exported: u64,
}

impl Pages {
    pub fn new(policy: RejectPolicy, exported: u64) -> Self {
        Pages {
            order: OrderedAcks::new(policy),
            statuses: VecDeque::new(),
            committed: None,
            exported,
        }
    }

    pub fn push(&mut self, page: Page, status: BatchStatusReceiver) {
        let ticket = self.order.push(page);
        self.statuses.push_back((ticket, status));
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Rows handed on and not yet acknowledged.
    pub fn rows_in_flight(&self) -> u64 {
        self.order.positions().map(|p| p.rows).sum()
    }

    /// Takes the statuses that already came back, oldest first: pages that pass
    /// move the committed position; the first that does not clears every page in
    /// flight (later ones may have been written already; KWDB deduplicates the
    /// replayed rows, PostgreSQL's primary key does the same).
    pub fn settle(&mut self) -> Settled {
        let mut settled = Settled::default();
        while let Some((_, front)) = self.statuses.front_mut() {
            let Some(status) = front.try_recv() else {
                break;
            };
            let (ticket, _) = self.statuses.pop_front().expect("front exists");
            match self.order.ack(ticket, status) {
                Acked::Passed => {
                    while let Some(page) = self.order.pop_passed() {
                        self.exported += page.rows;
                        self.committed = Some(page.after);
                        settled.moved += 1;
                    }
                }
                Acked::Held(status) => {
                    self.order.clear();
                    self.statuses.clear();
                    settled.held = Some(status);
                    return settled;
                }
                // Cannot happen (statuses and pages are cleared together); nothing moves.
                Acked::Unknown => {}
            }
        }
        settled
    }

    /// Resolves when the oldest page in flight has its status, leaving it for
    /// [`Pages::settle`]. Never resolves with nothing in flight. Cancel-safe.
    pub async fn wait_front(&mut self) {
        let Some((_, front)) = self.statuses.front_mut() else {
            return std::future::pending().await;
        };
        let status = (&mut *front).await;
        *front = ready(status);
    }
}

/// A receiver that already holds `status`.
fn ready(status: EventStatus) -> BatchStatusReceiver {
    let (finalizers, rx) = BatchNotifier::pair();
    finalizers.finish(status);
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Value;

    fn page(n: i64) -> Page {
        Page {
            after: Position {
                ts: Value::Int8(n),
                keys: Vec::new(),
            },
            rows: 10,
        }
    }

    fn committed(p: &Pages) -> Option<Value> {
        p.committed.as_ref().map(|c| c.ts.clone())
    }

    #[tokio::test]
    async fn pages_settle_in_order_and_a_held_one_clears_the_rest() {
        let mut pages = Pages::new(RejectPolicy::Stop, 0);
        let mut finishers = Vec::new();
        for n in 1..=4 {
            let (fin, rx) = BatchNotifier::pair();
            pages.push(page(n), rx);
            finishers.push(fin);
        }
        let mut finishers = finishers.into_iter();
        let (a, b, c, d) = (
            finishers.next().unwrap(),
            finishers.next().unwrap(),
            finishers.next().unwrap(),
            finishers.next().unwrap(),
        );
        b.finish(EventStatus::Delivered);
        assert_eq!(pages.settle(), Settled::default(), "the first is in flight");
        a.finish(EventStatus::Delivered);
        pages.wait_front().await;
        assert_eq!(pages.settle().moved, 2);
        assert_eq!(committed(&pages), Some(Value::Int8(2)));
        assert_eq!(pages.exported, 20);
        assert_eq!(pages.rows_in_flight(), 20);
        d.finish(EventStatus::Delivered);
        c.finish(EventStatus::Rejected);
        pages.wait_front().await;
        let settled = pages.settle();
        assert_eq!(settled.held, Some(EventStatus::Rejected));
        assert_eq!(settled.moved, 0);
        assert!(pages.is_empty(), "a held page forgets everything in flight");
        assert_eq!(committed(&pages), Some(Value::Int8(2)));
    }
}
