//! What placing an order needs to know of its counselor (price per minute, availability, the
//! counselor's own login), remembered per process instead of read per order.
//!
//! Counselors are reference data (plain PostgreSQL, changed by administrators). Every change of a
//! counselor is announced on core NATS ([`COUNSELOR_CHANGED_SUBJECT`], `{"id": …}`) by the code
//! that commits it, and each process's [`CounselorTerms`] forgets that counselor at once; it also
//! forgets everything when its NATS connection comes back (announcements may have been missed)
//! and trusts a remembered row for at most [`CounselorTerms::TTL`].

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// The core-NATS subject on which a committed change of a counselor is announced.
pub const COUNSELOR_CHANGED_SUBJECT: &str = "mychat.counselor.changed";

/// An announcement on [`COUNSELOR_CHANGED_SUBJECT`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CounselorChanged {
    /// The counselor's id (`counselors.id`).
    pub id: i64,
}

/// A counselor's terms for a new order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// Price per minute, fen.
    pub price_fen: i64,
    /// `counselors.status`: 1 = available.
    pub status: i16,
    /// The counselor's own login (`users.id`), if they have one.
    pub user_id: Option<i64>,
}

struct Entry {
    terms: Option<Terms>,
    read_at: Instant,
}

struct Inner {
    rows: Mutex<lru::LruCache<i64, Entry>>,
    /// Bumped by every announcement (and by a reconnect): a read that overlapped one is not kept.
    generation: std::sync::atomic::AtomicU64,
}

/// The per-process cache of [`Terms`]. Cheap to clone.
#[derive(Clone)]
pub struct CounselorTerms {
    inner: Arc<Inner>,
}

impl CounselorTerms {
    /// How long a remembered row is trusted without an announcement.
    pub const TTL: Duration = Duration::from_secs(5);
    /// Counselors remembered (LRU).
    pub const CAPACITY: usize = 10_000;

    /// A cache that follows the announcements on `nats`.
    ///
    /// # Errors
    /// When the subscription fails.
    pub async fn follow(nats: &async_nats::Client) -> anyhow::Result<Self> {
        use futures::StreamExt as _;
        let this = Self {
            inner: Arc::new(Inner {
                rows: Mutex::new(lru::LruCache::new(
                    NonZeroUsize::new(Self::CAPACITY).expect("non-zero"),
                )),
                generation: Default::default(),
            }),
        };
        let mut sub = nats.subscribe(COUNSELOR_CHANGED_SUBJECT).await?;
        let (listener, client) = (this.clone(), nats.clone());
        tokio::spawn(async move {
            let mut state = client.connection_state();
            let mut check = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    m = sub.next() => match m {
                        Some(m) => match serde_json::from_slice::<CounselorChanged>(&m.payload) {
                            Ok(c) => listener.forget(Some(c.id)),
                            Err(e) => tracing::warn!(error = %e, "undecodable counselor announcement"),
                        },
                        None => return,
                    },
                    _ = check.tick() => {
                        let now = client.connection_state();
                        if now != state {
                            if now == async_nats::connection::State::Connected {
                                listener.forget(None);
                            }
                            state = now;
                        }
                    }
                }
            }
        });
        Ok(this)
    }

    /// Forgets counselor `id` in this process at once, then announces the change to every other
    /// ([`announce_changed`]).
    pub async fn forget_everywhere(&self, nats: &async_nats::Client, id: i64) {
        self.forget(Some(id));
        announce_changed(nats, id).await;
    }

    /// Forgets counselor `id` (`None`: every counselor).
    pub fn forget(&self, id: Option<i64>) {
        self.inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut rows = self.inner.rows.lock().expect("counselor cache lock");
        match id {
            Some(id) => {
                rows.pop(&id);
            }
            None => rows.clear(),
        }
    }

    /// Counselor `id`'s terms (`None`: no such counselor), from memory when read within
    /// [`CounselorTerms::TTL`] and not announced as changed since.
    ///
    /// # Errors
    /// On a database error.
    pub async fn get(&self, db: &PgPool, id: i64) -> Result<Option<Terms>, sqlx::Error> {
        if let Some(e) = self
            .inner
            .rows
            .lock()
            .expect("counselor cache lock")
            .get(&id)
        {
            if e.read_at.elapsed() < Self::TTL {
                return Ok(e.terms);
            }
        }
        let generation = self
            .inner
            .generation
            .load(std::sync::atomic::Ordering::SeqCst);
        let read_at = Instant::now();
        let terms = sqlx::query_as::<_, (i64, i16, Option<i64>)>(
            "SELECT price_fen, status, user_id FROM counselors WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(db)
        .await?
        .map(|(price_fen, status, user_id)| Terms {
            price_fen,
            status,
            user_id,
        });
        let mut rows = self.inner.rows.lock().expect("counselor cache lock");
        if self
            .inner
            .generation
            .load(std::sync::atomic::Ordering::SeqCst)
            == generation
        {
            rows.put(id, Entry { terms, read_at });
        }
        Ok(terms)
    }
}

/// Announces that counselor `id` changed (after the change is committed). A failed publish is
/// logged: [`CounselorTerms::TTL`] bounds how long a process may use the old row.
pub async fn announce_changed(nats: &async_nats::Client, id: i64) {
    let payload = serde_json::to_vec(&CounselorChanged { id }).unwrap_or_default();
    if let Err(e) = nats
        .publish(COUNSELOR_CHANGED_SUBJECT, payload.into())
        .await
    {
        tracing::warn!(error = %e, id, "announcing a counselor change");
    }
    let _ = nats.flush().await;
}
