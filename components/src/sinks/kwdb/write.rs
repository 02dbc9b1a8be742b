//! The write paths of one chunk of rows, once planned: COPY in a transaction of
//! its own (postgres), a staged COPY for chunks holding replayed rows, and
//! multi-row INSERTs split in halves until refused rows stand alone. Which path
//! an error leads to is [`super::step`]'s decision.

use std::ops::Range;

use bytes::Bytes;
use futures_util::SinkExt;

use super::plan::{Plan, Stage};
use super::session::Session;
use super::step::{step_for, OnStale, Step};
use super::SinkOptions;
use crate::event::{Row, Value};
use crate::kwdb::values::Encoding;
use crate::kwdb::{ErrorClass, KwdbError};

/// Rows of a chunk sorted out: those that go (or went) to the table, and those
/// refused, with the reason.
#[derive(Default)]
struct Sorted {
    good: Vec<usize>,
    rejected: Vec<(usize, String)>,
}

/// A COPY inside a transaction: the statements around it, and whether the COPY's
/// prepared statement is kept for the table.
struct Transaction<'a> {
    begin: &'a str,
    copy: &'a str,
    cache: bool,
    end: &'a str,
    /// What an error message says failed: "COPY into" the table.
    context: &'static str,
}

/// Writes chunks on one session.
pub(super) struct WritePath<'a> {
    pub session: &'a mut Session,
    pub encoding: Encoding,
    pub options: &'a SinkOptions,
}

impl WritePath<'_> {
    /// Writes the rows `idx` of `rows`; returns the rows refused, with reasons.
    pub async fn chunk(
        &mut self,
        plan: &Plan,
        rows: &[Row],
        idx: &[usize],
        on_stale: OnStale,
    ) -> Result<Vec<(usize, String)>, Step> {
        let Some(copy_sql) = &plan.copy_sql else {
            let mut rejected = Vec::new();
            self.insert_bisect(plan, rows, idx, &mut rejected, on_stale)
                .await?;
            return Ok(rejected);
        };
        let mut sorted = Sorted {
            good: Vec::with_capacity(idx.len()),
            rejected: Vec::new(),
        };
        let duplicate = match self
            .copy_committed(plan, copy_sql, rows, idx, &mut sorted)
            .await
        {
            Ok(()) => return Ok(sorted.rejected),
            // A replay (duplicate key) or a bad row: the staged COPY or the
            // INSERT path sorts it out.
            Err(e) => match step_for(e, on_stale) {
                Ok(step) => return Err(step),
                Err(e) => e.class() == ErrorClass::Duplicate,
            },
        };
        let all_encoded = sorted.good.len() + sorted.rejected.len() == idx.len();
        if let (true, true, Some(stage)) = (duplicate, all_encoded, &plan.stage) {
            match self.stage_copy(plan, stage, rows, &sorted.good).await {
                Ok(()) => return Ok(sorted.rejected),
                // Something else is wrong with a row (a changed table included):
                // the INSERT path finds it.
                Err(e) => match step_for(e, OnStale::BlameRows) {
                    Ok(step) => return Err(step),
                    Err(e) => {
                        tracing::debug!(table = %plan.table, error = %e, "staged COPY failed")
                    }
                },
            }
        }
        if !all_encoded {
            // Failed before every row was encoded: the INSERT path takes them all.
            sorted.good = idx.to_vec();
            sorted.rejected.clear();
        }
        if sorted.good.is_empty() {
            return Ok(sorted.rejected);
        }
        let good = std::mem::take(&mut sorted.good);
        self.insert_bisect(plan, rows, &good, &mut sorted.rejected, on_stale)
            .await?;
        Ok(sorted.rejected)
    }

    /// COPY into the table in a transaction of its own. tokio-postgres returns from
    /// a COPY at the server's CommandComplete, before the Sync that commits an
    /// implicit transaction: a commit failing after it (a deferred constraint, a
    /// backend stopped by a fast shutdown) rolled back rows already acknowledged. An
    /// explicit COMMIT is answered only once it is done.
    async fn copy_committed(
        &mut self,
        plan: &Plan,
        copy_sql: &str,
        rows: &[Row],
        idx: &[usize],
        sorted: &mut Sorted,
    ) -> Result<(), KwdbError> {
        let copy = Transaction {
            begin: "BEGIN",
            copy: copy_sql,
            cache: true,
            end: "COMMIT",
            context: "COPY into",
        };
        self.copy_in_transaction(plan, copy, rows, idx, sorted)
            .await
    }

    /// COPY into the staging table, then INSERT ... SELECT ... ON CONFLICT DO
    /// NOTHING from it, in one transaction.
    async fn stage_copy(
        &mut self,
        plan: &Plan,
        stage: &Stage,
        rows: &[Row],
        idx: &[usize],
    ) -> Result<(), KwdbError> {
        let copy = Transaction {
            begin: &stage.begin,
            copy: &stage.copy,
            cache: false,
            end: &stage.insert,
            context: "staged COPY into",
        };
        self.copy_in_transaction(plan, copy, rows, idx, &mut Sorted::default())
            .await
    }

    /// `begin`, the COPY, `end`; on any error the session leaves the transaction.
    async fn copy_in_transaction(
        &mut self,
        plan: &Plan,
        t: Transaction<'_>,
        rows: &[Row],
        idx: &[usize],
        sorted: &mut Sorted,
    ) -> Result<(), KwdbError> {
        let ctx = || format!("{} \"{}\" failed", t.context, plan.table);
        self.session.connect().await?;
        let result = match self.session.client().batch_execute(t.begin).await {
            Ok(()) => match self.copy(plan, t.copy, t.cache, rows, idx, sorted).await {
                Ok(()) => self
                    .session
                    .client()
                    .batch_execute(t.end)
                    .await
                    .map_err(|e| KwdbError::db(ctx(), e)),
                Err(e) => Err(e),
            },
            Err(e) => Err(KwdbError::db(ctx(), e)),
        };
        self.end_failed_transaction(&result).await;
        result
    }

    /// Leaves the session outside a transaction that failed. A session that cannot
    /// roll back is dropped: rows written later inside a transaction that never
    /// commits would be acknowledged and lost.
    async fn end_failed_transaction(&mut self, result: &Result<(), KwdbError>) {
        if result.is_ok() {
            return;
        }
        let rolled_back = match self.session.is_open() {
            true => self
                .session
                .client()
                .batch_execute("ROLLBACK")
                .await
                .is_ok(),
            false => true,
        };
        if !rolled_back {
            self.session.drop_connection();
        }
    }

    /// Streams the rows in pieces as they are encoded, so the server parses one
    /// piece while the next is being encoded. Sorts every row into `sorted` (good,
    /// or refused because it cannot be encoded), even when the COPY fails.
    /// `cache` keeps the prepared statement for the table.
    async fn copy(
        &mut self,
        plan: &Plan,
        copy_sql: &str,
        cache: bool,
        rows: &[Row],
        idx: &[usize],
        sorted: &mut Sorted,
    ) -> Result<(), KwdbError> {
        const PIECE: usize = 128;
        let ctx = || format!("COPY into \"{}\" failed", plan.table);
        // Inside the caller's transaction: a lost session must fail it, not be
        // replaced by a new one outside it.
        let cached = self.session.copy_statement(&plan.table).filter(|_| cache);
        let stmt = match cached {
            Some(s) => s,
            None => {
                let s = self
                    .session
                    .client()
                    .prepare(copy_sql)
                    .await
                    .map_err(|e| KwdbError::db(ctx(), e))?;
                if cache {
                    self.session.keep_copy_statement(&plan.table, s.clone());
                }
                s
            }
        };
        let sink = self
            .session
            .client()
            .copy_in::<_, Bytes>(&stmt)
            .await
            .map_err(|e| KwdbError::db(ctx(), e))?;
        futures_util::pin_mut!(sink);
        let mut failed = None;
        for piece in idx.chunks(PIECE) {
            let mut buf = Vec::with_capacity(piece.len() * 96);
            for &i in piece {
                let mark = buf.len();
                match encode_copy(self.encoding, plan, &rows[i], &mut buf) {
                    Ok(()) => sorted.good.push(i),
                    Err(reason) => {
                        buf.truncate(mark);
                        sorted.rejected.push((i, reason));
                    }
                }
            }
            if failed.is_none() && !buf.is_empty() {
                if let Err(e) = sink.send(Bytes::from(buf)).await {
                    failed = Some(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(KwdbError::db(ctx(), e));
        }
        if sorted.good.is_empty() {
            // Dropping the sink abandons the COPY; nothing to write.
            return Ok(());
        }
        sink.finish().await.map_err(|e| KwdbError::db(ctx(), e))?;
        Ok(())
    }

    /// Multi-row INSERTs; a statement refused for its data is split in halves until
    /// the refused rows stand alone.
    async fn insert_bisect(
        &mut self,
        plan: &Plan,
        rows: &[Row],
        idx: &[usize],
        rejected: &mut Vec<(usize, String)>,
        on_stale: OnStale,
    ) -> Result<(), Step> {
        let mut tuples: Vec<(usize, String)> = Vec::with_capacity(idx.len());
        for &i in idx {
            let mut s = String::with_capacity(64);
            match encode_tuple(self.encoding, plan, &rows[i], &mut s) {
                Ok(()) => tuples.push((i, s)),
                Err(reason) => rejected.push((i, reason)),
            }
        }
        let mut groups = statement_groups(
            plan.insert_prefix.len(),
            tuples.iter().map(|(_, t)| t.len()),
            self.options.max_statement_bytes,
            self.options.batch_size,
        );
        // A stack, left half on top, so rows go in their order.
        groups.reverse();
        while let Some(r) = groups.pop() {
            let stmt = insert_statement(plan, &tuples[r.clone()]);
            self.session.connect().await?;
            let result = self.session.client().batch_execute(&stmt).await;
            let Err(e) = result else { continue };
            let e = KwdbError::db(format!("INSERT into \"{}\" failed", plan.table), e);
            match step_for(e, on_stale) {
                Ok(step) => return Err(step),
                Err(e) if r.len() == 1 => {
                    let reason = e.db_message().unwrap_or_else(|| e.to_string());
                    rejected.push((tuples[r.start].0, reason));
                }
                Err(_) => {
                    let mid = r.start + r.len() / 2;
                    groups.push(mid..r.end);
                    groups.push(r.start..mid);
                }
            }
        }
        Ok(())
    }
}

/// INSERT statements of at most `batch_size` rows and `max_bytes` of SQL (a
/// single longer row goes alone), in order: ranges over the encoded tuples, of
/// the lengths `tuples`, each after a prefix of `prefix` bytes.
fn statement_groups(
    prefix: usize,
    tuples: impl IntoIterator<Item = usize>,
    max_bytes: usize,
    batch_size: usize,
) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut size = prefix;
    let mut n = 0;
    for (k, len) in tuples.into_iter().enumerate() {
        if k > start && (size + len + 1 > max_bytes || k - start >= batch_size) {
            groups.push(start..k);
            start = k;
            size = prefix;
        }
        size += len + 1;
        n = k + 1;
    }
    if start < n {
        groups.push(start..n);
    }
    groups
}

/// `INSERT INTO t (..) VALUES (..),(..)` and the plan's suffix (ON CONFLICT ...).
fn insert_statement(plan: &Plan, tuples: &[(usize, String)]) -> String {
    let body: usize = tuples.iter().map(|(_, t)| t.len() + 1).sum();
    let mut stmt =
        String::with_capacity(plan.insert_prefix.len() + body + plan.insert_suffix.len());
    stmt.push_str(&plan.insert_prefix);
    for (k, (_, t)) in tuples.iter().enumerate() {
        if k > 0 {
            stmt.push(',');
        }
        stmt.push_str(t);
    }
    stmt.push_str(&plan.insert_suffix);
    stmt
}

fn encode_tuple(enc: Encoding, plan: &Plan, row: &Row, out: &mut String) -> Result<(), String> {
    out.push('(');
    for (k, (i, f)) in plan.fields.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        enc.literal(row.get(*i).unwrap_or(&Value::Null), f, out)?;
    }
    out.push(')');
    Ok(())
}

fn encode_copy(enc: Encoding, plan: &Plan, row: &Row, out: &mut Vec<u8>) -> Result<(), String> {
    for (k, (i, f)) in plan.fields.iter().enumerate() {
        if k > 0 {
            out.push(b'\t');
        }
        enc.copy(row.get(*i).unwrap_or(&Value::Null), f, out)?;
    }
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DataType, Field};
    use crate::kwdb::values::NonFinite;
    use crate::kwdb::Dialect;

    fn plan() -> Plan {
        Plan {
            fields: vec![
                (0, Field::column("a", DataType::Int8)),
                (1, Field::column("b", DataType::Varchar)),
            ],
            insert_prefix: "INSERT INTO t (a, b) VALUES ".into(),
            copy_sql: None,
            stage: None,
            insert_suffix: " ON CONFLICT DO NOTHING".into(),
            table: "t".into(),
        }
    }

    #[test]
    fn statements_are_cut_by_rows_and_bytes_in_order() {
        // Three rows a statement at most.
        assert_eq!(statement_groups(10, [5; 7], 1000, 3), [0..3, 3..6, 6..7]);
        // 10 + 3 * (5 + 1) = 28 bytes fit in 30, a fourth row does not.
        assert_eq!(statement_groups(10, [5; 5], 30, 100), [0..3, 3..5]);
        // A row longer than the limit goes alone.
        assert_eq!(
            statement_groups(10, [5, 50, 5], 30, 100),
            [0..1, 1..2, 2..3]
        );
        assert!(statement_groups(10, [], 30, 100).is_empty());
    }

    #[test]
    fn an_insert_is_prefix_tuples_and_suffix() {
        let tuples = [(0, "(1,'x')".to_string()), (4, "(2,NULL)".to_string())];
        assert_eq!(
            insert_statement(&plan(), &tuples),
            "INSERT INTO t (a, b) VALUES (1,'x'),(2,NULL) ON CONFLICT DO NOTHING"
        );
    }

    #[test]
    fn rows_encode_in_the_plans_field_order() {
        let enc = Encoding {
            dialect: Dialect::Postgres,
            non_finite: NonFinite::Reject,
        };
        let row = vec![Value::Int8(7), Value::String("a\tb".into())];
        let mut tuple = String::new();
        encode_tuple(enc, &plan(), &row, &mut tuple).unwrap();
        assert_eq!(tuple, "(7,'a\tb')");
        let mut copy = Vec::new();
        encode_copy(enc, &plan(), &row, &mut copy).unwrap();
        assert_eq!(copy, b"7\ta\\tb\n");
        // A missing value is NULL.
        let mut copy = Vec::new();
        encode_copy(enc, &plan(), &vec![Value::Int8(1)], &mut copy).unwrap();
        assert_eq!(copy, b"1\t\\N\n");
    }
}
