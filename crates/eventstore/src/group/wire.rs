//! The JetStream side of an append: the error codes the committer recognises, the publish
//! ack, an atomic batch's publishes and its ack, a plain publish with its expected sequence, and
//! telling a stale expected sequence's duplicate from a conflict by direct gets.

use std::time::Duration;

use async_nats::header::{
    NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
};
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use serde::Deserialize;

use crate::envelope::HDR_COMMAND_ID;

use super::commit::{CommitError, CommitOutcome, PendingCommit};

/// JetStream error code: `Nats-Expected-Last-Subject-Sequence` did not match.
pub const ERR_WRONG_LAST_SEQUENCE: u64 = 10071;

/// JetStream error code seen for a stale expected sequence on a subject repeated inside a batch.
pub const ERR_BATCH_WRONG_LAST_SEQUENCE: u64 = 10164;

/// JetStream error code: a message of the atomic batch carries an already stored `Nats-Msg-Id`.
pub const ERR_BATCH_DUPLICATE_MSG_ID: u64 = 10201;

#[derive(Debug, Deserialize)]
pub(crate) struct AckJson {
    #[serde(default)]
    pub(crate) error: Option<ApiErrorJson>,
    #[serde(default)]
    pub(crate) seq: u64,
    #[serde(default)]
    pub(crate) duplicate: bool,
    #[serde(default)]
    pub(crate) count: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ApiErrorJson {
    #[serde(default)]
    pub(crate) err_code: u64,
    #[serde(default)]
    pub(crate) description: String,
}

/// Publishes `messages` (subject, headers, body; at least one) as one atomic batch
/// `batch_id` (ADR-50: `Nats-Batch-Id`, `Nats-Batch-Sequence` from 1, `Nats-Batch-Commit: 1` on
/// the last, the only one JetStream acks) and returns the commit's ack. Shared by the command
/// path ([`GroupCommitter`]) and the chat path ([`crate::chat::ChatCommitter`]).
///
/// # Errors
/// When a message cannot be sent or the commit is not acknowledged in `timeout`; a refused batch
/// is an `Ok` ack whose `error` says why (nothing of it was stored).
///
/// [`GroupCommitter`]: crate::GroupCommitter
pub(crate) async fn publish_atomic_batch(
    client: &Client,
    stream_name: &str,
    messages: Vec<(String, HeaderMap, Bytes)>,
    batch_id: &str,
    timeout: Duration,
) -> Result<AckJson, CommitError> {
    let n = messages.len();
    for (i, (subject, mut headers, body)) in messages.into_iter().enumerate() {
        headers.insert(NATS_BATCH_ID, batch_id);
        headers.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
        if i + 1 < n {
            client
                .publish_with_headers(subject, headers, body)
                .await
                .map_err(|e| CommitError(e.to_string()))?;
        } else {
            headers.insert(NATS_BATCH_COMMIT, "1");
            return request(client, stream_name, &subject, headers, body, timeout).await;
        }
    }
    Err(CommitError(
        "an atomic batch needs at least one message".into(),
    ))
}

/// The stream sequence of the first of `n` messages an accepted atomic batch stored (they are
/// stored at consecutive sequences ending at the ack's).
///
/// # Errors
/// When the ack does not cover exactly `n` messages.
pub(crate) fn batch_first_sequence(ack: &AckJson, n: usize) -> Result<u64, CommitError> {
    let count = ack.count.unwrap_or(n as u64);
    if count != n as u64 || ack.seq < n as u64 {
        return Err(CommitError(format!(
            "batch ack for {count} of {n} messages"
        )));
    }
    Ok(ack.seq + 1 - n as u64)
}

pub(super) fn headers_for(commit: &PendingCommit) -> HeaderMap {
    let mut headers = commit.headers.clone();
    if let Some(expected) = commit.expected_last_sequence {
        headers.insert(
            NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
    }
    headers
}

pub(crate) async fn request(
    client: &Client,
    stream_name: &str,
    subject: &str,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<AckJson, CommitError> {
    let started = std::time::Instant::now();
    let reply = tokio::time::timeout(
        timeout,
        client.request_with_headers(subject.to_string(), headers, body),
    )
    .await;
    // JetStream publish latency (publish → ack, or → failure), seconds.
    let outcome = match &reply {
        Ok(Ok(_)) => "acked",
        Ok(Err(_)) => "error",
        Err(_) => "timeout",
    };
    metrics::histogram!(
        crate::METRIC_PUBLISH_SECONDS,
        "stream" => stream_name.to_string(),
        "outcome" => outcome
    )
    .record(started.elapsed().as_secs_f64());
    let reply = reply
        .map_err(|_| CommitError("timed out waiting for the JetStream ack".into()))?
        .map_err(|e| CommitError(e.to_string()))?;
    if reply.payload.is_empty() {
        return Err(CommitError(format!(
            "no JetStream ack for {subject} (status {:?})",
            reply.status
        )));
    }
    serde_json::from_slice(&reply.payload)
        .map_err(|e| CommitError(format!("undecodable JetStream ack: {e}")))
}

/// One plain publish (no group commit) to stream `stream_name`: the outcome of a single append.
///
/// # Errors
/// [`CommitError`] when JetStream did not answer or answered an unexpected error.
pub async fn write_single(
    client: &Client,
    stream: &Stream<()>,
    stream_name: &str,
    commit: &PendingCommit,
    timeout: Duration,
) -> Result<CommitOutcome, CommitError> {
    let ack = request(
        client,
        stream_name,
        &commit.subject,
        headers_for(commit),
        commit.body.clone(),
        timeout,
    )
    .await?;
    match ack.error {
        None if ack.duplicate => Ok(CommitOutcome::Duplicate { sequence: ack.seq }),
        None => Ok(CommitOutcome::Stored { sequence: ack.seq }),
        Some(e)
            if e.err_code == ERR_WRONG_LAST_SEQUENCE && commit.expected_last_sequence.is_some() =>
        {
            resolve_stale(stream, commit).await
        }
        Some(e) => Err(CommitError(format!(
            "JetStream error {}: {}",
            e.err_code, e.description
        ))),
    }
}

/// The stream sequence of `subject`'s last message (0 = none), by direct get.
pub(super) async fn last_sequence(stream: &Stream<()>, subject: &str) -> Result<u64, CommitError> {
    match stream.direct_get_last_for_subject(subject).await {
        Ok(m) => Ok(m.sequence),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(0),
        Err(e) => Err(CommitError(e.to_string())),
    }
}

/// A commit whose expected sequence is stale: a duplicate if a later message on its subject
/// carries its command id (nats-server 2.15 checks the expected sequence before the duplicate
/// window, so a retried commit whose first attempt landed arrives here), else a conflict.
pub(super) async fn resolve_stale(
    stream: &Stream<()>,
    commit: &PendingCommit,
) -> Result<CommitOutcome, CommitError> {
    let mut from = commit.expected_last_sequence.unwrap_or(0) + 1;
    loop {
        match stream
            .direct_get_next_for_subject(commit.subject.as_str(), Some(from))
            .await
        {
            Ok(message) => {
                let id = message
                    .headers
                    .get(HDR_COMMAND_ID)
                    .map(|v| v.as_str().to_string());
                if id.as_deref() == Some(commit.command_id.as_str()) {
                    return Ok(CommitOutcome::Duplicate {
                        sequence: message.sequence,
                    });
                }
                from = message.sequence + 1;
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => {
                return Ok(CommitOutcome::Conflict)
            }
            Err(e) => return Err(CommitError(e.to_string())),
        }
    }
}
