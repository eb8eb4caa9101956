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

mod books;
mod fold;
mod report;
mod rows;
mod run;

pub use report::{render, yuan, FoldProgress, ReconcileOptions, Report};
pub use rows::CHECKED_COLUMNS;
pub use run::reconcile;
