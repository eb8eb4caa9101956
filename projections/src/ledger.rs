//! The double-entry ledger: every money event becomes postings that sum to zero.
//!
//! # Chart of accounts
//!
//! | account | normal side | what it holds |
//! |---|---|---|
//! | `provider:<method>:clearing` | debit (asset) | money captured through a payment provider (`sandbox`, `wechat`, `alipay`, …), or recorded by an administrator as paid offline (`offline`), and not yet paid out |
//! | `user:<id>:prepaid` | credit (liability) | a user's paid orders held in escrow until the session is billed and the unused part refunded |
//! | `user:<id>:balance` | credit (liability) | a user's wallet balance (refunds of unused prepaid minutes, recharges) |
//! | `user:<id>:recharge` | credit (liability) | a captured recharge not yet credited to the user's `UserWallet` |
//! | `counselor:<id>:pending` | credit (liability) | a counselor's share of billed sessions not yet credited to the `CounselorAccount` |
//! | `counselor:<id>:payable` | credit (liability) | the counselor's withdrawable balance (`CounselorAccount` balance) |
//! | `counselor:<id>:in_transit` | credit (liability) | withdrawals requested (and approved) but not transferred |
//! | `platform:revenue` | credit (revenue) | the platform's 30 % of billed sessions |
//! | `platform:payouts` | credit (contra-asset) | money transferred out to counselors' banks |
//!
//! A posting's `amount` is signed: positive = debit, negative = credit. The balance of an
//! account on its normal side ([`normal_balance`]) is never negative.
//!
//! # Posting rules (one function per money event)
//!
//! | event | postings |
//! |---|---|
//! | `PaymentCaptured` | Dr `provider:<method>:clearing`, Cr `user:<u>:prepaid` (amount) — [`payment_captured`] |
//! | `SessionBilled` | Dr `user:<u>:prepaid` (billed amount), Cr `platform:revenue` (platform fee), Cr `counselor:<c>:pending` (counselor fee) — [`session_billed`]; the refund stays in prepaid until the wallet credit |
//! | `WalletCredited` (`SessionRefund`) | Dr `user:<u>:prepaid`, Cr `user:<u>:balance` (refund) — [`wallet_credited`] |
//! | `RechargeCaptured` | Dr `provider:<method>:clearing`, Cr `user:<u>:recharge` (amount) — [`recharge_captured`] |
//! | `WalletCredited` (`Recharge`) | Dr `user:<u>:recharge`, Cr `user:<u>:balance` — [`wallet_credited`] |
//! | `PaymentRefunded` | Dr `user:<u>:prepaid`, Cr `provider:<method>:clearing` (the money goes back through the provider) — [`payment_refunded`] |
//! | `EarningsCredited` | Dr `counselor:<c>:pending`, Cr `counselor:<c>:payable` — [`earnings_credited`] |
//! | `WithdrawalRequested` | Dr `counselor:<c>:payable`, Cr `counselor:<c>:in_transit` — [`withdrawal_requested`] |
//! | `WithdrawalRejected` | Dr `counselor:<c>:in_transit`, Cr `counselor:<c>:payable` — [`withdrawal_rejected`] |
//! | `WithdrawalTransferred` | Dr `counselor:<c>:in_transit`, Cr `platform:payouts` — [`withdrawal_transferred`] |
//! | `OrderPlaced`, `OrderPaid`, `OrderServiceStarted`, `OrderCompleted`, `OrderCancelled` and `OrderRefundRequested` (their refunds move with `PaymentRefunded`), `OrderRefunded`, `OrderReviewed`, `OrderStatusChangedByAdmin` (an override of earlier versions that moves no money), `PaymentCreated`, `OfflinePaymentRecorded` (its `PaymentCaptured` follows in the same commit), `RechargePaymentCreated`, `SessionStarted`, `SessionEnded`, `WithdrawalApproved` | none: no money moves |
//!
//! The dispatch ([`postings`]) matches every domain event **exhaustively** (no wildcard): a new
//! event variant does not compile until it has a rule here, and an event type or version the
//! domain cannot decode is refused with an error (the ledger projection stops on it as a poison
//! event) instead of being posted wrong or skipped.

use anyhow::Context as _;
use async_trait::async_trait;
use domain::{AccountEvent, CreditReason, OrderEvent, PaymentEvent, SessionEvent, WalletEvent};
use eventstore::envelope::StoredEvent;
use sqlx::PgConnection;

use crate::runtime::{LogMessage, Projection};

/// One posting line: `amount` fen on `account`, positive = debit, negative = credit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub account: String,
    pub amount: i64,
}

/// Which side of an account its balance normally sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormalSide {
    /// Assets: balance = debits − credits.
    Debit,
    /// Liabilities, revenue, contra-assets: balance = credits − debits.
    Credit,
}

/// The normal side of an account, from its name (chart of accounts above).
pub fn normal_side(account: &str) -> NormalSide {
    if account.starts_with("provider:") {
        NormalSide::Debit
    } else {
        NormalSide::Credit
    }
}

/// An account's balance on its normal side, from its signed (debit-positive) sum, in fen.
pub fn normal_balance(account: &str, signed: i64) -> i64 {
    match normal_side(account) {
        NormalSide::Debit => signed,
        NormalSide::Credit => -signed,
    }
}

/// `provider:<method>:clearing`.
pub fn provider_clearing(method: &str) -> String {
    format!("provider:{method}:clearing")
}
/// `user:<id>:prepaid`.
pub fn user_prepaid(user: i64) -> String {
    format!("user:{user}:prepaid")
}
/// `user:<id>:balance`.
pub fn user_balance(user: i64) -> String {
    format!("user:{user}:balance")
}
/// `user:<id>:recharge`.
pub fn user_recharge(user: i64) -> String {
    format!("user:{user}:recharge")
}
/// `counselor:<id>:pending`.
pub fn counselor_pending(counselor: i64) -> String {
    format!("counselor:{counselor}:pending")
}
/// `counselor:<id>:payable`.
pub fn counselor_payable(counselor: i64) -> String {
    format!("counselor:{counselor}:payable")
}
/// `counselor:<id>:in_transit`.
pub fn counselor_in_transit(counselor: i64) -> String {
    format!("counselor:{counselor}:in_transit")
}
/// `platform:revenue`.
pub const PLATFORM_REVENUE: &str = "platform:revenue";
/// `platform:payouts`.
pub const PLATFORM_PAYOUTS: &str = "platform:payouts";

fn transfer(debit: String, credit: String, amount: i64) -> Vec<Posting> {
    vec![
        Posting {
            account: debit,
            amount,
        },
        Posting {
            account: credit,
            amount: -amount,
        },
    ]
}

/// `PaymentCaptured`: the provider holds the money; the user's order is prepaid.
pub fn payment_captured(method: &str, user_id: i64, amount: i64) -> Vec<Posting> {
    transfer(provider_clearing(method), user_prepaid(user_id), amount)
}

/// `SessionBilled`: the billed amount leaves escrow, split into the platform fee and the
/// counselor's fee (pending until the counselor's account is credited). The refund
/// (`prepaid − amount`) stays in escrow until [`wallet_credited`].
pub fn session_billed(
    user_id: i64,
    counselor_id: i64,
    amount: i64,
    platform_fee: i64,
    counselor_fee: i64,
) -> Vec<Posting> {
    vec![
        Posting {
            account: user_prepaid(user_id),
            amount,
        },
        Posting {
            account: PLATFORM_REVENUE.into(),
            amount: -platform_fee,
        },
        Posting {
            account: counselor_pending(counselor_id),
            amount: -counselor_fee,
        },
    ]
}

/// `WalletCredited`: money enters the user's wallet from its source.
pub fn wallet_credited(user_id: i64, amount: i64, reason: &CreditReason) -> Vec<Posting> {
    match reason {
        CreditReason::SessionRefund { .. } => {
            transfer(user_prepaid(user_id), user_balance(user_id), amount)
        }
        CreditReason::Recharge { .. } => {
            transfer(user_recharge(user_id), user_balance(user_id), amount)
        }
    }
}

/// `RechargeCaptured`: the provider holds the money until the wallet is credited.
pub fn recharge_captured(method: &str, user_id: i64, amount: i64) -> Vec<Posting> {
    transfer(provider_clearing(method), user_recharge(user_id), amount)
}

/// `PaymentRefunded`: the refunded part of an order's prepaid amount goes back through the
/// provider.
pub fn payment_refunded(method: &str, user_id: i64, amount: i64) -> Vec<Posting> {
    transfer(user_prepaid(user_id), provider_clearing(method), amount)
}

/// `EarningsCredited`: the counselor's pending share becomes withdrawable.
pub fn earnings_credited(counselor_id: i64, amount: i64) -> Vec<Posting> {
    transfer(
        counselor_pending(counselor_id),
        counselor_payable(counselor_id),
        amount,
    )
}

/// `WithdrawalRequested`: reserved from the payable balance.
pub fn withdrawal_requested(counselor_id: i64, amount: i64) -> Vec<Posting> {
    transfer(
        counselor_payable(counselor_id),
        counselor_in_transit(counselor_id),
        amount,
    )
}

/// `WithdrawalRejected`: the reservation returns to the payable balance.
pub fn withdrawal_rejected(counselor_id: i64, amount: i64) -> Vec<Posting> {
    transfer(
        counselor_in_transit(counselor_id),
        counselor_payable(counselor_id),
        amount,
    )
}

/// `WithdrawalTransferred`: the money leaves the platform.
pub fn withdrawal_transferred(counselor_id: i64, amount: i64) -> Vec<Posting> {
    transfer(
        counselor_in_transit(counselor_id),
        PLATFORM_PAYOUTS.into(),
        amount,
    )
}

/// The postings of one stored event (empty when no money moves).
///
/// # Errors
/// An aggregate type the ledger does not know, or an event type / version that does not decode
/// as that aggregate's event: refused loudly, never posted wrong.
pub fn postings(stored: &StoredEvent) -> anyhow::Result<Vec<Posting>> {
    let refuse = || {
        format!(
            "the ledger has no posting rule for {} {} v{} ({}:{})",
            stored.aggregate_type,
            stored.event_type,
            stored.event_version,
            stored.aggregate_type,
            stored.aggregate_id
        )
    };
    let aggregate_id = || {
        stored
            .aggregate_id_i64()
            .with_context(|| format!("aggregate id {} is not a number", stored.aggregate_id))
    };
    Ok(match stored.aggregate_type.as_str() {
        "order" => match crate::runtime::decode::<OrderEvent>(stored).with_context(refuse)? {
            OrderEvent::OrderPlaced { .. }
            | OrderEvent::OrderPaid { .. }
            | OrderEvent::OrderServiceStarted { .. }
            | OrderEvent::OrderCompleted { .. }
            | OrderEvent::OrderCancelled { .. }
            | OrderEvent::OrderRefundRequested { .. }
            | OrderEvent::OrderRefunded { .. }
            | OrderEvent::OrderReviewed { .. }
            | OrderEvent::OrderStatusChangedByAdmin { .. } => vec![],
        },
        "payment" => match crate::runtime::decode::<PaymentEvent>(stored).with_context(refuse)? {
            PaymentEvent::PaymentCreated { .. }
            | PaymentEvent::OfflinePaymentRecorded { .. }
            | PaymentEvent::RechargePaymentCreated { .. } => vec![],
            PaymentEvent::RechargeCaptured {
                method,
                user_id,
                amount,
                ..
            } => recharge_captured(&method, user_id, amount),
            PaymentEvent::PaymentRefunded {
                method,
                user_id,
                amount,
                ..
            } => payment_refunded(&method, user_id, amount),
            PaymentEvent::PaymentCaptured {
                method,
                user_id,
                amount,
                ..
            } => payment_captured(&method, user_id, amount),
        },
        "session" => match crate::runtime::decode::<SessionEvent>(stored).with_context(refuse)? {
            SessionEvent::SessionStarted { .. } | SessionEvent::SessionEnded { .. } => vec![],
            SessionEvent::SessionBilled {
                user_id,
                counselor_id,
                amount,
                platform_fee,
                counselor_fee,
                ..
            } => session_billed(user_id, counselor_id, amount, platform_fee, counselor_fee),
        },
        "wallet" => match crate::runtime::decode::<WalletEvent>(stored).with_context(refuse)? {
            WalletEvent::WalletCredited {
                user_id,
                amount,
                reason,
                ..
            } => wallet_credited(user_id, amount, &reason),
        },
        "account" => match crate::runtime::decode::<AccountEvent>(stored).with_context(refuse)? {
            AccountEvent::EarningsCredited {
                counselor_id,
                amount,
                ..
            } => earnings_credited(counselor_id, amount),
            AccountEvent::WithdrawalRequested {
                counselor_id,
                amount,
                ..
            } => withdrawal_requested(counselor_id, amount),
            AccountEvent::WithdrawalApproved { .. } => vec![],
            AccountEvent::WithdrawalRejected { amount, .. } => {
                withdrawal_rejected(aggregate_id()?, amount)
            }
            AccountEvent::WithdrawalTransferred { amount, .. } => {
                withdrawal_transferred(aggregate_id()?, amount)
            }
        },
        _ => anyhow::bail!(refuse()),
    })
}

/// `ledger_postings` and `ledger_balances`: the double-entry ledger.
pub struct Ledger;

/// The aggregate types whose events the ledger reads.
pub const LEDGER_SUBJECTS: [&str; 5] = [
    "ev.order.>",
    "ev.payment.>",
    "ev.session.>",
    "ev.wallet.>",
    "ev.account.>",
];

#[async_trait]
impl Projection for Ledger {
    fn name(&self) -> &'static str {
        "ledger"
    }
    fn version(&self) -> i32 {
        1
    }
    fn tables(&self) -> Vec<&'static str> {
        vec!["ledger_postings", "ledger_balances"]
    }
    fn subjects(&self) -> Vec<String> {
        LEDGER_SUBJECTS.iter().map(|s| s.to_string()).collect()
    }
    /// The events with no posting rule's lines ([`postings`] answers none for them). Every other
    /// type is applied, so an event the ledger does not know still stops it.
    fn ignores(&self) -> &'static [&'static str] {
        &[
            "OrderPlaced",
            "OrderPaid",
            "OrderServiceStarted",
            "OrderCompleted",
            "OrderCancelled",
            "OrderRefunded",
            "OrderReviewed",
            "OrderStatusChangedByAdmin",
            "PaymentCreated",
            "OrderRefundRequested",
            "OfflinePaymentRecorded",
            "RechargePaymentCreated",
            "SessionStarted",
            "SessionEnded",
            "WithdrawalApproved",
        ]
    }
    /// The whole batch in one statement: every posting line of the batch in one `UNNEST`
    /// insert, and the balances of the lines actually inserted (a re-delivered event adds
    /// nothing) summed per account in one upsert; `updated_at` is the time of the account's
    /// last posting in stream order, as [`Projection::apply`] leaves it.
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[LogMessage],
    ) -> anyhow::Result<()> {
        let mut seqs: Vec<i64> = Vec::new();
        let mut idxs: Vec<i32> = Vec::new();
        let mut line_numbers: Vec<i32> = Vec::new();
        let mut accounts: Vec<String> = Vec::new();
        let mut amounts: Vec<i64> = Vec::new();
        let mut types: Vec<String> = Vec::new();
        let mut aggregates: Vec<String> = Vec::new();
        let mut times: Vec<chrono::DateTime<chrono::Utc>> = Vec::new();
        for message in messages {
            for stored in message.events()?.iter() {
                let lines = postings(stored)?;
                let sum: i64 = lines.iter().map(|p| p.amount).sum();
                anyhow::ensure!(
                    sum == 0,
                    "postings of {} at {} do not balance ({sum})",
                    stored.event_type,
                    stored.stream_sequence
                );
                let aggregate = format!("{}:{}", stored.aggregate_type, stored.aggregate_id);
                for (n, p) in lines.into_iter().enumerate() {
                    seqs.push(stored.stream_sequence as i64);
                    idxs.push(stored.index as i32);
                    line_numbers.push(n as i32);
                    accounts.push(p.account);
                    amounts.push(p.amount);
                    types.push(stored.event_type.clone());
                    aggregates.push(aggregate.clone());
                    times.push(stored.recorded_at);
                }
            }
        }
        if seqs.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "WITH ins AS (INSERT INTO ledger_postings (stream_seq, idx, line, account, amount_fen, \
             event_type, aggregate, recorded_at) \
             SELECT * FROM unnest($1::bigint[], $2::int[], $3::int[], $4::text[], $5::bigint[], \
             $6::text[], $7::text[], $8::timestamptz[]) ON CONFLICT DO NOTHING \
             RETURNING stream_seq, idx, account, amount_fen, recorded_at) \
             INSERT INTO ledger_balances (account, balance_fen, updated_at) \
             SELECT account, sum(amount_fen), \
             (array_agg(recorded_at ORDER BY stream_seq DESC, idx DESC))[1] \
             FROM ins GROUP BY account \
             ON CONFLICT (account) DO UPDATE SET \
             balance_fen = ledger_balances.balance_fen + EXCLUDED.balance_fen, \
             updated_at = EXCLUDED.updated_at",
        )
        .bind(&seqs)
        .bind(&idxs)
        .bind(&line_numbers)
        .bind(&accounts)
        .bind(&amounts)
        .bind(&types)
        .bind(&aggregates)
        .bind(&times)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
    /// One message: the batch path with a batch of one, so there is one way to apply.
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        self.apply_batch(tx, std::slice::from_ref(message)).await
    }
}
