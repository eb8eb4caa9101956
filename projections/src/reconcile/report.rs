//! What a reconciliation is asked ([`ReconcileOptions`]) and what it finds ([`Report`]), and the
//! report rendered as plain text (amounts in yuan).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::rebuild::AuditPoint;
use crate::runtime::LIVE_SCHEMA;

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
    /// Where the fold reports how far it has read (a job's progress); `None`: nowhere.
    pub progress: Option<std::sync::Arc<FoldProgress>>,
}

/// How far a reconciliation's fold has read: stream sequence `done` of `total` (the period's
/// end). Updated as the fold goes; read by whoever shows progress.
#[derive(Debug, Default)]
pub struct FoldProgress {
    /// The last stream sequence folded.
    pub done: std::sync::atomic::AtomicU64,
    /// The stream sequence the fold reads up to.
    pub total: std::sync::atomic::AtomicU64,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        Self {
            schema: LIVE_SCHEMA.into(),
            from: None,
            to: None,
            stuck_after: Duration::from_secs(72 * 3600),
            wait: Duration::from_secs(10),
            progress: None,
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
            yuan(report.opening.get(a).copied().unwrap_or(0)),
            yuan(report.closing.get(a).copied().unwrap_or(0))
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
