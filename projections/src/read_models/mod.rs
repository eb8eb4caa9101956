//! The read models: one projection per table group, each with its own checkpoint.
//!
//! Rows carry `last_position` (see [`StoredEvent::position`]); every update is guarded with
//! `last_position < $position`, so an event applied twice changes nothing.
//!
//! [`StoredEvent::position`]: eventstore::envelope::StoredEvent::position

mod accounts;
mod batch;
mod billings;
mod group_messages;
mod messages;
mod orders;
mod payments;
mod sessions;
mod wallets;
mod withdrawals;

pub use accounts::Accounts;
pub use batch::rounds;
pub use billings::Billings;
pub use group_messages::GroupMessages;
pub use messages::Messages;
pub use orders::Orders;
pub use payments::Payments;
pub use sessions::Sessions;
pub use wallets::Wallets;
pub use withdrawals::Withdrawals;
