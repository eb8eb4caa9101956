//! One socket as the hub sees it ([`Conn`]): its bounded outbound queue, its close reason and
//! the close codes the node uses, and its per-session cursors (the high-water mark that delivers
//! each record at most once, and the hold-back of live records while a resume replays history).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Close code for a socket closed by the server for being too slow (its send queue filled up).
pub const CLOSE_SLOW: u16 = 4008;

/// Close code sent on shutdown: "service restart", reconnect elsewhere (RFC 6455 1012).
pub const CLOSE_RESTART: u16 = 1012;

/// Close code for a policy violation (flooding).
pub const CLOSE_POLICY: u16 = 1008;

/// Close code of an admin kick.
pub const CLOSE_KICKED: u16 = 4001;

/// A socket's position in one session's record sequence.
#[derive(Default)]
struct Cursor {
    pub(super) session_id: i64,
    /// The highest `CHAT` sequence delivered (or acked) to the socket for this session.
    hwm: u64,
    /// While a resume replays history, live records wait here (in stream order).
    pending: Option<Vec<(u64, Utf8Bytes, Option<String>)>>,
}

/// A socket's outbound queue: frames waiting for the socket's task to write them. Allocated
/// lazily (an idle socket holds an empty `VecDeque`, no buffer), bounded by
/// [`crate::GatewayConfig::send_queue`].
#[derive(Default)]
struct Outbox {
    frames: std::collections::VecDeque<Utf8Bytes>,
    /// `send_wait` is waiting for room.
    want_room: bool,
}

/// One connected socket, as the hub sees it. Frames are queued with [`Conn::send`] from any task
/// (the node's consumers, admin requests); the socket's own task writes them.
pub struct Conn {
    pub id: u64,
    pub user_id: i64,
    capacity: usize,
    outbox: Mutex<Outbox>,
    /// Wakes the socket's task: frames are queued (or the socket is closing).
    ready: Notify,
    /// Wakes a `send_wait`: the task took frames from a full queue.
    room: Notify,
    /// Cancelled to close the socket; the reason is in [`Conn::close_reason`].
    pub close: CancellationToken,
    close_reason: Mutex<Option<(u16, String)>>,
    /// Client message ids this socket sent and has not yet seen come back from the stream: its
    /// own messages are acked to it, not echoed.
    pub sent: Mutex<HashSet<String>>,
    /// Per session (a socket is in one or two at a time: a small list, not a map).
    cursors: Mutex<Vec<Cursor>>,
    /// Sessions whose `session_start` the socket has had.
    pub(super) started: Mutex<Vec<i64>>,
    /// When the socket connected (the admin's online list shows it).
    pub connected_at: DateTime<Utc>,
}

impl Conn {
    /// A connection whose outbound queue holds at most `queue` frames.
    pub fn new(id: u64, user_id: i64, queue: usize) -> Arc<Self> {
        Arc::new(Self {
            id,
            user_id,
            capacity: queue.max(1),
            outbox: Mutex::default(),
            ready: Notify::new(),
            room: Notify::new(),
            close: CancellationToken::new(),
            close_reason: Mutex::new(None),
            sent: Mutex::new(HashSet::new()),
            cursors: Mutex::default(),
            started: Mutex::default(),
            connected_at: Utc::now(),
        })
    }

    /// Queues a frame; a full queue closes the socket with [`CLOSE_SLOW`] (it can reconnect and
    /// resume from its last sequence, so nothing is lost silently). Frames are shared, not
    /// copied: a record fanned out to many sockets is encoded once.
    pub fn send(&self, text: impl Into<Utf8Bytes>) {
        if self.close.is_cancelled() {
            return;
        }
        let mut out = self.outbox.lock().expect("outbox lock");
        if out.frames.len() >= self.capacity {
            drop(out);
            self.close_with(
                CLOSE_SLOW,
                "too slow: send queue full; reconnect and resume from your last seq",
            );
            return;
        }
        out.frames.push_back(text.into());
        drop(out);
        self.ready.notify_one();
    }

    /// Queues a frame, waiting up to 5 s for room (replays, which may exceed the queue). Only the
    /// socket's own task calls it (while it keeps writing).
    pub async fn send_wait(&self, text: impl Into<Utf8Bytes>) -> bool {
        let text = text.into();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if self.close.is_cancelled() {
                return false;
            }
            {
                let mut out = self.outbox.lock().expect("outbox lock");
                if out.frames.len() < self.capacity {
                    out.frames.push_back(text);
                    drop(out);
                    self.ready.notify_one();
                    return true;
                }
                out.want_room = true;
            }
            if tokio::time::timeout_at(deadline, self.room.notified())
                .await
                .is_err()
            {
                self.close_with(CLOSE_SLOW, "too slow during resume; reconnect and resume");
                return false;
            }
        }
    }

    /// Resolves when frames may be queued (or the socket is closing).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Takes the queued frames (oldest first) into `into`.
    pub fn take_frames(&self, into: &mut Vec<Utf8Bytes>) {
        let mut out = self.outbox.lock().expect("outbox lock");
        into.extend(out.frames.drain(..));
        // Give a burst's buffer back.
        if out.frames.capacity() > 16 {
            out.frames = Default::default();
        }
        if std::mem::take(&mut out.want_room) {
            drop(out);
            self.room.notify_one();
        }
    }

    /// Closes the socket with a close frame `code` / `reason` (the first reason wins).
    pub fn close_with(&self, code: u16, reason: &str) {
        let mut r = self.close_reason.lock().expect("close lock");
        if r.is_none() {
            *r = Some((code, reason.to_string()));
        }
        drop(r);
        self.close.cancel();
    }

    /// Why the socket is being closed (default: 1000, normal).
    pub fn close_reason(&self) -> (u16, String) {
        self.close_reason
            .lock()
            .expect("close lock")
            .clone()
            .unwrap_or((1000, String::new()))
    }

    fn with_cursor<R>(&self, session_id: i64, f: impl FnOnce(&mut Cursor) -> R) -> R {
        let mut cursors = self.cursors.lock().expect("cursor lock");
        let i = match cursors.iter().position(|c| c.session_id == session_id) {
            Some(i) => i,
            None => {
                cursors.push(Cursor {
                    session_id,
                    ..Default::default()
                });
                cursors.len() - 1
            }
        };
        f(&mut cursors[i])
    }

    /// Delivers a record of session `session_id` at position `seq`: at most once per
    /// sequence (a high-water mark), held back while a resume replays, and not echoed to the
    /// socket that sent it (`own` = the record's client message id).
    pub fn deliver(&self, session_id: i64, seq: u64, text: &Utf8Bytes, own: Option<&str>) {
        let fresh = self.with_cursor(session_id, |cursor| {
            if let Some(pending) = cursor.pending.as_mut() {
                pending.push((seq, text.clone(), own.map(str::to_string)));
                return false;
            }
            if seq <= cursor.hwm {
                return false;
            }
            cursor.hwm = seq;
            true
        });
        if !fresh {
            return;
        }
        if let Some(id) = own {
            if self.sent.lock().expect("sent lock").remove(id) {
                return;
            }
        }
        self.send(text.clone());
    }

    /// Starts a replay for `session_id` after `after_seq`: live records are held back.
    pub fn begin_replay(&self, session_id: i64, after_seq: u64) {
        self.with_cursor(session_id, |cursor| {
            cursor.hwm = cursor.hwm.max(after_seq);
            cursor.pending.get_or_insert_with(Vec::new);
        });
    }

    /// True if a replayed record at `seq` is new to the socket (and records it as had).
    pub fn take_replayed(&self, session_id: i64, seq: u64) -> bool {
        self.with_cursor(session_id, |cursor| {
            if seq <= cursor.hwm {
                return false;
            }
            cursor.hwm = seq;
            true
        })
    }

    /// Ends a replay: the held-back live records newer than the replay are delivered in order.
    pub fn end_replay(&self, session_id: i64) {
        let pending = self.with_cursor(session_id, |cursor| {
            cursor.pending.take().unwrap_or_default()
        });
        for (seq, text, own) in pending {
            self.deliver(session_id, seq, &text, own.as_deref());
        }
    }

    /// The highest sequence the socket has of `session_id`.
    pub fn hwm(&self, session_id: i64) -> u64 {
        self.cursors
            .lock()
            .expect("cursor lock")
            .iter()
            .find(|c| c.session_id == session_id)
            .map_or(0, |c| c.hwm)
    }
}
