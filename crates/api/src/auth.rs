//! Authentication: HS256 JWTs (jsonwebtoken), argon2 password hashes, and the extractors that
//! turn a `Authorization: Bearer <token>` header into a caller.
//!
//! Tokens follow MyChat's (contract a.2): claims `user_id`, `username`, `exp`, `iat`, `nbf`, plus
//! `kind` (`user` or `admin`) so that a user token is refused on admin routes, and `jti`.
//! Lifetime: 24 h by default (the MyChat clients have no refresh flow).

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::AppState;

/// Who a token was issued to.
pub const KIND_USER: &str = "user";
/// See [`KIND_USER`].
pub const KIND_ADMIN: &str = "admin";

/// The JWT claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// users.id for a user token, administrators.id for an admin token (as MyChat did).
    pub user_id: i64,
    pub username: String,
    /// `user` or `admin`.
    pub kind: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    /// Token id.
    pub jti: String,
}

/// Signs and verifies tokens with one HS256 secret.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Token lifetime in seconds.
    pub ttl_seconds: i64,
}

impl JwtKeys {
    /// Keys from `secret` (at least 32 bytes recommended) and a lifetime in seconds.
    pub fn new(secret: &[u8], ttl_seconds: i64) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl_seconds,
        }
    }

    /// Issues a token.
    ///
    /// # Errors
    /// Only if signing fails (it does not for HS256).
    pub fn issue(&self, user_id: i64, username: &str, kind: &str) -> anyhow::Result<String> {
        self.issue_at(user_id, username, kind, chrono::Utc::now().timestamp())
    }

    /// Issues a token whose `iat` is `now` (unix seconds).
    ///
    /// # Errors
    /// Only if signing fails (it does not for HS256).
    pub fn issue_at(
        &self,
        user_id: i64,
        username: &str,
        kind: &str,
        now: i64,
    ) -> anyhow::Result<String> {
        let claims = Claims {
            user_id,
            username: username.to_string(),
            kind: kind.to_string(),
            exp: now + self.ttl_seconds,
            iat: now,
            nbf: now - 5,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        Ok(encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// Verifies a token's signature (HS256 only: `alg: none` and other algorithms are refused),
    /// expiry and not-before.
    ///
    /// # Errors
    /// [`ApiError`] 401 for any invalid token.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        validation.leeway = 5;
        decode::<Claims>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| ApiError::unauthorized(format!("invalid token: {e}")))
    }
}

/// Hashes a password with argon2id (default parameters) on a blocking thread.
///
/// # Errors
/// Only on an internal hashing failure.
pub async fn hash_password(password: &str) -> anyhow::Result<String> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing: {e}"))
    })
    .await?
}

/// Checks a password against an argon2 hash on a blocking thread. A malformed hash is a mismatch.
pub async fn verify_password(password: &str, hash: &str) -> bool {
    let (password, hash) = (password.to_string(), hash.to_string());
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// The bearer token of a request: `Authorization: Bearer <token>`, else `?token=` (WebSocket).
pub fn bearer_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        return value.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    parts.uri.query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v.to_string())
    })
}

/// A caller holding a valid user token whose account is enabled (`status = 1`) and that was not
/// revoked (logout: `revoked_tokens`; password change: `users.tokens_valid_after`).
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: i64,
    pub username: String,
    /// The token's id (`jti`).
    pub jti: String,
    /// The token's expiry, unix seconds.
    pub expires_at: i64,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    #[tracing::instrument(level = "debug", name = "authenticate", skip_all)]
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token =
            bearer_token(parts).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let claims = state.jwt.verify(&token)?;
        if claims.kind != KIND_USER {
            return Err(ApiError::forbidden("a user token is required"));
        }
        state.tokens.check(&state.db, &claims).await?;
        Ok(Self {
            user_id: claims.user_id,
            username: claims.username,
            jti: claims.jti,
            expires_at: claims.exp,
        })
    }
}

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

/// A caller holding a valid admin token whose administrator account is enabled. A user token is
/// refused with 403.
#[derive(Debug, Clone)]
pub struct AuthAdmin {
    pub admin_id: i64,
    pub username: String,
    pub role: String,
}

impl FromRequestParts<AppState> for AuthAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token =
            bearer_token(parts).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let claims = state.jwt.verify(&token)?;
        if claims.kind != KIND_ADMIN {
            return Err(ApiError::forbidden("an administrator token is required"));
        }
        let row: Option<(i16, String)> =
            sqlx::query_as("SELECT status, role FROM administrators WHERE id = $1")
                .bind(claims.user_id)
                .fetch_optional(&state.db)
                .await?;
        match row {
            Some((1, role)) => Ok(Self {
                admin_id: claims.user_id,
                username: claims.username,
                role,
            }),
            Some(_) => Err(ApiError::forbidden("administrator disabled")),
            None => Err(ApiError::unauthorized("unknown administrator")),
        }
    }
}
