//! The `orders` read model ([`Orders`], from `ev.order.>`): one row per order.

use async_trait::async_trait;
use domain::OrderEvent;
use sqlx::PgConnection;

use crate::runtime::{LogMessage, Projection};

use super::batch::{decode_batch, id, keyed_rounds, Time};

/// `orders`: one row per order.
pub struct Orders;

#[async_trait]
impl Projection for Orders {
    fn name(&self) -> &'static str {
        "orders"
    }
    fn tables(&self) -> Vec<&'static str> {
        vec!["orders"]
    }
    fn subjects(&self) -> Vec<String> {
        vec!["ev.order.>".into()]
    }
    /// Per round ([`rounds`]): one `UNNEST` insert of the placed orders, one `UNNEST` update of
    /// every other event (`COALESCE` keeps the columns an event does not set), and one insert of
    /// the reviews whose order update took effect.
    ///
    /// [`rounds`]: crate::read_models::rounds
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[LogMessage],
    ) -> anyhow::Result<()> {
        let events = decode_batch::<OrderEvent>(messages)?;
        let (keys, round, n) = keyed_rounds(&events, |s, _| id(s))?;
        for r in 0..n {
            #[derive(Default)]
            struct Ins {
                id: Vec<i64>,
                no: Vec<String>,
                user: Vec<i64>,
                counselor: Vec<i64>,
                duration: Vec<i32>,
                price: Vec<i64>,
                amount: Vec<i64>,
                schedule: Vec<Option<Time>>,
                notes: Vec<String>,
                at: Vec<Time>,
                pos: Vec<i64>,
            }
            #[derive(Default)]
            struct Upd {
                id: Vec<i64>,
                status: Vec<Option<i16>>,
                payment: Vec<Option<i64>>,
                pay_time: Vec<Option<Time>>,
                session: Vec<Option<i64>>,
                refund: Vec<i64>,
                review: Vec<bool>,
                at: Vec<Time>,
                pos: Vec<i64>,
            }
            let (mut ins, mut upd) = (Ins::default(), Upd::default());
            let mut reviews = std::collections::HashMap::new();
            for (i, (e, event)) in events.iter().enumerate() {
                if round[i] != r {
                    continue;
                }
                let (order, pos, at) = (keys[i], e.position(), e.recorded_at);
                let (mut status, mut payment, mut pay_time, mut session, mut refund, mut review) =
                    (None, None, None, None, 0, false);
                match event.clone() {
                    OrderEvent::OrderPlaced {
                        order_no,
                        user_id,
                        counselor_id,
                        duration_minutes,
                        price_per_minute,
                        amount,
                        schedule_time,
                        notes,
                        placed_at,
                    } => {
                        ins.id.push(order);
                        ins.no.push(order_no);
                        ins.user.push(user_id);
                        ins.counselor.push(counselor_id);
                        ins.duration.push(duration_minutes as i32);
                        ins.price.push(price_per_minute);
                        ins.amount.push(amount);
                        ins.schedule.push(schedule_time);
                        ins.notes.push(notes);
                        ins.at.push(placed_at);
                        ins.pos.push(pos);
                        continue;
                    }
                    OrderEvent::OrderPaid {
                        payment_id,
                        paid_at,
                        ..
                    } => {
                        status = Some(1);
                        payment = Some(payment_id);
                        pay_time = Some(paid_at);
                    }
                    OrderEvent::OrderServiceStarted { session_id, .. } => {
                        session = Some(session_id);
                    }
                    OrderEvent::OrderCompleted { .. } => status = Some(2),
                    OrderEvent::OrderStatusChangedByAdmin { to, .. } => status = Some(to.code()),
                    OrderEvent::OrderCancelled { .. } => status = Some(3),
                    // Decided, not paid back yet: the row changes with `OrderRefunded`.
                    OrderEvent::OrderRefundRequested { .. } => continue,
                    OrderEvent::OrderRefunded { amount, .. } => {
                        status = Some(4);
                        refund = amount;
                    }
                    OrderEvent::OrderReviewed {
                        user_id,
                        counselor_id,
                        rating,
                        comment,
                        is_anonymous,
                        reviewed_at,
                    } => {
                        review = true;
                        reviews.insert(
                            order,
                            (
                                user_id,
                                counselor_id,
                                rating,
                                comment,
                                is_anonymous,
                                reviewed_at,
                            ),
                        );
                    }
                }
                upd.id.push(order);
                upd.status.push(status);
                upd.payment.push(payment);
                upd.pay_time.push(pay_time);
                upd.session.push(session);
                upd.refund.push(refund);
                upd.review.push(review);
                upd.at.push(at);
                upd.pos.push(pos);
            }
            if !ins.id.is_empty() {
                sqlx::query(
                    "INSERT INTO orders (id, order_no, user_id, counselor_id, duration, price_fen, \
                     amount_fen, status, schedule_time, notes, created_at, updated_at, last_position) \
                     SELECT id, no, u, c, d, p, a, 0, st, n, at, at, pos FROM unnest($1::bigint[], \
                     $2::text[], $3::bigint[], $4::bigint[], $5::int[], $6::bigint[], $7::bigint[], \
                     $8::timestamptz[], $9::text[], $10::timestamptz[], $11::bigint[]) \
                     AS t(id, no, u, c, d, p, a, st, n, at, pos) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&ins.id)
                .bind(&ins.no)
                .bind(&ins.user)
                .bind(&ins.counselor)
                .bind(&ins.duration)
                .bind(&ins.price)
                .bind(&ins.amount)
                .bind(&ins.schedule)
                .bind(&ins.notes)
                .bind(&ins.at)
                .bind(&ins.pos)
                .execute(&mut *tx)
                .await?;
            }
            if upd.id.is_empty() {
                continue;
            }
            let reviewed: Vec<i64> = sqlx::query_scalar::<_, Option<i64>>(
                "UPDATE orders o SET status = COALESCE(t.status, o.status), \
                 payment_id = COALESCE(t.payment_id, o.payment_id), \
                 pay_time = COALESCE(t.pay_time, o.pay_time), \
                 session_id = COALESCE(t.session_id, o.session_id), \
                 refunded_fen = o.refunded_fen + t.refund, has_review = o.has_review OR t.review, \
                 updated_at = t.at, last_position = t.pos \
                 FROM unnest($1::bigint[], $2::smallint[], $3::bigint[], $4::timestamptz[], \
                 $5::bigint[], $6::bigint[], $7::bool[], $8::timestamptz[], $9::bigint[]) \
                 AS t(id, status, payment_id, pay_time, session_id, refund, review, at, pos) \
                 WHERE o.id = t.id AND o.last_position < t.pos \
                 RETURNING CASE WHEN t.review THEN o.id END",
            )
            .bind(&upd.id)
            .bind(&upd.status)
            .bind(&upd.payment)
            .bind(&upd.pay_time)
            .bind(&upd.session)
            .bind(&upd.refund)
            .bind(&upd.review)
            .bind(&upd.at)
            .bind(&upd.pos)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .flatten()
            .collect();
            if reviewed.is_empty() {
                continue;
            }
            let mut rv = (
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
            );
            for order in reviewed {
                if let Some((u, c, rating, comment, anon, at)) = reviews.remove(&order) {
                    rv.0.push(order);
                    rv.1.push(u);
                    rv.2.push(c);
                    rv.3.push(rating);
                    rv.4.push(comment);
                    rv.5.push(anon);
                    rv.6.push(at);
                }
            }
            sqlx::query(
                "INSERT INTO reviews (order_id, user_id, counselor_id, rating, comment, \
                 is_anonymous, created_at, updated_at) SELECT o, u, c, r, cm, an, at, at \
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::smallint[], $5::text[], \
                 $6::bool[], $7::timestamptz[]) AS t(o, u, c, r, cm, an, at) \
                 ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(&rv.0)
            .bind(&rv.1)
            .bind(&rv.2)
            .bind(&rv.3)
            .bind(&rv.4)
            .bind(&rv.5)
            .bind(&rv.6)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
    /// One message: the batch path with a batch of one, so there is one way to apply.
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        self.apply_batch(tx, std::slice::from_ref(message)).await
    }
}
