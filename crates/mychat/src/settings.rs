//! Configuration, in one place: defaults, then `mychat.toml` (if present), then `MYCHAT_*`
//! environment variables (figment). Nested keys come from the environment with `__`
//! (`MYCHAT_PAYMENTS__WECHAT__MCHID` is `[payments.wechat] mchid`). One typed struct; no other
//! code reads the environment for a setting.
//!
//! Secrets (`nats_password`, `jwt_secret`, `sandbox_secret`, the WeChat Pay APIv3 key) are
//! [`SecretString`]s: never printed (`mychat config` shows `"[redacted]"`), wiped on drop.
//! Passwords inside `nats_url` / `database_url` are redacted when printed as well.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What `mychat config` prints for a secret that is set.
pub const REDACTED: &str = "[redacted]";

/// mychat's settings. Every field can be set in `mychat.toml` or as `MYCHAT_<FIELD>`
/// (`MYCHAT_<TABLE>__<FIELD>` for nested tables).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// NATS server URL. Unset under `mychat up`: an embedded nats-server is started. Several
    /// servers of a cluster may be given comma-separated (`nats://n1:4222,nats://n2:4222`).
    pub nats_url: Option<String>,
    /// NATS user (with `nats_password`): the `mychat` user of the `MYCHAT` account in
    /// `nats-cluster.conf`. Unset: no credentials (the single-node `nats.conf` has no accounts).
    #[serde(default, deserialize_with = "text")]
    pub nats_user: Option<String>,
    /// NATS password of `nats_user` (secret).
    #[serde(
        default,
        serialize_with = "redact_option",
        deserialize_with = "secret_text"
    )]
    pub nats_password: Option<SecretString>,
    /// Postgres URL. Unset under `mychat up`: an embedded PostgreSQL is started. A password in
    /// it is redacted when the settings are printed.
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
    /// HS256 key for tokens (secret); unset: generated once into `<data_dir>/jwt.secret`.
    #[serde(
        default,
        serialize_with = "redact_option",
        deserialize_with = "secret_text"
    )]
    pub jwt_secret: Option<SecretString>,
    /// Access-token lifetime in seconds (default 24 h: MyChat's clients have no refresh flow).
    pub token_ttl_seconds: i64,
    /// The sandbox payment provider's key (secret); unset: generated into
    /// `<data_dir>/sandbox.secret`.
    #[serde(
        default,
        serialize_with = "redact_option",
        deserialize_with = "secret_text"
    )]
    pub sandbox_secret: Option<SecretString>,
    /// Replicas of the streams (`EVENTS`, `CHAT`) and of the presence KV bucket that mychat
    /// creates: 1 on a single nats-server, 3 on a cluster (R3; `MYCHAT_STREAM_REPLICAS=3`).
    /// Applied to existing streams too (JetStream can scale a stream's replicas up or down).
    pub stream_replicas: usize,
    /// Chat shard streams (`CHAT_1` … `CHAT_<n>`, 1..=63). Unset (the default): an existing
    /// deployment keeps the number its streams were created with, a new one gets
    /// [`eventstore::chat::DEFAULT_SHARDS`] (measured: docs/benchmarks.md). Set: the number for a
    /// new deployment, and a check for an existing one (another number is refused at start:
    /// resharding is not supported).
    pub chat_shards: Option<u16>,
    /// Whether the chat shards' records are written in packs, several per stream message
    /// (`MYCHAT_CHAT_PACKS`; [`eventstore::chat::ChatLayout::packed`]). Unset (the default): an
    /// existing deployment keeps its recorded format, a new one gets
    /// [`eventstore::chat::DEFAULT_PACKED`]. `true` switches a deployment that writes one record
    /// per message to packs (stop the gateway and API nodes first); `false` on a packed one is
    /// refused at start.
    pub chat_packs: Option<bool>,
    /// `json`, `pretty`, or `auto` (pretty on a terminal, JSON otherwise).
    pub log_format: String,
    /// Directory the user API stores and serves `/uploads/...` from; default
    /// `<data_dir>/uploads`.
    pub upload_dir: Option<PathBuf>,
    /// Origins allowed by CORS on every HTTP service, comma-separated
    /// (`https://chat.example.com,https://admin.example.com`); empty or `*`: any origin (MyChat's
    /// clients need that by default). An origin that is not a valid header value is a
    /// configuration error.
    pub cors_origins: String,
    /// The business time zone (IANA name, default `Asia/Shanghai`): every admin figure that
    /// groups or filters by day, week, month or year ("today", date ranges, series, reports)
    /// uses its calendar days.
    pub business_time_zone: String,
    /// Payment providers and the sandbox (`[payments]`; see [`PaymentSettings`]).
    pub payments: PaymentSettings,
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
    /// Gateway: group commit of chat appends (`[gateway_chat_commit]` in `mychat.toml`, the
    /// fields of `eventstore::GroupCommitSettings`, each optional). A field left unset follows
    /// the recorded chat layout (`eventstore::chat::commit_settings`: plain publishes from 16
    /// shards on, atomic batches of 16 to 1,000 with 16 in flight below; docs/architecture.md,
    /// group commit); default: nothing set.
    pub gateway_chat_commit: eventstore::GroupCommitOverrides,
    /// Where the projectors serve `/metrics` (projection lag; default 127.0.0.1:8083).
    pub metrics_addr: SocketAddr,
    /// The command bus: group commit bounds and the aggregate cache (`[bus]` and
    /// `[bus.group_commit]` in `mychat.toml`, see `eventstore::BusSettings`).
    pub bus: eventstore::BusSettings,
    /// The order expiry sweep run by the projectors (contract f.9; `[order_expiry]` in
    /// `mychat.toml`: `every_seconds` 300, `unpaid_seconds` 1800, `batch` 500).
    pub order_expiry: projections::expiry::ExpirySettings,
    /// Reconciliation and replay jobs of the admin API (`[jobs]` in `mychat.toml`:
    /// `concurrency` 1 across every admin node, `replay_retention_seconds` 604800,
    /// `stale_after_seconds` 15).
    pub jobs: api::admin::jobs::JobSettings,
    /// How long `mychat up` / `serve` wait, after SIGTERM or Ctrl-C, for the parts to finish
    /// (sockets drain, projector batches commit) before the rest is cut short, in seconds
    /// (default 5). `mychat up` then stops its embedded PostgreSQL and nats-server, so the
    /// whole process is gone within about twice this.
    pub shutdown_grace_seconds: u64,
}

/// `[payments]`: which providers the user API offers, their verification keys, and the sandbox.
///
/// `mychat serve api|all` refuses to start when a method of `methods` has no credentials and the
/// sandbox is not enabled (the error names the missing setting). With `sandbox = true` a method
/// without credentials runs in sandbox mode: its `pay_url` is mychat's own cashier page, which
/// pays by posting a notification signed with keys derived from `sandbox_secret`; and the
/// `sandbox` method is offered. Never enable the sandbox in production: anyone who can open the
/// cashier page pays for free. `mychat up` (the development default) enables it unless
/// `sandbox = false` is set explicitly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentSettings {
    /// The sandbox provider: `true` / `false`; unset: off for `mychat serve`, on for `mychat up`.
    pub sandbox: Option<bool>,
    /// The real providers offered (`wechat`, `alipay`), a list or comma-separated
    /// (`MYCHAT_PAYMENTS__METHODS=wechat`). Default both.
    #[serde(deserialize_with = "list_or_commas")]
    pub methods: Vec<String>,
    /// WeChat Pay API v3 (`[payments.wechat]`).
    pub wechat: WechatSettings,
    /// Alipay (`[payments.alipay]`).
    pub alipay: AlipaySettings,
}

/// `[payments.wechat]`: what mychat needs to verify WeChat Pay v3 notifications.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WechatSettings {
    /// Merchant id (`mchid`).
    #[serde(default, deserialize_with = "text")]
    pub mchid: Option<String>,
    /// App id (`appid`).
    #[serde(default, deserialize_with = "text")]
    pub appid: Option<String>,
    /// The APIv3 key, 32 bytes (secret): decrypts the notification's resource.
    #[serde(
        default,
        serialize_with = "redact_option",
        deserialize_with = "secret_text"
    )]
    pub apiv3_key: Option<SecretString>,
    /// The platform certificate's serial (`Wechatpay-Serial` must equal it).
    #[serde(default, deserialize_with = "text")]
    pub platform_serial: Option<String>,
    /// The platform public key: PEM text, or the path of a PEM file.
    pub platform_public_key: Option<String>,
}

/// `[payments.alipay]`: what mychat needs to verify Alipay notifications.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AlipaySettings {
    /// The application id (`app_id`).
    #[serde(default, deserialize_with = "text")]
    pub app_id: Option<String>,
    /// Alipay's public key: PEM text, or the path of a PEM file.
    pub public_key: Option<String>,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        Self {
            sandbox: None,
            methods: vec!["wechat".into(), "alipay".into()],
            wechat: WechatSettings::default(),
            alipay: AlipaySettings::default(),
        }
    }
}

fn redact_option<S: Serializer>(value: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str(REDACTED),
        None => s.serialize_none(),
    }
}

/// Text settings whose values may look like numbers (`MYCHAT_PAYMENTS__WECHAT__MCHID=1900000001`
/// arrives from the environment as an integer): any scalar is taken as its text.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Unsigned(u64),
        Signed(i64),
        Float(f64),
        Flag(bool),
    }
    Ok(Option::<Scalar>::deserialize(d)?.map(|v| match v {
        Scalar::Text(t) => t,
        Scalar::Unsigned(n) => n.to_string(),
        Scalar::Signed(n) => n.to_string(),
        Scalar::Float(n) => n.to_string(),
        Scalar::Flag(b) => b.to_string(),
    }))
}

/// A secret that may look like a number: as [`text`].
fn secret_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    Ok(text(d)?.map(SecretString::from))
}

fn list_or_commas<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Text(String),
    }
    let list = match Raw::deserialize(d)? {
        Raw::List(l) => l,
        Raw::Text(t) => t.split(',').map(str::to_string).collect(),
    };
    Ok(list
        .into_iter()
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty())
        .collect())
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
            chat_shards: None,
            chat_packs: None,
            log_format: "auto".into(),
            upload_dir: None,
            cors_origins: String::new(),
            business_time_zone: "Asia/Shanghai".into(),
            payments: PaymentSettings::default(),
            log_spans: false,
            gateway_node_id: None,
            gateway_minute_ms: 60_000,
            gateway_inactivity_seconds: 30 * 60,
            gateway_presence_timeout_ms: 15_000,
            gateway_send_queue: 256,
            gateway_frames_per_second: 20.0,
            gateway_max_replay: 1000,
            gateway_chat_commit: eventstore::GroupCommitOverrides::default(),
            metrics_addr: "127.0.0.1:8083".parse().expect("addr"),
            bus: eventstore::BusSettings::default(),
            order_expiry: projections::expiry::ExpirySettings::default(),
            jobs: api::admin::jobs::JobSettings::default(),
            shutdown_grace_seconds: 5,
        }
    }
}

/// The environment variables of the providers' keys before `[payments]` existed, still read:
/// `MYCHAT_WECHAT_MCHID` is `payments.wechat.mchid`, `MYCHAT_SANDBOX_PAYMENTS` is
/// `payments.sandbox`, and so on.
const LEGACY_ENV: [(&str, &str); 8] = [
    ("wechat_mchid", "payments__wechat__mchid"),
    ("wechat_appid", "payments__wechat__appid"),
    ("wechat_apiv3_key", "payments__wechat__apiv3_key"),
    (
        "wechat_platform_serial",
        "payments__wechat__platform_serial",
    ),
    (
        "wechat_platform_public_key",
        "payments__wechat__platform_public_key",
    ),
    ("alipay_app_id", "payments__alipay__app_id"),
    ("alipay_public_key", "payments__alipay__public_key"),
    ("sandbox_payments", "payments__sandbox"),
];

/// Settings that are text even when they look like numbers or booleans.
const TEXT_SETTINGS: [&str; 11] = [
    "nats_user",
    "nats_password",
    "jwt_secret",
    "sandbox_secret",
    "payments.wechat.mchid",
    "payments.wechat.appid",
    "payments.wechat.apiv3_key",
    "payments.wechat.platform_serial",
    "payments.wechat.platform_public_key",
    "payments.alipay.app_id",
    "payments.alipay.public_key",
];

impl Settings {
    /// Loads defaults → `mychat.toml` → `MYCHAT_*` (nested keys split on `__`), then checks
    /// the values that have a shape (the time zone, the CORS origins, the payment methods).
    ///
    /// # Errors
    /// When a value has the wrong type or an invalid value; the error names the setting.
    pub fn load() -> anyhow::Result<Self> {
        Self::from_figment(Self::figment())
    }

    /// The figment [`Settings::load`] extracts from.
    pub fn figment() -> Figment {
        let env = || {
            Env::prefixed("MYCHAT_")
                .map(|key| {
                    LEGACY_ENV
                        .iter()
                        .find(|(old, _)| key == *old)
                        .map_or_else(|| key.into(), |(_, new)| (*new).into())
                })
                .split("__")
        };
        let mut figment = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::file("mychat.toml"))
            .merge(env());
        // figment parses environment values ("0123" would become the number 123): the text
        // settings (ids, keys, secrets) are taken verbatim instead.
        for (key, value) in env().iter() {
            if TEXT_SETTINGS.contains(&key.as_str()) {
                figment = figment.merge(Serialized::default(key.as_str(), value));
            }
        }
        figment
    }

    /// Extracts and checks the settings of `figment`.
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn from_figment(figment: Figment) -> anyhow::Result<Self> {
        let settings: Settings = figment.extract()?;
        settings.business_zone()?;
        settings.cors_origins()?;
        if let Some(n) = settings.chat_shards {
            eventstore::chat::check_shards(n)?;
        }
        for method in &settings.payments.methods {
            anyhow::ensure!(
                matches!(method.as_str(), "wechat" | "alipay"),
                "payments.methods: unknown payment provider {method:?} (wechat, alipay; the \
                 sandbox is enabled with payments.sandbox)"
            );
        }
        Ok(settings)
    }

    /// The business time zone.
    ///
    /// # Errors
    /// When `business_time_zone` is not an IANA zone name.
    pub fn business_zone(&self) -> anyhow::Result<chrono_tz::Tz> {
        self.business_time_zone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| {
                anyhow::anyhow!(
                    "business_time_zone: {:?} is not an IANA time zone (e.g. Asia/Shanghai)",
                    self.business_time_zone
                )
            })
    }

    /// The CORS origins (empty: any origin).
    ///
    /// # Errors
    /// When an origin is not a valid header value.
    pub fn cors_origins(&self) -> anyhow::Result<Vec<String>> {
        let list: Vec<String> = self
            .cors_origins
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect();
        if list.iter().any(|o| o == "*") {
            return Ok(Vec::new());
        }
        for o in &list {
            axum::http::HeaderValue::from_str(o)
                .map_err(|_| anyhow::anyhow!("cors_origins: {o:?} is not a valid origin"))?;
        }
        Ok(list)
    }

    /// The settings as `mychat config` prints them: TOML, secrets and URL passwords redacted.
    ///
    /// # Errors
    /// Only if a value cannot be written as TOML.
    pub fn redacted_toml(&self) -> anyhow::Result<String> {
        let mut shown = self.clone();
        shown.nats_url = shown.nats_url.as_deref().map(redact_urls);
        shown.database_url = shown.database_url.as_deref().map(redact_urls);
        toml::to_string_pretty(&shown).context("writing the settings as TOML")
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
            cors_origins: self.cors_origins().unwrap_or_default(),
            ..defaults
        }
    }

    /// The user API's public URL.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.user_addr))
    }

    /// Where uploads live: `upload_dir`, else `<data_dir>/uploads`.
    pub fn upload_dir(&self) -> PathBuf {
        self.upload_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("uploads"))
    }

    /// A secret from the settings, else from `<data_dir>/<file>`, generated there on first use.
    ///
    /// # Errors
    /// When the file cannot be read or written.
    pub fn secret(
        &self,
        configured: &Option<SecretString>,
        file: &str,
    ) -> anyhow::Result<SecretString> {
        if let Some(s) = configured {
            return Ok(s.clone());
        }
        let path = self.data_dir.join(file);
        if let Ok(s) = std::fs::read_to_string(&path) {
            if !s.trim().is_empty() {
                return Ok(s.trim().into());
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
        Ok(secret.into())
    }

    /// The user API's payment configuration: the providers whose credentials are set, the
    /// sandbox flag, the methods offered. A provider with only some of its settings is an
    /// error naming the first missing one (a half-configured provider is a mistake, sandbox or
    /// not). `sandbox_default` is what an unset `payments.sandbox` means.
    ///
    /// # Errors
    /// As above, and when a key cannot be read or parsed.
    pub fn user_api_config(&self, sandbox_default: bool) -> anyhow::Result<api::UserApiConfig> {
        let p = &self.payments;
        let mut config = api::UserApiConfig::new(self.upload_dir());
        config.sandbox_payments = p.sandbox.unwrap_or(sandbox_default);
        config.methods = p.methods.clone();
        let pem = |name: &str, v: &str| -> anyhow::Result<String> {
            if v.contains("-----BEGIN") {
                Ok(v.to_string())
            } else {
                std::fs::read_to_string(v).with_context(|| format!("{name}: reading {v}"))
            }
        };
        let w = &p.wechat;
        let wechat = [
            ("payments.wechat.mchid", w.mchid.is_some()),
            ("payments.wechat.appid", w.appid.is_some()),
            ("payments.wechat.apiv3_key", w.apiv3_key.is_some()),
            (
                "payments.wechat.platform_serial",
                w.platform_serial.is_some(),
            ),
            (
                "payments.wechat.platform_public_key",
                w.platform_public_key.is_some(),
            ),
        ];
        if let Some(missing) = partially_set(&wechat) {
            anyhow::bail!("{}", missing_setting(missing, "WeChat Pay"));
        }
        if let (Some(mchid), Some(appid), Some(key), Some(serial), Some(public)) = (
            &w.mchid,
            &w.appid,
            &w.apiv3_key,
            &w.platform_serial,
            &w.platform_public_key,
        ) {
            config.wechat = Some(
                api::user::payments::providers::wechat::WechatConfig::new(
                    mchid.clone(),
                    appid.clone(),
                    key.expose_secret().as_bytes(),
                    serial.clone(),
                    &pem("payments.wechat.platform_public_key", public)?,
                )
                .context("payments.wechat")?,
            );
        }
        let a = &p.alipay;
        let alipay = [
            ("payments.alipay.app_id", a.app_id.is_some()),
            ("payments.alipay.public_key", a.public_key.is_some()),
        ];
        if let Some(missing) = partially_set(&alipay) {
            anyhow::bail!("{}", missing_setting(missing, "Alipay"));
        }
        if let (Some(app_id), Some(public)) = (&a.app_id, &a.public_key) {
            config.alipay = Some(
                api::user::payments::providers::alipay::AlipayConfig::new(
                    app_id.clone(),
                    &pem("payments.alipay.public_key", public)?,
                )
                .context("payments.alipay")?,
            );
        }
        Ok(config)
    }

    /// The production check of the payment configuration (`mychat serve api|all`, and `mychat
    /// up` when the sandbox is explicitly off): every offered method has its credentials, or
    /// the sandbox is enabled. Returns the resolved configuration.
    ///
    /// # Errors
    /// Naming the first missing setting of the first provider without credentials.
    pub fn checked_user_api_config(
        &self,
        sandbox_default: bool,
    ) -> anyhow::Result<api::UserApiConfig> {
        let config = self.user_api_config(sandbox_default)?;
        if config.sandbox_payments {
            return Ok(config);
        }
        for method in &config.methods {
            let (configured, first) = match method.as_str() {
                "wechat" => (config.wechat.is_some(), "payments.wechat.mchid"),
                _ => (config.alipay.is_some(), "payments.alipay.app_id"),
            };
            if !configured {
                anyhow::bail!(
                    "payment provider {method} has no credentials: set {first} ({}) and the \
                     rest of [payments.{method}], or leave it out of payments.methods, or enable \
                     the sandbox explicitly (payments.sandbox = true, MYCHAT_PAYMENTS__SANDBOX; \
                     never in production)",
                    env_name(first)
                );
            }
        }
        Ok(config)
    }
}

/// The first unset setting of a provider whose settings are only partly set.
fn partially_set<'a>(settings: &[(&'a str, bool)]) -> Option<&'a str> {
    let set = settings.iter().filter(|(_, s)| *s).count();
    if set == 0 || set == settings.len() {
        return None;
    }
    settings.iter().find(|(_, s)| !*s).map(|(name, _)| *name)
}

fn missing_setting(name: &str, provider: &str) -> String {
    format!(
        "{name} ({}) is not set: {provider} is only partly configured",
        env_name(name)
    )
}

/// The environment variable of a dotted setting name (`payments.wechat.mchid` →
/// `MYCHAT_PAYMENTS__WECHAT__MCHID`).
pub fn env_name(setting: &str) -> String {
    format!("MYCHAT_{}", setting.replace('.', "__").to_ascii_uppercase())
}

/// `scheme://user:password@host…` → `scheme://user:[redacted]@host…`, for each
/// comma-separated URL.
fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let Some((scheme, rest)) = url.split_once("://") else {
                return url.to_string();
            };
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:{REDACTED}@{host}{path}"),
                    None => url.to_string(),
                },
                None => url.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's `Jail` closures return its `Error`
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn nested_keys_come_from_the_environment_with_double_underscores() {
        Jail::expect_with(|jail| {
            jail.set_env("MYCHAT_PAYMENTS__SANDBOX", "true");
            jail.set_env("MYCHAT_PAYMENTS__METHODS", "wechat");
            jail.set_env("MYCHAT_PAYMENTS__WECHAT__MCHID", "1900000001");
            jail.set_env("MYCHAT_ALIPAY_APP_ID", "legacy-app");
            jail.set_env("MYCHAT_BUS__CACHE_CAPACITY", "77");
            jail.set_env("MYCHAT_BUSINESS_TIME_ZONE", "UTC");
            jail.set_env("MYCHAT_JWT_SECRET", "super-secret-jwt");
            jail.set_env("MYCHAT_SANDBOX_SECRET", "0123");
            let s = Settings::from_figment(Settings::figment()).expect("settings");
            assert_eq!(s.payments.sandbox, Some(true));
            assert_eq!(s.payments.methods, vec!["wechat".to_string()]);
            assert_eq!(s.payments.wechat.mchid.as_deref(), Some("1900000001"));
            assert_eq!(s.payments.alipay.app_id.as_deref(), Some("legacy-app"));
            assert_eq!(s.bus.cache_capacity, 77);
            assert_eq!(
                s.sandbox_secret
                    .as_ref()
                    .map(|v| v.expose_secret().to_string()),
                Some("0123".to_string()),
                "text settings are taken verbatim"
            );
            assert_eq!(s.business_zone().unwrap(), chrono_tz::UTC);
            let shown = s.redacted_toml().unwrap();
            assert!(!shown.contains("super-secret-jwt"), "{shown}");
            assert!(shown.contains(REDACTED), "{shown}");
            Ok(())
        });
    }

    #[test]
    fn the_chat_committers_fields_are_set_one_by_one() {
        Jail::expect_with(|jail| {
            let s = Settings::from_figment(Settings::figment()).expect("settings");
            assert!(s.gateway_chat_commit.is_empty(), "nothing set by default");
            jail.set_env("MYCHAT_GATEWAY_CHAT_COMMIT__MAX_IN_FLIGHT", "4");
            let s = Settings::from_figment(Settings::figment()).expect("settings");
            let set = &s.gateway_chat_commit;
            assert_eq!(set.max_in_flight, Some(4));
            assert_eq!(
                (set.max_batch, set.min_batch, set.linger),
                (None, None, None)
            );
            let on_four = set.over(eventstore::chat::commit_settings(4));
            assert_eq!((on_four.max_batch, on_four.max_in_flight), (1000, 4));
            let on_sixteen = set.over(eventstore::chat::commit_settings(16));
            assert_eq!((on_sixteen.max_batch, on_sixteen.max_in_flight), (1, 4));
            jail.set_env(
                "MYCHAT_GATEWAY_CHAT_COMMIT",
                "{max_batch=1000,min_batch=2,linger=500}",
            );
            let s = Settings::from_figment(Settings::figment()).expect("settings");
            let set = &s.gateway_chat_commit;
            assert_eq!((set.max_batch, set.min_batch), (Some(1000), Some(2)));
            assert_eq!(set.linger, Some(std::time::Duration::from_micros(500)));
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_is_an_error_naming_the_setting() {
        Jail::expect_with(|jail| {
            jail.set_env("MYCHAT_BUSINESS_TIME_ZONE", "Mars/Olympus");
            let e = Settings::from_figment(Settings::figment()).unwrap_err();
            assert!(e.to_string().contains("business_time_zone"), "{e:#}");
            jail.set_env("MYCHAT_BUSINESS_TIME_ZONE", "Asia/Shanghai");
            jail.set_env("MYCHAT_PAYMENTS__METHODS", "wechat,paypal");
            let e = Settings::from_figment(Settings::figment()).unwrap_err();
            assert!(e.to_string().contains("payments.methods"), "{e:#}");
            jail.set_env("MYCHAT_PAYMENTS__METHODS", "wechat");
            jail.set_env("MYCHAT_GATEWAY_SEND_QUEUE", "many");
            let e = Settings::from_figment(Settings::figment()).unwrap_err();
            assert!(
                e.to_string().to_lowercase().contains("gateway_send_queue"),
                "{e:#}"
            );
            Ok(())
        });
    }

    #[test]
    fn production_refuses_a_provider_without_credentials_unless_the_sandbox_is_on() {
        let s = Settings::default();
        let e = s.checked_user_api_config(false).err().unwrap().to_string();
        assert!(
            e.contains("payments.wechat.mchid") && e.contains("MYCHAT_PAYMENTS__WECHAT__MCHID"),
            "{e}"
        );
        let mut only_alipay = Settings::default();
        only_alipay.payments.methods = vec!["alipay".into()];
        let e = only_alipay
            .checked_user_api_config(false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("payments.alipay.app_id"), "{e}");
        let mut half = Settings::default();
        half.payments.wechat.mchid = Some("m".into());
        let e = half.user_api_config(true).err().unwrap().to_string();
        assert!(e.contains("payments.wechat.appid"), "{e}");
        let mut sandbox = Settings::default();
        sandbox.payments.sandbox = Some(true);
        assert!(
            sandbox
                .checked_user_api_config(false)
                .unwrap()
                .sandbox_payments
        );
        assert!(s.checked_user_api_config(true).unwrap().sandbox_payments);
        let mut none = Settings::default();
        none.payments.methods.clear();
        assert!(
            !none
                .checked_user_api_config(false)
                .unwrap()
                .sandbox_payments
        );
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_urls("postgres://u:pw@db:5432/mychat"),
            "postgres://u:[redacted]@db:5432/mychat"
        );
        assert_eq!(
            redact_urls("nats://n1:4222,nats://a:b@n2:4222"),
            "nats://n1:4222,nats://a:[redacted]@n2:4222"
        );
    }
}
