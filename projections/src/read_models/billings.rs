//! The `chat_billings` read model ([`Billings`], from `ev.session.>`): one row per billed session.

use async_trait::async_trait;
use domain::SessionEvent;
use sqlx::PgConnection;

use crate::runtime::{LogMessage, Projection};

use super::batch::{decode_batch, id, Time};

/// `chat_billings`: one row per billed session.
pub struct Billings;

#[async_trait]
impl Projection for Billings {
    fn name(&self) -> &'static str {
        "chat_billings"
    }
    fn tables(&self) -> Vec<&'static str> {
        vec!["chat_billings"]
    }
    fn subjects(&self) -> Vec<String> {
        vec!["ev.session.>".into()]
    }
    /// Only bills make rows.
    fn ignores(&self) -> &'static [&'static str] {
        &["SessionStarted", "SessionEnded"]
    }
    /// Every bill of the batch in one `UNNEST` insert (`ON CONFLICT DO NOTHING`: the first bill
    /// of a session wins, as one by one).
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[LogMessage],
    ) -> anyhow::Result<()> {
        let mut b = (
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<i32>::new(),
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<Time>::new(),
            Vec::<i64>::new(),
        );
        for (e, event) in decode_batch::<SessionEvent>(messages)? {
            if let SessionEvent::SessionBilled {
                order_id,
                user_id,
                counselor_id,
                duration_seconds,
                billed_minutes,
                price_per_minute,
                amount,
                platform_fee,
                counselor_fee,
                refund,
                billed_at,
                ..
            } = event
            {
                b.0.push(id(&e)?);
                b.1.push(order_id);
                b.2.push(user_id);
                b.3.push(counselor_id);
                b.4.push(duration_seconds);
                b.5.push(billed_minutes as i32);
                b.6.push(price_per_minute);
                b.7.push(amount);
                b.8.push(platform_fee);
                b.9.push(counselor_fee);
                b.10.push(refund);
                b.11.push(billed_at);
                b.12.push(e.position());
            }
        }
        if b.0.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO chat_billings (session_id, order_id, user_id, counselor_id, duration, \
             billed_minutes, price_fen, total_amount_fen, platform_fee_fen, counselor_fee_fen, \
             refund_fen, status, created_at, last_position) \
             SELECT s, o, u, c, d, bm, p, a, pf, cf, r, 1, at, pos FROM unnest($1::bigint[], \
             $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::int[], $7::bigint[], \
             $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::timestamptz[], \
             $13::bigint[]) AS t(s, o, u, c, d, bm, p, a, pf, cf, r, at, pos) \
             ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(&b.0)
        .bind(&b.1)
        .bind(&b.2)
        .bind(&b.3)
        .bind(&b.4)
        .bind(&b.5)
        .bind(&b.6)
        .bind(&b.7)
        .bind(&b.8)
        .bind(&b.9)
        .bind(&b.10)
        .bind(&b.11)
        .bind(&b.12)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
    /// One message: the batch path with a batch of one, so there is one way to apply.
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        self.apply_batch(tx, std::slice::from_ref(message)).await
    }
}
