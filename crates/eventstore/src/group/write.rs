//! One write of a group: its appends as concurrent plain publishes or as one atomic batch, and
//! what a refused batch means for each of its appends (stale, retried, or sent one by one).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use async_nats::Client;
use tokio::sync::oneshot;

use super::commit::{CommitError, CommitOutcome, GroupCommitStats, PendingCommit};
use super::wire::{
    batch_first_sequence, headers_for, last_sequence, publish_atomic_batch, resolve_stale,
    write_single, ERR_BATCH_DUPLICATE_MSG_ID, ERR_BATCH_WRONG_LAST_SEQUENCE,
    ERR_WRONG_LAST_SEQUENCE,
};

pub(super) struct Job {
    pub(super) commit: PendingCommit,
    pub(super) reply: oneshot::Sender<Result<CommitOutcome, CommitError>>,
    /// Batches this commit was part of that failed (at 2, it goes out as a plain publish).
    pub(super) failures: u32,
    /// When it was handed to the committer.
    pub(super) queued: std::time::Instant,
}

pub(super) enum WriteResult {
    /// Each job settled (or to be re-queued).
    Done {
        settled: Vec<(Job, Result<CommitOutcome, CommitError>)>,
        retry: Vec<Job>,
    },
}

pub(super) async fn write_singles(
    client: Client,
    stream: Stream<()>,
    stream_name: Arc<str>,
    batch: Vec<Job>,
    timeout: Duration,
) -> WriteResult {
    let outcomes = futures::future::join_all(
        batch
            .iter()
            .map(|job| write_single(&client, &stream, &stream_name, &job.commit, timeout)),
    )
    .await;
    WriteResult::Done {
        settled: batch.into_iter().zip(outcomes).collect(),
        retry: Vec::new(),
    }
}

pub(super) async fn write_batch(
    client: Client,
    stream: Stream<()>,
    stream_name: Arc<str>,
    stats: Arc<GroupCommitStats>,
    mut batch: Vec<Job>,
    batch_id: String,
    timeout: Duration,
) -> WriteResult {
    let n = batch.len();
    if n == 0 {
        return WriteResult::Done {
            settled: Vec::new(),
            retry: Vec::new(),
        };
    }
    let messages = batch
        .iter()
        .map(|job| {
            (
                job.commit.subject.clone(),
                headers_for(&job.commit),
                job.commit.body.clone(),
            )
        })
        .collect();
    let ack = match publish_atomic_batch(&client, &stream_name, messages, &batch_id, timeout).await
    {
        Ok(ack) => ack,
        Err(e) => return fail_all(batch, e),
    };
    match ack.error {
        None => {
            let first = match batch_first_sequence(&ack, n) {
                Ok(first) => first,
                Err(e) => return fail_all(batch, e),
            };
            WriteResult::Done {
                settled: batch
                    .into_iter()
                    .enumerate()
                    .map(|(i, job)| {
                        (
                            job,
                            Ok(CommitOutcome::Stored {
                                sequence: first + i as u64,
                            }),
                        )
                    })
                    .collect(),
                retry: Vec::new(),
            }
        }
        Some(e)
            if e.err_code == ERR_WRONG_LAST_SEQUENCE
                || e.err_code == ERR_BATCH_WRONG_LAST_SEQUENCE =>
        {
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            // Which one? Read each subject's last sequence (direct gets, concurrently).
            let lasts = futures::future::join_all(
                batch
                    .iter()
                    .map(|job| last_sequence(&stream, &job.commit.subject)),
            )
            .await;
            let mut settled = Vec::new();
            let mut retry = Vec::new();
            let mut stale = Vec::new();
            for (mut job, last) in batch.drain(..).zip(lasts) {
                match (last, job.commit.expected_last_sequence) {
                    (_, None) => {
                        job.failures += 1;
                        retry.push(job);
                    }
                    (Ok(last), Some(expected)) if last != expected => stale.push(job),
                    (Ok(_), Some(_)) => {
                        job.failures += 1;
                        retry.push(job);
                    }
                    (Err(e), Some(_)) => settled.push((job, Err(e))),
                }
            }
            if stale.is_empty() {
                // Could not tell which: the next attempt sends them one by one.
                for job in &mut retry {
                    job.failures = job.failures.max(2);
                }
            }
            let outcomes = futures::future::join_all(
                stale.iter().map(|job| resolve_stale(&stream, &job.commit)),
            )
            .await;
            settled.extend(stale.into_iter().zip(outcomes));
            WriteResult::Done { settled, retry }
        }
        Some(e) if e.err_code == ERR_BATCH_DUPLICATE_MSG_ID => {
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            // Which command id is already stored is not reported: send them one by one, where
            // JetStream answers a duplicate with its first sequence.
            for job in &mut batch {
                job.failures = job.failures.max(2);
            }
            WriteResult::Done {
                settled: Vec::new(),
                retry: batch,
            }
        }
        Some(e) => {
            // Any other refusal: nothing of the batch was stored; each append goes out on its own
            // and gets JetStream's own answer.
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                stream = %stream_name,
                err_code = e.err_code,
                description = %e.description,
                "atomic batch refused; writing its messages one by one"
            );
            for job in &mut batch {
                job.failures = job.failures.max(2);
            }
            WriteResult::Done {
                settled: Vec::new(),
                retry: batch,
            }
        }
    }
}

fn fail_all(batch: Vec<Job>, e: CommitError) -> WriteResult {
    WriteResult::Done {
        settled: batch.into_iter().map(|j| (j, Err(e.clone()))).collect(),
        retry: Vec::new(),
    }
}
