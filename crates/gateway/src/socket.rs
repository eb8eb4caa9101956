//! One socket, one task: the handshake, then a loop that reads client frames, writes the
//! socket's queued frames, sends heartbeats, and finally the close frame.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use domain::{ChatSession, EndReason, SessionCommand, SessionStatus};
use eventstore::chat::{read_dedup_id, revoke_dedup_id, ChatRecord, ReadReceipt, Revocation};
use eventstore::{Actor, CommandMeta};
use futures::SinkExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::hub::{own_key, Conn, Hub, CLOSE_POLICY};
use crate::protocol::{error_frame, frame, ClientFrame, RateLimit};
use crate::GatewayState;

/// Largest frame the codec reads at all; frames above [`crate::protocol::MAX_FRAME_BYTES`] get
/// an `error` frame.
const MAX_READ_BYTES: usize = 1024 * 1024;

/// How long the writer tries to get the close frame out (to a slow client, after its backlog).
const CLOSE_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a closing socket waits for the client's close frame.
const CLOSE_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) fn refuse(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

pub(crate) fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
}

/// Authenticates a handshake: `?token=` or `Authorization: Bearer` (a user token) that is not
/// revoked (logout, password change) and whose account is enabled (the user API's
/// [`api::auth::TokenGate::check`]). Refusals are plain HTTP before the upgrade with
/// `{"error": msg}` (contract d.1); a draining node answers 503.
pub(crate) async fn authenticate(
    state: &GatewayState,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<i64, (StatusCode, String)> {
    if state.hub.is_draining() {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "node shutting down; connect to another node".into(),
        ));
    }
    let from_header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let token = query_param(uri, "token")
        .filter(|t| !t.is_empty())
        .or(from_header)
        .ok_or((StatusCode::UNAUTHORIZED, "missing token".to_string()))?;
    let claims = state
        .jwt
        .verify(&token)
        .map_err(|e| (StatusCode::UNAUTHORIZED, e.msg))?;
    if claims.kind != web::auth::KIND_USER {
        return Err((
            StatusCode::UNAUTHORIZED,
            "a user token is required".to_string(),
        ));
    }
    if let Err(e) = state.tokens.check(&state.db, &claims).await {
        if e.status.is_server_error() {
            tracing::error!(error = %e.msg, "token check");
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily unavailable".into(),
            ));
        }
        return Err((e.status, e.msg));
    }
    Ok(claims.user_id)
}

/// What a socket does right after the upgrade.
#[derive(Default)]
pub(crate) struct Opening {
    pub(crate) session: Option<i64>,
    pub(crate) group: Option<i64>,
    pub(crate) after_seq: Option<u64>,
    pub(crate) greeting: Option<String>,
}

/// `GET /ws/chat/{session_id}?token=…[&after_seq=N]`: a socket bound to that session on connect
/// (when the caller is a participant of an active session), as MyChat's web client expects
/// (contract d.5); with `after_seq` it resumes from that sequence first.
pub async fn ws_chat(
    State(state): State<GatewayState>,
    Path(session_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Ok(session_id) = session_id.parse::<i64>() else {
        return refuse(StatusCode::BAD_REQUEST, "bad session id");
    };
    let after_seq = match query_param(&uri, "after_seq").map(|s| s.parse::<u64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return refuse(StatusCode::BAD_REQUEST, "after_seq must be a sequence"),
    };
    let user_id = match authenticate(&state, &uri, &headers).await {
        Ok(id) => id,
        Err((status, msg)) => return refuse(status, &msg),
    };
    upgrade(
        ws,
        state,
        user_id,
        Opening {
            session: Some(session_id),
            after_seq,
            ..Default::default()
        },
    )
}

/// `GET /ws?token=…`: a user socket; it binds to a session with a `join` (or `resume`) frame.
pub async fn ws_any(
    State(state): State<GatewayState>,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    match authenticate(&state, &uri, &headers).await {
        Ok(user_id) => upgrade(ws, state, user_id, Opening::default()),
        Err((status, msg)) => refuse(status, &msg),
    }
}

/// `GET /ws/counselor/{id}?token=…`: the counselor's own socket; requires `counselors.id = {id}`
/// and `counselors.user_id = token user` (403 otherwise, 400 bad id); sends `connected
/// {counselor_id, timestamp}` on open (contract d.1).
pub async fn ws_counselor(
    State(state): State<GatewayState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Ok(counselor_id) = id.parse::<i64>() else {
        return refuse(StatusCode::BAD_REQUEST, "bad counselor id");
    };
    let user_id = match authenticate(&state, &uri, &headers).await {
        Ok(id) => id,
        Err((status, msg)) => return refuse(status, &msg),
    };
    let owner: Result<Option<Option<i64>>, _> =
        sqlx::query_scalar("SELECT user_id FROM counselors WHERE id = $1")
            .bind(counselor_id)
            .fetch_optional(&state.db)
            .await;
    match owner {
        Ok(Some(Some(owner))) if owner == user_id => {}
        Ok(_) => return refuse(StatusCode::FORBIDDEN, "not this counselor's account"),
        Err(e) => {
            tracing::error!(error = %e, "counselor lookup");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable");
        }
    }
    let greeting = frame(
        "connected",
        0,
        json!({ "counselor_id": counselor_id, "timestamp": Utc::now().timestamp() }),
    );
    upgrade(
        ws,
        state,
        user_id,
        Opening {
            greeting: Some(greeting),
            ..Default::default()
        },
    )
}

pub(crate) fn upgrade(
    ws: WebSocketUpgrade,
    state: GatewayState,
    user_id: i64,
    opening: Opening,
) -> Response {
    // Small buffers: an idle socket should cost a few KiB.
    // Frames up to 1 MiB are read and refused with an `error` frame (the socket keeps
    // working); beyond that the codec closes the socket (1009).
    ws.max_message_size(MAX_READ_BYTES)
        .max_frame_size(MAX_READ_BYTES)
        .read_buffer_size(2 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| run(state, socket, user_id, opening))
}

pub(crate) struct Socket {
    pub(crate) state: GatewayState,
    pub(crate) conn: Arc<Conn>,
    pub(crate) bound: Option<i64>,
    /// The group the socket is bound to ([`crate::group_socket`]).
    pub(crate) bound_group: Option<i64>,
    /// The group the socket's URL names (`/ws/group/{id}`), bound or refused.
    pub(crate) group_path: Option<i64>,
}

/// Writes every queued frame of `conn` to the socket. False when the socket is gone (a write
/// failed, or the socket is closing while a write to a client that does not read was blocked).
async fn flush(socket: &mut WebSocket, conn: &Conn, batch: &mut Vec<Utf8Bytes>) -> bool {
    conn.take_frames(batch);
    if batch.is_empty() {
        return true;
    }
    let write = async {
        for text in batch.drain(..) {
            socket.feed(Message::Text(text)).await?;
        }
        socket.flush().await
    };
    let ok = tokio::select! {
        r = write => r.is_ok(),
        _ = conn.close.cancelled() => false,
    };
    batch.clear();
    if batch.capacity() > 16 {
        *batch = Vec::new();
    }
    ok
}

/// Runs `work` (the handling of one client frame, which may wait on JetStream or on room in the
/// queue) while still writing the socket's queued frames. False when the socket is gone.
async fn drive(
    socket: &mut WebSocket,
    conn: &Conn,
    batch: &mut Vec<Utf8Bytes>,
    work: impl std::future::Future<Output = ()>,
) -> bool {
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            biased;
            _ = &mut work => return flush(socket, conn, batch).await,
            _ = conn.ready() => if !flush(socket, conn, batch).await { return false; },
            _ = conn.close.cancelled() => return false,
        }
    }
}

/// One socket, one task: it reads client frames, writes queued frames and heartbeats, and closes.
/// The handling of a client frame is boxed, so an idle socket's task stays small (the
/// memory an idle socket costs).
async fn run(state: GatewayState, mut socket: WebSocket, user_id: i64, opening: Opening) {
    let conn = state.hub.connect(user_id);
    let ping_every = state.hub.config().ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Vec<Utf8Bytes> = Vec::new();
    let mut s = Socket {
        state,
        conn: conn.clone(),
        bound: None,
        bound_group: None,
        group_path: opening.group,
    };
    let config = s.state.hub.config().clone();
    let mut limit = RateLimit {
        tokens: config.burst,
        rate: config.frames_per_second,
        burst: config.burst,
        at: Instant::now(),
    };
    let mut alive = true;
    if let Some(g) = opening.greeting {
        s.conn.send(g);
    }
    if let Some(id) = opening.session {
        let open = Box::pin(async {
            match opening.after_seq {
                Some(after) => s.resume(id, after).await,
                None => {
                    s.bind(id).await;
                }
            }
        });
        alive = drive(&mut socket, &conn, &mut batch, open).await;
    }
    if let (Some(group), true) = (opening.group, alive) {
        let open = Box::pin(s.open_group(group, opening.after_seq));
        alive = drive(&mut socket, &conn, &mut batch, open).await;
    }
    while alive {
        tokio::select! {
            biased;
            _ = conn.close.cancelled() => break,
            _ = conn.ready() => alive = flush(&mut socket, &conn, &mut batch).await,
            _ = ping.tick() => {
                alive = tokio::select! {
                    r = socket.send(Message::Ping(Default::default())) => r.is_ok(),
                    _ = conn.close.cancelled() => false,
                };
            }
            next = socket.recv() => {
                let counted = matches!(next, Some(Ok(Message::Text(_) | Message::Binary(_))));
                if counted && !limit.allow() {
                    conn.close_with(CLOSE_POLICY, "rate limit exceeded: too many frames");
                    break;
                }
                match next {
                    Some(Ok(Message::Text(text))) => {
                        let work = Box::pin(s.handle(text));
                        alive = drive(&mut socket, &conn, &mut batch, work).await;
                    }
                    Some(Ok(Message::Binary(_))) => s.conn.send(error_frame(
                        0,
                        "binary frames are not supported; send JSON text",
                    )),
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        // Oversize frames end here (the codec refuses them): say why.
                        conn.close_with(1009, &format!("bad frame: {e}"));
                        break;
                    }
                    Some(Ok(_)) => {}
                }
            }
        }
    }
    conn.close.cancel();
    let (code, reason) = conn.close_reason();
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    if let Ok(Ok(())) = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, socket.send(frame)).await {
        // The closing handshake: read (and drop) what the client still sends until its close
        // frame, so that the connection is not reset with unread data (the client would lose
        // the close frame and its reason).
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
            while let Some(Ok(m)) = socket.recv().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    // Only now (the close frame is out) does the socket stop counting: a draining node waits.
    if let Some(group) = s.bound_group {
        s.state.hub.leave_group(group, s.conn.id);
    }
    s.state.hub.disconnect(&s.conn, s.bound);
}

impl Socket {
    fn error(&self, session_id: i64, message: &str) {
        self.conn.send(error_frame(session_id, message));
    }

    /// The session, from the node's table of active sessions when it has it, else loaded from
    /// the log; refused unless the socket's user takes part in it.
    async fn load(&self, session_id: i64) -> Result<ChatSession, String> {
        if let Some(s) = self.state.hub.cached_session(session_id) {
            return if s.is_participant(self.conn.user_id) {
                Ok(s)
            } else {
                Err("not a participant of this session".into())
            };
        }
        match self
            .state
            .bus
            .load::<ChatSession>(&session_id.to_string())
            .await
        {
            Ok((_, 0)) => Err("session not found".into()),
            Ok((session, _)) if !session.is_participant(self.conn.user_id) => {
                Err("not a participant of this session".into())
            }
            Ok((session, _)) => {
                self.state.hub.note_session(session_id, &session);
                Ok(session)
            }
            Err(e) => {
                tracing::error!(error = %e, session_id, "loading a session");
                Err("temporarily unavailable".into())
            }
        }
    }

    /// Binds the socket to a session it takes part in. An ended session is reported with a
    /// `session_end` frame and not bound (DESIGN §6: told, and sent nothing else).
    async fn bind(&mut self, session_id: i64) -> bool {
        match self.load(session_id).await {
            Err(e) => {
                self.error(session_id, &e);
                false
            }
            Ok(session) if session.status != SessionStatus::Active => {
                self.conn.send(frame(
                    "session_end",
                    session_id,
                    json!({ "session_id": session_id, "ended_by": 0, "already_ended": true }),
                ));
                false
            }
            Ok(session) => {
                if self.bound == Some(session_id) {
                    return true;
                }
                if let Some(old) = self.bound.replace(session_id) {
                    self.state.hub.leave(old, self.conn.id);
                }
                self.conn.send(frame(
                    "join_success",
                    session_id,
                    json!({ "session_id": session_id, "status": session.status.code() }),
                ));
                self.state.hub.join(session_id, self.conn.clone());
                true
            }
        }
    }

    async fn handle(&mut self, text: Utf8Bytes) {
        let frame_in = match ClientFrame::parse(text.as_str()) {
            Ok(f) => f,
            Err(e) => return self.error(0, &e),
        };
        if let Some(group) = self.group_target(&frame_in) {
            return self.group(frame_in, group).await;
        }
        let session_id = frame_in.session_id.filter(|id| *id != 0).or(self.bound);
        let need = |name: &str| format!("{name} needs a session_id");
        match (frame_in.kind.as_str(), session_id) {
            ("ping", _) => {
                if let Some(id) = self.bound {
                    self.state.hub.touch(id);
                }
                self.conn.send(frame(
                    "pong",
                    0,
                    json!({ "timestamp": Utc::now().timestamp() }),
                ))
            }
            ("join", Some(id)) => {
                self.bind(id).await;
            }
            ("message", Some(id)) => self.message(id, &frame_in).await,
            ("leave", Some(id)) => self.leave(id).await,
            ("typing" | "typing_stop", Some(id)) => self.typing(id, &frame_in).await,
            ("read", Some(id)) => self.read(id, &frame_in).await,
            ("revoke", Some(id)) => self.revoke(id, &frame_in).await,
            ("resume", Some(id)) => {
                let after = frame_in.body().get("after_seq").and_then(|v| v.as_u64());
                match after {
                    Some(after) => self.resume(id, after).await,
                    None => self.error(id, "resume needs after_seq (a sequence number)"),
                }
            }
            (
                kind @ ("join" | "message" | "leave" | "typing" | "typing_stop" | "read" | "revoke"
                | "resume"),
                None,
            ) => self.error(0, &need(kind)),
            (other, _) => self.error(
                session_id.unwrap_or(0),
                &format!("unknown frame type `{other}`"),
            ),
        }
    }

    /// Stores a message in its chat shard, then acks it to the sender with its position. Nothing is
    /// stored when the sender is muted, not a participant, or the session is not active.
    async fn message(&mut self, session_id: i64, f: &ClientFrame) {
        if self.state.hub.is_muted(self.conn.user_id) {
            return self.error(session_id, "you are muted");
        }
        let session = match self.load(session_id).await {
            Ok(s) => s,
            Err(e) => return self.error(session_id, &e),
        };
        let draft = domain::MessageDraft {
            content: f.field("content"),
            content_type: f.field("content_type"),
            file_url: f.field("file_url"),
            client_msg_id: f.client_msg_id(),
        };
        let message = match session.accept_message(self.conn.user_id, draft) {
            Ok(m) => eventstore::chat::ChatMessage::accepted(
                session_id,
                self.conn.user_id,
                m,
                chrono::Utc::now(),
            ),
            Err(e) => return self.error(session_id, &e.to_string()),
        };
        let id = message.client_msg_id.clone();
        let own = own_key(self.conn.user_id, &id);
        self.conn
            .sent
            .lock()
            .expect("sent lock")
            .insert(own.clone());
        match self.state.hub.chat().append_message(&message).await {
            Ok(appended) => {
                // A resend: drop the own-key again only if the first copy already came back
                // through the stream (otherwise that delivery still has to find it, or the
                // sender would get its own message echoed).
                if appended.duplicate && self.conn.hwm(session_id) >= appended.seq {
                    self.conn.sent.lock().expect("sent lock").remove(&own);
                }
                self.conn.send(frame(
                    "ack",
                    session_id,
                    json!({ "client_msg_id": id, "seq": appended.seq, "message_id": appended.id, "duplicate": appended.duplicate }),
                ));
            }
            Err(e) => {
                self.conn.sent.lock().expect("sent lock").remove(&own);
                tracing::error!(error = %e, session_id, "storing a chat message");
                // Only this session's stream is concerned: the socket stays, and so do the
                // other sessions.
                self.error(
                    session_id,
                    "message not stored (its chat stream is unavailable); retry with the same id",
                );
            }
        }
    }

    /// The stored message at position `seq` of `session_id`'s stream, if it is one.
    async fn stored_message(
        &self,
        session_id: i64,
        seq: u64,
    ) -> Result<eventstore::chat::ChatMessage, String> {
        let chat = self.state.hub.chat();
        let place = chat.place(session_id);
        let record =
            eventstore::chat_read::record_at(chat.jetstream(), chat.layout(), place.shard, seq)
                .await
                .map_err(|_| "temporarily unavailable".to_string())?
                .ok_or_else(|| format!("message {seq} not found"))?;
        match serde_json::from_slice::<ChatRecord>(&record.body) {
            Ok(ChatRecord::Message(m)) if m.session_id == session_id => Ok(m),
            _ => Err(format!("message {seq} not found in this session")),
        }
    }

    /// The position a `read` / `revoke` frame names: its `seq`, or its `message_id` (a
    /// message id, [`eventstore::chat::message_id`], which must be of the session's stream).
    fn message_seq(&self, session_id: i64, f: &ClientFrame) -> Result<u64, String> {
        let body = f.body();
        let number = |v: Option<&serde_json::Value>| match v {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        if let Some(seq) = number(body.get("seq")) {
            return Ok(seq);
        }
        let Some(id) = number(body.get("message_id")) else {
            return Err("needs message_id (the message's id) or seq".into());
        };
        let (shard, seq) = eventstore::chat::split_message_id(id as i64);
        if shard != self.state.hub.chat().place(session_id).shard || seq == 0 {
            return Err(format!("message {id} is not a message of this session"));
        }
        Ok(seq)
    }

    /// `read {message_id}`: only the recipient may mark a message read; stored once per message
    /// and reader; everyone in the session gets `message_read` from the stream.
    async fn read(&mut self, session_id: i64, f: &ClientFrame) {
        let seq = match self.message_seq(session_id, f) {
            Ok(seq) => seq,
            Err(e) => return self.error(session_id, &format!("read {e}")),
        };
        if let Err(e) = self.load(session_id).await {
            return self.error(session_id, &e);
        }
        let message = match self.stored_message(session_id, seq).await {
            Ok(m) => m,
            Err(e) => return self.error(session_id, &e),
        };
        if message.sender_id == self.conn.user_id {
            return self.error(session_id, "only the recipient can mark a message read");
        }
        let receipt = ReadReceipt {
            session_id,
            message_seq: seq,
            read_by: self.conn.user_id,
            read_at: Utc::now(),
        };
        let record = ChatRecord::MessageRead(receipt.clone());
        self.store(session_id, &record, &read_dedup_id(&receipt), "read")
            .await;
    }

    /// `revoke {message_id}`: only the sender may revoke, once.
    async fn revoke(&mut self, session_id: i64, f: &ClientFrame) {
        let seq = match self.message_seq(session_id, f) {
            Ok(seq) => seq,
            Err(e) => return self.error(session_id, &format!("revoke {e}")),
        };
        let session = match self.load(session_id).await {
            Ok(s) => s,
            Err(e) => return self.error(session_id, &e),
        };
        if session.status != SessionStatus::Active {
            return self.error(session_id, "session has ended");
        }
        let message = match self.stored_message(session_id, seq).await {
            Ok(m) => m,
            Err(e) => return self.error(session_id, &e),
        };
        if message.sender_id != self.conn.user_id {
            return self.error(session_id, "only the sender can revoke a message");
        }
        let revocation = Revocation {
            session_id,
            message_seq: seq,
            revoked_by: self.conn.user_id,
            revoked_at: Utc::now(),
        };
        let record = ChatRecord::MessageRevoked(revocation.clone());
        self.store(session_id, &record, &revoke_dedup_id(&revocation), "revoke")
            .await;
    }

    async fn store(&self, session_id: i64, record: &ChatRecord, dedup: &str, what: &str) {
        match self.state.hub.chat().append(record, dedup).await {
            Ok(a) => self.conn.send(frame(
                "ack",
                session_id,
                json!({ "kind": what, "seq": a.seq, "message_id": a.id, "duplicate": a.duplicate }),
            )),
            Err(e) => {
                tracing::error!(error = %e, session_id, "storing a chat record");
                self.error(session_id, &format!("{what} not stored; retry"));
            }
        }
    }

    /// Typing indicators: core NATS `typing.<session_id>`, never stored. The web dialect's
    /// `{"type":"typing","payload":{"is_typing":false}}` means `typing_stop`.
    async fn typing(&mut self, session_id: i64, f: &ClientFrame) {
        if let Err(e) = self.load(session_id).await {
            return self.error(session_id, &e);
        }
        self.publish_typing(format!("typing.{session_id}"), f).await;
    }

    /// Publishes the socket user's typing indicator of frame `f` on core NATS `subject`
    /// (`{user_id, kind: "typing"|"typing_stop"}`; the web dialect's `is_typing: false` is a
    /// stop).
    pub(crate) async fn publish_typing(&self, subject: String, f: &ClientFrame) {
        let stop = f.kind == "typing_stop"
            || f.body().get("is_typing").and_then(|v| v.as_bool()) == Some(false);
        let payload = json!({
            "user_id": self.conn.user_id,
            "kind": if stop { "typing_stop" } else { "typing" },
        });
        if let Err(e) = self
            .state
            .nats
            .publish(subject, payload.to_string().into())
            .await
        {
            tracing::warn!(error = %e, "publishing typing");
        }
    }

    /// Replays `session_id`'s records after position `after_seq` from its chat stream
    /// ([`eventstore::chat_read::records_after`]), then the live tail: records arriving meanwhile are held and
    /// delivered after, each sequence once. Ends with `resumed {session_id, after_seq, replayed,
    /// last_seq, recovered}`; `recovered: false` when the stream no longer holds all of them (or
    /// more than the replay limit): the client reloads from REST.
    async fn resume(&mut self, session_id: i64, after_seq: u64) {
        // Hold live records back *before* joining the room, so none slips past the replay.
        self.conn.begin_replay(session_id, after_seq);
        if !self.bind(session_id).await {
            self.conn.end_replay(session_id);
            return;
        }
        let outcome = self.replay(session_id, after_seq).await;
        let (replayed, recovered) = match outcome {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, session_id, "resume");
                (0, false)
            }
        };
        let done = frame(
            "resumed",
            session_id,
            json!({
                "session_id": session_id,
                "after_seq": after_seq,
                "replayed": replayed,
                "last_seq": self.conn.hwm(session_id),
                "recovered": recovered,
            }),
        );
        self.conn.send_wait(done).await;
        self.conn.end_replay(session_id);
    }

    async fn replay(&self, session_id: i64, after_seq: u64) -> anyhow::Result<(usize, bool)> {
        let chat = self.state.hub.chat();
        let place = chat.place(session_id);
        let max = self.state.hub.config().max_replay;
        let (records, recovered) = eventstore::chat_read::records_after(
            chat.jetstream(),
            chat.layout(),
            place.shard,
            &place.subject,
            after_seq,
            max,
        )
        .await?;
        let mut replayed = 0;
        for r in records {
            let Ok(record) = serde_json::from_slice::<ChatRecord>(&r.body) else {
                continue;
            };
            if self.conn.take_replayed(session_id, r.position) {
                let (text, _) = Hub::record_frame(place.shard, r.position, &record);
                if !self.conn.send_wait(text).await {
                    anyhow::bail!("socket too slow during replay");
                }
                replayed += 1;
            }
        }
        Ok((replayed, recovered))
    }

    /// Ends (and bills) the session; both sides then get `billing` and `session_end` from the
    /// stream.
    async fn leave(&mut self, session_id: i64) {
        if let Err(e) = self.load(session_id).await {
            return self.error(session_id, &e);
        }
        let command = SessionCommand::End {
            ended_by: self.conn.user_id,
            reason: EndReason::Participant,
            ended_at: Utc::now(),
        };
        let meta = CommandMeta::new(Actor::user(self.conn.user_id));
        if let Err(e) = self
            .state
            .bus
            .execute::<ChatSession>(&session_id.to_string(), command, &meta)
            .await
        {
            self.error(session_id, &e.to_string());
        }
    }
}

/// Used by `mychat serve` to stop a node: drain its sockets once `shutdown` fires.
pub async fn drain_on(hub: Arc<Hub>, shutdown: CancellationToken) {
    shutdown.cancelled().await;
    hub.drain().await;
}
