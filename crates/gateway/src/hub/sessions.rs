//! The node's table of active sessions: learnt from the `chat_sessions` read model and then
//! `ev.session.>`, routed to the sessions' sockets (`session_start` once both sides are present,
//! the end), and the session timers (the prepaid-time warning, the end at the prepaid time or
//! after inactivity).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use chrono::{DateTime, Utc};
use domain::{ChatSession, EndReason, SessionCommand, SessionEvent};
use eventstore::envelope::Upcasters;
use eventstore::{Actor, CommandBus, CommandError, CommandMeta, Commit};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::protocol::frame;

use super::conn::Conn;
use super::fanout::record_fanout;
use super::state::{Active, Hub, Part};

/// An active session's row of the `chat_sessions` read model: id, user, counselor's login,
/// price per minute (fen), prepaid minutes, start.
type ActiveRow = (i64, i64, i64, i64, i32, Option<DateTime<Utc>>);

impl Hub {
    /// Sends `session_start` to this node's sockets of `session_id` that have not had it, once
    /// both the user and the counselor are present (on any node).
    pub(super) fn check_session_start(&self, session_id: i64) {
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
