//! `decode`: Raw messages to Rows in one of the wire formats.
//!
//! Each message's good rows go out as batches (one per target table); each bad
//! record goes to the `dropped` output when something reads it (the record's bytes
//! as payload, the message's own headers and metadata kept, then the reason in
//! header `kwpipe.error` and where the message came from in `kwpipe.topic`,
//! `kwpipe.partition` and `kwpipe.offset`), otherwise it is logged and counted. A message counts as
//! Delivered only once every batch made from it is: each batch carries a fork of
//! the message's finalizers.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;

use crate::ack::EventStatus;
use crate::api::{
    BuildContext, Component, ComponentConfig, ComponentContext, ComponentError, OutputDef, Outputs,
    DROPPED_OUTPUT,
};
use crate::event::SchemaCertainty;
use crate::event::{Event, EventKind, Metadata, Precision, RawMessage, RowBatch};
use crate::formats::{self, DecodeOptions, Decoder, DeviceKey, Format};

// The header names moved to `crate::headers` (the Kafka source needs them and
// must not import a transform); re-exported here for the transforms that use them.
pub use crate::headers::{
    incoming_header_name, ERROR_HEADER, INCOMING_PREFIX, OFFSET_HEADER, OWN_PREFIX,
    PARTITION_HEADER, TOPIC_HEADER,
};

/// Kafka Connect's dead-letter context headers
/// (`errors.deadletterqueue.context.headers.enable`), for tools that read them.
const CONNECT_HEADERS: [&str; 6] = [
    "__connect.errors.topic",
    "__connect.errors.partition",
    "__connect.errors.offset",
    "__connect.errors.stage",
    "__connect.errors.exception.class.name",
    "__connect.errors.exception.message",
];

/// Connect's context headers for a record rejected for `reason`: a decode
/// rejection is what Connect calls a value-conversion failure.
fn push_connect_headers(meta: &Metadata, reason: &str, headers: &mut Vec<(String, Bytes)>) {
    let values = [
        meta.topic.clone(),
        meta.partition.map(|p| p.to_string()),
        meta.offset.map(|o| o.to_string()),
        Some("VALUE_CONVERTER".to_string()),
        Some("org.apache.kafka.connect.errors.DataException".to_string()),
        Some(reason.to_string()),
    ];
    for (name, value) in CONNECT_HEADERS.iter().zip(values) {
        if let Some(v) = value {
            headers.push((name.to_string(), Bytes::from(v)));
        }
    }
}

/// Appends the origin headers for what `meta` knows of the message's origin.
pub(crate) fn push_origin_headers(meta: &Metadata, headers: &mut Vec<(String, Bytes)>) {
    if let Some(t) = &meta.topic {
        headers.push((TOPIC_HEADER.to_string(), Bytes::from(t.clone())));
    }
    if let Some(p) = meta.partition {
        headers.push((PARTITION_HEADER.to_string(), Bytes::from(p.to_string())));
    }
    if let Some(o) = meta.offset {
        headers.push((OFFSET_HEADER.to_string(), Bytes::from(o.to_string())));
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeConfig {
    pub format: Format,
    /// Unit of numeric timestamps (json_kaiwudb, line_influxdb); OpenTSDB tells
    /// seconds from milliseconds by their digits.
    /// Unset: the format's writers' unit (`Format::default_precision`: ns for
    /// line_influxdb, ms for the others).
    #[serde(default, deserialize_with = "formats::deserialize_precision_opt")]
    pub timestamp_precision: Option<Precision>,
    /// Database of the decoded rows; unset leaves it to the sink.
    #[serde(default)]
    pub database: Option<String>,
    /// line_influxdb: give the rows a device key, the synthetic primary tag
    /// OpenTSDB points get (`primary_tag VARCHAR(64)`, the hex SHA-256 of the
    /// sorted `k=v` tag pairs), so the sink can create their tables
    /// (`auto_create = "always"`). For tables that exist with such a tag.
    #[serde(default)]
    pub device_key: bool,
    /// line_influxdb: these tags are the primary tags (every line must have them),
    /// so the sink can create the tables. An alternative to `device_key`.
    #[serde(default)]
    pub primary_tags: Vec<String>,
    /// Records sent to `dropped` also get Kafka Connect's `__connect.errors.*`
    /// context headers (besides kwpipe's own), for tools that read a connector's
    /// dead-letter topic.
    #[serde(default)]
    pub connect_error_headers: bool,
    /// A rejected record that no `dropped` output takes is logged with its first
    /// 64 bytes, not only its reason and origin (Connect's
    /// `errors.log.include.messages`). Off by default: records may hold secrets.
    #[serde(default)]
    pub log_records: bool,
}

impl DecodeConfig {
    fn device_key(&self) -> DeviceKey {
        if self.device_key {
            DeviceKey::Hash
        } else if !self.primary_tags.is_empty() {
            DeviceKey::Tags(self.primary_tags.clone())
        } else {
            DeviceKey::None
        }
    }

    pub fn precision(&self) -> Precision {
        self.timestamp_precision
            .unwrap_or_else(|| self.format.default_precision())
    }
}

#[async_trait]
impl ComponentConfig for DecodeConfig {
    fn type_name(&self) -> &'static str {
        "decode"
    }

    fn input_kinds(&self) -> Vec<EventKind> {
        vec![EventKind::Raw]
    }

    fn outputs(&self) -> Vec<OutputDef> {
        vec![
            OutputDef::default(EventKind::Rows),
            OutputDef::named(DROPPED_OUTPUT, EventKind::Raw),
        ]
    }

    fn check(&self) -> Result<(), ComponentError> {
        let keyed = self.device_key || !self.primary_tags.is_empty();
        if keyed && self.format != Format::LineInfluxdb {
            return Err(ComponentError::msg(format!(
                "device_key and primary_tags apply to line_influxdb only; {} carries its own keys",
                self.format
            )));
        }
        if self.device_key && !self.primary_tags.is_empty() {
            return Err(ComponentError::msg(
                "set device_key or primary_tags, not both".to_string(),
            ));
        }
        if !(0..=4).contains(&self.primary_tags.len()) {
            return Err(ComponentError::msg(format!(
                "primary_tags: {} tags; a time-series table has 1 to 4 primary tags",
                self.primary_tags.len()
            )));
        }
        Ok(())
    }

    async fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        self.check()?;
        let mut decode = Decode::new(
            self.format,
            DecodeOptions {
                precision: self.precision(),
                now: None,
                database: self.database.clone(),
                device_key: self.device_key(),
            },
        );
        decode.connect_error_headers = self.connect_error_headers;
        decode.log_records = self.log_records;
        Ok(Box::new(decode))
    }
}

/// Messages taken from the input at once: those already waiting, up to this many.
const GROUP_MESSAGES: usize = 256;
/// Rows of consecutive messages are merged into one batch up to this many.
const MERGE_ROWS: usize = 1024;

pub struct Decode {
    decoder: Decoder,
    /// Add Connect's context headers to dead-lettered records.
    pub connect_error_headers: bool,
    /// Log the start of a rejected record with its reason (when not dead-lettered).
    pub log_records: bool,
}

impl Decode {
    pub fn new(format: Format, options: DecodeOptions) -> Self {
        Decode {
            decoder: Decoder::new(format, options),
            connect_error_headers: false,
            log_records: false,
        }
    }

    /// Decodes one message and sends what came of it.
    pub async fn handle(
        &mut self,
        id: &str,
        msg: RawMessage,
        outputs: &mut Outputs,
    ) -> Result<(), ComponentError> {
        self.handle_many(id, vec![msg], outputs).await
    }

    /// Decodes messages and sends what came of them. Rows of consecutive messages
    /// for the same table and schema go out as one batch carrying every message's
    /// finalizers: one-row messages would otherwise cost a batch, a metadata copy
    /// and a channel hop each.
    pub async fn handle_many(
        &mut self,
        id: &str,
        msgs: Vec<RawMessage>,
        outputs: &mut Outputs,
    ) -> Result<(), ComponentError> {
        let mut merged: Vec<RowBatch> = Vec::new();
        for msg in msgs {
            let decoded = self.decoder.decode(&msg.payload);
            let RawMessage {
                payload,
                key,
                headers,
                meta,
                finalizers,
            } = msg;
            for batch in decoded.batches {
                // Only into the table's latest batch, so its rows keep their order.
                let open = merged
                    .iter_mut()
                    .rev()
                    .find(|m| m.target == batch.target)
                    .filter(|m| m.schema == batch.schema);
                if let Some(m) = open {
                    m.rows.extend(batch.rows);
                    m.finalizers.merge(finalizers.fork());
                    continue;
                }
                let mut m = (*meta).clone();
                m.table = Some(batch.target.table.clone());
                if self.decoder.format() == Format::LineInfluxdb {
                    // Types guessed from suffixes: the sink creates tables from these
                    // only when told to (auto_create = "always"), as the seed says.
                    m.schema_certainty = SchemaCertainty::Partial;
                }
                if batch.target.database.is_some() {
                    m.database = batch.target.database.clone();
                }
                merged.push(RowBatch {
                    target: batch.target,
                    schema: batch.schema,
                    rows: batch.rows,
                    meta: Arc::new(m),
                    finalizers: finalizers.fork(),
                });
            }
            if merged.iter().any(|m| m.rows.len() >= MERGE_ROWS) {
                for m in merged.drain(..) {
                    outputs.send(Event::Rows(m)).await?;
                }
            }
            let rejected = decoded.errors.len();
            let connected = outputs.is_connected(DROPPED_OUTPUT);
            for err in decoded.errors {
                // Counted by kind whether dead-lettered or only logged.
                outputs.metrics().error("decode");
                let span = if err.span.start <= err.span.end && err.span.end <= payload.len() {
                    err.span.clone()
                } else {
                    0..payload.len()
                };
                if connected {
                    let mut h = headers.clone();
                    let reason = err.to_string();
                    h.push((ERROR_HEADER.to_string(), Bytes::from(reason.clone())));
                    push_origin_headers(&meta, &mut h);
                    if self.connect_error_headers {
                        push_connect_headers(&meta, &reason, &mut h);
                    }
                    // Its status is the dead-letter write's: a dead-lettered
                    // record is handled, whatever the source's reject policy.
                    let fin = finalizers.fork();
                    let dropped = RawMessage {
                        payload: payload.slice(span),
                        key: key.clone(),
                        headers: h,
                        meta: meta.clone(),
                        finalizers: fin,
                    };
                    outputs.send_to(DROPPED_OUTPUT, Event::Raw(dropped)).await?;
                } else if self.log_records {
                    tracing::warn!(
                        component = id,
                        topic = meta.topic.as_deref().unwrap_or(""),
                        partition = meta.partition.unwrap_or(-1),
                        offset = meta.offset.unwrap_or(-1),
                        reason = %err,
                        record = %crate::formats::text::excerpt(&payload[span]),
                        "record rejected"
                    );
                } else {
                    log_rejected(id, &meta, &err.to_string());
                }
            }
            if rejected > 0 {
                outputs.metrics().rejected(rejected as u64);
            }
            finalizers.finish(if rejected > 0 && !connected {
                EventStatus::Rejected
            } else {
                EventStatus::Delivered
            });
        }
        for m in merged {
            outputs.send(Event::Rows(m)).await?;
        }
        Ok(())
    }
}

pub(crate) fn log_rejected(id: &str, meta: &Metadata, reason: &str) {
    tracing::warn!(
        component = id,
        topic = meta.topic.as_deref().unwrap_or(""),
        partition = meta.partition.unwrap_or(-1),
        offset = meta.offset.unwrap_or(-1),
        reason,
        "record rejected"
    );
}

#[async_trait]
impl Component for Decode {
    async fn run(mut self: Box<Self>, mut cx: ComponentContext) -> Result<(), ComponentError> {
        let mut input = cx.take_input();
        let mut events = Vec::with_capacity(GROUP_MESSAGES);
        while input.recv_many(&mut events, GROUP_MESSAGES).await > 0 {
            let mut msgs = Vec::with_capacity(events.len());
            for event in events.drain(..) {
                match event {
                    Event::Raw(msg) => msgs.push(msg),
                    Event::Rows(b) => {
                        // The graph's type check keeps Rows away; refuse rather than drop.
                        tracing::error!(component = %cx.id, "decode got Rows; rejected");
                        b.finalizers.finish(EventStatus::Rejected);
                    }
                }
            }
            self.handle_many(&cx.id, msgs, &mut cx.outputs).await?;
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
    use crate::event::Value;

    fn outputs(dropped: bool) -> (Outputs, mpsc::Receiver<Event>, mpsc::Receiver<Event>) {
        let m = ComponentMetrics::new("d", "decode");
        let (tx, rx) = mpsc::channel(64);
        let (dtx, drx) = mpsc::channel(64);
        let mut named = BTreeMap::new();
        if dropped {
            named.insert(
                DROPPED_OUTPUT.to_string(),
                Output::new(vec![dtx], m.clone()),
            );
        }
        (
            Outputs::new(Output::new(vec![tx], m.clone()), named, m),
            rx,
            drx,
        )
    }

    fn message(payload: &str) -> (RawMessage, crate::ack::BatchStatusReceiver) {
        let (fin, rx) = BatchNotifier::pair();
        let msg = RawMessage {
            payload: Bytes::from(payload.to_string()),
            key: Some(Bytes::from_static(b"k")),
            headers: vec![("h".into(), Bytes::from_static(b"v"))],
            meta: Arc::new(Metadata {
                topic: Some("in".into()),
                partition: Some(3),
                offset: Some(42),
                ..Default::default()
            }),
            finalizers: fin,
        };
        (msg, rx)
    }

    fn decoder() -> Decode {
        Decode::new(Format::LineInfluxdb, DecodeOptions::new(Precision::Ms))
    }

    #[tokio::test]
    async fn delivered_only_when_every_batch_is() {
        let (mut out, mut rx, _drx) = outputs(false);
        let (msg, mut status) = message("a v=1i 1\nb v=2i 2\n");
        decoder().handle("d", msg, &mut out).await.unwrap();
        let Some(Event::Rows(a)) = rx.recv().await else {
            panic!()
        };
        let Some(Event::Rows(b)) = rx.recv().await else {
            panic!()
        };
        assert_eq!(a.meta.table.as_deref(), Some("a"));
        assert_eq!(a.meta.offset, Some(42));
        a.finalizers.finish(EventStatus::Delivered);
        assert_eq!(status.try_recv(), None);
        b.finalizers.finish(EventStatus::Delivered);
        assert_eq!(status.await, EventStatus::Delivered);
    }

    #[tokio::test]
    async fn rejected_records_go_to_dropped_with_reason_and_origin() {
        let (mut out, mut rx, mut drx) = outputs(true);
        let (msg, status) = message("a v=1i 1\na v=70000i16 2\n");
        decoder().handle("d", msg, &mut out).await.unwrap();
        let Some(Event::Rows(a)) = rx.recv().await else {
            panic!()
        };
        assert_eq!(a.rows.len(), 1);
        let Some(Event::Raw(bad)) = drx.recv().await else {
            panic!()
        };
        assert_eq!(&bad.payload[..], b"a v=70000i16 2");
        assert_eq!(bad.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(bad.headers[0], ("h".to_string(), Bytes::from_static(b"v")));
        assert_eq!(bad.headers[1].0, ERROR_HEADER);
        assert_eq!(
            &bad.headers[1].1[..],
            b"line 2, field \"v\": 70000 is out of range for INT2"
        );
        let origin: Vec<(&str, &[u8])> = bad.headers[2..]
            .iter()
            .map(|(k, v)| (k.as_str(), &v[..]))
            .collect();
        assert_eq!(
            origin,
            [
                ("kwpipe.topic", &b"in"[..]),
                ("kwpipe.partition", b"3"),
                ("kwpipe.offset", b"42")
            ]
        );
        assert_eq!(bad.meta.offset, Some(42));
        a.finalizers.finish(EventStatus::Delivered);
        bad.finalizers.finish(EventStatus::Delivered);
        // Dead-lettered is handled: Delivered once the dead-letter write is, so
        // even a source that stops on rejects moves past it.
        assert_eq!(status.await, EventStatus::Delivered);
    }

    /// `errors.deadletterqueue.context.headers.enable`: Connect's headers too.
    #[tokio::test]
    async fn connect_context_headers_on_request() {
        let (mut out, _rx, mut drx) = outputs(true);
        let (msg, _status) = message("a v=x 1\n");
        let mut d = decoder();
        d.connect_error_headers = true;
        d.handle("d", msg, &mut out).await.unwrap();
        let Some(Event::Raw(bad)) = drx.recv().await else {
            panic!()
        };
        let connect: Vec<(&str, String)> = bad
            .headers
            .iter()
            .filter(|(k, _)| k.starts_with("__connect."))
            .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        let reason = bad
            .headers
            .iter()
            .find(|(k, _)| k == ERROR_HEADER)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap();
        assert_eq!(
            connect,
            [
                ("__connect.errors.topic", "in".to_string()),
                ("__connect.errors.partition", "3".to_string()),
                ("__connect.errors.offset", "42".to_string()),
                ("__connect.errors.stage", "VALUE_CONVERTER".to_string()),
                (
                    "__connect.errors.exception.class.name",
                    "org.apache.kafka.connect.errors.DataException".to_string()
                ),
                ("__connect.errors.exception.message", reason),
            ]
        );
        bad.finalizers.finish(EventStatus::Delivered);
    }

    #[tokio::test]
    async fn a_failed_dead_letter_blocks_the_message() {
        let (mut out, mut rx, mut drx) = outputs(true);
        let (msg, status) = message("a v=x 1\n");
        decoder().handle("d", msg, &mut out).await.unwrap();
        assert!(rx.try_recv().is_err());
        let Some(Event::Raw(bad)) = drx.recv().await else {
            panic!()
        };
        bad.finalizers.finish(EventStatus::Failed);
        assert_eq!(status.await, EventStatus::Failed);
    }

    #[tokio::test]
    async fn without_dropped_output_rejects_are_logged_and_final() {
        let (mut out, mut rx, _drx) = outputs(false);
        let (msg, status) = message("bad\n");
        decoder().handle("d", msg, &mut out).await.unwrap();
        assert!(rx.try_recv().is_err());
        assert_eq!(status.await, EventStatus::Rejected);
    }

    #[tokio::test]
    async fn consecutive_messages_of_one_table_share_a_batch() {
        let (mut out, mut rx, _drx) = outputs(false);
        let (m1, mut s1) = message("a v=1i 1\n");
        let (m2, mut s2) = message("b v=1i 1\n");
        let (m3, mut s3) = message("a v=2i 2\n");
        let (m4, mut s4) = message("a v=3.5 3\n");
        decoder()
            .handle_many("d", vec![m1, m2, m3, m4], &mut out)
            .await
            .unwrap();
        let mut batches = Vec::new();
        while let Ok(Event::Rows(b)) = rx.try_recv() {
            batches.push(b);
        }
        // a's two integer rows together, in order; b alone; a's float row has
        // another schema, so a batch of its own after them.
        let shape: Vec<(&str, Vec<Value>)> = batches
            .iter()
            .map(|b| {
                (
                    b.target.table.as_str(),
                    b.rows.iter().map(|r| r[1].clone()).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("a", vec![Value::Int8(1), Value::Int8(2)]),
                ("b", vec![Value::Int8(1)]),
                ("a", vec![Value::Float8(3.5)]),
            ]
        );
        let mut it = batches.into_iter();
        it.next().unwrap().finalizers.finish(EventStatus::Delivered);
        assert_eq!((&mut s1).await, EventStatus::Delivered);
        assert_eq!((&mut s3).await, EventStatus::Delivered);
        assert_eq!(s2.try_recv(), None);
        it.next().unwrap().finalizers.finish(EventStatus::Delivered);
        assert_eq!((&mut s2).await, EventStatus::Delivered);
        assert_eq!(s4.try_recv(), None);
        it.next().unwrap().finalizers.finish(EventStatus::Failed);
        assert_eq!(s4.await, EventStatus::Failed);
    }

    #[test]
    fn config_is_strict() {
        let ok: DecodeConfig =
            toml::from_str("format = \"json_kaiwudb\"\ntimestamp_precision = \"us\"").unwrap();
        assert_eq!(ok.precision(), Precision::Us);
        // Issue 18, item 10: unset, the unit is what the format's writers send.
        let influx: DecodeConfig = toml::from_str("format = \"line_influxdb\"").unwrap();
        assert_eq!(influx.precision(), Precision::Ns);
        let json: DecodeConfig = toml::from_str("format = \"json_kaiwudb\"").unwrap();
        assert_eq!(json.precision(), Precision::Ms);
        let keyed: DecodeConfig =
            toml::from_str("format = \"line_influxdb\"\nprimary_tags = [\"host\"]").unwrap();
        keyed.check().unwrap();
        assert_eq!(keyed.device_key(), DeviceKey::Tags(vec!["host".into()]));
        let both: DecodeConfig = toml::from_str(
            "format = \"line_influxdb\"\nprimary_tags = [\"host\"]\ndevice_key = true",
        )
        .unwrap();
        assert!(both.check().is_err());
        let json: DecodeConfig =
            toml::from_str("format = \"json_kaiwudb\"\ndevice_key = true").unwrap();
        assert!(json.check().is_err());
        let err = toml::from_str::<DecodeConfig>("format = \"json\"").unwrap_err();
        assert!(err.to_string().contains("unknown format \"json\""), "{err}");
        let err = toml::from_str::<DecodeConfig>("format = \"json_kaiwudb\"\nprecision = \"ms\"")
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `precision`"),
            "{err}"
        );
    }
}
