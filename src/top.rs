//! `kwpipe top`: a live table of a running agent's components and their rates,
//! read from its admin API (`/components`), in the spirit of `vector top`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::ComponentView;

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
    let topology = crate::config::load_files(&paths)?;
    match topology.api {
        Some(api) => Ok(format!("http://{}", api.address)),
        None => Err(TopError::NoApi {
            file: target.join(", "),
        }),
    }
}

/// A minimal HTTP/1.0 GET: our own server, plain JSON, no client library needed.
pub async fn fetch(base: &str, path: &str) -> Result<(u16, String), TopError> {
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
    stream.read_to_end(&mut response).await.map_err(connect)?;
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
        let _ = writeln!(
            out,
            "{:<24} {:<9} {:<12} {:<9} {:>12} {:>10} {:>12} {:>10} {:>8}",
            truncate(&c.id, 24),
            c.kind,
            truncate(&c.type_name, 12),
            c.state,
            get(c, "received_events"),
            rate("received_events"),
            get(c, "sent_events"),
            rate("sent_events"),
            get(c, "errors"),
        );
        if let Some(e) = &c.error {
            let _ = writeln!(out, "    error: {e}");
        }
    }
    out
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
