//! Logs go to standard error (standard output belongs to the `console` sink), as
//! human-readable lines, filtered by `--log-level` or `KWPIPE_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, thiserror::Error)]
#[error("invalid log level \"{level}\": {reason}; expected error, warn, info, debug, trace or a filter like \"info,components=debug\"")]
pub struct TelemetryError {
    level: String,
    reason: String,
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    Ok(())
}
