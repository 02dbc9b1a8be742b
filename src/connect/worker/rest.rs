//! Kafka Connect's REST API over the worker: the same paths, bodies and status
//! codes, so `curl`, kcctl, kafka-ui and the connector documentation's commands
//! work unchanged. Errors are Connect's `{"error_code":N,"message":"..."}`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value as Json_};

use super::herder::{self, Herder, Stored, Target};
use super::{offsets, secrets};
use crate::connect::convert::{self, SINK_CLASS, SOURCE_CLASS};

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("connect rest: cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Connect's error body.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"error_code": self.0.as_u16(), "message": self.1})),
        )
            .into_response()
    }
}

fn not_found(name: &str) -> Failure {
    Failure(StatusCode::NOT_FOUND, format!("Connector {name} not found"))
}

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

type Reply = Result<Response, Failure>;

pub struct Ctx {
    pub herder: Herder,
    pub kafka_cluster_id: String,
    pub read_only: bool,
    /// user -> password, from a credentials file as Connect's
    /// `BasicAuthSecurityRestExtension` reads it (`user: password` lines); None:
    /// no authentication.
    pub basic_auth: Option<std::collections::BTreeMap<String, String>>,
}

pub struct RestServer {
    pub address: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

/// Serves on a listener already bound (the worker id names its address).
/// Serves the API on `listener`, over TLS when `tls` is given (an https:// listener).
pub fn serve(
    listener: tokio::net::TcpListener,
    ctx: Ctx,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> RestServer {
    let tls_on = tls.is_some();
    let address = listener
        .local_addr()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
    let ctx = Arc::new(ctx);
    let app = Router::new()
        .route("/", get(root))
        .route("/connector-plugins", get(plugins))
        .route("/connector-plugins/{class}/config/validate", put(validate))
        .route("/connectors", get(list).post(create))
        .route("/connectors/{name}", get(info).delete(delete))
        .route("/connectors/{name}/config", get(config).put(put_config))
        .route("/connectors/{name}/status", get(status))
        .route("/connectors/{name}/pause", put(pause))
        .route("/connectors/{name}/resume", put(resume))
        .route("/connectors/{name}/stop", put(stop))
        .route("/connectors/{name}/restart", post(restart))
        .route("/connectors/{name}/tasks", get(tasks))
        .route("/connectors/{name}/tasks/{task}/status", get(task_status))
        .route(
            "/connectors/{name}/tasks/{task}/restart",
            post(task_restart),
        )
        .route("/connectors/{name}/topics", get(topics))
        .route(
            "/connectors/{name}/offsets",
            get(get_offsets).delete(delete_offsets).patch(patch_offsets),
        )
        .fallback(|| async { Failure(StatusCode::NOT_FOUND, "HTTP 404 Not Found".into()) })
        .method_not_allowed_fallback(|| async {
            Failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "HTTP 405 Method Not Allowed".into(),
            )
        })
        .layer(middleware::from_fn_with_state(ctx.clone(), caught_up))
        .layer(middleware::from_fn_with_state(ctx.clone(), read_only))
        .layer(middleware::from_fn_with_state(ctx.clone(), basic_auth))
        .with_state(ctx);
    let task = match tls {
        None => tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("connect rest server stopped: {e}");
            }
        }),
        Some(tls) => tokio::spawn(serve_https(listener, app, tls)),
    };
    tracing::info!(%address, https = tls_on, "Kafka Connect REST API listening");
    RestServer { address, task }
}

/// How long a client may take over its TLS handshake before the connection is
/// dropped, so half-open connections do not pile up.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The accept loop of an https:// listener: each connection's handshake and its
/// requests in a task of their own.
async fn serve_https(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Arc<rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake refused: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

/// Every request needs the credentials when a credentials file is given; like
/// Connect's extension, a refusal is a bare 401.
async fn basic_auth(State(ctx): State<Arc<Ctx>>, request: Request, next: Next) -> Response {
    let Some(users) = &ctx.basic_auth else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let allowed = given
        .as_deref()
        .and_then(|g| g.split_once(':'))
        .is_some_and(|(user, password)| {
            users
                .get(user)
                .is_some_and(|expected| constant_time_eq(expected.as_bytes(), password.as_bytes()))
        });
    if allowed {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"kwpipe connect worker\"",
        )],
    )
        .into_response()
}

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Any worker answers for all: before answering, this one reads what the configs
/// and status topics hold at that moment (another worker may just have written).
async fn caught_up(State(ctx): State<Arc<Ctx>>, request: Request, next: Next) -> Response {
    for log in [&ctx.herder.configs, &ctx.herder.statuses] {
        if let Err(e) = log.sync().await {
            return internal(e).into_response();
        }
    }
    next.run(request).await
}

/// `--rest-read-only`: only reads (and validation, which changes nothing) pass.
async fn read_only(State(ctx): State<Arc<Ctx>>, request: Request, next: Next) -> Response {
    let validating = request.uri().path().ends_with("/config/validate");
    if ctx.read_only && request.method() != Method::GET && !validating {
        return Failure(
            StatusCode::FORBIDDEN,
            "this worker's REST API is read-only (--rest-read-only): connectors cannot be changed through it".into(),
        )
        .into_response();
    }
    next.run(request).await
}

async fn root(State(ctx): State<Arc<Ctx>>) -> Response {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": option_env!("KWPIPE_GIT_COMMIT").unwrap_or("unknown"),
        "kafka_cluster_id": ctx.kafka_cluster_id,
    }))
    .into_response()
}

async fn plugins() -> Response {
    let version = env!("CARGO_PKG_VERSION");
    Json(json!([
        {"class": SINK_CLASS, "type": "sink", "version": version},
        {"class": SOURCE_CLASS, "type": "source", "version": version},
    ]))
    .into_response()
}

fn parse_object(body: &[u8]) -> Result<Map<String, Json_>, Failure> {
    match serde_json::from_slice::<Json_>(body) {
        Ok(Json_::Object(m)) => Ok(m),
        Ok(other) => Err(Failure(
            StatusCode::BAD_REQUEST,
            format!("expected a JSON object, found {other}"),
        )),
        Err(e) => Err(Failure(
            StatusCode::BAD_REQUEST,
            format!("Request body is not valid JSON: {e}"),
        )),
    }
}

/// The converter's findings, one per problem, keyed by the parameter they name.
fn problems(name: &str, config: &Map<String, Json_>, herder: &Herder) -> Vec<(String, String)> {
    let text = json!({"name": name, "config": config}).to_string();
    match convert::convert_text(name, &text, &herder.settings.convert) {
        Ok(_) => Vec::new(),
        Err(convert::ConvertError::Config { errors, .. }) => errors
            .into_iter()
            .map(|e| {
                let key = e
                    .split_once(':')
                    .map(|(k, _)| k.trim().to_string())
                    .unwrap_or_default();
                (key, e)
            })
            .collect(),
        Err(convert::ConvertError::Invalid { message, .. }) => vec![(String::new(), message)],
    }
}

fn invalid_config(problems: &[(String, String)]) -> Failure {
    let list: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
    Failure(
        StatusCode::BAD_REQUEST,
        format!(
            "Connector configuration is invalid and contains the following {} error(s):\n{}\nYou can also find the above list of errors at the endpoint `/connector-plugins/{{connectorType}}/config/validate`",
            list.len(),
            list.join("\n")
        ),
    )
}

async fn validate(Path(class): Path<String>, State(ctx): State<Arc<Ctx>>, body: Bytes) -> Reply {
    let mut config = parse_object(&body)?;
    let short = class.rsplit('.').next().unwrap_or(&class);
    let full = [SINK_CLASS, SOURCE_CLASS]
        .into_iter()
        .find(|c| *c == class || c.ends_with(&format!(".{short}")))
        .ok_or_else(|| {
            Failure(
                StatusCode::NOT_FOUND,
                format!("Failed to find any class that implements Connector and which name matches {class}"),
            )
        })?;
    match config.get("connector.class").and_then(Json_::as_str) {
        None => {
            config.insert("connector.class".into(), full.into());
        }
        Some(c) if c != full && !full.ends_with(&format!(".{c}")) => return Err(Failure(
            StatusCode::BAD_REQUEST,
            "Connector class in the URL does not match the connector.class in the configuration"
                .into(),
        )),
        Some(_) => {
            config.insert("connector.class".into(), full.into());
        }
    }
    let given_name = config
        .get("name")
        .and_then(Json_::as_str)
        .filter(|n| !n.trim().is_empty())
        .map(str::to_string);
    let name = given_name.clone().unwrap_or_else(|| "validate".into());
    let mut found = problems(&name, &config, &ctx.herder);
    // Problems that name no parameter go under `name`; Connect requires a name too.
    for (k, _) in found.iter_mut().filter(|(k, _)| k.is_empty()) {
        *k = "name".into();
    }
    if given_name.is_none() {
        found.insert(
            0,
            (
                "name".into(),
                "Missing required configuration \"name\" which has no default value.".into(),
            ),
        );
    }
    // Connect lists every definition, `name` first; kwpipe lists `name`, what was
    // sent, and any parameter a problem names.
    let mut keys: Vec<String> = vec!["name".into()];
    for k in config.keys().chain(found.iter().map(|(k, _)| k)) {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    let mut configs = Vec::new();
    for (order, key) in keys.iter().enumerate() {
        let errors: Vec<&str> = found
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, m)| m.as_str())
            .collect();
        let value = match config.get(key) {
            _ if key == "name" => given_name.clone().map(Json_::String).unwrap_or(Json_::Null),
            Some(Json_::String(_)) if secrets::is_secret(key) => {
                Json_::String(secrets::MASK.into())
            }
            Some(Json_::String(s)) => Json_::String(s.clone()),
            Some(Json_::Null) | None => Json_::Null,
            Some(other) => Json_::String(other.to_string()),
        };
        let required = ["name", "connector.class"].contains(&key.as_str());
        configs.push(json!({
            "definition": {
                "name": key, "type": if secrets::is_secret(key) { "PASSWORD" } else { "STRING" },
                "required": required, "default_value": null,
                "importance": if required { "HIGH" } else { "MEDIUM" },
                "documentation": "", "group": "Common", "width": "MEDIUM", "display_name": key,
                "dependents": [], "order": order + 1,
            },
            "value": {"name": key, "value": value, "recommended_values": [], "errors": errors, "visible": true},
        }));
    }
    Ok(Json(json!({
        "name": full,
        "error_count": found.len(),
        "groups": ["Common"],
        "configs": configs,
    }))
    .into_response())
}

fn stored(ctx: &Ctx, name: &str) -> Result<Stored, Failure> {
    herder::connectors(&ctx.herder.configs)
        .remove(name)
        .ok_or_else(|| not_found(name))
}

fn info_body(name: &str, s: &Stored) -> Json_ {
    let tasks: Vec<Json_> = if s.target == Target::Stopped {
        Vec::new()
    } else {
        (0..s.tasks())
            .map(|t| json!({"connector": name, "task": t}))
            .collect()
    };
    json!({
        "name": name,
        "config": secrets::mask(&s.config),
        "tasks": tasks,
        "type": s.kind(),
    })
}

/// Connect leaves `trace` out when there is none.
fn state_body(v: Option<Json_>, worker_id: &str) -> Map<String, Json_> {
    let v = v.unwrap_or_else(|| json!({"state": "UNASSIGNED", "worker_id": worker_id}));
    let mut out = Map::new();
    out.insert(
        "state".into(),
        v.get("state").cloned().unwrap_or("UNASSIGNED".into()),
    );
    if let Some(t) = v.get("trace").filter(|t| !t.is_null()) {
        out.insert("trace".into(), t.clone());
    }
    // Connect 4.1 names the plugin version that runs; here that is kwpipe's.
    out.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    out.insert(
        "worker_id".into(),
        v.get("worker_id").cloned().unwrap_or(worker_id.into()),
    );
    out
}

fn status_body(ctx: &Ctx, name: &str, s: &Stored) -> Json_ {
    let statuses = &ctx.herder.statuses;
    let me = &ctx.herder.settings.worker_id;
    let connector = state_body(statuses.get(&herder::connector_status_key(name)), me);
    let tasks: Vec<Json_> = if s.target == Target::Stopped {
        Vec::new()
    } else {
        (0..s.tasks())
            .map(|t| {
                let mut m = Map::new();
                m.insert("id".into(), t.into());
                m.extend(state_body(
                    statuses.get(&herder::task_status_key(name, t)),
                    me,
                ));
                Json_::Object(m)
            })
            .collect()
    };
    json!({"name": name, "connector": connector, "tasks": tasks, "type": s.kind()})
}

async fn list(State(ctx): State<Arc<Ctx>>, RawQuery(query): RawQuery) -> Response {
    let all = herder::connectors(&ctx.herder.configs);
    let expand: Vec<String> = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "expand")
        .map(|(_, v)| v.to_string())
        .collect();
    let has_expand = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .any(|kv| kv == "expand" || kv.starts_with("expand="));
    if !has_expand {
        return Json(all.keys().collect::<Vec<_>>()).into_response();
    }
    let mut out = Map::new();
    for (name, s) in &all {
        let mut m = Map::new();
        for e in &expand {
            match e.as_str() {
                "status" => {
                    m.insert("status".into(), status_body(&ctx, name, s));
                }
                "info" => {
                    m.insert("info".into(), info_body(name, s));
                }
                _ => {}
            }
        }
        out.insert(name.clone(), Json_::Object(m));
    }
    Json(out).into_response()
}

/// Connect's configs are string maps: `"tasks.max": 5` is stored and shown as "5".
fn strings(config: Map<String, Json_>) -> Map<String, Json_> {
    config
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Json_::Number(n) => Json_::String(n.to_string()),
                Json_::Bool(b) => Json_::String(b.to_string()),
                other => other,
            };
            (k, v)
        })
        .collect()
}

/// Connect's rule: a `name` inside the config must equal the connector's name.
fn put_name(name: &str, config: &mut Map<String, Json_>) -> Result<(), Failure> {
    match config.get("name") {
        Some(Json_::String(n)) if n == name => Ok(()),
        Some(other) => {
            let shown = other
                .as_str()
                .map(str::to_string)
                .unwrap_or(other.to_string());
            Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("Connector name configuration ({shown}) doesn't match connector name in the URL ({name})"),
            ))
        }
        None => {
            config.insert("name".into(), name.into());
            Ok(())
        }
    }
}

fn check_name(name: &str) -> Result<(), Failure> {
    if name.is_empty() {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "Connector name is required and must not be empty".into(),
        ));
    }
    if name.contains('/') || name.chars().any(char::is_control) {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            format!(
                "Connector name {name} is invalid: it must not contain '/' or control characters"
            ),
        ));
    }
    Ok(())
}

/// Stores a config after the converter accepted it: the herder starts it.
async fn save(
    ctx: &Ctx,
    name: &str,
    config: Map<String, Json_>,
    target: Option<Target>,
) -> Result<Stored, Failure> {
    let found = problems(name, &config, &ctx.herder);
    if !found.is_empty() {
        return Err(invalid_config(&found));
    }
    let configs = &ctx.herder.configs;
    if let Some(t) = target {
        configs
            .put(
                &herder::target_key(name),
                Some(&json!({"state": t.as_str()})),
            )
            .await
            .map_err(internal)?;
    }
    configs
        .put(
            &herder::connector_key(name),
            Some(&json!({"properties": config})),
        )
        .await
        .map_err(internal)?;
    stored(ctx, name)
}

fn location(name: &str) -> String {
    let mut out = String::from("/connectors/");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn create(State(ctx): State<Arc<Ctx>>, body: Bytes) -> Reply {
    let mut request = parse_object(&body)?;
    let name = match request.remove("name") {
        Some(Json_::String(n)) => n.trim().to_string(),
        None | Some(Json_::Null) => String::new(),
        Some(other) => {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("name: expected a string, found {other}"),
            ))
        }
    };
    check_name(&name)?;
    let mut config = match request.remove("config") {
        Some(Json_::Object(c)) => c,
        _ => {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                "config: missing; the connector's configuration object".into(),
            ))
        }
    };
    let target = match request
        .remove("initial_state")
        .as_ref()
        .and_then(Json_::as_str)
    {
        None => None,
        Some("RUNNING") => Some(Target::Started),
        Some("PAUSED") => Some(Target::Paused),
        Some("STOPPED") => Some(Target::Stopped),
        Some(other) => {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("initial_state: \"{other}\" is not one of RUNNING, PAUSED, STOPPED"),
            ))
        }
    };
    put_name(&name, &mut config)?;
    let config = strings(config);
    let exists = || {
        Failure(
            StatusCode::CONFLICT,
            format!("Connector {name} already exists"),
        )
    };
    if herder::connectors(&ctx.herder.configs).contains_key(&name) {
        return Err(exists());
    }
    let found = problems(&name, &config, &ctx.herder);
    if !found.is_empty() {
        return Err(invalid_config(&found));
    }
    // Another worker may be creating the same name at this moment: the configs
    // topic decides, and the create that comes second is refused as Connect's
    // leader refuses it.
    let target = target.unwrap_or(Target::Started);
    let configs = &ctx.herder.configs;
    let record = herder::created_record(&config, target);
    if !configs
        .create(&herder::connector_key(&name), &record)
        .await
        .map_err(internal)?
    {
        return Err(exists());
    }
    // A created connector starts from its initial state, whatever an earlier one of
    // the same name was left in.
    configs
        .put(
            &herder::target_key(&name),
            Some(&json!({"state": target.as_str()})),
        )
        .await
        .map_err(internal)?;
    let s = stored(&ctx, &name)?;
    let mut body = info_body(&name, &s);
    body["tasks"] = json!([]);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location(&name))],
        Json(body),
    )
        .into_response())
}

async fn info(Path(name): Path<String>, State(ctx): State<Arc<Ctx>>) -> Reply {
    let s = stored(&ctx, &name)?;
    Ok(Json(info_body(&name, &s)).into_response())
}

async fn config(Path(name): Path<String>, State(ctx): State<Arc<Ctx>>) -> Reply {
    let s = stored(&ctx, &name)?;
    Ok(Json(secrets::mask(&s.config)).into_response())
}

async fn put_config(Path(name): Path<String>, State(ctx): State<Arc<Ctx>>, body: Bytes) -> Reply {
    check_name(&name)?;
    let mut config = parse_object(&body)?;
    put_name(&name, &mut config)?;
    let before = herder::connectors(&ctx.herder.configs).remove(&name);
    let config = strings(secrets::unmask(config, before.as_ref().map(|b| &b.config)));
    let created = before.is_none();
    let s = save(&ctx, &name, config, created.then_some(Target::Started)).await?;
    let body = info_body(&name, &s);
    Ok(if created {
        (
            StatusCode::CREATED,
            [(header::LOCATION, location(&name))],
            Json(body),
        )
            .into_response()
    } else {
        Json(body).into_response()
    })
}

async fn delete(Path(name): Path<String>, State(ctx): State<Arc<Ctx>>) -> Reply {
    stored(&ctx, &name)?;
    let configs = &ctx.herder.configs;
    configs
        .put(&herder::connector_key(&name), None)
        .await
        .map_err(internal)?;
    configs
        .put(&herder::target_key(&name), None)
        .await
        .map_err(internal)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn status(Path(name): Path<String>, State(ctx): State<Arc<Ctx>>) -> Reply {
    let s = stored(&ctx, &name)?;
    Ok(Json(status_body(&ctx, &name, &s)).into_response())
}

async fn set_target(ctx: &Ctx, name: &str, target: Target) -> Result<(), Failure> {
    stored(ctx, name)?;
    ctx.herder
        .configs
        .put(
            &herder::target_key(name),
            Some(&json!({"state": target.as_str()})),
        )
        .await
        .map_err(internal)
}

async fn pause(Path(name): Path<String>, State(ctx): State<Arc<Ctx>>) -> Reply {
    set_target(&ctx, &name, Target::Paused).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn resume(Path(name): Path<String>, State(ctx): State<Arc<Ctx>>) -> Reply {
    set_target(&ctx, &name, Target::Started).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn stop(Path(name): Path<String>, State(ctx): State<Arc<Ctx>>) -> Reply {
    set_target(&ctx, &name, Target::Stopped).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn flag(query: &Option<String>, key: &str) -> bool {
    query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, "true"))))
        .any(|(k, v)| k == key && v.eq_ignore_ascii_case("true"))
}

async fn restart(
    Path(name): Path<String>,
    State(ctx): State<Arc<Ctx>>,
    RawQuery(query): RawQuery,
) -> Reply {
    let s = stored(&ctx, &name)?;
    let include_tasks = flag(&query, "includeTasks");
    let only_failed = flag(&query, "onlyFailed");
    let failed = ctx
        .herder
        .statuses
        .get(&herder::connector_status_key(&name))
        .and_then(|v| {
            v.get("state")
                .and_then(Json_::as_str)
                .map(|s| s == "FAILED")
        })
        .unwrap_or(false);
    // The connector and its tasks are one topology: restarting one restarts all.
    if !only_failed || failed {
        ctx.herder.restart(&name).await;
    }
    if !include_tasks && !only_failed {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok((StatusCode::ACCEPTED, Json(status_body(&ctx, &name, &s))).into_response())
}

async fn tasks(Path(name): Path<String>, State(ctx): State<Arc<Ctx>>) -> Reply {
    let s = stored(&ctx, &name)?;
    let config = secrets::mask(&s.config);
    let list: Vec<Json_> = if s.target == Target::Stopped {
        Vec::new()
    } else {
        (0..s.tasks())
            .map(|t| json!({"id": {"connector": name, "task": t}, "config": config}))
            .collect()
    };
    Ok(Json(list).into_response())
}

fn task_id(ctx: &Ctx, name: &str, task: &str) -> Result<(Stored, u32), Failure> {
    let s = stored(ctx, name)?;
    match task.parse::<u32>() {
        Ok(t) if t < s.tasks() && s.target != Target::Stopped => Ok((s, t)),
        _ => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("No status found for task {name}-{task}"),
        )),
    }
}

async fn task_status(
    Path((name, task)): Path<(String, String)>,
    State(ctx): State<Arc<Ctx>>,
) -> Reply {
    let (_, t) = task_id(&ctx, &name, &task)?;
    let me = &ctx.herder.settings.worker_id;
    let mut m = Map::new();
    m.insert("id".into(), t.into());
    m.extend(state_body(
        ctx.herder.statuses.get(&herder::task_status_key(&name, t)),
        me,
    ));
    Ok(Json(m).into_response())
}

async fn task_restart(
    Path((name, task)): Path<(String, String)>,
    State(ctx): State<Arc<Ctx>>,
) -> Reply {
    task_id(&ctx, &name, &task)?;
    ctx.herder.restart(&name).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn topics(Path(name): Path<String>, State(ctx): State<Arc<Ctx>>) -> Reply {
    let s = stored(&ctx, &name)?;
    // A sink's topics are in its config. A source's are the ones it has written
    // to, as Connect lists them: the topic of each table with an offset.
    let list = if s.kind() == "sink" {
        sink_topics(&s)
    } else {
        let tables = offsets::stored(&ctx.herder.offsets, &name).into_keys();
        source_topics(&name, &s, &ctx.herder.settings, tables)
    };
    Ok(Json(json!({ name: {"topics": list} })).into_response())
}

/// The topics a source connector writes `tables` to: its Kafka sink's topic
/// template (as the converter builds it) rendered for each table.
fn source_topics(
    name: &str,
    s: &Stored,
    settings: &herder::Settings,
    tables: impl Iterator<Item = String>,
) -> Vec<String> {
    let text = json!({ "name": name, "config": s.config }).to_string();
    let Ok(converted) = convert::convert_text(name, &text, &settings.convert) else {
        return Vec::new();
    };
    let template = converted
        .sections
        .get("sinks")
        .into_iter()
        .flat_map(|sinks| sinks.values())
        .find(|t| t.get("type").and_then(toml::Value::as_str) == Some("kafka"))
        .and_then(|t| t.get("topic").and_then(toml::Value::as_str))
        .and_then(|t| kwpipe_components::template::Template::parse(t).ok());
    let Some(template) = template else {
        return Vec::new();
    };
    let database = s
        .config
        .get("connection.database")
        .and_then(Json_::as_str)
        .unwrap_or_default();
    let mut topics: Vec<String> = tables
        .filter_map(|table| {
            template
                .render_with(|field| match field {
                    "database" => Some(std::borrow::Cow::Owned(database.to_string())),
                    "table" => Some(std::borrow::Cow::Owned(table.clone())),
                    _ => None,
                })
                .ok()
        })
        .collect();
    topics.sort();
    topics.dedup();
    topics
}

fn sink_topics(s: &Stored) -> Vec<String> {
    s.config
        .get("topics")
        .and_then(Json_::as_str)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// A sink's positions are its consumer group's committed offsets (`connect-NAME`).
async fn sink_offsets(ctx: &Ctx, name: &str, s: &Stored) -> Result<Vec<Json_>, Failure> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut client = ctx.herder.settings.client.clone();
    client.set("group.id", format!("connect-{name}"));
    let topics = sink_topics(s);
    tokio::task::spawn_blocking(move || {
        let timeout = std::time::Duration::from_secs(10);
        let consumer: BaseConsumer = client.create().map_err(internal)?;
        let mut list = rdkafka::TopicPartitionList::new();
        for topic in &topics {
            let Ok(metadata) = consumer.fetch_metadata(Some(topic), timeout) else {
                continue;
            };
            for t in metadata.topics() {
                for p in t.partitions() {
                    list.add_partition(topic, p.id());
                }
            }
        }
        let committed = consumer
            .committed_offsets(list, timeout)
            .map_err(internal)?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(o) => Some(json!({
                    "partition": {"kafka_topic": e.topic(), "kafka_partition": e.partition()},
                    "offset": {"kafka_offset": o},
                })),
                _ => None,
            })
            .collect())
    })
    .await
    .map_err(internal)?
}

async fn get_offsets(Path(name): Path<String>, State(ctx): State<Arc<Ctx>>) -> Reply {
    let s = stored(&ctx, &name)?;
    let list = if s.kind() == "sink" {
        sink_offsets(&ctx, &name, &s).await?
    } else {
        offsets::stored(&ctx.herder.offsets, &name)
            .into_iter()
            .map(|(table, offset)| json!({"partition": {"table": table}, "offset": offset}))
            .collect()
    };
    Ok(Json(json!({ "offsets": list })).into_response())
}

/// Connect's rule: offsets change only while the connector is stopped.
fn stopped(ctx: &Ctx, name: &str) -> Result<Stored, Failure> {
    let s = stored(ctx, name)?;
    if s.target != Target::Stopped {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "Connectors must be in the STOPPED state before their offsets can be modified. This can be done for the specified connector by issuing a 'PUT' request to the '/connectors/NAME/stop' endpoint".replace("NAME", name),
        ));
    }
    Ok(s)
}

/// Sets positions: a sink's group offsets, a source's checkpoints per table.
async fn patch_offsets(
    Path(name): Path<String>,
    State(ctx): State<Arc<Ctx>>,
    body: Bytes,
) -> Reply {
    let s = stopped(&ctx, &name)?;
    let request = parse_object(&body)?;
    let bad = |m: String| Failure(StatusCode::BAD_REQUEST, m);
    let Some(Json_::Array(entries)) = request.get("offsets") else {
        return Err(bad(
            "Partitions / offsets need to be provided for an alter offsets request".into(),
        ));
    };
    if s.kind() == "sink" {
        let mut list = rdkafka::TopicPartitionList::new();
        for e in entries {
            let topic = e["partition"]["kafka_topic"].as_str();
            let partition = e["partition"]["kafka_partition"].as_i64();
            let offset = e["offset"]["kafka_offset"].as_i64();
            let (Some(topic), Some(partition), Some(offset)) = (topic, partition, offset) else {
                return Err(bad(format!(
                    "{e}: expected {{\"partition\":{{\"kafka_topic\":..,\"kafka_partition\":..}},\"offset\":{{\"kafka_offset\":..}}}}"
                )));
            };
            list.add_partition_offset(topic, partition as i32, rdkafka::Offset::Offset(offset))
                .map_err(|e| bad(e.to_string()))?;
        }
        let mut client = ctx.herder.settings.client.clone();
        client.set("group.id", format!("connect-{name}"));
        tokio::task::spawn_blocking(move || {
            use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
            let consumer: BaseConsumer = client.create().map_err(internal)?;
            consumer.commit(&list, CommitMode::Sync).map_err(internal)
        })
        .await
        .map_err(internal)??;
    } else {
        let store = herder::topology_for(&name, &s.config, &ctx.herder.settings)
            .ok()
            .and_then(|t| herder::checkpoint_store(&t, &s.config));
        for e in entries {
            let Some(table) = e["partition"]["table"].as_str() else {
                return Err(bad(format!(
                    "{e}: expected {{\"partition\":{{\"table\":..}},\"offset\":{{..}}}}"
                )));
            };
            offsets::alter(
                &ctx.herder.offsets,
                &name,
                table,
                &e["offset"],
                store.as_ref(),
            )
            .await
            .map_err(|m| bad(format!("{table}: {m}")))?;
        }
    }
    Ok(
        Json(json!({"message": "The offsets for this connector have been altered successfully"}))
            .into_response(),
    )
}

async fn delete_offsets(Path(name): Path<String>, State(ctx): State<Arc<Ctx>>) -> Reply {
    let s = stopped(&ctx, &name)?;
    if s.kind() == "sink" {
        use rdkafka::admin::{AdminClient, AdminOptions};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            ctx.herder.settings.client.create().map_err(internal)?;
        let group = format!("connect-{name}");
        let results = admin
            .delete_groups(&[&group], &AdminOptions::new())
            .await
            .map_err(internal)?;
        for r in results {
            match r {
                Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::GroupIdNotFound)) => {}
                Err((_, code)) => return Err(internal(format!("{group}: {code}"))),
            }
        }
    } else {
        let store = herder::topology_for(&name, &s.config, &ctx.herder.settings)
            .ok()
            .and_then(|t| herder::checkpoint_store(&t, &s.config));
        offsets::reset(&ctx.herder.offsets, &name, store.as_ref())
            .await
            .map_err(internal)?;
    }
    Ok(
        Json(json!({"message": "The offsets for this connector have been reset successfully"}))
            .into_response(),
    )
}
