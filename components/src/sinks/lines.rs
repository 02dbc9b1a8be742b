//! Writing events as lines, shared by the `console` and `file` sinks: Raw events
//! as their payload, Rows as one JSON object per row.

use serde_json::{Map, Number, Value as Json};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::ack::EventStatus;
use crate::api::{ComponentContext, ComponentError};
use crate::event::{Event, RowBatch, Value};

/// Appends the lines for one event to `out`.
pub(crate) fn render(event: &Event, out: &mut Vec<u8>) {
    match event {
        Event::Raw(m) => {
            out.extend_from_slice(&m.payload);
            if m.payload.last() != Some(&b'\n') {
                out.push(b'\n');
            }
        }
        Event::Rows(b) => render_rows(b, out),
    }
}

/// `{"table":"t","database":"db","values":{"ts":1690855924005,"c1":11,...}}` per row.
/// Timestamps are integers at their own precision, which `precision` names.
fn render_rows(batch: &RowBatch, out: &mut Vec<u8>) {
    for row in &batch.rows {
        let mut values = Map::new();
        for (field, value) in batch.schema.fields().zip(row) {
            values.insert(field.name.clone(), to_json(value));
        }
        let mut obj = Map::new();
        obj.insert("table".into(), Json::String(batch.target.table.clone()));
        if let Some(db) = &batch.target.database {
            obj.insert("database".into(), Json::String(db.clone()));
        }
        obj.insert("values".into(), Json::Object(values));
        serde_json::to_writer(&mut *out, &Json::Object(obj)).expect("writing to a Vec cannot fail");
        out.push(b'\n');
    }
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int2(i) => Json::from(*i),
        Value::Int4(i) => Json::from(*i),
        Value::Int8(i) => Json::from(*i),
        Value::Float4(f) => Number::from_f64(*f as f64).map_or(Json::Null, Json::Number),
        Value::Float8(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(b.iter().map(|x| format!("{x:02x}")).collect()),
        Value::Timestamp(t) => Json::from(t.value),
        Value::Date(d) => Json::from(*d),
    }
}

/// Writes every event of the input to `writer`, marking each Delivered once the
/// writer has flushed it.
pub(crate) async fn write_all<W: AsyncWrite + Unpin>(
    cx: &mut ComponentContext,
    writer: &mut W,
) -> Result<(), ComponentError> {
    let mut input = cx.take_input();
    let mut batch = Vec::with_capacity(256);
    let mut buf = Vec::with_capacity(64 * 1024);
    while input.recv_many(&mut batch, 256).await > 0 {
        for event in &batch {
            render(event, &mut buf);
        }
        let result = async {
            writer.write_all(&buf).await?;
            writer.flush().await
        }
        .await;
        buf.clear();
        match result {
            Ok(()) => {
                for mut event in batch.drain(..) {
                    event.take_finalizers().finish(EventStatus::Delivered);
                }
            }
            Err(e) => {
                for mut event in batch.drain(..) {
                    event.take_finalizers().finish(EventStatus::Failed);
                }
                return Err(ComponentError::io("writing output", e));
            }
        }
    }
    Ok(())
}
