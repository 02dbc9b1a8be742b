//! `file`: events appended to a file, one line each.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::BufWriter;

use super::lines::write_all;
use crate::api::{
    BuildContext, Component, ComponentConfig, ComponentContext, ComponentError, OutputDef,
};
use crate::event::EventKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    pub path: PathBuf,
    /// Start from an empty file instead of appending.
    #[serde(default)]
    pub truncate: bool,
}

#[async_trait]
impl ComponentConfig for FileSinkConfig {
    fn type_name(&self) -> &'static str {
        "file"
    }

    fn input_kinds(&self) -> Vec<EventKind> {
        vec![EventKind::Raw, EventKind::Rows]
    }

    fn outputs(&self) -> Vec<OutputDef> {
        Vec::new()
    }

    async fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        Ok(Box::new(FileSink {
            path: self.path.clone(),
            truncate: self.truncate,
        }))
    }
}

struct FileSink {
    path: PathBuf,
    truncate: bool,
}

#[async_trait]
impl Component for FileSink {
    async fn run(self: Box<Self>, mut cx: ComponentContext) -> Result<(), ComponentError> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(!self.truncate)
            .truncate(self.truncate)
            .open(&self.path)
            .await
            .map_err(|e| ComponentError::io(format!("cannot open {}", self.path.display()), e))?;
        let mut writer = BufWriter::with_capacity(64 * 1024, file);
        write_all(&mut cx, &mut writer).await
    }
}
