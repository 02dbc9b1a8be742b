//! What a table's export shows of itself: its counters, the lag gauge and the
//! periodic progress line.

use std::time::{Duration, Instant};

use crate::event::{Precision, Timestamp};
use crate::formats;

pub(super) struct Meters {
    pub rows: metrics::Counter,
    pub queries: metrics::Counter,
    pub lag: metrics::Gauge,
}

impl Meters {
    pub fn new(labels: &[(&'static str, String)]) -> Self {
        Meters {
            rows: metrics::counter!("kwdb_poll_rows_total", labels),
            queries: metrics::counter!("kwdb_poll_queries_total", labels),
            lag: metrics::gauge!("kwdb_poll_lag_seconds", labels),
        }
    }
}

/// Milliseconds since the Unix epoch, now (the crate's one clock for that).
fn unix_now_ms() -> i64 {
    formats::time::now(Precision::Ms).value
}

/// Where the export stands, for the lag gauge and the progress line.
pub(super) struct Progress {
    /// The timestamp of the last row handed on.
    last_ts: Option<Timestamp>,
    last_line: Instant,
    /// Rows handed on when the last progress line was written.
    rows_at_last_line: u64,
}

impl Progress {
    pub fn new(exported: u64) -> Self {
        Progress {
            last_ts: None,
            last_line: Instant::now(),
            rows_at_last_line: exported,
        }
    }

    /// A row with this timestamp was handed on.
    pub fn handed_on(&mut self, ts: Timestamp) {
        self.last_ts = Some(ts);
    }

    /// Sets the lag gauge and writes the progress line when one is due.
    /// `exported` rows are acknowledged, `in_flight` handed on and not yet.
    pub fn report(
        &mut self,
        table: &str,
        interval: Duration,
        exported: u64,
        in_flight: u64,
        meters: &Meters,
    ) {
        if let Some(ts) = self.last_ts {
            meters
                .lag
                .set((unix_now_ms() - ts.as_millis()).max(0) as f64 / 1000.0);
        }
        if self.last_line.elapsed() >= interval {
            let sent = exported + in_flight;
            let rate =
                (sent - self.rows_at_last_line) as f64 / self.last_line.elapsed().as_secs_f64();
            tracing::info!(
                table = %table,
                rows_exported = exported,
                rows_in_flight = sent - exported,
                rows_per_sec = rate as u64,
                lag_secs = self.last_ts.map(|ts| (unix_now_ms() - ts.as_millis()).max(0) / 1000),
                "export progress"
            );
            self.last_line = Instant::now();
            self.rows_at_last_line = sent;
        }
    }
}
