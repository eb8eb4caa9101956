//! The `withdrawals` read model ([`Withdrawals`], from `ev.account.>`): one row per withdrawal
//! request.

use async_trait::async_trait;
use domain::AccountEvent;
use sqlx::PgConnection;

use crate::runtime::{EventRef, LogMessage, Projection};

use super::batch::{decode_batch, keyed_rounds, Time};

/// `withdrawals`: one row per withdrawal request.
pub struct Withdrawals;

#[async_trait]
impl Projection for Withdrawals {
    fn name(&self) -> &'static str {
        "withdrawals"
    }
    fn tables(&self) -> Vec<&'static str> {
        vec!["withdrawals"]
    }
    fn subjects(&self) -> Vec<String> {
        vec!["ev.account.>".into()]
    }
    /// Earnings are not withdrawals.
    fn ignores(&self) -> &'static [&'static str] {
        &["EarningsCredited"]
    }
    /// Per round ([`rounds`], by withdrawal): one `UNNEST` insert of the requests and one
    /// `UNNEST` update of approvals, rejections and transfers.
    ///
    /// [`rounds`]: crate::read_models::rounds
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[LogMessage],
    ) -> anyhow::Result<()> {
        let events: Vec<(EventRef, AccountEvent)> = decode_batch::<AccountEvent>(messages)?
            .into_iter()
            .filter(|(_, e)| !matches!(e, AccountEvent::EarningsCredited { .. }))
            .collect();
        let (keys, round, n) = keyed_rounds(&events, |_, e| {
            Ok(match e {
                AccountEvent::WithdrawalRequested { withdrawal_id, .. }
                | AccountEvent::WithdrawalApproved { withdrawal_id, .. }
                | AccountEvent::WithdrawalRejected { withdrawal_id, .. }
                | AccountEvent::WithdrawalTransferred { withdrawal_id, .. } => *withdrawal_id,
                AccountEvent::EarningsCredited { .. } => 0,
            })
        })?;
        for r in 0..n {
            let mut ins = (
                Vec::<i64>::new(),
                Vec::<i64>::new(),
                Vec::<i64>::new(),
                Vec::<String>::new(),
                Vec::<String>::new(),
                Vec::<String>::new(),
                Vec::<Time>::new(),
                Vec::<i64>::new(),
            );
            let mut upd = (
                Vec::<i64>::new(),
                Vec::<i16>::new(),
                Vec::<Option<String>>::new(),
                Vec::<Option<Time>>::new(),
                Vec::<Option<Time>>::new(),
                Vec::<Time>::new(),
                Vec::<i64>::new(),
            );
            for (i, (e, event)) in events.iter().enumerate() {
                if round[i] != r {
                    continue;
                }
                let pos = e.position();
                let (status, reason, audited, transferred, at) = match event.clone() {
                    AccountEvent::WithdrawalRequested {
                        counselor_id,
                        amount,
                        bank_name,
                        bank_account,
                        account_name,
                        at,
                        ..
                    } => {
                        ins.0.push(keys[i]);
                        ins.1.push(counselor_id);
                        ins.2.push(amount);
                        ins.3.push(bank_name);
                        ins.4.push(bank_account);
                        ins.5.push(account_name);
                        ins.6.push(at);
                        ins.7.push(pos);
                        continue;
                    }
                    AccountEvent::EarningsCredited { .. } => continue,
                    AccountEvent::WithdrawalApproved { at, .. } => (1i16, None, Some(at), None, at),
                    AccountEvent::WithdrawalRejected { reason, at, .. } => {
                        (2, Some(reason), Some(at), None, at)
                    }
                    AccountEvent::WithdrawalTransferred { at, .. } => (3, None, None, Some(at), at),
                };
                upd.0.push(keys[i]);
                upd.1.push(status);
                upd.2.push(reason);
                upd.3.push(audited);
                upd.4.push(transferred);
                upd.5.push(at);
                upd.6.push(pos);
            }
            if !ins.0.is_empty() {
                sqlx::query(
                    "INSERT INTO withdrawals (id, counselor_id, amount_fen, status, bank_name, bank_account, \
                     account_name, created_at, updated_at, last_position) \
                     SELECT id, c, a, 0, bn, ba, an, at, at, pos FROM unnest($1::bigint[], $2::bigint[], \
                     $3::bigint[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::bigint[]) \
                     AS t(id, c, a, bn, ba, an, at, pos) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&ins.0)
                .bind(&ins.1)
                .bind(&ins.2)
                .bind(&ins.3)
                .bind(&ins.4)
                .bind(&ins.5)
                .bind(&ins.6)
                .bind(&ins.7)
                .execute(&mut *tx)
                .await?;
            }
            if !upd.0.is_empty() {
                sqlx::query(
                    "UPDATE withdrawals w SET status = t.status, \
                     rejected_reason = COALESCE(t.reason, w.rejected_reason), \
                     audited_at = COALESCE(t.audited, w.audited_at), \
                     transferred_at = COALESCE(t.transferred, w.transferred_at), \
                     updated_at = t.at, last_position = t.pos \
                     FROM unnest($1::bigint[], $2::smallint[], $3::text[], $4::timestamptz[], \
                     $5::timestamptz[], $6::timestamptz[], $7::bigint[]) \
                     AS t(id, status, reason, audited, transferred, at, pos) \
                     WHERE w.id = t.id AND w.last_position < t.pos",
                )
                .bind(&upd.0)
                .bind(&upd.1)
                .bind(&upd.2)
                .bind(&upd.3)
                .bind(&upd.4)
                .bind(&upd.5)
                .bind(&upd.6)
                .execute(&mut *tx)
                .await?;
            }
        }
        Ok(())
    }
    /// One message: the batch path with a batch of one, so there is one way to apply.
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        self.apply_batch(tx, std::slice::from_ref(message)).await
    }
}
