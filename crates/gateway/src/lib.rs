//! The WebSocket gateway (:8082): chat sockets, the MyChat frame protocol (both dialects), and
//! the fan-out **from the stream**.
//!
//! - A message a participant sends is appended to its session's chat shard (`CHAT_<k>`, record
//!   subject `chat.<k>.<session_id>`, dedup id = the client's message id scoped to session and
//!   sender; in a pack, [`eventstore::pack`]) and acknowledged to the sender with its position
//!   only once JetStream has stored it. Read receipts and revocations are records of the same
//!   stream.
//! - Delivery never takes an in-process shortcut: each node runs **one** log reader
//!   (`eventstore::reader::LogReader`, gap-checking explicit pulls) per chat stream (`CHAT_1` …
//!   `CHAT_N`, and the legacy `CHAT` when present) and one of `ev.session.>` for the whole node,
//!   starting from the `chat_sessions` read model and its checkpoint; one core-NATS subscription each for
//!   `typing.>` and `notify.>`, and routes what they read to its local sockets. Any node can
//!   serve any socket.
//! - Resume: a socket that sends `resume {session_id, after_seq}` (or connects with
//!   `?after_seq=`) gets exactly the records after that position, read from the session's chat
//!   stream (`eventstore::chat_read::records_after`), then the live tail (a per-socket
//!   high-water mark drops what it already has).
//! - Presence ([`presence`]): each node keeps one key in the `presence` KV bucket, refreshed on
//!   change and on a heartbeat; a crashed node's key goes stale after the presence timeout.
//! - Session lifecycle ([`hub`]): `session_start` when both sides are present, `billing` then
//!   `session_end` from `SessionBilled`, auto-end at the prepaid time (warned one minute before)
//!   and after the inactivity timeout, as commands on the `ChatSession` aggregate with derived
//!   command ids, so several nodes bill once.

pub mod admin_bus;
pub mod group_socket;
pub mod hub;
pub mod presence;
pub mod protocol;
pub mod socket;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::response::IntoResponse as _;
use axum::routing::get;
use axum::{Json, Router};
use eventstore::CommandBus;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use hub::Hub;

/// Tunables of a gateway node. Defaults follow the contract (d.6, d.7) where it has a number.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// This node's id (the key of its presence entry). Default: a fresh UUID.
    pub node_id: String,
    /// Frames a socket may have queued before it is closed as too slow (contract d.7: 256).
    pub send_queue: usize,
    /// Length of a billed minute. 60 s; shorter only in tests (prepaid auto-end runs in seconds).
    pub minute: Duration,
    /// A session with no message and no app-level `ping` for this long is ended (contract d.6:
    /// 30 min).
    pub inactivity_timeout: Duration,
    /// A node whose presence entry is older than this is considered gone (its sockets offline).
    pub presence_timeout: Duration,
    /// Interval of the server's WebSocket ping control frames (contract d.7: 54 s).
    pub ping_interval: Duration,
    /// Sustained client frames per second per socket; a socket above it (after `burst`) is closed.
    pub frames_per_second: f64,
    /// Frames a socket may send at once above the sustained rate.
    pub burst: f64,
    /// At most this many records are replayed on a resume; beyond it `recovered: false`.
    pub max_replay: usize,
    /// How long a shutting-down node waits for its sockets to drain.
    pub shutdown_grace: Duration,
    /// What the deployment set of how the node's committer of each chat stream groups appends
    /// ([`eventstore::GroupCommitter`]), laid over the default of the recorded chat layout
    /// ([`eventstore::chat::commit_settings`]: plain publishes from 16 shards on, atomic batches
    /// below). Default: nothing set.
    pub chat_commit: eventstore::GroupCommitOverrides,
    /// Replicas of the presence KV bucket (1 on a single nats-server, 3 on a cluster).
    pub kv_replicas: usize,
    /// The origins CORS allows on the node's HTTP routes (empty: any origin; [`api::cors`]).
    pub cors_origins: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            node_id: uuid::Uuid::new_v4().simple().to_string(),
            send_queue: 256,
            minute: Duration::from_secs(60),
            inactivity_timeout: Duration::from_secs(30 * 60),
            presence_timeout: Duration::from_secs(15),
            ping_interval: Duration::from_secs(30),
            frames_per_second: 20.0,
            burst: 60.0,
            max_replay: 1000,
            shutdown_grace: Duration::from_secs(5),
            chat_commit: eventstore::GroupCommitOverrides::default(),
            kv_replicas: 1,
            cors_origins: Vec::new(),
        }
    }
}

/// Runs one background part of a node (`run(hub, shutdown)`) under supervision until `shutdown`:
/// when it ends or panics before then, it is marked down (`/health` answers 503) and started
/// again after a backoff (100 ms doubling to 5 s; back to 100 ms once it has run for a minute).
pub fn supervise<F, Fut>(hub: &Arc<Hub>, name: &'static str, shutdown: &CancellationToken, run: F)
where
    F: Fn(Arc<Hub>, CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (hub, shutdown) = (hub.clone(), shutdown.clone());
    tokio::spawn(async move {
        let part = hub::Part::Task(name);
        let mut delay = Duration::from_millis(100);
        loop {
            let started = std::time::Instant::now();
            hub.set_part(part, true);
            let outcome = tokio::spawn(run(hub.clone(), shutdown.clone())).await;
            if shutdown.is_cancelled() {
                return;
            }
            hub.set_part(part, false);
            match outcome {
                Ok(()) => tracing::error!(part = name, ?delay, "gateway part stopped; restarting"),
                Err(e) => {
                    tracing::error!(part = name, error = %e, ?delay, "gateway part failed; restarting")
                }
            }
            if started.elapsed() > Duration::from_secs(60) {
                delay = Duration::from_millis(100);
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    });
}

/// `GET /health`: `{status: "ok"}`, or 503 `{status: "degraded", down: [...]}` while a background
/// part of the node is down (it accepts sockets but could not deliver to them).
pub async fn health(State(state): State<GatewayState>) -> axum::response::Response {
    let down = state.hub.parts_down();
    if down.is_empty() {
        Json(json!({ "status": "ok" })).into_response()
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "degraded", "down": down })),
        )
            .into_response()
    }
}

/// What the gateway's handlers share. Cheap to clone.
#[derive(Clone)]
pub struct GatewayState {
    pub bus: CommandBus,
    pub jwt: Arc<web::auth::JwtKeys>,
    /// What authenticating a user token needs from the database, remembered per node.
    pub tokens: web::auth::TokenGate,
    pub hub: Arc<Hub>,
    pub db: PgPool,
    pub nats: async_nats::Client,
}

/// The gateway's routes: `/ws`, `/ws/chat/{session_id}`, `/ws/counselor/{id}`, `/ws/stats`,
/// `/ws/counselors/online`, `/health`.
pub fn router(state: GatewayState) -> Router {
    let router = Router::new()
        .route("/health", get(health))
        .route("/ws", get(socket::ws_any))
        .route("/ws/chat/{session_id}", get(socket::ws_chat))
        .route("/ws/group/{group_id}", get(group_socket::ws_group))
        .route("/ws/counselor/{id}", get(socket::ws_counselor))
        .route("/ws/stats", get(stats))
        .route("/ws/counselors/online", get(counselors_online))
        // The node's metrics, with its socket count sampled at each scrape.
        .route("/metrics", get(metrics))
        .layer(web::cors::layer(&state.hub.config().cors_origins))
        .with_state(state);
    web::observe::security_headers(router)
        .layer(axum::middleware::from_fn_with_state(
            "gateway",
            web::observe::http_metrics,
        ))
        .layer(axum::middleware::from_fn(web::observe::request_id))
}

/// Metric: sockets open on this node (gauge, sampled when `/metrics` is read).
pub const METRIC_SOCKETS: &str = "mychat_gateway_sockets";
/// Metric: fan-out latency in seconds, from the record's append to its stream (the
/// JetStream timestamp) to its frame being handed to the local sockets' send queues, by
/// `stream` (`CHAT`, `EVENTS`).
pub const METRIC_FANOUT_SECONDS: &str = "mychat_gateway_fanout_seconds";

/// `GET /metrics`: the process's metrics (Prometheus text) after sampling [`METRIC_SOCKETS`].
pub async fn metrics(State(state): State<GatewayState>) -> axum::response::Response {
    metrics::gauge!(METRIC_SOCKETS).set(state.hub.socket_count() as f64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        web::observe::render(),
    )
        .into_response()
}

/// Starts a gateway node's background work (the `CHAT` and `ev.session.>` consumers, the
/// `typing.>` and `notify.>` subscriptions, presence, session timers) and returns its state.
/// Everything stops when `shutdown` is cancelled; [`Hub::drain`] then closes the sockets.
///
/// # Errors
/// When the presence bucket cannot be created or a subscription fails.
pub async fn start_node(
    nats: async_nats::Client,
    bus: CommandBus,
    db: PgPool,
    jwt: Arc<web::auth::JwtKeys>,
    config: GatewayConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<GatewayState> {
    let js = bus.jetstream().clone();
    let kv = presence::bucket(&js, config.presence_timeout, config.kv_replicas)
        .await
        .context("creating the presence bucket")?;
    let chat = eventstore::ChatLog::open(js.clone(), config.chat_commit.clone())
        .await
        .context("opening the chat log")?;
    let commit = chat.commit_settings();
    tracing::info!(
        shards = chat.layout().shards,
        max_batch = commit.max_batch,
        min_batch = commit.min_batch,
        max_in_flight = commit.max_in_flight,
        overridden = !config.chat_commit.is_empty(),
        "chat committers"
    );
    let hub = Arc::new(Hub::new(config, bus.clone(), nats.clone(), chat));
    supervise(&hub, "chat fan-out", &shutdown, |hub, stop| {
        hub.run_chat_fanout(stop)
    });
    supervise(&hub, "group events", &shutdown, |hub, stop| {
        hub.run_group_events(stop)
    });
    {
        let db = db.clone();
        supervise(&hub, "session events", &shutdown, move |hub, stop| {
            hub.run_session_events(db.clone(), stop)
        });
    }
    {
        let nats = nats.clone();
        supervise(&hub, "typing", &shutdown, move |hub, stop| {
            let nats = nats.clone();
            async move {
                match nats.subscribe("typing.>").await {
                    Ok(sub) => hub.run_typing(sub, stop).await,
                    Err(e) => tracing::error!(error = %e, "subscribing to typing.>"),
                }
            }
        });
    }
    {
        let nats = nats.clone();
        supervise(&hub, "notify", &shutdown, move |hub, stop| {
            let nats = nats.clone();
            async move {
                match nats.subscribe("notify.>").await {
                    Ok(sub) => hub.run_notify(sub, stop).await,
                    Err(e) => tracing::error!(error = %e, "subscribing to notify.>"),
                }
            }
        });
    }
    supervise(&hub, "session timers", &shutdown, |hub, stop| {
        hub.run_lifecycle(stop)
    });
    supervise(&hub, "presence", &shutdown, move |hub, stop| {
        presence::run(hub, kv.clone(), stop)
    });
    // The admin API's presence / kick / mute / message / broadcast requests.
    {
        let nats = nats.clone();
        supervise(&hub, "admin bus", &shutdown, move |hub, stop| {
            let nats = nats.clone();
            async move {
                if let Err(e) = admin_bus::run(nats, hub, stop).await {
                    tracing::error!(error = format!("{e:#}"), "admin bus stopped");
                }
            }
        });
    }
    let tokens = web::auth::TokenGate::follow(&nats, web::auth::TokenGate::DEFAULT_TTL)
        .await
        .context("following token revocations")?;
    Ok(GatewayState {
        bus,
        jwt,
        tokens,
        hub,
        db,
        nats,
    })
}

/// `GET /ws/stats` → `{code:200, msg, data:{active_sessions, total_duration (minutes),
/// total_amount (yuan)}}` from the `chat_sessions` read model (contract d.1); also this node's
/// `online_users`, `node_sockets`, `chat_commit` (its group committers' counters per chat
/// stream: writes, batches, mean write round trip in ms), `chat_commit_settings` (`shards`,
/// `max_batch`, `min_batch`, `max_in_flight`: how its committers group appends), `chat_packed`
/// (whether the shards are written in packs) and `chat_packs` (its packers' counters per chat
/// stream: packs, records, duplicates answered, packs fenced by another writer, reads of the
/// stream).
pub async fn stats(State(state): State<GatewayState>) -> Json<Value> {
    let row: Result<(i64, i64, i64), _> = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 1), COALESCE(sum(duration), 0)::BIGINT, \
         COALESCE(sum(total_amount_fen), 0)::BIGINT FROM chat_sessions",
    )
    .fetch_one(&state.db)
    .await;
    let chat_commit: Vec<Value> = state
        .hub
        .chat()
        .stats()
        .into_iter()
        .map(|(stream, commit)| {
            let (singles, batches, batched, failed, _) = commit.snapshot();
            json!({
                "stream": stream,
                "single_writes": singles,
                "batches": batches,
                "batched_records": batched,
                "failed_batches": failed,
                "mean_write_ms": (commit.mean_write_ms() * 1000.0).round() / 1000.0,
            })
        })
        .collect();
    let chat_packs: Vec<Value> = state
        .hub
        .chat()
        .pack_stats()
        .into_iter()
        .map(|(stream, packer)| {
            let (packs, records, duplicates, fenced, catch_ups) = packer.snapshot();
            json!({
                "stream": stream,
                "packs": packs,
                "records": records,
                "duplicates": duplicates,
                "fenced": fenced,
                "catch_ups": catch_ups,
            })
        })
        .collect();
    let settings = state.hub.chat().commit_settings();
    let chat_commit_settings = json!({
        "shards": state.hub.chat().layout().shards,
        "max_batch": settings.max_batch,
        "min_batch": settings.min_batch,
        "max_in_flight": settings.max_in_flight,
    });
    match row {
        Ok((active, seconds, fen)) => Json(json!({
            "code": 200,
            "msg": "success",
            "data": {
                "active_sessions": active,
                "total_duration": seconds / 60,
                "total_amount": fen as f64 / 100.0,
                "online_users": state.hub.online_users().len(),
                "node_sockets": state.hub.socket_count(),
                "chat_commit": chat_commit,
                "chat_commit_settings": chat_commit_settings,
                "chat_packs": chat_packs,
                "chat_packed": state.hub.chat().layout().packed,
            }
        })),
        Err(e) => {
            tracing::error!(error = %e, "ws stats");
            Json(json!({ "code": 500, "msg": "stats unavailable" }))
        }
    }
}

/// `GET /ws/counselors/online` → `{code:200, msg, data:{counselors:[{id, user_id, name}],
/// count}}`: the counselors whose login has a socket on any live node (presence).
pub async fn counselors_online(State(state): State<GatewayState>) -> Json<Value> {
    let online: Vec<i64> = state.hub.online_users().into_iter().collect();
    let rows: Result<Vec<(i64, Option<i64>, String)>, _> = sqlx::query_as(
        "SELECT id, user_id, name FROM counselors WHERE user_id = ANY($1) ORDER BY id",
    )
    .bind(&online)
    .fetch_all(&state.db)
    .await;
    match rows {
        Ok(rows) => {
            let counselors: Vec<Value> = rows
                .into_iter()
                .map(|(id, user_id, name)| json!({ "id": id, "user_id": user_id, "name": name, "online": true }))
                .collect();
            Json(json!({
                "code": 200,
                "msg": "success",
                "data": { "count": counselors.len(), "counselors": counselors }
            }))
        }
        Err(e) => {
            tracing::error!(error = %e, "counselors online");
            Json(json!({ "code": 500, "msg": "presence unavailable" }))
        }
    }
}
