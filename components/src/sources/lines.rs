//! Reading newline-delimited records into `Raw` events, with acknowledgement
//! tracking shared by the `stdin` and `file` sources.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::ack::{
    BatchNotifier, BatchStatusReceiver, EventStatus, OrderedAcks, RejectPolicy, Ticket,
};
use crate::api::{ComponentContext, ComponentError};
use crate::event::{Event, Metadata, RawMessage};

/// Statuses still to come back for what a source emitted, one per chunk (buffer
/// fill). The lines sources keep no position to commit; they use the shared
/// ordered bookkeeping so a chunk that did not pass is counted the same way as
/// everywhere else (a held entry), and report them at the end.
pub(crate) struct PendingAcks {
    pending: Vec<(Ticket, BatchStatusReceiver)>,
    order: OrderedAcks<()>,
}

impl Default for PendingAcks {
    fn default() -> Self {
        PendingAcks {
            pending: Vec::new(),
            // stdin and file have no `on_reject` option: rejects pass, as before.
            order: OrderedAcks::new(RejectPolicy::Skip),
        }
    }
}

impl PendingAcks {
    pub fn push(&mut self, rx: BatchStatusReceiver) {
        let ticket = self.order.push(());
        self.pending.push((ticket, rx));
        if self.pending.len().is_multiple_of(1024) {
            self.collect_ready();
        }
    }

    /// Chunks that were not delivered.
    pub fn failed(&self) -> usize {
        self.order.held()
    }

    fn record(&mut self, ticket: Ticket, status: EventStatus) {
        self.order.ack(ticket, status);
        // Nothing to commit: what passed is simply forgotten.
        while self.order.pop_passed().is_some() {}
    }

    /// Records the statuses that are already known.
    pub fn collect_ready(&mut self) {
        let mut still = Vec::with_capacity(self.pending.len());
        for (ticket, mut rx) in std::mem::take(&mut self.pending) {
            match rx.try_recv() {
                Some(s) => self.record(ticket, s),
                None => still.push((ticket, rx)),
            }
        }
        self.pending = still;
    }

    /// Waits for every status.
    pub async fn wait_all(&mut self) {
        for (ticket, rx) in std::mem::take(&mut self.pending) {
            let s = rx.await;
            self.record(ticket, s);
        }
    }
}

/// How a line reader ends.
pub(crate) enum LinesEnd {
    Eof,
    Shutdown,
}

/// Reads lines from `reader` and emits each as a Raw event, until EOF or shutdown.
/// Lines read in one buffer fill share a notifier, so acknowledgement costs stay
/// per-chunk rather than per-line.
pub(crate) async fn read_lines<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    cx: &mut ComponentContext,
    meta: &Arc<Metadata>,
    line_no: &mut u64,
    acks: &mut PendingAcks,
    max_line_bytes: usize,
) -> Result<LinesEnd, ComponentError> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let shutdown = cx.shutdown.clone();
    loop {
        let chunk = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(LinesEnd::Shutdown),
            r = reader.fill_buf() => r.map_err(|e| ComponentError::io("reading input", e))?,
        };
        if chunk.is_empty() {
            if !buf.is_empty() {
                // A last line without a newline is still a line.
                let line = buf.split().freeze();
                *line_no += 1;
                let (notifier, rx) = BatchNotifier::new_with_receiver();
                emit(cx, meta, *line_no, line, &notifier).await?;
                acks.push(rx);
            }
            return Ok(LinesEnd::Eof);
        }
        let len = chunk.len();
        let (notifier, rx) = BatchNotifier::new_with_receiver();
        let mut start = 0;
        let mut lines = Vec::new();
        for (i, b) in chunk.iter().enumerate() {
            if *b == b'\n' {
                buf.extend_from_slice(&chunk[start..i]);
                lines.push(buf.split().freeze());
                start = i + 1;
            }
        }
        buf.extend_from_slice(&chunk[start..]);
        reader.consume(len);
        if buf.len() > max_line_bytes {
            cx.outputs.metrics().error("line_too_long");
            tracing::warn!(
                line = *line_no + lines.len() as u64 + 1,
                max_line_bytes,
                "line longer than max_line_bytes; rejected"
            );
            buf.clear();
            // Skip to the end of the overlong line.
            let mut discard = Vec::new();
            reader
                .read_until(b'\n', &mut discard)
                .await
                .map_err(|e| ComponentError::io("reading input", e))?;
            *line_no += 1;
        }
        for line in lines {
            *line_no += 1;
            emit(cx, meta, *line_no, line, &notifier).await?;
        }
        drop(notifier);
        acks.push(rx);
    }
}

async fn emit(
    cx: &mut ComponentContext,
    meta: &Arc<Metadata>,
    line_no: u64,
    mut line: Bytes,
    notifier: &BatchNotifier,
) -> Result<(), ComponentError> {
    if line.last() == Some(&b'\r') {
        line.truncate(line.len() - 1);
    }
    let _ = line_no;
    let msg = RawMessage {
        payload: line,
        meta: meta.clone(),
        finalizers: notifier.finalizer(),
        ..Default::default()
    };
    cx.outputs.send(Event::Raw(msg)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_chunk_not_delivered_is_counted_once() {
        let mut acks = PendingAcks::default();
        for status in [
            EventStatus::Delivered,
            EventStatus::Failed,
            EventStatus::Rejected,
            EventStatus::Failed,
        ] {
            let (fin, rx) = BatchNotifier::pair();
            acks.push(rx);
            fin.finish(status);
        }
        acks.collect_ready();
        assert_eq!(acks.failed(), 2, "rejects pass: stdin and file skip them");
        let (fin, rx) = BatchNotifier::pair();
        acks.push(rx);
        drop(fin); // lost: counts as failed
        acks.wait_all().await;
        assert_eq!(acks.failed(), 3);
    }
}
