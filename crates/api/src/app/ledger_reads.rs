//! Money figures read from the double-entry ledger: the user balance, the
//! `CounselorAccount` balance and the admin finance statistics come from `ledger_balances` /
//! `ledger_postings` (built by `projections::ledger` from the log), not from the
//! `user_wallets` / `counselor_accounts` read models, which `mychat finance reconcile` checks
//! against the ledger instead.
//!
//! Accounts are named as in `projections::ledger` (`user:<id>:balance`,
//! `counselor:<id>:payable`, `counselor:<id>:in_transit`, `platform:payouts`, …); a balance is
//! read on the account's normal side (credit accounts: `−` the signed sum), in fen.

use chrono::{DateTime, Utc};
use projections::ledger;
use sqlx::PgPool;

/// A user's wallet balance in fen: the normal balance of `user:<id>:balance` (0 when the
/// account has no posting yet).
///
/// # Errors
/// On a database error.
pub async fn user_balance(db: &PgPool, user_id: i64) -> Result<i64, sqlx::Error> {
    let account = ledger::user_balance(user_id);
    let signed: Option<i64> =
        sqlx::query_scalar("SELECT balance_fen FROM ledger_balances WHERE account = $1")
            .bind(&account)
            .fetch_optional(db)
            .await?;
    Ok(ledger::normal_balance(&account, signed.unwrap_or(0)))
}

/// A counselor's account as the ledger has it, in fen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounselorAccount {
    /// Everything credited to the account (`EarningsCredited` credits of
    /// `counselor:<id>:payable`).
    pub total_income: i64,
    /// Withdrawable: the normal balance of `counselor:<id>:payable`.
    pub balance: i64,
    /// Requested or approved withdrawals not transferred yet: `counselor:<id>:in_transit`.
    pub frozen: i64,
    /// Transferred withdrawals (`WithdrawalTransferred` debits of `counselor:<id>:in_transit`).
    pub withdrawn: i64,
    /// The first posting on `payable` or `in_transit` (`None`: no account yet).
    pub created_at: Option<DateTime<Utc>>,
    /// The last posting on `payable` or `in_transit`.
    pub updated_at: Option<DateTime<Utc>>,
}

/// The columns of [`CounselorAccount`] for every counselor that has a `payable` or
/// `in_transit` account in the ledger, as a derived table with the column names of the
/// `counselor_accounts` read model (`counselor_id, total_income_fen, balance_fen, frozen_fen,
/// withdrawn_fen, created_at, updated_at`), so that list queries can use it in its place.
pub const COUNSELOR_ACCOUNTS_SQL: &str = "(SELECT c.counselor_id, \
     COALESCE((SELECT -sum(p.amount_fen) FROM ledger_postings p \
       WHERE p.account = 'counselor:' || c.counselor_id || ':payable' \
       AND p.event_type = 'EarningsCredited'), 0)::bigint AS total_income_fen, \
     c.balance_fen, c.frozen_fen, \
     COALESCE((SELECT sum(p.amount_fen) FROM ledger_postings p \
       WHERE p.account = 'counselor:' || c.counselor_id || ':in_transit' \
       AND p.event_type = 'WithdrawalTransferred'), 0)::bigint AS withdrawn_fen, \
     (SELECT min(p.recorded_at) FROM ledger_postings p WHERE p.account IN \
       ('counselor:' || c.counselor_id || ':payable', 'counselor:' || c.counselor_id || ':in_transit')) \
       AS created_at, \
     c.updated_at \
   FROM (SELECT split_part(account, ':', 2)::bigint AS counselor_id, \
       COALESCE(-sum(balance_fen) FILTER (WHERE account LIKE '%:payable'), 0)::bigint AS balance_fen, \
       COALESCE(-sum(balance_fen) FILTER (WHERE account LIKE '%:in_transit'), 0)::bigint AS frozen_fen, \
       max(updated_at) AS updated_at \
     FROM ledger_balances WHERE account LIKE 'counselor:%:payable' OR account LIKE 'counselor:%:in_transit' \
     GROUP BY 1) c)";

/// `(payable, in_transit, income postings, transferred postings, first, last)`.
type AccountRow = (
    Option<i64>,
    Option<i64>,
    i64,
    i64,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// One counselor's account from the ledger (all zero when it has no posting yet).
///
/// # Errors
/// On a database error.
pub async fn counselor_account(
    db: &PgPool,
    counselor_id: i64,
) -> Result<CounselorAccount, sqlx::Error> {
    let payable = ledger::counselor_payable(counselor_id);
    let in_transit = ledger::counselor_in_transit(counselor_id);
    let row: AccountRow = sqlx::query_as(
        "SELECT (SELECT balance_fen FROM ledger_balances WHERE account = $1), \
         (SELECT balance_fen FROM ledger_balances WHERE account = $2), \
         COALESCE((SELECT sum(amount_fen) FROM ledger_postings WHERE account = $1 \
           AND event_type = 'EarningsCredited'), 0)::bigint, \
         COALESCE((SELECT sum(amount_fen) FROM ledger_postings WHERE account = $2 \
           AND event_type = 'WithdrawalTransferred'), 0)::bigint, \
         (SELECT min(recorded_at) FROM ledger_postings WHERE account IN ($1, $2)), \
         (SELECT max(updated_at) FROM ledger_balances WHERE account IN ($1, $2))",
    )
    .bind(&payable)
    .bind(&in_transit)
    .fetch_one(db)
    .await?;
    Ok(CounselorAccount {
        total_income: -row.2,
        balance: ledger::normal_balance(&payable, row.0.unwrap_or(0)),
        frozen: ledger::normal_balance(&in_transit, row.1.unwrap_or(0)),
        withdrawn: row.3,
        created_at: row.4,
        updated_at: row.5,
    })
}
