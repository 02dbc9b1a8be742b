//! `file`: lines of a file, read once from the start or followed as it grows.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::BufReader;

use super::default_max_line_bytes;
use super::lines::{read_lines, LinesEnd, PendingAcks};
use crate::api::{
    BuildContext, Component, ComponentConfig, ComponentContext, ComponentError, OutputDef,
};
use crate::event::{EventKind, Metadata};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    pub path: PathBuf,
    /// Keep reading as the file grows (like `tail -f`) instead of stopping at its end.
    #[serde(default)]
    pub follow: bool,
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

#[async_trait]
impl ComponentConfig for FileSourceConfig {
    fn type_name(&self) -> &'static str {
        "file"
    }

    fn input_kinds(&self) -> Vec<EventKind> {
        Vec::new()
    }

    fn outputs(&self) -> Vec<OutputDef> {
        vec![OutputDef::default(EventKind::Raw)]
    }

    async fn healthcheck(&self, _cx: &BuildContext) -> Result<(), ComponentError> {
        tokio::fs::metadata(&self.path)
            .await
            .map(|_| ())
            .map_err(|e| ComponentError::io(format!("cannot read {}", self.path.display()), e))
    }

    async fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        Ok(Box::new(FileSource {
            path: self.path.clone(),
            follow: self.follow,
            max_line_bytes: self.max_line_bytes,
        }))
    }
}

struct FileSource {
    path: PathBuf,
    follow: bool,
    max_line_bytes: usize,
}

const FOLLOW_POLL: Duration = Duration::from_millis(200);

#[async_trait]
impl Component for FileSource {
    async fn run(self: Box<Self>, mut cx: ComponentContext) -> Result<(), ComponentError> {
        let file = tokio::fs::File::open(&self.path)
            .await
            .map_err(|e| ComponentError::io(format!("cannot open {}", self.path.display()), e))?;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let mut meta = Metadata::default();
        meta.extra
            .insert("path".into(), self.path.display().to_string());
        let meta = Arc::new(meta);
        let mut line_no = 0;
        let mut acks = PendingAcks::default();
        loop {
            let end = read_lines(
                &mut reader,
                &mut cx,
                &meta,
                &mut line_no,
                &mut acks,
                self.max_line_bytes,
            )
            .await?;
            match end {
                LinesEnd::Eof if self.follow => {
                    tokio::select! {
                        _ = cx.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(FOLLOW_POLL) => {}
                    }
                }
                _ => break,
            }
        }
        tracing::debug!(lines = line_no, "file read; waiting for acknowledgements");
        drop(cx.outputs);
        acks.wait_all().await;
        if acks.failed() > 0 {
            return Err(ComponentError::Undelivered(format!(
                "{} chunk(s) of {} were not delivered",
                acks.failed(),
                self.path.display()
            )));
        }
        Ok(())
    }
}
