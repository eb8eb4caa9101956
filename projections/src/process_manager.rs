//! The process manager: follows money events and issues the commands they imply.
//!
//! | event | commands (command id) |
//! |---|---|
//! | `PaymentCaptured` | `Order::MarkPaid` (`pm:order-paid:<payment>`); when the order refuses it (paid by another payment, cancelled), `Payment::Refund` of the whole amount, refund no `orphan-<payment>` (`pm:orphan-refund:<payment>`) |
//! | `SessionStarted` | `Order::StartService` (`pm:order-service:<session>`) |
//! | `RechargeCaptured` | `UserWallet::Credit` with `CreditReason::Recharge` (`pm:recharge:<payment>`) |
//! | `OrderCancelled` with a refund | `Payment::Refund` of the prepaid amount, refund no `cancel-<order>` (`pm:cancel-refund:<order>`) |
//! | `OrderRefundRequested` | `Payment::Refund` of the requested amount with its refund no (`pm:order-refund:<order>:<refund_no>`) |
//! | `PaymentRefunded` of an order payment | `Order::MarkRefunded` (`pm:order-refunded:<payment>:<refund_no>`) |
//! | `SessionBilled` | `CounselorAccount::CreditEarnings` (`pm:credit:<session>`), `UserWallet::Credit` of the unused prepaid amount (`pm:refund:<session>`), `Order::Complete` (`pm:complete:<order>`) |
//!
//! Each command id is derived from the triggering event, and each command is idempotent in its
//! aggregate too (a session is credited once, a refund reference once), so re-processing after a
//! crash — the checkpoint moves only after the commands were committed — changes nothing.

use async_trait::async_trait;
use domain::{
    AccountCommand, CounselorAccount, CreditReason, Order, OrderCommand, OrderError, OrderEvent,
    Payment, PaymentCommand, PaymentEvent, SessionEvent, UserWallet, WalletCommand,
};
use eventstore::envelope::StoredEvent;
use eventstore::{Actor, CommandBus, CommandError, CommandMeta};
use sqlx::PgConnection;

use crate::runtime::{LogMessage, Projection};

/// The money process manager. Its checkpoint is `process_manager`.
pub struct ProcessManager {
    pub bus: CommandBus,
}

fn meta_for(event: &StoredEvent, command_id: String) -> CommandMeta {
    CommandMeta {
        command_id,
        correlation_id: event.correlation_id.clone(),
        causation_id: Some(format!("{}:{}", event.stream_sequence, event.index)),
        actor: Actor::system(),
    }
}

/// The aggregate id of `event` as a number. An id that does not parse is an error (the
/// projection stops on it), never 0: derived command ids would collide.
fn id_of(event: &StoredEvent) -> anyhow::Result<i64> {
    event.aggregate_id_i64().ok_or_else(|| {
        anyhow::anyhow!(
            "{} {} at stream sequence {}: aggregate id {:?} is not a number",
            event.aggregate_type,
            event.event_type,
            event.stream_sequence,
            event.aggregate_id
        )
    })
}

/// A business rejection is final (retrying cannot change it): log it and go on. An
/// infrastructure failure or an exhausted conflict retry fails the batch, to be retried.
fn settle<E: std::error::Error>(
    what: &str,
    result: Result<eventstore::Committed<impl Sized>, CommandError<E>>,
) -> anyhow::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(CommandError::Rejected(e)) => {
            tracing::warn!(command = what, error = %e, "process manager command refused");
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("{what}: {e}")),
    }
}

#[async_trait]
impl Projection for ProcessManager {
    fn name(&self) -> &'static str {
        "process_manager"
    }
    fn subjects(&self) -> Vec<String> {
        vec![
            "ev.payment.>".into(),
            "ev.session.>".into(),
            "ev.order.>".into(),
        ]
    }
    /// The events no process reacts to.
    fn ignores(&self) -> &'static [&'static str] {
        &[
            "OrderPlaced",
            "OrderPaid",
            "OrderServiceStarted",
            "OrderCompleted",
            "OrderRefunded",
            "OrderReviewed",
            "OrderStatusChangedByAdmin",
            "PaymentCreated",
            "OfflinePaymentRecorded",
            "RechargePaymentCreated",
            "SessionEnded",
        ]
    }
    async fn apply(&self, _tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        for e in message.events()?.iter() {
            match e.aggregate_type.as_str() {
                "payment" => match e.decode()? {
                    PaymentEvent::PaymentCaptured {
                        order_id,
                        amount,
                        captured_at,
                        ..
                    } => {
                        let payment_id = id_of(e)?;
                        let cmd = OrderCommand::MarkPaid {
                            payment_id,
                            amount,
                            paid_at: captured_at,
                        };
                        let meta = meta_for(e, format!("pm:order-paid:{payment_id}"));
                        let result = self
                            .bus
                            .execute::<Order>(&order_id.to_string(), cmd, &meta)
                            .await;
                        // Captured money the order cannot take (paid by another payment,
                        // cancelled meanwhile) goes straight back.
                        let orphan = matches!(
                            &result,
                            Err(CommandError::Rejected(
                                OrderError::PaidByAnotherPayment
                                    | OrderError::NotPending(_)
                                    | OrderError::AmountMismatch { .. }
                            ))
                        );
                        settle("order-paid", result)?;
                        if orphan {
                            let cmd = PaymentCommand::Refund {
                                refund_no: format!("orphan-{payment_id}"),
                                amount,
                                reason: "the order was already paid or closed".into(),
                                refunded_at: captured_at,
                            };
                            let meta = meta_for(e, format!("pm:orphan-refund:{payment_id}"));
                            settle(
                                "orphan-refund",
                                self.bus
                                    .execute::<Payment>(&payment_id.to_string(), cmd, &meta)
                                    .await,
                            )?;
                        }
                    }
                    PaymentEvent::RechargeCaptured {
                        user_id,
                        amount,
                        captured_at,
                        ..
                    } => {
                        let payment_id = id_of(e)?;
                        let cmd = WalletCommand::Credit {
                            user_id,
                            amount,
                            reason: CreditReason::Recharge { payment_id },
                            at: captured_at,
                        };
                        let meta = meta_for(e, format!("pm:recharge:{payment_id}"));
                        settle(
                            "recharge",
                            self.bus
                                .execute::<UserWallet>(&user_id.to_string(), cmd, &meta)
                                .await,
                        )?;
                    }
                    PaymentEvent::PaymentRefunded {
                        order_id,
                        refund_no,
                        amount,
                        refunded_at,
                        ..
                    } if order_id > 0 && !refund_no.starts_with("orphan-") => {
                        let payment_id = id_of(e)?;
                        let meta =
                            meta_for(e, format!("pm:order-refunded:{payment_id}:{refund_no}"));
                        let cmd = OrderCommand::MarkRefunded {
                            payment_id,
                            refund_no,
                            amount,
                            refunded_at,
                        };
                        settle(
                            "order-refunded",
                            self.bus
                                .execute::<Order>(&order_id.to_string(), cmd, &meta)
                                .await,
                        )?;
                    }
                    _ => {}
                },
                "order" => match e.decode()? {
                    OrderEvent::OrderRefundRequested {
                        payment_id,
                        refund_no,
                        amount,
                        reason,
                        requested_at,
                        ..
                    } => {
                        let order_id = id_of(e)?;
                        let meta = meta_for(e, format!("pm:order-refund:{order_id}:{refund_no}"));
                        let cmd = PaymentCommand::Refund {
                            refund_no,
                            amount,
                            reason: if reason.is_empty() {
                                "refund requested".into()
                            } else {
                                reason
                            },
                            refunded_at: requested_at,
                        };
                        settle(
                            "order-refund",
                            self.bus
                                .execute::<Payment>(&payment_id.to_string(), cmd, &meta)
                                .await,
                        )?;
                    }
                    OrderEvent::OrderCancelled {
                        payment_id: Some(payment_id),
                        refund_amount,
                        reason,
                        cancelled_at,
                        ..
                    } if refund_amount > 0 => {
                        let order_id = id_of(e)?;
                        let cmd = PaymentCommand::Refund {
                            refund_no: format!("cancel-{order_id}"),
                            amount: refund_amount,
                            reason: if reason.is_empty() {
                                "order cancelled".into()
                            } else {
                                reason
                            },
                            refunded_at: cancelled_at,
                        };
                        let meta = meta_for(e, format!("pm:cancel-refund:{order_id}"));
                        settle(
                            "cancel-refund",
                            self.bus
                                .execute::<Payment>(&payment_id.to_string(), cmd, &meta)
                                .await,
                        )?;
                    }
                    _ => {}
                },
                "session" => match e.decode()? {
                    SessionEvent::SessionStarted {
                        order_id,
                        started_at,
                        ..
                    } => {
                        let session_id = id_of(e)?;
                        let cmd = OrderCommand::StartService {
                            session_id,
                            started_at,
                        };
                        let meta = meta_for(e, format!("pm:order-service:{session_id}"));
                        settle(
                            "order-service",
                            self.bus
                                .execute::<Order>(&order_id.to_string(), cmd, &meta)
                                .await,
                        )?;
                    }
                    SessionEvent::SessionBilled {
                        order_id,
                        user_id,
                        counselor_id,
                        counselor_fee,
                        refund,
                        billed_at,
                        ..
                    } => {
                        let session_id = id_of(e)?;
                        let credit = AccountCommand::CreditEarnings {
                            counselor_id,
                            session_id,
                            order_id,
                            amount: counselor_fee,
                            at: billed_at,
                        };
                        let meta = meta_for(e, format!("pm:credit:{session_id}"));
                        settle(
                            "credit",
                            self.bus
                                .execute::<CounselorAccount>(
                                    &counselor_id.to_string(),
                                    credit,
                                    &meta,
                                )
                                .await,
                        )?;
                        if refund > 0 {
                            let cmd = WalletCommand::Credit {
                                user_id,
                                amount: refund,
                                reason: CreditReason::SessionRefund {
                                    session_id,
                                    order_id,
                                },
                                at: billed_at,
                            };
                            let meta = meta_for(e, format!("pm:refund:{session_id}"));
                            settle(
                                "refund",
                                self.bus
                                    .execute::<UserWallet>(&user_id.to_string(), cmd, &meta)
                                    .await,
                            )?;
                        }
                        let cmd = OrderCommand::Complete {
                            session_id,
                            completed_at: billed_at,
                        };
                        let meta = meta_for(e, format!("pm:complete:{order_id}"));
                        settle(
                            "complete",
                            self.bus
                                .execute::<Order>(&order_id.to_string(), cmd, &meta)
                                .await,
                        )?;
                    }
                    SessionEvent::SessionEnded { .. } => {}
                },
                _ => {}
            }
        }
        Ok(())
    }
}
