//! What a component is, as the runtime sees it: a config that can be checked and
//! built, and a task that runs with a context (its input, its outputs, a shutdown
//! signal).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use metrics::Counter;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ack::RejectPolicy;
use crate::event::{Event, EventKind};

/// Sources, transforms and sinks: the three sections of a topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ComponentClass {
    Source,
    Transform,
    Sink,
}

impl ComponentClass {
    /// The TOML table name: `sources`, `transforms`, `sinks`.
    pub fn section(self) -> &'static str {
        match self {
            ComponentClass::Source => "sources",
            ComponentClass::Transform => "transforms",
            ComponentClass::Sink => "sinks",
        }
    }
}

/// The name of the output for records a component rejected.
pub const DROPPED_OUTPUT: &str = "dropped";

/// One output a component declares: `None` is the default output (referred to by
/// the component id), `Some(name)` a named one (referred to as `id.name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputDef {
    pub name: Option<String>,
    pub kind: EventKind,
}

impl OutputDef {
    pub fn default(kind: EventKind) -> Self {
        OutputDef { name: None, kind }
    }

    pub fn named(name: &str, kind: EventKind) -> Self {
        OutputDef {
            name: Some(name.to_string()),
            kind,
        }
    }
}

/// Settings that hold for the whole topology.
#[derive(Clone, Debug)]
pub struct GlobalOptions {
    pub data_dir: PathBuf,
    /// Where sources copy each position before they keep it themselves (None: only
    /// their own files). The Connect worker sets it to its offsets topic.
    pub position_mirror: Option<Arc<dyn PositionMirror>>,
}

impl Default for GlobalOptions {
    fn default() -> Self {
        GlobalOptions {
            data_dir: PathBuf::from("/var/lib/kwpipe"),
            position_mirror: None,
        }
    }
}

/// A copy of a source's positions kept elsewhere, written before the source's own
/// file: after a crash the copy is never behind the file, so whoever resumes from
/// the copy (another machine) repeats no more than the file would. Called on a
/// blocking thread; an error is logged and the position is kept locally anyway.
pub trait PositionMirror: Send + Sync + std::fmt::Debug {
    /// `position` of `table` (the source's checkpoint, as JSON).
    fn save(&self, table: &str, position: &serde_json::Value) -> Result<(), String>;
}

/// What a component needs to be built.
#[derive(Clone, Debug)]
pub struct BuildContext {
    pub id: Arc<str>,
    pub globals: Arc<GlobalOptions>,
}

/// A component's parsed and checked configuration.
#[async_trait]
pub trait ComponentConfig: fmt::Debug + Send + Sync {
    /// The `type` it was registered under.
    fn type_name(&self) -> &'static str;

    /// Kinds of event it accepts; empty for sources.
    fn input_kinds(&self) -> Vec<EventKind>;

    /// Outputs it produces; empty for sinks without a `dropped` output.
    fn outputs(&self) -> Vec<OutputDef>;

    /// Checks what the configuration alone can tell (values that fit together, files
    /// it names exist and hold what they should). Run when a topology is loaded, by
    /// `validate --no-environment` too, so such a mistake is reported with every
    /// other before anything starts.
    fn check(&self) -> Result<(), ComponentError> {
        Ok(())
    }

    /// For a source that owns positions: what it does with a record rejected
    /// downstream that no `dropped` output took (see [`RejectPolicy`]). None for
    /// components that hold no position.
    fn reject_policy(&self) -> Option<RejectPolicy> {
        None
    }

    /// Whether it may reject records (it reports `Rejected` or sends to a
    /// `dropped` output). By default: whether it declares a `dropped` output.
    fn may_reject(&self) -> bool {
        self.outputs()
            .iter()
            .any(|o| o.name.as_deref() == Some(DROPPED_OUTPUT))
    }

    /// Checks the parts of the configuration that only the outside world can tell
    /// (the database answers, the broker is reachable). Skipped by
    /// `validate --no-environment`.
    async fn healthcheck(&self, _cx: &BuildContext) -> Result<(), ComponentError> {
        Ok(())
    }

    async fn build(&self, cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError>;
}

/// A running component: one tokio task.
#[async_trait]
pub trait Component: Send {
    async fn run(self: Box<Self>, cx: ComponentContext) -> Result<(), ComponentError>;
}

/// The failure of a component; it ends the run.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("{0}")]
    Message(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("downstream component stopped; cannot send")]
    OutputClosed,
    /// What a source sent was not delivered downstream: the consequence of a
    /// failure further down, whose own error names the cause.
    #[error("{0}")]
    Undelivered(String),
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl ComponentError {
    /// Whether this failure only follows from another component's (a reader that
    /// went away, events not delivered): the supervisor names the other one.
    pub fn is_consequence(&self) -> bool {
        matches!(
            self,
            ComponentError::OutputClosed | ComponentError::Undelivered(_)
        )
    }

    pub fn msg(message: impl Into<String>) -> Self {
        ComponentError::Message(message.into())
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ComponentError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn other(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ComponentError::Other(Box::new(e))
    }
}

/// Everything a running component is handed.
pub struct ComponentContext {
    pub id: Arc<str>,
    pub input: Option<Input>,
    pub outputs: Outputs,
    pub shutdown: ShutdownSignal,
    pub globals: Arc<GlobalOptions>,
}

impl ComponentContext {
    /// The context the runtime hands a component: its id, its input (None for a
    /// source), its outputs, the topology's shutdown signal and settings.
    pub fn new(
        id: impl Into<Arc<str>>,
        input: Option<Input>,
        outputs: Outputs,
        shutdown: ShutdownSignal,
        globals: Arc<GlobalOptions>,
    ) -> Self {
        ComponentContext {
            id: id.into(),
            input,
            outputs,
            shutdown,
            globals,
        }
    }

    /// A context for running one component on its own, outside a topology
    /// (tests, benches): it reads `input` (None for a source), its default output
    /// sends to `output` (None: nowhere), its metrics are labelled `id` and
    /// `type_name`, with a fresh shutdown signal (`cx.shutdown.clone()` to
    /// trigger it) and default settings. Public, not `cfg(test)`: integration
    /// tests and benches live in other crates.
    pub fn standalone(
        id: &str,
        type_name: &str,
        input: Option<mpsc::Receiver<Event>>,
        output: Option<mpsc::Sender<Event>>,
    ) -> Self {
        let metrics = ComponentMetrics::new(id, type_name);
        let input = input.map(|rx| Input::new(rx, metrics.clone()));
        let outputs = match output {
            Some(tx) => Outputs::new(
                Output::new(vec![tx], metrics.clone()),
                BTreeMap::new(),
                metrics,
            ),
            None => Outputs::detached(metrics),
        };
        ComponentContext::new(
            id,
            input,
            outputs,
            ShutdownSignal::new(),
            Arc::new(GlobalOptions::default()),
        )
    }

    /// The same context stopped by `shutdown` instead.
    pub fn with_shutdown(mut self, shutdown: ShutdownSignal) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The same context with these topology settings instead.
    pub fn with_globals(mut self, globals: Arc<GlobalOptions>) -> Self {
        self.globals = globals;
        self
    }

    /// Takes the input; panics for sources, which the graph never gives one.
    pub fn take_input(&mut self) -> Input {
        self.input.take().expect("only sources have no input")
    }
}

/// Tells the topology to stop. Sources stop emitting when it fires; transforms
/// and sinks keep draining their input until it ends (that is how the graph
/// empties) but may cut retries short, reporting Failed for what they give up on.
/// Cloneable; `cancelled()` is the future to select on.
#[derive(Clone, Debug, Default)]
pub struct ShutdownSignal(CancellationToken);

impl ShutdownSignal {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.0.cancel()
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    pub async fn cancelled(&self) {
        self.0.cancelled().await
    }

    /// A signal that fires with this one or when triggered itself.
    pub fn child(&self) -> ShutdownSignal {
        ShutdownSignal(self.0.child_token())
    }
}

/// Per-component counters, labelled with the component id and type, and the
/// component's health as it last reported it.
#[derive(Clone)]
pub struct ComponentMetrics {
    pub received_events: Counter,
    pub received_bytes: Counter,
    pub sent_events: Counter,
    pub sent_bytes: Counter,
    pub discarded_events: Counter,
    labels: Vec<(&'static str, String)>,
    health: Arc<Health>,
}

/// The outcome of a component's most recent read or write, and how many records
/// it rejected in a row.
#[derive(Default)]
struct Health {
    last_ok: AtomicU64,
    last_error: Mutex<Option<(u64, String)>>,
    /// Records rejected since one last went through.
    rejected_run: AtomicU64,
    /// Standing problems with part of what the component handles (a table it
    /// skips), by what they concern; shown in `/components` until cleared.
    problems: Mutex<std::collections::BTreeMap<String, String>>,
}

/// Rejected in a row, nothing through: the component rejects everything (a
/// precision setting off by 10^6, a table that does not match), which no single
/// rejection says. A few bad records in a quiet stream stay below it.
pub const REJECTING_EVERYTHING: u64 = 100;

/// Milliseconds since the Unix epoch, from the crate's one clock for that.
fn now_millis() -> u64 {
    crate::formats::time::now(crate::event::Precision::Ms).value as u64
}

impl ComponentMetrics {
    pub fn new(id: &str, type_name: &str) -> Self {
        let labels = vec![
            ("component_id", id.to_string()),
            ("component_type", type_name.to_string()),
        ];
        ComponentMetrics {
            received_events: metrics::counter!("component_received_events_total", &labels),
            received_bytes: metrics::counter!("component_received_bytes_total", &labels),
            sent_events: metrics::counter!("component_sent_events_total", &labels),
            sent_bytes: metrics::counter!("component_sent_bytes_total", &labels),
            discarded_events: metrics::counter!("component_discarded_events_total", &labels),
            labels,
            health: Arc::default(),
        }
    }

    /// The component's last read or write worked (the database answered, the
    /// broker acknowledged).
    pub fn report_ok(&self) {
        self.health.last_ok.store(now_millis(), Ordering::Relaxed);
    }

    /// The component's last read or write failed (it will retry). Counts an error
    /// of `kind` and makes the component unhealthy until it reports ok again.
    pub fn report_error(&self, kind: &'static str, message: impl fmt::Display) {
        self.error(kind);
        let mut last = self
            .health
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *last = Some((now_millis(), message.to_string()));
    }

    /// None when healthy; otherwise the last error's message, or that every
    /// recent record was rejected.
    pub fn unhealthy_reason(&self) -> Option<String> {
        let run = self.health.rejected_run.load(Ordering::Relaxed);
        if run >= REJECTING_EVERYTHING {
            return Some(format!(
                "rejected the last {run} records and passed none (their reasons are in the log; component_rejected_events_total counts them)"
            ));
        }
        let last = self
            .health
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let ok = self.health.last_ok.load(Ordering::Relaxed);
        match &*last {
            Some((at, message)) if *at >= ok => Some(message.clone()),
            _ => None,
        }
    }

    /// Records a standing problem with one part of the component's work (`key`:
    /// what it concerns, such as a table), replacing an earlier one for the same
    /// key. Counts an error of `kind`.
    pub fn set_problem(&self, kind: &'static str, key: &str, message: impl fmt::Display) {
        self.error(kind);
        self.health
            .problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), message.to_string());
    }

    /// The problem with `key` is gone.
    pub fn clear_problem(&self, key: &str) {
        self.health
            .problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// The standing problems' messages, in the order of their keys.
    pub fn problems(&self) -> Vec<String> {
        self.health
            .problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Counts an error of a kind (`decode`, `write`, `connection`...).
    pub fn error(&self, kind: &'static str) {
        let mut labels = self.labels.clone();
        labels.push(("error_type", kind.to_string()));
        metrics::counter!("component_errors_total", &labels).increment(1);
    }

    /// Counts records rejected as permanently bad.
    pub fn rejected(&self, n: u64) {
        metrics::counter!("component_rejected_events_total", &self.labels).increment(n);
        self.health.rejected_run.fetch_add(n, Ordering::Relaxed);
    }

    /// Records went through (sent on, written): the component does not reject
    /// everything. Output::send reports it for components with a default output;
    /// sinks report what they wrote.
    pub fn passed(&self, n: u64) {
        if n > 0 {
            self.health.rejected_run.store(0, Ordering::Relaxed);
        }
    }

    pub fn labels(&self) -> &[(&'static str, String)] {
        &self.labels
    }
}

impl fmt::Debug for ComponentMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentMetrics")
            .field("labels", &self.labels)
            .finish()
    }
}

/// The receiving end of a component's input; all its upstreams feed one channel.
pub struct Input {
    rx: mpsc::Receiver<Event>,
    metrics: ComponentMetrics,
}

impl Input {
    pub fn new(rx: mpsc::Receiver<Event>, metrics: ComponentMetrics) -> Self {
        Input { rx, metrics }
    }

    /// The next event, or None once every upstream has finished.
    pub async fn recv(&mut self) -> Option<Event> {
        let event = self.rx.recv().await?;
        self.metrics.received_events.increment(event.count() as u64);
        self.metrics
            .received_bytes
            .increment(event.size_hint() as u64);
        Some(event)
    }

    /// Waits for an event, then appends it and those already waiting to `buf`, up
    /// to `max` of them. Returns how many came; 0 once the input is closed and empty.
    pub async fn recv_many(&mut self, buf: &mut Vec<Event>, max: usize) -> usize {
        let start = buf.len();
        let n = self.rx.recv_many(buf, max).await;
        for event in &buf[start..] {
            self.metrics.received_events.increment(event.count() as u64);
            self.metrics
                .received_bytes
                .increment(event.size_hint() as u64);
        }
        n
    }

    pub fn metrics(&self) -> &ComponentMetrics {
        &self.metrics
    }
}

/// One output: the senders of every component that reads it.
pub struct Output {
    senders: Vec<mpsc::Sender<Event>>,
    metrics: ComponentMetrics,
}

impl Output {
    pub fn new(senders: Vec<mpsc::Sender<Event>>, metrics: ComponentMetrics) -> Self {
        Output { senders, metrics }
    }

    /// Whether anything reads this output.
    pub fn is_connected(&self) -> bool {
        !self.senders.is_empty()
    }

    /// Sends to every reader in turn, so the slowest one sets the pace. An output
    /// nobody reads drops the event with the status already set on it.
    pub async fn send(&mut self, event: Event) -> Result<(), ComponentError> {
        let count = event.count() as u64;
        let bytes = event.size_hint() as u64;
        let Some((last, rest)) = self.senders.split_last() else {
            return Ok(());
        };
        for tx in rest {
            tx.send(event.fork())
                .await
                .map_err(|_| ComponentError::OutputClosed)?;
        }
        last.send(event)
            .await
            .map_err(|_| ComponentError::OutputClosed)?;
        self.metrics.sent_events.increment(count);
        self.metrics.sent_bytes.increment(bytes);
        Ok(())
    }
}

/// A component's outputs: the default one and any named ones (`dropped`).
pub struct Outputs {
    default: Output,
    named: BTreeMap<String, Output>,
    metrics: ComponentMetrics,
}

impl Outputs {
    pub fn new(
        default: Output,
        named: BTreeMap<String, Output>,
        metrics: ComponentMetrics,
    ) -> Self {
        Outputs {
            default,
            named,
            metrics,
        }
    }

    pub async fn send(&mut self, event: Event) -> Result<(), ComponentError> {
        let count = event.count() as u64;
        self.default.send(event).await?;
        self.metrics.passed(count);
        Ok(())
    }

    /// Sends to a named output; nothing happens when nobody reads it.
    pub async fn send_to(&mut self, name: &str, event: Event) -> Result<(), ComponentError> {
        match self.named.get_mut(name) {
            Some(out) => out.send(event).await,
            None => Ok(()),
        }
    }

    pub fn is_connected(&self, name: &str) -> bool {
        self.named.get(name).is_some_and(Output::is_connected)
    }

    pub fn metrics(&self) -> &ComponentMetrics {
        &self.metrics
    }

    /// Outputs that go nowhere, for components whose outputs are not wired (tests).
    pub fn detached(metrics: ComponentMetrics) -> Self {
        Outputs::new(
            Output::new(Vec::new(), metrics.clone()),
            BTreeMap::new(),
            metrics,
        )
    }
}

/// Retry delays: exponential from `initial`, capped at `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            next: initial,
            max,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// After a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
        let delays: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 300, 300]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_standalone_context_is_wired_to_its_channels() {
        let (in_tx, in_rx) = mpsc::channel(1);
        let (out_tx, mut out_rx) = mpsc::channel(1);
        let mut cx = ComponentContext::standalone("c", "test", Some(in_rx), Some(out_tx));
        assert_eq!(&*cx.id, "c");
        let shutdown = ShutdownSignal::new();
        let mut cx_stopped =
            ComponentContext::standalone("s", "test", None, None).with_shutdown(shutdown.clone());
        shutdown.trigger();
        assert!(cx_stopped.shutdown.is_triggered());
        assert!(cx_stopped.input.is_none());
        // Detached outputs take events and drop them.
        cx_stopped
            .outputs
            .send(Event::Raw(Default::default()))
            .await
            .unwrap();
        in_tx.send(Event::Raw(Default::default())).await.unwrap();
        let event = cx.take_input().recv().await.unwrap();
        cx.outputs.send(event).await.unwrap();
        assert!(out_rx.recv().await.is_some());
    }

    /// A source whose events were not delivered failed because something downstream
    /// did: the supervisor must name that one (a race decided which came first).
    #[test]
    fn undelivered_and_closed_outputs_are_consequences() {
        assert!(
            ComponentError::Undelivered("2 chunk(s) were not delivered".into()).is_consequence()
        );
        assert!(ComponentError::OutputClosed.is_consequence());
        assert!(!ComponentError::msg("cannot open out.txt").is_consequence());
    }

    /// Issue 18, item 10: a component that rejects everything is unhealthy, with
    /// why; one record through makes it healthy again.
    #[test]
    fn rejecting_everything_is_unhealthy_until_a_record_passes() {
        let m = ComponentMetrics::new("d", "decode");
        m.rejected(REJECTING_EVERYTHING - 1);
        assert_eq!(
            m.unhealthy_reason(),
            None,
            "a few rejects are not everything"
        );
        m.rejected(1);
        let reason = m.unhealthy_reason().expect("unhealthy");
        assert!(
            reason.starts_with("rejected the last 100 records"),
            "{reason}"
        );
        m.passed(0);
        assert!(m.unhealthy_reason().is_some(), "nothing passed");
        m.passed(1);
        assert_eq!(m.unhealthy_reason(), None);
    }
}
