//! The WebSocket gateway (:8082): chat sockets, the MyChat frame protocol (both dialects), and
//! the fan-out **from the stream**.
//!
//! - A message a participant sends is appended to `CHAT` (`chat.<session_id>`, `Nats-Msg-Id` =
//!   the client's message id) and acknowledged to the sender with its stream sequence only once
//!   JetStream has stored it.
//! - Delivery never takes an in-process shortcut: each node runs **one** ordered consumer of
//!   `CHAT` and one of `ev.session.>` for the whole node, and routes what they read to the local
//!   sockets bound to that session. Any node can serve any socket.
//! - Session ends arrive the same way (`SessionBilled` in `EVENTS`) and become `billing` and
//!   `session_end` frames to both sides.

pub mod admin_bus;
pub mod hub;
pub mod protocol;
pub mod socket;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use eventstore::CommandBus;

pub use hub::Hub;

/// What the gateway's handlers share. Cheap to clone.
#[derive(Clone)]
pub struct GatewayState {
    pub bus: CommandBus,
    pub jwt: Arc<api::JwtKeys>,
    pub hub: Arc<Hub>,
}

/// The gateway's routes: `/ws/chat/{session_id}`, `/ws`, `/health`.
pub fn router(state: GatewayState) -> Router {
    Router::new()
        .route("/health", get(api::health))
        .route("/ws", get(socket::ws_any))
        .route("/ws/chat/{session_id}", get(socket::ws_chat))
        .layer(api::cors())
        .with_state(state)
}
