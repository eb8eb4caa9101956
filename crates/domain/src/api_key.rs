//! The `ApiKey` aggregate (`ev.apikey.<key_id>`): a machine client's credential for the admin
//! API (seed 003: API keys with scopes, expiry and last use). Issued, rotated and revoked as
//! events, so who could do what, when, is in the log like every other decision.
//!
//! The secret itself never reaches the domain: the API generates it, shows it once, and passes
//! only its public prefix (how a presented key is found) and its hash (how it is verified) in
//! the command. A rotation issues a new secret and keeps the previous one valid for exactly the
//! grace period; a revocation ends both at once. Scopes are RBAC permission codes
//! (`finance:view`, `audit:replay`, …): the domain checks their form, the API checks that the
//! issuer holds each one.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::{Timestamp, EVENT_VERSION};

/// The longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// The most scopes a key may carry.
pub const MAX_SCOPES: usize = 64;
/// The longest rotation grace, in seconds (7 days).
pub const MAX_GRACE_SECONDS: i64 = 7 * 24 * 3600;
/// The highest per-key rate limit, in requests per minute.
pub const MAX_RATE_PER_MINUTE: u32 = 100_000;

/// One secret of a key: its public prefix and the hash of the whole key (PHC string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySecret {
    /// The key's public part, shown in lists and used to find the key (unique).
    pub prefix: String,
    /// The hash of the whole presented key; never the key itself.
    pub hash: String,
}

/// The `ApiKey` aggregate's state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub key_id: i64,
    pub name: String,
    pub scopes: Vec<String>,
    /// The administrator who issued it.
    pub created_by: i64,
    pub created_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub rate_per_minute: Option<u32>,
    pub current: Option<KeySecret>,
    /// The secret replaced by the last rotation, valid until `previous_valid_until`.
    pub previous: Option<KeySecret>,
    pub previous_valid_until: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// Commands on an `ApiKey`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ApiKeyCommand {
    /// Issues the key.
    Issue {
        key_id: i64,
        name: String,
        scopes: Vec<String>,
        secret: KeySecret,
        created_by: i64,
        /// `None`: never expires; otherwise later than `at`.
        expires_at: Option<Timestamp>,
        /// `None`: no per-key limit.
        rate_per_minute: Option<u32>,
        at: Timestamp,
    },
    /// Replaces the secret; the old one stays valid for `grace_seconds` (0..=7 days).
    Rotate {
        by: i64,
        secret: KeySecret,
        grace_seconds: i64,
        at: Timestamp,
    },
    /// Revokes the key (both secrets); revoking again writes nothing.
    Revoke { by: i64, at: Timestamp },
}

/// Events of an `ApiKey`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ApiKeyEvent {
    ApiKeyIssued {
        key_id: i64,
        name: String,
        scopes: Vec<String>,
        secret: KeySecret,
        created_by: i64,
        expires_at: Option<Timestamp>,
        rate_per_minute: Option<u32>,
        at: Timestamp,
    },
    ApiKeyRotated {
        by: i64,
        secret: KeySecret,
        /// The replaced secret's prefix, valid until `previous_valid_until`.
        previous_prefix: String,
        previous_valid_until: Timestamp,
        at: Timestamp,
    },
    ApiKeyRevoked {
        by: i64,
        at: Timestamp,
    },
}

impl DomainEvent for ApiKeyEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ApiKeyIssued { .. } => "ApiKeyIssued",
            Self::ApiKeyRotated { .. } => "ApiKeyRotated",
            Self::ApiKeyRevoked { .. } => "ApiKeyRevoked",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION.to_string()
    }
}

/// Why an API key command was refused. `Display` is the text clients show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("api key not found")]
    NotFound,
    #[error("api key already exists")]
    AlreadyIssued,
    #[error("api key has been revoked")]
    Revoked,
    #[error("api key has expired")]
    Expired,
    /// A field is invalid: `field` on the wire, and why.
    #[error("{field}: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
}

fn invalid(field: &'static str, reason: &'static str) -> ApiKeyError {
    ApiKeyError::Invalid { field, reason }
}

/// Whether `code` has the form of a permission code: `area:action`, lowercase letters, digits,
/// `_` and `-` on each side.
pub fn is_scope(code: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    matches!(code.split_once(':'), Some((area, action)) if ok(area) && ok(action))
}

fn check_secret(secret: &KeySecret) -> Result<(), ApiKeyError> {
    if secret.prefix.is_empty() || secret.prefix.len() > 32 {
        return Err(invalid("prefix", "1 to 32 characters"));
    }
    if secret.hash.is_empty() {
        return Err(invalid("hash", "must not be empty"));
    }
    Ok(())
}

impl ApiKey {
    /// Whether the key was issued and is neither revoked nor expired at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.current.is_some()
            && self.revoked_at.is_none()
            && self.expires_at.is_none_or(|e| now < e)
    }

    /// The hash to verify a key presented with `prefix` against at `now`: the current secret's
    /// while the key is active, the previous one's until its grace ends. `None`: no such valid
    /// secret (unknown prefix, revoked, expired, grace over).
    pub fn hash_for(&self, prefix: &str, now: Timestamp) -> Option<&str> {
        if !self.is_active(now) {
            return None;
        }
        if let Some(current) = self.current.as_ref().filter(|s| s.prefix == prefix) {
            return Some(&current.hash);
        }
        match (&self.previous, self.previous_valid_until) {
            (Some(previous), Some(until)) if previous.prefix == prefix && now < until => {
                Some(&previous.hash)
            }
            _ => None,
        }
    }

    fn live(&self, at: Timestamp) -> Result<&KeySecret, ApiKeyError> {
        let current = self.current.as_ref().ok_or(ApiKeyError::NotFound)?;
        if self.revoked_at.is_some() {
            return Err(ApiKeyError::Revoked);
        }
        if self.expires_at.is_some_and(|e| at >= e) {
            return Err(ApiKeyError::Expired);
        }
        Ok(current)
    }
}

impl Aggregate for ApiKey {
    const TYPE: &'static str = "apikey";
    type Command = ApiKeyCommand;
    type Event = ApiKeyEvent;
    type Error = ApiKeyError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ApiKeyCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ApiKeyError> {
        let event = match command {
            ApiKeyCommand::Issue {
                key_id,
                name,
                scopes,
                secret,
                created_by,
                expires_at,
                rate_per_minute,
                at,
            } => {
                if self.current.is_some() {
                    return Err(ApiKeyError::AlreadyIssued);
                }
                let name = name.trim().to_string();
                if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
                    return Err(invalid("name", "1 to 64 characters"));
                }
                if scopes.is_empty() || scopes.len() > MAX_SCOPES {
                    return Err(invalid("scopes", "1 to 64 permission codes"));
                }
                if !scopes.iter().all(|s| is_scope(s)) {
                    return Err(invalid("scopes", "permission codes look like area:action"));
                }
                let mut unique: Vec<String> = Vec::with_capacity(scopes.len());
                for s in scopes {
                    if !unique.contains(&s) {
                        unique.push(s);
                    }
                }
                check_secret(&secret)?;
                if expires_at.is_some_and(|e| e <= at) {
                    return Err(invalid("expires_at", "must be in the future"));
                }
                if rate_per_minute.is_some_and(|r| r == 0 || r > MAX_RATE_PER_MINUTE) {
                    return Err(invalid("rate_per_minute", "1 to 100000 requests a minute"));
                }
                ApiKeyEvent::ApiKeyIssued {
                    key_id,
                    name,
                    scopes: unique,
                    secret,
                    created_by,
                    expires_at,
                    rate_per_minute,
                    at,
                }
            }
            ApiKeyCommand::Rotate {
                by,
                secret,
                grace_seconds,
                at,
            } => {
                let current = self.live(at)?;
                if !(0..=MAX_GRACE_SECONDS).contains(&grace_seconds) {
                    return Err(invalid("grace_seconds", "0 to 604800 seconds"));
                }
                check_secret(&secret)?;
                if secret.prefix == current.prefix {
                    return Err(invalid("prefix", "a rotation issues a new prefix"));
                }
                ApiKeyEvent::ApiKeyRotated {
                    by,
                    previous_prefix: current.prefix.clone(),
                    previous_valid_until: at + chrono::Duration::seconds(grace_seconds),
                    secret,
                    at,
                }
            }
            ApiKeyCommand::Revoke { by, at } => {
                if self.current.is_none() {
                    return Err(ApiKeyError::NotFound);
                }
                if self.revoked_at.is_some() {
                    return Ok(());
                }
                ApiKeyEvent::ApiKeyRevoked { by, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: ApiKeyEvent) {
        match event {
            ApiKeyEvent::ApiKeyIssued {
                key_id,
                name,
                scopes,
                secret,
                created_by,
                expires_at,
                rate_per_minute,
                at,
            } => {
                self.key_id = key_id;
                self.name = name;
                self.scopes = scopes;
                self.current = Some(secret);
                self.created_by = created_by;
                self.created_at = Some(at);
                self.expires_at = expires_at;
                self.rate_per_minute = rate_per_minute;
            }
            ApiKeyEvent::ApiKeyRotated {
                secret,
                previous_valid_until,
                ..
            } => {
                self.previous = self.current.replace(secret);
                self.previous_valid_until = Some(previous_valid_until);
            }
            ApiKeyEvent::ApiKeyRevoked { at, .. } => self.revoked_at = Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<ApiKey>;

    fn at() -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn secret(prefix: &str) -> KeySecret {
        KeySecret {
            prefix: prefix.into(),
            hash: format!("$argon2id$…{prefix}"),
        }
    }

    fn issued() -> ApiKeyEvent {
        ApiKeyEvent::ApiKeyIssued {
            key_id: 5,
            name: "finance export".into(),
            scopes: vec!["finance:view".into(), "finance:reconcile".into()],
            secret: secret("mk_a1"),
            created_by: 1,
            expires_at: Some(at() + Duration::days(30)),
            rate_per_minute: Some(600),
            at: at(),
        }
    }

    fn issue(scopes: &[&str], expires_at: Option<Timestamp>) -> ApiKeyCommand {
        ApiKeyCommand::Issue {
            key_id: 5,
            name: " finance export ".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            secret: secret("mk_a1"),
            created_by: 1,
            expires_at,
            rate_per_minute: Some(600),
            at: at(),
        }
    }

    fn key(events: Vec<ApiKeyEvent>) -> ApiKey {
        let mut k = ApiKey::default();
        for e in events {
            k.apply(e);
        }
        k
    }

    #[test]
    fn a_key_is_issued_once_with_valid_scopes_and_a_future_expiry() {
        Given::with(())
            .given_no_previous_events()
            .when(issue(
                &["finance:view", "finance:reconcile", "finance:view"],
                Some(at() + Duration::days(30)),
            ))
            .then_expect_events(vec![issued()]);
        Given::with(())
            .given(vec![issued()])
            .when(issue(&["finance:view"], None))
            .then_expect_error(ApiKeyError::AlreadyIssued);
        Given::with(())
            .given_no_previous_events()
            .when(issue(&[], None))
            .then_expect_error(invalid("scopes", "1 to 64 permission codes"));
        Given::with(())
            .given_no_previous_events()
            .when(issue(&["Finance View"], None))
            .then_expect_error(invalid("scopes", "permission codes look like area:action"));
        Given::with(())
            .given_no_previous_events()
            .when(issue(&["finance:view"], Some(at())))
            .then_expect_error(invalid("expires_at", "must be in the future"));
    }

    #[test]
    fn a_rotation_keeps_the_old_secret_for_exactly_the_grace() {
        let rotated = ApiKeyEvent::ApiKeyRotated {
            by: 1,
            secret: secret("mk_b2"),
            previous_prefix: "mk_a1".into(),
            previous_valid_until: at() + Duration::seconds(60),
            at: at(),
        };
        Given::with(())
            .given(vec![issued()])
            .when(ApiKeyCommand::Rotate {
                by: 1,
                secret: secret("mk_b2"),
                grace_seconds: 60,
                at: at(),
            })
            .then_expect_events(vec![rotated.clone()]);
        let k = key(vec![issued(), rotated]);
        let just_before = at() + Duration::seconds(59);
        assert_eq!(k.hash_for("mk_a1", just_before), Some("$argon2id$…mk_a1"));
        assert_eq!(k.hash_for("mk_a1", at() + Duration::seconds(60)), None);
        assert_eq!(
            k.hash_for("mk_b2", at() + Duration::days(1)),
            Some("$argon2id$…mk_b2")
        );
        Given::with(())
            .given(vec![issued()])
            .when(ApiKeyCommand::Rotate {
                by: 1,
                secret: secret("mk_b2"),
                grace_seconds: MAX_GRACE_SECONDS + 1,
                at: at(),
            })
            .then_expect_error(invalid("grace_seconds", "0 to 604800 seconds"));
    }

    #[test]
    fn revocation_and_expiry_end_every_secret() {
        let revoked = ApiKeyEvent::ApiKeyRevoked { by: 1, at: at() };
        Given::with(())
            .given(vec![issued()])
            .when(ApiKeyCommand::Revoke { by: 1, at: at() })
            .then_expect_events(vec![revoked.clone()]);
        Given::with(())
            .given(vec![issued(), revoked.clone()])
            .when(ApiKeyCommand::Revoke { by: 1, at: at() })
            .then_expect_events(vec![]);
        Given::with(())
            .given(vec![issued(), revoked.clone()])
            .when(ApiKeyCommand::Rotate {
                by: 1,
                secret: secret("mk_c3"),
                grace_seconds: 0,
                at: at(),
            })
            .then_expect_error(ApiKeyError::Revoked);
        assert_eq!(key(vec![issued(), revoked]).hash_for("mk_a1", at()), None);
        let k = key(vec![issued()]);
        assert!(k.is_active(at() + Duration::days(29)));
        assert_eq!(k.hash_for("mk_a1", at() + Duration::days(30)), None);
        Given::with(())
            .given(vec![issued()])
            .when(ApiKeyCommand::Rotate {
                by: 1,
                secret: secret("mk_c3"),
                grace_seconds: 0,
                at: at() + Duration::days(31),
            })
            .then_expect_error(ApiKeyError::Expired);
        Given::with(())
            .given_no_previous_events()
            .when(ApiKeyCommand::Revoke { by: 1, at: at() })
            .then_expect_error(ApiKeyError::NotFound);
    }

    #[test]
    fn scopes_have_the_form_of_permission_codes() {
        assert!(is_scope("finance:view"));
        assert!(is_scope("audit:replay"));
        assert!(is_scope("apikey:manage"));
        assert!(!is_scope("finance"));
        assert!(!is_scope(":view"));
        assert!(!is_scope("finance:"));
        assert!(!is_scope("Finance:View"));
        assert!(!is_scope("finance:view:all"));
    }
}
