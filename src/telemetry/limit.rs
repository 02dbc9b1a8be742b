//! Repeated log messages rate-limited per component and reason, with a count of
//! what was left out. One bad message with 100,000 bad values, or a broker
//! unreachable for hours (librdkafka says so several times a second), would
//! otherwise fill an edge box's journal.
//!
//! A reason is the log statement (its callsite); for librdkafka, whose messages
//! all come from one statement, the message's text with its digits left out
//! (`1/1 brokers are down` and `0/1 brokers are down` are one reason). The
//! component is the `component` span the event is logged in. Per (component,
//! reason), `burst` events are written in each `window`; the rest are counted, and
//! the count is logged once the window is over (by [`RateLimit::reports`], which
//! a background thread calls every second: a layer cannot log from inside
//! `tracing`'s dispatch). Debug and trace events, asked for on purpose, are never
//! left out.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The target of the summaries this module logs (never limited themselves).
pub const TARGET: &str = "kwpipe::log_limit";

/// At most this many (component, reason) pairs are tracked; past it, events of
/// new pairs share one overflow entry (still limited, never unbounded memory).
const MAX_KEYS: usize = 4096;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    callsite: Option<Identifier>,
    component: Option<String>,
    text: Option<String>,
}

struct Entry {
    start: Instant,
    written: u32,
    suppressed: u64,
    level: Level,
    /// The first message of the window, to say what was left out.
    sample: String,
}

/// What was left out of one (component, reason) in one window.
#[derive(Clone, Debug, PartialEq)]
pub struct Suppressed {
    pub component: Option<String>,
    pub level: Level,
    pub count: u64,
    pub like: String,
}

#[derive(Clone)]
pub struct RateLimit {
    window: Duration,
    burst: u32,
    state: Arc<Mutex<HashMap<Key, Entry>>>,
}

/// The id of the component a span belongs to, kept in the span's extensions.
struct ComponentId(String);

impl RateLimit {
    pub fn new(window: Duration, burst: u32) -> Self {
        RateLimit {
            window,
            burst,
            state: Arc::default(),
        }
    }

    /// Takes the counts of windows over at `now` (and forgets their entries).
    pub fn reports(&self, now: Instant) -> Vec<Suppressed> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        state.retain(|key, e| {
            if now.duration_since(e.start) < self.window {
                return true;
            }
            if e.suppressed > 0 {
                out.push(Suppressed {
                    component: key.component.clone(),
                    level: e.level,
                    count: e.suppressed,
                    like: std::mem::take(&mut e.sample),
                });
            }
            false
        });
        out
    }

    /// Whether an event of `key` is written at `now`.
    fn admit(&self, key: Key, level: Level, now: Instant, sample: impl FnOnce() -> String) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let key = if state.len() >= MAX_KEYS && !state.contains_key(&key) {
            Key {
                callsite: None,
                component: None,
                text: None,
            }
        } else {
            key
        };
        let e = state.entry(key).or_insert_with(|| Entry {
            start: now,
            written: 0,
            suppressed: 0,
            level,
            sample: String::new(),
        });
        if now.duration_since(e.start) >= self.window && e.suppressed == 0 {
            // A window over with nothing left out: start a new one (a window
            // with a count waits for `reports`, so the count is never lost).
            e.start = now;
            e.written = 0;
        }
        if e.written < self.burst {
            if e.written == 0 {
                e.sample = sample();
                e.level = level;
            }
            e.written += 1;
            true
        } else {
            e.suppressed += 1;
            false
        }
    }
}

/// Logs the counts of what was left out.
pub fn log_reports(reports: Vec<Suppressed>) {
    for r in reports {
        let component = r.component.as_deref().unwrap_or("-");
        tracing::warn!(
            target: TARGET,
            component,
            suppressed = r.count,
            level = %r.level,
            like = %r.like,
            "repeated log messages suppressed"
        );
    }
}

/// The `message` field's text.
struct MessageText(String);

impl Visit for MessageText {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_owned();
        }
    }
}

fn message(event: &Event<'_>) -> String {
    let mut m = MessageText(String::new());
    event.record(&mut m);
    m.0
}

/// librdkafka's text as a reason: digits out (counts, ids, ports), cut short.
fn librdkafka_reason(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_ascii_digit())
        .take(64)
        .collect()
}

impl<S> Layer<S> for RateLimit
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "component" {
            return;
        }
        struct IdField(Option<String>);
        impl Visit for IdField {
            fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
                if field.name() == "id" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut v = IdField(None);
        attrs.record(&mut v);
        if let (Some(id_value), Some(span)) = (v.0, ctx.span(id)) {
            span.extensions_mut().insert(ComponentId(id_value));
        }
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::INFO || meta.target() == TARGET {
            return true;
        }
        let component = ctx.event_scope(event).and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<ComponentId>().map(|c| c.0.clone()))
        });
        let text = meta
            .target()
            .starts_with("librdkafka")
            .then(|| librdkafka_reason(&message(event)));
        let key = Key {
            callsite: Some(meta.callsite()),
            component,
            text,
        };
        self.admit(key, *meta.level(), Instant::now(), || message(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Runs `f` under a subscriber of the limiter and a counting layer.
    fn under(limit: &RateLimit, f: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Seen(Arc<Mutex<Vec<String>>>);
        impl<S: Subscriber> Layer<S> for Seen {
            fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
                self.0.lock().unwrap().push(message(event));
            }
        }
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(limit.clone())
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, f);
        let out = seen.0.lock().unwrap().clone();
        out
    }

    #[test]
    fn a_flood_from_one_statement_is_cut_to_the_burst_and_counted() {
        let limit = RateLimit::new(Duration::from_secs(3600), 10);
        let seen = under(&limit, || {
            for i in 0..100_000 {
                tracing::warn!(row = i, "row rejected");
            }
            tracing::warn!("another reason");
        });
        assert_eq!(seen.len(), 11, "{seen:?}");
        assert_eq!(seen.last().unwrap(), "another reason");
        // Nothing to report while the window lasts; then the count.
        assert_eq!(limit.reports(Instant::now()), vec![]);
        let reports = limit.reports(Instant::now() + Duration::from_secs(3601));
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].count, 100_000 - 10);
        assert_eq!(reports[0].like, "row rejected");
        assert_eq!(reports[0].level, Level::WARN);
    }

    #[test]
    fn components_are_limited_apart_and_debug_never() {
        let limit = RateLimit::new(Duration::from_secs(3600), 2);
        let seen = under(&limit, || {
            for id in ["a", "b"] {
                let span = tracing::info_span!("component", id = %id);
                let _g = span.enter();
                for _ in 0..5 {
                    tracing::error!("cannot write");
                }
            }
            for _ in 0..5 {
                tracing::debug!("detail");
            }
        });
        assert_eq!(seen.len(), 2 + 2 + 5, "{seen:?}");
        let mut reports = limit.reports(Instant::now() + Duration::from_secs(3601));
        reports.sort_by(|a, b| a.component.cmp(&b.component));
        let by: Vec<(Option<&str>, u64)> = reports
            .iter()
            .map(|r| (r.component.as_deref(), r.count))
            .collect();
        assert_eq!(by, vec![(Some("a"), 3), (Some("b"), 3)]);
    }

    #[test]
    fn librdkafka_messages_are_limited_by_their_text_without_digits() {
        let limit = RateLimit::new(Duration::from_secs(3600), 1);
        let seen = under(&limit, || {
            for i in 0..300 {
                tracing::error!(target: "librdkafka", "librdkafka: Global error: AllBrokersDown: {}/1 brokers are down", i % 2);
                tracing::error!(target: "librdkafka", "librdkafka: FAIL localhost:{}: Connection refused", 9000 + i);
            }
        });
        assert_eq!(seen.len(), 2, "{seen:?}");
        let reports = limit.reports(Instant::now() + Duration::from_secs(3601));
        assert_eq!(reports.iter().map(|r| r.count).sum::<u64>(), 2 * 299);
    }

    #[test]
    fn the_keys_tracked_are_bounded() {
        let limit = RateLimit::new(Duration::from_secs(3600), 1);
        under(&limit, || {
            for i in 0..(MAX_KEYS + 100) {
                let letters: String = i
                    .to_string()
                    .bytes()
                    .map(|d| (d - b'0' + b'a') as char)
                    .collect();
                tracing::error!(target: "librdkafka", "librdkafka: {letters}");
            }
        });
        assert!(limit.state.lock().unwrap().len() <= MAX_KEYS + 1);
    }
}
