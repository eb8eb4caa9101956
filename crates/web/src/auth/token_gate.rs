//! The token gate: which user tokens are still good, remembered per process and forgotten when
//! a revocation is announced on [`AUTH_REVOKED_SUBJECT`].

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::Claims;
use crate::error::ApiError;

/// Checks that a verified user token is still good: not revoked (logout: `revoked_tokens`;
/// password change: `users.tokens_valid_after`) and its account exists and is enabled, reading
/// the database. The user API and the gateway ask a [`TokenGate`], which calls this on a miss.
///
/// # Errors
/// 401 `token revoked` / `unknown user`, 403 `account disabled`, 500 on a database error.
pub async fn check_user_token(db: &sqlx::PgPool, claims: &Claims) -> Result<(), ApiError> {
    let row: Option<(i16, bool)> = sqlx::query_as(
        "SELECT status, (tokens_valid_after IS NOT NULL \
           AND to_timestamp($2) <= tokens_valid_after) \
           OR EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = $3) \
         FROM users WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(claims.user_id)
    .bind(claims.iat as f64)
    .bind(&claims.jti)
    .fetch_optional(db)
    .await?;
    match row {
        Some((_, true)) => Err(ApiError::unauthorized("token revoked")),
        Some((1, false)) => Ok(()),
        Some(_) => Err(ApiError::forbidden("account disabled")),
        None => Err(ApiError::unauthorized("unknown user")),
    }
}

/// The core-NATS subject on which a change to what authenticates a user token is announced to
/// every process: a logout (`{"jti": …}`), a password change, a disabled or deleted account
/// (`{"user_id": …}`; a logout names its user too). Each process's [`TokenGate`] forgets what it
/// knew of them.
pub const AUTH_REVOKED_SUBJECT: &str = "mychat.auth.revoked";

/// An announcement on [`AUTH_REVOKED_SUBJECT`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Revoked {
    /// Every token of this user must be checked again (password change, account disabled or
    /// deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<i64>,
    /// This token (`jti`) is revoked (logout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// Announces `revoked` to every process ([`AUTH_REVOKED_SUBJECT`]), after the database change is
/// committed. A failed publish is logged: the gates' [`TokenGate::ttl`] still bounds how long a
/// process may go on trusting what it knew.
pub async fn announce_revoked(nats: &async_nats::Client, revoked: &Revoked) {
    let payload = serde_json::to_vec(revoked).unwrap_or_default();
    if let Err(e) = nats.publish(AUTH_REVOKED_SUBJECT, payload.into()).await {
        tracing::warn!(error = %e, ?revoked, "announcing a token revocation");
    }
    // Out now, not with the next batch of the connection's writes.
    let _ = nats.flush().await;
}

/// What a [`TokenGate`] knows of one token.
#[derive(Clone)]
struct Verdict {
    user_id: i64,
    /// `None`: good; else the refusal.
    refusal: Option<(u16, &'static str)>,
    /// The user's generation when this was read (a user announcement bumps it).
    generation: u64,
    read_at: std::time::Instant,
}

/// Authenticates user tokens without a database read per request: each process remembers, per
/// token (`jti`), what [`check_user_token`] answered, and forgets it when a revocation is
/// announced on [`AUTH_REVOKED_SUBJECT`] (a token: at once; a user: all of their tokens), when the
/// NATS connection comes back after a loss (announcements may have been missed), or after
/// [`TokenGate::ttl`] (a bound on a missed announcement). Cheap to clone.
#[derive(Clone)]
pub struct TokenGate {
    inner: std::sync::Arc<GateInner>,
}

struct GateInner {
    verdicts: std::sync::Mutex<lru::LruCache<String, Verdict>>,
    /// Per user, bumped by each announcement about them.
    generations: std::sync::Mutex<std::collections::HashMap<i64, u64>>,
    ttl: std::time::Duration,
}

impl TokenGate {
    /// How long a remembered answer is trusted without an announcement: 30 s.
    pub const DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(30);
    /// Tokens remembered (LRU).
    pub const CAPACITY: usize = 100_000;

    /// A gate that has not heard any announcement (use [`TokenGate::follow`] to hear them).
    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            inner: std::sync::Arc::new(GateInner {
                verdicts: std::sync::Mutex::new(lru::LruCache::new(
                    std::num::NonZeroUsize::new(Self::CAPACITY).expect("non-zero"),
                )),
                generations: std::sync::Mutex::default(),
                ttl,
            }),
        }
    }

    /// A gate that follows the announcements on `nats` (and forgets everything when the
    /// connection is re-established).
    ///
    /// # Errors
    /// When the subscription fails.
    pub async fn follow(
        nats: &async_nats::Client,
        ttl: std::time::Duration,
    ) -> anyhow::Result<Self> {
        use futures::StreamExt as _;
        let gate = Self::new(ttl);
        let mut sub = nats.subscribe(AUTH_REVOKED_SUBJECT).await?;
        let listener = gate.clone();
        let client = nats.clone();
        tokio::spawn(async move {
            let mut state = client.connection_state();
            let mut check = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tokio::select! {
                    m = sub.next() => match m {
                        Some(m) => match serde_json::from_slice::<Revoked>(&m.payload) {
                            Ok(r) => listener.revoke(&r),
                            Err(e) => tracing::warn!(error = %e, "undecodable revocation"),
                        },
                        None => return,
                    },
                    _ = check.tick() => {
                        let now = client.connection_state();
                        if now != state {
                            if now == async_nats::connection::State::Connected {
                                // Announcements sent while we were away are lost.
                                listener.forget_all();
                            }
                            state = now;
                        }
                    }
                }
            }
        });
        Ok(gate)
    }

    /// How long a remembered answer is trusted without an announcement.
    pub fn ttl(&self) -> std::time::Duration {
        self.inner.ttl
    }

    /// Applies `revoked` in this process at once, then announces it to every other
    /// ([`announce_revoked`]): the caller's next request, which may come back to this process
    /// before the announcement does, is refused.
    pub async fn revoke_everywhere(&self, nats: &async_nats::Client, revoked: &Revoked) {
        self.revoke(revoked);
        announce_revoked(nats, revoked).await;
    }

    /// Applies an announcement.
    pub fn revoke(&self, revoked: &Revoked) {
        if let Some(user_id) = revoked.user_id {
            *self
                .inner
                .generations
                .lock()
                .expect("gate lock")
                .entry(user_id)
                .or_default() += 1;
        }
        if let Some(jti) = &revoked.jti {
            self.inner.verdicts.lock().expect("gate lock").pop(jti);
        }
    }

    /// Forgets every remembered answer.
    pub fn forget_all(&self) {
        self.inner.verdicts.lock().expect("gate lock").clear();
    }

    fn generation(&self, user_id: i64) -> u64 {
        self.inner
            .generations
            .lock()
            .expect("gate lock")
            .get(&user_id)
            .copied()
            .unwrap_or(0)
    }

    /// [`check_user_token`], answered from memory when this process has asked about the token
    /// within [`TokenGate::ttl`] and heard no announcement about it or its user since.
    ///
    /// # Errors
    /// As [`check_user_token`].
    pub async fn check(&self, db: &sqlx::PgPool, claims: &Claims) -> Result<(), ApiError> {
        let generation = self.generation(claims.user_id);
        let known = self
            .inner
            .verdicts
            .lock()
            .expect("gate lock")
            .get(&claims.jti)
            .cloned();
        if let Some(v) = known {
            if v.user_id == claims.user_id
                && v.generation == generation
                && v.read_at.elapsed() < self.inner.ttl
            {
                return match v.refusal {
                    None => Ok(()),
                    Some((401, msg)) => Err(ApiError::unauthorized(msg)),
                    Some((_, msg)) => Err(ApiError::forbidden(msg)),
                };
            }
        }
        let read_at = std::time::Instant::now();
        let answer = check_user_token(db, claims).await;
        let refusal = match &answer {
            Ok(()) => None,
            Err(e) if e.status == StatusCode::UNAUTHORIZED && e.msg == "token revoked" => {
                Some((401, "token revoked"))
            }
            Err(e) if e.status == StatusCode::UNAUTHORIZED && e.msg == "unknown user" => {
                Some((401, "unknown user"))
            }
            Err(e) if e.status == StatusCode::FORBIDDEN => Some((403, "account disabled")),
            // A database error is not remembered.
            Err(_) => return answer,
        };
        // An announcement that arrived during the read makes it stale: do not remember it.
        if self.generation(claims.user_id) == generation {
            self.inner.verdicts.lock().expect("gate lock").put(
                claims.jti.clone(),
                Verdict {
                    user_id: claims.user_id,
                    refusal,
                    generation,
                    read_at,
                },
            );
        }
        answer
    }
}
