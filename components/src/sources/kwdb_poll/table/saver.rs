//! Durable checkpoint writes off the poller's task.

use futures::FutureExt as _;
use tokio::task::JoinHandle;

use super::super::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use super::super::PollError;

/// Writes a table's checkpoints on a blocking thread, one at a time, so the next
/// pages are read while the disk syncs (a durable write takes milliseconds to tens
/// of milliseconds). While one write runs, newer acknowledgements coalesce into
/// the next. The caller counts `pages()` against `max_in_flight`: a page is only
/// out of the window once a checkpoint covering it is on disk.
pub(super) struct Saver {
    store: CheckpointStore,
    table: String,
    running: Option<JoinHandle<Result<(), CheckpointError>>>,
    /// Pages the running write covers.
    saving_pages: usize,
    /// Pages acknowledged since the running write started, and their checkpoint.
    unsaved_pages: usize,
    next: Option<Checkpoint>,
}

impl Saver {
    pub(super) fn new(store: CheckpointStore, table: String) -> Self {
        Saver {
            store,
            table,
            running: None,
            saving_pages: 0,
            unsaved_pages: 0,
            next: None,
        }
    }

    /// Pages acknowledged whose checkpoint is not yet durable.
    pub(super) fn pages(&self) -> usize {
        self.saving_pages + self.unsaved_pages
    }

    /// `pages` more were acknowledged; `cp` is the checkpoint after them.
    pub(super) fn acknowledged(&mut self, pages: usize, cp: Checkpoint) {
        self.unsaved_pages += pages;
        self.next = Some(cp);
        self.start();
    }

    fn start(&mut self) {
        if self.running.is_some() {
            return;
        }
        let Some(cp) = self.next.take() else {
            return;
        };
        let (store, table) = (self.store.clone(), self.table.clone());
        self.running = Some(tokio::task::spawn_blocking(move || {
            store.save_durably(&table, &cp)
        }));
        self.saving_pages = std::mem::take(&mut self.unsaved_pages);
    }

    fn ended(
        &mut self,
        r: Result<Result<(), CheckpointError>, tokio::task::JoinError>,
    ) -> Result<(), PollError> {
        self.running = None;
        self.saving_pages = 0;
        match r {
            Ok(r) => r?,
            Err(e) => return Err(PollError::Config(format!("checkpoint writer failed: {e}"))),
        }
        self.start();
        Ok(())
    }

    /// Takes the result of a write that ended, without waiting.
    pub(super) fn poll(&mut self) -> Result<(), PollError> {
        match self.running.as_mut().and_then(|h| h.now_or_never()) {
            Some(r) => self.ended(r),
            None => Ok(()),
        }
    }

    /// Resolves when the running write ends (never when none runs). Cancel-safe:
    /// the write stays where it is if this is dropped.
    pub(super) async fn done(&mut self) -> Result<(), PollError> {
        let Some(h) = self.running.as_mut() else {
            return std::future::pending().await;
        };
        let r = h.await;
        self.ended(r)
    }

    /// Waits until every write started or queued has ended.
    pub(super) async fn finish(&mut self) -> Result<(), PollError> {
        while let Some(h) = self.running.take() {
            let r = h.await;
            self.ended(r)?;
        }
        Ok(())
    }
}
