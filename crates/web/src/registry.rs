//! The live service registry, on NATS: every mychat process (the user API, the admin API, each
//! gateway node, the projectors) registers as a service with the NATS micro services protocol
//! (async-nats's `service` module: it answers `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`), and
//! [`discover`] lists the instances that answer. A plugin in any language joins by speaking the
//! same protocol (docs/operations.md shows one in Python).
//!
//! Nothing is stored: the list is who answers now, so an instance that stops (a killed process,
//! a lost connection) is absent from the next list. Each instance's metadata carries `part`
//! (`api`, `admin`, `gateway`, `projectors`, or a plugin's own), `node` (the host), `address`
//! (where it serves HTTP) and `started_at` (RFC 3339); a part's live figures (projection lag,
//! sockets) are its endpoints' stats `data`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::service::ServiceExt as _;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Live figures a part adds to its stats (`{"lag_events": 3}`, `{"sockets": 120}`).
pub type LiveData = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What a process registers as.
pub struct Registration {
    /// The service name (`mychat_admin`; letters, digits, `-` and `_`).
    pub name: String,
    /// The part (`admin`, `gateway`, …), in the metadata.
    pub part: String,
    /// What it is, for people.
    pub description: String,
    /// Where it serves HTTP (`127.0.0.1:8081`), in the metadata.
    pub address: String,
    /// Its live figures, if any.
    pub data: Option<LiveData>,
}

/// The host's name (`HOSTNAME`, else `/etc/hostname`, else `unknown`).
pub fn node_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Registers this process as `registration` on `nats` until `stop` completes (or the
/// connection ends); answers its instance id. One endpoint, `health` (subject
/// `mychat.<part>.health`, answered `{"status":"ok"}`), carries the live data in its stats.
///
/// # Errors
/// When the service cannot be added (an invalid name, NATS unreachable).
pub async fn register(
    nats: &async_nats::Client,
    registration: Registration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<String> {
    let metadata = HashMap::from([
        ("part".to_string(), registration.part.clone()),
        ("node".to_string(), node_name()),
        ("address".to_string(), registration.address.clone()),
        ("started_at".to_string(), chrono::Utc::now().to_rfc3339()),
    ]);
    let mut builder = nats
        .service_builder()
        .description(registration.description.clone())
        .metadata(metadata);
    if let Some(data) = registration.data.clone() {
        builder = builder.stats_handler(move |_endpoint, _stats| data());
    }
    let service = builder
        .start(&registration.name, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("registering {}: {e}", registration.name))?;
    let id = service.info().await.id;
    let mut health = service
        .group(format!("mychat.{}", registration.part))
        .endpoint("health")
        .await
        .map_err(|e| anyhow::anyhow!("registering {}'s endpoint: {e}", registration.name))?;
    tokio::spawn(async move {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                request = health.next() => match request {
                    Some(r) => {
                        let _ = r.respond(Ok(r#"{"status":"ok"}"#.into())).await;
                    }
                    None => break,
                },
                _ = &mut stop => break,
            }
        }
        let _ = service.stop().await;
    });
    Ok(id)
}

/// One endpoint of an instance, as its stats describe it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EndpointStats {
    /// The endpoint's name.
    pub name: String,
    /// Its subject.
    pub subject: String,
    /// Requests it handled.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// The instance's live figures (`lag_events`, `sockets`, …), if it reports any.
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
}

/// One live instance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServiceInstance {
    /// The instance id (unique per process).
    pub id: String,
    /// The service name (`mychat_admin`, a plugin's own).
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it is.
    pub description: String,
    /// The part (`api`, `admin`, `gateway`, `projectors`, or a plugin's).
    pub part: String,
    /// The host it runs on.
    pub node: String,
    /// Where it serves HTTP, if it does.
    pub address: String,
    /// When it started (RFC 3339), as it says.
    pub started_at: Option<String>,
    /// Seconds since it started.
    pub uptime_seconds: Option<i64>,
    /// The round trip of its `$SRV.PING` answer, milliseconds.
    pub ping_ms: f64,
    /// Requests handled, over its endpoints.
    pub requests: u64,
    /// Requests that failed, over its endpoints.
    pub errors: u64,
    /// Its endpoints.
    pub endpoints: Vec<EndpointStats>,
    /// Every metadata entry it registered with.
    pub metadata: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct Ping {
    #[serde(default)]
    name: String,
    id: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
struct Info {
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct EndpointReply {
    #[serde(default)]
    name: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    num_requests: u64,
    #[serde(default)]
    num_errors: u64,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StatsReply {
    id: String,
    #[serde(default)]
    started: Option<String>,
    #[serde(default)]
    endpoints: Option<Vec<EndpointReply>>,
}

/// Sends `$SRV.<verb>` and gathers every answer that arrives within `window`, with its round
/// trip.
async fn gather(
    nats: &async_nats::Client,
    verb: &str,
    window: Duration,
) -> anyhow::Result<Vec<(Duration, Vec<u8>)>> {
    let inbox = nats.new_inbox();
    let mut replies = nats.subscribe(inbox.clone()).await?;
    let sent = Instant::now();
    nats.publish_with_reply(format!("$SRV.{verb}"), inbox, "".into())
        .await?;
    nats.flush().await?;
    let mut out = Vec::new();
    let deadline = tokio::time::sleep(window);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            m = replies.next() => match m {
                Some(m) => out.push((sent.elapsed(), m.payload.to_vec())),
                None => break,
            },
            _ = &mut deadline => break,
        }
    }
    Ok(out)
}

/// The instances answering on `nats` now: `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` sent at
/// once, answers gathered for `window` (300 ms is plenty on one network), joined by instance id,
/// sorted by name and id. An answer that is not the protocol's JSON is skipped.
///
/// # Errors
/// When NATS is unreachable.
pub async fn discover(
    nats: &async_nats::Client,
    window: Duration,
) -> anyhow::Result<Vec<ServiceInstance>> {
    let (pings, infos, stats) = futures::try_join!(
        gather(nats, "PING", window),
        gather(nats, "INFO", window),
        gather(nats, "STATS", window),
    )?;
    let infos: HashMap<String, Info> = infos
        .iter()
        .filter_map(|(_, p)| {
            let v: serde_json::Value = serde_json::from_slice(p).ok()?;
            let id = v.get("id")?.as_str()?.to_string();
            Some((id, serde_json::from_value(v).ok()?))
        })
        .collect();
    let stats: HashMap<String, StatsReply> = stats
        .iter()
        .filter_map(|(_, p)| serde_json::from_slice::<StatsReply>(p).ok())
        .map(|s| (s.id.clone(), s))
        .collect();
    let now = chrono::Utc::now();
    let mut out: Vec<ServiceInstance> = pings
        .iter()
        .filter_map(|(rtt, p)| {
            serde_json::from_slice::<Ping>(p)
                .ok()
                .map(|ping| (rtt, ping))
        })
        .map(|(rtt, ping)| {
            let metadata = ping.metadata.unwrap_or_default();
            let meta = |k: &str| metadata.get(k).cloned().unwrap_or_default();
            let stat = stats.get(&ping.id);
            let started_at = metadata
                .get("started_at")
                .cloned()
                .or_else(|| stat.and_then(|s| s.started.clone()));
            let uptime_seconds = started_at
                .as_deref()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| (now - t.with_timezone(&chrono::Utc)).num_seconds());
            let endpoints: Vec<EndpointStats> = stat
                .and_then(|s| s.endpoints.as_ref())
                .map(|eps| {
                    eps.iter()
                        .map(|e| EndpointStats {
                            name: e.name.clone(),
                            subject: e.subject.clone(),
                            requests: e.num_requests,
                            errors: e.num_errors,
                            data: e.data.clone().filter(|d| !d.is_null()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            ServiceInstance {
                description: infos
                    .get(&ping.id)
                    .and_then(|i| i.description.clone())
                    .unwrap_or_default(),
                id: ping.id,
                name: ping.name,
                version: ping.version,
                part: meta("part"),
                node: meta("node"),
                address: meta("address"),
                started_at,
                uptime_seconds,
                ping_ms: rtt.as_secs_f64() * 1000.0,
                requests: endpoints.iter().map(|e| e.requests).sum(),
                errors: endpoints.iter().map(|e| e.errors).sum(),
                endpoints,
                metadata,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    out.dedup_by(|a, b| a.id == b.id);
    Ok(out)
}
