//! The `counselor_accounts` read model ([`Accounts`], from `ev.account.>`): each counselor's
//! income, balance, frozen and withdrawn amounts.

use async_trait::async_trait;
use domain::AccountEvent;
use sqlx::PgConnection;

use crate::runtime::{LogMessage, Projection};

use super::batch::{decode_batch, id, Time};

/// `counselor_accounts`: the counselor's income, balance, frozen and withdrawn amounts.
pub struct Accounts;

#[async_trait]
impl Projection for Accounts {
    fn name(&self) -> &'static str {
        "counselor_accounts"
    }
    fn tables(&self) -> Vec<&'static str> {
        vec!["counselor_accounts"]
    }
    fn subjects(&self) -> Vec<String> {
        vec!["ev.account.>".into()]
    }
    /// The batch in one statement: the deltas of the events each row has not seen yet
    /// (`position > last_position`) summed per counselor in SQL and upserted; `created_at` is
    /// the first such event's time and `updated_at` the last one's, as one by one.
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[LogMessage],
    ) -> anyhow::Result<()> {
        let mut d = (
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<Time>::new(),
            Vec::<i64>::new(),
        );
        for (e, event) in decode_batch::<AccountEvent>(messages)? {
            let delta = account_delta(&event);
            d.0.push(id(&e)?);
            d.1.push(delta.0);
            d.2.push(delta.1);
            d.3.push(delta.2);
            d.4.push(delta.3);
            d.5.push(e.recorded_at);
            d.6.push(e.position());
        }
        if d.0.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO counselor_accounts (counselor_id, total_income_fen, balance_fen, frozen_fen, \
             withdrawn_fen, created_at, updated_at, last_position) \
             SELECT t.c, sum(t.i), sum(t.b), sum(t.f), sum(t.w), \
             (array_agg(t.at ORDER BY t.pos))[1], (array_agg(t.at ORDER BY t.pos DESC))[1], max(t.pos) \
             FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
             $6::timestamptz[], $7::bigint[]) AS t(c, i, b, f, w, at, pos) \
             LEFT JOIN counselor_accounts a ON a.counselor_id = t.c \
             WHERE a.counselor_id IS NULL OR t.pos > a.last_position GROUP BY t.c \
             ON CONFLICT (counselor_id) DO UPDATE SET \
             total_income_fen = counselor_accounts.total_income_fen + EXCLUDED.total_income_fen, \
             balance_fen = counselor_accounts.balance_fen + EXCLUDED.balance_fen, \
             frozen_fen = counselor_accounts.frozen_fen + EXCLUDED.frozen_fen, \
             withdrawn_fen = counselor_accounts.withdrawn_fen + EXCLUDED.withdrawn_fen, \
             updated_at = EXCLUDED.updated_at, last_position = EXCLUDED.last_position \
             WHERE counselor_accounts.last_position < EXCLUDED.last_position",
        )
        .bind(&d.0)
        .bind(&d.1)
        .bind(&d.2)
        .bind(&d.3)
        .bind(&d.4)
        .bind(&d.5)
        .bind(&d.6)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
    /// One message: the batch path with a batch of one, so there is one way to apply.
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        self.apply_batch(tx, std::slice::from_ref(message)).await
    }
}

/// An account event's `(total_income, balance, frozen, withdrawn)` deltas, in fen.
fn account_delta(event: &AccountEvent) -> (i64, i64, i64, i64) {
    match *event {
        AccountEvent::EarningsCredited { amount, .. } => (amount, amount, 0, 0),
        AccountEvent::WithdrawalRequested { amount, .. } => (0, -amount, amount, 0),
        AccountEvent::WithdrawalApproved { .. } => (0, 0, 0, 0),
        AccountEvent::WithdrawalRejected { amount, .. } => (0, amount, -amount, 0),
        AccountEvent::WithdrawalTransferred { amount, .. } => (0, 0, -amount, amount),
    }
}
