use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kwpipe",
    version,
    about = "A data-pipeline agent between Apache Kafka and KWDB"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode a file in one format and write it in another (or as rows).
    Transcode(kwpipe::transcode::TranscodeArgs),
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Transcode(args) => std::process::exit(kwpipe::transcode::run(&args)),
    }
}
