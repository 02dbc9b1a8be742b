//! A table's read position and its checkpoint, one into the other.

use super::super::checkpoint::{Checkpoint, KeyValue};
use super::super::query::{Position, TableQuery};
use super::super::PollError;
use crate::event::Value;

/// The checkpoint for a committed position after `rows` exported rows.
pub(super) fn to_checkpoint(p: &Position, rows: u64) -> Checkpoint {
    let Value::Timestamp(ts) = &p.ts else {
        // Incrementing (non-timestamp) columns are kept as key values.
        return Checkpoint {
            ts: 0,
            precision: "ms".into(),
            keys: std::iter::once(&p.ts)
                .chain(p.keys.iter())
                .map(KeyValue::from_value)
                .collect(),
            rows,
        };
    };
    Checkpoint {
        ts: ts.value,
        precision: ts.precision.as_str().into(),
        keys: p.keys.iter().map(KeyValue::from_value).collect(),
        rows,
    }
}

/// The position a checkpoint of `table` resumes after; an error when it does not
/// fit the table's keys.
pub(super) fn from_checkpoint(
    cp: &Checkpoint,
    q: &TableQuery,
    table: &str,
) -> Result<Position, PollError> {
    let keys: Option<Vec<Value>> = cp.keys.iter().map(KeyValue::to_value).collect();
    let bad = || {
        PollError::Config(format!(
            "checkpoint of table {} does not fit the table (its keys changed?); move it away to export the table from the start",
            table
        ))
    };
    let mut keys = keys.ok_or_else(bad)?;
    let ts = match cp.timestamp() {
        Some(t) if keys.len() == q.keys.len() => Value::Timestamp(t),
        _ if keys.len() == q.keys.len() + 1 => keys.remove(0),
        _ => return Err(bad()),
    };
    Ok(Position { ts, keys })
}

#[cfg(test)]
mod tests {
    use super::super::test_query::query;
    use super::*;
    use crate::event::{Precision, Timestamp};

    #[test]
    fn a_position_survives_its_checkpoint() {
        let p = Position {
            ts: Value::Timestamp(Timestamp::new(5, Precision::Ms)),
            keys: vec![Value::Int8(7)],
        };
        let cp = to_checkpoint(&p, 42);
        assert_eq!(cp.rows, 42);
        let back = from_checkpoint(&cp, &query(&["k"]), "t").unwrap();
        assert_eq!((&back.ts, &back.keys), (&p.ts, &p.keys));
        // Two keys where the table has none: the keys changed.
        let two = to_checkpoint(
            &Position {
                ts: p.ts.clone(),
                keys: vec![Value::Int8(7), Value::Int8(8)],
            },
            1,
        );
        let e = from_checkpoint(&two, &query(&[]), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not fit"), "{e}");
    }
}
