//! Applying a batch: in one Postgres transaction with the checkpoint it moves, skipping the
//! messages an operator skipped, and telling a poison message ([`BatchError::Poison`]) from a
//! transient failure that is retried from the checkpoint.

use async_nats::jetstream::{self};
use sqlx::PgConnection;

use super::checkpoint::{checkpoint_cas, moved_under_worker};
use super::projection::{correlation_of, FailedAt, LogMessage, Projection};
use super::schema::schema_ident;

/// Why a batch was not applied.
#[derive(Debug)]
pub enum BatchError {
    /// The message at `stream_sequence` fails to apply: the projection stops there until an
    /// operator fixes the cause or skips it (`mychat projections skip`).
    Poison {
        stream_sequence: u64,
        subject: String,
        cause: anyhow::Error,
    },
    /// Postgres or NATS unavailable, a serialization failure, or the checkpoint moved under this
    /// worker: retried from the checkpoint.
    Transient(anyhow::Error),
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Poison {
                stream_sequence,
                subject,
                cause,
            } => write!(
                f,
                "poison event at stream sequence {stream_sequence} ({subject}): {cause:#}"
            ),
            Self::Transient(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for BatchError {}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        Self::Transient(e.into())
    }
}

/// Whether an error comes from the infrastructure (retry) rather than from the event (poison):
/// a lost or refused connection, a pool timeout, or a Postgres error of class 08 (connection),
/// 40 (transaction rollback: serialization failure, deadlock), 53 (resources), 55 (lock not
/// available) or 57 (operator intervention: shutdown, restart).
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|cause| match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Database(db)) => db.code().is_some_and(|c| {
                ["08", "40", "53", "55", "57"]
                    .iter()
                    .any(|p| c.starts_with(p))
            }),
            Some(
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_),
            ) => true,
            _ => false,
        })
}

/// Applies `batch` inside `tx` into `schema` and moves `name`'s checkpoint there from
/// `position` to the batch's last stream sequence with a compare-and-set. Messages whose stream
/// sequence is in `skips` are not applied (an operator's recorded decision), nor are the ones the projection
/// [ignores](Projection::ignores). The transaction's
/// `search_path` stays `<schema>, public` until it ends (`SET LOCAL`): statements the caller adds
/// to it name their schema.
///
/// # Errors
/// [`BatchError::Poison`] naming the message that fails to apply (the transaction is then
/// unusable: roll it back); [`BatchError::Transient`] otherwise, also when the checkpoint is no
/// longer at `position` (another worker moved it).
pub async fn apply_in_tx(
    tx: &mut PgConnection,
    projection: &dyn Projection,
    schema: &str,
    position: u64,
    batch: &[LogMessage],
    skips: &std::collections::BTreeSet<u64>,
) -> Result<u64, BatchError> {
    apply_opening(tx, "", projection, schema, position, batch, skips).await
}

/// [`apply_in_tx`] whose first round trip also carries `opening` (statements ending in `;`,
/// e.g. `BEGIN; SET LOCAL synchronous_commit TO off;`): the live projector opens its
/// transaction with it, so a batch costs three round trips (opening and checkpoint, the
/// projection's statements, `COMMIT`).
///
/// The checkpoint's compare-and-set runs first, in that round trip: it takes the checkpoint
/// row's lock before any read-model write, so a second worker on the same projection waits for
/// the first and then finds the checkpoint moved (nothing applied twice). The savepoint the
/// message-by-message retry rolls back to comes after it.
///
/// # Errors
/// As [`apply_in_tx`].
pub(crate) async fn apply_opening(
    tx: &mut PgConnection,
    opening: &str,
    projection: &dyn Projection,
    schema: &str,
    position: u64,
    batch: &[LogMessage],
    skips: &std::collections::BTreeSet<u64>,
) -> Result<u64, BatchError> {
    let name = projection.name();
    let s = schema_ident(schema).map_err(BatchError::Transient)?;
    let last = batch.last().map_or(position, |m| m.stream_sequence);
    // One round trip (a simple query may hold several statements).
    let open = format!(
        "{opening}SET LOCAL search_path TO {s}, public; {cas}; SAVEPOINT mychat_batch",
        cas = checkpoint_cas(schema, projection, position, last)?
    );
    let moved = sqlx::Executor::execute(&mut *tx, open.as_str())
        .await?
        .rows_affected();
    if let Some(e) = moved_under_worker(name, moved) {
        return Err(e);
    }
    let dropped = |m: &LogMessage| skips.contains(&m.stream_sequence) || m.ignored_by(projection);
    let kept: std::borrow::Cow<'_, [LogMessage]> = if batch.iter().any(dropped) {
        for m in batch.iter().filter(|m| skips.contains(&m.stream_sequence)) {
            tracing::warn!(
                projection = name,
                stream_sequence = m.stream_sequence,
                "skipping the message by the operator's recorded decision"
            );
        }
        batch
            .iter()
            .filter(|m| !dropped(m))
            .cloned()
            .collect::<Vec<_>>()
            .into()
    } else {
        batch.into()
    };
    if !kept.is_empty() {
        apply_messages(tx, projection, &kept).await?;
    }
    Ok(last)
}

/// Applies `messages` with [`Projection::apply_batch`] behind the savepoint `mychat_batch` (set by
/// [`apply_in_tx`]). When the batch fails
/// for a reason other than the infrastructure, it is rolled back to the savepoint and applied
/// again message by message with [`Projection::apply`]: the first message that fails is the
/// poison event, named by its own stream sequence and cause. (If every message then applies,
/// the batched code was at fault: the message-by-message result stands, and a warning is logged.)
async fn apply_messages(
    tx: &mut PgConnection,
    projection: &dyn Projection,
    messages: &[LogMessage],
) -> Result<(), BatchError> {
    let name = projection.name();
    // Each event's correlation id in the projector's log (read from the commit only
    // when debug logs of the projectors are on, or when a message fails).
    if tracing::enabled!(tracing::Level::DEBUG) {
        for message in messages {
            tracing::debug!(
                projection = name,
                stream_sequence = message.stream_sequence,
                subject = %message.subject,
                correlation_id = correlation_of(message).unwrap_or_default(),
                "applying"
            );
        }
    }
    let cause = match projection.apply_batch(&mut *tx, messages).await {
        Ok(()) => return Ok(()),
        Err(cause) if is_transient(&cause) => return Err(BatchError::Transient(cause)),
        Err(cause) => match cause.downcast_ref::<FailedAt>().cloned() {
            // Applied message by message already: the failing message is known.
            Some(at) => {
                return Err(BatchError::Poison {
                    stream_sequence: at.stream_sequence,
                    subject: at.subject,
                    cause,
                })
            }
            None => cause,
        },
    };
    sqlx::query("ROLLBACK TO SAVEPOINT mychat_batch")
        .execute(&mut *tx)
        .await?;
    for message in messages {
        if let Err(cause) = projection.apply(&mut *tx, message).await {
            if is_transient(&cause) {
                return Err(BatchError::Transient(cause));
            }
            tracing::warn!(
                projection = name,
                stream_sequence = message.stream_sequence,
                correlation_id = correlation_of(message).unwrap_or_default(),
                error = format!("{cause:#}"),
                "the message fails to apply"
            );
            return Err(BatchError::Poison {
                stream_sequence: message.stream_sequence,
                subject: message.subject.clone(),
                cause,
            });
        }
    }
    tracing::warn!(
        projection = name,
        first = messages.first().map(|m| m.stream_sequence),
        last = messages.last().map(|m| m.stream_sequence),
        error = format!("{cause:#}"),
        "the batched apply failed but every message applied on its own; kept the \
         message-by-message result"
    );
    Ok(())
}

/// The stream sequences an operator decided to skip for `projection`: the
/// `ProjectionEventSkipped` events on `ev.projection.<name>` ([`crate::control`]).
///
/// # Errors
/// On a NATS error.
pub async fn load_skips(
    js: &jetstream::Context,
    projection: &str,
) -> anyhow::Result<std::collections::BTreeSet<u64>> {
    let mut skips = std::collections::BTreeSet::new();
    for event in crate::control::skip_events(js, projection).await? {
        skips.insert(event.stream_sequence);
    }
    Ok(skips)
}
