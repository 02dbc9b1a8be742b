//! Batches whose table is missing and may not be created yet: they wait aside,
//! per table and in order, while the worker goes on with other tables, and are
//! tried again with the backoff of an outage.

use std::collections::VecDeque;

use crate::ack::EventStatus;
use crate::api::Backoff;
use crate::event::RowBatch;

/// Batches waiting for their table to be created, per table in arrival order,
/// with the backoff of their retries (as for an outage).
pub(super) struct Parked {
    tables: Vec<(String, VecDeque<RowBatch>)>,
    backoff: Backoff,
    pub next_try: tokio::time::Instant,
    pub tries: u32,
}

impl Parked {
    pub fn new(backoff: Backoff) -> Self {
        Parked {
            tables: Vec::new(),
            backoff,
            next_try: tokio::time::Instant::now(),
            tries: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    pub fn due(&self) -> bool {
        !self.is_empty() && tokio::time::Instant::now() >= self.next_try
    }

    pub fn holds(&self, table: &str) -> bool {
        self.tables.iter().any(|(t, _)| t == table)
    }

    pub fn tables(&self) -> Vec<String> {
        self.tables.iter().map(|(t, _)| t.clone()).collect()
    }

    fn queue(&mut self, table: &str) -> &mut VecDeque<RowBatch> {
        if !self.holds(table) {
            if self.tables.is_empty() {
                self.next_try = tokio::time::Instant::now() + self.backoff.next_delay();
            }
            self.tables.push((table.to_string(), VecDeque::new()));
        }
        let i = self
            .tables
            .iter()
            .position(|(t, _)| t == table)
            .expect("added");
        &mut self.tables[i].1
    }

    /// After the batches of its table already waiting.
    pub fn push(&mut self, batch: RowBatch) {
        let table = batch.target.table.clone();
        self.queue(&table).push_back(batch);
    }

    /// Before them (it came out first).
    pub fn push_front(&mut self, batch: RowBatch) {
        let table = batch.target.table.clone();
        self.queue(&table).push_front(batch);
    }

    /// The oldest batch of `table`; a table left with none is no longer parked.
    pub fn pop(&mut self, table: &str) -> Option<RowBatch> {
        let i = self.tables.iter().position(|(t, _)| t == table)?;
        let b = self.tables[i].1.pop_front();
        if self.tables[i].1.is_empty() {
            self.tables.remove(i);
        }
        b
    }

    /// Every table landed: the next one to go missing starts the backoff afresh.
    pub fn reset(&mut self) {
        self.backoff.reset();
        self.tries = 0;
    }

    pub fn wait_more(&mut self) -> std::time::Duration {
        self.tries += 1;
        let delay = self.backoff.next_delay();
        self.next_try = tokio::time::Instant::now() + delay;
        delay
    }

    /// The sink stops: the waiting rows are not written, so not acknowledged;
    /// their source reads them again after a restart.
    pub fn give_up(&mut self) {
        for (_, q) in self.tables.drain(..) {
            for b in q {
                b.finalizers.finish(EventStatus::Failed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::event::{TableKind, TableSchema, Target};

    fn batch(table: &str, n: usize) -> RowBatch {
        RowBatch {
            target: Target {
                database: None,
                table: table.into(),
            },
            schema: Arc::new(TableSchema::new(
                TableKind::Relational,
                Vec::new(),
                Vec::new(),
            )),
            rows: vec![Vec::new(); n],
            meta: Default::default(),
            finalizers: Default::default(),
        }
    }

    #[test]
    fn batches_wait_per_table_in_order() {
        let mut p = Parked::new(Backoff::new(
            Duration::from_secs(3600),
            Duration::from_secs(7200),
        ));
        assert!(p.is_empty() && !p.due());
        p.push(batch("a", 1));
        p.push(batch("b", 1));
        p.push(batch("a", 2));
        // The first one out is tried first and goes back in front.
        p.push_front(batch("a", 3));
        assert!(p.holds("a") && p.holds("b") && !p.holds("c"));
        assert_eq!(p.tables(), ["a", "b"]);
        let sizes: Vec<usize> = std::iter::from_fn(|| p.pop("a"))
            .map(|b| b.rows.len())
            .collect();
        assert_eq!(sizes, [3, 1, 2]);
        assert!(
            !p.holds("a"),
            "a table left with nothing is no longer parked"
        );
        assert!(!p.due(), "waits a first backoff");
        let mut p = Parked::new(Backoff::new(Duration::ZERO, Duration::ZERO));
        p.push(batch("a", 1));
        assert!(p.due());
    }

    #[test]
    fn waits_grow_until_every_table_lands() {
        let mut p = Parked::new(Backoff::new(Duration::from_secs(1), Duration::from_secs(4)));
        p.push(batch("a", 1));
        assert_eq!(p.wait_more(), Duration::from_secs(2));
        assert_eq!(p.wait_more(), Duration::from_secs(4));
        assert_eq!(p.tries, 2);
        p.pop("a");
        p.reset();
        assert_eq!(p.tries, 0);
        assert_eq!(p.wait_more(), Duration::from_secs(1));
    }
}
