//! Finance reconciliation: folds the raw `EVENTS` log **on its own** (no read model, and not the
//! ledger's posting code) into balances and matches, then compares them with the ledger and the
//! money read models of a schema (`public`, or an audit schema).
//!
//! Checks:
//! - the ledger matches the fold to the fen, account by account (from `ledger_postings` up to
//!   the period's end, and, for a whole-log run, the `ledger_balances` table too);
//! - every captured payment is captured once, by a provider transaction used once, and matched by
//!   the order it paid (same amount);
//! - every session is billed at most once, billed amount + refund = prepaid amount, and the
//!   refund and the counselor's earnings are each credited exactly once;
//! - every withdrawal is pending, approved, rejected or transferred, and none is open longer
//!   than `stuck_after`;
//! - the postings sum to zero (in total and per event) and no balance is negative;
//! - `counselor_accounts` and `user_wallets` equal the fold (whole-log runs).
//!
//! Any difference or unmatched item makes the report fail (`mychat finance reconcile` exits 1).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use domain::{AccountEvent, CreditReason, OrderEvent, PaymentEvent, SessionEvent, WalletEvent};
use eventstore::envelope::StoredEvent;
use serde::Serialize;
use sqlx::PgPool;

use crate::ledger::{self, normal_balance};
use crate::rebuild::{sequence_at, AuditPoint};
use crate::runtime::{checkpoint_in, schema_ident, spawn_reader, table_exists, LIVE_SCHEMA};

/// What to reconcile.
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// The schema whose ledger and read models are checked (`public` or `audit_…`).
    pub schema: String,
    /// The period's start (exclusive; default: the beginning of the log).
    pub from: Option<AuditPoint>,
    /// The period's end (inclusive; default: the head, or an audit schema's moment).
    pub to: Option<AuditPoint>,
    /// A withdrawal open (pending or approved) longer than this is stuck.
    pub stuck_after: Duration,
    /// How long to wait for the projections to catch up with the period's end.
    pub wait: Duration,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        Self {
            schema: LIVE_SCHEMA.into(),
            from: None,
            to: None,
            stuck_after: Duration::from_secs(72 * 3600),
            wait: Duration::from_secs(10),
        }
    }
}

/// The reconciliation report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub schema: String,
    /// Stream sequences: the period is (`from_sequence`, `to_sequence`].
    pub from_sequence: u64,
    pub to_sequence: u64,
    pub from_time: Option<DateTime<Utc>>,
    pub to_time: Option<DateTime<Utc>>,
    pub events_folded: u64,
    /// Balances on each account's normal side, in fen, at the period's start and end (fold).
    pub opening: BTreeMap<String, i64>,
    pub closing: BTreeMap<String, i64>,
    /// Totals by category within the period, in fen.
    pub totals: BTreeMap<String, i64>,
    /// Matched items by kind (payments, sessions, withdrawals).
    pub matched: BTreeMap<String, u64>,
    /// Items without their counterpart.
    pub unmatched: Vec<String>,
    /// Differences between the fold and the ledger / read models, and broken rules.
    pub differences: Vec<String>,
    /// Checks that could not run (e.g. a table missing from an audit schema).
    pub notes: Vec<String>,
}

impl Report {
    /// No difference and nothing unmatched.
    pub fn ok(&self) -> bool {
        self.differences.is_empty() && self.unmatched.is_empty()
    }
}

#[derive(Default)]
struct PaymentFacts {
    order_id: i64,
    amount: i64,
    captures: Vec<(String, String, i64)>, // (method, provider txn, amount)
    refunded: i64,
}

#[derive(Default)]
struct SessionFacts {
    prepaid_amount: Option<i64>,
    ended: bool,
    bills: Vec<(i64, i64, i64, i64)>, // (amount, refund, prepaid, counselor_fee)
}

struct WithdrawalFacts {
    counselor: i64,
    amount: i64,
    status: &'static str,
    requested_at: DateTime<Utc>,
}

/// The fold of the log: balances by entity, and the facts the matches need.
#[derive(Default)]
struct Books {
    provider: BTreeMap<String, i64>,
    prepaid: BTreeMap<i64, i64>,
    wallet: BTreeMap<i64, i64>,
    recharge: BTreeMap<i64, i64>,
    pending: BTreeMap<i64, i64>,
    payable: BTreeMap<i64, i64>,
    in_transit: BTreeMap<i64, i64>,
    income: BTreeMap<i64, i64>,
    withdrawn: BTreeMap<i64, i64>,
    revenue: i64,
    payouts: i64,
    payments: HashMap<i64, PaymentFacts>,
    orders_paid: HashMap<i64, Vec<(i64, i64)>>, // order → (payment, amount)
    orders_amount: HashMap<i64, i64>,
    sessions: HashMap<i64, SessionFacts>,
    refunds: HashMap<i64, Vec<i64>>,
    earnings: HashMap<i64, Vec<i64>>,
    withdrawals: BTreeMap<i64, WithdrawalFacts>,
    /// The last stream sequence of each (aggregate type, event type).
    last_seq_by_event: HashMap<(String, String), u64>,
    broken: Vec<String>,
    /// What every money-bearing column of the read models must hold, by the log: table →
    /// row key (`id=5`, `stream_seq=9,idx=0`) → column → value (`None` = NULL).
    rows: BTreeMap<&'static str, BTreeMap<String, Row>>,
}

/// A read-model row's money-bearing columns and their values by the log.
type Row = BTreeMap<&'static str, Option<i64>>;

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
fn projection_of(table: &str) -> &'static str {
    match table {
        "wallet_transactions" => "user_wallets",
        "orders" => "orders",
        "payments" => "payments",
        "chat_sessions" => "chat_sessions",
        "chat_billings" => "chat_billings",
        _ => "withdrawals",
    }
}

fn add(map: &mut BTreeMap<i64, i64>, k: i64, v: i64) {
    *map.entry(k).or_default() += v;
}

impl Books {
    fn row(&mut self, table: &'static str, key: String) -> &mut Row {
        self.rows.entry(table).or_default().entry(key).or_default()
    }

    /// Sets columns of an existing row (a row the log never created stays absent, as the read
    /// model's guarded updates leave it).
    fn update(&mut self, table: &'static str, key: String, values: &[(&'static str, Option<i64>)]) {
        if let Some(row) = self.rows.get_mut(table).and_then(|t| t.get_mut(&key)) {
            for (column, value) in values {
                row.insert(column, *value);
            }
        }
    }

    /// The read-model rows `e` creates or changes, by the log's own arithmetic.
    fn expect_rows(&mut self, e: &StoredEvent, id: i64) {
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

    fn new_payment(&mut self, key: String, order_id: i64, amount: i64) {
        let row = self.row("payments", key);
        if row.is_empty() {
            row.extend([
                ("order_id", Some(order_id)),
                ("amount_fen", Some(amount)),
                ("refunded_fen", Some(0)),
                ("status", Some(0)),
            ]);
        }
    }

    /// Balances on each account's normal side, named as in the ledger's chart of accounts.
    fn balances(&self) -> BTreeMap<String, i64> {
        let mut b = BTreeMap::new();
        for (m, v) in &self.provider {
            b.insert(ledger::provider_clearing(m), *v);
        }
        for (u, v) in &self.prepaid {
            b.insert(ledger::user_prepaid(*u), *v);
        }
        for (u, v) in &self.wallet {
            b.insert(ledger::user_balance(*u), *v);
        }
        for (u, v) in &self.recharge {
            b.insert(ledger::user_recharge(*u), *v);
        }
        for (c, v) in &self.pending {
            b.insert(ledger::counselor_pending(*c), *v);
        }
        for (c, v) in &self.payable {
            b.insert(ledger::counselor_payable(*c), *v);
        }
        for (c, v) in &self.in_transit {
            b.insert(ledger::counselor_in_transit(*c), *v);
        }
        if self.revenue != 0 || !self.sessions.is_empty() {
            b.insert(ledger::PLATFORM_REVENUE.into(), self.revenue);
        }
        if self.payouts != 0 {
            b.insert(ledger::PLATFORM_PAYOUTS.into(), self.payouts);
        }
        b
    }

    fn fold(&mut self, e: &StoredEvent, totals: &mut BTreeMap<String, i64>, in_period: bool) {
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
            other => self.broken.push(format!(
                "{where_}: unknown aggregate type {other:?}: reconciliation has no rule for it"
            )),
        }
        self.expect_rows(e, id);
    }
}

async fn resolve(js: &jetstream::Context, point: AuditPoint) -> anyhow::Result<u64> {
    Ok(match point {
        AuditPoint::Sequence(s) => s,
        AuditPoint::Time(t) => sequence_at(js, eventstore::EVENTS_STREAM, t).await?,
    })
}

/// Runs the reconciliation (module docs).
///
/// # Errors
/// Infrastructure failures only; findings are in the [`Report`].
pub async fn reconcile(
    pool: &PgPool,
    nats: &async_nats::Client,
    options: &ReconcileOptions,
) -> anyhow::Result<Report> {
    let js = jetstream::new(nats.clone());
    let s = schema_ident(&options.schema)?;
    let mut events_stream = js.get_stream(eventstore::EVENTS_STREAM).await?;
    let head = events_stream.info().await?.state.last_sequence;
    let audit_upto: Option<u64> = if options.schema != LIVE_SCHEMA {
        crate::rebuild::audit_upto(pool, &options.schema).await?
    } else {
        None
    };
    let coverage = audit_upto.unwrap_or(head);
    let to = match options.to {
        Some(p) => resolve(&js, p).await?.min(coverage),
        None => coverage,
    };
    let from = match options.from {
        Some(p) => resolve(&js, p).await?.min(to),
        None => 0,
    };
    let whole = to == coverage;
    let mut report = Report {
        schema: options.schema.clone(),
        from_sequence: from,
        to_sequence: to,
        ..Default::default()
    };

    // The fold.
    let mut books = Books::default();
    let mut reader = spawn_reader(
        js.clone(),
        eventstore::EVENTS_STREAM,
        vec!["ev.>".into()],
        0,
        Some(to),
        1000,
    );
    let mut last_time = None;
    while let Some(batch) = reader.recv().await {
        for message in batch? {
            if message.stream_sequence == from + 1 || (from == 0 && report.from_time.is_none()) {
                report.opening = books.balances();
                report.from_time = Some(message.time);
            }
            last_time = Some(message.time);
            match message.events() {
                Ok(events) => {
                    for e in events.iter() {
                        books.fold(e, &mut report.totals, message.stream_sequence > from);
                        report.events_folded += 1;
                    }
                }
                Err(err) => books.broken.push(format!("{err:#}")),
            }
        }
    }
    if report.from_time.is_none() {
        report.opening = books.balances();
    }
    report.to_time = last_time;
    report.closing = books.balances();
    report.differences.append(&mut books.broken);

    // Rules on the fold.
    for (account, balance) in &report.closing {
        if *balance < 0 {
            report.differences.push(format!(
                "log: account {account} is negative ({balance} fen)"
            ));
        }
    }
    let mut txns: HashMap<(String, String), Vec<i64>> = HashMap::new();
    for (payment, p) in &books.payments {
        for (method, txn, _) in &p.captures {
            txns.entry((method.clone(), txn.clone()))
                .or_default()
                .push(*payment);
        }
        match p.captures.len() {
            0 => continue,
            1 => {}
            n => report
                .differences
                .push(format!("payment {payment}: captured {n} times")),
        }
        let captured = p.captures[0].2;
        let paid = books.orders_paid.get(&p.order_id);
        match paid.map(|v| v.as_slice()) {
            Some([(by, amount)]) if *by == *payment && *amount == captured => {
                *report.matched.entry("payments".into()).or_default() += 1;
            }
            // Captured money the order did not take (paid by another payment, closed
            // meanwhile) that went back whole.
            _ if p.refunded == captured => {
                *report.matched.entry("payments_returned".into()).or_default() += 1;
            }
            Some([(by, amount)]) => report.differences.push(format!(
                "payment {payment} ({captured} fen) captured, but order {} was paid by payment {by} ({amount} fen)",
                p.order_id
            )),
            Some(many) if many.len() > 1 => report.differences.push(format!(
                "order {}: marked paid {} times",
                p.order_id,
                many.len()
            )),
            _ => report.unmatched.push(format!(
                "payment {payment} captured ({captured} fen) but order {} is not marked paid",
                p.order_id
            )),
        }
        if let Some(amount) = books.orders_amount.get(&p.order_id) {
            if *amount != captured {
                report.differences.push(format!(
                    "payment {payment}: captured {captured} fen for order {} of {amount} fen",
                    p.order_id
                ));
            }
        }
    }
    for ((method, txn), payments) in &txns {
        if payments.len() > 1 {
            report.differences.push(format!(
                "provider {method} transaction {txn} confirms {} payments {payments:?}",
                payments.len()
            ));
        }
    }
    for (order, paid) in &books.orders_paid {
        for (payment, _) in paid {
            if books
                .payments
                .get(payment)
                .is_none_or(|p| p.captures.is_empty())
            {
                report.differences.push(format!(
                    "order {order} marked paid by payment {payment}, which was never captured"
                ));
            }
        }
    }
    let mut sessions: Vec<_> = books.sessions.iter().collect();
    sessions.sort_by_key(|(id, _)| **id);
    for (session, f) in sessions {
        match f.bills.as_slice() {
            [] if f.ended => report
                .differences
                .push(format!("session {session}: ended but never billed")),
            [] => {}
            [(amount, refund, prepaid, counselor_fee)] => {
                let mut ok = true;
                if amount + refund != *prepaid || f.prepaid_amount.is_some_and(|p| p != *prepaid) {
                    ok = false;
                    report.differences.push(format!(
                        "session {session}: billed {amount} + refund {refund} ≠ prepaid {}",
                        f.prepaid_amount.unwrap_or(*prepaid)
                    ));
                }
                let credited = books.refunds.get(session).cloned().unwrap_or_default();
                if *refund > 0 && credited != vec![*refund] {
                    ok = false;
                    report.unmatched.push(format!(
                        "session {session}: refund {refund} fen credited {credited:?}"
                    ));
                }
                let earned = books.earnings.get(session).cloned().unwrap_or_default();
                if *counselor_fee > 0 && earned != vec![*counselor_fee] {
                    ok = false;
                    report.unmatched.push(format!(
                        "session {session}: counselor fee {counselor_fee} fen credited {earned:?}"
                    ));
                }
                if ok {
                    *report.matched.entry("sessions".into()).or_default() += 1;
                }
            }
            many => report
                .differences
                .push(format!("session {session}: billed {} times", many.len())),
        }
    }
    for session in books.refunds.keys().chain(books.earnings.keys()) {
        if books
            .sessions
            .get(session)
            .is_none_or(|f| f.bills.is_empty())
        {
            report
                .differences
                .push(format!("session {session}: credited but never billed"));
        }
    }
    let now = if whole && audit_upto.is_none() {
        Utc::now()
    } else {
        last_time.unwrap_or_else(Utc::now)
    };
    for (id, w) in &books.withdrawals {
        let open = matches!(w.status, "pending" | "approved");
        let age = now - w.requested_at;
        if open && age.to_std().unwrap_or_default() > options.stuck_after {
            report.differences.push(format!(
                "withdrawal {id} (counselor {}, {} fen) stuck {} for {}s",
                w.counselor,
                w.amount,
                w.status,
                age.num_seconds()
            ));
        } else {
            *report
                .matched
                .entry(format!("withdrawals_{}", w.status))
                .or_default() += 1;
        }
    }

    // Wait for the projections to cover the period, then compare.
    // What each checked projection must have applied: the last event of its aggregate types
    // that it does not ignore (a projection's checkpoint need not move over the event types it
    // ignores).
    let required = |name: &str, types: &[&str]| {
        let ignores = crate::read_model(name).map_or(&[][..], |p| p.ignores());
        books
            .last_seq_by_event
            .iter()
            .filter(|((aggregate, event), _)| {
                types.contains(&aggregate.as_str()) && !ignores.contains(&event.as_str())
            })
            .map(|(_, seq)| *seq)
            .max()
            .unwrap_or(0)
    };
    let checks: [(&str, u64); 8] = [
        (
            "ledger",
            required(
                "ledger",
                &["order", "payment", "session", "wallet", "account"],
            ),
        ),
        (
            "counselor_accounts",
            required("counselor_accounts", &["account"]),
        ),
        ("user_wallets", required("user_wallets", &["wallet"])),
        ("orders", required("orders", &["order"])),
        ("payments", required("payments", &["payment"])),
        ("chat_sessions", required("chat_sessions", &["session"])),
        ("chat_billings", required("chat_billings", &["session"])),
        ("withdrawals", required("withdrawals", &["account"])),
    ];
    let deadline = tokio::time::Instant::now() + options.wait;
    let mut usable = BTreeMap::new();
    for (name, need) in checks {
        let table = match name {
            "ledger" => "ledger_postings",
            other => other,
        };
        if !table_exists(pool, &options.schema, table).await? {
            report.notes.push(format!(
                "{}.{table} does not exist: not compared",
                options.schema
            ));
            continue;
        }
        loop {
            let at = checkpoint_in(pool, &options.schema, name).await?;
            if at >= need {
                usable.insert(name, true);
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                report.differences.push(format!(
                    "projection {name} in {} is behind the log: checkpoint {at} < {need}",
                    options.schema
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    if usable.contains_key("ledger") {
        let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT account, sum(amount_fen)::bigint FROM {s}.ledger_postings WHERE stream_seq <= $1 GROUP BY account"
        ))
        .bind(to as i64)
        .fetch_all(pool)
        .await?;
        let ledger: BTreeMap<String, i64> = rows
            .into_iter()
            .map(|(a, v)| {
                let b = normal_balance(&a, v);
                (a, b)
            })
            .collect();
        compare(
            &mut report.differences,
            "ledger_postings",
            &report.closing,
            &ledger,
        );
        let total: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT sum(amount_fen)::bigint FROM {s}.ledger_postings WHERE stream_seq <= $1"
        ))
        .bind(to as i64)
        .fetch_one(pool)
        .await?;
        if total.unwrap_or(0) != 0 {
            report.differences.push(format!(
                "ledger_postings: the postings sum to {} fen, not 0",
                total.unwrap_or(0)
            ));
        }
        let unbalanced: Vec<(i64, i32, i64)> = sqlx::query_as(&format!(
            "SELECT stream_seq, idx, sum(amount_fen)::bigint FROM {s}.ledger_postings WHERE stream_seq <= $1 \
             GROUP BY stream_seq, idx HAVING sum(amount_fen) <> 0 LIMIT 20"
        ))
        .bind(to as i64)
        .fetch_all(pool)
        .await?;
        for (seq, idx, sum) in unbalanced {
            report.differences.push(format!(
                "ledger_postings: the postings of the event at stream sequence {seq} index {idx} sum to {sum} fen"
            ));
        }
        if whole {
            let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
                "SELECT account, balance_fen FROM {s}.ledger_balances"
            ))
            .fetch_all(pool)
            .await?;
            let balances: BTreeMap<String, i64> = rows
                .into_iter()
                .map(|(a, v)| {
                    let b = normal_balance(&a, v);
                    (a, b)
                })
                .collect();
            compare(
                &mut report.differences,
                "ledger_balances",
                &report.closing,
                &balances,
            );
        }
    }
    if whole && usable.contains_key("counselor_accounts") {
        let rows: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(&format!(
            "SELECT counselor_id, total_income_fen, balance_fen, frozen_fen, withdrawn_fen FROM {s}.counselor_accounts"
        ))
        .fetch_all(pool)
        .await?;
        let mut seen = std::collections::BTreeSet::new();
        for (c, income, balance, frozen, withdrawn) in rows {
            seen.insert(c);
            let get = |m: &BTreeMap<i64, i64>| m.get(&c).copied().unwrap_or(0);
            for (column, read, log) in [
                ("total_income_fen", income, get(&books.income)),
                ("balance_fen", balance, get(&books.payable)),
                ("frozen_fen", frozen, get(&books.in_transit)),
                ("withdrawn_fen", withdrawn, get(&books.withdrawn)),
            ] {
                if read != log {
                    report.differences.push(format!(
                        "counselor_accounts counselor_id={c} {column}: read model {read} ≠ log {log}"
                    ));
                }
            }
        }
        for c in books.payable.keys().chain(books.income.keys()) {
            if !seen.contains(c) {
                report
                    .differences
                    .push(format!("counselor_accounts counselor_id={c}: missing"));
            }
        }
    }
    if whole && usable.contains_key("user_wallets") {
        let rows: Vec<(i64, i64)> = sqlx::query_as(&format!(
            "SELECT user_id, balance_fen FROM {s}.user_wallets"
        ))
        .fetch_all(pool)
        .await?;
        let mut seen = std::collections::BTreeSet::new();
        for (u, balance) in rows {
            seen.insert(u);
            let log = books.wallet.get(&u).copied().unwrap_or(0);
            if balance != log {
                report.differences.push(format!(
                    "user_wallets user_id={u} balance_fen: read model {balance} ≠ log {log}"
                ));
            }
        }
        for u in books.wallet.keys() {
            if !seen.contains(u) {
                report
                    .differences
                    .push(format!("user_wallets user_id={u}: missing"));
            }
        }
    }
    if whole {
        for (table, key_sql, columns) in CHECKED_COLUMNS {
            if !usable.contains_key(projection_of(table)) {
                continue;
            }
            if !table_exists(pool, &options.schema, table).await? {
                report.notes.push(format!(
                    "{}.{table} does not exist: not compared",
                    options.schema
                ));
                continue;
            }
            let empty = BTreeMap::new();
            let expected = books.rows.get(table).unwrap_or(&empty);
            compare_rows(
                pool,
                &s,
                table,
                key_sql,
                columns,
                expected,
                &mut report.differences,
            )
            .await?;
            *report.matched.entry(format!("rows_{table}")).or_default() += expected.len() as u64;
        }
    }
    if !whole {
        report.notes.push(format!(
            "the period ends at {to} before {coverage}: ledger_balances and the read models were not compared"
        ));
    }
    Ok(report)
}

/// Compares every row of `table` in schema `s` with what the log says (`expected`), column by
/// column: a different value names the table, the row and the column; a row the log does not
/// have, or a row missing from the read model, names the table and the row.
async fn compare_rows(
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

fn compare(
    differences: &mut Vec<String>,
    table: &str,
    log: &BTreeMap<String, i64>,
    model: &BTreeMap<String, i64>,
) {
    for (account, want) in log {
        let got = model.get(account).copied().unwrap_or(0);
        if got != *want {
            differences.push(format!(
                "{table} account={account}: ledger {got} ≠ log {want} (normal-side fen)"
            ));
        }
    }
    for (account, got) in model {
        if !log.contains_key(account) && *got != 0 {
            differences.push(format!(
                "{table} account={account}: ledger {got} but the log has no such account"
            ));
        }
    }
    for (account, got) in model {
        if *got < 0 {
            differences.push(format!("{table} account={account} is negative ({got} fen)"));
        }
    }
}

/// The report as a plain-text table.
pub fn render(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "finance reconcile — schema {}, stream sequences ({}, {}], {} … {}, {} events folded",
        report.schema,
        report.from_sequence,
        report.to_sequence,
        report.from_time.map_or("-".to_string(), |t| t.to_rfc3339()),
        report.to_time.map_or("-".to_string(), |t| t.to_rfc3339()),
        report.events_folded
    );
    let _ = writeln!(
        out,
        "\n{:<40} {:>14} {:>14}",
        "account", "opening", "closing"
    );
    let accounts: std::collections::BTreeSet<&String> =
        report.opening.keys().chain(report.closing.keys()).collect();
    for a in accounts {
        let _ = writeln!(
            out,
            "{:<40} {:>14} {:>14}",
            a,
            crate::reconcile::yuan(report.opening.get(a).copied().unwrap_or(0)),
            crate::reconcile::yuan(report.closing.get(a).copied().unwrap_or(0))
        );
    }
    let _ = writeln!(out, "\n{:<40} {:>14}", "category (period)", "total");
    for (k, v) in &report.totals {
        let _ = writeln!(out, "{:<40} {:>14}", k, yuan(*v));
    }
    let _ = writeln!(out, "\nmatched:");
    for (k, v) in &report.matched {
        let _ = writeln!(out, "  {k}: {v}");
    }
    let _ = writeln!(out, "unmatched: {}", report.unmatched.len());
    for u in &report.unmatched {
        let _ = writeln!(out, "  {u}");
    }
    let _ = writeln!(out, "differences: {}", report.differences.len());
    for d in &report.differences {
        let _ = writeln!(out, "  {d}");
    }
    for n in &report.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let _ = writeln!(
        out,
        "\n{}",
        if report.ok() {
            "RECONCILED"
        } else {
            "DIFFERENCES FOUND"
        }
    );
    out
}

/// Fen as yuan text (`12345` → `123.45`).
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", fen.abs() / 100, fen.abs() % 100)
}
