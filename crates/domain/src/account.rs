//! The `CounselorAccount` aggregate (`ev.account.<counselor_id>`): the counselor's earnings and
//! withdrawals. `balance = total_income − withdrawn − frozen`. A withdrawal request checks the
//! available balance and reserves (freezes) the amount **in the same command**, so two concurrent
//! requests can never spend the same fen: the second one's commit conflicts on the aggregate's
//! subject sequence and is retried against the new balance.
//!
//! Withdrawal lifecycle (contract c.5, the two-step flow the admin client supports):
//! 0 pending review → 1 approved → 3 transferred, or 0 → 2 rejected (funds released).

use imbl::{OrdMap, OrdSet};

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::{Fen, Timestamp, EVENT_VERSION};

/// Withdrawal status with MyChat's wire codes: 0 pending, 1 approved, 2 rejected, 3 transferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WithdrawalStatus {
    Pending,
    Approved,
    Rejected,
    Transferred,
}

impl WithdrawalStatus {
    /// The wire code of contract a.6.
    pub fn code(self) -> i16 {
        match self {
            Self::Pending => 0,
            Self::Approved => 1,
            Self::Rejected => 2,
            Self::Transferred => 3,
        }
    }
}

/// One withdrawal as the account remembers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Withdrawal {
    pub amount: Fen,
    pub status: WithdrawalStatus,
}

/// The `CounselorAccount` aggregate's state. All amounts in fen.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounselorAccount {
    pub total_income: Fen,
    /// Available to withdraw.
    pub balance: Fen,
    /// Reserved by pending or approved withdrawals.
    pub frozen: Fen,
    /// Transferred out.
    pub withdrawn: Fen,
    /// Sessions already credited (a persistent set: the command bus clones the aggregate before
    /// each command, in O(1)).
    pub credited_sessions: OrdSet<i64>,
    /// Withdrawals by id (persistent, as `credited_sessions`).
    pub withdrawals: OrdMap<i64, Withdrawal>,
}

/// Commands on a `CounselorAccount`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountCommand {
    /// Credits the counselor's share of a billed session. Once per session: a repeat is a no-op.
    CreditEarnings {
        counselor_id: i64,
        session_id: i64,
        order_id: i64,
        amount: Fen,
        at: Timestamp,
    },
    /// Requests a withdrawal of `amount` fen (> 0, ≤ balance); reserves it.
    RequestWithdrawal {
        counselor_id: i64,
        withdrawal_id: i64,
        amount: Fen,
        bank_name: String,
        bank_account: String,
        account_name: String,
        at: Timestamp,
    },
    /// Approves a pending withdrawal (`admin_id` acts).
    ApproveWithdrawal {
        withdrawal_id: i64,
        admin_id: i64,
        at: Timestamp,
    },
    /// Rejects a pending withdrawal, releasing the reserved funds; `reason` is required.
    RejectWithdrawal {
        withdrawal_id: i64,
        admin_id: i64,
        reason: String,
        at: Timestamp,
    },
    /// Records the transfer of an approved withdrawal.
    TransferWithdrawal {
        withdrawal_id: i64,
        admin_id: i64,
        at: Timestamp,
    },
}

/// Events of a `CounselorAccount`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    EarningsCredited {
        counselor_id: i64,
        session_id: i64,
        order_id: i64,
        amount: Fen,
        at: Timestamp,
    },
    WithdrawalRequested {
        counselor_id: i64,
        withdrawal_id: i64,
        amount: Fen,
        bank_name: String,
        bank_account: String,
        account_name: String,
        at: Timestamp,
    },
    WithdrawalApproved {
        withdrawal_id: i64,
        amount: Fen,
        admin_id: i64,
        at: Timestamp,
    },
    WithdrawalRejected {
        withdrawal_id: i64,
        amount: Fen,
        admin_id: i64,
        reason: String,
        at: Timestamp,
    },
    WithdrawalTransferred {
        withdrawal_id: i64,
        amount: Fen,
        admin_id: i64,
        at: Timestamp,
    },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        match self {
            Self::EarningsCredited { .. } => "EarningsCredited",
            Self::WithdrawalRequested { .. } => "WithdrawalRequested",
            Self::WithdrawalApproved { .. } => "WithdrawalApproved",
            Self::WithdrawalRejected { .. } => "WithdrawalRejected",
            Self::WithdrawalTransferred { .. } => "WithdrawalTransferred",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION.to_string()
    }
}

/// Why an account command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("amount must be positive")]
    InvalidAmount,
    #[error("insufficient balance: requested {requested}, available {available}")]
    InsufficientBalance { requested: Fen, available: Fen },
    #[error("withdrawal already exists")]
    DuplicateWithdrawal,
    #[error("withdrawal not found")]
    WithdrawalNotFound,
    #[error("withdrawal is {0:?}, not {1:?}")]
    WrongWithdrawalStatus(WithdrawalStatus, WithdrawalStatus),
    #[error("a rejection needs a reason")]
    ReasonRequired,
}

impl CounselorAccount {
    fn withdrawal_in(
        &self,
        id: i64,
        expected: WithdrawalStatus,
    ) -> Result<&Withdrawal, AccountError> {
        let w = self
            .withdrawals
            .get(&id)
            .ok_or(AccountError::WithdrawalNotFound)?;
        if w.status != expected {
            return Err(AccountError::WrongWithdrawalStatus(w.status, expected));
        }
        Ok(w)
    }
}

impl Aggregate for CounselorAccount {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: AccountCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), AccountError> {
        let event = match command {
            AccountCommand::CreditEarnings {
                counselor_id,
                session_id,
                order_id,
                amount,
                at,
            } => {
                if amount < 0 {
                    return Err(AccountError::InvalidAmount);
                }
                if self.credited_sessions.contains(&session_id) {
                    return Ok(());
                }
                AccountEvent::EarningsCredited {
                    counselor_id,
                    session_id,
                    order_id,
                    amount,
                    at,
                }
            }
            AccountCommand::RequestWithdrawal {
                counselor_id,
                withdrawal_id,
                amount,
                bank_name,
                bank_account,
                account_name,
                at,
            } => {
                if amount <= 0 {
                    return Err(AccountError::InvalidAmount);
                }
                if self.withdrawals.contains_key(&withdrawal_id) {
                    return Err(AccountError::DuplicateWithdrawal);
                }
                if amount > self.balance {
                    return Err(AccountError::InsufficientBalance {
                        requested: amount,
                        available: self.balance,
                    });
                }
                AccountEvent::WithdrawalRequested {
                    counselor_id,
                    withdrawal_id,
                    amount,
                    bank_name,
                    bank_account,
                    account_name,
                    at,
                }
            }
            AccountCommand::ApproveWithdrawal {
                withdrawal_id,
                admin_id,
                at,
            } => {
                let w = self.withdrawal_in(withdrawal_id, WithdrawalStatus::Pending)?;
                AccountEvent::WithdrawalApproved {
                    withdrawal_id,
                    amount: w.amount,
                    admin_id,
                    at,
                }
            }
            AccountCommand::RejectWithdrawal {
                withdrawal_id,
                admin_id,
                reason,
                at,
            } => {
                if reason.trim().is_empty() {
                    return Err(AccountError::ReasonRequired);
                }
                let w = self.withdrawal_in(withdrawal_id, WithdrawalStatus::Pending)?;
                AccountEvent::WithdrawalRejected {
                    withdrawal_id,
                    amount: w.amount,
                    admin_id,
                    reason,
                    at,
                }
            }
            AccountCommand::TransferWithdrawal {
                withdrawal_id,
                admin_id,
                at,
            } => {
                let w = self.withdrawal_in(withdrawal_id, WithdrawalStatus::Approved)?;
                AccountEvent::WithdrawalTransferred {
                    withdrawal_id,
                    amount: w.amount,
                    admin_id,
                    at,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: AccountEvent) {
        let mut set_status = |id: i64, status: WithdrawalStatus| {
            if let Some(w) = self.withdrawals.get_mut(&id) {
                w.status = status;
            }
        };
        match event {
            AccountEvent::EarningsCredited {
                session_id, amount, ..
            } => {
                self.credited_sessions.insert(session_id);
                self.total_income += amount;
                self.balance += amount;
            }
            AccountEvent::WithdrawalRequested {
                withdrawal_id,
                amount,
                ..
            } => {
                self.balance -= amount;
                self.frozen += amount;
                self.withdrawals.insert(
                    withdrawal_id,
                    Withdrawal {
                        amount,
                        status: WithdrawalStatus::Pending,
                    },
                );
            }
            AccountEvent::WithdrawalApproved { withdrawal_id, .. } => {
                set_status(withdrawal_id, WithdrawalStatus::Approved)
            }
            AccountEvent::WithdrawalRejected {
                withdrawal_id,
                amount,
                ..
            } => {
                set_status(withdrawal_id, WithdrawalStatus::Rejected);
                self.frozen -= amount;
                self.balance += amount;
            }
            AccountEvent::WithdrawalTransferred {
                withdrawal_id,
                amount,
                ..
            } => {
                set_status(withdrawal_id, WithdrawalStatus::Transferred);
                self.frozen -= amount;
                self.withdrawn += amount;
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

    fn credited(session_id: i64, amount: Fen) -> AccountEvent {
        AccountEvent::EarningsCredited {
            counselor_id: 3,
            session_id,
            order_id: session_id,
            amount,
            at: at(),
        }
    }

    fn request(withdrawal_id: i64, amount: Fen) -> AccountCommand {
        AccountCommand::RequestWithdrawal {
            counselor_id: 3,
            withdrawal_id,
            amount,
            bank_name: "ICBC".into(),
            bank_account: "6222".into(),
            account_name: "Li".into(),
            at: at(),
        }
    }

    fn requested(withdrawal_id: i64, amount: Fen) -> AccountEvent {
        AccountEvent::WithdrawalRequested {
            counselor_id: 3,
            withdrawal_id,
            amount,
            bank_name: "ICBC".into(),
            bank_account: "6222".into(),
            account_name: "Li".into(),
            at: at(),
        }
    }

    #[test]
    fn earnings_of_a_session_are_credited_once() {
        TestFramework::<CounselorAccount>::with(())
            .given(vec![credited(1, 700)])
            .when(AccountCommand::CreditEarnings {
                counselor_id: 3,
                session_id: 1,
                order_id: 1,
                amount: 700,
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_withdrawal_within_the_balance_is_reserved() {
        TestFramework::<CounselorAccount>::with(())
            .given(vec![credited(1, 700)])
            .when(request(10, 700))
            .then_expect_events(vec![requested(10, 700)]);
    }

    #[test]
    fn a_withdrawal_above_the_balance_is_refused() {
        TestFramework::<CounselorAccount>::with(())
            .given(vec![credited(1, 700)])
            .when(request(10, 701))
            .then_expect_error(AccountError::InsufficientBalance {
                requested: 701,
                available: 700,
            });
    }

    #[test]
    fn reserved_funds_cannot_be_withdrawn_twice() {
        TestFramework::<CounselorAccount>::with(())
            .given(vec![credited(1, 700), requested(10, 500)])
            .when(request(11, 300))
            .then_expect_error(AccountError::InsufficientBalance {
                requested: 300,
                available: 200,
            });
    }

    #[test]
    fn only_an_approved_withdrawal_is_transferred() {
        TestFramework::<CounselorAccount>::with(())
            .given(vec![credited(1, 700), requested(10, 500)])
            .when(AccountCommand::TransferWithdrawal {
                withdrawal_id: 10,
                admin_id: 1,
                at: at(),
            })
            .then_expect_error(AccountError::WrongWithdrawalStatus(
                WithdrawalStatus::Pending,
                WithdrawalStatus::Approved,
            ));
        TestFramework::<CounselorAccount>::with(())
            .given(vec![
                credited(1, 700),
                requested(10, 500),
                AccountEvent::WithdrawalApproved {
                    withdrawal_id: 10,
                    amount: 500,
                    admin_id: 1,
                    at: at(),
                },
            ])
            .when(AccountCommand::TransferWithdrawal {
                withdrawal_id: 10,
                admin_id: 1,
                at: at(),
            })
            .then_expect_events(vec![AccountEvent::WithdrawalTransferred {
                withdrawal_id: 10,
                amount: 500,
                admin_id: 1,
                at: at(),
            }]);
    }

    #[test]
    fn a_rejection_needs_a_reason_and_releases_the_funds() {
        let given = vec![credited(1, 700), requested(10, 500)];
        TestFramework::<CounselorAccount>::with(())
            .given(given.clone())
            .when(AccountCommand::RejectWithdrawal {
                withdrawal_id: 10,
                admin_id: 1,
                reason: " ".into(),
                at: at(),
            })
            .then_expect_error(AccountError::ReasonRequired);
        let mut account = CounselorAccount::default();
        for e in given {
            account.apply(e);
        }
        account.apply(AccountEvent::WithdrawalRejected {
            withdrawal_id: 10,
            amount: 500,
            admin_id: 1,
            reason: "bad account".into(),
            at: at(),
        });
        assert_eq!((account.balance, account.frozen), (700, 0));
    }
}
