//! The ledger fold: each `EVENTS` event folded into the [`Books`], on its own (neither a read
//! model nor the ledger's posting code), with the read-model rows it implies.

use std::collections::BTreeMap;

use domain::{AccountEvent, CreditReason, OrderEvent, PaymentEvent, SessionEvent, WalletEvent};
use eventstore::envelope::StoredEvent;

use super::books::{add, Books, WithdrawalFacts};

impl Books {
    pub(super) fn fold(
        &mut self,
        e: &StoredEvent,
        totals: &mut BTreeMap<String, i64>,
        in_period: bool,
    ) {
        let mut total = |k: &str, v: i64| {
            if in_period {
                *totals.entry(k.to_string()).or_default() += v;
            }
        };
        self.last_seq_by_event.insert(
            (e.aggregate_type.clone(), e.event_type.clone()),
            e.stream_sequence,
        );
        let where_ = format!(
            "{} {}:{} at stream sequence {}",
            e.event_type, e.aggregate_type, e.aggregate_id, e.stream_sequence
        );
        let Some(id) = e.aggregate_id_i64() else {
            if e.aggregate_type != "projection" {
                self.broken
                    .push(format!("{where_}: the aggregate id is not a number"));
            }
            return;
        };
        let undecodable = |err: serde_json::Error| format!("undecodable {where_}: {err}");
        match e.aggregate_type.as_str() {
            "order" => match crate::runtime::decode::<OrderEvent>(e) {
                Ok(OrderEvent::OrderPlaced { amount, .. }) => {
                    self.orders_amount.insert(id, amount);
                }
                Ok(OrderEvent::OrderPaid {
                    payment_id, amount, ..
                }) => self
                    .orders_paid
                    .entry(id)
                    .or_default()
                    .push((payment_id, amount)),
                Ok(
                    OrderEvent::OrderServiceStarted { .. }
                    | OrderEvent::OrderCompleted { .. }
                    | OrderEvent::OrderCancelled { .. }
                    | OrderEvent::OrderRefundRequested { .. }
                    | OrderEvent::OrderRefunded { .. }
                    | OrderEvent::OrderReviewed { .. }
                    | OrderEvent::OrderStatusChangedByAdmin { .. },
                ) => {}
                Err(err) => self.broken.push(undecodable(err)),
            },
            "payment" => match crate::runtime::decode::<PaymentEvent>(e) {
                Ok(
                    PaymentEvent::PaymentCreated {
                        order_id, amount, ..
                    }
                    | PaymentEvent::OfflinePaymentRecorded {
                        order_id, amount, ..
                    },
                ) => {
                    let p = self.payments.entry(id).or_default();
                    p.order_id = order_id;
                    p.amount = amount;
                }
                Ok(PaymentEvent::PaymentCaptured {
                    order_id,
                    user_id,
                    method,
                    provider_txn_id,
                    amount,
                    ..
                }) => {
                    *self.provider.entry(method.clone()).or_default() += amount;
                    add(&mut self.prepaid, user_id, amount);
                    total("captured", amount);
                    let p = self.payments.entry(id).or_default();
                    p.order_id = order_id;
                    p.captures.push((method, provider_txn_id, amount));
                }
                Ok(PaymentEvent::RechargePaymentCreated { .. }) => {}
                Ok(PaymentEvent::RechargeCaptured {
                    user_id,
                    method,
                    amount,
                    ..
                }) => {
                    *self.provider.entry(method).or_default() += amount;
                    add(&mut self.recharge, user_id, amount);
                    total("recharges_captured", amount);
                }
                Ok(PaymentEvent::PaymentRefunded {
                    user_id,
                    method,
                    amount,
                    ..
                }) => {
                    self.payments.entry(id).or_default().refunded += amount;
                    *self.provider.entry(method).or_default() -= amount;
                    add(&mut self.prepaid, user_id, -amount);
                    total("payments_refunded", amount);
                }
                Err(err) => self.broken.push(undecodable(err)),
            },
            "session" => match crate::runtime::decode::<SessionEvent>(e) {
                Ok(SessionEvent::SessionStarted { prepaid_amount, .. }) => {
                    self.sessions.entry(id).or_default().prepaid_amount = Some(prepaid_amount);
                }
                Ok(SessionEvent::SessionEnded { .. }) => {
                    self.sessions.entry(id).or_default().ended = true;
                }
                Ok(SessionEvent::SessionBilled {
                    user_id,
                    counselor_id,
                    amount,
                    platform_fee,
                    counselor_fee,
                    prepaid_amount,
                    refund,
                    ..
                }) => {
                    add(&mut self.prepaid, user_id, -amount);
                    self.revenue += platform_fee;
                    add(&mut self.pending, counselor_id, counselor_fee);
                    total("billed", amount);
                    total("platform_fees", platform_fee);
                    total("counselor_fees", counselor_fee);
                    if platform_fee + counselor_fee != amount {
                        self.broken.push(format!(
                            "{where_}: platform fee {platform_fee} + counselor fee {counselor_fee} ≠ amount {amount}"
                        ));
                    }
                    self.sessions.entry(id).or_default().bills.push((
                        amount,
                        refund,
                        prepaid_amount,
                        counselor_fee,
                    ));
                }
                Err(err) => self.broken.push(undecodable(err)),
            },
            "wallet" => match crate::runtime::decode::<WalletEvent>(e) {
                Ok(WalletEvent::WalletCredited {
                    user_id,
                    amount,
                    reason,
                    ..
                }) => match reason {
                    CreditReason::SessionRefund { session_id, .. } => {
                        add(&mut self.prepaid, user_id, -amount);
                        add(&mut self.wallet, user_id, amount);
                        total("refunds_credited", amount);
                        self.refunds.entry(session_id).or_default().push(amount);
                    }
                    CreditReason::Recharge { .. } => {
                        add(&mut self.recharge, user_id, -amount);
                        add(&mut self.wallet, user_id, amount);
                        total("recharges_credited", amount);
                    }
                },
                Err(err) => self.broken.push(undecodable(err)),
            },
            "account" => match crate::runtime::decode::<AccountEvent>(e) {
                Ok(AccountEvent::EarningsCredited {
                    counselor_id,
                    session_id,
                    amount,
                    ..
                }) => {
                    add(&mut self.pending, counselor_id, -amount);
                    add(&mut self.payable, counselor_id, amount);
                    add(&mut self.income, counselor_id, amount);
                    total("earnings_credited", amount);
                    self.earnings.entry(session_id).or_default().push(amount);
                }
                Ok(AccountEvent::WithdrawalRequested {
                    counselor_id,
                    withdrawal_id,
                    amount,
                    at,
                    ..
                }) => {
                    add(&mut self.payable, counselor_id, -amount);
                    add(&mut self.in_transit, counselor_id, amount);
                    total("withdrawals_requested", amount);
                    self.withdrawals.insert(
                        withdrawal_id,
                        WithdrawalFacts {
                            counselor: counselor_id,
                            amount,
                            status: "pending",
                            requested_at: at,
                        },
                    );
                }
                Ok(AccountEvent::WithdrawalApproved { withdrawal_id, .. }) => {
                    if let Some(w) = self.withdrawals.get_mut(&withdrawal_id) {
                        w.status = "approved";
                    } else {
                        self.broken.push(format!(
                            "{where_}: withdrawal {withdrawal_id} never requested"
                        ));
                    }
                }
                Ok(AccountEvent::WithdrawalRejected {
                    withdrawal_id,
                    amount,
                    ..
                }) => {
                    add(&mut self.in_transit, id, -amount);
                    add(&mut self.payable, id, amount);
                    total("withdrawals_rejected", amount);
                    match self.withdrawals.get_mut(&withdrawal_id) {
                        Some(w) => w.status = "rejected",
                        None => self.broken.push(format!(
                            "{where_}: withdrawal {withdrawal_id} never requested"
                        )),
                    }
                }
                Ok(AccountEvent::WithdrawalTransferred {
                    withdrawal_id,
                    amount,
                    ..
                }) => {
                    add(&mut self.in_transit, id, -amount);
                    add(&mut self.withdrawn, id, amount);
                    self.payouts += amount;
                    total("withdrawals_transferred", amount);
                    match self.withdrawals.get_mut(&withdrawal_id) {
                        Some(w) => w.status = "transferred",
                        None => self.broken.push(format!(
                            "{where_}: withdrawal {withdrawal_id} never requested"
                        )),
                    }
                }
                Err(err) => self.broken.push(undecodable(err)),
            },
            // Operators' decisions about projections: no money.
            "projection" => {}
            // Group conversations: no money (but they must be what they claim to be).
            "group" => {
                if let Err(err) = crate::runtime::decode::<domain::GroupEvent>(e) {
                    self.broken.push(undecodable(err));
                }
            }
            // Machine clients' credentials: no money (but they must be what they claim to be).
            "apikey" => {
                if let Err(err) = crate::runtime::decode::<domain::ApiKeyEvent>(e) {
                    self.broken.push(undecodable(err));
                }
            }
            other => self.broken.push(format!(
                "{where_}: unknown aggregate type {other:?}: reconciliation has no rule for it"
            )),
        }
        self.expect_rows(e, id);
    }
}
