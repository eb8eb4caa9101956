//! Presence: this node's entry (its users and their sessions) and the other nodes' entries,
//! merged into who is online and who is present in a session.

use std::collections::HashSet;

use crate::presence::NodePresence;

use super::state::{now_ms, Hub};

impl Hub {
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
}
