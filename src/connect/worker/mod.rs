//! `kwpipe connect worker`: a long-running Kafka Connect worker. Its REST API is
//! Connect's ([`rest`]); connector configs, target states and statuses live in
//! Connect's compacted topics ([`store`]) under Connect's key names, so any worker
//! sharing them answers for all and a restarted worker picks everything up; each
//! connector runs here as a kwpipe topology ([`herder`]).
//!
//! The REST API listens on 127.0.0.1:8083 unless the worker config's `listeners`
//! says otherwise: Connect listens on every interface, but its API has no
//! authentication by default and creates connectors that hold database passwords,
//! so kwpipe makes exposing it a decision written in the config.

pub mod herder;
pub mod https;
pub mod members;
pub mod offsets;
pub mod rest;
pub mod secrets;
pub mod store;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use kwpipe_components::kafka::{LibrdkafkaOptions, SaslOptions, Security, TlsOptions};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use tokio::sync::oneshot;

use super::client::{self, Role};
use super::convert::ConvertOptions;
use store::{TopicLog, TopicSpec};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("worker config: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Rest(#[from] rest::RestError),
}

pub struct WorkerOptions {
    /// The brokers and the worker config (`-X` and `--worker-config` merged).
    pub convert: ConvertOptions,
    pub data_dir: PathBuf,
    pub read_only: bool,
    /// Overrides `listeners` (tests use port 0).
    pub listen: Option<SocketAddr>,
    /// A credentials file (`user: password` lines, as Connect's
    /// `BasicAuthSecurityRestExtension` reads it): the REST API then needs them.
    pub basic_auth: Option<PathBuf>,
}

/// Connect's defaults for its three topics; the worker config's names win.
fn topic_spec(
    worker: &BTreeMap<String, String>,
    prefix: &str,
    default: &str,
    partitions: i32,
) -> Result<TopicSpec, WorkerError> {
    let number = |key: String, default: i32| -> Result<i32, WorkerError> {
        match worker.get(&key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| WorkerError::Config(format!("{key}: \"{v}\" is not an integer"))),
        }
    };
    Ok(TopicSpec {
        name: worker
            .get(&format!("{prefix}.storage.topic"))
            .cloned()
            .unwrap_or_else(|| default.to_string()),
        // Connect's configs topic has one partition by rule; the others take the setting.
        partitions: if prefix == "config" {
            1
        } else {
            number(format!("{prefix}.storage.partitions"), partitions)?
        },
        // Connect's default is 3; -1 (the broker's default) lets one-broker clusters
        // work without a setting while a production cluster's default still applies.
        replication: number(format!("{prefix}.storage.replication.factor"), -1)?,
    })
}

fn setting(worker: &BTreeMap<String, String>, key: &str, default: i32) -> Result<i32, WorkerError> {
    match worker.get(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| WorkerError::Config(format!("{key}: \"{v}\" is not an integer"))),
    }
}

/// Where the REST API listens, and whether over TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Listener {
    address: SocketAddr,
    https: bool,
}

/// `listeners=http://host:port[,...]` or `https://...`: the first one.
fn listen_address(worker: &BTreeMap<String, String>) -> Result<Listener, WorkerError> {
    let Some(listeners) = worker.get("listeners") else {
        return Ok(Listener {
            address: SocketAddr::from(([127, 0, 0, 1], 8083)),
            https: false,
        });
    };
    let first = listeners.split(',').next().unwrap_or("").trim();
    // Connect's own sample writes the scheme in capitals (`HTTP://:8083`).
    let scheme_end = first.find("://").map_or(0, |i| i + 3);
    let https = match first[..scheme_end].to_ascii_lowercase().as_str() {
        "http://" => false,
        "https://" => true,
        _ => {
            return Err(WorkerError::Config(format!(
                "listeners: \"{first}\": expected http://host:port or https://host:port"
            )))
        }
    };
    let hostport = first[scheme_end..].trim_end_matches('/');
    let hostport = if hostport.starts_with(':') {
        format!("0.0.0.0{hostport}")
    } else {
        hostport.to_string()
    };
    let address = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| WorkerError::Config(format!("listeners: cannot resolve \"{first}\"")))?;
    Ok(Listener { address, https })
}

/// The worker's own clients (storage topics) get the worker's security settings,
/// mapped the same way as a connector's.
fn client_config(opts: &ConvertOptions) -> Result<ClientConfig, WorkerError> {
    let bootstrap = opts.bootstrap_servers.clone().ok_or_else(|| {
        WorkerError::Config(
            "no brokers: give --bootstrap-servers, KAFKA_BOOTSTRAP_SERVERS, or bootstrap.servers"
                .into(),
        )
    })?;
    let settings = client::layered(Role::Producer, &opts.worker, &BTreeMap::new());
    let mut table = toml::Table::new();
    let mut errors = Vec::new();
    client::apply(&settings, &mut table, &mut errors);
    if !errors.is_empty() {
        return Err(WorkerError::Config(errors.join("; ")));
    }
    let part = |key: &str| table.get(key).cloned();
    let de = |e: toml::de::Error| WorkerError::Config(e.to_string());
    let tls: Option<TlsOptions> = part("tls").map(|v| v.try_into()).transpose().map_err(de)?;
    let sasl: Option<SaslOptions> = part("sasl").map(|v| v.try_into()).transpose().map_err(de)?;
    let user: LibrdkafkaOptions = part("librdkafka_options")
        .map(|v| v.try_into())
        .transpose()
        .map_err(de)?
        .unwrap_or_default();
    let security = Security {
        tls: tls.as_ref(),
        sasl: sasl.as_ref(),
    };
    kwpipe_components::kafka::client_config(&[("bootstrap.servers", bootstrap)], &security, &user)
        .map_err(|e| WorkerError::Config(e.to_string()))
}

/// Runs the worker until `shutdown`; then stops every connector gracefully.
pub async fn run(
    opts: WorkerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let worker = &opts.convert.worker;
    let listener = listen_address(worker)?;
    // `--listen` moves the listener; `listeners` still says whether it is https.
    let address = opts.listen.unwrap_or(listener.address);
    let tls = if listener.https {
        Some(https::server_config(worker).map_err(|e| WorkerError::Config(e.to_string()))?)
    } else {
        None
    };
    let client = client_config(&opts.convert)?;
    let basic_auth = match &opts.basic_auth {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                WorkerError::Config(format!("{}: cannot read: {e}", path.display()))
            })?;
            let users = client::parse_properties(&text);
            if users.is_empty() {
                return Err(WorkerError::Config(format!(
                    "{}: no `user: password` lines; every request would be refused",
                    path.display()
                )));
            }
            Some(users)
        }
    };
    let configs = TopicLog::open(
        &client,
        &topic_spec(worker, "config", "connect-configs", 1)?,
    )
    .await?;
    let statuses =
        TopicLog::open(&client, &topic_spec(worker, "status", "connect-status", 5)?).await?;
    let offsets = TopicLog::open(
        &client,
        &topic_spec(worker, "offset", "connect-offsets", 25)?,
    )
    .await?;
    let kafka_cluster_id = {
        let client = client.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = client.create().ok()?;
            consumer.client().fetch_cluster_id(Duration::from_secs(10))
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
    };
    // Bind first: the worker id is the address clients reach it at.
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| rest::RestError::Bind { address, source })?;
    let bound = listener.local_addr().unwrap_or(address);
    let host = worker
        .get("rest.advertised.host.name")
        .cloned()
        .unwrap_or_else(|| bound.ip().to_string());
    let port = worker
        .get("rest.advertised.port")
        .cloned()
        .unwrap_or_else(|| bound.port().to_string());
    let settings = herder::Settings {
        convert: opts.convert.clone(),
        data_dir: opts.data_dir.clone(),
        worker_id: format!("{host}:{port}"),
        client: client.clone(),
    };
    let group = worker
        .get("group.id")
        .cloned()
        .unwrap_or_else(|| "connect-cluster".into());
    let coordination = TopicSpec {
        name: worker
            .get("kwpipe.coordination.topic")
            .cloned()
            .unwrap_or_else(|| format!("{group}-kwpipe-coordination")),
        partitions: setting(worker, "kwpipe.coordination.partitions", 12)?,
        replication: setting(worker, "config.storage.replication.factor", -1)?,
    };
    let session_timeout = setting(worker, "session.timeout.ms", 10_000)?;
    let members = std::sync::Arc::new(
        members::Members::join(
            &client,
            &group,
            &coordination,
            session_timeout.max(1) as u32,
        )
        .await?,
    );
    let (stop_herder, herder_stopped) = oneshot::channel();
    let (herder, herder_task) = herder::Herder::start(
        configs,
        statuses,
        offsets,
        settings,
        Some(members.clone()),
        herder_stopped,
    );
    let server = rest::serve(
        listener,
        rest::Ctx {
            herder,
            kafka_cluster_id,
            read_only: opts.read_only,
            basic_auth,
        },
        tls,
    );
    // Tests and scripts read the address from here when they asked for port 0.
    tracing::info!(address = %server.address, "worker started");
    shutdown.await;
    tracing::info!("worker stopping: connectors drain and commit");
    server.task.abort();
    let _ = stop_herder.send(());
    let _ = herder_task.await;
    members.leave();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(v: Option<&str>) -> Result<SocketAddr, WorkerError> {
        let mut worker = BTreeMap::new();
        if let Some(v) = v {
            worker.insert("listeners".to_string(), v.to_string());
        }
        let l = listen_address(&worker)?;
        assert_eq!(l.https, v.is_some_and(|v| v.starts_with("https")), "{v:?}");
        Ok(l.address)
    }

    #[test]
    fn loopback_unless_listeners_says_otherwise() {
        assert_eq!(listen(None).unwrap(), "127.0.0.1:8083".parse().unwrap());
        assert_eq!(
            listen(Some("HTTP://:8083")).unwrap(),
            "0.0.0.0:8083".parse().unwrap()
        );
        assert_eq!(
            listen(Some("http://127.0.0.1:9000,https://x:9443")).unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        assert_eq!(
            listen(Some("https://127.0.0.1:8443")).unwrap(),
            "127.0.0.1:8443".parse().unwrap()
        );
        let e = listen(Some("tcp://0.0.0.0:8443")).unwrap_err().to_string();
        assert!(
            e.contains("expected http://host:port or https://host:port"),
            "{e}"
        );
    }

    #[test]
    fn storage_topics_take_connects_names_and_defaults() {
        let mut worker = BTreeMap::new();
        let spec = topic_spec(&worker, "status", "connect-status", 5).unwrap();
        assert_eq!(
            (spec.name.as_str(), spec.partitions, spec.replication),
            ("connect-status", 5, -1)
        );
        worker.insert("config.storage.topic".to_string(), "my-configs".to_string());
        worker.insert(
            "config.storage.replication.factor".to_string(),
            "3".to_string(),
        );
        worker.insert("config.storage.partitions".to_string(), "9".to_string());
        let spec = topic_spec(&worker, "config", "connect-configs", 1).unwrap();
        // The configs topic has one partition, whatever is asked.
        assert_eq!(
            (spec.name.as_str(), spec.partitions, spec.replication),
            ("my-configs", 1, 3)
        );
    }
}
