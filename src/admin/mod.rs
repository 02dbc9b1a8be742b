//! The admin HTTP endpoint (`[api]`): `/health`, `/metrics` (Prometheus text) and
//! `/components` (JSON), all read from the status board the runtime writes and
//! the one metrics recorder. Not to be confused with `kwpipe_components::api`, the
//! components' programming interface. The command that runs a topology starts
//! this server beside the runtime, handing both the same board (`main.rs`).

pub mod guard;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

use crate::config::ApiLimits;
use crate::status::{ComponentState, StatusBoard};

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide metrics recorder (once); `/metrics` renders it.
pub fn install_recorder() {
    RECORDER.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder is installed (tests); metrics then go there.
        let _ = metrics::set_global_recorder(recorder);
        handle
    });
}

fn render_metrics() -> String {
    RECORDER.get().map(|h| h.render()).unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("api: cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running admin endpoint; dropping it leaves the server running until the
/// process ends, `stop` ends it.
pub struct AdminServer {
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Serves the endpoint on `address` from `board` until [`AdminServer::stop`];
/// `limits` are enforced by [`guard`].
pub async fn serve(
    address: SocketAddr,
    limits: ApiLimits,
    board: StatusBoard,
) -> Result<AdminServer, AdminError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| AdminError::Bind { address, source })?;
    let address = listener.local_addr().unwrap_or(address);
    let listener =
        guard::GuardedListener::new(listener, limits.max_connections, limits.header_read_timeout);
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/components", get(components))
        .with_state(board);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("api server stopped: {e}");
        }
    });
    tracing::info!(%address, "api listening");
    Ok(AdminServer { address, task })
}

#[derive(Serialize)]
struct HealthBody {
    healthy: bool,
    reasons: Vec<String>,
}

async fn health(State(board): State<StatusBoard>) -> Response {
    let mut reasons = Vec::new();
    for c in board.snapshot() {
        match c.state {
            ComponentState::Running => {
                if let Some(r) = c.metrics.unhealthy_reason() {
                    reasons.push(format!("{}: {r}", c.key));
                }
            }
            // A source that read its whole input is done, not broken.
            ComponentState::Finished => {}
            ComponentState::Failed => reasons.push(format!(
                "{}: failed: {}",
                c.key,
                c.error.as_deref().unwrap_or("unknown error")
            )),
        }
    }
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(HealthBody {
            healthy: reasons.is_empty(),
            reasons,
        }),
    )
        .into_response()
}

async fn metrics_text() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render_metrics(),
    )
        .into_response()
}

/// One component in `/components`.
#[derive(Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct ComponentView {
    pub id: String,
    pub kind: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub state: String,
    pub error: Option<String>,
    /// Standing problems of a running component with part of its work (a table
    /// it cannot export and skips), while the rest goes on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Counter name (without `component_` and `_total`) -> value.
    pub counters: BTreeMap<String, f64>,
}

async fn components(State(board): State<StatusBoard>) -> Json<Vec<ComponentView>> {
    let counters = counters_by_component(&render_metrics());
    let views = board
        .snapshot()
        .into_iter()
        .map(|c| ComponentView {
            counters: counters.get(&c.id).cloned().unwrap_or_default(),
            id: c.id,
            kind: c.class.to_string(),
            type_name: c.type_name,
            state: c.state.as_str().to_string(),
            error: c.error,
            problems: c.metrics.problems(),
        })
        .collect();
    Json(views)
}

/// Sums `component_*_total{component_id="x",...} v` lines per component, from
/// the Prometheus text — the recorder is the one source of these numbers.
fn counters_by_component(text: &str) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix("component_") else {
            continue;
        };
        let Some((name, rest)) = rest.split_once('{') else {
            continue;
        };
        let Some(name) = name.strip_suffix("_total") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Some(id) = label(labels, "component_id") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        *out.entry(id)
            .or_default()
            .entry(name.to_string())
            .or_default() += value;
    }
    out
}

fn label(labels: &str, name: &str) -> Option<String> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let end = labels[start..].find('"')? + start;
    Some(labels[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use kwpipe_components::api::ComponentMetrics;

    use super::*;
    use crate::status::ComponentStatus;

    fn board_with(state: ComponentState) -> (StatusBoard, ComponentMetrics) {
        let board = StatusBoard::default();
        let metrics = ComponentMetrics::new("db", "kwdb");
        board.push(ComponentStatus {
            key: "sinks.db".into(),
            id: "db".into(),
            class: "sink",
            type_name: "kwdb".into(),
            state,
            error: None,
            metrics: metrics.clone(),
        });
        (board, metrics)
    }

    #[tokio::test]
    async fn health_follows_the_last_outcome_of_each_component() {
        let (board, metrics) = board_with(ComponentState::Running);
        assert_eq!(health(State(board.clone())).await.status(), StatusCode::OK);

        metrics.report_error("write", "connection refused");
        let response = health(State(board.clone())).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["reasons"][0], "sinks.db: connection refused");

        std::thread::sleep(std::time::Duration::from_millis(2));
        metrics.report_ok();
        assert_eq!(health(State(board)).await.status(), StatusCode::OK);
    }

    /// Issue 18, item 10: 1000 lines rejected and /health said healthy.
    #[tokio::test]
    async fn a_component_rejecting_everything_is_unhealthy() {
        let (board, metrics) = board_with(ComponentState::Running);
        metrics.report_ok();
        metrics.rejected(1000);
        let response = health(State(board.clone())).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            body["reasons"][0]
                .as_str()
                .unwrap()
                .starts_with("sinks.db: rejected the last 1000 records and passed none"),
            "{body}"
        );
        metrics.passed(1);
        assert_eq!(health(State(board)).await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_failed_component_is_unhealthy() {
        let (board, _) = board_with(ComponentState::Failed);
        assert_eq!(
            health(State(board)).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn counters_are_read_per_component() {
        let text = "# TYPE component_sent_events_total counter\n\
            component_sent_events_total{component_id=\"db\",component_type=\"kwdb\"} 42\n\
            component_errors_total{component_id=\"db\",component_type=\"kwdb\",error_type=\"write\"} 2\n\
            component_errors_total{component_id=\"db\",component_type=\"kwdb\",error_type=\"connect\"} 1\n\
            component_sent_events_total{component_id=\"in\",component_type=\"file\"} 7\n\
            other_total{component_id=\"in\"} 9\n";
        let c = counters_by_component(text);
        assert_eq!(c["db"]["sent_events"], 42.0);
        assert_eq!(c["db"]["errors"], 3.0);
        assert_eq!(c["in"].len(), 1);
    }
}
