//! What both APIs share: the application state ([`AppState`]: the database, the command bus,
//! the chat log, the per-process caches, the settings), new aggregates' ids, the idempotency
//! of state-changing requests, the ledger's money figures and the demo seed.

pub mod counselor_terms;
pub mod idempotency;
pub mod ids;
pub mod ledger_reads;
pub mod seed;

use std::sync::Arc;
use std::time::Duration;

use eventstore::CommandBus;
use projections::CheckpointWatch;
use sqlx::PgPool;
use web::auth::{JwtKeys, TokenGate};

/// Settings the handlers need.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The user API's public base URL (`http://127.0.0.1:8080`): the sandbox cashier's `pay_url`
    /// and the sandbox provider's notify URL are built from it.
    pub public_url: String,
    /// The sandbox provider's HMAC-SHA256 key (signs and verifies its callbacks; secret).
    pub sandbox_secret: secrecy::SecretString,
    /// How long a command handler waits for the read model the client reads next.
    pub settle_timeout: Duration,
    /// The origins CORS allows (`https://chat.example.com`); empty: any origin ([`cors`]).
    pub cors_origins: Vec<String>,
    /// The business time zone: the calendar every admin figure groups and filters days,
    /// weeks, months and years by ("today", date ranges, series, reports).
    pub business_zone: chrono_tz::Tz,
}

/// Everything a handler needs: [`Services`] behind one `Arc`. Cloning it (axum does, for every
/// middleware and extractor of every request) is one reference count, not a clone of each
/// client (an `async_nats::Client` clone alone costs several atomic operations).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// The state of a service made of `services`.
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What the handlers share (see [`AppState`]).
pub struct Services {
    pub db: PgPool,
    pub bus: CommandBus,
    pub nats: async_nats::Client,
    pub jwt: Arc<JwtKeys>,
    /// What authenticating a user token needs from the database, remembered per process.
    pub tokens: TokenGate,
    /// The chat log (the layout of the chat streams and their committers).
    pub chat: eventstore::ChatLog,
    /// Counselors' terms for new orders, remembered per process.
    pub counselors: counselor_terms::CounselorTerms,
    /// New aggregates' ids, taken from their sequences in blocks.
    pub ids: Arc<ids::IdBlocks>,
    pub watch: CheckpointWatch,
    pub settings: Arc<ApiSettings>,
}

impl Services {
    /// The services of one process: its database pool, command bus, NATS connection, chat log,
    /// token keys and settings, and what follows NATS for the whole process — the counselors'
    /// terms and the token revocations (announcements), and the checkpoint watch
    /// (read-your-writes); ids come from fresh blocks.
    ///
    /// # Errors
    /// When a subscription cannot be made or the checkpoint watch cannot start.
    pub async fn follow(
        db: PgPool,
        bus: CommandBus,
        nats: async_nats::Client,
        chat: eventstore::ChatLog,
        jwt: Arc<JwtKeys>,
        settings: Arc<ApiSettings>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            counselors: counselor_terms::CounselorTerms::follow(&nats).await?,
            tokens: TokenGate::follow(&nats, TokenGate::DEFAULT_TTL).await?,
            watch: CheckpointWatch::start(nats.clone(), db.clone()).await?,
            ids: Default::default(),
            db,
            bus,
            nats,
            chat,
            jwt,
            settings,
        })
    }

    /// Waits (up to `settings.settle_timeout`) until projection `name` has applied stream
    /// sequence `seq`, so that the client's next read shows its write. `None` (a no-op command)
    /// returns at once. Lag is logged, not an error: the write is already durable.
    #[tracing::instrument(level = "debug", name = "read_your_writes", skip(self))]
    pub async fn settle(&self, name: &str, seq: Option<u64>) {
        if let Some(seq) = seq {
            if !self
                .watch
                .wait_for(name, seq, self.settings.settle_timeout)
                .await
            {
                tracing::warn!(projection = name, seq, "read model lags behind the write");
            }
        }
    }
}

impl web::auth::UserTokens for AppState {
    fn jwt(&self) -> &JwtKeys {
        &self.jwt
    }
    fn token_gate(&self) -> &TokenGate {
        &self.tokens
    }
    fn db(&self) -> &PgPool {
        &self.db
    }
}
