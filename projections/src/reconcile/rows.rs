//! The read-model rows check: the money-bearing columns checked in each read model
//! ([`CHECKED_COLUMNS`]), the rows each event implies, and comparing a schema's rows with them.

use std::collections::BTreeMap;

use domain::{AccountEvent, OrderEvent, PaymentEvent, SessionEvent, WalletEvent};
use eventstore::envelope::StoredEvent;
use sqlx::PgPool;

use super::books::{Books, Row};

/// The money-bearing columns reconciliation checks in each read model, with the SQL of the row
/// key (as the differences name it). Every one of them is compared with the fold of the log.
pub const CHECKED_COLUMNS: [(&str, &str, &[&str]); 6] = [
    (
        "orders",
        "'id=' || id",
        &[
            "price_fen",
            "amount_fen",
            "refunded_fen",
            "status",
            "payment_id",
        ],
    ),
    (
        "payments",
        "'id=' || id",
        &["order_id", "amount_fen", "refunded_fen", "status"],
    ),
    (
        "chat_sessions",
        "'id=' || id",
        &["price_fen", "prepaid_minutes", "total_amount_fen", "status"],
    ),
    (
        "chat_billings",
        "'session_id=' || session_id",
        &[
            "user_id",
            "counselor_id",
            "billed_minutes",
            "price_fen",
            "total_amount_fen",
            "platform_fee_fen",
            "counselor_fee_fen",
            "refund_fen",
        ],
    ),
    (
        "withdrawals",
        "'id=' || id",
        &["counselor_id", "amount_fen", "status"],
    ),
    (
        "wallet_transactions",
        "'stream_seq=' || stream_seq || ',idx=' || idx",
        &["user_id", "amount_fen", "balance_fen"],
    ),
];

/// The projection that writes `table`.
pub(super) fn projection_of(table: &str) -> &'static str {
    match table {
        "wallet_transactions" => "user_wallets",
        "orders" => "orders",
        "payments" => "payments",
        "chat_sessions" => "chat_sessions",
        "chat_billings" => "chat_billings",
        _ => "withdrawals",
    }
}

impl Books {
    /// The read-model rows `e` creates or changes, by the log's own arithmetic.
    pub(super) fn expect_rows(&mut self, e: &StoredEvent, id: i64) {
        let key = format!("id={id}");
        match e.aggregate_type.as_str() {
            "order" => match crate::runtime::decode::<OrderEvent>(e) {
                Ok(OrderEvent::OrderPlaced {
                    price_per_minute,
                    amount,
                    ..
                }) => {
                    let row = self.row("orders", key);
                    if row.is_empty() {
                        row.extend([
                            ("price_fen", Some(price_per_minute)),
                            ("amount_fen", Some(amount)),
                            ("refunded_fen", Some(0)),
                            ("status", Some(0)),
                            ("payment_id", None),
                        ]);
                    }
                }
                Ok(OrderEvent::OrderPaid { payment_id, .. }) => self.update(
                    "orders",
                    key,
                    &[("status", Some(1)), ("payment_id", Some(payment_id))],
                ),
                Ok(OrderEvent::OrderCompleted { .. }) => {
                    self.update("orders", key, &[("status", Some(2))])
                }
                Ok(OrderEvent::OrderCancelled { .. }) => {
                    self.update("orders", key, &[("status", Some(3))])
                }
                Ok(OrderEvent::OrderStatusChangedByAdmin { to, .. }) => {
                    self.update("orders", key, &[("status", Some(to.code().into()))])
                }
                Ok(OrderEvent::OrderRefunded { amount, .. }) => {
                    let before = self
                        .rows
                        .get("orders")
                        .and_then(|t| t.get(&key))
                        .and_then(|r| r.get("refunded_fen").copied().flatten())
                        .unwrap_or(0);
                    self.update(
                        "orders",
                        key,
                        &[("status", Some(4)), ("refunded_fen", Some(before + amount))],
                    )
                }
                _ => {}
            },
            "payment" => match crate::runtime::decode::<PaymentEvent>(e) {
                Ok(
                    PaymentEvent::PaymentCreated {
                        order_id, amount, ..
                    }
                    | PaymentEvent::OfflinePaymentRecorded {
                        order_id, amount, ..
                    },
                ) => self.new_payment(key, order_id, amount),
                Ok(PaymentEvent::RechargePaymentCreated { amount, .. }) => {
                    self.new_payment(key, 0, amount)
                }
                Ok(
                    PaymentEvent::PaymentCaptured { .. } | PaymentEvent::RechargeCaptured { .. },
                ) => self.update("payments", key, &[("status", Some(1))]),
                Ok(PaymentEvent::PaymentRefunded { amount, .. }) => {
                    let refunded = self.payments.get(&id).map_or(amount, |p| p.refunded);
                    self.update(
                        "payments",
                        key,
                        &[("status", Some(3)), ("refunded_fen", Some(refunded))],
                    )
                }
                Err(_) => {}
            },
            "session" => match crate::runtime::decode::<SessionEvent>(e) {
                Ok(SessionEvent::SessionStarted {
                    price_per_minute,
                    prepaid_minutes,
                    ..
                }) => {
                    let row = self.row("chat_sessions", key);
                    if row.is_empty() {
                        row.extend([
                            ("price_fen", Some(price_per_minute)),
                            ("prepaid_minutes", Some(prepaid_minutes)),
                            ("total_amount_fen", Some(0)),
                            ("status", Some(1)),
                        ]);
                    }
                }
                Ok(SessionEvent::SessionEnded { .. }) => {
                    self.update("chat_sessions", key, &[("status", Some(2))])
                }
                Ok(SessionEvent::SessionBilled {
                    user_id,
                    counselor_id,
                    billed_minutes,
                    price_per_minute,
                    amount,
                    platform_fee,
                    counselor_fee,
                    refund,
                    ..
                }) => {
                    self.update("chat_sessions", key, &[("total_amount_fen", Some(amount))]);
                    let row = self.row("chat_billings", format!("session_id={id}"));
                    if row.is_empty() {
                        row.extend([
                            ("user_id", Some(user_id)),
                            ("counselor_id", Some(counselor_id)),
                            ("billed_minutes", Some(billed_minutes)),
                            ("price_fen", Some(price_per_minute)),
                            ("total_amount_fen", Some(amount)),
                            ("platform_fee_fen", Some(platform_fee)),
                            ("counselor_fee_fen", Some(counselor_fee)),
                            ("refund_fen", Some(refund)),
                        ]);
                    }
                }
                Err(_) => {}
            },
            "wallet" => {
                if let Ok(WalletEvent::WalletCredited {
                    user_id, amount, ..
                }) = crate::runtime::decode::<WalletEvent>(e)
                {
                    // The balance after this credit, as this fold counts it (not the event's
                    // own `balance_after`).
                    let balance = self.wallet.get(&user_id).copied().unwrap_or(0);
                    let key = format!("stream_seq={},idx={}", e.stream_sequence, e.index);
                    self.row("wallet_transactions", key).extend([
                        ("user_id", Some(user_id)),
                        ("amount_fen", Some(amount)),
                        ("balance_fen", Some(balance)),
                    ]);
                }
            }
            "account" => match crate::runtime::decode::<AccountEvent>(e) {
                Ok(AccountEvent::WithdrawalRequested {
                    counselor_id,
                    withdrawal_id,
                    amount,
                    ..
                }) => {
                    let row = self.row("withdrawals", format!("id={withdrawal_id}"));
                    if row.is_empty() {
                        row.extend([
                            ("counselor_id", Some(counselor_id)),
                            ("amount_fen", Some(amount)),
                            ("status", Some(0)),
                        ]);
                    }
                }
                Ok(AccountEvent::WithdrawalApproved { withdrawal_id, .. }) => self.update(
                    "withdrawals",
                    format!("id={withdrawal_id}"),
                    &[("status", Some(1))],
                ),
                Ok(AccountEvent::WithdrawalRejected { withdrawal_id, .. }) => self.update(
                    "withdrawals",
                    format!("id={withdrawal_id}"),
                    &[("status", Some(2))],
                ),
                Ok(AccountEvent::WithdrawalTransferred { withdrawal_id, .. }) => self.update(
                    "withdrawals",
                    format!("id={withdrawal_id}"),
                    &[("status", Some(3))],
                ),
                _ => {}
            },
            _ => {}
        }
    }
}

/// Compares every row of `table` in schema `s` with what the log says (`expected`), column by
/// column: a different value names the table, the row and the column; a row the log does not
/// have, or a row missing from the read model, names the table and the row.
pub(super) async fn compare_rows(
    pool: &PgPool,
    s: &str,
    table: &str,
    key_sql: &str,
    columns: &[&str],
    expected: &BTreeMap<String, Row>,
    differences: &mut Vec<String>,
) -> anyhow::Result<()> {
    use sqlx::Row as _;
    let select: Vec<String> = columns.iter().map(|c| format!("{c}::bigint")).collect();
    let rows = sqlx::query(&format!(
        "SELECT {key_sql} AS k, {} FROM {s}.{table}",
        select.join(", ")
    ))
    .fetch_all(pool)
    .await?;
    let show = |v: Option<i64>| v.map_or("NULL".to_string(), |v| v.to_string());
    let mut seen = std::collections::BTreeSet::new();
    for row in rows {
        let key: String = row.try_get(0)?;
        match expected.get(&key) {
            None => differences.push(format!("{table} {key}: in the read model, not in the log")),
            Some(want) => {
                for (i, column) in columns.iter().enumerate() {
                    let got: Option<i64> = row.try_get(i + 1)?;
                    let want = want.get(column).copied().flatten();
                    if got != want {
                        differences.push(format!(
                            "{table} {key} {column}: read model {} ≠ log {}",
                            show(got),
                            show(want)
                        ));
                    }
                }
            }
        }
        seen.insert(key);
    }
    for key in expected.keys() {
        if !seen.contains(key) {
            differences.push(format!("{table} {key}: missing from the read model"));
        }
    }
    Ok(())
}
