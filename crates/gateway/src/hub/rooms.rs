//! The routing table: sockets registered per user and bound per session (rooms), the admin's
//! view of them, admin mutes, and draining every socket on shutdown.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::conn::{Conn, CLOSE_RESTART};
use super::state::Hub;

impl Hub {
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

    pub(super) fn room(&self, session_id: i64) -> Vec<Arc<Conn>> {
        self.rooms
            .lock()
            .expect("hub lock")
            .get(&session_id)
            .cloned()
            .unwrap_or_default()
    }

    pub(super) fn user_conns(&self, user_id: i64) -> Vec<Arc<Conn>> {
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
