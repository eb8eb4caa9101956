//! One socket: the handshake, the reader loop (client frames), the writer task (queued frames,
//! heartbeats).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use domain::{ChatSession, EndReason, SessionCommand, SessionStatus};
use eventstore::chat::append_message;
use eventstore::{Actor, CommandMeta};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hub::{Conn, SEND_QUEUE};
use crate::protocol::{error_frame, frame, ClientFrame, MAX_FRAME_BYTES};
use crate::GatewayState;

/// Interval of the server's WebSocket ping control frames (contract d.7: 54 s; shorter here).
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

fn refuse(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

/// Authenticates a handshake: `?token=` or `Authorization: Bearer` (a user token).
fn authenticate(
    state: &GatewayState,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<i64, (StatusCode, String)> {
    let from_header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let from_query = uri.query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v.to_string())
    });
    let token = from_query
        .or(from_header)
        .ok_or((StatusCode::UNAUTHORIZED, "missing token".to_string()))?;
    let claims = state
        .jwt
        .verify(&token)
        .map_err(|e| (StatusCode::UNAUTHORIZED, e.msg))?;
    if claims.kind != api::auth::KIND_USER {
        return Err((
            StatusCode::UNAUTHORIZED,
            "a user token is required".to_string(),
        ));
    }
    Ok(claims.user_id)
}

/// `GET /ws/chat/{session_id}?token=…`: a socket bound to that session on connect (when the
/// caller is a participant of an active session), as MyChat's web client expects (contract d.5).
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
    let user_id = match authenticate(&state, &uri, &headers) {
        Ok(id) => id,
        Err((status, msg)) => return refuse(status, &msg),
    };
    upgrade(ws, state, user_id, Some(session_id))
}

/// `GET /ws?token=…`: a user socket; it binds to a session with a `join` frame.
pub async fn ws_any(
    State(state): State<GatewayState>,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    match authenticate(&state, &uri, &headers) {
        Ok(user_id) => upgrade(ws, state, user_id, None),
        Err((status, msg)) => refuse(status, &msg),
    }
}

fn upgrade(
    ws: WebSocketUpgrade,
    state: GatewayState,
    user_id: i64,
    session_id: Option<i64>,
) -> Response {
    ws.max_message_size(MAX_FRAME_BYTES)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .on_upgrade(move |socket| run(state, socket, user_id, session_id))
}

struct Socket {
    state: GatewayState,
    conn: Arc<Conn>,
    bound: Option<i64>,
}

async fn run(state: GatewayState, socket: WebSocket, user_id: i64, session_id: Option<i64>) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<String>(SEND_QUEUE);
    let close = CancellationToken::new();
    let conn = Arc::new(Conn {
        id: state.hub.next_conn_id(),
        user_id,
        tx,
        close: close.clone(),
        sent: Mutex::new(HashSet::new()),
    });
    let writer_close = close.clone();
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        loop {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(text) => {
                        if sink.send(Message::Text(text.into())).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                        break;
                    }
                }
                _ = writer_close.cancelled() => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame { code: 4000, reason: "closed by server (slow consumer or shutdown); reconnect".into() })))
                        .await;
                    break;
                }
            }
        }
    });

    let mut s = Socket {
        state,
        conn,
        bound: None,
    };
    if let Some(id) = session_id {
        s.bind(id).await;
    }
    loop {
        let next = tokio::select! {
            m = stream.next() => m,
            _ = close.cancelled() => break,
        };
        match next {
            Some(Ok(Message::Text(text))) => s.handle(text.as_str()).await,
            Some(Ok(Message::Binary(_))) => s.conn.send(error_frame(
                0,
                "binary frames are not supported; send JSON text",
            )),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    if let Some(id) = s.bound {
        s.state.hub.leave(id, s.conn.id);
    }
    close.cancel();
    let _ = writer.await;
}

impl Socket {
    fn error(&self, session_id: i64, message: &str) {
        self.conn.send(error_frame(session_id, message));
    }

    async fn load(&self, session_id: i64) -> Result<ChatSession, String> {
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
            Ok((session, _)) => Ok(session),
            Err(e) => {
                tracing::error!(error = %e, session_id, "loading a session");
                Err("temporarily unavailable".into())
            }
        }
    }

    /// Binds the socket to a session it takes part in; an ended session is reported and not bound.
    async fn bind(&mut self, session_id: i64) {
        match self.load(session_id).await {
            Err(e) => self.error(session_id, &e),
            Ok(session) if session.status != SessionStatus::Active => {
                self.error(session_id, "session has ended")
            }
            Ok(session) => {
                if let Some(old) = self.bound.replace(session_id) {
                    self.state.hub.leave(old, self.conn.id);
                }
                self.state.hub.join(session_id, self.conn.clone());
                self.conn.send(frame(
                    "join_success",
                    session_id,
                    json!({ "session_id": session_id, "status": session.status.code() }),
                ));
            }
        }
    }

    async fn handle(&mut self, text: &str) {
        let frame_in = match ClientFrame::parse(text) {
            Ok(f) => f,
            Err(e) => return self.error(0, &e),
        };
        let session_id = frame_in.session_id.filter(|id| *id != 0).or(self.bound);
        match frame_in.kind.as_str() {
            "ping" => self.conn.send(frame(
                "pong",
                0,
                json!({ "timestamp": Utc::now().timestamp() }),
            )),
            "join" => match session_id {
                Some(id) => self.bind(id).await,
                None => self.error(0, "join needs a session_id"),
            },
            "message" => match session_id {
                Some(id) => self.message(id, &frame_in).await,
                None => self.error(0, "message needs a session_id"),
            },
            "leave" => match session_id {
                Some(id) => self.leave(id).await,
                None => self.error(0, "leave needs a session_id"),
            },
            "typing" | "typing_stop" | "read" => {}
            other => self.error(
                session_id.unwrap_or(0),
                &format!("unknown frame type `{other}`"),
            ),
        }
    }

    /// Stores a message in `CHAT`, then acks it to the sender with its stream sequence. Nothing is
    /// stored when the sender is not a participant or the session is not active.
    async fn message(&mut self, session_id: i64, f: &ClientFrame) {
        if self.state.hub.is_muted(self.conn.user_id) {
            return self.error(session_id, "you are muted by an administrator");
        }
        let session = match self.load(session_id).await {
            Ok(s) => s,
            Err(e) => return self.error(session_id, &e),
        };
        let message = match api::chat::build_message(
            session_id,
            &session,
            self.conn.user_id,
            f.field("content"),
            &f.field("content_type"),
            f.field("file_url"),
            f.client_msg_id(),
        ) {
            Ok(m) => m,
            Err(e) => return self.error(session_id, &e.msg),
        };
        let id = message.client_msg_id.clone();
        self.conn.sent.lock().expect("sent lock").insert(id.clone());
        match append_message(self.state.bus.jetstream(), &message).await {
            Ok(appended) => {
                if appended.duplicate {
                    self.conn.sent.lock().expect("sent lock").remove(&id);
                }
                self.conn.send(frame(
                    "ack",
                    session_id,
                    json!({ "client_msg_id": id, "seq": appended.seq, "message_id": appended.seq, "duplicate": appended.duplicate }),
                ));
            }
            Err(e) => {
                self.conn.sent.lock().expect("sent lock").remove(&id);
                tracing::error!(error = %e, session_id, "storing a chat message");
                self.error(session_id, "message not stored; retry with the same id");
            }
        }
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
