//! KWDB's `ts.dedup.rule`: what the server does with a time-series row whose
//! (primary tags, timestamp) it already holds. Replays after a crash are
//! absorbed by it, so the sink reads it at start and says what a replay does
//! (docs/delivery.md). Values from `checkTsDedupRule` in KWDB's
//! `kwbase/pkg/sql/set_cluster_setting.go`; meanings from KWDB's documentation
//! (`db-operation/cluster-settings-config.md`).

use std::fmt;

use tokio_postgres::{Client, SimpleQueryMessage};

use super::error::KwdbError;

/// The statement that reads the rule.
pub const SHOW_DEDUP_RULE: &str = "SHOW CLUSTER SETTING ts.dedup.rule";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DedupRule {
    /// The default: a later row replaces the whole row.
    Override,
    /// Later non-null values replace, the others are kept.
    Merge,
    /// A later row with a key already held is dropped.
    Discard,
    /// Every row is kept (`keep.experimental`): replays duplicate.
    Keep,
    Other(String),
}

impl DedupRule {
    pub fn parse(s: &str) -> DedupRule {
        match s.trim().to_ascii_lowercase().as_str() {
            "override" => DedupRule::Override,
            "merge" => DedupRule::Merge,
            "discard" => DedupRule::Discard,
            "keep.experimental" | "keep" => DedupRule::Keep,
            other => DedupRule::Other(other.to_string()),
        }
    }

    /// What a replay (the same rows written again after a crash) does.
    pub fn replay(&self) -> &'static str {
        match self {
            DedupRule::Override | DedupRule::Merge => {
                "a replayed row replaces itself: replays are idempotent"
            }
            DedupRule::Discard => {
                "a replayed row is dropped: replays are idempotent, but a later row with \
                 the same primary tags and timestamp (a correction) is dropped too"
            }
            DedupRule::Keep => {
                "every row is kept: a replay after a crash duplicates rows; set \
                 ts.dedup.rule = 'override' or 'merge'"
            }
            DedupRule::Other(_) => "unknown rule: what a replay does is not known",
        }
    }

    /// Whether rows carrying only some of a table's columns (OpenTSDB and
    /// InfluxDB lines: one metric or field set per row) lose the others.
    pub fn loses_partial_rows(&self) -> bool {
        matches!(self, DedupRule::Override | DedupRule::Discard)
    }

    /// Whether a warning, not an info line, goes with [`DedupRule::replay`].
    pub fn is_risky(&self) -> bool {
        !matches!(self, DedupRule::Override | DedupRule::Merge)
    }
}

impl fmt::Display for DedupRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DedupRule::Override => "override",
            DedupRule::Merge => "merge",
            DedupRule::Discard => "discard",
            DedupRule::Keep => "keep.experimental",
            DedupRule::Other(s) => s,
        })
    }
}

/// What a partial row does under `rule`, for the warning.
pub fn partial_rows_note(rule: &DedupRule) -> String {
    match rule {
        DedupRule::Discard => format!(
            "ts.dedup.rule is {rule}: a row of the same primary tags and timestamp as one \
             already written is dropped, so the columns of a point arriving in a later \
             message are lost; set ts.dedup.rule = 'merge'"
        ),
        _ => format!(
            "ts.dedup.rule is {rule}: a later row of the same primary tags and timestamp \
             replaces the whole row, so columns it does not carry become NULL (OpenTSDB and \
             InfluxDB lines carry one point's columns in several rows); set \
             ts.dedup.rule = 'merge'"
        ),
    }
}

/// Reads the rule (kwdb dialect only).
pub async fn read(client: &Client) -> Result<DedupRule, KwdbError> {
    let msgs = client
        .simple_query(SHOW_DEDUP_RULE)
        .await
        .map_err(|e| KwdbError::db("cannot read ts.dedup.rule", e))?;
    for m in msgs {
        if let SimpleQueryMessage::Row(r) = m {
            if let Some(v) = r.get(0) {
                return Ok(DedupRule::parse(v));
            }
        }
    }
    Err(KwdbError::Schema(
        "SHOW CLUSTER SETTING ts.dedup.rule returned no row".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_what_replays_do() {
        assert_eq!(DedupRule::parse("OVERRIDE"), DedupRule::Override);
        assert_eq!(DedupRule::parse("keep.experimental"), DedupRule::Keep);
        assert!(DedupRule::parse("keep.experimental").is_risky());
        assert!(!DedupRule::Merge.is_risky());
        assert!(DedupRule::Override.loses_partial_rows());
        assert!(!DedupRule::Merge.loses_partial_rows());
        assert!(DedupRule::Keep.replay().contains("duplicates"));
        assert!(partial_rows_note(&DedupRule::Override).contains("'merge'"));
    }
}
