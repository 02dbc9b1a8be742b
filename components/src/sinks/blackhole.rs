//! `blackhole`: counts and discards, for benchmarks and dry runs.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;

use crate::ack::EventStatus;
use crate::api::{
    BuildContext, Component, ComponentConfig, ComponentContext, ComponentError, OutputDef,
};
use crate::durations;
use crate::event::EventKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {
    /// How often to log the totals; unset logs only at the end.
    #[serde(default, deserialize_with = "durations::deserialize_opt")]
    pub print_interval: Option<Duration>,
}

#[async_trait]
impl ComponentConfig for BlackholeConfig {
    fn type_name(&self) -> &'static str {
        "blackhole"
    }

    fn input_kinds(&self) -> Vec<EventKind> {
        vec![EventKind::Raw, EventKind::Rows]
    }

    fn outputs(&self) -> Vec<OutputDef> {
        Vec::new()
    }

    async fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        Ok(Box::new(Blackhole {
            print_interval: self.print_interval,
        }))
    }
}

struct Blackhole {
    print_interval: Option<Duration>,
}

#[async_trait]
impl Component for Blackhole {
    async fn run(self: Box<Self>, mut cx: ComponentContext) -> Result<(), ComponentError> {
        let mut input = cx.take_input();
        let started = Instant::now();
        let mut last_print = started;
        let (mut events, mut records, mut bytes) = (0u64, 0u64, 0u64);
        while let Some(mut event) = input.recv().await {
            events += 1;
            records += event.count() as u64;
            bytes += event.size_hint() as u64;
            event.take_finalizers().finish(EventStatus::Delivered);
            if let Some(every) = self.print_interval {
                if last_print.elapsed() >= every {
                    last_print = Instant::now();
                    tracing::info!(events, records, bytes, "blackhole totals");
                }
            }
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        tracing::info!(
            events,
            records,
            bytes,
            records_per_sec = (records as f64 / secs) as u64,
            "blackhole done"
        );
        Ok(())
    }
}
