//! Login rate limits: attempts per username and per client IP (governor's GCRA, in memory per
//! node), the same for the user login and the administrator login. A guessed password costs the
//! attacker the wait, not the account.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// Login attempts allowed per minute (burst = the same number).
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Per username.
    pub per_account_per_minute: u32,
    /// Per client IP address.
    pub per_ip_per_minute: u32,
}

impl Default for LoginLimits {
    /// 10 attempts a minute per username, 60 per client IP.
    fn default() -> Self {
        Self {
            per_account_per_minute: 10,
            per_ip_per_minute: 60,
        }
    }
}

/// The limiters of one login route (see the module documentation).
pub struct LoginLimiter {
    by_account: DefaultKeyedRateLimiter<String>,
    by_ip: DefaultKeyedRateLimiter<String>,
}

impl LoginLimiter {
    /// Limiters allowing `limits`.
    pub fn new(limits: LoginLimits) -> Self {
        let quota = |n: u32| Quota::per_minute(NonZeroU32::new(n.max(1)).expect("non-zero"));
        Self {
            by_account: RateLimiter::keyed(quota(limits.per_account_per_minute)),
            by_ip: RateLimiter::keyed(quota(limits.per_ip_per_minute)),
        }
    }

    /// Counts one login attempt for `username` from `ip`.
    ///
    /// # Errors
    /// 429 with the wait in seconds, naming which limit was hit.
    pub fn check(&self, username: &str, ip: &str) -> Result<(), ApiError> {
        use governor::clock::{Clock, DefaultClock};
        let clock = DefaultClock::default();
        let refuse = |what: &str, not_until: governor::NotUntil<governor::clock::QuantaInstant>| {
            let wait = not_until.wait_time_from(clock.now()).as_secs().max(1);
            ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                format!("too many login attempts for this {what}; retry in {wait} s"),
            )
        };
        // Keys are client-chosen: forget the idle ones before the maps grow large.
        if self.by_account.len() > 100_000 {
            self.by_account.retain_recent();
        }
        if self.by_ip.len() > 100_000 {
            self.by_ip.retain_recent();
        }
        self.by_ip
            .check_key(&ip.to_string())
            .map_err(|n| refuse("address", n))?;
        self.by_account
            .check_key(&username.to_lowercase())
            .map_err(|n| refuse("account", n))?;
        Ok(())
    }
}

/// The client's IP address: the TCP peer (`ConnectInfo`), `unknown` when the server was not
/// started with connect info. Forwarding headers are not trusted (they are client-controlled).
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string())
                .unwrap_or_else(|| "unknown".into()),
        ))
    }
}
