//! `mychat`: the one binary.
//!
//! - `mychat up`: the embedded default: starts nats-server and PostgreSQL under `.data/` when no
//!   `MYCHAT_NATS_URL` / `MYCHAT_DATABASE_URL` is set, migrates, creates the streams, seeds demo
//!   data, and serves the user API (:8080), the admin API (:8081), the WebSocket gateway (:8082)
//!   and the projectors.
//! - `mychat serve <api|admin|gateway|projectors|all>`: one part, against existing servers.
//! - `mychat migrate`: applies the Postgres migrations.
//! - `mychat demo`: plays the whole story against a running `mychat up`.

mod bench;
mod demo;
mod server;
mod settings;

use clap::{Parser, Subcommand};

/// mychat: an event-sourced backend for a paid counseling chat marketplace.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start everything (embedded nats-server and PostgreSQL unless URLs are configured).
    Up,
    /// Serve one part against existing servers (MYCHAT_NATS_URL, MYCHAT_DATABASE_URL).
    Serve {
        /// Which part.
        #[arg(value_enum)]
        part: server::Part,
        /// Listen address (default: the part's address from the settings).
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
    },
    /// Apply the database migrations.
    Migrate,
    /// Play the whole story (register → order → pay → chat → bill → withdraw) against a running
    /// mychat, over HTTP and WebSocket. Exits non-zero on any failure.
    Demo(demo::DemoArgs),
    /// Benchmarks (against servers it starts itself on free ports).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The command path: raw JetStream baselines, the event store (group commit) at 1/16/64/256
    /// committers, and `POST /api/order/create` over HTTP. Last line: JSON.
    Commands(bench::BenchArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = match settings::Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mychat: configuration: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    if !matches!(cli.command, Command::Demo(_) | Command::Bench(_)) {
        server::init_tracing(&settings.log_format);
    }
    let result = match cli.command {
        Command::Up => server::up(settings).await,
        Command::Serve { part, addr } => server::serve(settings, part, addr).await,
        Command::Migrate => server::migrate(settings).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(BenchCommand::Commands(args)) => bench::commands(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mychat: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
