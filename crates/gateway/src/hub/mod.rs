//! The node's routing table, its stream consumers and subscriptions, presence state and session
//! timers.
//!
//! Sockets are kept per session (rooms) and per user. The node reads each chat stream and
//! `ev.session.>` with **one reader each, for the whole node** (never one per socket; the log's
//! gap-checking reader, [`eventstore::LogReader`]), subscribes once to `typing.>` and `notify.>`
//! (core NATS), and routes each record to its local sockets.
//!
//! Core-NATS subjects (JSON payloads):
//! - `typing.<session_id>`: `{user_id, kind: "typing"|"typing_stop"}`; ephemeral, never stored.
//! - `notify.<user_id>` and `notify.all`: `{type, data, close?, mute_until?}`: a frame `type` with
//!   `data` to every socket of the user (or every socket); with `close` (a reason) the sockets are
//!   closed after the frame (admin kick: `type: "force_logout"`); with `mute_until` (unix
//!   seconds) the user's `message` frames are refused until then (admin mute).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use chrono::{DateTime, Utc};
use domain::{ChatSession, EndReason, SessionCommand, SessionEvent};
use eventstore::chat::{message_id, ChatRecord};
use eventstore::envelope::Upcasters;
use eventstore::ChatLog;
use eventstore::{Actor, CommandBus, CommandError, CommandMeta, Commit};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::presence::NodePresence;
use crate::protocol::frame;
use crate::GatewayConfig;

/// Most records a fan-out reader hands over at once; the node yields to the sockets' tasks
/// between batches, so that a burst does not fill a fast socket's queue before it can write.
pub const FANOUT_BATCH: usize = 64;

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
    session_id: i64,
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
    started: Mutex<Vec<i64>>,
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

    /// Delivers a record of session `session_id` at stream sequence `seq`: at most once per
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

/// An active session as the node knows it from `ev.session.>`.
#[derive(Debug, Clone)]
struct Active {
    user_id: i64,
    counselor_user_id: i64,
    price_per_minute: i64,
    prepaid_minutes: i64,
    started_at: DateTime<Utc>,
    /// The last message or app-level activity seen, unix seconds.
    last_activity: i64,
    warned: bool,
    /// When this node last asked to end it (retried after 5 s if the end has not arrived).
    ending_at: Option<std::time::Instant>,
}

/// The node's sockets, sessions and presence view.
pub struct Hub {
    config: GatewayConfig,
    bus: CommandBus,
    nats: async_nats::Client,
    rooms: Mutex<HashMap<i64, Vec<Arc<Conn>>>>,
    users: Mutex<HashMap<i64, Vec<Arc<Conn>>>>,
    next_id: AtomicU64,
    active: Mutex<HashMap<i64, Active>>,
    sessions_caught_up: AtomicBool,
    ended_by: Mutex<HashMap<i64, i64>>,
    local_activity: Mutex<HashMap<i64, i64>>,
    remote: Mutex<HashMap<String, NodePresence>>,
    muted: Mutex<HashMap<i64, i64>>,
    presence_dirty: Notify,
    draining: AtomicBool,
    /// The chat log: the layout, and the node's committer of each chat stream.
    chat: ChatLog,
    /// The node's background parts that are down (`/health` answers 503 while any is).
    down: Mutex<std::collections::BTreeSet<Part>>,
}

/// An active session's row of the `chat_sessions` read model: id, user, counselor's login,
/// price per minute (fen), prepaid minutes, start.
type ActiveRow = (i64, i64, i64, i64, i32, Option<DateTime<Utc>>);

/// A background part of a gateway node, as `/health` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// The fan-out reader of one chat stream.
    Chat(&'static str),
    /// The session-event reader.
    Sessions,
    /// A supervised task (the typing and notify subscriptions, presence, the timers, the admin
    /// bus).
    Task(&'static str),
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Chat(stream) => write!(f, "chat fan-out ({stream})"),
            Self::Sessions => write!(f, "session events"),
            Self::Task(name) => write!(f, "{name}"),
        }
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl Hub {
    /// A hub for one node, appending chat records to `chat`.
    pub fn new(
        config: GatewayConfig,
        bus: CommandBus,
        nats: async_nats::Client,
        chat: ChatLog,
    ) -> Self {
        Self {
            config,
            bus,
            nats,
            rooms: Mutex::default(),
            users: Mutex::default(),
            next_id: AtomicU64::new(0),
            active: Mutex::default(),
            sessions_caught_up: AtomicBool::new(false),
            ended_by: Mutex::default(),
            local_activity: Mutex::default(),
            remote: Mutex::default(),
            muted: Mutex::default(),
            presence_dirty: Notify::new(),
            draining: AtomicBool::new(false),
            chat,
            down: Mutex::default(),
        }
    }

    /// Records whether `part` works.
    pub fn set_part(&self, part: Part, up: bool) {
        let mut down = self.down.lock().expect("hub lock");
        if up {
            down.remove(&part);
        } else if down.insert(part) {
            tracing::warn!(%part, "gateway part down");
        }
    }

    /// The parts that are down (empty: the node works).
    pub fn parts_down(&self) -> Vec<String> {
        self.down
            .lock()
            .expect("hub lock")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The chat log: every socket's messages, read receipts and revocations are appended
    /// through it (one committer per chat stream, so concurrent appends share batches).
    pub fn chat(&self) -> &ChatLog {
        &self.chat
    }

    /// The node's configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The node's id.
    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The NATS client (core subjects: typing).
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// True once the node is shutting down (new sockets are refused).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Registers a new socket of `user_id`; returns it and its outbound queue.
    pub fn connect(&self, user_id: i64) -> Arc<Conn> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let conn = Conn::new(id, user_id, self.config.send_queue);
        self.users
            .lock()
            .expect("hub lock")
            .entry(user_id)
            .or_default()
            .push(conn.clone());
        self.presence_dirty.notify_one();
        conn
    }

    /// Forgets a socket (and unbinds it from `session`).
    pub fn disconnect(&self, conn: &Conn, session: Option<i64>) {
        if let Some(s) = session {
            self.leave(s, conn.id);
        }
        let mut users = self.users.lock().expect("hub lock");
        if let Some(list) = users.get_mut(&conn.user_id) {
            list.retain(|c| c.id != conn.id);
            if list.is_empty() {
                users.remove(&conn.user_id);
            }
        }
        drop(users);
        self.presence_dirty.notify_one();
    }

    /// Binds a socket to a session.
    pub fn join(&self, session_id: i64, conn: Arc<Conn>) {
        {
            let mut rooms = self.rooms.lock().expect("hub lock");
            let room = rooms.entry(session_id).or_default();
            if !room.iter().any(|c| c.id == conn.id) {
                room.push(conn);
            }
        }
        self.touch(session_id);
        self.presence_dirty.notify_one();
        self.check_session_start(session_id);
    }

    /// Unbinds a socket.
    pub fn leave(&self, session_id: i64, conn_id: u64) {
        let mut rooms = self.rooms.lock().expect("hub lock");
        if let Some(room) = rooms.get_mut(&session_id) {
            room.retain(|c| c.id != conn_id);
            if room.is_empty() {
                rooms.remove(&session_id);
            }
        }
        drop(rooms);
        self.presence_dirty.notify_one();
    }

    /// Records app-level activity in a session (a `ping` or a join) for the inactivity timeout.
    pub fn touch(&self, session_id: i64) {
        let now = Utc::now().timestamp();
        self.local_activity
            .lock()
            .expect("hub lock")
            .insert(session_id, now);
        if let Some(a) = self.active.lock().expect("hub lock").get_mut(&session_id) {
            a.last_activity = a.last_activity.max(now);
        }
    }

    fn room(&self, session_id: i64) -> Vec<Arc<Conn>> {
        self.rooms
            .lock()
            .expect("hub lock")
            .get(&session_id)
            .cloned()
            .unwrap_or_default()
    }

    fn user_conns(&self, user_id: i64) -> Vec<Arc<Conn>> {
        self.users
            .lock()
            .expect("hub lock")
            .get(&user_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Sockets open on this node.
    pub fn socket_count(&self) -> usize {
        self.users
            .lock()
            .expect("hub lock")
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Sockets currently bound to any session on this node.
    pub fn bound_sockets(&self) -> usize {
        self.rooms
            .lock()
            .expect("hub lock")
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Every socket of this node with the session it is bound to (0 when unbound): the admin
    /// bus's presence answer.
    pub fn connections(&self) -> Vec<(i64, Arc<Conn>)> {
        let bound: HashMap<u64, i64> = self
            .rooms
            .lock()
            .expect("hub lock")
            .iter()
            .flat_map(|(sid, conns)| conns.iter().map(move |c| (c.id, *sid)))
            .collect();
        self.users
            .lock()
            .expect("hub lock")
            .values()
            .flatten()
            .map(|c| (bound.get(&c.id).copied().unwrap_or(0), c.clone()))
            .collect()
    }

    /// Sets or lifts an admin mute on `user_id` (indefinite until lifted).
    pub fn set_muted(&self, user_id: i64, muted: bool) {
        let mut m = self.muted.lock().expect("hub lock");
        if muted {
            m.insert(user_id, i64::MAX);
        } else {
            m.remove(&user_id);
        }
    }

    /// True while an admin mute holds for `user_id`.
    pub fn is_muted(&self, user_id: i64) -> bool {
        self.muted
            .lock()
            .expect("hub lock")
            .get(&user_id)
            .is_some_and(|until| *until > Utc::now().timestamp())
    }

    // ---- presence -------------------------------------------------------------------------

    /// Resolves when the node's sockets changed (the presence writer waits on it).
    pub async fn presence_changed(&self) {
        self.presence_dirty.notified().await;
    }

    /// This node's presence entry, now.
    pub fn local_presence(&self) -> NodePresence {
        let users: Vec<i64> = self
            .users
            .lock()
            .expect("hub lock")
            .keys()
            .copied()
            .collect();
        let rooms = self
            .rooms
            .lock()
            .expect("hub lock")
            .iter()
            .map(|(sid, conns)| {
                let mut ids: Vec<i64> = conns.iter().map(|c| c.user_id).collect();
                ids.sort_unstable();
                ids.dedup();
                (*sid, ids)
            })
            .collect();
        let activity = self
            .local_activity
            .lock()
            .expect("hub lock")
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        NodePresence {
            node_id: self.config.node_id.clone(),
            at_ms: now_ms(),
            timeout_ms: self.config.presence_timeout.as_millis() as i64,
            users,
            rooms,
            activity,
        }
    }

    /// Another node's presence entry changed (`None`: deleted).
    pub fn presence_remote(&self, node: String, entry: Option<NodePresence>) {
        let sessions: Vec<i64> = entry
            .as_ref()
            .map(|p| p.rooms.keys().copied().collect())
            .unwrap_or_default();
        if let Some(p) = &entry {
            let mut active = self.active.lock().expect("hub lock");
            for (sid, at) in &p.activity {
                if let Some(a) = active.get_mut(sid) {
                    a.last_activity = a.last_activity.max(*at);
                }
            }
        }
        {
            let mut remote = self.remote.lock().expect("hub lock");
            match entry {
                Some(p) => remote.insert(node, p),
                None => remote.remove(&node),
            };
        }
        for sid in sessions {
            self.check_session_start(sid);
        }
    }

    /// Users with a socket on any live node (this one included).
    pub fn online_users(&self) -> HashSet<i64> {
        let mut online: HashSet<i64> = self
            .users
            .lock()
            .expect("hub lock")
            .keys()
            .copied()
            .collect();
        let now = now_ms();
        for p in self.remote.lock().expect("hub lock").values() {
            if p.is_live(now) {
                online.extend(p.users.iter().copied());
            }
        }
        online
    }

    /// Users bound to `session_id` on any live node.
    pub fn present_in(&self, session_id: i64) -> HashSet<i64> {
        let mut present: HashSet<i64> = self.room(session_id).iter().map(|c| c.user_id).collect();
        let now = now_ms();
        for p in self.remote.lock().expect("hub lock").values() {
            if p.is_live(now) {
                if let Some(ids) = p.rooms.get(&session_id) {
                    present.extend(ids.iter().copied());
                }
            }
        }
        present
    }

    /// Sends `session_start` to this node's sockets of `session_id` that have not had it, once
    /// both the user and the counselor are present (on any node).
    fn check_session_start(&self, session_id: i64) {
        let room = self.room(session_id);
        if room.is_empty() {
            return;
        }
        let Some(a) = self
            .active
            .lock()
            .expect("hub lock")
            .get(&session_id)
            .cloned()
        else {
            return;
        };
        let present = self.present_in(session_id);
        if !(present.contains(&a.user_id) && present.contains(&a.counselor_user_id)) {
            return;
        }
        let text = frame(
            "session_start",
            session_id,
            json!({
                "session_id": session_id,
                "start_time": a.started_at,
                "price": a.price_per_minute as f64 / 100.0,
                "prepaid_minutes": a.prepaid_minutes,
                "ends_at": a.started_at + self.prepaid_span(&a),
            }),
        );
        let text = Utf8Bytes::from(text);
        for conn in room {
            let mut started = conn.started.lock().expect("lock");
            if !started.contains(&session_id) {
                started.push(session_id);
                drop(started);
                conn.send(text.clone());
            }
        }
    }

    fn prepaid_span(&self, a: &Active) -> chrono::Duration {
        chrono::Duration::from_std(self.config.minute * a.prepaid_minutes.max(0) as u32)
            .unwrap_or_default()
    }

    /// Registers what a socket learnt by loading the aggregate (in case this node has not read
    /// the session's start from the stream yet).
    pub fn note_session(&self, session_id: i64, s: &ChatSession) {
        if s.status != domain::SessionStatus::Active {
            return;
        }
        let mut active = self.active.lock().expect("hub lock");
        active.entry(session_id).or_insert_with(|| Active {
            user_id: s.user_id,
            counselor_user_id: s.counselor_user_id,
            price_per_minute: s.price_per_minute,
            prepaid_minutes: s.prepaid_minutes,
            started_at: s.started_at.unwrap_or_else(Utc::now),
            last_activity: s.started_at.unwrap_or_else(Utc::now).timestamp(),
            warned: false,
            ending_at: None,
        });
    }

    /// The session as the node's table of active sessions knows it (from `ev.session.>`), so
    /// that a message does not load the aggregate; `None` when the node does not know it.
    pub fn cached_session(&self, session_id: i64) -> Option<ChatSession> {
        let active = self.active.lock().expect("hub lock");
        let a = active.get(&session_id)?;
        Some(ChatSession {
            status: domain::SessionStatus::Active,
            order_id: session_id,
            user_id: a.user_id,
            counselor_id: 0,
            counselor_user_id: a.counselor_user_id,
            price_per_minute: a.price_per_minute,
            prepaid_minutes: a.prepaid_minutes,
            prepaid_amount: a.price_per_minute * a.prepaid_minutes,
            started_at: Some(a.started_at),
        })
    }

    // ---- routing --------------------------------------------------------------------------

    /// The frame of a chat record at stream sequence `seq` of shard `shard`, and its own-message
    /// id (for messages). `seq` is the record's position in its session's stream (resumes);
    /// `id` / `message_id` its id across the chat streams ([`message_id`]).
    pub fn record_frame(shard: u16, seq: u64, record: &ChatRecord) -> (String, Option<String>) {
        let id = message_id(shard, seq);
        let of = |message_seq: u64| message_id(shard, message_seq);
        match record {
            ChatRecord::Message(m) => {
                let data = json!({
                    "id": id,
                    "seq": seq,
                    "message_id": id,
                    "session_id": m.session_id,
                    "sender_id": m.sender_id,
                    "sender_type": m.sender_type,
                    "content_type": m.content_type,
                    "content": m.content,
                    "file_url": m.file_url,
                    "client_msg_id": m.client_msg_id,
                    "created_at": m.sent_at,
                });
                (
                    frame("message", m.session_id, data),
                    Some(own_key(m.sender_id, &m.client_msg_id)),
                )
            }
            ChatRecord::MessageRead(r) => (
                frame(
                    "message_read",
                    r.session_id,
                    json!({ "seq": seq, "message_id": of(r.message_seq), "message_seq": r.message_seq, "read_by": r.read_by, "read_at": r.read_at }),
                ),
                None,
            ),
            ChatRecord::MessageRevoked(r) => (
                frame(
                    "message_revoked",
                    r.session_id,
                    json!({ "seq": seq, "message_id": of(r.message_seq), "message_seq": r.message_seq, "revoked_by": r.revoked_by, "revoked_at": r.revoked_at }),
                ),
                None,
            ),
            // An administrator's redaction reaches clients as a revoke of those messages.
            ChatRecord::Redaction(r) => (
                frame(
                    "message_revoked",
                    r.session_id,
                    json!({
                        "seq": seq,
                        "session_id": r.session_id,
                        "message_ids": r.message_ids.iter().map(|s| of(*s as u64)).collect::<Vec<_>>(),
                        "message_seqs": r.message_ids,
                        "reason": r.reason,
                        "redacted": true,
                    }),
                ),
                None,
            ),
        }
    }

    fn route_chat(&self, shard: u16, seq: u64, record: ChatRecord, stored_at: i64) {
        let session_id = record.session_id();
        if let Some(a) = self.active.lock().expect("hub lock").get_mut(&session_id) {
            a.last_activity = a.last_activity.max(stored_at);
        }
        let (text, own) = Self::record_frame(shard, seq, &record);
        // Encoded once; every socket's queue shares the same bytes.
        let text = Utf8Bytes::from(text);
        for conn in self.room(session_id) {
            conn.deliver(session_id, seq, &text, own.as_deref());
        }
    }

    fn route_session_event(&self, session_id: i64, event: SessionEvent, live: bool) {
        match event {
            SessionEvent::SessionStarted {
                user_id,
                counselor_user_id,
                price_per_minute,
                prepaid_minutes,
                started_at,
                ..
            } => {
                self.active.lock().expect("hub lock").insert(
                    session_id,
                    Active {
                        user_id,
                        counselor_user_id,
                        price_per_minute,
                        prepaid_minutes,
                        started_at,
                        last_activity: started_at.timestamp(),
                        warned: false,
                        ending_at: None,
                    },
                );
                if live {
                    self.check_session_start(session_id);
                }
            }
            SessionEvent::SessionEnded { ended_by: by, .. } => {
                self.ended_by
                    .lock()
                    .expect("hub lock")
                    .insert(session_id, by);
            }
            SessionEvent::SessionBilled {
                user_id,
                duration_seconds,
                billed_minutes,
                price_per_minute,
                amount,
                platform_fee,
                counselor_fee,
                refund,
                ..
            } => {
                let active = self.active.lock().expect("hub lock").remove(&session_id);
                let ended_by = self
                    .ended_by
                    .lock()
                    .expect("hub lock")
                    .remove(&session_id)
                    .unwrap_or(0);
                self.local_activity
                    .lock()
                    .expect("hub lock")
                    .remove(&session_id);
                if !live {
                    return;
                }
                let yuan = |f: i64| f as f64 / 100.0;
                let billing = frame(
                    "billing",
                    session_id,
                    json!({
                        "session_id": session_id,
                        "duration": duration_seconds,
                        "duration_minutes": billed_minutes,
                        "price_per_minute": yuan(price_per_minute),
                        "total_amount": yuan(amount),
                        "total_amount_fen": amount,
                        "platform_fee": yuan(platform_fee),
                        "counselor_fee": yuan(counselor_fee),
                        "refund": yuan(refund),
                        "refund_fen": refund,
                    }),
                );
                let end = frame(
                    "session_end",
                    session_id,
                    json!({ "session_id": session_id, "ended_by": ended_by }),
                );
                // Both sides: the room, plus any other socket of either participant.
                let mut targets: Vec<Arc<Conn>> = self
                    .rooms
                    .lock()
                    .expect("hub lock")
                    .remove(&session_id)
                    .unwrap_or_default();
                let mut participants = vec![user_id];
                if let Some(a) = active {
                    participants.push(a.counselor_user_id);
                }
                for uid in participants {
                    targets.extend(self.user_conns(uid));
                }
                let (billing, end) = (Utf8Bytes::from(billing), Utf8Bytes::from(end));
                let mut seen = HashSet::new();
                for conn in targets {
                    if seen.insert(conn.id) {
                        conn.send(billing.clone());
                        conn.send(end.clone());
                    }
                }
                self.presence_dirty.notify_one();
            }
        }
    }

    /// Routes a core-NATS typing indicator to the session's other local sockets.
    fn route_typing(&self, session_id: i64, payload: &[u8]) {
        #[derive(Deserialize)]
        struct Typing {
            user_id: i64,
            kind: String,
        }
        let Ok(t) = serde_json::from_slice::<Typing>(payload) else {
            return;
        };
        let kind = if t.kind == "typing_stop" {
            "typing_stop"
        } else {
            "typing"
        };
        let text = frame(
            kind,
            session_id,
            json!({ "user_id": t.user_id, "is_typing": kind == "typing" }),
        );
        let text = Utf8Bytes::from(text);
        for conn in self.room(session_id) {
            if conn.user_id != t.user_id {
                conn.send(text.clone());
            }
        }
    }

    /// Routes a `notify.<user_id>` / `notify.all` message.
    fn route_notify(&self, target: &str, payload: &[u8]) {
        #[derive(Deserialize)]
        struct Notice {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            data: Value,
            #[serde(default)]
            close: Option<String>,
            #[serde(default)]
            mute_until: Option<i64>,
        }
        let n = match serde_json::from_slice::<Notice>(payload) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, target, "undecodable notify message");
                return;
            }
        };
        let conns: Vec<Arc<Conn>> = if target == "all" {
            self.users
                .lock()
                .expect("hub lock")
                .values()
                .flatten()
                .cloned()
                .collect()
        } else {
            let Ok(user_id) = target.parse::<i64>() else {
                return;
            };
            if let Some(until) = n.mute_until {
                self.muted.lock().expect("hub lock").insert(user_id, until);
            }
            self.user_conns(user_id)
        };
        let text = Utf8Bytes::from(
            json!({ "type": n.kind, "data": n.data, "payload": n.data }).to_string(),
        );
        for conn in conns {
            conn.send(text.clone());
            if let Some(reason) = &n.close {
                let conn = conn.clone();
                let reason = reason.clone();
                // Let the frame go out first.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    conn.close_with(CLOSE_KICKED, &reason);
                });
            }
        }
    }

    // ---- node tasks -------------------------------------------------------------------------

    /// Runs the node's chat fan-out until `shutdown`: one reader per chat stream of the layout
    /// (the shards, and the legacy `CHAT` if there is one), each from that stream's head when it
    /// starts (new records only), each record routed to the local sockets of its session.
    pub async fn run_chat_fanout(self: Arc<Self>, shutdown: CancellationToken) {
        let streams = self.chat.layout().streams();
        let mut readers = tokio::task::JoinSet::new();
        for (shard, stream) in streams {
            readers.spawn(self.clone().follow_chat(shard, stream, shutdown.clone()));
        }
        while readers.join_next().await.is_some() {}
    }

    async fn follow_chat(
        self: Arc<Self>,
        shard: u16,
        stream: &'static str,
        shutdown: CancellationToken,
    ) {
        let part = Part::Chat(stream);
        let js = self.chat.jetstream().clone();
        // The head when the node starts: records from before it are not fanned out (a client
        // that missed them resumes with `after_seq`).
        let Some(head) = self.stream_head(stream, part, &shutdown).await else {
            return;
        };
        let mut reader = eventstore::LogReader::spawn(
            js,
            eventstore::ReadOptions::new(stream, head, eventstore::ReadUntil::Follow)
                .batch_size(FANOUT_BATCH),
        );
        self.set_part(part, true);
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                batch = reader.next() => match batch {
                    Some(Ok(entries)) => {
                        for entry in entries {
                            self.route_chat_entry(shard, &entry);
                        }
                        // Let the sockets' tasks write what was queued before routing more.
                        tokio::task::yield_now().await;
                    }
                    Some(Err(e)) => {
                        tracing::error!(stream, error = %e, "chat fan-out reader failed");
                        self.set_part(part, false);
                        return;
                    }
                    None => return,
                },
                _ = check.tick() => self.set_part(part, !reader.is_failing()),
                _ = shutdown.cancelled() => return,
            }
        }
    }

    fn route_chat_entry(&self, shard: u16, entry: &eventstore::LogEntry) {
        let seq = entry.stream_sequence;
        match serde_json::from_slice::<ChatRecord>(&entry.payload) {
            Ok(record) => {
                self.route_chat(shard, seq, record, entry.published.timestamp());
                record_fanout("CHAT", entry.published);
            }
            Err(e) => tracing::warn!(seq, error = %e, "undecodable chat record"),
        }
    }

    /// The last sequence of `stream`, asked until JetStream answers (the part is marked down
    /// meanwhile); `None` on shutdown.
    async fn stream_head(
        &self,
        stream: &str,
        part: Part,
        shutdown: &CancellationToken,
    ) -> Option<u64> {
        let js = self.chat.jetstream();
        let mut delay = Duration::from_millis(100);
        loop {
            let head = async {
                anyhow::Ok(
                    js.get_stream(stream)
                        .await?
                        .info()
                        .await?
                        .state
                        .last_sequence,
                )
            };
            match head.await {
                Ok(head) => return Some(head),
                Err(e) => {
                    self.set_part(part, false);
                    tracing::warn!(
                        stream,
                        error = format!("{e:#}"),
                        ?delay,
                        "reading a stream's head; retrying"
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return None,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Runs the node's session-event reader (`ev.session.>`) until `shutdown`. The node learns
    /// the active sessions (for the timers and the participant checks) from the `chat_sessions`
    /// read model and its checkpoint, read together, then follows `ev.session.>` from that
    /// checkpoint: a start costs one query and the events since the read model's last batch, not
    /// every session event of the log. Frames go out only for events after the stream's last
    /// sequence at start.
    pub async fn run_session_events(
        self: Arc<Self>,
        db: sqlx::PgPool,
        shutdown: CancellationToken,
    ) {
        let part = Part::Sessions;
        let mut delay = Duration::from_millis(100);
        let from = loop {
            match self.load_active_sessions(&db).await {
                Ok(from) => break from,
                Err(e) => {
                    self.set_part(part, false);
                    tracing::warn!(
                        error = format!("{e:#}"),
                        ?delay,
                        "loading the active sessions; retrying"
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        };
        let Some(head) = self
            .stream_head(eventstore::EVENTS_STREAM, part, &shutdown)
            .await
        else {
            return;
        };
        let mut reader = eventstore::LogReader::spawn(
            self.chat.jetstream().clone(),
            eventstore::ReadOptions::new(
                eventstore::EVENTS_STREAM,
                from,
                eventstore::ReadUntil::Follow,
            )
            .subjects(vec!["ev.session.>".into()])
            .batch_size(1000),
        );
        self.set_part(part, true);
        let upcasters = Upcasters::default();
        let mut check = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                batch = reader.next() => match batch {
                    Some(Ok(entries)) => {
                        for entry in entries {
                            self.route_session_entry(&entry, head, &upcasters);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "session-event reader failed");
                        self.set_part(part, false);
                        return;
                    }
                    None => return,
                },
                _ = check.tick() => {
                    self.set_part(part, !reader.is_failing());
                    if reader.is_caught_up() {
                        self.sessions_caught_up.store(true, Ordering::Relaxed);
                    }
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Loads the active sessions from the `chat_sessions` read model and returns its checkpoint
    /// (both read in one snapshot), and the muted users from `user_mutes`.
    async fn load_active_sessions(&self, db: &sqlx::PgPool) -> anyhow::Result<u64> {
        let mut tx = db.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let position: i64 = sqlx::query_scalar(
            "SELECT COALESCE((SELECT position FROM projection_checkpoints WHERE name = 'chat_sessions'), 0)",
        )
        .fetch_one(&mut *tx)
        .await?;
        let rows: Vec<ActiveRow> = sqlx::query_as(
            "SELECT id, user_id, counselor_user_id, price_fen, prepaid_minutes, start_time \
             FROM chat_sessions WHERE status = 1",
        )
        .fetch_all(&mut *tx)
        .await?;
        let muted: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM user_mutes")
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        {
            let mut active = self.active.lock().expect("hub lock");
            for (id, user_id, counselor_user_id, price, prepaid, start) in rows {
                let started_at = start.unwrap_or_else(Utc::now);
                active.entry(id).or_insert(Active {
                    user_id,
                    counselor_user_id,
                    price_per_minute: price,
                    prepaid_minutes: i64::from(prepaid),
                    started_at,
                    last_activity: started_at.timestamp().max(Utc::now().timestamp()),
                    warned: false,
                    ending_at: None,
                });
            }
        }
        for user_id in muted {
            self.set_muted(user_id, true);
        }
        Ok(position as u64)
    }

    fn route_session_entry(&self, entry: &eventstore::LogEntry, head: u64, upcasters: &Upcasters) {
        let seq = entry.stream_sequence;
        let Ok(commit) = Commit::decode(&entry.payload) else {
            tracing::warn!(seq, "undecodable commit");
            return;
        };
        for stored in commit.into_stored(seq) {
            let stored = upcasters.upcast(stored);
            let (Some(id), Ok(event)) =
                (stored.aggregate_id_i64(), stored.decode::<SessionEvent>())
            else {
                continue;
            };
            // The frames of an event carry its correlation id in the logs.
            let _span = tracing::debug_span!(
                "fanout",
                session_id = id,
                stream_sequence = seq,
                correlation_id = %stored.correlation_id,
            )
            .entered();
            tracing::debug!(event_type = %stored.event_type, live = seq > head, "session event to sockets");
            self.route_session_event(id, event, seq > head);
        }
        if seq > head {
            record_fanout("EVENTS", entry.published);
        }
    }

    /// Routes `typing.<session_id>` until `shutdown`.
    pub async fn run_typing(
        self: Arc<Self>,
        mut sub: async_nats::Subscriber,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                m = sub.next() => match m {
                    Some(m) => {
                        if let Some(Ok(sid)) = m.subject.as_str().strip_prefix("typing.").map(str::parse::<i64>) {
                            self.route_typing(sid, &m.payload);
                        }
                    }
                    None => return,
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Routes `notify.<user_id>` / `notify.all` until `shutdown`.
    pub async fn run_notify(
        self: Arc<Self>,
        mut sub: async_nats::Subscriber,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                m = sub.next() => match m {
                    Some(m) => {
                        if let Some(target) = m.subject.as_str().strip_prefix("notify.") {
                            self.route_notify(target, &m.payload);
                        }
                    }
                    None => return,
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// The session timers, until `shutdown`: one minute before the prepaid time runs out the
    /// session's sockets get a `system_message` warning; at the prepaid time, or after the
    /// inactivity timeout, the node ends the session with a command whose id is derived from the
    /// session (every node may send it; the aggregate bills once, repeats are dropped by
    /// `Nats-Msg-Id` or refused as already ended).
    pub async fn run_lifecycle(self: Arc<Self>, shutdown: CancellationToken) {
        let period =
            (self.config.minute / 8).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            if !self.sessions_caught_up.load(Ordering::Relaxed) {
                continue;
            }
            let now = Utc::now();
            let mut to_end = Vec::new();
            let mut to_warn = Vec::new();
            {
                let mut active = self.active.lock().expect("hub lock");
                for (sid, a) in active.iter_mut() {
                    let span = self.prepaid_span(a);
                    let end_at = a.started_at + span;
                    let minute = chrono::Duration::from_std(self.config.minute).unwrap_or_default();
                    if !a.warned && now >= end_at - minute && now < end_at {
                        a.warned = true;
                        to_warn.push((*sid, (end_at - now).num_seconds().max(0)));
                    }
                    let retry = a
                        .ending_at
                        .is_none_or(|t| t.elapsed() > Duration::from_secs(5));
                    if !retry {
                        continue;
                    }
                    if now >= end_at {
                        a.ending_at = Some(std::time::Instant::now());
                        to_end.push((*sid, EndReason::PrepaidTimeUsed, end_at));
                    } else if now.timestamp() - a.last_activity
                        >= self.config.inactivity_timeout.as_secs() as i64
                    {
                        a.ending_at = Some(std::time::Instant::now());
                        to_end.push((*sid, EndReason::Inactivity, now));
                    }
                }
            }
            for (sid, remaining) in to_warn {
                let text = frame(
                    "system_message",
                    sid,
                    json!({
                        "session_id": sid,
                        "kind": "session_ending",
                        "remaining_seconds": remaining,
                        "content": "会话将在一分钟后结束",
                        "created_at": now,
                    }),
                );
                let text = Utf8Bytes::from(text);
                for conn in self.room(sid) {
                    conn.send(text.clone());
                }
            }
            for (sid, reason, ended_at) in to_end {
                let bus = self.bus.clone();
                tokio::spawn(async move { end_session(&bus, sid, reason, ended_at).await });
            }
        }
    }

    /// Closes every socket with [`CLOSE_RESTART`] ("reconnect elsewhere") and waits up to the
    /// grace period for them to go.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        let conns: Vec<Arc<Conn>> = self
            .users
            .lock()
            .expect("hub lock")
            .values()
            .flatten()
            .cloned()
            .collect();
        for conn in &conns {
            conn.close_with(
                CLOSE_RESTART,
                "server shutting down; reconnect (to another node) and resume",
            );
        }
        let deadline = tokio::time::Instant::now() + self.config.shutdown_grace;
        while self.socket_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The own-message key of a sender's client message id.
pub fn own_key(sender_id: i64, client_msg_id: &str) -> String {
    format!("{sender_id}:{client_msg_id}")
}

/// Ends session `sid` for `reason` as the system, with a command id derived from the session and
/// the reason: `auto-end:<reason>:<sid>`. Refusals (already ended) are expected and ignored.
pub async fn end_session(bus: &CommandBus, sid: i64, reason: EndReason, ended_at: DateTime<Utc>) {
    let tag = match reason {
        EndReason::PrepaidTimeUsed => "prepaid",
        EndReason::Inactivity => "inactive",
        EndReason::Participant => "participant",
    };
    let mut meta = CommandMeta::new(Actor::system());
    meta.command_id = format!("auto-end:{tag}:{sid}");
    let command = SessionCommand::End {
        ended_by: 0,
        reason,
        ended_at,
    };
    match bus
        .execute::<ChatSession>(&sid.to_string(), command, &meta)
        .await
    {
        Ok(c) => tracing::info!(
            session_id = sid,
            ?reason,
            duplicate = c.duplicate,
            "session ended by the gateway"
        ),
        Err(CommandError::Rejected(e)) => {
            tracing::debug!(session_id = sid, error = %e, "auto-end refused (already ended)")
        }
        Err(e) => tracing::warn!(session_id = sid, error = %e, "auto-end failed; will retry"),
    }
}

/// Records [`crate::METRIC_FANOUT_SECONDS`] for a record stored at `published` that was just
/// handed to the sockets.
fn record_fanout(stream: &'static str, published: DateTime<Utc>) {
    let seconds = (Utc::now() - published).num_microseconds().unwrap_or(0) as f64 / 1e6;
    metrics::histogram!(crate::METRIC_FANOUT_SECONDS, "stream" => stream).record(seconds.max(0.0));
}
