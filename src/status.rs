//! The status board: where each component of a running topology is in its life.
//! The runtime writes it, the admin endpoint reads it; it lives below both so
//! neither has to know the other.

use std::sync::{Arc, Mutex};

use kwpipe_components::api::ComponentMetrics;

/// Where a component is in its life. A component is on the board only once it
/// is built and spawned, so there is no "starting" state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComponentState {
    Running,
    Finished,
    Failed,
}

impl ComponentState {
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentState::Running => "running",
            ComponentState::Finished => "finished",
            ComponentState::Failed => "failed",
        }
    }
}

/// One component as the admin API shows it.
#[derive(Clone, Debug)]
pub struct ComponentStatus {
    pub key: String,
    pub id: String,
    pub class: &'static str,
    pub type_name: String,
    pub state: ComponentState,
    pub error: Option<String>,
    pub metrics: ComponentMetrics,
}

/// The state of every component, shared between the supervisor and the API.
#[derive(Clone, Default)]
pub struct StatusBoard(Arc<Mutex<Vec<ComponentStatus>>>);

impl StatusBoard {
    pub fn snapshot(&self) -> Vec<ComponentStatus> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn push(&self, status: ComponentStatus) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(status);
    }

    /// Records how the component `key` ended; an error, once set, stays.
    pub(crate) fn set(&self, key: &str, state: ComponentState, error: Option<String>) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for c in all.iter_mut().filter(|c| c.key == key) {
            c.state = state;
            if error.is_some() {
                c.error = error.clone();
            }
        }
    }
}
