//! The node's shared state: the [`Hub`] itself (its sockets per session and per user, its
//! table of active sessions, its presence view, its mutes), the background [`Part`]s `/health`
//! reports, and the accessors every other part of the hub goes through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use eventstore::ChatLog;
use eventstore::CommandBus;
use tokio::sync::Notify;

use crate::presence::NodePresence;
use crate::GatewayConfig;

use super::conn::Conn;

/// An active session as the node knows it from `ev.session.>`.
#[derive(Debug, Clone)]
pub(super) struct Active {
    pub(super) user_id: i64,
    pub(super) counselor_user_id: i64,
    pub(super) price_per_minute: i64,
    pub(super) prepaid_minutes: i64,
    pub(super) started_at: DateTime<Utc>,
    /// The last message or app-level activity seen, unix seconds.
    pub(super) last_activity: i64,
    pub(super) warned: bool,
    /// When this node last asked to end it (retried after 5 s if the end has not arrived).
    pub(super) ending_at: Option<std::time::Instant>,
}

/// The node's sockets, sessions and presence view.
pub struct Hub {
    pub(super) config: GatewayConfig,
    pub(super) bus: CommandBus,
    pub(super) nats: async_nats::Client,
    pub(super) rooms: Mutex<HashMap<i64, Vec<Arc<Conn>>>>,
    pub(super) users: Mutex<HashMap<i64, Vec<Arc<Conn>>>>,
    pub(super) next_id: AtomicU64,
    pub(super) active: Mutex<HashMap<i64, Active>>,
    pub(super) sessions_caught_up: AtomicBool,
    pub(super) ended_by: Mutex<HashMap<i64, i64>>,
    pub(super) local_activity: Mutex<HashMap<i64, i64>>,
    pub(super) remote: Mutex<HashMap<String, NodePresence>>,
    pub(super) muted: Mutex<HashMap<i64, i64>>,
    pub(super) presence_dirty: Notify,
    pub(super) draining: AtomicBool,
    /// The chat log: the layout, and the node's committer of each chat stream.
    pub(super) chat: ChatLog,
    /// The node's background parts that are down (`/health` answers 503 while any is).
    pub(super) down: Mutex<std::collections::BTreeSet<Part>>,
    /// Groups' state folded from `ev.group.>` ([`super::groups`]).
    pub(super) groups: Mutex<HashMap<i64, domain::Group>>,
    /// The aggregate version each of [`Hub::groups`] reflects.
    pub(super) group_versions: Mutex<HashMap<i64, usize>>,
    /// The group-event reader has caught up with the log since it (re)started: until then the
    /// folded state is not trusted for an acceptance.
    pub(super) groups_caught_up: AtomicBool,
}

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

pub(super) fn now_ms() -> i64 {
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
            groups: Mutex::default(),
            group_versions: Mutex::default(),
            groups_caught_up: AtomicBool::new(false),
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
}
