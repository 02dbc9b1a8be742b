//! Reading a statement's rows off the connection, and what a failed read means.

use std::sync::Arc;

use futures::StreamExt as _;
use tokio_postgres::error::SqlState;
use tokio_postgres::SimpleQueryMessage;

use super::super::query::{parse_row, BinaryRows};
use super::Outcome;
use crate::event::{Row, TableSchema};
use crate::kwdb::{Dialect, KwdbError};

pub(super) type RowStream<'a> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<Row, KwdbError>> + Send + 'a>>;

/// The rows of a statement as they stream in: in binary from PostgreSQL, as text
/// from KWDB (`query`'s module doc says why). Either way the server is read only
/// as fast as the stream is polled.
pub(super) async fn read_rows<'a>(
    client: &'a tokio_postgres::Client,
    sql: &str,
    schema: &Arc<TableSchema>,
    dialect: Dialect,
    table: &str,
) -> Result<RowStream<'a>, KwdbError> {
    let context = format!("cannot read table {table}");
    let db = move |e| KwdbError::db(context.clone(), e);
    let (schema, width) = (schema.clone(), schema.width());
    Ok(match dialect {
        Dialect::Postgres => {
            let rows = client
                .query_raw(sql, std::iter::empty::<i32>())
                .await
                .map_err(&db)?;
            let mut reader = BinaryRows::new(schema);
            Box::pin(rows.map(move |r| match r {
                Ok(r) => reader.read(&r).map_err(KwdbError::Schema),
                Err(e) => Err(db(e)),
            }))
        }
        Dialect::Kwdb => {
            let messages = client.simple_query_raw(sql).await.map_err(&db)?;
            Box::pin(messages.filter_map(move |m| {
                std::future::ready(match m {
                    Ok(SimpleQueryMessage::Row(r)) => {
                        Some(parse_row(&r, &schema, width).map_err(KwdbError::Schema))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(db(e))),
                })
            }))
        }
    })
}

/// A failed read: the table being gone is not an error.
pub(super) fn failed(e: KwdbError) -> Outcome {
    if e.code() == Some(&SqlState::UNDEFINED_TABLE) {
        Outcome::Gone
    } else {
        Outcome::Failed(e)
    }
}
