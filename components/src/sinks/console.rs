//! `console`: events to standard output (or standard error), one line each.

use async_trait::async_trait;
use serde::Deserialize;

use super::lines::write_all;
use crate::api::{
    BuildContext, Component, ComponentConfig, ComponentContext, ComponentError, OutputDef,
};
use crate::event::EventKind;

#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    #[default]
    Stdout,
    Stderr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    #[serde(default)]
    pub target: Stream,
}

#[async_trait]
impl ComponentConfig for ConsoleConfig {
    fn type_name(&self) -> &'static str {
        "console"
    }

    fn input_kinds(&self) -> Vec<EventKind> {
        vec![EventKind::Raw, EventKind::Rows]
    }

    fn outputs(&self) -> Vec<OutputDef> {
        Vec::new()
    }

    async fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        Ok(Box::new(Console {
            target: self.target,
        }))
    }
}

struct Console {
    target: Stream,
}

#[async_trait]
impl Component for Console {
    async fn run(self: Box<Self>, mut cx: ComponentContext) -> Result<(), ComponentError> {
        match self.target {
            Stream::Stdout => write_all(&mut cx, &mut tokio::io::stdout()).await,
            Stream::Stderr => write_all(&mut cx, &mut tokio::io::stderr()).await,
        }
    }
}
