//! The node's routing table and its two stream consumers.
//!
//! Sockets bound to a session are kept per session id. The node reads `CHAT` and `ev.session.>`
//! with **one ordered consumer each, for the whole node** (never one per socket), and routes each
//! record to the sockets of its session.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use backon::BackoffBuilder;
use domain::SessionEvent;
use eventstore::chat::ChatRecord;
use eventstore::envelope::Upcasters;
use eventstore::Commit;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::frame;

/// Frames a socket may have queued before it is considered too slow and closed.
pub const SEND_QUEUE: usize = 256;

/// One connected socket, as the hub sees it.
pub struct Conn {
    pub id: u64,
    pub user_id: i64,
    /// The socket's outbound queue (bounded: [`SEND_QUEUE`]).
    pub tx: mpsc::Sender<String>,
    /// Cancelled to close the socket (slow consumer, shutdown); the reason goes in the close frame.
    pub close: CancellationToken,
    /// Client message ids this socket sent and has not yet seen come back from the stream: its
    /// own messages are acked to it, not echoed.
    pub sent: Mutex<HashSet<String>>,
}

impl Conn {
    /// Queues a frame; a full queue closes the socket (it can reconnect and reload).
    pub fn send(&self, text: String) {
        if self.tx.try_send(text).is_err() {
            self.close.cancel();
        }
    }
}

/// The node's sockets by session.
#[derive(Default)]
pub struct Hub {
    rooms: Mutex<HashMap<i64, Vec<Arc<Conn>>>>,
    next_id: AtomicU64,
    /// Users muted by an administrator (kept in step through NATS, see `admin_bus`).
    muted: Mutex<HashSet<i64>>,
    /// When each bound socket (by connection id) joined (admin presence, issue 4).
    joined_at: Mutex<HashMap<u64, chrono::DateTime<chrono::Utc>>>,
}

impl Hub {
    /// A new connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Binds a socket to a session.
    pub fn join(&self, session_id: i64, conn: Arc<Conn>) {
        let mut rooms = self.rooms.lock().expect("hub lock");
        let room = rooms.entry(session_id).or_default();
        if !room.iter().any(|c| c.id == conn.id) {
            self.joined_at
                .lock()
                .expect("hub lock")
                .entry(conn.id)
                .or_insert_with(chrono::Utc::now);
            room.push(conn);
        }
    }

    /// Unbinds a socket.
    pub fn leave(&self, session_id: i64, conn_id: u64) {
        let mut rooms = self.rooms.lock().expect("hub lock");
        if let Some(room) = rooms.get_mut(&session_id) {
            room.retain(|c| c.id != conn_id);
            self.joined_at.lock().expect("hub lock").remove(&conn_id);
            if room.is_empty() {
                rooms.remove(&session_id);
            }
        }
    }

    /// The sockets bound to a session.
    fn room(&self, session_id: i64) -> Vec<Arc<Conn>> {
        self.rooms
            .lock()
            .expect("hub lock")
            .get(&session_id)
            .cloned()
            .unwrap_or_default()
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

    fn route_chat(&self, seq: u64, record: ChatRecord) {
        match record {
            ChatRecord::Message(m) => {
                let data = json!({
                    "id": seq,
                    "seq": seq,
                    "message_id": seq,
                    "session_id": m.session_id,
                    "sender_id": m.sender_id,
                    "sender_type": m.sender_type,
                    "content_type": m.content_type,
                    "content": m.content,
                    "file_url": m.file_url,
                    "client_msg_id": m.client_msg_id,
                    "created_at": m.sent_at,
                });
                let text = frame("message", m.session_id, data);
                for conn in self.room(m.session_id) {
                    let own = conn
                        .sent
                        .lock()
                        .expect("sent lock")
                        .remove(&m.client_msg_id);
                    if !own {
                        conn.send(text.clone());
                    }
                }
            }
            ChatRecord::Redaction(r) => {
                let text = frame(
                    "message_revoked",
                    r.session_id,
                    json!({ "seq": seq, "session_id": r.session_id, "message_ids": r.message_ids, "reason": r.reason }),
                );
                for conn in self.room(r.session_id) {
                    conn.send(text.clone());
                }
            }
        }
    }

    /// Every socket bound on this node with its session id (the admin presence source, issue 4).
    pub fn connections(&self) -> Vec<(i64, Arc<Conn>)> {
        self.rooms
            .lock()
            .expect("hub lock")
            .iter()
            .flat_map(|(session, conns)| conns.iter().map(move |c| (*session, c.clone())))
            .collect()
    }

    /// When connection `conn_id` joined a session on this node.
    pub fn joined_at(&self, conn_id: u64) -> Option<chrono::DateTime<chrono::Utc>> {
        self.joined_at
            .lock()
            .expect("hub lock")
            .get(&conn_id)
            .copied()
    }

    /// Mutes or unmutes a user on this node (admin `mute`, issue 4).
    pub fn set_muted(&self, user_id: i64, muted: bool) {
        let mut set = self.muted.lock().expect("mute lock");
        if muted {
            set.insert(user_id);
        } else {
            set.remove(&user_id);
        }
    }

    /// True when an administrator muted this user: their messages are refused with an error frame.
    pub fn is_muted(&self, user_id: i64) -> bool {
        self.muted.lock().expect("mute lock").contains(&user_id)
    }

    fn route_session_event(
        &self,
        session_id: i64,
        event: SessionEvent,
        ended_by: &mut HashMap<i64, i64>,
    ) {
        match event {
            SessionEvent::SessionEnded { ended_by: by, .. } => {
                ended_by.insert(session_id, by);
            }
            SessionEvent::SessionBilled {
                duration_seconds,
                billed_minutes,
                price_per_minute,
                amount,
                platform_fee,
                counselor_fee,
                refund,
                ..
            } => {
                let yuan = |f: i64| f as f64 / 100.0;
                let billing = frame(
                    "billing",
                    session_id,
                    json!({
                        "duration": duration_seconds,
                        "duration_minutes": billed_minutes,
                        "price_per_minute": yuan(price_per_minute),
                        "total_amount": yuan(amount),
                        "platform_fee": yuan(platform_fee),
                        "counselor_fee": yuan(counselor_fee),
                        "refund": yuan(refund),
                    }),
                );
                let end = frame(
                    "session_end",
                    session_id,
                    json!({ "session_id": session_id, "ended_by": ended_by.remove(&session_id).unwrap_or(0) }),
                );
                let room = self
                    .rooms
                    .lock()
                    .expect("hub lock")
                    .remove(&session_id)
                    .unwrap_or_default();
                for conn in room {
                    conn.send(billing.clone());
                    conn.send(end.clone());
                }
            }
            SessionEvent::SessionStarted { .. } => {}
        }
    }

    /// Runs the node's `CHAT` consumer until `shutdown`: one ordered consumer, new messages only.
    pub async fn run_chat_fanout(
        self: Arc<Self>,
        js: async_nats::jetstream::Context,
        shutdown: CancellationToken,
    ) {
        self.run_consumer(
            js,
            eventstore::CHAT_STREAM,
            "chat.>",
            shutdown,
            |hub, msg, _| {
                let seq = msg.info().map(|i| i.stream_sequence).unwrap_or_default();
                match serde_json::from_slice::<ChatRecord>(&msg.payload) {
                    Ok(record) => hub.route_chat(seq, record),
                    Err(e) => tracing::warn!(seq, error = %e, "undecodable chat record"),
                }
            },
        )
        .await
    }

    /// Runs the node's session-event consumer (`ev.session.>`) until `shutdown`.
    pub async fn run_session_events(
        self: Arc<Self>,
        js: async_nats::jetstream::Context,
        shutdown: CancellationToken,
    ) {
        self.run_consumer(
            js,
            eventstore::EVENTS_STREAM,
            "ev.session.>",
            shutdown,
            |hub, msg, ended_by| {
                let seq = msg.info().map(|i| i.stream_sequence).unwrap_or_default();
                let Ok(commit) = Commit::decode(&msg.payload) else {
                    tracing::warn!(seq, "undecodable commit");
                    return;
                };
                for stored in commit.into_stored(seq) {
                    let stored = Upcasters::default().upcast(stored);
                    let (Some(id), Ok(event)) =
                        (stored.aggregate_id_i64(), stored.decode::<SessionEvent>())
                    else {
                        continue;
                    };
                    hub.route_session_event(id, event, ended_by);
                }
            },
        )
        .await
    }

    async fn run_consumer(
        self: Arc<Self>,
        js: async_nats::jetstream::Context,
        stream: &str,
        subject: &str,
        shutdown: CancellationToken,
        route: impl Fn(&Hub, &async_nats::jetstream::Message, &mut HashMap<i64, i64>),
    ) {
        let mut backoff = backon::ExponentialBuilder::default()
            .with_max_delay(Duration::from_secs(5))
            .without_max_times()
            .build();
        let mut state = HashMap::new();
        // After a reconnect, continue right after the last record routed: no gap.
        let mut last_seq = 0u64;
        while !shutdown.is_cancelled() {
            let deliver_policy = if last_seq == 0 {
                DeliverPolicy::New
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: last_seq + 1,
                }
            };
            let result: anyhow::Result<()> = async {
                let consumer = js
                    .get_stream(stream)
                    .await?
                    .create_consumer(pull::OrderedConfig {
                        filter_subject: subject.to_string(),
                        deliver_policy,
                        ..Default::default()
                    })
                    .await?;
                let mut messages = consumer.messages().await?;
                loop {
                    tokio::select! {
                        m = messages.next() => match m {
                            Some(Ok(m)) => {
                                last_seq = m.info().map(|i| i.stream_sequence).unwrap_or(last_seq);
                                route(&self, &m, &mut state);
                            }
                            Some(Err(e)) => return Err(e.into()),
                            None => anyhow::bail!("consumer ended"),
                        },
                        _ = shutdown.cancelled() => return Ok(()),
                    }
                }
            }
            .await;
            if let Err(e) = result {
                let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(
                    stream,
                    error = format!("{e:#}"),
                    ?delay,
                    "fan-out consumer failed; restarting"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}
