//! Scoped API keys on the admin API: the key format, new secrets, and the per-process
//! [`KeyCache`] the RBAC guard ([`crate::admin::guard`]) authenticates keys against.
//!
//! A key is `mck_<12 hex>_<64 hex>`: the first 16 characters (`mck_<12 hex>`) are its public
//! prefix (shown in lists, how the key is found), the rest is 256 random bits. Only the argon2id
//! hash of the whole key is stored (in the `ApiKey` aggregate's events). A JWT never starts with
//! `mck_` (it starts with its base64url header), so the guard tells the two apart by prefix.
//!
//! **No database read per request.** Each admin API process follows the key events on the log
//! (`ev.apikey.>` in `EVENTS`, one [`eventstore::reader::LogReader`] per process, from the
//! start and then the live head) and folds them into the `ApiKey` aggregate per key in memory.
//! An issue, rotation or revocation committed through any node reaches every node as soon as
//! JetStream delivers it (milliseconds; a lost connection is noticed within 1.5 s and the reader
//! resumes after the last sequence it read). Expiry and the end of a rotation's grace are checked
//! against the clock on every request.
//!
//! A presented key is verified with argon2 once per process and secret; the SHA-256 of a verified
//! key is then remembered and compared in constant time (`subtle`), so a request costs a hash,
//! not an argon2 run. Each key with a `rate_per_minute` has its own GCRA limiter (`governor`):
//! over the limit is a 429 with `Retry-After`. When a key was last used is remembered in memory
//! and written to `api_key_usage` every [`USAGE_FLUSH`] (one statement for every key used).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use argon2::password_hash::{rand_core::OsRng, rand_core::RngCore, PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use async_nats::jetstream;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use domain::{ApiKey, ApiKeyEvent, KeySecret};
use eventstore::envelope::Commit;
use eventstore::reader::{LogReader, ReadOptions, ReadUntil};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::ApiError;

/// What every key starts with.
pub const KEY_MARK: &str = "mck_";
/// Hex digits of the random part of the public prefix.
const PREFIX_HEX: usize = 12;
/// Hex digits of the secret part.
const SECRET_HEX: usize = 64;
/// How often the last uses of keys are written to `api_key_usage`.
pub const USAGE_FLUSH: Duration = Duration::from_secs(5);

/// Whether a bearer token is an API key rather than a JWT (by its mark; see the module docs).
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(KEY_MARK)
}

/// The public prefix of a well-formed key (`mck_<12 hex>`), `None` for anything else.
pub fn prefix_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_MARK)?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (hex(id, PREFIX_HEX) && hex(secret, SECRET_HEX)).then(|| &key[..KEY_MARK.len() + PREFIX_HEX])
}

/// A freshly generated key: the whole key (shown to its creator once) and what is stored.
pub struct NewKey {
    /// The key to hand out (`mck_…`); never stored.
    pub key: String,
    /// Its public prefix and argon2id hash (PHC string).
    pub secret: KeySecret,
}

/// Generates a key from the OS's random source and hashes it (argon2id, the crate's defaults:
/// 19 MiB, 2 passes; runs on the blocking pool).
///
/// # Errors
/// 500 when hashing fails.
pub async fn new_key() -> Result<NewKey, ApiError> {
    tokio::task::spawn_blocking(|| {
        let mut bytes = [0u8; PREFIX_HEX / 2 + SECRET_HEX / 2];
        OsRng.fill_bytes(&mut bytes);
        let (id, secret) = bytes.split_at(PREFIX_HEX / 2);
        let key = format!("{KEY_MARK}{}_{}", hex::encode(id), hex::encode(secret));
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(key.as_bytes(), &salt)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("hashing a key: {e}")))?
            .to_string();
        let prefix = key[..KEY_MARK.len() + PREFIX_HEX].to_string();
        Ok(NewKey {
            key,
            secret: KeySecret { prefix, hash },
        })
    })
    .await
    .map_err(|e| ApiError::internal(anyhow::anyhow!("hashing a key: {e}")))?
}

/// The key the guard authenticated: who acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCaller {
    /// The key's id (`api_keys.id`, the aggregate id).
    pub id: i64,
    /// The key's name.
    pub name: String,
    /// Its scopes: the permission codes it holds.
    pub scopes: Vec<String>,
    /// The administrator who issued it.
    pub created_by: i64,
    /// When it expires, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

struct Entry {
    key: ApiKey,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    /// SHA-256 of keys verified with argon2, by prefix.
    verified: HashMap<String, [u8; 32]>,
}

#[derive(Default)]
struct Keys {
    by_id: HashMap<i64, Entry>,
    by_prefix: HashMap<String, i64>,
}

/// How far the cache has read the log.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Every key event stored when the cache started has been applied.
    ready: bool,
    /// The stream sequence of the last key event applied.
    seen: u64,
}

struct Inner {
    keys: RwLock<Keys>,
    progress: watch::Sender<Progress>,
    usage: Mutex<HashMap<i64, DateTime<Utc>>>,
}

/// The per-process cache of API keys (see the module docs). Cheap to clone; its background
/// tasks stop when the last clone is dropped.
#[derive(Clone)]
pub struct KeyCache {
    inner: Arc<Inner>,
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::unauthorized(msg)
}

impl KeyCache {
    /// An empty cache that is not fed (tests of the parts around it).
    pub fn detached() -> Self {
        Self {
            inner: Arc::new(Inner {
                keys: RwLock::default(),
                progress: watch::Sender::new(Progress::default()),
                usage: Mutex::default(),
            }),
        }
    }

    /// A cache fed from the key events of `EVENTS` on `js`, flushing uses to `db`. Needs a tokio
    /// runtime; returns at once ([`KeyCache::ready`] tells when the log has been read).
    pub fn start(js: jetstream::Context, db: PgPool) -> Self {
        let this = Self::detached();
        tokio::spawn(follow(Arc::downgrade(&this.inner), js));
        tokio::spawn(flush_usage(Arc::downgrade(&this.inner), db));
        this
    }

    /// Waits until every key event stored when the cache started is applied; false after
    /// `timeout`.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.progress.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| p.ready))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until the key event at stream sequence `seq` is applied (a node's own write, before
    /// it answers); false after `timeout`.
    pub async fn wait_for(&self, seq: u64, timeout: Duration) -> bool {
        let mut rx = self.inner.progress.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| p.ready && p.seen >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Applies one commit of key events read at stream sequence `seq`.
    fn apply(&self, seq: u64, commit: Commit) {
        let mut keys = self.inner.keys.write().unwrap_or_else(|p| p.into_inner());
        for stored in commit.into_stored(seq) {
            let Some(id) = stored.aggregate_id_i64() else {
                tracing::warn!(id = stored.aggregate_id, "api key id is not a number");
                continue;
            };
            let event: ApiKeyEvent = match stored.decode() {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, seq, "undecodable api key event");
                    continue;
                }
            };
            let entry = keys.by_id.entry(id).or_insert_with(|| Entry {
                key: ApiKey::default(),
                limiter: None,
                verified: HashMap::new(),
            });
            entry.key.apply(event);
            entry.limiter = match (&entry.limiter, entry.key.rate_per_minute) {
                (Some(l), Some(_)) => Some(l.clone()),
                (_, Some(r)) => {
                    NonZeroU32::new(r).map(|r| Arc::new(RateLimiter::direct(Quota::per_minute(r))))
                }
                (_, None) => None,
            };
            let prefix = entry.key.current.as_ref().map(|s| s.prefix.clone());
            if let Some(prefix) = prefix {
                keys.by_prefix.insert(prefix, id);
            }
        }
        drop(keys);
        self.inner
            .progress
            .send_modify(|p| p.seen = p.seen.max(seq));
    }

    /// Authenticates a presented key: found by its prefix, neither revoked nor expired, its
    /// secret current (or the previous one within its grace), verified, and within its rate.
    ///
    /// # Errors
    /// 401 (malformed, unknown, revoked, expired, replaced or wrong secret), 429 with
    /// `Retry-After` over the key's rate, 503 while the cache has not read the log yet.
    pub async fn authenticate(&self, presented: &str) -> Result<KeyCaller, ApiError> {
        let prefix = prefix_of(presented).ok_or_else(|| unauthorized("malformed API key"))?;
        let ready = self.inner.progress.borrow().ready;
        if !ready && !self.ready(Duration::from_secs(5)).await {
            return Err(ApiError::unavailable("API keys are not loaded yet"));
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let now = Utc::now();
        let (id, hash, known) = {
            let keys = self.inner.keys.read().unwrap_or_else(|p| p.into_inner());
            let id = *keys
                .by_prefix
                .get(prefix)
                .ok_or_else(|| unauthorized("unknown API key"))?;
            let entry = keys
                .by_id
                .get(&id)
                .ok_or_else(|| unauthorized("unknown API key"))?;
            if entry.key.revoked_at.is_some() {
                return Err(unauthorized("API key revoked"));
            }
            if entry.key.expires_at.is_some_and(|e| now >= e) {
                return Err(unauthorized("API key expired"));
            }
            let hash = entry
                .key
                .hash_for(prefix, now)
                .ok_or_else(|| unauthorized("API key replaced by a rotation"))?
                .to_string();
            let known = entry
                .verified
                .get(prefix)
                .is_some_and(|d| bool::from(d.ct_eq(&digest)));
            (id, hash, known)
        };
        if !known {
            let key = presented.to_string();
            let ok = tokio::task::spawn_blocking(move || {
                PasswordHash::new(&hash).is_ok_and(|h| {
                    Argon2::default()
                        .verify_password(key.as_bytes(), &h)
                        .is_ok()
                })
            })
            .await
            .unwrap_or(false);
            if !ok {
                return Err(unauthorized("invalid API key"));
            }
        }
        let (caller, limiter) = {
            let mut keys = self.inner.keys.write().unwrap_or_else(|p| p.into_inner());
            let entry = keys
                .by_id
                .get_mut(&id)
                .ok_or_else(|| unauthorized("unknown API key"))?;
            if !known {
                entry.verified.insert(prefix.to_string(), digest);
            }
            let caller = KeyCaller {
                id,
                name: entry.key.name.clone(),
                scopes: entry.key.scopes.clone(),
                created_by: entry.key.created_by,
                expires_at: entry.key.expires_at,
            };
            (caller, entry.limiter.clone())
        };
        if let Some(limiter) = limiter {
            if let Err(not_until) = limiter.check() {
                use governor::clock::{Clock, DefaultClock};
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("API key over its rate limit; retry in {seconds} s"),
                );
                e.retry_after = Some(u32::try_from(seconds.max(1)).unwrap_or(u32::MAX));
                return Err(e);
            }
        }
        self.inner
            .usage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, now);
        Ok(caller)
    }
}

/// Feeds the cache from the log until it is dropped.
async fn follow(cache: Weak<Inner>, js: jetstream::Context) {
    let options = ReadOptions::new(eventstore::EVENTS_STREAM, 0, ReadUntil::Follow)
        .subjects(vec![format!("ev.{}.>", ApiKey::TYPE)]);
    let mut reader = LogReader::spawn(js, options);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            batch = reader.next() => {
                let Some(cache) = cache.upgrade().map(|inner| KeyCache { inner }) else { return };
                match batch {
                    Some(Ok(entries)) => {
                        for entry in entries {
                            match Commit::decode(&entry.payload) {
                                Ok(commit) => cache.apply(entry.stream_sequence, commit),
                                Err(e) => tracing::warn!(error = %e, seq = entry.stream_sequence, "undecodable api key commit"),
                            }
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "reading api key events"),
                    None => return,
                }
                if reader.is_caught_up() && reader.is_idle() {
                    cache.inner.progress.send_if_modified(|p| !std::mem::replace(&mut p.ready, true));
                }
            }
            _ = tick.tick() => {
                let Some(inner) = cache.upgrade() else { return };
                if reader.is_caught_up() && reader.is_idle() {
                    inner.progress.send_if_modified(|p| !std::mem::replace(&mut p.ready, true));
                }
            }
        }
    }
}

/// Writes the keys' last uses every [`USAGE_FLUSH`] until the cache is dropped.
async fn flush_usage(cache: Weak<Inner>, db: PgPool) {
    let mut tick = tokio::time::interval(USAGE_FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = cache.upgrade() else { return };
        let used: Vec<(i64, DateTime<Utc>)> =
            std::mem::take(&mut *inner.usage.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        drop(inner);
        if used.is_empty() {
            continue;
        }
        let (ids, ats): (Vec<i64>, Vec<DateTime<Utc>>) = used.into_iter().unzip();
        if let Err(e) = sqlx::query(
            "INSERT INTO api_key_usage (key_id, last_used_at) \
             SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[]) \
             ON CONFLICT (key_id) DO UPDATE SET last_used_at = \
             GREATEST(api_key_usage.last_used_at, EXCLUDED.last_used_at)",
        )
        .bind(&ids)
        .bind(&ats)
        .execute(&db)
        .await
        {
            tracing::warn!(error = %e, keys = ids.len(), "recording api key use");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_keys_have_a_prefix() {
        let key = format!("mck_0123456789ab_{}", "f".repeat(64));
        assert_eq!(prefix_of(&key), Some("mck_0123456789ab"));
        assert!(is_api_key(&key));
        assert!(!is_api_key("eyJhbGciOiJIUzI1NiJ9.e30.sig"));
        assert_eq!(prefix_of("mck_0123456789ab"), None);
        assert_eq!(
            prefix_of(&format!("mck_0123456789AB_{}", "f".repeat(64))),
            None
        );
        assert_eq!(
            prefix_of(&format!("mck_0123456789ab_{}", "f".repeat(63))),
            None
        );
        assert_eq!(
            prefix_of(&format!("xx_0123456789ab_{}", "f".repeat(64))),
            None
        );
    }

    #[tokio::test]
    async fn a_new_key_verifies_against_its_hash_only() {
        let k = new_key().await.unwrap();
        assert_eq!(prefix_of(&k.key), Some(k.secret.prefix.as_str()));
        let hash = PasswordHash::new(&k.secret.hash).unwrap();
        assert!(Argon2::default()
            .verify_password(k.key.as_bytes(), &hash)
            .is_ok());
        let other = new_key().await.unwrap();
        assert!(Argon2::default()
            .verify_password(other.key.as_bytes(), &hash)
            .is_err());
    }
}
