//! The command metadata of an HTTP request: who acts, which request caused it (correlation), and
//! whether the client made it idempotent.

use eventstore::{Actor, CommandMeta};

use crate::observe::{acceptable_request_id, REQUEST_ID};

/// The longest `Idempotency-Key` that becomes a command id, bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// The command metadata of a request by `actor`: the request's id (`X-Request-Id`, set by
/// [`crate::observe::request_id`]) is the correlation id, so the events the command causes carry
/// it in their envelopes; an `Idempotency-Key` header (1..=200 bytes) makes the command id
/// `idem:<actor>:<key>`, so a retried request is applied once (JetStream deduplicates by it).
pub fn request_meta(headers: &axum::http::HeaderMap, actor: Actor) -> CommandMeta {
    let mut meta = CommandMeta::new(actor);
    if let Some(id) = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable_request_id(v))
    {
        meta.correlation_id = id.to_string();
    }
    if let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        if !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY {
            meta.command_id = format!("idem:{}:{key}", meta.actor);
        }
    }
    meta
}
