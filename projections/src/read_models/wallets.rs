//! The `user_wallets` and `wallet_transactions` read model ([`Wallets`], from `ev.wallet.>`):
//! each user's balance and its movements.

use async_trait::async_trait;
use domain::{CreditReason, WalletEvent};
use sqlx::PgConnection;

use crate::runtime::{LogMessage, Projection};

use super::batch::{decode_batch, Time};

/// `user_wallets` and `wallet_transactions`: the user's balance and its movements.
pub struct Wallets;

#[async_trait]
impl Projection for Wallets {
    fn name(&self) -> &'static str {
        "user_wallets"
    }
    fn tables(&self) -> Vec<&'static str> {
        vec!["user_wallets", "wallet_transactions"]
    }
    fn subjects(&self) -> Vec<String> {
        vec!["ev.wallet.>".into()]
    }
    /// Two statements: each user's last credit of the batch upserted (last writer wins, as one
    /// by one: a credit carries the balance after it), and every movement in one `UNNEST`
    /// insert.
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[LogMessage],
    ) -> anyhow::Result<()> {
        let mut w = (
            Vec::<i64>::new(),
            Vec::<i32>::new(),
            Vec::<i64>::new(),
            Vec::<&'static str>::new(),
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<String>::new(),
            Vec::<Option<i64>>::new(),
            Vec::<Time>::new(),
            Vec::<i64>::new(),
        );
        for (e, event) in decode_batch::<WalletEvent>(messages)? {
            let WalletEvent::WalletCredited {
                user_id,
                amount,
                reason,
                balance_after,
                at,
            } = event;
            let (kind, description, order_id) = wallet_movement(&reason);
            w.0.push(e.stream_sequence as i64);
            w.1.push(e.index as i32);
            w.2.push(user_id);
            w.3.push(kind);
            w.4.push(amount);
            w.5.push(balance_after);
            w.6.push(description);
            w.7.push(order_id);
            w.8.push(at);
            w.9.push(e.position());
        }
        if w.0.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO user_wallets (user_id, balance_fen, updated_at, last_position) \
             SELECT DISTINCT ON (u) u, b, at, pos FROM unnest($1::bigint[], $2::bigint[], \
             $3::timestamptz[], $4::bigint[]) AS t(u, b, at, pos) ORDER BY u, pos DESC \
             ON CONFLICT (user_id) DO UPDATE SET \
             balance_fen = EXCLUDED.balance_fen, updated_at = EXCLUDED.updated_at, \
             last_position = EXCLUDED.last_position \
             WHERE user_wallets.last_position < EXCLUDED.last_position",
        )
        .bind(&w.2)
        .bind(&w.5)
        .bind(&w.8)
        .bind(&w.9)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO wallet_transactions (stream_seq, idx, user_id, type, amount_fen, \
             balance_fen, description, order_id, created_at) SELECT * FROM unnest($1::bigint[], \
             $2::int[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], \
             $8::bigint[], $9::timestamptz[]) ON CONFLICT DO NOTHING",
        )
        .bind(&w.0)
        .bind(&w.1)
        .bind(&w.2)
        .bind(&w.3)
        .bind(&w.4)
        .bind(&w.5)
        .bind(&w.6)
        .bind(&w.7)
        .bind(&w.8)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
    /// One message: the batch path with a batch of one, so there is one way to apply.
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        self.apply_batch(tx, std::slice::from_ref(message)).await
    }
}

/// A wallet credit's movement: `(type, description, order id)`.
fn wallet_movement(reason: &CreditReason) -> (&'static str, String, Option<i64>) {
    match *reason {
        CreditReason::SessionRefund { order_id, .. } => (
            "refund",
            format!("订单 {order_id} 未使用时长退款"),
            Some(order_id),
        ),
        CreditReason::Recharge { payment_id } => {
            ("recharge", format!("充值（支付 {payment_id}）"), None)
        }
    }
}
