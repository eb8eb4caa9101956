//! Operator commands: `mychat projections …`, `mychat audit …`, `mychat finance reconcile`, and
//! the projectors' `/metrics`.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use axum::routing::get;
use clap::Subcommand;
use eventstore::{Actor, CommandMeta, Commit};
use projections::rebuild::{AuditPoint, LogProgress, Progress};
use projections::Projection;
use sqlx::PgPool;

use crate::settings::Settings;

/// `mychat projections …`.
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Each projection's checkpoint, lag (events and seconds), version and state.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Record in the log the decision to skip the message at <SEQ> for <NAME> (a poison event).
    Skip {
        /// The projection.
        name: String,
        /// The stream sequence of the message to skip.
        seq: u64,
        /// Why (required; stored in the log).
        #[arg(long)]
        reason: String,
    },
    /// Rebuild blue/green: into shadow tables from the start of the log, then swap.
    Rebuild {
        /// The projection (or --all).
        name: Option<String>,
        /// Every read-model projection.
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
}

/// `mychat audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Rebuild read models as they stood at a moment into `audit_<stamp>`.
    Replay {
        /// An RFC 3339 time or an EVENTS stream sequence.
        #[arg(long)]
        at: String,
        /// Only these projections (repeatable; default: every read model).
        #[arg(long)]
        projection: Vec<String>,
    },
    /// Compare a schema with the live one (or --against another), row by row.
    Diff {
        /// The schema (e.g. `audit_seq120`).
        schema: String,
        /// The other schema.
        #[arg(long, default_value = "public")]
        against: String,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Print an aggregate's history, each event with its envelope (one JSON object a line).
    Events {
        /// `<aggregate_type>:<id>`, e.g. `order:12`.
        #[arg(long)]
        aggregate: String,
    },
}

/// `mychat finance …`.
#[derive(Debug, Subcommand)]
pub enum FinanceCommand {
    /// Fold the EVENTS log on its own into balances and check the ledger and read models.
    /// Exits 1 on any difference.
    Reconcile {
        /// Period start (exclusive): an RFC 3339 time or a stream sequence.
        #[arg(long)]
        from: Option<String>,
        /// Period end (inclusive): an RFC 3339 time or a stream sequence.
        #[arg(long)]
        to: Option<String>,
        /// The schema to check (`public`, or an `audit_…` schema).
        #[arg(long, default_value = "public")]
        schema: String,
        /// A withdrawal open longer than this many hours is stuck.
        #[arg(long, default_value_t = 72)]
        stuck_after_hours: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Progress bars on a terminal (one per projection: an audit replay runs them concurrently;
/// events/s, ETA), log lines otherwise.
struct BarProgress {
    multi: indicatif::MultiProgress,
    bars: Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
}

impl Progress for BarProgress {
    fn start(&self, projection: &str, total: u64) {
        let bar = self.multi.add(indicatif::ProgressBar::new(total));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>20} [{bar:40}] {pos}/{len} {per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(projection.to_string());
        self.bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(projection.to_string(), bar);
    }
    fn advance(&self, projection: &str, applied: u64, _: u64) {
        if let Some(bar) = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(projection)
        {
            bar.set_position(applied);
        }
    }
    fn finish(&self, projection: &str, applied: u64, seconds: f64) {
        let bar = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(projection);
        let line = format!(
            "{projection}: {applied} messages in {seconds:.2}s ({:.0}/s)",
            applied as f64 / seconds.max(1e-9)
        );
        match bar {
            Some(bar) => {
                bar.finish_and_clear();
                let _ = self.multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}

fn progress() -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(BarProgress {
            multi: indicatif::MultiProgress::new(),
            bars: Mutex::new(Default::default()),
        })
    } else {
        Box::new(LogProgress)
    }
}

fn pick(
    layout: &eventstore::ChatLayout,
    names: &[String],
) -> anyhow::Result<Vec<Arc<dyn Projection>>> {
    if names.is_empty() {
        return Ok(projections::read_models_for(layout));
    }
    names
        .iter()
        .map(|n| {
            projections::read_model_for(layout, n).with_context(|| {
                format!(
                    "unknown projection {n:?} (known: {})",
                    projections::read_models_for(layout)
                        .iter()
                        .map(|p| p.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect()
}

fn all_projections(layout: &eventstore::ChatLayout) -> Vec<Arc<dyn Projection>> {
    projections::read_models_for(layout)
}

/// `/metrics` for the projectors: every read model's checkpoint, lag, and stop state.
pub fn metrics_router(
    pool: PgPool,
    nats: async_nats::Client,
    layout: eventstore::ChatLayout,
) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let (pool, nats) = (pool.clone(), nats.clone());
                async move {
                    match projections::status::status(&pool, &nats, &all_projections(&layout)).await
                    {
                        // Followed by the process's own metrics (commands, publish
                        // latency, HTTP latency when the APIs run in this process).
                        Ok(s) => (
                            axum::http::StatusCode::OK,
                            [("content-type", "text/plain; version=0.0.4")],
                            format!(
                                "{}{}",
                                projections::status::prometheus(&s),
                                api::observe::render()
                            ),
                        ),
                        Err(e) => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            [("content-type", "text/plain; version=0.0.4")],
                            format!("# error: {e:#}\n"),
                        ),
                    }
                }
            }),
        )
        .route("/health", get(|| async { "ok" }))
}

/// `mychat projections …`.
pub async fn projections_command(
    settings: Settings,
    cmd: ProjectionsCommand,
) -> anyhow::Result<()> {
    let infra = crate::server::connect_configured(&settings).await?;
    let (nats, pool, bus) = (infra.nats.clone(), infra.pool.clone(), infra.bus.clone());
    let layout = *infra.chat.layout();
    match cmd {
        ProjectionsCommand::Status { json } => {
            let statuses =
                projections::status::status(&pool, &nats, &all_projections(&layout)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&statuses)?);
            } else {
                println!(
                    "{:<20} {:>7} {:>10} {:>10} {:>10}  state",
                    "projection", "version", "checkpoint", "lag", "lag (s)"
                );
                for s in &statuses {
                    let version = if s.version == s.stored_version {
                        s.version.to_string()
                    } else {
                        format!("{}→{}", s.stored_version, s.version)
                    };
                    let state = match (&s.poison_sequence, &s.error) {
                        (Some(seq), Some(e)) => format!("{} at {seq}: {e}", s.state),
                        _ => s.state.clone(),
                    };
                    println!(
                        "{:<20} {:>7} {:>10} {:>10} {:>10.1}  {state}",
                        s.name, version, s.checkpoint, s.lag_events, s.lag_seconds
                    );
                }
            }
        }
        ProjectionsCommand::Skip { name, seq, reason } => {
            anyhow::ensure!(
                projections::read_model_for(&layout, &name).is_some() || name == "process_manager",
                "unknown projection {name:?}"
            );
            let meta = CommandMeta::new(Actor::system());
            let at = projections::control::skip(&bus, &name, seq, &reason, &meta).await?;
            match at {
                Some(at) => println!(
                    "recorded: {name} skips stream sequence {seq} (decision at stream sequence {at})"
                ),
                None => println!("already recorded: {name} skips stream sequence {seq}"),
            }
        }
        ProjectionsCommand::Rebuild { name, all } => {
            let targets = match (name, all) {
                (_, true) => all_projections(&layout),
                (Some(n), false) => pick(&layout, &[n])?,
                (None, false) => anyhow::bail!("name a projection or pass --all"),
            };
            let progress = progress();
            let mut reports: Vec<projections::rebuild::RebuildReport> = Vec::new();
            for p in targets {
                // Siblings (the chat streams' projections) are rebuilt together, once.
                if reports
                    .iter()
                    .any(|r| r.members.iter().any(|m| m == p.name()))
                {
                    continue;
                }
                reports
                    .push(projections::rebuild::rebuild(&pool, &nats, p, progress.as_ref()).await?);
            }
            for r in &reports {
                println!(
                    "{}: version {} rebuilt from {} messages in {:.2}s, swapped in at {}",
                    r.projection, r.version, r.events, r.seconds, r.position
                );
            }
        }
    }
    Ok(())
}

/// `mychat audit …`.
pub async fn audit_command(settings: Settings, cmd: AuditCommand) -> anyhow::Result<()> {
    let infra = crate::server::connect_configured(&settings).await?;
    let (nats, pool) = (infra.nats.clone(), infra.pool.clone());
    let layout = *infra.chat.layout();
    match cmd {
        AuditCommand::Replay { at, projection } => {
            let at: AuditPoint = at.parse()?;
            let targets = pick(&layout, &projection)?;
            let progress = progress();
            let report =
                projections::rebuild::audit_replay(&pool, &nats, &targets, at, progress.as_ref())
                    .await?;
            eprintln!(
                "replayed up to EVENTS {} / {} ({}) in {:.2}s",
                report.events_upto,
                report
                    .chat_upto
                    .iter()
                    .map(|(s, u)| format!("{s} {u}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
                report.at.to_rfc3339(),
                report.seconds
            );
            println!("{}", report.schema);
        }
        AuditCommand::Diff {
            schema,
            against,
            json,
        } => {
            let diffs =
                projections::rebuild::diff(&pool, &schema, &against, &all_projections(&layout))
                    .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&diffs)?);
            } else {
                for d in &diffs {
                    println!("{d}");
                }
                println!(
                    "{} difference(s) between {schema} and {against}",
                    diffs.len()
                );
            }
            if !diffs.is_empty() {
                anyhow::bail!(
                    "{} row(s) differ between {schema} and {against}",
                    diffs.len()
                );
            }
        }
        AuditCommand::Events { aggregate } => {
            let (kind, id) = aggregate
                .split_once(':')
                .filter(|(k, i)| !k.is_empty() && !i.is_empty())
                .context("--aggregate must be <aggregate_type>:<id>, e.g. order:12")?;
            let js = jetstream::new(nats);
            let stream = js.get_stream(eventstore::EVENTS_STREAM).await?;
            let subject = Commit::subject(kind, id);
            let mut from = 1;
            let mut count = 0;
            loop {
                match stream
                    .direct_get_next_for_subject(subject.as_str(), Some(from))
                    .await
                {
                    Ok(message) => {
                        from = message.sequence + 1;
                        for event in Commit::decode(&message.payload)?.into_stored(message.sequence)
                        {
                            println!("{}", serde_json::to_string(&event)?);
                            count += 1;
                        }
                    }
                    Err(e)
                        if e.kind()
                            == async_nats::jetstream::stream::DirectGetErrorKind::NotFound =>
                    {
                        break
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if count == 0 {
                anyhow::bail!("no events for {aggregate} ({subject})");
            }
        }
    }
    Ok(())
}

/// `mychat finance …`.
pub async fn finance_command(settings: Settings, cmd: FinanceCommand) -> anyhow::Result<()> {
    let infra = crate::server::connect_configured(&settings).await?;
    let (nats, pool) = (infra.nats.clone(), infra.pool.clone());
    match cmd {
        FinanceCommand::Reconcile {
            from,
            to,
            schema,
            stuck_after_hours,
            json,
        } => {
            let options = projections::reconcile::ReconcileOptions {
                schema,
                from: from.map(|s| s.parse()).transpose()?,
                to: to.map(|s| s.parse()).transpose()?,
                stuck_after: Duration::from_secs(stuck_after_hours * 3600),
                ..Default::default()
            };
            let report = projections::reconcile::reconcile(&pool, &nats, &options).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", projections::reconcile::render(&report));
            }
            if !report.ok() {
                anyhow::bail!(
                    "{} difference(s), {} unmatched item(s)",
                    report.differences.len(),
                    report.unmatched.len()
                );
            }
        }
    }
    Ok(())
}

/// `mychat status`: the live service registry (`web::registry::discover`), as the admin API's
/// `GET /api/admin/system/services` answers it.
pub async fn status_command(settings: Settings, json: bool) -> anyhow::Result<()> {
    let infra = crate::server::connect_configured(&settings).await?;
    let services = web::registry::discover(&infra.nats, Duration::from_millis(300)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&services)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<11} {:<16} {:<22} {:>8} {:>9} {:>8} {:>6}  live",
        "name", "part", "node", "address", "ping ms", "uptime s", "requests", "errors"
    );
    for s in &services {
        let live: Vec<String> = s
            .endpoints
            .iter()
            .filter_map(|e| e.data.as_ref())
            .map(|d| d.to_string())
            .collect();
        println!(
            "{:<20} {:<11} {:<16} {:<22} {:>8.2} {:>9} {:>8} {:>6}  {}",
            s.name,
            s.part,
            s.node,
            s.address,
            s.ping_ms,
            s.uptime_seconds.map_or("-".to_string(), |u| u.to_string()),
            s.requests,
            s.errors,
            live.join(" ")
        );
    }
    println!("{} instance(s)", services.len());
    Ok(())
}
