//! The books: the state the fold of the log builds, balances by entity and the facts the matches
//! need (payments, sessions, withdrawals), and the accessors the fold and the checks share.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use crate::ledger::{self};

#[derive(Default)]
pub(super) struct PaymentFacts {
    pub(super) order_id: i64,
    pub(super) amount: i64,
    pub(super) captures: Vec<(String, String, i64)>, // (method, provider txn, amount)
    pub(super) refunded: i64,
}

#[derive(Default)]
pub(super) struct SessionFacts {
    pub(super) prepaid_amount: Option<i64>,
    pub(super) ended: bool,
    pub(super) bills: Vec<(i64, i64, i64, i64)>, // (amount, refund, prepaid, counselor_fee)
}

pub(super) struct WithdrawalFacts {
    pub(super) counselor: i64,
    pub(super) amount: i64,
    pub(super) status: &'static str,
    pub(super) requested_at: DateTime<Utc>,
}

/// The fold of the log: balances by entity, and the facts the matches need.
#[derive(Default)]
pub(super) struct Books {
    pub(super) provider: BTreeMap<String, i64>,
    pub(super) prepaid: BTreeMap<i64, i64>,
    pub(super) wallet: BTreeMap<i64, i64>,
    pub(super) recharge: BTreeMap<i64, i64>,
    pub(super) pending: BTreeMap<i64, i64>,
    pub(super) payable: BTreeMap<i64, i64>,
    pub(super) in_transit: BTreeMap<i64, i64>,
    pub(super) income: BTreeMap<i64, i64>,
    pub(super) withdrawn: BTreeMap<i64, i64>,
    pub(super) revenue: i64,
    pub(super) payouts: i64,
    pub(super) payments: HashMap<i64, PaymentFacts>,
    pub(super) orders_paid: HashMap<i64, Vec<(i64, i64)>>, // order → (payment, amount)
    pub(super) orders_amount: HashMap<i64, i64>,
    pub(super) sessions: HashMap<i64, SessionFacts>,
    pub(super) refunds: HashMap<i64, Vec<i64>>,
    pub(super) earnings: HashMap<i64, Vec<i64>>,
    pub(super) withdrawals: BTreeMap<i64, WithdrawalFacts>,
    /// The last stream sequence of each (aggregate type, event type).
    pub(super) last_seq_by_event: HashMap<(String, String), u64>,
    pub(super) broken: Vec<String>,
    /// What every money-bearing column of the read models must hold, by the log: table →
    /// row key (`id=5`, `stream_seq=9,idx=0`) → column → value (`None` = NULL).
    pub(super) rows: BTreeMap<&'static str, BTreeMap<String, Row>>,
}

/// A read-model row's money-bearing columns and their values by the log.
pub(super) type Row = BTreeMap<&'static str, Option<i64>>;

pub(super) fn add(map: &mut BTreeMap<i64, i64>, k: i64, v: i64) {
    *map.entry(k).or_default() += v;
}

impl Books {
    pub(super) fn row(&mut self, table: &'static str, key: String) -> &mut Row {
        self.rows.entry(table).or_default().entry(key).or_default()
    }

    /// Sets columns of an existing row (a row the log never created stays absent, as the read
    /// model's guarded updates leave it).
    pub(super) fn update(
        &mut self,
        table: &'static str,
        key: String,
        values: &[(&'static str, Option<i64>)],
    ) {
        if let Some(row) = self.rows.get_mut(table).and_then(|t| t.get_mut(&key)) {
            for (column, value) in values {
                row.insert(column, *value);
            }
        }
    }

    pub(super) fn new_payment(&mut self, key: String, order_id: i64, amount: i64) {
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
    pub(super) fn balances(&self) -> BTreeMap<String, i64> {
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
}
