//! Running mychat: the embedded infrastructure of `mychat up`, and serving each part.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use eventstore::envelope::Upcasters;
use eventstore::{ensure_streams, CommandBus, StreamSettings};
use projections::{Projector, ProjectorSettings};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;

/// A part of mychat that `mychat serve` can run on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// The user API.
    Api,
    /// The admin API.
    Admin,
    /// The WebSocket gateway.
    Gateway,
    /// The projector workers and the process manager.
    Projectors,
    /// Everything above.
    All,
}

/// Logs: JSON in production, pretty on a terminal; `RUST_LOG` filters.
/// `spans`: also log each span as it closes, with its busy and idle time.
pub fn init_tracing(format: &str, spans: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn,async_nats=warn,tower_http=warn".into());
    let json = match format {
        "json" => true,
        "pretty" => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(if spans {
            tracing_subscriber::fmt::format::FmtSpan::CLOSE
        } else {
            tracing_subscriber::fmt::format::FmtSpan::NONE
        })
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The embedded servers `mychat up` started, with the signal that stops each cleanly (the
/// last resort of [`shutdown_signal`]'s deadline).
type Embedded = Arc<std::sync::Mutex<Vec<(nix::unistd::Pid, nix::sys::signal::Signal)>>>;

/// Cancelled on the first SIGINT (Ctrl-C) or SIGTERM (`docker stop`, systemd, a terminal's
/// group signal), whichever comes first; the parts then have `grace` to finish. The process
/// exits within `grace` + 3 s whatever happens: past `grace` + 1 s (or at once on a second
/// signal) the embedded servers get their clean-stop signal, 2 s to stop, then SIGKILL, and the
/// process exits with status 1.
fn shutdown_signal(grace: Duration, embedded: Embedded) -> CancellationToken {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => (term, int),
            _ => {
                tracing::error!("cannot handle SIGTERM / SIGINT");
                return;
            }
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!(grace_seconds = grace.as_secs(), "shutting down");
        t.cancel();
        tokio::select! {
            _ = int.recv() => tracing::warn!("second signal: stopping now"),
            _ = term.recv() => tracing::warn!("second signal: stopping now"),
            _ = tokio::time::sleep(grace + Duration::from_secs(1)) => {
                tracing::error!("shutdown is taking too long: stopping now");
            }
        }
        let children = embedded.lock().map(|c| c.clone()).unwrap_or_default();
        tokio::task::spawn_blocking(move || stop_now(&children))
            .await
            .ok();
        std::process::exit(1);
    });
    token
}

/// Sends each embedded server its clean-stop signal, waits up to 2 s for them, SIGKILLs the
/// rest, and reaps them (no zombie is left).
fn stop_now(children: &[(nix::unistd::Pid, nix::sys::signal::Signal)]) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    for (pid, signal) in children {
        let _ = nix::sys::signal::kill(*pid, *signal);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut left: Vec<_> = children.iter().map(|(pid, _)| *pid).collect();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        left.retain(|pid| {
            matches!(
                waitpid(*pid, Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::StillAlive)
            )
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in left {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
}

/// Connected infrastructure.
pub(crate) struct Infra {
    pub(crate) nats: async_nats::Client,
    pub(crate) pool: PgPool,
    pub(crate) bus: CommandBus,
    /// The chat log (its layout is the deployment's).
    pub(crate) chat: eventstore::ChatLog,
}

pub(crate) async fn connect(
    settings: &Settings,
    nats_url: &str,
    database_url: &str,
) -> anyhow::Result<Infra> {
    let mut options = async_nats::ConnectOptions::new();
    if let (Some(user), Some(password)) = (&settings.nats_user, &settings.nats_password) {
        use secrecy::ExposeSecret as _;
        options = options.user_and_password(user.clone(), password.expose_secret().to_string());
    }
    let nats = options
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        // Back quickly after a restarted nats-server: the live readers catch up once connected.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64 * 100).min(1000))
        })
        .connect(
            nats_url
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>(),
        )
        .await
        .with_context(|| format!("connecting to NATS at {nats_url}"))?;
    let pool = PgPoolOptions::new()
        .max_connections(32)
        .acquire_timeout(Duration::from_secs(10))
        .connect(database_url)
        .await
        .with_context(|| format!("connecting to Postgres at {database_url}"))?;
    let js = async_nats::jetstream::new(nats.clone());
    let layout = ensure_streams(
        &js,
        &StreamSettings {
            replicas: settings.stream_replicas,
            chat_shards: settings.chat_shards,
            chat_packs: settings.chat_packs,
            ..Default::default()
        },
    )
    .await
    .context("creating the streams")?;
    let chat = eventstore::ChatLog::new(js.clone(), layout, settings.gateway_chat_commit.clone());
    let bus = CommandBus::with_settings(js, Upcasters::default(), settings.bus.clone());
    Ok(Infra {
        nats,
        pool,
        bus,
        chat,
    })
}

fn default_nats_url(settings: &Settings) -> String {
    settings
        .nats_url
        .clone()
        .unwrap_or_else(|| format!("nats://127.0.0.1:{}", settings.nats_port))
}

fn default_database_url(settings: &Settings) -> String {
    settings.database_url.clone().unwrap_or_else(|| {
        format!(
            "postgres://{}@127.0.0.1:{}/mychat",
            testkit::postgres::PG_USER,
            settings.pg_port
        )
    })
}

/// Connects to the configured NATS and Postgres (or `mychat up`'s embedded defaults), creates
/// the streams and applies the migrations: for the operator commands.
pub(crate) async fn connect_configured(settings: &Settings) -> anyhow::Result<Infra> {
    let infra = connect(
        settings,
        &default_nats_url(settings),
        &default_database_url(settings),
    )
    .await?;
    projections::MIGRATOR
        .run(&infra.pool)
        .await
        .context("migrating")?;
    Ok(infra)
}

/// `mychat migrate`.
pub async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let pool = PgPool::connect(&default_database_url(&settings)).await?;
    projections::MIGRATOR.run(&pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// `mychat up`: embedded servers (when no URLs are configured), migrations, streams, demo data,
/// and every part, until Ctrl-C / SIGTERM. The sandbox payment provider is enabled (the
/// development default, logged) unless `payments.sandbox = false` is set, in which case the
/// providers must be configured as for `serve`.
pub async fn up(mut settings: Settings) -> anyhow::Result<()> {
    if settings.payments.sandbox.is_none() {
        settings.payments.sandbox = Some(true);
        tracing::warn!(
            "sandbox payments enabled (mychat up's development default): pay_url opens mychat's \
             own cashier page, which pays any payment without a real provider; never use \
             mychat up in production (payments.sandbox = false turns it off)"
        );
    }
    settings.checked_user_api_config(true)?;
    let embedded = Embedded::default();
    let grace = Duration::from_secs(settings.shutdown_grace_seconds);
    let shutdown = shutdown_signal(grace, embedded.clone());
    std::fs::create_dir_all(&settings.data_dir)?;
    let data_dir = settings.data_dir.canonicalize()?;

    let mut nats_server = None;
    if settings.nats_url.is_none() {
        let config = data_dir.join("nats.conf");
        std::fs::write(&config, include_str!("../../../nats.conf"))?;
        let options = testkit::NatsOptions {
            port: settings.nats_port,
            store_dir: data_dir.join("nats"),
            config,
            log_file: Some(data_dir.join("nats.log")),
        };
        // Started from this (the main) thread: its parent-death signal follows the process.
        let server = testkit::NatsServer::start_embedded(options)?;
        tracing::info!(url = server.url(), store = %data_dir.join("nats").display(), "embedded nats-server started");
        register(&embedded, server.pid(), nix::sys::signal::Signal::SIGTERM);
        nats_server = Some(server);
    }
    let mut pg_server = None;
    if settings.database_url.is_none() {
        let options = testkit::PostgresOptions {
            port: settings.pg_port,
            data_dir: data_dir.join("pg"),
            ephemeral: false,
        };
        let server = testkit::Postgres::start_embedded(options)?;
        register(&embedded, server.pid(), nix::sys::signal::Signal::SIGINT);
        pg_server = Some(server);
        if let Some(server) = &pg_server {
            server.ensure_database("mychat").await?;
            tracing::info!(port = server.port(), data = %data_dir.join("pg").display(), "embedded PostgreSQL started");
        }
    }

    let result = async {
        let infra = connect(
            &settings,
            &default_nats_url(&settings),
            &default_database_url(&settings),
        )
        .await?;
        projections::MIGRATOR
            .run(&infra.pool)
            .await
            .context("migrating")?;
        api::seed::seed_demo(&infra.pool)
            .await
            .context("seeding demo data")?;
        if api::seed::default_admin_password_unchanged(&infra.pool).await {
            tracing::warn!(
                "the administrator `admin` still has the seeded default password (see the README): change it"
            );
        }
        run_parts(&settings, infra, Part::All, None, shutdown.clone()).await
    }
    .await;

    // PostgreSQL first (fast shutdown: it ends the parts' connections and checkpoints), then
    // nats-server; each is waited for, so neither is left behind or a zombie.
    if let Some(mut s) = pg_server.take() {
        tokio::task::spawn_blocking(move || s.stop()).await?;
        tracing::info!("embedded PostgreSQL stopped");
    }
    if let Some(mut s) = nats_server.take() {
        tokio::task::spawn_blocking(move || s.stop()).await?;
        tracing::info!("embedded nats-server stopped");
    }
    tracing::info!("stopped");
    result
}

fn register(embedded: &Embedded, pid: Option<u32>, signal: nix::sys::signal::Signal) {
    if let (Some(pid), Ok(mut list)) = (pid, embedded.lock()) {
        list.push((nix::unistd::Pid::from_raw(pid as i32), signal));
    }
}

/// `mychat serve <part>`. Serving the user API (`api`, `all`) checks the payment providers
/// first: a provider offered without credentials stops the start with an error naming the
/// missing setting, unless the sandbox is enabled explicitly (`payments.sandbox = true`, logged
/// as a warning).
pub async fn serve(settings: Settings, part: Part, addr: Option<SocketAddr>) -> anyhow::Result<()> {
    if matches!(part, Part::Api | Part::All) {
        let config = settings.checked_user_api_config(false)?;
        if config.sandbox_payments {
            tracing::warn!(
                "sandbox payments enabled (payments.sandbox = true): anyone who opens the \
                 sandbox cashier page pays without money; never in production"
            );
        }
    }
    let shutdown = shutdown_signal(
        Duration::from_secs(settings.shutdown_grace_seconds),
        Embedded::default(),
    );
    let infra = connect(
        &settings,
        &default_nats_url(&settings),
        &default_database_url(&settings),
    )
    .await?;
    projections::MIGRATOR
        .run(&infra.pool)
        .await
        .context("migrating")?;
    run_parts(&settings, infra, part, addr, shutdown).await
}

/// Registers a part in the service registry (`web::registry`) until `shutdown`; a failure is
/// logged (the part serves anyway).
async fn announce(
    nats: &async_nats::Client,
    part: &str,
    description: &str,
    address: SocketAddr,
    data: Option<web::registry::LiveData>,
    shutdown: &CancellationToken,
) {
    let registration = web::registry::Registration {
        name: format!("mychat_{part}"),
        part: part.to_string(),
        description: description.to_string(),
        address: address.to_string(),
        data,
    };
    match web::registry::register(nats, registration, shutdown.clone().cancelled_owned()).await {
        Ok(id) => tracing::info!(part, id, "registered in the service registry"),
        Err(e) => tracing::warn!(
            part,
            error = format!("{e:#}"),
            "not in the service registry"
        ),
    }
}

pub(crate) async fn run_parts(
    settings: &Settings,
    infra: Infra,
    part: Part,
    addr: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // One Prometheus recorder for the process; every service's `/metrics` renders it.
    api::observe::install_recorder();
    let jwt = Arc::new(api::JwtKeys::new(
        secrecy::ExposeSecret::expose_secret(&settings.secret(&settings.jwt_secret, "jwt.secret")?)
            .as_bytes(),
        settings.token_ttl_seconds,
    ));
    let state = api::AppState::new(
        api::Services::follow(
            infra.pool.clone(),
            infra.bus.clone(),
            infra.nats.clone(),
            infra.chat.clone(),
            jwt.clone(),
            Arc::new(api::ApiSettings {
                public_url: settings.public_url(),
                sandbox_secret: settings.secret(&settings.sandbox_secret, "sandbox.secret")?,
                settle_timeout: Duration::from_secs(3),
                cors_origins: settings.cors_origins()?,
                business_zone: settings.business_zone()?,
            }),
        )
        .await?,
    );
    let mut tasks = tokio::task::JoinSet::new();
    let wants = |p: Part| part == Part::All || part == p;

    if wants(Part::Projectors) {
        let mut all = projections::read_models_for(infra.chat.layout());
        all.push(Arc::new(projections::process_manager::ProcessManager {
            bus: infra.bus.clone(),
        }));
        // One shared reader per stream for every projector of this process (`runtime::feed`).
        let feeds = projections::LiveFeeds::new(
            infra.nats.clone(),
            ProjectorSettings::default().batch_size,
        );
        for projection in all {
            let projector = Projector {
                pool: infra.pool.clone(),
                nats: infra.nats.clone(),
                projection,
                settings: ProjectorSettings {
                    watch: Some(state.watch.clone()),
                    feeds: Some(feeds.clone()),
                    ..ProjectorSettings::default()
                },
            };
            let token = shutdown.clone();
            tasks.spawn(async move {
                projector.run(token).await;
                Ok(())
            });
        }
        // The order expiry sweep (contract f.9) runs beside the projectors: every projector
        // process sweeps; the `Order` aggregate expires each order once.
        tasks.spawn({
            let (pool, bus) = (infra.pool.clone(), infra.bus.clone());
            let (expiry, token) = (settings.order_expiry.clone(), shutdown.clone());
            async move {
                projections::expiry::run(pool, bus, expiry, token).await;
                Ok(())
            }
        });
        tracing::info!("projectors and the order expiry sweep started");
        // In the service registry, with every read model's lag (refreshed every 2 s).
        let lag = Arc::new(std::sync::Mutex::new(serde_json::Value::Null));
        tokio::spawn({
            let (pool, nats, lag, token) = (
                infra.pool.clone(),
                infra.nats.clone(),
                lag.clone(),
                shutdown.clone(),
            );
            let read_models = projections::read_models_for(infra.chat.layout());
            async move {
                loop {
                    if let Ok(all) = projections::status::status(&pool, &nats, &read_models).await {
                        let by_name: serde_json::Map<String, serde_json::Value> = all
                            .iter()
                            .map(|s| (s.name.to_string(), serde_json::json!(s.lag_events)))
                            .collect();
                        let total: u64 = all.iter().map(|s| s.lag_events).sum();
                        *lag.lock().unwrap_or_else(|p| p.into_inner()) =
                            serde_json::json!({"lag_events": total, "projections": by_name});
                    }
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            }
        });
        announce(
            &infra.nats,
            "projectors",
            "mychat projectors (read models, ledger, process manager)",
            settings.metrics_addr,
            Some(Arc::new(move || {
                lag.lock().unwrap_or_else(|p| p.into_inner()).clone()
            })),
            &shutdown,
        )
        .await;
        // /metrics: projection lag. Not fatal when the address is taken.
        let app = crate::ops::metrics_router(
            infra.pool.clone(),
            infra.nats.clone(),
            *infra.chat.layout(),
        );
        let metrics_addr = if part == Part::Projectors {
            addr.unwrap_or(settings.metrics_addr)
        } else {
            settings.metrics_addr
        };
        let token = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_http("metrics", metrics_addr, app, token).await {
                tracing::error!(error = format!("{e:#}"), "metrics not served");
            }
        });
    }
    if wants(Part::Api) {
        // Checked for production by `serve` / `up` before anything started; here providers
        // without credentials are simply unavailable (payments fail closed).
        let user_config = settings.user_api_config(false)?;
        let app = api::user_router_with(state.clone(), user_config);
        let at = addr.unwrap_or(settings.user_addr);
        tasks.spawn(serve_http("user API", at, app, shutdown.clone()));
        announce(&infra.nats, "api", "mychat user API", at, None, &shutdown).await;
    }
    if wants(Part::Admin) {
        let app = api::admin::router_with(
            state.clone(),
            api::admin::AdminOptions {
                jobs: settings.jobs.clone(),
            },
        );
        let at = addr.unwrap_or(settings.admin_addr);
        tasks.spawn(serve_http("admin API", at, app, shutdown.clone()));
        announce(
            &infra.nats,
            "admin",
            "mychat admin API",
            at,
            None,
            &shutdown,
        )
        .await;
    }
    if wants(Part::Gateway) {
        // The node's own shutdown: on SIGTERM it first closes its sockets with 1012 ("reconnect
        // elsewhere") and waits for them to drain, then stops serving.
        let node_stop = CancellationToken::new();
        let state = gateway::start_node(
            infra.nats.clone(),
            infra.bus.clone(),
            infra.pool.clone(),
            jwt,
            settings.gateway_config(),
            node_stop.clone(),
        )
        .await?;
        let hub = state.hub.clone();
        let sockets = state.hub.clone();
        let app = gateway::router(state);
        let http_stop = CancellationToken::new();
        let (outer, inner) = (shutdown.clone(), http_stop.clone());
        tokio::spawn(async move {
            outer.cancelled().await;
            hub.drain().await;
            node_stop.cancel();
            // Let the presence writer delete the node's key (its users go offline at once).
            tokio::time::sleep(Duration::from_millis(300)).await;
            inner.cancel();
        });
        let at = addr.unwrap_or(settings.ws_addr);
        tasks.spawn(serve_http("gateway", at, app, http_stop));
        announce(
            &infra.nats,
            "gateway",
            "mychat WebSocket gateway node",
            at,
            Some(Arc::new(
                move || serde_json::json!({"sockets": sockets.socket_count()}),
            )),
            &shutdown,
        )
        .await;
    }

    // Until shutdown every part runs; from then on they have `shutdown_grace_seconds` to finish
    // (a part waiting on a server that is already gone must not hold the process), then the
    // rest is aborted.
    let grace = Duration::from_secs(settings.shutdown_grace_seconds);
    let mut first_error = None;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let joined = match deadline {
            None => tokio::select! {
                joined = tasks.join_next() => joined,
                _ = shutdown.cancelled() => {
                    deadline = Some(tokio::time::Instant::now() + grace);
                    continue;
                }
            },
            Some(at) => match tokio::time::timeout_at(at, tasks.join_next()).await {
                Ok(joined) => joined,
                Err(_) => {
                    tracing::warn!(
                        parts = tasks.len(),
                        "parts still running after the shutdown grace: aborted"
                    );
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            },
        };
        let Some(joined) = joined else { break };
        let outcome = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = outcome {
            tracing::error!(error = format!("{e:#}"), "a part failed; stopping");
            first_error.get_or_insert(e);
            shutdown.cancel();
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), infra.nats.flush()).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), infra.pool.close()).await;
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A bound HTTP listener whose accepted connections send their writes at once (`TCP_NODELAY`):
/// what every HTTP service of mychat serves on ([`bind_http`]).
pub(crate) type HttpListener =
    axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)>;

/// Binds `addr` for HTTP ([`HttpListener`]); the benchmarks' in-process servers bind with it
/// too, so they serve as the services do.
///
/// Every accepted connection sends its writes at once (`TCP_NODELAY`): an answer or a chat frame
/// is one small write, and under Nagle's algorithm a second small frame to a socket whose first
/// is not yet acknowledged waits for the peer's ACK, which the peer may delay (40 ms on Linux,
/// up to 200 ms on Windows): a sender's `ack` followed by a reply, a member of two busy groups.
/// `mychat bench ws` (its clients on loopback, acking at once) measured no change for sessions
/// and a difference within the runs' spread for a group's fan-out (docs/benchmarks.md, the
/// gateway).
///
/// # Errors
/// When `addr` cannot be bound.
pub(crate) async fn bind_http(addr: SocketAddr) -> std::io::Result<HttpListener> {
    fn no_delay(socket: &mut tokio::net::TcpStream) {
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY on an accepted connection");
        }
    }
    Ok(tokio::net::TcpListener::bind(addr)
        .await?
        .tap_io(no_delay as fn(&mut tokio::net::TcpStream)))
}

/// Serves `app` on `addr` ([`bind_http`]) until `shutdown`, then gives upgraded sockets 5 s to
/// drain.
async fn serve_http(
    name: &'static str,
    addr: SocketAddr,
    app: axum::Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = bind_http(addr)
        .await
        .with_context(|| format!("{name}: binding {addr}"))?;
    tracing::info!(%addr, "{name} listening");
    let stop = shutdown.clone();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await });
    tokio::select! {
        r = server => r.with_context(|| format!("{name} failed"))?,
        // Upgraded sockets do not end on their own: give connections 5 s to drain.
        _ = async { shutdown.cancelled().await; tokio::time::sleep(Duration::from_secs(5)).await } => {}
    }
    Ok(())
}
