//! Projections: the projector runtime, the Postgres read models it builds, and the process
//! managers that turn events into follow-up commands.
//!
//! Every projection reads the log from its own checkpoint and applies a batch of events in one
//! Postgres transaction **together with its checkpoint** ([`runtime`]), so a crash or a
//! re-delivery never applies an event twice. Read-model rows also remember the position of the
//! last event applied and refuse older ones.

pub mod api_keys;
pub mod control;
pub mod expiry;
pub mod groups;
pub mod ledger;
pub mod notifications;
pub mod process_manager;
pub mod read_models;
pub mod rebuild;
pub mod reconcile;
pub mod runtime;
pub mod status;
pub mod watch;

use std::sync::Arc;

pub use runtime::{EventRef, LiveFeeds, LogMessage, Projection, Projector, ProjectorSettings};
pub use watch::CheckpointWatch;

/// The migrations of every read-model and reference table (`migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Every read-model projection (the ledger included) of a deployment whose chat streams are laid
/// out as `layout`, in a stable order: one chat-messages projection per chat stream. These are
/// the ones `mychat projections rebuild --all` and `mychat audit replay` build.
pub fn read_models_for(layout: &eventstore::ChatLayout) -> Vec<Arc<dyn Projection>> {
    let mut all: Vec<Arc<dyn Projection>> = vec![
        Arc::new(read_models::Orders),
        Arc::new(read_models::Payments),
        Arc::new(read_models::Sessions),
        Arc::new(read_models::Billings),
    ];
    all.extend(read_models::Messages::all(layout));
    all.extend([
        Arc::new(read_models::Accounts) as Arc<dyn Projection>,
        Arc::new(read_models::Withdrawals),
        Arc::new(read_models::Wallets),
        Arc::new(groups::Groups),
    ]);
    all.extend(read_models::GroupMessages::all(layout));
    all.extend([
        Arc::new(api_keys::ApiKeys) as Arc<dyn Projection>,
        Arc::new(notifications::Notifications),
        Arc::new(ledger::Ledger),
    ]);
    all
}

/// [`read_models_for`] the default chat layout ([`eventstore::ChatLayout::default`]: what
/// [`eventstore::ensure_streams`] creates on a new deployment with the default settings).
pub fn read_models() -> Vec<Arc<dyn Projection>> {
    read_models_for(&eventstore::ChatLayout::default())
}

/// The read-model projection called `name` under `layout`.
pub fn read_model_for(layout: &eventstore::ChatLayout, name: &str) -> Option<Arc<dyn Projection>> {
    read_models_for(layout)
        .into_iter()
        .find(|p| p.name() == name)
}

/// [`read_model_for`] the default chat layout.
pub fn read_model(name: &str) -> Option<Arc<dyn Projection>> {
    read_model_for(&eventstore::ChatLayout::default(), name)
}
