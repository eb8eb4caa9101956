//! mychat's domain: the event-sourced aggregates (`Order`, `Payment`, `ChatSession`,
//! `UserWallet`, `CounselorAccount`, `Group`, `ApiKey`), their commands, events and business errors, the money
//! rules (amounts are `i64` fen; billing and the platform's share), and the rules a chat message
//! obeys before it is stored ([`chat`]).
//!
//! Pure: no I/O, no clock, no randomness. Every time a rule needs ("now") arrives inside the
//! command, so the same history and command always give the same events. Aggregates implement
//! [`cqrs_es::Aggregate`] and are tested given / when / then with `cqrs_es::test::TestFramework`.
//!
//! Business rejections are the per-aggregate error enums (mapped to 4xx by the API); an
//! infrastructure failure never appears here.

pub mod account;
pub mod api_key;
pub mod chat;
pub mod group;
pub mod money;
pub mod order;
pub mod payment;
pub mod session;
pub mod wallet;

pub use account::{AccountCommand, AccountError, AccountEvent, CounselorAccount, WithdrawalStatus};
pub use api_key::{ApiKey, ApiKeyCommand, ApiKeyError, ApiKeyEvent, KeySecret};
pub use chat::{AcceptedMessage, MessageDraft, MessageRefusal};
pub use group::{
    Dissolver, Group, GroupCommand, GroupError, GroupEvent, GroupMessageRefusal, GroupRole,
};
pub use money::{split_platform_fee, Fen};
pub use order::{Order, OrderCommand, OrderError, OrderEvent, OrderStatus};
pub use payment::{
    Payment, PaymentCommand, PaymentError, PaymentEvent, PaymentStatus, OFFLINE_METHOD,
};
pub use session::{
    ChatSession, EndReason, SessionCommand, SessionError, SessionEvent, SessionStatus,
};
pub use wallet::{CreditReason, UserWallet, WalletCommand, WalletError, WalletEvent};

/// Timestamps in commands and events: UTC.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// The version written with every event of this crate (`DomainEvent::event_version`). An event
/// whose shape changes gets a new version and an upcaster; stored events are never rewritten.
pub const EVENT_VERSION: &str = "1.0";
