//! Blue/green rebuilds and point-in-time audit replays.
//!
//! Both run a projection's own `apply` from the start of the log into another Postgres schema
//! that holds the same tables (`LIKE public.<table> INCLUDING ALL`, see
//! [`crate::runtime::prepare_schema`]) and its own `projection_checkpoints`; each batch's
//! transaction sets `search_path` to that schema, so the read-model SQL is the live code, word
//! for word.
//!
//! - **Rebuild** (`shadow_<name>`): replays to the head while the live tables keep serving, then
//!   in one transaction locks the live checkpoint rows and then the live tables (the order a
//!   live batch takes them in), applies what arrived
//!   meanwhile, drops the live tables, moves the shadow tables into `public` and sets the live
//!   checkpoint (and version) to the shadow's. A live worker blocked on the lock finds its
//!   checkpoint moved and resumes from the new one.
//! - **Audit replay** (`audit_<stamp>`): replays up to a stream sequence (or the last message at
//!   or before a time) and keeps the schema, with an `audit_meta` row saying up to where.

mod audit;
mod diff;
mod indexes;
mod replay;
mod shadow;

pub use audit::{audit_replay, audit_upto, sequence_at, AuditPoint, AuditReport};
pub use diff::{diff, RowDiff};
pub use replay::{lag, replay_into, replay_shared, LogProgress, Progress, REPLAY_BATCH};
pub use shadow::{rebuild, RebuildReport};
