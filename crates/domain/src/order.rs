//! The `Order` aggregate (`ev.order.<id>`): placed → paid → in service → completed, or cancelled /
//! refunded. It holds the price fixed when the order was placed, so later price changes of the
//! counselor never touch an existing order.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::{Fen, Timestamp, EVENT_VERSION};

/// Shortest and longest order, in minutes (MyChat's web client offers 30/60/90/120; the demo
/// books 10).
pub const MIN_DURATION_MINUTES: i64 = 10;
/// See [`MIN_DURATION_MINUTES`].
pub const MAX_DURATION_MINUTES: i64 = 180;

/// Order status, with MyChat's wire codes (contract a.6): 0 pending payment, 1 paid, 2 completed,
/// 3 cancelled, 4 refunded. `Absent` is the state before `OrderPlaced`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    #[default]
    Absent,
    Pending,
    Paid,
    Completed,
    Cancelled,
    Refunded,
}

impl OrderStatus {
    /// The wire code of contract a.6 (`Absent` has none and maps to -1).
    pub fn code(self) -> i16 {
        match self {
            Self::Absent => -1,
            Self::Pending => 0,
            Self::Paid => 1,
            Self::Completed => 2,
            Self::Cancelled => 3,
            Self::Refunded => 4,
        }
    }

    /// The status of wire code `code` (contract a.6: 0–4); `None` for any other number.
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Pending,
            1 => Self::Paid,
            2 => Self::Completed,
            3 => Self::Cancelled,
            4 => Self::Refunded,
            _ => return None,
        })
    }
}

/// The `Order` aggregate's state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub status: OrderStatus,
    pub order_no: String,
    pub user_id: i64,
    pub counselor_id: i64,
    pub duration_minutes: i64,
    /// Fixed at placement, fen per minute.
    pub price_per_minute: Fen,
    /// `duration_minutes × price_per_minute`, fen; what the user prepays.
    pub amount: Fen,
    pub payment_id: Option<i64>,
    pub session_id: Option<i64>,
    /// Whether the order's one review was written.
    #[serde(default)]
    pub reviewed: bool,
    /// Fen refunded to the user so far.
    #[serde(default)]
    pub refunded: Fen,
    /// Fen captured by the payment that paid the order (`OrderPaid`'s amount): the money the
    /// order's service may spend. An order never paid by a captured payment has 0.
    #[serde(default)]
    pub captured: Fen,
    /// Fen whose refund was decided (a cancellation with refund, a refund request), whether or
    /// not the payment has paid it back yet.
    #[serde(default)]
    pub refunds_decided: Fen,
    /// The refund numbers requested on the order (a repeat is a no-op).
    #[serde(default)]
    pub refund_nos: Vec<String>,
}

/// Commands on an `Order`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderCommand {
    /// Places a new order. Refused on an existing order, a duration outside
    /// [`MIN_DURATION_MINUTES`]..=[`MAX_DURATION_MINUTES`] or a non-positive price.
    Place {
        order_no: String,
        user_id: i64,
        counselor_id: i64,
        duration_minutes: i64,
        price_per_minute: Fen,
        schedule_time: Option<Timestamp>,
        notes: String,
        placed_at: Timestamp,
    },
    /// Records that a captured payment paid the order. Idempotent for the same payment; refused
    /// for another payment once paid, or when the amount differs from the order's.
    MarkPaid {
        payment_id: i64,
        amount: Fen,
        paid_at: Timestamp,
    },
    /// Starts the order's service (its chat session): the order must be paid by a captured
    /// payment that covers its whole amount, with no refund decided
    /// ([`OrderError::NotFunded`]). Idempotent per session; refused for a second session.
    StartService {
        session_id: i64,
        started_at: Timestamp,
    },
    /// Completes the order after its session was billed (idempotent).
    Complete {
        session_id: i64,
        completed_at: Timestamp,
    },
    /// Asks for `amount` fen of the order's captured payment `payment_id` to go back to the
    /// user (the user's `POST /api/payment/refund`, an administrator's refund). Allowed only on
    /// a paid (or already partly refunded) order whose service has not started, up to what was captured and not yet decided
    /// to be refunded; `refund_no` again is a no-op. The money moves with `Payment::Refund`
    /// (process manager). Deciding it here, on the order, serializes it with the session's
    /// start: a refund and a start can never both spend the same money.
    RequestRefund {
        payment_id: i64,
        refund_no: String,
        amount: Fen,
        reason: String,
        requested_by: i64,
        requested_at: Timestamp,
    },
    /// Cancels the order (contract b.1 #25, intended behaviour): allowed while awaiting payment,
    /// or once paid as long as the service has not started, in which case the whole prepaid
    /// amount is to be refunded to the payment it came from (`OrderCancelled::refund_amount`).
    /// Refused otherwise ([`OrderError::NotCancellable`], [`OrderError::ServiceStarted`]).
    Cancel {
        cancelled_by: i64,
        reason: String,
        cancelled_at: Timestamp,
    },
    /// Expires an order left unpaid (contract b.4 `expire`, section f.9: MyChat's scheduler set
    /// status 2, the intended status is 3, cancelled; the periodic sweep that issues this
    /// command is `projections::expiry`). Allowed only while the order awaits payment, so a
    /// payment that lands first wins; records `OrderCancelled` by the system (`cancelled_by` 0)
    /// with no refund. Refused otherwise ([`OrderError::NotCancellable`],
    /// [`OrderError::NotFound`]).
    Expire {
        reason: String,
        expired_at: Timestamp,
    },
    /// Records that `amount` fen of the order's payment went back to the user (after
    /// `PaymentRefunded`). Idempotent per `refund_no`. Refused on an order that was never paid.
    MarkRefunded {
        payment_id: i64,
        refund_no: String,
        amount: Fen,
        refunded_at: Timestamp,
    },
    /// The user's one review of a completed order (contract b.1 #15): `rating` 1..=5.
    Review {
        user_id: i64,
        rating: i16,
        comment: String,
        is_anonymous: bool,
        reviewed_at: Timestamp,
    },
}

/// Events of an `Order`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderEvent {
    OrderPlaced {
        order_no: String,
        user_id: i64,
        counselor_id: i64,
        duration_minutes: i64,
        price_per_minute: Fen,
        amount: Fen,
        schedule_time: Option<Timestamp>,
        notes: String,
        placed_at: Timestamp,
    },
    OrderPaid {
        payment_id: i64,
        amount: Fen,
        paid_at: Timestamp,
    },
    OrderServiceStarted {
        session_id: i64,
        started_at: Timestamp,
    },
    OrderCompleted {
        session_id: i64,
        completed_at: Timestamp,
    },
    /// An administrator overrode the status from `from` to `to`. Recorded by earlier versions
    /// and still replayed as it is; no longer issued: an administrator's status change now
    /// runs the command that moves the money (an offline payment, a cancellation, a refund).
    /// An order set to paid this way has no captured payment, so its service cannot start.
    OrderStatusChangedByAdmin {
        from: OrderStatus,
        to: OrderStatus,
        admin_id: i64,
        reason: String,
        at: Timestamp,
    },
    /// The order was cancelled. `refund_amount` (fen) is what must go back to `payment_id`
    /// (0 and `None` for an unpaid order). The money moves with `PaymentRefunded`.
    OrderCancelled {
        user_id: i64,
        counselor_id: i64,
        cancelled_by: i64,
        reason: String,
        payment_id: Option<i64>,
        refund_amount: Fen,
        cancelled_at: Timestamp,
    },
    /// A refund of `amount` fen of `payment_id` was decided (`refund_no` names it); the money
    /// moves with `PaymentRefunded`, then `OrderRefunded`.
    OrderRefundRequested {
        user_id: i64,
        payment_id: i64,
        refund_no: String,
        amount: Fen,
        reason: String,
        requested_by: i64,
        requested_at: Timestamp,
    },
    /// `amount` fen of `payment_id` went back to the user (`refund_no` names the refund).
    OrderRefunded {
        user_id: i64,
        payment_id: i64,
        refund_no: String,
        amount: Fen,
        refunded_at: Timestamp,
    },
    /// The order's one review.
    OrderReviewed {
        user_id: i64,
        counselor_id: i64,
        rating: i16,
        comment: String,
        is_anonymous: bool,
        reviewed_at: Timestamp,
    },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            Self::OrderPlaced { .. } => "OrderPlaced",
            Self::OrderPaid { .. } => "OrderPaid",
            Self::OrderServiceStarted { .. } => "OrderServiceStarted",
            Self::OrderCompleted { .. } => "OrderCompleted",
            Self::OrderStatusChangedByAdmin { .. } => "OrderStatusChangedByAdmin",
            Self::OrderCancelled { .. } => "OrderCancelled",
            Self::OrderRefundRequested { .. } => "OrderRefundRequested",
            Self::OrderRefunded { .. } => "OrderRefunded",
            Self::OrderReviewed { .. } => "OrderReviewed",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION.to_string()
    }
}

/// Why an order command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order already exists")]
    AlreadyPlaced,
    #[error("order not found")]
    NotFound,
    #[error("duration must be between {MIN_DURATION_MINUTES} and {MAX_DURATION_MINUTES} minutes")]
    InvalidDuration,
    #[error("price per minute must be positive")]
    InvalidPrice,
    #[error("order is not awaiting payment (status {0:?})")]
    NotPending(OrderStatus),
    #[error("order is not paid (status {0:?})")]
    NotPaid(OrderStatus),
    #[error("order is already paid by another payment")]
    PaidByAnotherPayment,
    #[error("amount {paid} does not match the order's amount {expected}")]
    AmountMismatch { expected: Fen, paid: Fen },
    #[error("order already has another session")]
    OtherSession,
    #[error("an order cannot be set to that status")]
    InvalidStatus,
    #[error("order cannot be cancelled (status {0:?})")]
    NotCancellable(OrderStatus),
    #[error("order cannot be cancelled: its chat session has started")]
    ServiceStarted,
    #[error("only a completed order can be reviewed (status {0:?})")]
    NotCompleted(OrderStatus),
    #[error("order already reviewed")]
    AlreadyReviewed,
    #[error("only the order's user may do this")]
    NotYourOrder,
    #[error("rating must be between 1 and 5")]
    InvalidRating,
    #[error("refund amount must be positive")]
    InvalidRefund,
    #[error("the order's captured payment ({captured} fen, {refunding} fen of it being refunded) does not cover its amount ({required} fen)")]
    NotFunded {
        captured: Fen,
        refunding: Fen,
        required: Fen,
    },
    #[error("refund of {requested} fen exceeds the {refundable} fen that can still be refunded")]
    RefundExceedsCaptured { refundable: Fen, requested: Fen },
}

impl Order {
    /// Fen of the captured payment that no refund has been decided for: what the order's
    /// service may still spend.
    pub fn funded(&self) -> Fen {
        self.captured - self.refunds_decided.max(self.refunded)
    }

    fn refund_nos_contains(&self, refund_no: &str) -> bool {
        self.refund_nos.iter().any(|r| r == refund_no)
    }

    /// This order's `OrderCancelled`: by a user or administrator (`Cancel`) or by the system
    /// (`Expire`, `cancelled_by` 0), refunding `refund_amount` fen to `payment_id`.
    fn cancelled(
        &self,
        cancelled_by: i64,
        reason: String,
        payment_id: Option<i64>,
        refund_amount: Fen,
        cancelled_at: Timestamp,
    ) -> OrderEvent {
        OrderEvent::OrderCancelled {
            user_id: self.user_id,
            counselor_id: self.counselor_id,
            cancelled_by,
            reason,
            payment_id,
            refund_amount,
            cancelled_at,
        }
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = ();

    async fn handle(
        &mut self,
        command: OrderCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), OrderError> {
        match command {
            OrderCommand::Place {
                order_no,
                user_id,
                counselor_id,
                duration_minutes,
                price_per_minute,
                schedule_time,
                notes,
                placed_at,
            } => {
                if self.status != OrderStatus::Absent {
                    return Err(OrderError::AlreadyPlaced);
                }
                if !(MIN_DURATION_MINUTES..=MAX_DURATION_MINUTES).contains(&duration_minutes) {
                    return Err(OrderError::InvalidDuration);
                }
                if price_per_minute <= 0 {
                    return Err(OrderError::InvalidPrice);
                }
                let amount = duration_minutes * price_per_minute;
                let event = OrderEvent::OrderPlaced {
                    order_no,
                    user_id,
                    counselor_id,
                    duration_minutes,
                    price_per_minute,
                    amount,
                    schedule_time,
                    notes,
                    placed_at,
                };
                sink.write(event, self).await;
            }
            OrderCommand::MarkPaid {
                payment_id,
                amount,
                paid_at,
            } => match self.status {
                OrderStatus::Absent => return Err(OrderError::NotFound),
                OrderStatus::Pending => {
                    if amount != self.amount {
                        return Err(OrderError::AmountMismatch {
                            expected: self.amount,
                            paid: amount,
                        });
                    }
                    sink.write(
                        OrderEvent::OrderPaid {
                            payment_id,
                            amount,
                            paid_at,
                        },
                        self,
                    )
                    .await;
                }
                _ if self.payment_id == Some(payment_id) => {}
                OrderStatus::Paid | OrderStatus::Completed => {
                    return Err(OrderError::PaidByAnotherPayment)
                }
                status => return Err(OrderError::NotPending(status)),
            },
            OrderCommand::StartService {
                session_id,
                started_at,
            } => {
                if self.session_id == Some(session_id) {
                    return Ok(());
                }
                if self.status != OrderStatus::Paid {
                    return Err(OrderError::NotPaid(self.status));
                }
                if self.session_id.is_some() {
                    return Err(OrderError::OtherSession);
                }
                if self.payment_id.is_none() || self.funded() < self.amount {
                    return Err(OrderError::NotFunded {
                        captured: self.captured,
                        refunding: self.refunds_decided.max(self.refunded),
                        required: self.amount,
                    });
                }
                sink.write(
                    OrderEvent::OrderServiceStarted {
                        session_id,
                        started_at,
                    },
                    self,
                )
                .await;
            }
            OrderCommand::Complete {
                session_id,
                completed_at,
            } => {
                if self.status == OrderStatus::Completed {
                    return Ok(());
                }
                if self.status != OrderStatus::Paid {
                    return Err(OrderError::NotPaid(self.status));
                }
                sink.write(
                    OrderEvent::OrderCompleted {
                        session_id,
                        completed_at,
                    },
                    self,
                )
                .await;
            }
            OrderCommand::RequestRefund {
                payment_id,
                refund_no,
                amount,
                reason,
                requested_by,
                requested_at,
            } => {
                match self.status {
                    OrderStatus::Absent => return Err(OrderError::NotFound),
                    // Partly refunded already (status 4): the rest may still go back.
                    OrderStatus::Paid | OrderStatus::Refunded => {}
                    status => return Err(OrderError::NotPaid(status)),
                }
                if self.payment_id != Some(payment_id) {
                    return Err(OrderError::PaidByAnotherPayment);
                }
                if self.refund_nos_contains(&refund_no) {
                    return Ok(());
                }
                if self.session_id.is_some() {
                    return Err(OrderError::ServiceStarted);
                }
                if amount <= 0 {
                    return Err(OrderError::InvalidRefund);
                }
                if amount > self.funded() {
                    return Err(OrderError::RefundExceedsCaptured {
                        refundable: self.funded(),
                        requested: amount,
                    });
                }
                sink.write(
                    OrderEvent::OrderRefundRequested {
                        user_id: self.user_id,
                        payment_id,
                        refund_no,
                        amount,
                        reason,
                        requested_by,
                        requested_at,
                    },
                    self,
                )
                .await;
            }
            OrderCommand::Cancel {
                cancelled_by,
                reason,
                cancelled_at,
            } => {
                let (payment_id, refund_amount) = match self.status {
                    OrderStatus::Pending => (None, 0),
                    OrderStatus::Paid if self.session_id.is_some() => {
                        return Err(OrderError::ServiceStarted)
                    }
                    OrderStatus::Paid => (self.payment_id, self.amount),
                    OrderStatus::Absent => return Err(OrderError::NotFound),
                    status => return Err(OrderError::NotCancellable(status)),
                };
                let event = self.cancelled(
                    cancelled_by,
                    reason,
                    payment_id,
                    refund_amount,
                    cancelled_at,
                );
                sink.write(event, self).await;
            }
            OrderCommand::Expire { reason, expired_at } => {
                match self.status {
                    OrderStatus::Pending => {}
                    OrderStatus::Absent => return Err(OrderError::NotFound),
                    status => return Err(OrderError::NotCancellable(status)),
                }
                let event = self.cancelled(0, reason, None, 0, expired_at);
                sink.write(event, self).await;
            }
            OrderCommand::MarkRefunded {
                payment_id,
                refund_no,
                amount,
                refunded_at,
            } => {
                if amount <= 0 {
                    return Err(OrderError::InvalidRefund);
                }
                match self.status {
                    OrderStatus::Absent => return Err(OrderError::NotFound),
                    OrderStatus::Pending => return Err(OrderError::NotPaid(self.status)),
                    _ if self.payment_id != Some(payment_id) => {
                        return Err(OrderError::PaidByAnotherPayment)
                    }
                    _ => {}
                }
                sink.write(
                    OrderEvent::OrderRefunded {
                        user_id: self.user_id,
                        payment_id,
                        refund_no,
                        amount,
                        refunded_at,
                    },
                    self,
                )
                .await;
            }
            OrderCommand::Review {
                user_id,
                rating,
                comment,
                is_anonymous,
                reviewed_at,
            } => {
                if self.status == OrderStatus::Absent {
                    return Err(OrderError::NotFound);
                }
                if user_id != self.user_id {
                    return Err(OrderError::NotYourOrder);
                }
                if self.reviewed {
                    return Err(OrderError::AlreadyReviewed);
                }
                if self.status != OrderStatus::Completed {
                    return Err(OrderError::NotCompleted(self.status));
                }
                if !(1..=5).contains(&rating) {
                    return Err(OrderError::InvalidRating);
                }
                sink.write(
                    OrderEvent::OrderReviewed {
                        user_id,
                        counselor_id: self.counselor_id,
                        rating,
                        comment,
                        is_anonymous,
                        reviewed_at,
                    },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: OrderEvent) {
        match event {
            OrderEvent::OrderPlaced {
                order_no,
                user_id,
                counselor_id,
                duration_minutes,
                price_per_minute,
                amount,
                ..
            } => {
                self.status = OrderStatus::Pending;
                self.order_no = order_no;
                self.user_id = user_id;
                self.counselor_id = counselor_id;
                self.duration_minutes = duration_minutes;
                self.price_per_minute = price_per_minute;
                self.amount = amount;
            }
            OrderEvent::OrderPaid {
                payment_id, amount, ..
            } => {
                self.status = OrderStatus::Paid;
                self.payment_id = Some(payment_id);
                self.captured = amount;
            }
            OrderEvent::OrderServiceStarted { session_id, .. } => {
                self.session_id = Some(session_id)
            }
            OrderEvent::OrderCompleted { .. } => self.status = OrderStatus::Completed,
            OrderEvent::OrderStatusChangedByAdmin { to, .. } => self.status = to,
            OrderEvent::OrderCancelled { refund_amount, .. } => {
                self.status = OrderStatus::Cancelled;
                self.refunds_decided += refund_amount;
            }
            OrderEvent::OrderRefundRequested {
                refund_no, amount, ..
            } => {
                self.refunds_decided += amount;
                self.refund_nos.push(refund_no);
            }
            OrderEvent::OrderRefunded { amount, .. } => {
                self.status = OrderStatus::Refunded;
                self.refunded += amount;
            }
            OrderEvent::OrderReviewed { .. } => self.reviewed = true,
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

    fn placed() -> OrderEvent {
        OrderEvent::OrderPlaced {
            order_no: "ORD1".into(),
            user_id: 7,
            counselor_id: 3,
            duration_minutes: 10,
            price_per_minute: 500,
            amount: 5_000,
            schedule_time: None,
            notes: String::new(),
            placed_at: at(),
        }
    }

    fn place(duration_minutes: i64, price_per_minute: Fen) -> OrderCommand {
        OrderCommand::Place {
            order_no: "ORD1".into(),
            user_id: 7,
            counselor_id: 3,
            duration_minutes,
            price_per_minute,
            schedule_time: None,
            notes: String::new(),
            placed_at: at(),
        }
    }

    #[test]
    fn placing_an_order_prepays_duration_times_price() {
        TestFramework::<Order>::with(())
            .given_no_previous_events()
            .when(place(10, 500))
            .then_expect_events(vec![placed()]);
    }

    #[test]
    fn an_order_cannot_be_placed_twice() {
        TestFramework::<Order>::with(())
            .given(vec![placed()])
            .when(place(10, 500))
            .then_expect_error(OrderError::AlreadyPlaced);
    }

    #[test]
    fn a_duration_out_of_range_or_a_zero_price_is_refused() {
        TestFramework::<Order>::with(())
            .given_no_previous_events()
            .when(place(0, 500))
            .then_expect_error(OrderError::InvalidDuration);
        TestFramework::<Order>::with(())
            .given_no_previous_events()
            .when(place(10, 0))
            .then_expect_error(OrderError::InvalidPrice);
    }

    #[test]
    fn paying_with_the_exact_amount_marks_the_order_paid_once() {
        let paid = OrderEvent::OrderPaid {
            payment_id: 1,
            amount: 5_000,
            paid_at: at(),
        };
        TestFramework::<Order>::with(())
            .given(vec![placed()])
            .when(OrderCommand::MarkPaid {
                payment_id: 1,
                amount: 5_000,
                paid_at: at(),
            })
            .then_expect_events(vec![paid.clone()]);
        // The same payment again is a no-op; another payment is refused.
        TestFramework::<Order>::with(())
            .given(vec![placed(), paid.clone()])
            .when(OrderCommand::MarkPaid {
                payment_id: 1,
                amount: 5_000,
                paid_at: at(),
            })
            .then_expect_events(vec![]);
        TestFramework::<Order>::with(())
            .given(vec![placed(), paid])
            .when(OrderCommand::MarkPaid {
                payment_id: 2,
                amount: 5_000,
                paid_at: at(),
            })
            .then_expect_error(OrderError::PaidByAnotherPayment);
    }

    #[test]
    fn a_wrong_amount_does_not_pay_the_order() {
        TestFramework::<Order>::with(())
            .given(vec![placed()])
            .when(OrderCommand::MarkPaid {
                payment_id: 1,
                amount: 4_999,
                paid_at: at(),
            })
            .then_expect_error(OrderError::AmountMismatch {
                expected: 5_000,
                paid: 4_999,
            });
    }

    fn start(session_id: i64) -> OrderCommand {
        OrderCommand::StartService {
            session_id,
            started_at: at(),
        }
    }

    fn refund_request(refund_no: &str, amount: Fen) -> OrderCommand {
        OrderCommand::RequestRefund {
            payment_id: 1,
            refund_no: refund_no.into(),
            amount,
            reason: String::new(),
            requested_by: 7,
            requested_at: at(),
        }
    }

    fn refund_requested(refund_no: &str, amount: Fen) -> OrderEvent {
        OrderEvent::OrderRefundRequested {
            user_id: 7,
            payment_id: 1,
            refund_no: refund_no.into(),
            amount,
            reason: String::new(),
            requested_by: 7,
            requested_at: at(),
        }
    }

    #[test]
    fn service_starts_only_when_a_captured_payment_covers_the_order() {
        TestFramework::<Order>::with(())
            .given(vec![placed(), paid()])
            .when(start(1))
            .then_expect_events(vec![OrderEvent::OrderServiceStarted {
                session_id: 1,
                started_at: at(),
            }]);
        // Set to paid by an administrator's override (no money): not funded.
        let overridden = OrderEvent::OrderStatusChangedByAdmin {
            from: OrderStatus::Pending,
            to: OrderStatus::Paid,
            admin_id: 1,
            reason: String::new(),
            at: at(),
        };
        TestFramework::<Order>::with(())
            .given(vec![placed(), overridden])
            .when(start(1))
            .then_expect_error(OrderError::NotFunded {
                captured: 0,
                refunding: 0,
                required: 5_000,
            });
        // Refunded, then set back to paid by an override: not funded either.
        let back = OrderEvent::OrderStatusChangedByAdmin {
            from: OrderStatus::Refunded,
            to: OrderStatus::Paid,
            admin_id: 1,
            reason: String::new(),
            at: at(),
        };
        let refunded = OrderEvent::OrderRefunded {
            user_id: 7,
            payment_id: 1,
            refund_no: "R".into(),
            amount: 5_000,
            refunded_at: at(),
        };
        TestFramework::<Order>::with(())
            .given(vec![placed(), paid(), refunded, back])
            .when(start(1))
            .then_expect_error(OrderError::NotFunded {
                captured: 5_000,
                refunding: 5_000,
                required: 5_000,
            });
        // A refund decided (not yet paid back) already stops the start.
        TestFramework::<Order>::with(())
            .given(vec![placed(), paid(), refund_requested("R1", 1)])
            .when(start(1))
            .then_expect_error(OrderError::NotFunded {
                captured: 5_000,
                refunding: 1,
                required: 5_000,
            });
    }

    #[test]
    fn a_refund_is_decided_only_before_the_service_and_within_what_was_captured() {
        TestFramework::<Order>::with(())
            .given(vec![placed(), paid()])
            .when(refund_request("R1", 2_000))
            .then_expect_events(vec![refund_requested("R1", 2_000)]);
        TestFramework::<Order>::with(())
            .given(vec![placed(), paid(), refund_requested("R1", 2_000)])
            .when(refund_request("R1", 2_000))
            .then_expect_events(vec![]);
        TestFramework::<Order>::with(())
            .given(vec![placed(), paid(), refund_requested("R1", 2_000)])
            .when(refund_request("R2", 3_001))
            .then_expect_error(OrderError::RefundExceedsCaptured {
                refundable: 3_000,
                requested: 3_001,
            });
        let started = OrderEvent::OrderServiceStarted {
            session_id: 1,
            started_at: at(),
        };
        TestFramework::<Order>::with(())
            .given(vec![placed(), paid(), started])
            .when(refund_request("R1", 1))
            .then_expect_error(OrderError::ServiceStarted);
        TestFramework::<Order>::with(())
            .given(vec![placed()])
            .when(refund_request("R1", 1))
            .then_expect_error(OrderError::NotPaid(OrderStatus::Pending));
    }

    #[test]
    fn service_starts_only_on_a_paid_order() {
        TestFramework::<Order>::with(())
            .given(vec![placed()])
            .when(OrderCommand::StartService {
                session_id: 1,
                started_at: at(),
            })
            .then_expect_error(OrderError::NotPaid(OrderStatus::Pending));
    }

    fn paid() -> OrderEvent {
        OrderEvent::OrderPaid {
            payment_id: 1,
            amount: 5_000,
            paid_at: at(),
        }
    }

    fn cancel() -> OrderCommand {
        OrderCommand::Cancel {
            cancelled_by: 7,
            reason: String::new(),
            cancelled_at: at(),
        }
    }

    /// The `OrderCancelled` of order 1 (user 7, counselor 3) at [`at`].
    fn cancelled(by: i64, reason: &str, payment_id: Option<i64>, refund_amount: Fen) -> OrderEvent {
        OrderEvent::OrderCancelled {
            user_id: 7,
            counselor_id: 3,
            cancelled_by: by,
            reason: reason.into(),
            payment_id,
            refund_amount,
            cancelled_at: at(),
        }
    }

    #[test]
    fn cancelling_an_unpaid_order_refunds_nothing() {
        TestFramework::<Order>::with(())
            .given(vec![placed()])
            .when(cancel())
            .then_expect_events(vec![cancelled(7, "", None, 0)]);
    }

    #[test]
    fn cancelling_a_paid_order_refunds_the_whole_payment() {
        TestFramework::<Order>::with(())
            .given(vec![placed(), paid()])
            .when(cancel())
            .then_expect_events(vec![cancelled(7, "", Some(1), 5_000)]);
    }

    fn expire() -> OrderCommand {
        OrderCommand::Expire {
            reason: "unpaid".into(),
            expired_at: at(),
        }
    }

    #[test]
    fn an_unpaid_order_expires_as_cancelled_by_the_system() {
        TestFramework::<Order>::with(())
            .given(vec![placed()])
            .when(expire())
            .then_expect_events(vec![cancelled(0, "unpaid", None, 0)]);
    }

    #[test]
    fn only_an_order_awaiting_payment_expires() {
        TestFramework::<Order>::with(())
            .given(vec![placed(), paid()])
            .when(expire())
            .then_expect_error(OrderError::NotCancellable(OrderStatus::Paid));
        TestFramework::<Order>::with(())
            .given_no_previous_events()
            .when(expire())
            .then_expect_error(OrderError::NotFound);
        TestFramework::<Order>::with(())
            .given(vec![placed(), cancelled(7, "", None, 0)])
            .when(expire())
            .then_expect_error(OrderError::NotCancellable(OrderStatus::Cancelled));
    }

    #[test]
    fn an_order_in_service_or_completed_cannot_be_cancelled() {
        let started = OrderEvent::OrderServiceStarted {
            session_id: 1,
            started_at: at(),
        };
        TestFramework::<Order>::with(())
            .given(vec![placed(), paid(), started.clone()])
            .when(cancel())
            .then_expect_error(OrderError::ServiceStarted);
        let completed = OrderEvent::OrderCompleted {
            session_id: 1,
            completed_at: at(),
        };
        TestFramework::<Order>::with(())
            .given(vec![placed(), paid(), started, completed])
            .when(cancel())
            .then_expect_error(OrderError::NotCancellable(OrderStatus::Completed));
    }

    #[test]
    fn a_refund_is_recorded_only_for_the_payment_that_paid() {
        TestFramework::<Order>::with(())
            .given(vec![placed(), paid()])
            .when(OrderCommand::MarkRefunded {
                payment_id: 1,
                refund_no: "R1".into(),
                amount: 100,
                refunded_at: at(),
            })
            .then_expect_events(vec![OrderEvent::OrderRefunded {
                user_id: 7,
                payment_id: 1,
                refund_no: "R1".into(),
                amount: 100,
                refunded_at: at(),
            }]);
        TestFramework::<Order>::with(())
            .given(vec![placed(), paid()])
            .when(OrderCommand::MarkRefunded {
                payment_id: 2,
                refund_no: "R1".into(),
                amount: 100,
                refunded_at: at(),
            })
            .then_expect_error(OrderError::PaidByAnotherPayment);
    }

    fn review(user_id: i64, rating: i16) -> OrderCommand {
        OrderCommand::Review {
            user_id,
            rating,
            comment: "good".into(),
            is_anonymous: false,
            reviewed_at: at(),
        }
    }

    #[test]
    fn a_completed_order_is_reviewed_once_by_its_user() {
        let completed = vec![
            placed(),
            paid(),
            OrderEvent::OrderCompleted {
                session_id: 1,
                completed_at: at(),
            },
        ];
        let reviewed = OrderEvent::OrderReviewed {
            user_id: 7,
            counselor_id: 3,
            rating: 5,
            comment: "good".into(),
            is_anonymous: false,
            reviewed_at: at(),
        };
        TestFramework::<Order>::with(())
            .given(completed.clone())
            .when(review(7, 5))
            .then_expect_events(vec![reviewed.clone()]);
        let mut twice = completed.clone();
        twice.push(reviewed);
        TestFramework::<Order>::with(())
            .given(twice)
            .when(review(7, 4))
            .then_expect_error(OrderError::AlreadyReviewed);
        TestFramework::<Order>::with(())
            .given(completed.clone())
            .when(review(8, 5))
            .then_expect_error(OrderError::NotYourOrder);
        TestFramework::<Order>::with(())
            .given(completed)
            .when(review(7, 6))
            .then_expect_error(OrderError::InvalidRating);
        TestFramework::<Order>::with(())
            .given(vec![placed(), paid()])
            .when(review(7, 5))
            .then_expect_error(OrderError::NotCompleted(OrderStatus::Paid));
    }
}
