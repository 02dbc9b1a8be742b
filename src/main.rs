use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use kwpipe::{config, graph, runtime, telemetry};

/// kwpipe moves time-series and relational data between Apache Kafka and KWDB.
#[derive(Parser, Debug)]
#[command(name = "kwpipe", version, about)]
struct Cli {
    /// error, warn, info, debug, trace, or a filter like "info,components=debug".
    #[arg(long, global = true, env = "KWPIPE_LOG", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a topology; several files merge into one.
    Run {
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
}

fn main() -> ExitCode {
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
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            for line in format!("{e:#}").lines() {
                eprintln!("error: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { configs } => {
            let topology = load(&configs)?;
            runtime::run(topology, shutdown_signal()).await?;
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
    }
}

fn load(configs: &[PathBuf]) -> anyhow::Result<config::Topology> {
    let topology = config::load_files(configs)?;
    for w in &topology.warnings {
        tracing::warn!("{w}");
    }
    Ok(topology)
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
