//! What a failed step of writing a batch leads to: the retry decision, from the
//! error's class alone. Pure, so every path (planning, COPY, INSERT) decides the
//! same way and the rules are tested here.

use crate::api::Backoff;
use crate::kwdb::{ErrorClass, KwdbError};

/// Why a step did not finish.
#[derive(Debug)]
pub(super) enum Step {
    /// Try again after a pause (connection, server restart...).
    Retry(KwdbError),
    /// The table is not what we thought: re-read it.
    Stale(KwdbError),
    /// Every row of the batch is refused, for this reason.
    Reject(String),
    /// The environment or configuration is wrong (unknown database, refused
    /// login): the sink stops with this error, the rows stay unacknowledged.
    Fatal(KwdbError),
}

impl From<KwdbError> for Step {
    fn from(e: KwdbError) -> Self {
        match e.class() {
            ErrorClass::Retryable => Step::Retry(e),
            ErrorClass::StaleSchema => Step::Stale(e),
            ErrorClass::Fatal => Step::Fatal(e),
            ErrorClass::Permanent | ErrorClass::Duplicate => {
                Step::Reject(e.db_message().unwrap_or_else(|| e.to_string()))
            }
        }
    }
}

/// What "the table changed" (an unknown column or table) means for a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OnStale {
    /// Re-read the table and plan again.
    Replan,
    /// The table was re-read twice for this batch and the statement still names
    /// something it lacks: the rows are at fault, like any refused row.
    BlameRows,
}

impl OnStale {
    /// Two re-reads of the table for one batch are enough: a third would loop.
    pub fn after(refreshes: u32) -> Self {
        if refreshes >= 2 {
            OnStale::BlameRows
        } else {
            OnStale::Replan
        }
    }
}

/// What a write statement's error leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Pause and write the chunk again.
    Retry,
    /// Stop the sink.
    Fatal,
    /// Re-read the table and plan again.
    Replan,
    /// Something in the rows: a replay (duplicate key) or a bad row, which the
    /// staged COPY or the INSERT path sorts out row by row.
    Rows,
}

pub(super) fn verdict(class: ErrorClass, on_stale: OnStale) -> Verdict {
    match class {
        ErrorClass::Retryable => Verdict::Retry,
        ErrorClass::Fatal => Verdict::Fatal,
        ErrorClass::StaleSchema if on_stale == OnStale::Replan => Verdict::Replan,
        ErrorClass::StaleSchema | ErrorClass::Permanent | ErrorClass::Duplicate => Verdict::Rows,
    }
}

/// The [`Step`] a write error ends the chunk with, or the error back when the
/// rows are at fault (for the caller to split or stage them).
pub(super) fn step_for(e: KwdbError, on_stale: OnStale) -> Result<Step, KwdbError> {
    match verdict(e.class(), on_stale) {
        Verdict::Retry => Ok(Step::Retry(e)),
        Verdict::Fatal => Ok(Step::Fatal(e)),
        Verdict::Replan => Ok(Step::Stale(e)),
        Verdict::Rows => Err(e),
    }
}

/// The retries of one batch: how many so far, and the delay before the next.
pub(super) struct Retries {
    pub tries: u32,
    pub backoff: Backoff,
}

impl Retries {
    pub fn new(backoff: Backoff) -> Self {
        Retries { tries: 0, backoff }
    }

    /// Something went through: the next failure starts the backoff afresh.
    pub fn reset(&mut self) {
        self.tries = 0;
        self.backoff.reset();
    }

    /// Whether `max_retries` (None: forever) is spent.
    pub fn spent(&self, max: Option<u32>) -> bool {
        max.is_some_and(|m| self.tries >= m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_decision_follows_the_error_class() {
        use ErrorClass::*;
        let replan = OnStale::Replan;
        assert_eq!(verdict(Retryable, replan), Verdict::Retry);
        assert_eq!(verdict(Fatal, replan), Verdict::Fatal);
        assert_eq!(verdict(StaleSchema, replan), Verdict::Replan);
        assert_eq!(verdict(Permanent, replan), Verdict::Rows);
        assert_eq!(verdict(Duplicate, replan), Verdict::Rows);
        // After two re-reads a "changed table" is the rows' fault...
        assert_eq!(verdict(StaleSchema, OnStale::BlameRows), Verdict::Rows);
        // ...and nothing else changes.
        assert_eq!(verdict(Retryable, OnStale::BlameRows), Verdict::Retry);
        assert_eq!(verdict(Fatal, OnStale::BlameRows), Verdict::Fatal);
    }

    #[test]
    fn a_batch_replans_twice_at_most() {
        assert_eq!(OnStale::after(0), OnStale::Replan);
        assert_eq!(OnStale::after(1), OnStale::Replan);
        assert_eq!(OnStale::after(2), OnStale::BlameRows);
    }

    #[test]
    fn planning_errors_become_steps_by_class() {
        let missing = KwdbError::MissingTable {
            table: "t".into(),
            database: "d".into(),
            wanted: "a table".into(),
            why: "auto_create = \"never\"",
        };
        assert!(matches!(Step::from(missing), Step::Retry(_)));
        assert!(matches!(
            Step::from(KwdbError::UnknownDatabase("d".into())),
            Step::Fatal(_)
        ));
        match Step::from(KwdbError::Schema("bad".into())) {
            Step::Reject(reason) => assert_eq!(reason, "bad"),
            other => panic!("{other:?}"),
        }
        let e = KwdbError::Config("x".into());
        assert!(matches!(step_for(e, OnStale::Replan), Ok(Step::Retry(_))));
        let e = KwdbError::Schema("row".into());
        assert!(step_for(e, OnStale::Replan).is_err(), "the rows' fault");
    }

    #[test]
    fn retries_reset_after_a_success() {
        use std::time::Duration;
        let mut r = Retries::new(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(40),
        ));
        r.tries = 3;
        r.backoff.next_delay();
        assert!(r.spent(Some(3)));
        assert!(!r.spent(None));
        r.reset();
        assert_eq!(r.tries, 0);
        assert_eq!(r.backoff.next_delay(), Duration::from_millis(10));
    }
}
