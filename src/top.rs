//! `kwpipe top`: a live table of a running agent's components and their rates,
//! read from its admin API (`/components`), in the spirit of `vector top`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::admin::ComponentView;

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{file}: has no [api] section; add `[api] address = \"127.0.0.1:8686\"` to watch it")]
    NoApi { file: String },
    #[error("\"{0}\" is not an http:// address")]
    BadUrl(String),
    #[error("cannot reach {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url} did not answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("{url} sent more than {limit} bytes; not an agent's admin API?")]
    TooLarge { url: String, limit: usize },
    #[error("{url} answered: {status}")]
    Status { url: String, status: String },
    #[error("{url} sent JSON kwpipe does not understand: {source}")]
    Body {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// `http://host:port` of the agent, from a URL or from topology files.
pub fn resolve(target: &[String]) -> Result<String, TopError> {
    if let [one] = target {
        if one.starts_with("http://") {
            return Ok(one.trim_end_matches('/').to_string());
        }
        if one.contains("://") {
            return Err(TopError::BadUrl(one.clone()));
        }
    }
    let paths: Vec<PathBuf> = target.iter().map(PathBuf::from).collect();
    let topology = crate::load::load_files(&paths)?;
    match topology.api {
        Some(api) => Ok(format!("http://{}", api.address)),
        None => Err(TopError::NoApi {
            file: target.join(", "),
        }),
    }
}

/// How long a whole request may take (connect, send, read the answer): a server
/// that never answers must not hang `top`.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read: far above what an agent's `/components` or
/// `/metrics` holds, far below what would hurt to buffer.
pub const MAX_RESPONSE: usize = 16 << 20;

/// A minimal HTTP/1.0 GET: our own server, plain JSON, no client library needed.
/// Bounded in time ([`FETCH_TIMEOUT`]) and size ([`MAX_RESPONSE`]).
pub async fn fetch(base: &str, path: &str) -> Result<(u16, String), TopError> {
    fetch_bounded(base, path, FETCH_TIMEOUT, MAX_RESPONSE).await
}

async fn fetch_bounded(
    base: &str,
    path: &str,
    timeout: Duration,
    max: usize,
) -> Result<(u16, String), TopError> {
    let url = format!("{base}{path}");
    match tokio::time::timeout(timeout, fetch_sized(base, path, max)).await {
        Ok(r) => r,
        Err(_) => Err(TopError::Timeout {
            url,
            after: timeout,
        }),
    }
}

async fn fetch_sized(base: &str, path: &str, max: usize) -> Result<(u16, String), TopError> {
    let url = format!("{base}{path}");
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| TopError::BadUrl(base.to_string()))?;
    let connect = |source| TopError::Connect {
        url: url.clone(),
        source,
    };
    let mut stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .map_err(|_| connect(std::io::ErrorKind::TimedOut.into()))?
    .map_err(connect)?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(connect)?;
    let mut response = Vec::new();
    (&mut stream)
        .take(max as u64 + 1)
        .read_to_end(&mut response)
        .await
        .map_err(connect)?;
    if response.len() > max {
        return Err(TopError::TooLarge { url, limit: max });
    }
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

pub async fn components(base: &str) -> Result<Vec<ComponentView>, TopError> {
    let url = format!("{base}/components");
    let (code, body) = fetch(base, "/components").await?;
    if code != 200 {
        return Err(TopError::Status {
            url,
            status: code.to_string(),
        });
    }
    serde_json::from_str(&body).map_err(|source| TopError::Body { url, source })
}

/// Renders one screen; rates come from the previous sample.
pub fn render(
    base: &str,
    now: &[ComponentView],
    before: Option<(&HashMap<String, ComponentView>, Duration)>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kwpipe top — {base}\n");
    let _ = writeln!(
        out,
        "{:<24} {:<9} {:<12} {:<9} {:>12} {:>10} {:>12} {:>10} {:>8}",
        "ID", "KIND", "TYPE", "STATE", "EVENTS IN", "IN/s", "EVENTS OUT", "OUT/s", "ERRORS"
    );
    for c in now {
        let get = |v: &ComponentView, k: &str| v.counters.get(k).copied().unwrap_or(0.0);
        let rate = |k: &str| match before.and_then(|(prev, dt)| prev.get(&c.id).map(|p| (p, dt))) {
            Some((p, dt)) if !dt.is_zero() => {
                format!("{:.0}", (get(c, k) - get(p, k)).max(0.0) / dt.as_secs_f64())
            }
            _ => "-".into(),
        };
        // What the server sends is shown escaped: a component id holding ESC
        // would drive the terminal.
        let _ = writeln!(
            out,
            "{:<24} {:<9} {:<12} {:<9} {:>12} {:>10} {:>12} {:>10} {:>8}",
            truncate(&shown(&c.id), 24),
            truncate(&shown(&c.kind), 9),
            truncate(&shown(&c.type_name), 12),
            truncate(&shown(&c.state), 9),
            get(c, "received_events"),
            rate("received_events"),
            get(c, "sent_events"),
            rate("sent_events"),
            get(c, "errors"),
        );
        if let Some(e) = &c.error {
            let _ = writeln!(out, "    error: {}", shown(e));
        }
        for p in &c.problems {
            let _ = writeln!(out, "    problem: {}", shown(p));
        }
    }
    out
}

fn shown(s: &str) -> String {
    crate::telemetry::escape::Escaped(s).to_string()
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// Refreshes every `interval` until interrupted; `once` prints a single screen.
pub async fn run(base: &str, interval: Duration, once: bool) -> Result<(), TopError> {
    let mut previous: Option<(HashMap<String, ComponentView>, Instant)> = None;
    loop {
        let now = components(base).await?;
        let at = Instant::now();
        let screen = render(
            base,
            &now,
            previous.as_ref().map(|(p, t)| (p, at.duration_since(*t))),
        );
        let mut stdout = std::io::stdout();
        if once {
            let _ = stdout.write_all(screen.as_bytes());
            return Ok(());
        }
        // Clear the screen and go home, then draw.
        let _ = write!(stdout, "\x1b[2J\x1b[H{screen}");
        let _ = stdout.flush();
        previous = Some((now.into_iter().map(|c| (c.id.clone(), c)).collect(), at));
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    /// A server that accepts, reads the request, then does `then` with the socket.
    async fn bad_server<F, Fut>(then: F) -> String
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            then(s).await;
        });
        base
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let base = bad_server(|s| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(s);
        })
        .await;
        let e = fetch_bounded(&base, "/components", Duration::from_millis(300), 1024)
            .await
            .unwrap_err();
        assert!(matches!(e, TopError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("did not answer"), "{e}");
    }

    #[tokio::test]
    async fn a_huge_answer_is_refused_not_buffered() {
        let base = bad_server(|mut s| async move {
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await;
            let chunk = vec![b'x'; 64 * 1024];
            // Endless: only the cap ends it.
            while s.write_all(&chunk).await.is_ok() {}
        })
        .await;
        let e = fetch_bounded(&base, "/components", Duration::from_secs(60), 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(e, TopError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn control_characters_from_the_server_are_escaped() {
        let view = ComponentView {
            id: "evil\u{1b}[2J\u{1b}]0;owned\u{7}".into(),
            kind: "source\n".into(),
            type_name: "kafka\u{1b}[31m".into(),
            state: "running".into(),
            error: Some("bad\u{1b}[1m\nline".into()),
            problems: vec!["table \"x\" \u{1b}[5m".into()],
            counters: Default::default(),
        };
        let screen = render("http://x", &[view], None);
        assert!(!screen.contains('\u{1b}'), "{screen:?}");
        assert!(!screen.contains('\u{7}'), "{screen:?}");
        assert_eq!(screen.lines().count(), 6, "{screen}");
        assert!(screen.contains("evil\\u{1b}[2J"), "{screen}");
    }
}
