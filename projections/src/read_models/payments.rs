//! The `payments` read model ([`Payments`], from `ev.payment.>`): one row per payment.

use async_trait::async_trait;
use domain::PaymentEvent;
use sqlx::PgConnection;

use crate::runtime::{LogMessage, Projection};

use super::batch::{decode_batch, id, keyed_rounds, Time};

/// `payments`: one row per payment.
pub struct Payments;

#[async_trait]
impl Projection for Payments {
    fn name(&self) -> &'static str {
        "payments"
    }
    fn tables(&self) -> Vec<&'static str> {
        vec!["payments"]
    }
    fn subjects(&self) -> Vec<String> {
        vec!["ev.payment.>".into()]
    }
    /// Per round ([`rounds`]): one `UNNEST` insert of the created payments (orders and
    /// recharges) and one `UNNEST` update of captures and refunds.
    ///
    /// [`rounds`]: crate::read_models::rounds
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[LogMessage],
    ) -> anyhow::Result<()> {
        let events = decode_batch::<PaymentEvent>(messages)?;
        let (keys, round, n) = keyed_rounds(&events, |s, _| id(s))?;
        for r in 0..n {
            let mut ins = (
                Vec::<i64>::new(),
                Vec::<String>::new(),
                Vec::<i64>::new(),
                Vec::<i64>::new(),
                Vec::<String>::new(),
                Vec::<String>::new(),
                Vec::<i64>::new(),
                Vec::<&'static str>::new(),
                Vec::<Time>::new(),
                Vec::<i64>::new(),
            );
            let mut upd = (
                Vec::<i64>::new(),
                Vec::<i16>::new(),
                Vec::<Option<i64>>::new(),
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
                let (payment, pos, at) = (keys[i], e.position(), e.recorded_at);
                match event.clone() {
                    PaymentEvent::PaymentCreated {
                        payment_no,
                        order_id,
                        user_id,
                        amount,
                        method,
                        trade_type,
                        created_at,
                    } => {
                        ins.0.push(payment);
                        ins.1.push(payment_no);
                        ins.2.push(order_id);
                        ins.3.push(user_id);
                        ins.4.push(method);
                        ins.5.push(trade_type);
                        ins.6.push(amount);
                        ins.7.push("order");
                        ins.8.push(created_at);
                        ins.9.push(pos);
                    }
                    PaymentEvent::OfflinePaymentRecorded {
                        payment_no,
                        order_id,
                        user_id,
                        amount,
                        method,
                        recorded_at,
                        ..
                    } => {
                        ins.0.push(payment);
                        ins.1.push(payment_no);
                        ins.2.push(order_id);
                        ins.3.push(user_id);
                        ins.4.push(method);
                        ins.5.push("OFFLINE".into());
                        ins.6.push(amount);
                        ins.7.push("order");
                        ins.8.push(recorded_at);
                        ins.9.push(pos);
                    }
                    PaymentEvent::RechargePaymentCreated {
                        payment_no,
                        user_id,
                        amount,
                        method,
                        trade_type,
                        created_at,
                    } => {
                        ins.0.push(payment);
                        ins.1.push(payment_no);
                        ins.2.push(0);
                        ins.3.push(user_id);
                        ins.4.push(method);
                        ins.5.push(trade_type);
                        ins.6.push(amount);
                        ins.7.push("recharge");
                        ins.8.push(created_at);
                        ins.9.push(pos);
                    }
                    PaymentEvent::PaymentRefunded { total_refunded, .. } => {
                        upd.0.push(payment);
                        upd.1.push(3);
                        upd.2.push(Some(total_refunded));
                        upd.3.push(None);
                        upd.4.push(None);
                        upd.5.push(None);
                        upd.6.push(at);
                        upd.7.push(pos);
                    }
                    PaymentEvent::PaymentCaptured {
                        provider_txn_id,
                        captured_at,
                        ..
                    }
                    | PaymentEvent::RechargeCaptured {
                        provider_txn_id,
                        captured_at,
                        ..
                    } => {
                        upd.0.push(payment);
                        upd.1.push(1);
                        upd.2.push(None);
                        upd.3.push(Some(provider_txn_id));
                        upd.4.push(Some(captured_at));
                        upd.5.push(Some(at));
                        upd.6.push(at);
                        upd.7.push(pos);
                    }
                }
            }
            if !ins.0.is_empty() {
                sqlx::query(
                    "INSERT INTO payments (id, payment_no, order_id, user_id, payment_method, trade_type, \
                     amount_fen, status, purpose, created_at, updated_at, last_position) \
                     SELECT id, no, o, u, m, tt, a, 0, pu, at, at, pos FROM unnest($1::bigint[], \
                     $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::bigint[], \
                     $8::text[], $9::timestamptz[], $10::bigint[]) AS t(id, no, o, u, m, tt, a, pu, at, pos) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&ins.0)
                .bind(&ins.1)
                .bind(&ins.2)
                .bind(&ins.3)
                .bind(&ins.4)
                .bind(&ins.5)
                .bind(&ins.6)
                .bind(&ins.7)
                .bind(&ins.8)
                .bind(&ins.9)
                .execute(&mut *tx)
                .await?;
            }
            if !upd.0.is_empty() {
                sqlx::query(
                    "UPDATE payments p SET status = t.status, \
                     refunded_fen = COALESCE(t.refunded, p.refunded_fen), \
                     transaction_id = COALESCE(t.txn, p.transaction_id), \
                     pay_time = COALESCE(t.pay_time, p.pay_time), \
                     notify_time = COALESCE(t.notify_time, p.notify_time), \
                     updated_at = t.at, last_position = t.pos \
                     FROM unnest($1::bigint[], $2::smallint[], $3::bigint[], $4::text[], \
                     $5::timestamptz[], $6::timestamptz[], $7::timestamptz[], $8::bigint[]) \
                     AS t(id, status, refunded, txn, pay_time, notify_time, at, pos) \
                     WHERE p.id = t.id AND p.last_position < t.pos",
                )
                .bind(&upd.0)
                .bind(&upd.1)
                .bind(&upd.2)
                .bind(&upd.3)
                .bind(&upd.4)
                .bind(&upd.5)
                .bind(&upd.6)
                .bind(&upd.7)
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
