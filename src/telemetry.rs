//! Logs go to standard error (standard output belongs to the `console` sink), as
//! human-readable lines, filtered by `--log-level` or `KWPIPE_LOG`. Every field
//! is escaped ([`escape`]) and repeated messages are rate-limited per component
//! and reason ([`limit`]), whatever logs them, librdkafka included.

pub mod escape;
pub mod limit;

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

/// Per component and reason, at most `LOG_BURST` lines every `LOG_WINDOW`.
pub const LOG_WINDOW: Duration = Duration::from_secs(10);
pub const LOG_BURST: u32 = 10;

#[derive(Debug, thiserror::Error)]
#[error("invalid log level \"{level}\": {reason}; expected error, warn, info, debug, trace or a filter like \"info,kwpipe_components=debug\"")]
pub struct TelemetryError {
    level: String,
    reason: String,
}

static LIMIT: std::sync::OnceLock<limit::RateLimit> = std::sync::OnceLock::new();

/// Logs the counts of what was left out so far, windows over or not: called as
/// the process ends, so no count is lost with it.
pub fn flush() {
    if let Some(limit) = LIMIT.get() {
        limit::log_reports(limit.reports(Instant::now() + LOG_WINDOW));
    }
}

pub fn init(level: &str) -> Result<(), TelemetryError> {
    // A bare word is a target filter to EnvFilter; a person typing one meant a level.
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    if !level.contains(['=', ',']) && !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
        return Err(TelemetryError {
            level: level.to_string(),
            reason: "not a level".into(),
        });
    }
    let filter = EnvFilter::try_new(level).map_err(|e| TelemetryError {
        level: level.to_string(),
        reason: e.to_string(),
    })?;
    let limit = limit::RateLimit::new(LOG_WINDOW, LOG_BURST);
    let _ = LIMIT.set(limit.clone());
    tracing_subscriber::registry()
        .with(filter)
        .with(limit.clone())
        .with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(escape::fields())
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .init();
    // The counts of what was left out, once each window is over.
    let _ = std::thread::Builder::new()
        .name("log-limit".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            limit::log_reports(limit.reports(Instant::now()));
        });
    Ok(())
}
