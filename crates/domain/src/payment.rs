//! The `Payment` aggregate (`ev.payment.<id>`): created for an order, captured at most once when
//! the provider confirms it. A provider retries its callback for hours, so a capture repeating
//! the same provider transaction is a no-op.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::{Fen, Timestamp, EVENT_VERSION};

/// Payment status with MyChat's wire codes (contract a.6): 0 pending, 1 paid, 2 failed,
/// 3 refunded, 4 cancelled. `Absent` is the state before `PaymentCreated`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentStatus {
    #[default]
    Absent,
    Pending,
    Paid,
}

impl PaymentStatus {
    /// The wire code of contract a.6.
    pub fn code(self) -> i16 {
        match self {
            Self::Absent => -1,
            Self::Pending => 0,
            Self::Paid => 1,
        }
    }
}

/// The `Payment` aggregate's state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    pub status: PaymentStatus,
    pub payment_no: String,
    pub order_id: i64,
    pub user_id: i64,
    pub amount: Fen,
    pub method: String,
    pub provider_txn_id: Option<String>,
}

/// Commands on a `Payment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentCommand {
    /// Creates a payment of `amount` fen for an order, through `method` (`sandbox`, `wechat`,
    /// `alipay`). Refused when the payment exists or the amount is not positive.
    Create {
        payment_no: String,
        order_id: i64,
        user_id: i64,
        amount: Fen,
        method: String,
        trade_type: String,
        created_at: Timestamp,
    },
    /// Captures the payment after a verified provider confirmation. The same provider
    /// transaction again is a no-op; another transaction or another amount is refused.
    Capture {
        provider_txn_id: String,
        amount: Fen,
        captured_at: Timestamp,
    },
}

/// Events of a `Payment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentEvent {
    PaymentCreated {
        payment_no: String,
        order_id: i64,
        user_id: i64,
        amount: Fen,
        method: String,
        trade_type: String,
        created_at: Timestamp,
    },
    PaymentCaptured {
        order_id: i64,
        user_id: i64,
        method: String,
        provider_txn_id: String,
        amount: Fen,
        captured_at: Timestamp,
    },
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> String {
        match self {
            Self::PaymentCreated { .. } => "PaymentCreated",
            Self::PaymentCaptured { .. } => "PaymentCaptured",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION.to_string()
    }
}

/// Why a payment command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("payment already exists")]
    AlreadyCreated,
    #[error("payment not found")]
    NotFound,
    #[error("amount must be positive")]
    InvalidAmount,
    #[error("amount {paid} does not match the payment's amount {expected}")]
    AmountMismatch { expected: Fen, paid: Fen },
    #[error("payment already captured by another provider transaction")]
    CapturedByAnotherTransaction,
}

impl Aggregate for Payment {
    const TYPE: &'static str = "payment";
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PaymentCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), PaymentError> {
        match command {
            PaymentCommand::Create {
                payment_no,
                order_id,
                user_id,
                amount,
                method,
                trade_type,
                created_at,
            } => {
                if self.status != PaymentStatus::Absent {
                    return Err(PaymentError::AlreadyCreated);
                }
                if amount <= 0 {
                    return Err(PaymentError::InvalidAmount);
                }
                let event = PaymentEvent::PaymentCreated {
                    payment_no,
                    order_id,
                    user_id,
                    amount,
                    method,
                    trade_type,
                    created_at,
                };
                sink.write(event, self).await;
            }
            PaymentCommand::Capture {
                provider_txn_id,
                amount,
                captured_at,
            } => match self.status {
                PaymentStatus::Absent => return Err(PaymentError::NotFound),
                PaymentStatus::Paid if self.provider_txn_id.as_ref() == Some(&provider_txn_id) => {}
                PaymentStatus::Paid => return Err(PaymentError::CapturedByAnotherTransaction),
                PaymentStatus::Pending => {
                    if amount != self.amount {
                        return Err(PaymentError::AmountMismatch {
                            expected: self.amount,
                            paid: amount,
                        });
                    }
                    let event = PaymentEvent::PaymentCaptured {
                        order_id: self.order_id,
                        user_id: self.user_id,
                        method: self.method.clone(),
                        provider_txn_id,
                        amount,
                        captured_at,
                    };
                    sink.write(event, self).await;
                }
            },
        }
        Ok(())
    }

    fn apply(&mut self, event: PaymentEvent) {
        match event {
            PaymentEvent::PaymentCreated {
                payment_no,
                order_id,
                user_id,
                amount,
                method,
                ..
            } => {
                self.status = PaymentStatus::Pending;
                self.payment_no = payment_no;
                self.order_id = order_id;
                self.user_id = user_id;
                self.amount = amount;
                self.method = method;
            }
            PaymentEvent::PaymentCaptured {
                provider_txn_id, ..
            } => {
                self.status = PaymentStatus::Paid;
                self.provider_txn_id = Some(provider_txn_id);
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

    fn created() -> PaymentEvent {
        PaymentEvent::PaymentCreated {
            payment_no: "PAY1".into(),
            order_id: 1,
            user_id: 7,
            amount: 5_000,
            method: "sandbox".into(),
            trade_type: "NATIVE".into(),
            created_at: at(),
        }
    }

    fn capture(txn: &str, amount: Fen) -> PaymentCommand {
        PaymentCommand::Capture {
            provider_txn_id: txn.into(),
            amount,
            captured_at: at(),
        }
    }

    fn captured() -> PaymentEvent {
        PaymentEvent::PaymentCaptured {
            order_id: 1,
            user_id: 7,
            method: "sandbox".into(),
            provider_txn_id: "T1".into(),
            amount: 5_000,
            captured_at: at(),
        }
    }

    #[test]
    fn a_confirmed_payment_is_captured() {
        TestFramework::<Payment>::with(())
            .given(vec![created()])
            .when(capture("T1", 5_000))
            .then_expect_events(vec![captured()]);
    }

    #[test]
    fn a_duplicate_callback_is_applied_once() {
        TestFramework::<Payment>::with(())
            .given(vec![created(), captured()])
            .when(capture("T1", 5_000))
            .then_expect_events(vec![]);
        TestFramework::<Payment>::with(())
            .given(vec![created(), captured()])
            .when(capture("T2", 5_000))
            .then_expect_error(PaymentError::CapturedByAnotherTransaction);
    }

    #[test]
    fn a_confirmation_for_another_amount_is_refused() {
        TestFramework::<Payment>::with(())
            .given(vec![created()])
            .when(capture("T1", 1))
            .then_expect_error(PaymentError::AmountMismatch {
                expected: 5_000,
                paid: 1,
            });
    }

    #[test]
    fn a_zero_amount_payment_cannot_be_created() {
        TestFramework::<Payment>::with(())
            .given_no_previous_events()
            .when(PaymentCommand::Create {
                payment_no: "PAY1".into(),
                order_id: 1,
                user_id: 7,
                amount: 0,
                method: "sandbox".into(),
                trade_type: "NATIVE".into(),
                created_at: at(),
            })
            .then_expect_error(PaymentError::InvalidAmount);
    }
}
