//! `kafka` source: a consumer group member (or `concurrency` of them) whose offsets
//! follow end-to-end acknowledgements.
//!
//! Design, and why:
//! - Each group member is an rdkafka `BaseConsumer` polled by a thread of its own.
//!   Rebalance callbacks run on the polling thread and must block while in-flight
//!   events drain; on a thread of our own that blocks nothing else, and the tokio
//!   side never blocks.
//! - One async task emits the messages, feeds acknowledgements to a pure state
//!   machine (the driver) and stores the offsets it allows. Messages of one
//!   partition are cut into chunks (a run of consecutive messages polled
//!   together) that share one `BatchNotifier`, so tracking costs one future per
//!   chunk, not per message.
//! - Offsets: `enable.auto.offset.store=false`; the driver stores an offset only
//!   when every chunk up to it came back Delivered or Rejected, in order, per
//!   partition. librdkafka auto-commits what is stored every `commit_interval`.
//! - A Failed chunk blocks its partition: nothing after it is ever stored. The
//!   partition is seeked back to the chunk's first offset (after a backoff) and
//!   re-delivered in-process; acknowledgements of later chunks are ignored. Every
//!   (re)start of a partition carries an epoch so messages fetched before a seek or a
//!   rebalance are recognised and dropped, never emitted with a stale position.
//!   This is the opposite of Vector issue #24215, where later acks moved the offset
//!   past a failed message.
//! - On revoke (rebalance) and shutdown: wait up to `drain_timeout` for in-flight
//!   acknowledgements, store what completed, commit synchronously.
//! - Memory: at most `max_in_flight` messages and `max_in_flight_bytes` of payload
//!   polled and not yet acknowledged (plus librdkafka's bounded prefetch queue).
//!   Beyond that a polling thread stops polling, which keeps what librdkafka
//!   prefetched; after 5 s of that (an outage downstream) it pauses its partitions
//!   (purging the prefetch) and polls on, so group membership and rebalances are
//!   still served.
//!
//! Modules, lowest first: `error`, `config` (options), `flow` (the in-flight bounds),
//! `messages` (what threads and task say), `driver` (the pure bookkeeping),
//! `member` (rdkafka callbacks and the polling thread), `task` (the component).

mod config;
mod driver;
mod error;
mod flow;
mod member;
mod messages;
mod task;

use async_trait::async_trait;
use rdkafka::consumer::BaseConsumer;

pub use config::{KafkaSourceConfig, OffsetReset, Topics};
pub use error::KafkaSourceError;

use crate::ack::RejectPolicy;
use crate::api::{BuildContext, Component, ComponentConfig, ComponentError, OutputDef};
use crate::event::EventKind;
use crate::kafka;
use flow::Limits;
use task::KafkaSource;

#[async_trait]
impl ComponentConfig for KafkaSourceConfig {
    fn type_name(&self) -> &'static str {
        "kafka"
    }

    fn input_kinds(&self) -> Vec<EventKind> {
        Vec::new()
    }

    fn outputs(&self) -> Vec<OutputDef> {
        vec![OutputDef::default(EventKind::Raw)]
    }

    fn check(&self) -> Result<(), ComponentError> {
        Ok(self.validate()?)
    }

    fn reject_policy(&self) -> Option<RejectPolicy> {
        Some(self.on_reject)
    }

    async fn healthcheck(&self, cx: &BuildContext) -> Result<(), ComponentError> {
        self.validate()?;
        let config = self
            .client_config(&cx.id, 0)
            .map_err(KafkaSourceError::from)?;
        kafka::healthcheck::<BaseConsumer<kafka::CheckContext>>(
            config,
            &self.security(),
            self.bootstrap_servers.clone(),
            self.topics.0.clone(),
        )
        .await
        .map_err(ComponentError::msg)
    }

    async fn build(&self, cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        self.validate()?;
        let configs = (0..self.concurrency)
            .map(|member| self.client_config(&cx.id, member))
            .collect::<Result<_, _>>()
            .map_err(KafkaSourceError::from)?;
        Ok(Box::new(KafkaSource {
            configs,
            topics: self.topics.0.clone(),
            drain_timeout: self.drain_timeout,
            on_reject: self.on_reject,
            limits: Limits {
                messages: self.max_in_flight,
                bytes: self.max_in_flight_bytes,
            },
        }))
    }
}
