//! `encode`: Rows to Raw messages in one of the wire formats, one message per batch.
//!
//! The message's metadata gets the batch's `table` and `database`, so a Kafka sink
//! can name topics with `{table}`. A row the format cannot carry (a timestamp
//! that would lose digits, text in OpenTSDB telnet...) is rejected alone: to the
//! `dropped` output as a one-row `json_kaiwudb` object with the reason in header
//! `kwpipe.error`, or logged and counted.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;

use super::decode::{log_rejected, ERROR_HEADER};
use crate::ack::EventStatus;
use crate::api::{
    BuildContext, Component, ComponentConfig, ComponentContext, ComponentError, OutputDef, Outputs,
    DROPPED_OUTPUT,
};
use crate::event::{Event, EventKind, Precision, RawMessage, RowBatch};
use crate::formats::{self, EncodeOptions, Format};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodeConfig {
    pub format: Format,
    /// Unit of the timestamps written: s, ms (default), us or ns for json_kaiwudb and
    /// line_influxdb; s or ms for OpenTSDB.
    /// Unset: the format's writers' unit (`Format::default_precision`: ns for
    /// line_influxdb, ms for the others).
    #[serde(default, deserialize_with = "formats::deserialize_precision_opt")]
    pub timestamp_precision: Option<Precision>,
    /// Line formats (line_influxdb, line_opentsdb): one message per line, as the
    /// connector's source writes them (one record per line), instead of one
    /// message per batch. Default false; `kwpipe connect` sets it.
    #[serde(default)]
    pub message_per_line: bool,
}

impl EncodeConfig {
    pub fn precision(&self) -> Precision {
        self.timestamp_precision
            .unwrap_or_else(|| self.format.default_precision())
    }
}

#[async_trait]
impl ComponentConfig for EncodeConfig {
    fn type_name(&self) -> &'static str {
        "encode"
    }

    fn input_kinds(&self) -> Vec<EventKind> {
        vec![EventKind::Rows]
    }

    fn outputs(&self) -> Vec<OutputDef> {
        vec![
            OutputDef::default(EventKind::Raw),
            OutputDef::named(DROPPED_OUTPUT, EventKind::Raw),
        ]
    }

    fn check(&self) -> Result<(), ComponentError> {
        if self.message_per_line && !self.format.is_line_format() {
            return Err(ComponentError::msg(format!(
                "message_per_line: {} is not a line format; only line_influxdb and line_opentsdb have lines to split",
                self.format
            )));
        }
        Ok(())
    }

    async fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        self.check()?;
        if !self.format.encode_precisions().contains(&self.precision()) {
            return Err(ComponentError::msg(format!(
                "{} cannot write timestamps in {} precision",
                self.format,
                self.precision()
            )));
        }
        let mut encode = Encode::new(
            self.format,
            EncodeOptions {
                precision: self.precision(),
            },
        );
        encode.message_per_line = self.message_per_line;
        Ok(Box::new(encode))
    }
}

pub struct Encode {
    format: Format,
    options: EncodeOptions,
    buf: Vec<u8>,
    /// One message per line (line formats), each with a fork of the batch's
    /// finalizers.
    pub message_per_line: bool,
}

impl Encode {
    pub fn new(format: Format, options: EncodeOptions) -> Self {
        Encode {
            format,
            options,
            buf: Vec::new(),
            message_per_line: false,
        }
    }

    pub async fn handle(
        &mut self,
        id: &str,
        batch: RowBatch,
        outputs: &mut Outputs,
    ) -> Result<(), ComponentError> {
        self.buf.clear();
        let errors =
            match formats::encode_lenient(self.format, &batch, &self.options, &mut self.buf) {
                Ok(errors) => errors,
                // Only a precision the format lacks fails a whole batch; build() refuses those.
                Err(e) => (0..batch.rows.len()).map(|_| e.clone()).collect(),
            };
        let mut meta = (*batch.meta).clone();
        meta.table = Some(batch.target.table.clone());
        if batch.target.database.is_some() {
            meta.database = batch.target.database.clone();
        }
        let meta = Arc::new(meta);
        let connected = outputs.is_connected(DROPPED_OUTPUT);
        for e in &errors {
            if connected {
                let payload = match e.row().and_then(|r| batch.rows.get(r)) {
                    Some(row) => one_row(&batch, row),
                    None => Bytes::new(),
                };
                // Its status is the dead-letter write's: a dead-lettered row is
                // handled, whatever the source's reject policy.
                let fin = batch.finalizers.fork();
                let dropped = RawMessage {
                    payload,
                    key: None,
                    headers: vec![(ERROR_HEADER.to_string(), Bytes::from(e.to_string()))],
                    meta: meta.clone(),
                    finalizers: fin,
                };
                outputs.send_to(DROPPED_OUTPUT, Event::Raw(dropped)).await?;
            } else {
                log_rejected(id, &meta, &format!("table {}: {e}", batch.target));
                outputs.metrics().error("encode");
            }
        }
        if !errors.is_empty() {
            outputs.metrics().rejected(errors.len() as u64);
            if !connected {
                batch.finalizers.update_status(EventStatus::Rejected);
            }
        }
        let finalizers = batch.finalizers;
        if self.buf.is_empty() {
            finalizers.finish(if errors.is_empty() || connected {
                EventStatus::Delivered
            } else {
                EventStatus::Rejected
            });
            return Ok(());
        }
        let payload = Bytes::copy_from_slice(&self.buf);
        if self.message_per_line {
            let mut start = 0;
            while start < payload.len() {
                let end = payload[start..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(payload.len(), |i| start + i);
                let msg = RawMessage {
                    payload: payload.slice(start..end),
                    key: None,
                    headers: Vec::new(),
                    meta: meta.clone(),
                    finalizers: finalizers.fork(),
                };
                outputs.send(Event::Raw(msg)).await?;
                start = end + 1;
            }
            // The batch is done when every line's message is.
            finalizers.finish(EventStatus::Delivered);
            return Ok(());
        }
        let msg = RawMessage {
            payload,
            key: None,
            headers: Vec::new(),
            meta,
            finalizers,
        };
        outputs.send(Event::Raw(msg)).await
    }
}

/// A rejected row as a one-row json_kaiwudb object: epoch-ms timestamps as the
/// seed's, finer ones as text with every digit (unambiguous to any reader, unlike
/// numbers in a precision the message does not name); Debug text if even that fails.
fn one_row(batch: &RowBatch, row: &[crate::event::Value]) -> Bytes {
    let single = RowBatch::new(
        batch.target.clone(),
        batch.schema.clone(),
        vec![row.to_vec()],
    );
    let mut out = Vec::new();
    match formats::encode(
        Format::JsonKaiwudb,
        &single,
        &EncodeOptions {
            precision: Precision::Ms,
        },
        &mut out,
    ) {
        Ok(()) => Bytes::from(out),
        Err(_) => Bytes::from(format!("{row:?}")),
    }
}

#[async_trait]
impl Component for Encode {
    async fn run(mut self: Box<Self>, mut cx: ComponentContext) -> Result<(), ComponentError> {
        let mut input = cx.take_input();
        while let Some(event) = input.recv().await {
            match event {
                Event::Rows(b) => self.handle(&cx.id, b, &mut cx.outputs).await?,
                Event::Raw(m) => {
                    tracing::error!(component = %cx.id, "encode got Raw; rejected");
                    m.finalizers.finish(EventStatus::Rejected);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tokio::sync::mpsc;

    use super::*;
    use crate::ack::BatchNotifier;
    use crate::api::{ComponentMetrics, Output};
    use crate::event::{DataType, Field, TableKind, TableSchema, Target, Timestamp, Value};

    #[tokio::test]
    async fn one_message_per_batch_with_table_in_meta_and_bad_rows_dropped() {
        let m = ComponentMetrics::new("e", "encode");
        let (tx, mut rx) = mpsc::channel(8);
        let (dtx, mut drx) = mpsc::channel(8);
        let mut named = BTreeMap::new();
        named.insert(
            DROPPED_OUTPUT.to_string(),
            Output::new(vec![dtx], m.clone()),
        );
        let mut out = Outputs::new(Output::new(vec![tx], m.clone()), named, m);
        let schema = TableSchema::new(
            TableKind::TimeSeries,
            vec![
                Field::column("ts", DataType::TimestampTz).not_null(),
                Field::column("v", DataType::Int4),
            ],
            vec![Field::tag("g", DataType::Varchar, true)],
        );
        let (fin, status) = BatchNotifier::pair();
        let mut batch = RowBatch::new(
            Target {
                database: Some("db".into()),
                table: "t".into(),
            },
            Arc::new(schema),
            vec![
                vec![
                    Value::Timestamp(Timestamp::new(5, Precision::Ms)),
                    Value::Int4(1),
                    Value::String("a".into()),
                ],
                vec![
                    Value::Timestamp(Timestamp::new(5_001, Precision::Us)),
                    Value::Int4(2),
                    Value::String("a".into()),
                ],
            ],
        );
        batch.finalizers = fin;
        let mut enc = Encode::new(Format::LineInfluxdb, EncodeOptions::default());
        enc.handle("e", batch, &mut out).await.unwrap();
        let Some(Event::Raw(msg)) = rx.recv().await else {
            panic!()
        };
        assert_eq!(&msg.payload[..], b"t,g=a v=1i32 5\n");
        assert_eq!(msg.meta.table.as_deref(), Some("t"));
        assert_eq!(msg.meta.database.as_deref(), Some("db"));
        let Some(Event::Raw(bad)) = drx.recv().await else {
            panic!()
        };
        assert_eq!(
            &bad.headers[0].1[..],
            b"row 1: field \"ts\": timestamp 5001 us would lose digits in ms precision"
        );
        assert!(bad.payload.starts_with(b"{\"table\":\"t\""));
        assert!(std::str::from_utf8(&bad.payload)
            .unwrap()
            .contains("\"ts\":\"1970-01-01 00:00:00.005001\","));
        msg.finalizers.finish(EventStatus::Delivered);
        bad.finalizers.finish(EventStatus::Delivered);
        // Dead-lettered is handled, whatever the source's reject policy.
        assert_eq!(status.await, EventStatus::Delivered);
    }

    /// Issue 18, item 6: the connector's source writes one record per line.
    #[tokio::test]
    async fn message_per_line_splits_a_batch_and_waits_for_every_line() {
        let m = ComponentMetrics::new("e", "encode");
        let (tx, mut rx) = mpsc::channel(8);
        let mut out = Outputs::new(Output::new(vec![tx], m.clone()), BTreeMap::new(), m);
        let schema = TableSchema::new(
            TableKind::TimeSeries,
            vec![
                Field::column("ts", DataType::TimestampTz).not_null(),
                Field::column("v", DataType::Int4),
            ],
            vec![Field::tag("g", DataType::Varchar, true)],
        );
        let (fin, mut status) = BatchNotifier::pair();
        let mut batch = RowBatch::new(
            Target {
                database: None,
                table: "t".into(),
            },
            Arc::new(schema),
            (1..=3)
                .map(|i| {
                    vec![
                        Value::Timestamp(Timestamp::new(i, Precision::Ms)),
                        Value::Int4(i as i32),
                        Value::String("a".into()),
                    ]
                })
                .collect(),
        );
        batch.finalizers = fin;
        let c: EncodeConfig = toml::from_str(
            "format = \"line_influxdb\"\ntimestamp_precision = \"ms\"\nmessage_per_line = true",
        )
        .unwrap();
        let mut enc = Encode::new(
            c.format,
            EncodeOptions {
                precision: c.precision(),
            },
        );
        enc.message_per_line = c.message_per_line;
        enc.handle("e", batch, &mut out).await.unwrap();
        let mut msgs = Vec::new();
        while let Ok(Event::Raw(msg)) = rx.try_recv() {
            msgs.push(msg);
        }
        let payloads: Vec<&[u8]> = msgs.iter().map(|m| &m.payload[..]).collect();
        assert_eq!(
            payloads,
            [&b"t,g=a v=1i32 1"[..], b"t,g=a v=2i32 2", b"t,g=a v=3i32 3"]
        );
        let last = msgs.pop().unwrap();
        for m in msgs {
            m.finalizers.finish(EventStatus::Delivered);
        }
        assert_eq!(status.try_recv(), None, "a line is still in flight");
        last.finalizers.finish(EventStatus::Delivered);
        assert_eq!(status.await, EventStatus::Delivered);

        let json: Result<EncodeConfig, _> =
            toml::from_str("format = \"json_kaiwudb\"\nmessage_per_line = true");
        assert!(json.unwrap().check().is_err());
    }

    #[tokio::test]
    async fn unsupported_precision_is_a_build_error() {
        let c: EncodeConfig =
            toml::from_str("format = \"line_opentsdb\"\ntimestamp_precision = \"ns\"").unwrap();
        let cx = BuildContext {
            id: "e".into(),
            globals: Default::default(),
        };
        let Err(e) = c.build(&cx).await else { panic!() };
        assert_eq!(
            e.to_string(),
            "line_opentsdb cannot write timestamps in ns precision"
        );
    }
}
