//! A kwpipe process under test: started from a command line (`run TOPOLOGY`,
//! `connect run ...`, `connect worker ...`), its log written to a file the test can
//! read while it runs, its admin API asked for health and metrics, and stopped the
//! way an operator would (SIGTERM) or the way a crash does (kill -9). Dropping it
//! kills it, so a failing test leaves no process behind.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, kwpipe, write_topology};

/// A running kwpipe process.
pub struct Agent {
    pub child: Child,
    /// Where its standard error (and, with [`Launch::shared_log`], its standard
    /// output) goes.
    pub log: PathBuf,
    /// The admin API's port, when the launch named it.
    pub api: Option<u16>,
}

/// How to start an [`Agent`]: the command line, its environment and its log.
pub struct Launch {
    cmd: Command,
    log: Option<(PathBuf, bool)>,
    api: Option<u16>,
}

impl Launch {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Launch {
        self.cmd.arg(arg);
        self
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Launch {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Launch {
        self.cmd.env(key, value);
        self
    }

    pub fn envs(mut self, env: &[(&str, String)]) -> Launch {
        self.cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        self
    }

    pub fn env_remove(mut self, key: &str) -> Launch {
        self.cmd.env_remove(key);
        self
    }

    /// Standard error into a new file at `path`; standard output dropped.
    pub fn log(mut self, path: impl Into<PathBuf>) -> Launch {
        self.log = Some((path.into(), false));
        self
    }

    /// Standard output and error appended to the file at `path`, so the runs of
    /// one agent before and after a restart read as one log.
    pub fn shared_log(mut self, path: impl Into<PathBuf>) -> Launch {
        self.log = Some((path.into(), true));
        self
    }

    /// The admin API listens on `port` (the topology says so): [`Agent::terminate`]
    /// signals only once it answers, and [`Agent::get`] and [`Agent::metric`] read it.
    pub fn api(mut self, port: u16) -> Launch {
        self.api = Some(port);
        self
    }

    pub fn start(mut self) -> Agent {
        let (log, shared) = self.log.expect("an agent's log file (Launch::log)");
        let file = if shared {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
        } else {
            std::fs::File::create(&log)
        }
        .unwrap_or_else(|e| panic!("log file {}: {e}", log.display()));
        let stdout = if shared {
            Stdio::from(file.try_clone().unwrap())
        } else {
            Stdio::null()
        };
        let child = self
            .cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(file)
            .spawn()
            .expect("kwpipe starts");
        Agent {
            child,
            log,
            api: self.api,
        }
    }
}

impl Agent {
    /// `kwpipe run TOPOLOGY`.
    pub fn run(topology: &Path) -> Launch {
        Agent::command(["run".as_ref(), topology.as_os_str()])
    }

    /// `kwpipe ARGS`, any other command line.
    pub fn command<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Launch {
        let mut cmd = kwpipe();
        cmd.args(args);
        Launch {
            cmd,
            log: None,
            api: None,
        }
    }

    /// `kwpipe run` of `topology` (text) written to `dir/NAME.toml` with the admin
    /// API on a free port, logging into `dir/NAME.log` (appended).
    pub fn run_with_api(dir: &Path, name: &str, topology: &str) -> Launch {
        let api = free_port();
        // Top-level keys must come before the first table: [api] goes last.
        let text = format!("{topology}\n[api]\naddress = \"127.0.0.1:{api}\"\n");
        let path = write_topology(dir, &format!("{name}.toml"), &text);
        Agent::run(&path)
            .shared_log(dir.join(format!("{name}.log")))
            .api(api)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole log so far (bytes that are not UTF-8 replaced).
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&self.raw_log()).into_owned()
    }

    pub fn raw_log(&self) -> Vec<u8> {
        std::fs::read(&self.log).unwrap_or_default()
    }

    /// The log's last `lines` lines.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Panics with the log when the agent has exited on its own.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("agent exited early ({status}):\n{}", self.log_text());
        }
    }

    /// SIGKILL: no drain, no commit, no checkpoint, no leave-group. The agent's log
    /// stays readable.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status; panics (killing it) when the agent has not
    /// exited within `limit`.
    pub fn terminate(self, limit: Duration) -> ExitStatus {
        self.terminate_timed(limit).0
    }

    /// [`Agent::terminate`], with how long the exit took. With an admin API, signals
    /// only once it answers, so the signal finds a running agent, not a process still
    /// starting (whose exit would then depend on how far it had got).
    pub fn terminate_timed(mut self, limit: Duration) -> (ExitStatus, Duration) {
        if self.api.is_some() {
            let up = Instant::now();
            while self.get("/health").is_none()
                && self.child.try_wait().unwrap().is_none()
                && up.elapsed() < limit
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let started = Instant::now();
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "kwpipe did not exit within {limit:?} of SIGTERM; log:\n{}",
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM; the agent must exit 0 within `limit`. Returns its log.
    pub fn stop(self, limit: Duration) -> String {
        let log = self.log.clone();
        let status = self.terminate(limit);
        let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
        assert!(
            status.success(),
            "kwpipe exited with {status} on SIGTERM:\n{text}"
        );
        text
    }

    /// Waits until the log holds `text`; panics with the log when the agent exits
    /// first or `limit` passes.
    pub fn wait_log(&mut self, text: &str, limit: Duration) {
        let started = Instant::now();
        while !self.log_text().contains(text) {
            self.assert_running();
            assert!(
                started.elapsed() < limit,
                "no {text:?} in the log after {limit:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `done` holds, checking every 200 ms; panics with `what`, the
    /// log's tail and the metrics after `limit`.
    pub fn wait(&self, what: &str, limit: Duration, done: impl FnMut() -> bool) {
        self.wait_every(Duration::from_millis(200), what, limit, done)
    }

    /// [`Agent::wait`], checking `done` every `interval`.
    pub fn wait_every(
        &self,
        interval: Duration,
        what: &str,
        limit: Duration,
        mut done: impl FnMut() -> bool,
    ) {
        let started = Instant::now();
        while !done() {
            if started.elapsed() > limit {
                panic!("timed out after {limit:?}: {what}; {}", self.report());
            }
            std::thread::sleep(interval);
        }
    }

    /// What a failed wait prints: the log's tail and the metrics that say where
    /// events stopped.
    pub fn report(&self) -> String {
        let metrics = match self.get("/metrics") {
            Some((200, text)) => text
                .lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && (l.contains("events")
                            || l.contains("in_flight")
                            || l.contains("rows")
                            || l.contains("kafka")
                            || l.contains("retries"))
                })
                .collect::<Vec<_>>()
                .join("\n"),
            other => format!("/metrics: {other:?}"),
        };
        format!("agent log:\n{}\nmetrics:\n{metrics}", self.log_tail(60))
    }

    /// `GET path` on the admin API: (status, body); None when it does not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.api.expect("an agent started with Launch::api"), path)
    }

    /// The sum of a metric's samples whose labels contain every one of `filters`
    /// (0 when the API does not answer).
    pub fn metric(&self, name: &str, filters: &[&str]) -> f64 {
        let Some((200, text)) = self.get("/metrics") else {
            return 0.0;
        };
        metric_sum(&text, name, filters)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The sum of metric `name`'s samples in Prometheus text whose labels contain every
/// one of `filters`.
pub fn metric_sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = if let Some(rest) = rest.strip_prefix('{') {
                rest.rsplit_once("} ")?
            } else {
                ("", rest.strip_prefix(' ')?)
            };
            filters
                .iter()
                .all(|f| labels.contains(f))
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// `GET path` on 127.0.0.1:`port`: (status, body); None when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let (_, body) = text.split_once("\r\n\r\n")?;
    Some((status, body.to_string()))
}
