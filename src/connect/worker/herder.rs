//! Starts and stops connectors in this process as the configs topic says: each
//! connector is one kwpipe topology (the converter's output) with a shutdown of its
//! own, so a changed config, a pause or a delete stops it gracefully (sources stop,
//! the graph drains, offsets and checkpoints are committed) before anything else
//! happens: at-least-once across every reconfiguration.

use kwpipe_components::sources::kwdb_poll::checkpoint::CheckpointStore;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde_json::{json, Map, Value as Json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::members::Members;
use super::offsets;
use super::store::{StoreError, TopicLog};
use crate::connect::convert::{self, ConvertOptions};

/// What a connector should be doing, as Connect's `target-state-NAME` records say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Started,
    Paused,
    Stopped,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Started => "STARTED",
            Target::Paused => "PAUSED",
            Target::Stopped => "STOPPED",
        }
    }

    fn parse(v: &Json) -> Target {
        match v.get("state").and_then(Json::as_str) {
            Some("PAUSED") => Target::Paused,
            Some("STOPPED") => Target::Stopped,
            _ => Target::Started,
        }
    }
}

pub fn connector_key(name: &str) -> String {
    format!("connector-{name}")
}

pub fn target_key(name: &str) -> String {
    format!("target-state-{name}")
}

pub fn connector_status_key(name: &str) -> String {
    format!("status-connector-{name}")
}

pub fn task_status_key(name: &str, task: u32) -> String {
    format!("status-task-{name}-{task}")
}

/// One connector as the configs topic has it.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub config: Map<String, Json>,
    pub target: Target,
}

impl Stored {
    /// How many tasks Connect would show: `tasks.max`. kwpipe runs one topology
    /// whose parallelism is `tasks.max`, so every task shares the connector's state.
    pub fn tasks(&self) -> u32 {
        let n = match self.config.get("tasks.max") {
            Some(Json::Number(n)) => n.as_u64(),
            Some(Json::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        n.unwrap_or(1).clamp(1, 1024) as u32
    }

    pub fn kind(&self) -> &'static str {
        match self.config.get("connector.class").and_then(Json::as_str) {
            Some(convert::SINK_CLASS) => "sink",
            Some(convert::SOURCE_CLASS) => "source",
            _ => "unknown",
        }
    }
}

/// Where a created connector's record keeps the state it starts in, until its
/// `target-state-<name>` record (written right after) is read: a worker reading in
/// between starts it in that state, not in one an earlier connector of the name left.
const INITIAL_STATE: &str = "kwpipe.initial_state";

/// The configs-topic record of a connector being created.
pub fn created_record(config: &Map<String, Json>, target: Target) -> Json {
    json!({"properties": config, INITIAL_STATE: {"state": target.as_str()}})
}

/// Every connector in the configs topic.
pub fn connectors(configs: &TopicLog) -> BTreeMap<String, Stored> {
    let state = configs.snapshot();
    let mut out = BTreeMap::new();
    for (key, value) in &state.entries {
        let Some(name) = key.strip_prefix("connector-") else {
            continue;
        };
        let Some(Json::Object(config)) = value.get("properties") else {
            continue;
        };
        let target = state
            .entries
            .get(&target_key(name))
            .or_else(|| value.get(INITIAL_STATE))
            .map(Target::parse)
            .unwrap_or(Target::Started);
        out.insert(
            name.to_string(),
            Stored {
                config: config.clone(),
                target,
            },
        );
    }
    out
}

/// What the worker needs to turn a config into a running topology.
#[derive(Clone)]
pub struct Settings {
    pub convert: ConvertOptions,
    pub data_dir: PathBuf,
    pub worker_id: String,
    /// The worker's own Kafka client settings (brokers and security).
    pub client: rdkafka::ClientConfig,
}

enum Request {
    Restart(String, oneshot::Sender<()>),
}

/// The handle the REST API holds.
#[derive(Clone)]
pub struct Herder {
    pub configs: TopicLog,
    pub statuses: TopicLog,
    pub offsets: TopicLog,
    pub settings: Settings,
    /// Which source connectors this worker runs (None: all of them).
    pub members: Option<std::sync::Arc<Members>>,
    requests: mpsc::UnboundedSender<Request>,
}

impl Herder {
    /// Starts the loop that keeps the running connectors equal to the configs
    /// topic; it ends (stopping every connector gracefully) when `shutdown` fires.
    pub fn start(
        configs: TopicLog,
        statuses: TopicLog,
        offsets: TopicLog,
        settings: Settings,
        members: Option<std::sync::Arc<Members>>,
        shutdown: oneshot::Receiver<()>,
    ) -> (Herder, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let herder = Herder {
            configs,
            statuses,
            offsets,
            settings,
            members,
            requests: tx,
        };
        let handle = tokio::spawn(herder.clone().run(rx, shutdown));
        (herder, handle)
    }

    /// Stops and starts the connector again (a no-op unless it should run).
    pub async fn restart(&self, name: &str) {
        let (tx, rx) = oneshot::channel();
        if self
            .requests
            .send(Request::Restart(name.to_string(), tx))
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Writes the state of a connector and of its tasks to the status topic.
    pub async fn write_status(
        &self,
        name: &str,
        tasks: u32,
        state: &str,
        trace: Option<&str>,
    ) -> Result<(), StoreError> {
        let value = json!({
            "state": state,
            "trace": trace,
            "worker_id": self.settings.worker_id,
            "generation": 0,
        });
        self.statuses
            .put(&connector_status_key(name), Some(&value))
            .await?;
        for t in 0..tasks {
            self.statuses
                .put(&task_status_key(name, t), Some(&value))
                .await?;
        }
        Ok(())
    }

    async fn forget_status(&self, name: &str, tasks: u32) {
        let mut keys = vec![connector_status_key(name)];
        keys.extend((0..tasks).map(|t| task_status_key(name, t)));
        for k in keys {
            if let Err(e) = self.statuses.put(&k, None).await {
                tracing::warn!(connector = %name, "cannot remove the status: {e}");
            }
        }
    }

    async fn run(
        self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        shutdown: oneshot::Receiver<()>,
    ) {
        let mut changes = self.configs.subscribe();
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut owned = self.members.as_ref().map(|m| m.subscribe());
        tokio::pin!(shutdown);
        let mut claimed = None;
        loop {
            let generation = owned.as_mut().map(|o| o.borrow_and_update().generation);
            self.reconcile(&mut running).await;
            if let (Some(m), Some(g)) = (&self.members, generation) {
                m.ack(g);
                if claimed != Some(g) {
                    claimed = Some(g);
                    self.claim_sink_statuses(&running).await;
                }
            }
            tokio::select! {
                _ = &mut shutdown => break,
                r = changes.changed() => if r.is_err() { break },
                r = async { owned.as_mut().expect("guarded").changed().await }, if owned.is_some() => {
                    if r.is_err() { break }
                }
                Some(Request::Restart(name, done)) = requests.recv() => {
                    if let Some(r) = running.remove(&name) {
                        let tasks = r.stored.tasks();
                        r.stop().await;
                        let _ = self.write_status(&name, tasks, "RESTARTING", None).await;
                    }
                    self.reconcile(&mut running).await;
                    let _ = done.send(());
                }
            }
        }
        // Connect marks what a leaving worker ran as UNASSIGNED, for another to take.
        for (name, r) in running.drain() {
            let tasks = r.stored.tasks();
            r.stop().await;
            if let Err(e) = self.write_status(&name, tasks, "UNASSIGNED", None).await {
                tracing::warn!(connector = %name, "cannot record the status: {e}");
            }
        }
    }

    async fn reconcile(&self, running: &mut HashMap<String, Running>) {
        let wanted = connectors(&self.configs);
        let names: Vec<String> = running.keys().cloned().collect();
        for name in names {
            let stale = match wanted.get(&name) {
                None => true,
                Some(w) => {
                    w.config != running[&name].stored.config
                        || w.target != Target::Started
                        || !self.may_run(&name, w)
                }
            };
            if stale {
                let r = running.remove(&name).expect("listed");
                let tasks = r.stored.tasks();
                r.stop().await;
                if !wanted.contains_key(&name) {
                    self.forget_status(&name, tasks).await;
                    tracing::info!(connector = %name, "connector deleted");
                }
            }
        }
        for (name, stored) in wanted {
            // Another worker runs it, and records its status.
            if !self.may_run(&name, &stored) {
                continue;
            }
            let status = match stored.target {
                Target::Started => {
                    if !running.contains_key(&name) {
                        running.insert(name.clone(), self.launch(&name, stored));
                    }
                    continue;
                }
                Target::Paused => "PAUSED",
                Target::Stopped => "STOPPED",
            };
            let current = self
                .statuses
                .get(&connector_status_key(&name))
                .and_then(|v| v.get("state").and_then(Json::as_str).map(str::to_string));
            if current.as_deref() != Some(status) {
                let tasks = if stored.target == Target::Stopped {
                    0
                } else {
                    stored.tasks()
                };
                if let Err(e) = self.write_status(&name, tasks, status, None).await {
                    tracing::warn!(connector = %name, "cannot record the status: {e}");
                }
            }
        }
    }

    /// A sink runs on every worker, and its status names the worker that wrote it
    /// last, which may since have died. The group changes when a worker leaves, so on
    /// each change every worker running a sink writes its status again when it
    /// names another worker: the status ends naming one that is alive.
    async fn claim_sink_statuses(&self, running: &HashMap<String, Running>) {
        for (name, r) in running {
            if r.stored.kind() != "sink" || r.handle.is_finished() {
                continue;
            }
            let current = self.statuses.get(&connector_status_key(name));
            let field = |f: &str| {
                current
                    .as_ref()
                    .and_then(|v| v.get(f))
                    .and_then(Json::as_str)
                    .map(str::to_string)
            };
            if field("state").as_deref() == Some("RUNNING")
                && field("worker_id").as_deref() != Some(self.settings.worker_id.as_str())
            {
                let tasks = r.stored.tasks();
                if let Err(e) = self.write_status(name, tasks, "RUNNING", None).await {
                    tracing::warn!(connector = %name, "cannot record the status: {e}");
                }
            }
        }
    }

    /// Sinks run on every worker; a source on the one the worker group gives it to.
    fn may_run(&self, name: &str, stored: &Stored) -> bool {
        stored.kind() != "source" || self.members.as_ref().is_none_or(|m| m.owns(name))
    }

    fn launch(&self, name: &str, stored: Stored) -> Running {
        let (stop, stopped) = oneshot::channel();
        let herder = self.clone();
        let owned = name.to_string();
        let config = stored.config.clone();
        let tasks = stored.tasks();
        let handle = tokio::spawn(async move {
            herder.run_connector(&owned, config, tasks, stopped).await;
        });
        Running {
            stored,
            stop,
            handle,
        }
    }

    async fn run_connector(
        &self,
        name: &str,
        config: Map<String, Json>,
        tasks: u32,
        stopped: oneshot::Receiver<()>,
    ) {
        let mut topology = match topology_for(name, &config, &self.settings) {
            Ok(t) => t,
            Err(trace) => {
                tracing::error!(connector = %name, "cannot start: {trace}");
                let _ = self.write_status(name, tasks, "FAILED", Some(&trace)).await;
                return;
            }
        };
        let checkpoints = checkpoint_store(&topology, &config);
        let mut mirror = None;
        if let Some(store) = &checkpoints {
            if let Err(trace) = offsets::restore(&self.offsets, name, store) {
                tracing::error!(connector = %name, "cannot start: {trace}");
                let _ = self.write_status(name, tasks, "FAILED", Some(&trace)).await;
                return;
            }
            // Each checkpoint goes to the offsets topic before kwdb-poll's file.
            let m =
                std::sync::Arc::new(offsets::TopicMirror::new(self.offsets.clone(), name, store));
            let mut globals = (*topology.globals).clone();
            globals.position_mirror = Some(m.clone());
            topology.globals = std::sync::Arc::new(globals);
            mirror = Some((m, store));
        }
        if let Err(e) = self.write_status(name, tasks, "RUNNING", None).await {
            tracing::warn!(connector = %name, "cannot record the status: {e}");
        }
        tracing::info!(connector = %name, "connector started");
        let (flag_tx, flag_rx) = oneshot::channel::<()>();
        let stop = async move {
            let _ = stopped.await;
            let _ = flag_tx.send(());
        };
        let run = crate::runtime::run(topology, stop);
        tokio::pin!(run);
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                _ = tokio::time::sleep(offsets::MIRROR_INTERVAL), if mirror.is_some() => {
                    if let Some((m, store)) = &mirror {
                        m.catch_up(store).await;
                    }
                }
            }
        };
        // What the drained topology saved last, where a write to the topic failed.
        if let Some((m, store)) = &mirror {
            m.catch_up(store).await;
        }
        let asked_to_stop = {
            let mut rx = flag_rx;
            rx.try_recv().is_ok()
        };
        match result {
            Ok(()) if asked_to_stop => tracing::info!(connector = %name, "connector stopped"),
            Ok(()) => {
                // Sources that end on their own (none of the KaiwuDB ones do).
                let _ = self.write_status(name, tasks, "UNASSIGNED", None).await;
            }
            Err(e) => {
                let trace = e.to_string();
                tracing::error!(connector = %name, "connector failed: {trace}");
                let _ = self.write_status(name, tasks, "FAILED", Some(&trace)).await;
            }
        }
    }
}

struct Running {
    stored: Stored,
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl Running {
    /// Graceful: the topology drains and commits before this returns.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
    }
}

/// The topology of one connector: the converter's output with the worker's brokers
/// and a data directory of the connector's own (kwdb-poll keeps its checkpoints there).
pub fn topology_for(
    name: &str,
    config: &Map<String, Json>,
    settings: &Settings,
) -> Result<crate::config::Topology, String> {
    let text = json!({ "name": name, "config": config }).to_string();
    let converted =
        convert::convert_text(name, &text, &settings.convert).map_err(|e| e.to_string())?;
    for w in &converted.warnings {
        tracing::debug!("{w}");
    }
    let dir = settings.data_dir.join(dir_name(name));
    let text = format!(
        "data_dir = {}\n{}",
        toml::Value::String(dir.display().to_string().replace('$', "$$")),
        converted.to_toml()
    );
    crate::load::load_texts(
        &[(PathBuf::from(format!("connector {name}")), text)],
        &Default::default(),
    )
    .map_err(|e| e.to_string())
}

/// The checkpoints of the topology's kwdb-poll source (a source connector): its
/// directory, and the database its checkpoints belong to (`connection.database`).
pub fn checkpoint_store(
    topology: &crate::config::Topology,
    config: &Map<String, Json>,
) -> Option<CheckpointStore> {
    let node = topology.nodes.iter().find(|n| n.type_name == "kwdb-poll")?;
    let database = config.get("connection.database")?.as_str()?;
    CheckpointStore::open(topology.globals.data_dir.join(&node.key.id), database).ok()
}

/// A directory name for any connector name: safe characters kept, the rest hex.
fn dir_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c.to_string()
            } else {
                format!("%{:02X}", c as u32)
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}
