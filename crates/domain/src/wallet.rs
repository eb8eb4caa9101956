//! The `UserWallet` aggregate (`ev.wallet.<user_id>`): the user's balance in fen. Credited by
//! refunds of unused prepaid minutes (and, later, recharges through a payment); never negative.
//! Each credit names its source (`reference`), and a source is credited at most once, so a process
//! manager may repeat its command safely.

use imbl::OrdSet;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::{Fen, Timestamp, EVENT_VERSION};

/// Why money entered a wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CreditReason {
    /// Unused prepaid minutes of a billed session.
    SessionRefund { session_id: i64, order_id: i64 },
    /// A captured recharge payment.
    Recharge { payment_id: i64 },
}

impl CreditReason {
    /// A stable key for the credit's source: one credit per source.
    pub fn reference(&self) -> String {
        match self {
            Self::SessionRefund { session_id, .. } => format!("session-refund:{session_id}"),
            Self::Recharge { payment_id } => format!("recharge:{payment_id}"),
        }
    }
}

/// The `UserWallet` aggregate's state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserWallet {
    pub balance: Fen,
    /// References of the credits already applied (a persistent set: the command bus clones the
    /// aggregate before each command, in O(1)).
    pub credited: OrdSet<String>,
}

/// Commands on a `UserWallet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WalletCommand {
    /// Credits `amount` fen (> 0) for `reason`; a reason already credited is a no-op.
    Credit {
        user_id: i64,
        amount: Fen,
        reason: CreditReason,
        at: Timestamp,
    },
}

/// Events of a `UserWallet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WalletEvent {
    WalletCredited {
        user_id: i64,
        amount: Fen,
        reason: CreditReason,
        balance_after: Fen,
        at: Timestamp,
    },
}

impl DomainEvent for WalletEvent {
    fn event_type(&self) -> String {
        match self {
            Self::WalletCredited { .. } => "WalletCredited".to_string(),
        }
    }
    fn event_version(&self) -> String {
        EVENT_VERSION.to_string()
    }
}

/// Why a wallet command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    #[error("amount must be positive")]
    InvalidAmount,
}

impl Aggregate for UserWallet {
    const TYPE: &'static str = "wallet";
    type Command = WalletCommand;
    type Event = WalletEvent;
    type Error = WalletError;
    type Services = ();

    async fn handle(
        &mut self,
        command: WalletCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), WalletError> {
        match command {
            WalletCommand::Credit {
                user_id,
                amount,
                reason,
                at,
            } => {
                if amount <= 0 {
                    return Err(WalletError::InvalidAmount);
                }
                if self.credited.contains(&reason.reference()) {
                    return Ok(());
                }
                let balance_after = self.balance + amount;
                sink.write(
                    WalletEvent::WalletCredited {
                        user_id,
                        amount,
                        reason,
                        balance_after,
                        at,
                    },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: WalletEvent) {
        match event {
            WalletEvent::WalletCredited { amount, reason, .. } => {
                self.balance += amount;
                self.credited.insert(reason.reference());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at() -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn refund() -> CreditReason {
        CreditReason::SessionRefund {
            session_id: 1,
            order_id: 1,
        }
    }

    #[test]
    fn a_refund_is_credited_once() {
        let credited = WalletEvent::WalletCredited {
            user_id: 7,
            amount: 4_000,
            reason: refund(),
            balance_after: 4_000,
            at: at(),
        };
        TestFramework::<UserWallet>::with(())
            .given_no_previous_events()
            .when(WalletCommand::Credit {
                user_id: 7,
                amount: 4_000,
                reason: refund(),
                at: at(),
            })
            .then_expect_events(vec![credited.clone()]);
        TestFramework::<UserWallet>::with(())
            .given(vec![credited])
            .when(WalletCommand::Credit {
                user_id: 7,
                amount: 4_000,
                reason: refund(),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_zero_credit_is_refused() {
        TestFramework::<UserWallet>::with(())
            .given_no_previous_events()
            .when(WalletCommand::Credit {
                user_id: 7,
                amount: 0,
                reason: refund(),
                at: at(),
            })
            .then_expect_error(WalletError::InvalidAmount);
    }
}
