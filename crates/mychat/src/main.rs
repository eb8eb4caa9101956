//! `mychat`: the one binary.
//!
//! - `mychat up`: the embedded default: starts nats-server and PostgreSQL under `.data/` when no
//!   `MYCHAT_NATS_URL` / `MYCHAT_DATABASE_URL` is set, migrates, creates the streams, seeds demo
//!   data, and serves the user API (:8080), the admin API (:8081), the WebSocket gateway (:8082)
//!   and the projectors.
//! - `mychat serve <api|admin|gateway|projectors|all>`: one part, against existing servers.
//! - `mychat migrate`: applies the Postgres migrations.
//! - `mychat demo`: plays the whole story against a running `mychat up`.
//! - `mychat bench ws`: the gateway load benchmark.
//! - `mychat projections status|skip|rebuild`, `mychat audit replay|diff|events`,
//!   `mychat finance reconcile`: operator commands (`ops`).
//! - `mychat config`: the effective settings, secrets redacted.

mod bench;
mod bench_commands;
mod bench_group;
mod bench_probe;
mod bench_ws;
mod demo;
mod demo_groups;
mod ops;
mod server;
mod settings;

use clap::{Parser, Subcommand};

/// The global allocator: mimalloc. Decoding the log allocates a JSON tree per event, and
/// glibc's malloc/free took about a fifth of the process's CPU in an audit replay (perf);
/// see docs/benchmarks.md for the A/B.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Projection operations: status, skip a poison event, blue/green rebuild.
    #[command(subcommand)]
    Projections(ops::ProjectionsCommand),
    /// Audit: point-in-time replay into `audit_<stamp>`, row diff, an aggregate's events.
    #[command(subcommand)]
    Audit(ops::AuditCommand),
    /// Finance: reconcile the ledger and read models against the event log.
    #[command(subcommand)]
    Finance(ops::FinanceCommand),
    /// Benchmarks on throwaway servers (not a test); the last line is JSON.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Print the effective settings (defaults, `mychat.toml`, `MYCHAT_*`) as TOML, with every
    /// secret and URL password redacted.
    Config,
    /// The live services on NATS (every mychat part and plugin answering `$SRV.PING`): name,
    /// part, node, address, ping, uptime, requests, errors, live figures.
    Status {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = worker_threads(&cli.command) {
        runtime.worker_threads(n);
    }
    match runtime.build() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("mychat: starting the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// How many worker threads the async runtime of `command` gets; `None`: tokio's default (one
/// per core, or `TOKIO_WORKER_THREADS` when set, which always wins).
///
/// The user API (`serve api`, and `bench commands`, which hosts it) runs one worker on a
/// machine of two cores or fewer. Their work is short steps between other
/// processes (an HTTP request, a publish to nats-server, the projector's PostgreSQL
/// transaction, the answer), and on the project's 2-core VM, beside nats-server and PostgreSQL,
/// a second worker mostly wakes and steals across cores (each wake-up a VM exit): measured
/// (docs/benchmarks.md, the command path), `POST /api/order/create` at 64 clients did 6,150 and
/// 6,388/s with one worker against 5,483 and 5,259/s with two (alternated), mychat's CPU an
/// order 100–104 µs against 128–130 (`wrk` against `mychat up`). The gateway keeps one worker
/// per core: with one, its p95 end to end at 5,000 msg/s went from 3.7–3.9 ms to 5.2–5.5 ms.
/// `mychat up` serves the gateway in the same process, so it keeps tokio's default too; the
/// admin API (heavier reads, fewer requests) was not measured and keeps it as well, and so does
/// every part on more cores.
fn worker_threads(command: &Command) -> Option<usize> {
    if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        return None;
    }
    let api = matches!(
        command,
        Command::Serve {
            part: server::Part::Api,
            ..
        } | Command::Bench(bench::BenchCommand::Commands(_))
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (api && cores <= 2).then_some(1)
}

/// Turns transparent huge pages off for this process and the processes it starts (Linux
/// `prctl(PR_SET_THP_DISABLE)`, checked by the kernel at each page fault, so it also covers what
/// was mapped before). The allocator asks for huge pages on its segments (mimalloc's `allow_thp`
/// option, on by default, `madvise(MADV_HUGEPAGE)`), and the first touch of one zeroes 2 MiB in
/// one page fault: on the project's VM about 10 ms each, which stopped the gateway's runtime for
/// 130–160 ms when a fresh node took its first 500 messages (its memory growing) and made every
/// one of them late (docs/benchmarks.md, the gateway). With 4 KiB pages the same growth costs
/// the same in total, but in slices too short to be seen. `MIMALLOC_ALLOW_THP=1` keeps them.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var("MIMALLOC_ALLOW_THP").as_deref() != Ok("1") {
        // Without it (an old kernel, a sandbox refusing prctl) the process runs as before.
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
}

async fn run(cli: Cli) -> std::process::ExitCode {
    let settings = match settings::Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mychat: configuration: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    // The demo and the benchmarks print their own output; they log only when asked
    // (`RUST_LOG` set), e.g. to see what the NATS client does during a benchmark.
    if let Command::Config = cli.command {
        return match settings.redacted_toml() {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mychat: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if !matches!(cli.command, Command::Demo(_) | Command::Bench(_))
        || std::env::var_os("RUST_LOG").is_some()
    {
        server::init_tracing(&settings.log_format, settings.log_spans);
    }
    let result = match cli.command {
        Command::Up => server::up(settings).await,
        Command::Serve { part, addr } => server::serve(settings, part, addr).await,
        Command::Migrate => server::migrate(settings).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Projections(cmd) => ops::projections_command(settings, cmd).await,
        Command::Audit(cmd) => ops::audit_command(settings, cmd).await,
        Command::Finance(cmd) => ops::finance_command(settings, cmd).await,
        Command::Bench(cmd) => bench::run(cmd).await,
        Command::Config => Ok(()),
        Command::Status { json } => ops::status_command(settings, json).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mychat: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
