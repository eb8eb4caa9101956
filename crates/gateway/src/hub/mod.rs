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

mod conn;
mod fanout;
mod groups;
mod presence;
mod relay;
mod rooms;
mod sessions;
mod state;

pub use conn::{Conn, CLOSE_KICKED, CLOSE_POLICY, CLOSE_RESTART, CLOSE_SLOW};
pub use fanout::{own_key, FANOUT_BATCH};
pub use groups::{group_own_key, group_room};
pub use sessions::end_session;
pub use state::{Hub, Part};
