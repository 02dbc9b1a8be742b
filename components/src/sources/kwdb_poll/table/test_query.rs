//! The query the table's unit tests read: a relational table `t` with a
//! timestamp `ts` and an INT8 `k`, keyed by `keys`.

use crate::event::{DataType, Field, TableKind, TableSchema};
use crate::kwdb::Dialect;

use super::super::query::TableQuery;

pub(super) fn query(keys: &[&str]) -> TableQuery {
    let schema = TableSchema::new(
        TableKind::Relational,
        vec![
            Field::column("ts", DataType::Timestamp),
            Field::column("k", DataType::Int8),
        ],
        Vec::new(),
    );
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    TableQuery::new(Dialect::Postgres, "t", &schema, "ts", &keys).unwrap()
}
