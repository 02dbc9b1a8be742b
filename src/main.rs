use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use kwpipe::connect::{client, convert};
use kwpipe::status::StatusBoard;
use kwpipe::{admin, config, connect, graph, load, runtime, telemetry, top};

// The agent runs on mimalloc with settings for a small footprint (see
// components/src/allocator.rs for why and for the figures). Declared here, in the
// binary, so the library does not impose it on fuzz targets and tests.
kwpipe_components::agent_allocator!();

/// kwpipe moves time-series and relational data between Apache Kafka and KWDB.
#[derive(Parser, Debug)]
#[command(name = "kwpipe", version, about)]
struct Cli {
    /// error, warn, info, debug, trace, or a filter like "info,kwpipe_components=debug".
    #[arg(long, global = true, env = "KWPIPE_LOG", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a topology; several files merge into one.
    Run {
        /// Run the components' health checks first and exit 1 when one fails
        /// (without it they run beside the topology and only log what they find).
        #[arg(long)]
        require_healthy: bool,
        #[arg(required = true, value_name = "CONFIG")]
        configs: Vec<PathBuf>,
    },
    /// Check topology files and report every error; exit 0 when valid.
    Validate {
        /// Do not connect to databases or brokers; check the files only.
        #[arg(long)]
        no_environment: bool,
        #[arg(required = true, value_name = "CONFIG")]
        configs: Vec<PathBuf>,
    },
    /// Print the topology as a Graphviz DOT graph.
    Graph {
        #[arg(required = true, value_name = "CONFIG")]
        configs: Vec<PathBuf>,
    },
    /// Decode a file in one format and write it in another (or as rows), to check
    /// data before pointing a pipeline at a database.
    Transcode(kwpipe::transcode::TranscodeArgs),
    /// A live view of a running agent's components, from its admin API.
    Top {
        /// The agent's topology files (their [api] address is used) or http://host:port.
        #[arg(required = true, value_name = "CONFIG-or-URL")]
        target: Vec<String>,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Print one screen and exit.
        #[arg(long)]
        once: bool,
    },
    /// KaiwuDB Kafka Connector configs: convert them to a topology, or run them.
    Connect {
        #[command(subcommand)]
        command: ConnectCommand,
    },
    /// Which allocator this binary runs on and its settings, one `name: value` a
    /// line (for tests/allocator.rs; not for users, so hidden).
    #[command(hide = true)]
    AllocatorInfo,
}

#[derive(Subcommand, Debug)]
enum ConnectCommand {
    /// Print the topology equivalent to connector configs (JSON, as posted to Kafka Connect).
    Convert {
        #[command(flatten)]
        worker: WorkerArgs,
        #[arg(required = true, value_name = "FILE.json")]
        files: Vec<PathBuf>,
    },
    /// Run connector configs directly.
    Run {
        #[command(flatten)]
        worker: WorkerArgs,
        /// Where kwpipe keeps checkpoints.
        #[arg(long, default_value = "/var/lib/kwpipe")]
        data_dir: PathBuf,
        #[arg(required = true, value_name = "FILE.json")]
        files: Vec<PathBuf>,
    },
    /// A long-running Kafka Connect worker: Connect's REST API (127.0.0.1:8083 unless
    /// the worker config's `listeners` says otherwise), configs and statuses in
    /// Connect's compacted topics, each connector run as a topology.
    Worker {
        #[command(flatten)]
        worker: WorkerArgs,
        /// Where kwpipe keeps checkpoints, one directory per connector.
        #[arg(long, default_value = "/var/lib/kwpipe")]
        data_dir: PathBuf,
        /// Refuse every REST request that would change a connector.
        #[arg(long)]
        rest_read_only: bool,
        /// Listen here instead of the worker config's `listeners` (host:port).
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<std::net::SocketAddr>,
        /// Require HTTP basic authentication: a credentials file of `user: password`
        /// lines, as Kafka Connect's BasicAuthSecurityRestExtension reads it.
        #[arg(long, value_name = "FILE")]
        rest_basic_auth: Option<PathBuf>,
    },
}

/// What Kafka Connect keeps in the worker config: the brokers and how to reach them.
#[derive(clap::Args, Debug)]
struct WorkerArgs {
    /// Broker address; without it, `bootstrap.servers` of the worker config, else
    /// (convert only) the topology reads ${KAFKA_BOOTSTRAP_SERVERS}.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    bootstrap_servers: Option<String>,
    /// A `connect-distributed.properties` file: its bootstrap servers and client
    /// security settings (security.protocol, sasl.*, ssl.*, consumer.*, producer.*).
    #[arg(long, value_name = "FILE")]
    worker_config: Option<PathBuf>,
    /// One worker setting, over the file's: -X security.protocol=SASL_SSL (repeatable).
    #[arg(short = 'X', long = "worker-property", value_name = "KEY=VALUE")]
    worker_properties: Vec<String>,
}

impl WorkerArgs {
    fn options(&self) -> anyhow::Result<convert::ConvertOptions> {
        let mut worker = match &self.worker_config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
                client::parse_properties(&text)
            }
            None => Default::default(),
        };
        for kv in &self.worker_properties {
            let Some((k, v)) = kv.split_once('=') else {
                anyhow::bail!("-X {kv:?}: expected KEY=VALUE");
            };
            worker.insert(k.trim().to_string(), v.to_string());
        }
        let bootstrap_servers = self
            .bootstrap_servers
            .clone()
            .or_else(|| worker.get("bootstrap.servers").cloned());
        Ok(convert::ConvertOptions {
            bootstrap_servers,
            worker,
        })
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    if let Err(e) = telemetry::init(&cli.log_level) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            // Errors can quote what a file or the environment holds: escaped,
            // so no ESC reaches the terminal.
            for line in format!("{e:#}").lines() {
                eprintln!("error: {}", telemetry::escape::Escaped(line));
            }
            ExitCode::FAILURE
        }
    };
    // What the log rate limit left out, counted before the process ends.
    telemetry::flush();
    code
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            require_healthy,
            configs,
        } => {
            let shutdown = shutdown_signal();
            let topology = load(&configs)?;
            if require_healthy {
                if let Err(errors) = runtime::healthcheck(&topology).await {
                    anyhow::bail!(errors.join("\n"));
                }
            }
            run_topology(topology, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate {
            no_environment,
            configs,
        } => {
            let topology = load(&configs)?;
            if !no_environment {
                if let Err(errors) = runtime::healthcheck(&topology).await {
                    anyhow::bail!(errors.join("\n"));
                }
            }
            println!("valid: {} component(s)", topology.nodes.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph { configs } => {
            let topology = load(&configs)?;
            print!("{}", graph::to_dot(&topology));
            Ok(ExitCode::SUCCESS)
        }
        Command::Connect { command } => connect_command(command).await,
        Command::Transcode(args) => {
            let code = tokio::task::spawn_blocking(move || kwpipe::transcode::run(&args)).await?;
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        Command::Top {
            target,
            interval,
            once,
        } => {
            let base = top::resolve(&target)?;
            let interval = std::time::Duration::from_secs_f64(interval.clamp(0.1, 3600.0));
            top::run(&base, interval, once).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::AllocatorInfo => {
            use kwpipe_components::allocator::{option, owns, ARENA_EAGER_COMMIT, PURGE_DELAY};
            let probe = Box::new([7u8; 100]);
            println!("mimalloc: {}", owns(probe.as_ptr()));
            println!("arena_eager_commit: {}", option(ARENA_EAGER_COMMIT));
            println!("purge_delay: {}", option(PURGE_DELAY));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `topology` until it finishes or `shutdown` completes, with its admin
/// endpoint (`[api]`) serving the runtime's status board for as long as it runs.
async fn run_topology(
    topology: config::Topology,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    admin::install_recorder();
    let board = StatusBoard::default();
    let server = match &topology.api {
        Some(api) => Some(admin::serve(api.address, api.limits, board.clone()).await?),
        None => None,
    };
    let result = runtime::run_with_board(topology, &board, shutdown).await;
    if let Some(server) = server {
        server.stop();
    }
    Ok(result?)
}

async fn connect_command(command: ConnectCommand) -> anyhow::Result<ExitCode> {
    let (opts, files, run_in) = match command {
        ConnectCommand::Worker {
            worker,
            data_dir,
            rest_read_only,
            listen,
            rest_basic_auth,
        } => {
            let shutdown = shutdown_signal();
            let opts = connect::worker::WorkerOptions {
                convert: worker.options()?,
                data_dir,
                read_only: rest_read_only,
                listen,
                basic_auth: rest_basic_auth,
            };
            admin::install_recorder();
            connect::worker::run(opts, shutdown).await?;
            return Ok(ExitCode::SUCCESS);
        }
        ConnectCommand::Convert { worker, files } => (worker.options()?, files, None),
        ConnectCommand::Run {
            worker,
            data_dir,
            files,
        } => {
            let opts = worker.options()?;
            if opts.bootstrap_servers.is_none() {
                // A command-line mistake, reported as clap reports its own (exit 2).
                use clap::CommandFactory;
                Cli::command()
                    .error(
                        clap::error::ErrorKind::MissingRequiredArgument,
                        "no brokers: give --bootstrap-servers, KAFKA_BOOTSTRAP_SERVERS, or a \
                         --worker-config with bootstrap.servers",
                    )
                    .exit();
            }
            (opts, files, Some(data_dir))
        }
    };
    let mut merged = convert::Converted::default();
    let mut errors = Vec::new();
    for file in &files {
        match convert::convert_file(file, &opts) {
            Ok(c) => {
                if let Err(e) = merged.merge(c) {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!(errors.join("\n"));
    }
    for w in &merged.warnings {
        tracing::warn!("{w}");
    }
    let mut text = merged.to_toml();
    let Some(data_dir) = run_in else {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    };
    let shutdown = shutdown_signal();
    text = format!(
        "data_dir = {}\n{text}",
        toml::Value::String(data_dir.display().to_string().replace('$', "$$"))
    );
    let env = config::interpolate::process_env();
    let topology = load::load_texts(&[(PathBuf::from("connector configs"), text)], &env)?;
    run_topology(topology, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

fn load(configs: &[PathBuf]) -> anyhow::Result<config::Topology> {
    let topology = load::load_files(configs)?;
    for w in &topology.warnings {
        tracing::warn!("{w}");
    }
    Ok(topology)
}

/// Completes on the first SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled (after the topology has started): a
/// signal that arrives during start-up must still stop kwpipe gracefully, not kill it
/// with the signal's default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        async fn received(signal: Option<Signal>) {
            match signal {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            tokio::select! {
                _ = received(term) => {}
                _ = received(int) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Rust code allocates with mimalloc (`ALLOCATOR` above), but librdkafka's
/// threads use glibc's malloc, which gives each thread that allocates its own arena
/// (up to 8 per core) and keeps their memory after a burst; an edge agent wants a
/// small, steady footprint.
/// `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
