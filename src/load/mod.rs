//! Loading a topology: `config` parses the files, `graph` checks how the
//! components are wired; every error of both steps is reported at once.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::config::{self, ConfigError, Topology};
use crate::graph;

/// Reads, merges and checks topology files, with `${VAR}` taken from the process
/// environment.
pub fn load_files(paths: &[PathBuf]) -> Result<Topology, ConfigError> {
    let env = config::interpolate::process_env();
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match std::fs::read_to_string(path) {
            Ok(text) => sources.push((path.clone(), text)),
            Err(e) => errors.push(format!("{}: cannot read: {e}", path.display())),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigError { errors });
    }
    load_texts(&sources, &env)
}

/// Like [`load_files`] for texts already in memory (`path` only names them).
pub fn load_texts(
    files: &[(PathBuf, String)],
    env: &HashMap<String, String>,
) -> Result<Topology, ConfigError> {
    let config::Parsed {
        mut topology,
        broken,
        mut errors,
    } = config::parse_texts(files, env)?;
    topology.warnings = graph::check(&topology.nodes, &broken, &mut errors);
    if errors.is_empty() {
        Ok(topology)
    } else {
        Err(ConfigError { errors })
    }
}

#[cfg(test)]
mod tests;
