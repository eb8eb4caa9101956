//! Authentication: HS256 JWTs (jsonwebtoken), argon2 password hashes, the [`AuthUser`] extractor
//! that turns `Authorization: Bearer <token>` into a caller, the per-process [`TokenGate`] that
//! knows which tokens were revoked (announced over NATS), and the login rate limits.
//!
//! Tokens follow MyChat's (contract a.2): claims `user_id`, `username`, `exp`, `iat`, `nbf`, plus
//! `kind` (`user` or `admin`) so that a user token is refused on admin routes, and `jti`.
//! Lifetime: 24 h by default (the MyChat clients have no refresh flow).

mod login_limit;
mod token_gate;

pub use login_limit::{ClientIp, LoginLimiter, LoginLimits};
pub use token_gate::{
    announce_revoked, check_user_token, Revoked, TokenGate, AUTH_REVOKED_SUBJECT,
};

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

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

/// What authenticating a user token needs from a service's state: the keys that verify it, the
/// token gate that knows revocations, and the database the gate asks on a miss.
pub trait UserTokens {
    /// The keys tokens are verified with.
    fn jwt(&self) -> &JwtKeys;
    /// This process's token gate.
    fn token_gate(&self) -> &TokenGate;
    /// The database holding users and revocations.
    fn db(&self) -> &sqlx::PgPool;
}

impl<S: UserTokens + Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    #[tracing::instrument(level = "debug", name = "authenticate", skip_all)]
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let token =
            bearer_token(parts).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let claims = state.jwt().verify(&token)?;
        if claims.kind != KIND_USER {
            return Err(ApiError::forbidden("a user token is required"));
        }
        state.token_gate().check(state.db(), &claims).await?;
        Ok(Self {
            user_id: claims.user_id,
            username: claims.username,
            jti: claims.jti,
            expires_at: claims.exp,
        })
    }
}
