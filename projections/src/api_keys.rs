//! `api_keys`: the read model of the `ApiKey` aggregate (`ev.apikey.>`): the key list of the
//! admin API and what a node loads to authenticate a key (prefix → hash, scopes, expiry, rate).
//! Each key's events are on its own subject, in order; the row's `last_position` guards them.

use anyhow::Context as _;
use async_trait::async_trait;
use domain::ApiKeyEvent;
use sqlx::PgConnection;

use crate::runtime::{LogMessage, Projection};

/// The `api_keys` projection.
pub struct ApiKeys;

#[async_trait]
impl Projection for ApiKeys {
    fn name(&self) -> &'static str {
        "api_keys"
    }
    fn tables(&self) -> Vec<&'static str> {
        vec!["api_keys"]
    }
    fn subjects(&self) -> Vec<String> {
        vec!["ev.apikey.>".into()]
    }
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        for stored in message.event_refs()? {
            let event: ApiKeyEvent = crate::runtime::decode(&stored).with_context(|| {
                format!(
                    "unknown event {} v{} on {}",
                    stored.event_type, stored.event_version, message.subject
                )
            })?;
            let key = stored
                .aggregate_id_i64()
                .with_context(|| format!("api key id {} is not a number", stored.aggregate_id))?;
            let pos = stored.position();
            match event {
                ApiKeyEvent::ApiKeyIssued {
                    name,
                    scopes,
                    secret,
                    created_by,
                    expires_at,
                    rate_per_minute,
                    at,
                    ..
                } => {
                    sqlx::query(
                        "INSERT INTO api_keys (id, name, scopes, prefix, secret_hash, created_by, \
                         created_at, expires_at, rate_per_minute, last_position) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(key)
                    .bind(name)
                    .bind(scopes)
                    .bind(secret.prefix)
                    .bind(secret.hash)
                    .bind(created_by)
                    .bind(at)
                    .bind(expires_at)
                    .bind(rate_per_minute.map(|r| r as i32))
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                }
                ApiKeyEvent::ApiKeyRotated {
                    secret,
                    previous_valid_until,
                    at,
                    ..
                } => {
                    sqlx::query(
                        "UPDATE api_keys SET previous_prefix = prefix, previous_hash = secret_hash, \
                         previous_valid_until = $4, prefix = $2, secret_hash = $3, rotated_at = $5, \
                         last_position = $6 WHERE id = $1 AND last_position < $6",
                    )
                    .bind(key)
                    .bind(secret.prefix)
                    .bind(secret.hash)
                    .bind(previous_valid_until)
                    .bind(at)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                }
                ApiKeyEvent::ApiKeyRevoked { at, .. } => {
                    sqlx::query(
                        "UPDATE api_keys SET revoked_at = $2, last_position = $3 \
                         WHERE id = $1 AND last_position < $3",
                    )
                    .bind(key)
                    .bind(at)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        Ok(())
    }
}
