//! The admin API's business area (contract c.4, c.5 #44–#47): orders (list, statistics, a status
//! change as a command on the `Order` aggregate), chat (sessions, messages, full-text search,
//! statistics, redaction as a `CHAT` record), group conversations (list, messages, dissolution,
//! redaction) and the dashboard figures. Reads come from the read
//! models.

pub mod chat;
pub mod dashboard;
pub mod groups;
pub mod orders;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// OpenAPI tag of every business operation.
pub const TAG: &str = "business";

/// A user as a chat session names them (a missing user is `{id: 0, avatar: "", username: ""}`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserBrief {
    /// The user's id (0 when the user is gone).
    pub id: i64,
    /// Avatar URL.
    pub avatar: String,
    /// Login name.
    pub username: String,
}

/// A counselor as a chat session or a withdrawal names them (a missing counselor is `{id: 0,
/// name: "", avatar: ""}`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CounselorBrief {
    /// The counselor's id (0 when the counselor is gone).
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Avatar URL.
    pub avatar: String,
}
