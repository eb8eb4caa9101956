//! Configuration: defaults, then `mychat.toml` (if present), then `MYCHAT_*` environment variables
//! (figment). One typed struct.

use std::net::SocketAddr;
use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// mychat's settings. Every field can be set in `mychat.toml` or as `MYCHAT_<FIELD>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// NATS server URL. Unset under `mychat up`: an embedded nats-server is started. Several
    /// servers of a cluster may be given comma-separated (`nats://n1:4222,nats://n2:4222`).
    pub nats_url: Option<String>,
    /// NATS user (with `nats_password`): the `mychat` user of the `MYCHAT` account in
    /// `nats-cluster.conf`. Unset: no credentials (the single-node `nats.conf` has no accounts).
    pub nats_user: Option<String>,
    /// NATS password of `nats_user`.
    pub nats_password: Option<String>,
    /// Postgres URL. Unset under `mychat up`: an embedded PostgreSQL is started.
    pub database_url: Option<String>,
    /// Where the embedded servers keep their data, and the generated secrets.
    pub data_dir: PathBuf,
    /// User API listen address (default 127.0.0.1:8080).
    pub user_addr: SocketAddr,
    /// Admin API listen address (default 127.0.0.1:8081).
    pub admin_addr: SocketAddr,
    /// WebSocket gateway listen address (default 127.0.0.1:8082).
    pub ws_addr: SocketAddr,
    /// The user API's public URL (sandbox `pay_url` and notify URL); default `http://<user_addr>`.
    pub public_url: Option<String>,
    /// Embedded nats-server client port.
    pub nats_port: u16,
    /// Embedded PostgreSQL port.
    pub pg_port: u16,
    /// HS256 key for tokens; unset: generated once into `<data_dir>/jwt.secret`.
    pub jwt_secret: Option<String>,
    /// Access-token lifetime in seconds (default 24 h: MyChat's clients have no refresh flow).
    pub token_ttl_seconds: i64,
    /// The sandbox payment provider's key; unset: generated into `<data_dir>/sandbox.secret`.
    pub sandbox_secret: Option<String>,
    /// Replicas of the streams (`EVENTS`, `CHAT`) and of the presence KV bucket that mychat
    /// creates: 1 on a single nats-server, 3 on a cluster (R3; `MYCHAT_STREAM_REPLICAS=3`).
    /// Applied to existing streams too (JetStream can scale a stream's replicas up or down).
    pub stream_replicas: usize,
    /// Chat shard streams (`CHAT_1` … `CHAT_<n>`, 1..=63) of a new deployment; an existing one
    /// keeps the number its streams were created with (a different value is refused at start).
    /// Default [`eventstore::chat::DEFAULT_SHARDS`] (4, measured: docs/benchmarks.md).
    pub chat_shards: u16,
    /// `json`, `pretty`, or `auto` (pretty on a terminal, JSON otherwise).
    pub log_format: String,
    /// Log every span as it closes, with its busy and idle time (`MYCHAT_LOG_SPANS=true`): one
    /// request traced end to end (authentication, the command, its commit, the wait for the read
    /// model) when `RUST_LOG` enables the spans, e.g. `RUST_LOG=info,api=debug,eventstore=debug`.
    pub log_spans: bool,
    /// Gateway: this node's id in presence (default: a fresh id per process).
    pub gateway_node_id: Option<String>,
    /// Gateway: length of a billed minute in milliseconds (60000; shorter only for tests).
    pub gateway_minute_ms: u64,
    /// Gateway: a session with no message and no `ping` for this many seconds is ended (1800).
    pub gateway_inactivity_seconds: u64,
    /// Gateway: a node whose presence heartbeat is older than this many milliseconds is gone.
    pub gateway_presence_timeout_ms: u64,
    /// Gateway: frames a socket may have queued before it is closed as too slow (256).
    pub gateway_send_queue: usize,
    /// Gateway: sustained client frames per second per socket before it is closed (20).
    pub gateway_frames_per_second: f64,
    /// Gateway: at most this many records are replayed on a resume (1000); beyond it the client
    /// is told `recovered: false` and reloads from REST.
    pub gateway_max_replay: usize,
    /// Gateway: group commit of chat appends (issue 5; `[gateway_chat_commit]` in `mychat.toml`,
    /// fields of `eventstore::GroupCommitSettings`; default batches of 8 to 1000, 2 in flight).
    pub gateway_chat_commit: eventstore::GroupCommitSettings,
    /// Where the projectors serve `/metrics` (projection lag; default 127.0.0.1:8083).
    pub metrics_addr: SocketAddr,
    /// The command bus: group commit bounds and the aggregate cache (issue 7; `[bus]` and
    /// `[bus.group_commit]` in `mychat.toml`, see `eventstore::BusSettings`).
    pub bus: eventstore::BusSettings,
    /// The order expiry sweep run by the projectors (contract f.9; `[order_expiry]` in
    /// `mychat.toml`: `every_seconds` 300, `unpaid_seconds` 1800, `batch` 500).
    pub order_expiry: projections::expiry::ExpirySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            nats_url: None,
            nats_user: None,
            nats_password: None,
            database_url: None,
            data_dir: PathBuf::from(".data"),
            user_addr: "127.0.0.1:8080".parse().expect("addr"),
            admin_addr: "127.0.0.1:8081".parse().expect("addr"),
            ws_addr: "127.0.0.1:8082".parse().expect("addr"),
            public_url: None,
            nats_port: 4222,
            pg_port: 55432,
            jwt_secret: None,
            token_ttl_seconds: 24 * 3600,
            sandbox_secret: None,
            stream_replicas: 1,
            chat_shards: eventstore::chat::DEFAULT_SHARDS,
            log_format: "auto".into(),
            log_spans: false,
            gateway_node_id: None,
            gateway_minute_ms: 60_000,
            gateway_inactivity_seconds: 30 * 60,
            gateway_presence_timeout_ms: 15_000,
            gateway_send_queue: 256,
            gateway_frames_per_second: 20.0,
            gateway_max_replay: 1000,
            gateway_chat_commit: gateway::GatewayConfig::default().chat_commit,
            metrics_addr: "127.0.0.1:8083".parse().expect("addr"),
            bus: eventstore::BusSettings::default(),
            order_expiry: projections::expiry::ExpirySettings::default(),
        }
    }
}

impl Settings {
    /// Loads defaults → `mychat.toml` → `MYCHAT_*`.
    ///
    /// # Errors
    /// When a value has the wrong type (the error names it).
    pub fn load() -> anyhow::Result<Self> {
        Ok(Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::file("mychat.toml"))
            .merge(Env::prefixed("MYCHAT_"))
            .extract()?)
    }

    /// The gateway node's configuration.
    pub fn gateway_config(&self) -> gateway::GatewayConfig {
        let defaults = gateway::GatewayConfig::default();
        gateway::GatewayConfig {
            node_id: self
                .gateway_node_id
                .clone()
                .unwrap_or(defaults.node_id.clone()),
            send_queue: self.gateway_send_queue,
            minute: std::time::Duration::from_millis(self.gateway_minute_ms.max(1)),
            inactivity_timeout: std::time::Duration::from_secs(self.gateway_inactivity_seconds),
            presence_timeout: std::time::Duration::from_millis(
                self.gateway_presence_timeout_ms.max(100),
            ),
            frames_per_second: self.gateway_frames_per_second,
            burst: (self.gateway_frames_per_second * 3.0).max(defaults.burst),
            max_replay: self.gateway_max_replay,
            chat_commit: self.gateway_chat_commit.clone(),
            kv_replicas: self.stream_replicas,
            ..defaults
        }
    }

    /// The user API's public URL.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.user_addr))
    }

    /// A secret from the settings, else from `<data_dir>/<file>`, generated there on first use.
    ///
    /// # Errors
    /// When the file cannot be read or written.
    pub fn secret(&self, configured: &Option<String>, file: &str) -> anyhow::Result<String> {
        if let Some(s) = configured {
            return Ok(s.clone());
        }
        let path = self.data_dir.join(file);
        if let Ok(s) = std::fs::read_to_string(&path) {
            if !s.trim().is_empty() {
                return Ok(s.trim().to_string());
            }
        }
        std::fs::create_dir_all(&self.data_dir)?;
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        std::fs::write(&path, &secret)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(secret)
    }
}
