//! The state of decoding one payload, shared by the serde path and the fast path.

use std::sync::Arc;

use super::schema::SchemaCache;
use crate::event::{TableSchema, Target};
use crate::formats::{DecodeOptions, DecodedBatch, Reason, RecordError};

/// What decoding one payload carries from object to object.
pub(super) struct Ctx<'o> {
    pub(super) options: &'o DecodeOptions,
    pub(super) schemas: &'o mut SchemaCache,
    pub(super) batches: Vec<DecodedBatch>,
    pub(super) errors: Vec<RecordError>,
    /// The schema of the previous object, reused when the next one declares the same.
    pub(super) last_schema: Option<Arc<TableSchema>>,
    /// Why the current object was abandoned, when it was for its meaning, not its syntax.
    pub(super) object_error: Option<(Option<String>, Reason)>,
    pub(super) line: usize,
    pub(super) span: std::ops::Range<usize>,
    pub(super) seen: Vec<bool>,
}

/// The index of the batch for `table` in `database` with `schema`, added when new.
pub(super) fn batch_for(
    ctx: &mut Ctx,
    table: &str,
    database: Option<&str>,
    schema: Arc<TableSchema>,
) -> usize {
    let database = database
        .map(str::to_string)
        .or_else(|| ctx.options.database.clone());
    if let Some(i) = ctx.batches.iter().rposition(|b| {
        b.target.table == table && b.target.database == database && b.schema == schema
    }) {
        return i;
    }
    ctx.batches.push(DecodedBatch {
        target: Target {
            database,
            table: table.to_string(),
        },
        schema,
        rows: Vec::new(),
    });
    ctx.batches.len() - 1
}
