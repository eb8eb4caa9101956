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
    /// Some or all of the captured amount went back (wire code 3).
    Refunded,
}

impl PaymentStatus {
    /// The wire code of contract a.6.
    pub fn code(self) -> i16 {
        match self {
            Self::Absent => -1,
            Self::Pending => 0,
            Self::Paid => 1,
            Self::Refunded => 3,
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
    /// A wallet recharge rather than an order's payment.
    #[serde(default)]
    pub recharge: bool,
    /// Fen refunded so far; never above `amount`.
    #[serde(default)]
    pub refunded: Fen,
    /// Refund numbers already applied (a repeat is a no-op).
    #[serde(default)]
    pub refund_nos: Vec<String>,
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
    /// Creates a payment that recharges `user_id`'s wallet by `amount` fen once captured
    /// (contract b.1 #10, intended: through a payment, not a free credit).
    CreateRecharge {
        payment_no: String,
        user_id: i64,
        amount: Fen,
        method: String,
        trade_type: String,
        created_at: Timestamp,
    },
    /// Records money an order was paid with outside the providers (a bank transfer, cash),
    /// confirmed by administrator `operator_id`: the payment is created and captured at once
    /// (`OfflinePaymentRecorded`, then `PaymentCaptured` with method [`OFFLINE_METHOD`] and
    /// provider transaction `offline:<payment_no>`), so it is posted to the ledger and marks the
    /// order paid like any capture. Refused when the payment exists, the amount is not
    /// positive, or `channel` / `note` is empty.
    RecordOffline {
        payment_no: String,
        order_id: i64,
        user_id: i64,
        amount: Fen,
        /// How the money came: `bank_transfer`, `cash`, `wechat_transfer`, `alipay_transfer`,
        /// `other`.
        channel: String,
        /// The bank's or receipt's reference, if any.
        reference: String,
        note: String,
        operator_id: i64,
        recorded_at: Timestamp,
    },
    /// Refunds `amount` fen of a captured order payment (contract b.1 #30): the refunds of a
    /// payment never exceed its captured amount; `refund_no` again is a no-op. Recharges are not
    /// refundable (the wallet money may already be spent).
    Refund {
        refund_no: String,
        amount: Fen,
        reason: String,
        refunded_at: Timestamp,
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
    /// An administrator recorded an offline payment of `amount` fen for `order_id`
    /// (`PaymentCreated`'s twin; `PaymentCaptured` follows in the same commit).
    OfflinePaymentRecorded {
        payment_no: String,
        order_id: i64,
        user_id: i64,
        amount: Fen,
        method: String,
        channel: String,
        reference: String,
        note: String,
        operator_id: i64,
        recorded_at: Timestamp,
    },
    /// A recharge payment was created (`PaymentCreated`'s twin without an order).
    RechargePaymentCreated {
        payment_no: String,
        user_id: i64,
        amount: Fen,
        method: String,
        trade_type: String,
        created_at: Timestamp,
    },
    /// A recharge payment was captured: `amount` fen arrived from the provider for `user_id`'s
    /// wallet (the process manager credits it).
    RechargeCaptured {
        user_id: i64,
        method: String,
        provider_txn_id: String,
        amount: Fen,
        captured_at: Timestamp,
    },
    /// `amount` fen of an order payment went back to the user through the provider;
    /// `total_refunded` (fen) is the payment's refunded sum after this one.
    PaymentRefunded {
        order_id: i64,
        user_id: i64,
        method: String,
        refund_no: String,
        amount: Fen,
        total_refunded: Fen,
        reason: String,
        refunded_at: Timestamp,
    },
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> String {
        match self {
            Self::PaymentCreated { .. } => "PaymentCreated",
            Self::PaymentCaptured { .. } => "PaymentCaptured",
            Self::OfflinePaymentRecorded { .. } => "OfflinePaymentRecorded",
            Self::RechargePaymentCreated { .. } => "RechargePaymentCreated",
            Self::RechargeCaptured { .. } => "RechargeCaptured",
            Self::PaymentRefunded { .. } => "PaymentRefunded",
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
    #[error("payment is not captured")]
    NotCaptured,
    #[error("refund of {requested} exceeds the refundable {refundable}")]
    RefundExceedsCaptured { refundable: Fen, requested: Fen },
    #[error("a recharge cannot be refunded")]
    RechargeNotRefundable,
    #[error("an offline payment needs its channel and a note")]
    OfflineDetailsMissing,
}

/// The payment method of offline payments (`provider:offline:clearing` in the ledger).
pub const OFFLINE_METHOD: &str = "offline";

impl Payment {
    /// A new payment (order or recharge) must not exist yet and must be for a positive amount.
    fn check_new(&self, amount: Fen) -> Result<(), PaymentError> {
        if self.status != PaymentStatus::Absent {
            return Err(PaymentError::AlreadyCreated);
        }
        if amount <= 0 {
            return Err(PaymentError::InvalidAmount);
        }
        Ok(())
    }
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
                self.check_new(amount)?;
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
                PaymentStatus::Paid | PaymentStatus::Refunded
                    if self.provider_txn_id.as_ref() == Some(&provider_txn_id) => {}
                PaymentStatus::Paid | PaymentStatus::Refunded => {
                    return Err(PaymentError::CapturedByAnotherTransaction)
                }
                PaymentStatus::Pending => {
                    if amount != self.amount {
                        return Err(PaymentError::AmountMismatch {
                            expected: self.amount,
                            paid: amount,
                        });
                    }
                    if self.recharge {
                        let event = PaymentEvent::RechargeCaptured {
                            user_id: self.user_id,
                            method: self.method.clone(),
                            provider_txn_id,
                            amount,
                            captured_at,
                        };
                        sink.write(event, self).await;
                        return Ok(());
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
            PaymentCommand::RecordOffline {
                payment_no,
                order_id,
                user_id,
                amount,
                channel,
                reference,
                note,
                operator_id,
                recorded_at,
            } => {
                self.check_new(amount)?;
                if channel.trim().is_empty() || note.trim().is_empty() {
                    return Err(PaymentError::OfflineDetailsMissing);
                }
                let provider_txn_id = format!("offline:{payment_no}");
                sink.write(
                    PaymentEvent::OfflinePaymentRecorded {
                        payment_no,
                        order_id,
                        user_id,
                        amount,
                        method: OFFLINE_METHOD.into(),
                        channel,
                        reference,
                        note,
                        operator_id,
                        recorded_at,
                    },
                    self,
                )
                .await;
                sink.write(
                    PaymentEvent::PaymentCaptured {
                        order_id,
                        user_id,
                        method: OFFLINE_METHOD.into(),
                        provider_txn_id,
                        amount,
                        captured_at: recorded_at,
                    },
                    self,
                )
                .await;
            }
            PaymentCommand::CreateRecharge {
                payment_no,
                user_id,
                amount,
                method,
                trade_type,
                created_at,
            } => {
                self.check_new(amount)?;
                let event = PaymentEvent::RechargePaymentCreated {
                    payment_no,
                    user_id,
                    amount,
                    method,
                    trade_type,
                    created_at,
                };
                sink.write(event, self).await;
            }
            PaymentCommand::Refund {
                refund_no,
                amount,
                reason,
                refunded_at,
            } => {
                match self.status {
                    PaymentStatus::Absent => return Err(PaymentError::NotFound),
                    PaymentStatus::Pending => return Err(PaymentError::NotCaptured),
                    PaymentStatus::Paid | PaymentStatus::Refunded => {}
                }
                if self.refund_nos.contains(&refund_no) {
                    return Ok(());
                }
                if self.recharge {
                    return Err(PaymentError::RechargeNotRefundable);
                }
                if amount <= 0 {
                    return Err(PaymentError::InvalidAmount);
                }
                let refundable = self.amount - self.refunded;
                if amount > refundable {
                    return Err(PaymentError::RefundExceedsCaptured {
                        refundable,
                        requested: amount,
                    });
                }
                let event = PaymentEvent::PaymentRefunded {
                    order_id: self.order_id,
                    user_id: self.user_id,
                    method: self.method.clone(),
                    refund_no,
                    amount,
                    total_refunded: self.refunded + amount,
                    reason,
                    refunded_at,
                };
                sink.write(event, self).await;
            }
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
            PaymentEvent::OfflinePaymentRecorded {
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
            }
            | PaymentEvent::RechargeCaptured {
                provider_txn_id, ..
            } => {
                self.status = PaymentStatus::Paid;
                self.provider_txn_id = Some(provider_txn_id);
            }
            PaymentEvent::RechargePaymentCreated {
                payment_no,
                user_id,
                amount,
                method,
                ..
            } => {
                self.status = PaymentStatus::Pending;
                self.payment_no = payment_no;
                self.user_id = user_id;
                self.amount = amount;
                self.method = method;
                self.recharge = true;
            }
            PaymentEvent::PaymentRefunded {
                refund_no,
                total_refunded,
                ..
            } => {
                self.status = PaymentStatus::Refunded;
                self.refunded = total_refunded;
                self.refund_nos.push(refund_no);
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

    fn refund(no: &str, amount: Fen) -> PaymentCommand {
        PaymentCommand::Refund {
            refund_no: no.into(),
            amount,
            reason: String::new(),
            refunded_at: at(),
        }
    }

    fn refunded(no: &str, amount: Fen, total: Fen) -> PaymentEvent {
        PaymentEvent::PaymentRefunded {
            order_id: 1,
            user_id: 7,
            method: "sandbox".into(),
            refund_no: no.into(),
            amount,
            total_refunded: total,
            reason: String::new(),
            refunded_at: at(),
        }
    }

    #[test]
    fn refunds_never_exceed_the_captured_amount() {
        TestFramework::<Payment>::with(())
            .given(vec![created(), captured()])
            .when(refund("R1", 3_000))
            .then_expect_events(vec![refunded("R1", 3_000, 3_000)]);
        TestFramework::<Payment>::with(())
            .given(vec![created(), captured(), refunded("R1", 3_000, 3_000)])
            .when(refund("R2", 2_001))
            .then_expect_error(PaymentError::RefundExceedsCaptured {
                refundable: 2_000,
                requested: 2_001,
            });
        TestFramework::<Payment>::with(())
            .given(vec![created(), captured(), refunded("R1", 3_000, 3_000)])
            .when(refund("R2", 2_000))
            .then_expect_events(vec![refunded("R2", 2_000, 5_000)]);
        // The same refund number again is a no-op.
        TestFramework::<Payment>::with(())
            .given(vec![created(), captured(), refunded("R1", 3_000, 3_000)])
            .when(refund("R1", 3_000))
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_uncaptured_payment_cannot_be_refunded() {
        TestFramework::<Payment>::with(())
            .given(vec![created()])
            .when(refund("R1", 1))
            .then_expect_error(PaymentError::NotCaptured);
    }

    #[test]
    fn a_captured_recharge_credits_through_recharge_captured_and_is_not_refundable() {
        let created = PaymentEvent::RechargePaymentCreated {
            payment_no: "PAY2".into(),
            user_id: 7,
            amount: 10_000,
            method: "sandbox".into(),
            trade_type: "NATIVE".into(),
            created_at: at(),
        };
        let captured = PaymentEvent::RechargeCaptured {
            user_id: 7,
            method: "sandbox".into(),
            provider_txn_id: "T9".into(),
            amount: 10_000,
            captured_at: at(),
        };
        TestFramework::<Payment>::with(())
            .given(vec![created.clone()])
            .when(capture("T9", 10_000))
            .then_expect_events(vec![captured.clone()]);
        TestFramework::<Payment>::with(())
            .given(vec![created, captured])
            .when(refund("R1", 1))
            .then_expect_error(PaymentError::RechargeNotRefundable);
    }
}
