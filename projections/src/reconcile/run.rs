//! A reconciliation run: the period resolved to stream sequences, the log read and folded, and
//! each check (ledger against the fold, payments, sessions, withdrawals, postings, read-model
//! rows) made against a schema.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use sqlx::PgPool;

use crate::ledger::normal_balance;
use crate::rebuild::{sequence_at, AuditPoint};
use crate::runtime::{checkpoint_in, schema_ident, spawn_reader, table_exists, LIVE_SCHEMA};

use super::books::Books;
use super::report::{ReconcileOptions, Report};
use super::rows::{compare_rows, projection_of, CHECKED_COLUMNS};

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
    if let Some(p) = &options.progress {
        p.total.store(to, std::sync::atomic::Ordering::Relaxed);
    }
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
            if let Some(p) = &options.progress {
                p.done.store(
                    message.stream_sequence,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
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
