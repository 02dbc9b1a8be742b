//! `schema-infer`: reconciles the schemas of batches for the same table, so a
//! sink can create or evolve the table once.
//!
//! For formats without a schema (line protocol, OpenTSDB) a decoder types each
//! field from its values, and lines whose types disagree land in separate batches.
//! This transform takes the batches waiting at its input (up to `max_events`),
//! merges those of the same target into one batch whose schema is the union of
//! theirs with widened types (INT2 -> INT4 -> INT8 -> FLOAT8, FLOAT4 -> FLOAT8,
//! CHAR -> VARCHAR -> NVARCHAR...), converting values exactly (an INT8 that a
//! FLOAT8 cannot hold keeps its own batch), and sets each string field's length
//! to at least its longest value. Batches that cannot be merged (BOOL and a number
//! under one name, a NOT NULL field missing from the other) go on separately.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use crate::ack::EventStatus;
use crate::api::{
    BuildContext, Component, ComponentConfig, ComponentContext, ComponentError, OutputDef,
};
use crate::event::SchemaCertainty;
use crate::event::{
    DataType, Event, EventKind, Field, Precision, Row, RowBatch, TableSchema, Value,
};
use crate::formats::value::{coerce_value, string_len, widen_type};

fn default_max_events() -> usize {
    256
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaInferConfig {
    /// How many waiting events to merge at most.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
}

#[async_trait]
impl ComponentConfig for SchemaInferConfig {
    fn type_name(&self) -> &'static str {
        "schema-infer"
    }

    fn input_kinds(&self) -> Vec<EventKind> {
        vec![EventKind::Rows]
    }

    fn outputs(&self) -> Vec<OutputDef> {
        vec![OutputDef::default(EventKind::Rows)]
    }

    async fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        if self.max_events == 0 {
            return Err(ComponentError::msg("max_events must be at least 1"));
        }
        Ok(Box::new(SchemaInfer {
            max_events: self.max_events,
        }))
    }
}

struct SchemaInfer {
    max_events: usize,
}

#[async_trait]
impl Component for SchemaInfer {
    async fn run(self: Box<Self>, mut cx: ComponentContext) -> Result<(), ComponentError> {
        let mut input = cx.take_input();
        let mut waiting = Vec::with_capacity(self.max_events);
        while input.recv_many(&mut waiting, self.max_events).await > 0 {
            let mut batches = Vec::with_capacity(waiting.len());
            for event in waiting.drain(..) {
                match event {
                    Event::Rows(b) => batches.push(b),
                    Event::Raw(m) => {
                        tracing::error!(component = %cx.id, "schema-infer got Raw; rejected");
                        m.finalizers.finish(EventStatus::Rejected);
                    }
                }
            }
            for mut b in infer(batches) {
                // Whoever put schema-infer in the path asked for tables from
                // inferred types.
                Arc::make_mut(&mut b.meta).schema_certainty = SchemaCertainty::Inferred;
                cx.outputs.send(Event::Rows(b)).await?;
            }
        }
        Ok(())
    }
}

/// Merges batches of the same target where their schemas allow, in arrival order.
pub fn infer(batches: Vec<RowBatch>) -> Vec<RowBatch> {
    let mut out: Vec<RowBatch> = Vec::new();
    for b in batches {
        let mut pending = Some(b);
        for acc in out.iter_mut() {
            let Some(b) = pending.take() else { break };
            if acc.target != b.target {
                pending = Some(b);
                continue;
            }
            if let Err(back) = merge_into(acc, b) {
                pending = Some(back);
            }
        }
        if let Some(b) = pending {
            out.push(b);
        }
    }
    for b in &mut out {
        fit_lengths(b);
    }
    out
}

/// The union of two schemas, or None when they cannot share one.
pub fn merge_schemas(a: &TableSchema, b: &TableSchema) -> Option<TableSchema> {
    if a.kind != b.kind {
        return None;
    }
    // The leading column (a time-series table's timestamp) must stay first.
    if let (Some(x), Some(y)) = (a.columns.first(), b.columns.first()) {
        if x.name != y.name {
            return None;
        }
    }
    let merge_list =
        |xs: &[Field], ys: &[Field], other_a: &[Field], other_b: &[Field], tags: bool| {
            let mut out = Vec::with_capacity(xs.len().max(ys.len()));
            for x in xs {
                if other_b.iter().any(|f| f.name == x.name) {
                    return None;
                }
                match ys.iter().find(|y| y.name == x.name) {
                    Some(y) => out.push(Field {
                        name: x.name.clone(),
                        ty: widen_type(x.ty, y.ty).map(|t| if tags { tag_type(t) } else { t })?,
                        length: x.length.max(y.length),
                        nullable: x.nullable || y.nullable,
                        primary: x.primary || y.primary,
                    }),
                    None if x.nullable => out.push(x.clone()),
                    None => return None,
                }
            }
            for y in ys {
                if other_a.iter().any(|f| f.name == y.name) {
                    return None;
                }
                if !xs.iter().any(|x| x.name == y.name) {
                    if !y.nullable {
                        return None;
                    }
                    out.push(y.clone());
                }
            }
            Some(out)
        };
    let columns = merge_list(&a.columns, &b.columns, &a.tags, &b.tags, false)?;
    let tags = merge_list(&a.tags, &b.tags, &a.columns, &b.columns, true)?;
    Some(TableSchema::new(a.kind, columns, tags))
}

/// A widened type a tag can have: KWDB's tags are never NVARCHAR
/// ([`crate::kwdb::rules::TAG_TYPES`]), so VARCHAR + NCHAR gives VARCHAR, whose
/// length counts bytes and so holds any text.
fn tag_type(t: DataType) -> DataType {
    if t == DataType::NVarchar && !crate::kwdb::rules::tag_type_allowed(t) {
        DataType::Varchar
    } else {
        t
    }
}

/// Rows of `from` reshaped to `to`: fields by name, values converted exactly.
fn reshape(rows: &[Row], from: &TableSchema, to: &TableSchema) -> Option<Vec<Row>> {
    let map: Vec<Option<usize>> = to.fields().map(|f| from.position(&f.name)).collect();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut r = Vec::with_capacity(map.len());
        for (i, src) in map.iter().enumerate() {
            let v = match src {
                Some(j) => row.get(*j).cloned().unwrap_or(Value::Null),
                None => Value::Null,
            };
            let field = to.field(i);
            let v = if src.is_some_and(|j| from.field(j).ty == field.ty) {
                v
            } else {
                coerce_value(v, &lengthless(field), Precision::Ms).ok()?
            };
            r.push(v);
        }
        out.push(r);
    }
    Some(out)
}

/// The field with no length limit: lengths are fitted after merging.
fn lengthless(f: &Field) -> Field {
    Field {
        length: 0,
        ..f.clone()
    }
}

fn merge_into(acc: &mut RowBatch, b: RowBatch) -> Result<(), RowBatch> {
    if acc.schema == b.schema {
        let RowBatch {
            rows, finalizers, ..
        } = b;
        acc.rows.extend(rows);
        acc.finalizers.merge(finalizers);
        return Ok(());
    }
    let Some(schema) = merge_schemas(&acc.schema, &b.schema) else {
        return Err(b);
    };
    let (Some(mine), Some(theirs)) = (
        reshape(&acc.rows, &acc.schema, &schema),
        reshape(&b.rows, &b.schema, &schema),
    ) else {
        return Err(b);
    };
    acc.schema = Arc::new(schema);
    acc.rows = mine;
    acc.rows.extend(theirs);
    acc.finalizers.merge(b.finalizers);
    Ok(())
}

/// Length-limited fields get at least their longest value's length.
fn fit_lengths(b: &mut RowBatch) {
    let mut changed: Option<TableSchema> = None;
    for (i, f) in b.schema.fields().enumerate() {
        if !f.ty.has_length_limit() {
            continue;
        }
        let longest = b
            .rows
            .iter()
            .map(|r| match r.get(i) {
                Some(Value::String(s)) => string_len(f.ty, s),
                Some(Value::Bytes(x)) => x.len(),
                _ => 0,
            })
            .max()
            .unwrap_or(0) as u32;
        if longest > f.length {
            let s = changed.get_or_insert_with(|| (*b.schema).clone());
            if i < s.columns.len() {
                s.columns[i].length = longest;
            } else {
                let n = s.columns.len();
                s.tags[i - n].length = longest;
            }
        }
    }
    if let Some(s) = changed {
        b.schema = Arc::new(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::BatchNotifier;
    use crate::formats::{decode, DecodeOptions, Format};

    fn decoded(payload: &str) -> Vec<RowBatch> {
        decode(
            Format::LineInfluxdb,
            payload.as_bytes(),
            &DecodeOptions::new(Precision::Ms),
        )
        .batches
        .into_iter()
        .map(|b| b.into_row_batch())
        .collect()
    }

    #[test]
    fn widens_integers_and_strings_across_batches() {
        let mut batches = decoded("m,t=a v=1i16,s=\"ab\" 1\nm,t=bcd v=100000i32,s=L\"天津市\" 2\n");
        assert_eq!(batches.len(), 2);
        batches.extend(decoded("m,t=a v=5000000000i 3\n"));
        let out = infer(batches);
        assert_eq!(out.len(), 1);
        let s = &out[0].schema;
        assert_eq!(s.columns[1].ty, crate::event::DataType::Int8);
        assert_eq!(s.columns[2].ty, crate::event::DataType::NVarchar);
        assert_eq!(s.columns[2].length, 3);
        assert_eq!(s.tags[0].length, 3);
        assert_eq!(
            out[0].rows.iter().map(|r| r[1].clone()).collect::<Vec<_>>(),
            vec![Value::Int8(1), Value::Int8(100000), Value::Int8(5000000000)]
        );
    }

    /// VARCHAR + NCHAR widens to NVARCHAR for a column, but a tag cannot be
    /// NVARCHAR in KWDB (create_table.go checkTagType): it becomes VARCHAR, long
    /// enough in bytes for every value.
    #[test]
    fn tags_widen_to_varchar_never_nvarchar() {
        use crate::event::TableKind;
        let mk = |ty: DataType| {
            TableSchema::new(
                TableKind::TimeSeries,
                vec![
                    Field::column("ts", DataType::TimestampTz).not_null(),
                    Field::column("s", ty),
                ],
                vec![
                    Field::tag("p", DataType::Varchar, true).with_length(64),
                    Field::tag("site", ty, false),
                ],
            )
        };
        let m = merge_schemas(&mk(DataType::Varchar), &mk(DataType::NChar)).unwrap();
        assert_eq!(m.columns[1].ty, DataType::NVarchar);
        assert_eq!(m.tags[1].ty, DataType::Varchar);
        assert!(crate::kwdb::rules::check_table(&m, Precision::Ms).is_ok());
    }

    #[test]
    fn floats_absorb_integers_only_when_exact() {
        let out = infer(decoded("m v=1i 1\nm v=2.5 2\n"));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rows[0][1], Value::Float8(1.0));
        let out = infer(decoded("m v=9007199254740993i 1\nm v=2.5 2\n"));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn incompatible_types_stay_apart_and_finalizers_follow() {
        let mut batches = decoded("m v=true 1\nm v=2i 2\nm v=3i 3\n");
        let (fa, ra) = BatchNotifier::pair();
        let (fb, rb) = BatchNotifier::pair();
        batches[0].finalizers = fa;
        batches[1].finalizers = fb;
        let out = infer(batches);
        assert_eq!(out.len(), 2);
        drop(ra);
        for b in out {
            b.finalizers.finish(EventStatus::Delivered);
        }
        let mut rb = rb;
        assert_eq!(rb.try_recv(), Some(EventStatus::Delivered));
    }

    #[test]
    fn missing_not_null_fields_prevent_merging() {
        use crate::event::TableKind;
        let a = TableSchema::new(
            TableKind::TimeSeries,
            vec![Field::column("ts", DataType::TimestampTz).not_null()],
            vec![Field::tag("p", DataType::Varchar, true)],
        );
        let b = TableSchema::new(
            TableKind::TimeSeries,
            vec![
                Field::column("ts", DataType::TimestampTz).not_null(),
                Field::column("x", DataType::Int2),
            ],
            vec![],
        );
        assert!(merge_schemas(&a, &b).is_none());
        let c = TableSchema::new(
            TableKind::TimeSeries,
            b.columns.clone(),
            vec![Field::tag("p", DataType::Varchar, true)],
        );
        let m = merge_schemas(&a, &c).unwrap();
        assert_eq!(m.columns.len(), 2);
        assert!(m.columns[1].nullable);
    }
}
