//! `stdin`: lines from standard input, one Raw event each.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::BufReader;

use super::default_max_line_bytes;
use super::lines::{read_lines, PendingAcks};
use crate::api::{
    BuildContext, Component, ComponentConfig, ComponentContext, ComponentError, OutputDef,
};
use crate::event::{EventKind, Metadata};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    /// Longer lines are rejected (logged and counted), not buffered without bound.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

#[async_trait]
impl ComponentConfig for StdinConfig {
    fn type_name(&self) -> &'static str {
        "stdin"
    }

    fn input_kinds(&self) -> Vec<EventKind> {
        Vec::new()
    }

    fn outputs(&self) -> Vec<OutputDef> {
        vec![OutputDef::default(EventKind::Raw)]
    }

    async fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        Ok(Box::new(Stdin {
            max_line_bytes: self.max_line_bytes,
        }))
    }
}

struct Stdin {
    max_line_bytes: usize,
}

#[async_trait]
impl Component for Stdin {
    async fn run(self: Box<Self>, mut cx: ComponentContext) -> Result<(), ComponentError> {
        let mut reader = BufReader::with_capacity(64 * 1024, tokio::io::stdin());
        let meta = Arc::new(Metadata::default());
        let mut line_no = 0;
        let mut acks = PendingAcks::default();
        read_lines(
            &mut reader,
            &mut cx,
            &meta,
            &mut line_no,
            &mut acks,
            self.max_line_bytes,
        )
        .await?;
        drop(cx.outputs);
        acks.wait_all().await;
        if acks.failed() > 0 {
            return Err(ComponentError::Undelivered(format!(
                "{} chunk(s) of input were not delivered",
                acks.failed()
            )));
        }
        Ok(())
    }
}
