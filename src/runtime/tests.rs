use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kwpipe_components::ack::{BatchNotifier, EventStatus};
use kwpipe_components::api::{
    BuildContext, Component, ComponentClass, ComponentConfig, ComponentContext, ComponentError,
    GlobalOptions, OutputDef,
};
use kwpipe_components::event::{Event, EventKind, RawMessage};

use super::*;
use crate::config::{ComponentKey, Node, OutputRef, Topology};

/// Emits `count` Raw events (or until shutdown when `count` is None) and records
/// the status each one comes back with.
#[derive(Debug, Clone, Default)]
struct TestSource {
    count: Option<usize>,
    statuses: Arc<Mutex<Vec<EventStatus>>>,
    emitted: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

#[async_trait]
impl ComponentConfig for TestSource {
    fn type_name(&self) -> &'static str {
        "test_source"
    }
    fn input_kinds(&self) -> Vec<EventKind> {
        Vec::new()
    }
    fn outputs(&self) -> Vec<OutputDef> {
        vec![OutputDef::default(EventKind::Raw)]
    }
    async fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        Ok(Box::new(self.clone()))
    }
}

#[async_trait]
impl Component for TestSource {
    async fn run(self: Box<Self>, mut cx: ComponentContext) -> Result<(), ComponentError> {
        let mut waiters = tokio::task::JoinSet::new();
        let mut i = 0usize;
        let mut result = Ok(());
        while self.count.is_none_or(|c| i < c) && !cx.shutdown.is_triggered() {
            let (finalizers, rx) = BatchNotifier::pair();
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let (statuses, in_flight) = (self.statuses.clone(), self.in_flight.clone());
            waiters.spawn(async move {
                let s = rx.await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                statuses.lock().unwrap().push(s);
            });
            let msg = RawMessage::new(format!("event {i}")).with_finalizers(finalizers);
            self.emitted.fetch_add(1, Ordering::SeqCst);
            let sent = tokio::select! {
                r = cx.outputs.send(Event::Raw(msg)) => r,
                _ = cx.shutdown.cancelled() => break,
            };
            if let Err(e) = sent {
                result = Err(e);
                break;
            }
            i += 1;
            tokio::task::yield_now().await;
        }
        drop(cx.outputs);
        while waiters.join_next().await.is_some() {}
        result
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    Deliver,
    Fail,
    Error,
    Panic,
    /// Never ends, even when its input does.
    Hang,
    /// Closes its input at once, then fails a little later: its upstream sees the
    /// closed channel before the runtime sees this component's own error.
    CloseThenError,
}

#[derive(Debug, Clone)]
struct TestSink {
    behaviour: Behaviour,
    delay: Duration,
    received: Arc<Mutex<Vec<String>>>,
}

impl TestSink {
    fn new(behaviour: Behaviour) -> Self {
        TestSink {
            behaviour,
            delay: Duration::ZERO,
            received: Arc::default(),
        }
    }
}

#[async_trait]
impl ComponentConfig for TestSink {
    fn type_name(&self) -> &'static str {
        "test_sink"
    }
    fn input_kinds(&self) -> Vec<EventKind> {
        vec![EventKind::Raw]
    }
    fn outputs(&self) -> Vec<OutputDef> {
        Vec::new()
    }
    async fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        Ok(Box::new(self.clone()))
    }
}

#[async_trait]
impl Component for TestSink {
    async fn run(self: Box<Self>, mut cx: ComponentContext) -> Result<(), ComponentError> {
        let mut input = cx.take_input();
        if self.behaviour == Behaviour::CloseThenError {
            drop(input);
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Err(ComponentError::msg("cannot open the output"));
        }
        while let Some(mut event) = input.recv().await {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if let Event::Raw(m) = &event {
                self.received
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&m.payload).into_owned());
            }
            match self.behaviour {
                Behaviour::Deliver | Behaviour::Hang => {
                    event.take_finalizers().finish(EventStatus::Delivered)
                }
                Behaviour::Fail => event.take_finalizers().finish(EventStatus::Failed),
                Behaviour::Error => return Err(ComponentError::msg("disk on fire")),
                Behaviour::Panic => panic!("sink exploded"),
                Behaviour::CloseThenError => unreachable!("returned before reading"),
            }
        }
        if self.behaviour == Behaviour::Hang {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// Passes events through unchanged.
#[derive(Debug, Clone)]
struct Passthrough;

#[async_trait]
impl ComponentConfig for Passthrough {
    fn type_name(&self) -> &'static str {
        "passthrough"
    }
    fn input_kinds(&self) -> Vec<EventKind> {
        vec![EventKind::Raw]
    }
    fn outputs(&self) -> Vec<OutputDef> {
        vec![OutputDef::default(EventKind::Raw)]
    }
    async fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Component>, ComponentError> {
        Ok(Box::new(self.clone()))
    }
}

#[async_trait]
impl Component for Passthrough {
    async fn run(self: Box<Self>, mut cx: ComponentContext) -> Result<(), ComponentError> {
        let mut input = cx.take_input();
        while let Some(event) = input.recv().await {
            cx.outputs.send(event).await?;
        }
        Ok(())
    }
}

fn node(
    class: ComponentClass,
    id: &str,
    inputs: &[&str],
    config: impl ComponentConfig + 'static,
) -> Node {
    Node {
        key: ComponentKey {
            class,
            id: id.to_string(),
        },
        type_name: config.type_name().to_string(),
        inputs: inputs.iter().map(|s| OutputRef::parse(s)).collect(),
        config: Box::new(config),
    }
}

fn topology(nodes: Vec<Node>, capacity: usize) -> Topology {
    let mut errors = Vec::new();
    crate::graph::check(&nodes, &[], &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    Topology {
        globals: Arc::new(GlobalOptions::default()),
        api: None,
        channel_capacity: capacity,
        shutdown_timeout: Duration::from_secs(5),
        nodes,
        warnings: Vec::new(),
    }
}

#[tokio::test]
async fn fan_out_delivers_every_event_to_both_sinks() {
    let source = TestSource {
        count: Some(1000),
        ..Default::default()
    };
    let (a, b) = (
        TestSink::new(Behaviour::Deliver),
        TestSink::new(Behaviour::Deliver),
    );
    let t = topology(
        vec![
            node(ComponentClass::Source, "src", &[], source.clone()),
            node(ComponentClass::Sink, "a", &["src"], a.clone()),
            node(ComponentClass::Sink, "b", &["src"], b.clone()),
        ],
        8,
    );
    run(t, std::future::pending()).await.unwrap();
    let expected: Vec<String> = (0..1000).map(|i| format!("event {i}")).collect();
    assert_eq!(*a.received.lock().unwrap(), expected);
    assert_eq!(*b.received.lock().unwrap(), expected);
    let statuses = source.statuses.lock().unwrap();
    assert_eq!(statuses.len(), 1000);
    assert!(statuses.iter().all(|s| *s == EventStatus::Delivered));
}

#[tokio::test]
async fn one_failing_reader_of_a_fan_out_makes_the_status_failed() {
    let source = TestSource {
        count: Some(50),
        ..Default::default()
    };
    let t = topology(
        vec![
            node(ComponentClass::Source, "src", &[], source.clone()),
            node(
                ComponentClass::Sink,
                "ok",
                &["src"],
                TestSink::new(Behaviour::Deliver),
            ),
            node(
                ComponentClass::Sink,
                "bad",
                &["src"],
                TestSink::new(Behaviour::Fail),
            ),
        ],
        8,
    );
    run(t, std::future::pending()).await.unwrap();
    let statuses = source.statuses.lock().unwrap();
    assert_eq!(statuses.len(), 50);
    assert!(statuses.iter().all(|s| *s == EventStatus::Failed));
}

#[tokio::test]
async fn a_slow_sink_bounds_events_in_flight_to_the_channel_capacities() {
    let capacity = 4;
    let source = TestSource {
        count: Some(300),
        ..Default::default()
    };
    let mut sink = TestSink::new(Behaviour::Deliver);
    sink.delay = Duration::from_millis(1);
    let t = topology(
        vec![
            node(ComponentClass::Source, "src", &[], source.clone()),
            node(ComponentClass::Transform, "mid", &["src"], Passthrough),
            node(ComponentClass::Sink, "slow", &["mid"], sink.clone()),
        ],
        capacity,
    );
    run(t, std::future::pending()).await.unwrap();
    assert_eq!(sink.received.lock().unwrap().len(), 300);
    // Two channels, plus one event in the hands of each of the three components.
    let bound = 2 * capacity + 3;
    let max = source.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= bound, "{max} events in flight, bound {bound}");
    assert!(
        max >= capacity,
        "the source should have filled the channels, saw {max}"
    );
}

#[tokio::test]
async fn a_failed_status_reaches_the_source() {
    let source = TestSource {
        count: Some(10),
        ..Default::default()
    };
    let t = topology(
        vec![
            node(ComponentClass::Source, "src", &[], source.clone()),
            node(
                ComponentClass::Sink,
                "bad",
                &["src"],
                TestSink::new(Behaviour::Fail),
            ),
        ],
        4,
    );
    run(t, std::future::pending()).await.unwrap();
    let statuses = source.statuses.lock().unwrap();
    assert_eq!(*statuses, vec![EventStatus::Failed; 10]);
}

async fn expect_failure(behaviour: Behaviour, contains: &str) {
    let source = TestSource::default();
    let t = topology(
        vec![
            node(ComponentClass::Source, "src", &[], source.clone()),
            node(
                ComponentClass::Sink,
                "bad",
                &["src"],
                TestSink::new(behaviour),
            ),
        ],
        4,
    );
    let err = tokio::time::timeout(Duration::from_secs(10), run(t, std::future::pending()))
        .await
        .expect("a failing component must end the run, not hang")
        .unwrap_err();
    match &err {
        RuntimeError::ComponentFailed { component, message } => {
            assert_eq!(component, "sinks.bad");
            assert!(message.contains(contains), "{message}");
        }
        other => panic!("unexpected error {other}"),
    }
    // Whatever the source had emitted is resolved, none of it as delivered by mistake.
    let statuses = source.statuses.lock().unwrap();
    assert_eq!(statuses.len(), source.emitted.load(Ordering::SeqCst));
    assert!(statuses.iter().all(|s| *s == EventStatus::Failed));
}

#[tokio::test]
async fn a_panicking_component_fails_the_run_and_names_itself() {
    expect_failure(Behaviour::Panic, "panicked: sink exploded").await;
}

#[tokio::test]
async fn an_erroring_component_fails_the_run_and_names_itself() {
    expect_failure(Behaviour::Error, "disk on fire").await;
}

#[tokio::test]
async fn the_failure_named_is_the_cause_not_the_upstream_that_saw_it_close() {
    expect_failure(Behaviour::CloseThenError, "cannot open the output").await;
}

#[tokio::test]
async fn shutdown_drains_and_resolves_every_finalizer() {
    let source = TestSource::default();
    let sink = TestSink::new(Behaviour::Deliver);
    let t = topology(
        vec![
            node(ComponentClass::Source, "src", &[], source.clone()),
            node(ComponentClass::Transform, "mid", &["src"], Passthrough),
            node(ComponentClass::Sink, "out", &["mid"], sink.clone()),
        ],
        16,
    );
    run(t, tokio::time::sleep(Duration::from_millis(200)))
        .await
        .unwrap();
    let emitted = source.emitted.load(Ordering::SeqCst);
    assert!(emitted > 0);
    let statuses = source.statuses.lock().unwrap();
    assert_eq!(statuses.len(), emitted);
    assert!(statuses.iter().all(|s| *s == EventStatus::Delivered));
    assert_eq!(sink.received.lock().unwrap().len(), emitted);
}

#[tokio::test]
async fn a_component_that_will_not_stop_is_forced_at_the_deadline() {
    let source = TestSource {
        count: Some(5),
        ..Default::default()
    };
    let mut t = topology(
        vec![
            node(ComponentClass::Source, "src", &[], source.clone()),
            node(
                ComponentClass::Sink,
                "stuck",
                &["src"],
                TestSink::new(Behaviour::Hang),
            ),
        ],
        4,
    );
    t.shutdown_timeout = Duration::from_millis(300);
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        run(t, tokio::time::sleep(Duration::from_millis(100))),
    )
    .await
    .expect("the deadline must force the stop")
    .unwrap_err();
    match err {
        RuntimeError::ForcedShutdown { pending, .. } => assert_eq!(pending, vec!["sinks.stuck"]),
        other => panic!("unexpected error {other}"),
    }
}
