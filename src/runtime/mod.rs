//! Running a topology: one task per component, bounded channels between them,
//! fan-out by sending to each reader in turn, and a supervisor that handles
//! shutdown and failures.
//!
//! Shutdown: when the signal future completes, sources are told to stop; they
//! finish what they were doing and drop their outputs, and the end of input
//! flows down the graph until every sink has drained. A component that fails
//! (returns an error or panics) triggers the same shutdown and makes the run fail.
//! Whatever is still running at the deadline is aborted; events it held report
//! Failed, so sources never move past them.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kwpipe_components::api::{
    BuildContext, ComponentClass, ComponentContext, ComponentMetrics, Input, Output, Outputs,
    ShutdownSignal,
};
use kwpipe_components::event::Event;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::{ComponentKey, OutputRef, Topology};
use crate::status::{ComponentState, ComponentStatus, StatusBoard};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{}", .0.join("\n"))]
    Build(Vec<String>),
    #[error("{component} failed: {message}")]
    ComponentFailed { component: String, message: String },
    #[error("shutdown did not finish within {timeout:?}; forced stop of {}", .pending.join(", "))]
    ForcedShutdown {
        timeout: Duration,
        pending: Vec<String>,
    },
}

/// Checks each component against the outside world (`validate` without
/// `--no-environment`), collecting every failure.
pub async fn healthcheck(topology: &Topology) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for node in &topology.nodes {
        let cx = BuildContext {
            id: Arc::from(node.key.id.as_str()),
            globals: topology.globals.clone(),
        };
        if let Err(e) = node.config.healthcheck(&cx).await {
            errors.push(format!("{}: {e}", node.key));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Builds and runs `topology` until its sources finish or `shutdown` completes,
/// with nobody watching its status.
pub async fn run(
    topology: Topology,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    run_with_board(topology, &StatusBoard::default(), shutdown).await
}

/// [`run`], keeping each component's state on `board` (which the admin endpoint
/// reads; the caller starts that, the runtime does not know it).
pub async fn run_with_board(
    topology: Topology,
    board: &StatusBoard,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    let source_shutdown = ShutdownSignal::new();
    match start(&topology, &source_shutdown, board).await {
        Ok(mut tasks) => {
            // The components' checks run beside the topology, so an operator sees at
            // once what is misconfigured (wrong password, missing topic) while the
            // components themselves retry what may heal.
            let checks = async {
                if let Err(errors) = healthcheck(&topology).await {
                    for e in errors {
                        tracing::error!("healthcheck failed: {e}");
                    }
                }
            };
            let supervised = supervise(
                &mut tasks,
                &source_shutdown,
                shutdown,
                topology.shutdown_timeout,
                board,
            );
            tokio::pin!(checks, supervised);
            let mut checked = false;
            loop {
                tokio::select! {
                    r = &mut supervised => break r,
                    _ = &mut checks, if !checked => checked = true,
                }
            }
        }
        Err(e) => Err(e),
    }
}

struct Tasks {
    set: JoinSet<Result<(), kwpipe_components::ComponentError>>,
    names: HashMap<tokio::task::Id, String>,
}

async fn start(
    topology: &Topology,
    source_shutdown: &ShutdownSignal,
    board: &StatusBoard,
) -> Result<Tasks, RuntimeError> {
    let mut built = Vec::new();
    let mut errors = Vec::new();
    for node in &topology.nodes {
        let cx = BuildContext {
            id: Arc::from(node.key.id.as_str()),
            globals: topology.globals.clone(),
        };
        match node.config.build(&cx).await {
            Ok(c) => built.push(Some(c)),
            Err(e) => {
                errors.push(format!("{}: {e}", node.key));
                built.push(None);
            }
        }
    }
    if !errors.is_empty() {
        return Err(RuntimeError::Build(errors));
    }

    // One channel per reading component; every upstream output it lists gets a sender.
    let mut receivers: HashMap<&ComponentKey, mpsc::Receiver<Event>> = HashMap::new();
    let mut readers: BTreeMap<OutputRef, Vec<mpsc::Sender<Event>>> = BTreeMap::new();
    for node in &topology.nodes {
        if node.key.class == ComponentClass::Source {
            continue;
        }
        let (tx, rx) = mpsc::channel(topology.channel_capacity);
        receivers.insert(&node.key, rx);
        for input in &node.inputs {
            readers.entry(input.clone()).or_default().push(tx.clone());
        }
    }

    let mut tasks = Tasks {
        set: JoinSet::new(),
        names: HashMap::new(),
    };
    for (node, component) in topology.nodes.iter().zip(built) {
        let component = component.expect("all built");
        let metrics = ComponentMetrics::new(&node.key.id, &node.type_name);
        board.push(ComponentStatus {
            key: node.key.to_string(),
            id: node.key.id.clone(),
            class: node.key.class.as_str(),
            type_name: node.type_name.clone(),
            state: ComponentState::Running,
            error: None,
            metrics: metrics.clone(),
        });
        let mut default = Vec::new();
        let mut named = BTreeMap::new();
        for def in node.config.outputs() {
            let r = OutputRef {
                id: node.key.id.clone(),
                output: def.name.clone(),
            };
            let senders = readers.remove(&r).unwrap_or_default();
            match def.name {
                None => default = senders,
                Some(name) => {
                    named.insert(name, Output::new(senders, metrics.clone()));
                }
            }
        }
        let outputs = Outputs::new(
            Output::new(default, metrics.clone()),
            named,
            metrics.clone(),
        );
        let input = receivers
            .remove(&node.key)
            .map(|rx| Input::new(rx, metrics.clone()));
        let cx = ComponentContext::new(
            node.key.id.as_str(),
            input,
            outputs,
            source_shutdown.clone(),
            topology.globals.clone(),
        );
        let span = tracing::info_span!("component", id = %node.key.id, r#type = %node.type_name);
        let handle = tasks.set.spawn(component.run(cx).instrument(span));
        tasks.names.insert(handle.id(), node.key.to_string());
    }
    tracing::info!(components = topology.nodes.len(), "topology started");
    Ok(tasks)
}

async fn supervise(
    tasks: &mut Tasks,
    source_shutdown: &ShutdownSignal,
    shutdown: impl Future<Output = ()>,
    timeout: Duration,
    board: &StatusBoard,
) -> Result<(), RuntimeError> {
    tokio::pin!(shutdown);
    let mut shutdown_done = false;
    let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let mut failure: Option<RuntimeError> = None;
    let mut failure_is_consequence = false;

    loop {
        let next = tokio::select! {
            _ = &mut shutdown, if !shutdown_done => {
                shutdown_done = true;
                tracing::info!(timeout = ?timeout, "shutting down: stopping sources, draining the graph");
                source_shutdown.trigger();
                deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                continue;
            }
            _ = async { deadline.as_mut().expect("guarded").await }, if deadline.is_some() => {
                let mut pending: Vec<String> = tasks.names.values().cloned().collect();
                pending.sort();
                tracing::error!(pending = ?pending, "shutdown deadline passed; aborting");
                tasks.set.abort_all();
                while tasks.set.join_next().await.is_some() {}
                return Err(failure.unwrap_or(RuntimeError::ForcedShutdown { timeout, pending }));
            }
            next = tasks.set.join_next_with_id() => next,
        };
        let Some(result) = next else {
            break;
        };
        // An upstream that failed only because its reader went away, or because what
        // it sent was not delivered, is a consequence; the downstream's own error,
        // which may arrive later, is the cause worth naming.
        let mut consequence = false;
        let (id, outcome) = match result {
            Ok((id, r)) => (
                id,
                r.map_err(|e| {
                    consequence = e.is_consequence();
                    e.to_string()
                }),
            ),
            Err(e) => {
                let id = e.id();
                let message = if e.is_panic() {
                    let payload = e.into_panic();
                    let text = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    format!("panicked: {text}")
                } else {
                    "cancelled".to_string()
                };
                (id, Err(message))
            }
        };
        let name = tasks.names.remove(&id).unwrap_or_else(|| "?".into());
        match &outcome {
            Ok(()) => board.set(&name, ComponentState::Finished, None),
            Err(message) => board.set(&name, ComponentState::Failed, Some(message.clone())),
        }
        match outcome {
            Ok(()) => tracing::debug!(component = %name, "component finished"),
            Err(message) => {
                // The first failure is the cause, unless it was only a consequence and
                // the cause arrives after it.
                if failure.is_none() || (failure_is_consequence && !consequence) {
                    if consequence {
                        tracing::debug!(component = %name, "component failed: {message}");
                    } else {
                        tracing::error!(component = %name, "component failed: {message}");
                    }
                    failure = Some(RuntimeError::ComponentFailed {
                        component: name,
                        message,
                    });
                    failure_is_consequence = consequence;
                    source_shutdown.trigger();
                    deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                } else {
                    tracing::debug!(component = %name, "component stopped after failure: {message}");
                }
            }
        }
    }
    match failure {
        Some(f) => Err(f),
        None => {
            tracing::info!("topology finished");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
