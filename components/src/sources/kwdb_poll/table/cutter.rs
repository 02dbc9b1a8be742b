//! Cutting a statement's rows into batches at positions a read can resume after.

use super::super::query::TableQuery;
use crate::event::{Row, Value};

/// Cuts a statement's rows into batches of `size` rows. A table without keys
/// resumes after a timestamp alone, so its batches end only where the timestamp
/// changes: the trailing rows that share the last timestamp are held back for
/// the next batch (a single timestamp with more rows than a batch makes one
/// larger batch).
pub(super) struct Cutter {
    size: usize,
    ts: usize,
    keyless: bool,
    cur: Vec<Row>,
    /// Without keys: `cur` is all one timestamp and at least `size` rows.
    one_run: bool,
}

/// What a statement stopped at its row cap leaves to hand on.
#[derive(Debug, PartialEq)]
pub(super) enum Capped {
    Rows(Vec<Row>),
    /// Every row held back shares this timestamp, and there may be more of it.
    OneRun(Value),
}

impl Cutter {
    pub(super) fn new(size: usize, q: &TableQuery) -> Self {
        Cutter {
            size,
            ts: q.ts,
            keyless: q.keys.is_empty(),
            cur: Vec::with_capacity(size),
            one_run: false,
        }
    }

    fn take(&mut self) -> Vec<Row> {
        std::mem::replace(&mut self.cur, Vec::with_capacity(self.size))
    }

    /// The next row; a batch when one is complete.
    pub(super) fn push(&mut self, row: Row) -> Option<Vec<Row>> {
        if !self.keyless {
            self.cur.push(row);
            return (self.cur.len() >= self.size).then(|| self.take());
        }
        if self.one_run {
            if self.cur.last().is_some_and(|l| l[self.ts] != row[self.ts]) {
                self.one_run = false;
                let out = self.take();
                self.cur.push(row);
                return Some(out);
            }
            self.cur.push(row);
            return None;
        }
        if self.cur.len() < self.size {
            self.cur.push(row);
            return None;
        }
        // Full: the next row tells whether the batch may end here (a table whose
        // timestamps are unique gets batches of exactly `size`).
        if self.cur.last().is_some_and(|l| l[self.ts] != row[self.ts]) {
            let out = self.take();
            self.cur.push(row);
            return Some(out);
        }
        match self.run_start() {
            0 => {
                self.one_run = true;
                self.cur.push(row);
                None
            }
            k => {
                let mut tail = self.cur.split_off(k);
                tail.reserve(self.size.saturating_sub(tail.len()));
                tail.push(row);
                Some(std::mem::replace(&mut self.cur, tail))
            }
        }
    }

    /// Where the trailing run of rows sharing the last timestamp starts.
    fn run_start(&self) -> usize {
        let Some(last) = self.cur.last() else {
            return 0;
        };
        let ts = &last[self.ts];
        self.cur
            .iter()
            .rposition(|r| r[self.ts] != *ts)
            .map_or(0, |i| i + 1)
    }

    /// The statement returned every row it could: all that is held goes out.
    pub(super) fn finish(&mut self) -> Option<Vec<Row>> {
        (!self.cur.is_empty()).then(|| self.take())
    }

    /// The statement stopped at its row cap.
    pub(super) fn finish_capped(&mut self) -> Capped {
        if !self.keyless {
            return Capped::Rows(self.take());
        }
        match self.run_start() {
            0 => match self.cur.last() {
                Some(last) => Capped::OneRun(last[self.ts].clone()),
                None => Capped::Rows(Vec::new()),
            },
            k => {
                self.cur.truncate(k);
                Capped::Rows(self.take())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_query::query;
    use super::*;
    use crate::event::{Precision, Timestamp};

    fn row(ts: i64, k: i64) -> Row {
        vec![
            Value::Timestamp(Timestamp::new(ts, Precision::Ms)),
            Value::Int8(k),
        ]
    }

    /// (ts, k) of each batch.
    fn cut(c: &mut Cutter, rows: &[(i64, i64)]) -> Vec<Vec<(i64, i64)>> {
        rows.iter()
            .filter_map(|&(t, k)| c.push(row(t, k)))
            .map(|b| b.iter().map(plain).collect())
            .collect()
    }

    fn plain(r: &Row) -> (i64, i64) {
        match (&r[0], &r[1]) {
            (Value::Timestamp(t), Value::Int8(k)) => (t.value, *k),
            _ => unreachable!(),
        }
    }

    #[test]
    fn keyed_rows_are_cut_into_full_batches() {
        let mut c = Cutter::new(2, &query(&["k"]));
        let rows = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)];
        assert_eq!(
            cut(&mut c, &rows),
            vec![vec![(1, 1), (1, 2)], vec![(1, 3), (2, 1)]]
        );
        assert_eq!(
            c.finish().unwrap().iter().map(plain).collect::<Vec<_>>(),
            vec![(2, 2)]
        );
        assert!(c.finish().is_none());
    }

    #[test]
    fn without_keys_a_batch_never_ends_inside_a_timestamp() {
        let mut c = Cutter::new(3, &query(&[]));
        // 1 1 2 2: the batch ends before the 2s, which go on together.
        let rows = [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (4, 0)];
        assert_eq!(
            cut(&mut c, &rows),
            vec![vec![(1, 0), (1, 1)], vec![(2, 0), (2, 1), (3, 0)]]
        );
        let rest: Vec<_> = c.finish().unwrap().iter().map(plain).collect();
        assert_eq!(rest, vec![(4, 0)]);
        // A timestamp longer than a batch is one larger batch.
        let mut c = Cutter::new(2, &query(&[]));
        let rows = [(1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (3, 0)];
        assert_eq!(
            cut(&mut c, &rows),
            vec![vec![(1, 0), (1, 1), (1, 2), (1, 3)]]
        );
        let rest: Vec<_> = c.finish().unwrap().iter().map(plain).collect();
        assert_eq!(rest, vec![(2, 0), (3, 0)]);
        // Unique timestamps: full batches.
        let mut c = Cutter::new(2, &query(&[]));
        let rows = [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)];
        assert_eq!(
            cut(&mut c, &rows),
            vec![vec![(1, 0), (2, 0)], vec![(3, 0), (4, 0)]]
        );
    }

    #[test]
    fn at_the_cap_a_table_without_keys_keeps_back_its_last_timestamp() {
        let mut c = Cutter::new(10, &query(&[]));
        assert!(cut(&mut c, &[(1, 0), (2, 0), (2, 1)]).is_empty());
        let Capped::Rows(rows) = c.finish_capped() else {
            panic!("rows expected");
        };
        assert_eq!(rows.iter().map(plain).collect::<Vec<_>>(), vec![(1, 0)]);

        let mut c = Cutter::new(10, &query(&[]));
        assert!(cut(&mut c, &[(2, 0), (2, 1)]).is_empty());
        assert_eq!(
            c.finish_capped(),
            Capped::OneRun(Value::Timestamp(Timestamp::new(2, Precision::Ms)))
        );

        // With keys the position is exact: everything goes.
        let mut c = Cutter::new(10, &query(&["k"]));
        assert!(cut(&mut c, &[(2, 0), (2, 1)]).is_empty());
        assert!(matches!(c.finish_capped(), Capped::Rows(r) if r.len() == 2));
    }
}
