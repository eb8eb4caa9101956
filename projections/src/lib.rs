//! Projections: the projector runtime, the Postgres read models it builds, and the process
//! managers that turn events into follow-up commands.
//!
//! Every projection reads the log from its own checkpoint and applies a batch of events in one
//! Postgres transaction **together with its checkpoint** ([`runtime`]), so a crash or a
//! re-delivery never applies an event twice. Read-model rows also remember the position of the
//! last event applied and refuse older ones.

pub mod notifications;
pub mod process_manager;
pub mod read_models;
pub mod runtime;
pub mod watch;

use std::sync::Arc;

pub use runtime::{LogMessage, Projection, Projector, ProjectorSettings};
pub use watch::CheckpointWatch;

/// The migrations of every read-model and reference table (`migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Every read-model projection, in a stable order.
pub fn read_models() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(read_models::Orders),
        Arc::new(read_models::Payments),
        Arc::new(read_models::Sessions),
        Arc::new(read_models::Billings),
        Arc::new(read_models::Messages),
        Arc::new(read_models::Accounts),
        Arc::new(read_models::Withdrawals),
        Arc::new(read_models::Wallets),
        Arc::new(notifications::Notifications),
    ]
}
