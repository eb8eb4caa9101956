//! The read models: one projection per table group, each with its own checkpoint.
//!
//! Rows carry `last_position` (see [`StoredEvent::position`]); every update is guarded with
//! `last_position < $position`, so an event applied twice changes nothing.

use anyhow::Context as _;
use std::sync::Arc;

use async_trait::async_trait;
use domain::{AccountEvent, CreditReason, OrderEvent, PaymentEvent, SessionEvent, WalletEvent};
use eventstore::chat::ChatRecord;
use eventstore::envelope::StoredEvent;
use sqlx::PgConnection;

use crate::runtime::{EventRef, LogMessage, Projection};

/// Decodes each event of an `EVENTS` message as `E`. An event no upcaster turns into an `E` (an
/// unknown type or version) is an error that names it: the projection stops there.
fn decode_events<E: serde::de::DeserializeOwned>(
    message: &LogMessage,
) -> anyhow::Result<Vec<(EventRef, E)>> {
    message
        .event_refs()?
        .map(|stored| {
            let event: E = crate::runtime::decode(&stored).with_context(|| {
                format!(
                    "unknown event {} v{} on {}",
                    stored.event_type, stored.event_version, message.subject
                )
            })?;
            Ok((stored, event))
        })
        .collect()
}

/// Decodes every event of a batch's messages as `E`, in stream order ([`decode_events`]).
fn decode_batch<E: serde::de::DeserializeOwned>(
    messages: &[LogMessage],
) -> anyhow::Result<Vec<(EventRef, E)>> {
    let mut all = Vec::new();
    for message in messages {
        all.extend(decode_events::<E>(message)?);
    }
    Ok(all)
}

/// Each item's *round*: 0 for the first item with its key, 1 for the second, and so on. Items
/// of one round touch distinct rows, so a round can be applied as multi-row statements in any
/// order, and rounds applied one after another give the result of applying the items one by
/// one in stream order (every row sees its own events in order).
pub fn rounds<K: Eq + std::hash::Hash + Clone>(keys: &[K]) -> Vec<usize> {
    let mut seen: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
    keys.iter()
        .map(|k| {
            let n = seen.entry(k.clone()).or_insert(0);
            *n += 1;
            *n - 1
        })
        .collect()
}

/// The rows' keys of `events` and their rounds ([`rounds`]), and the number of rounds.
fn keyed_rounds<E>(
    events: &[(EventRef, E)],
    key: impl Fn(&StoredEvent, &E) -> anyhow::Result<i64>,
) -> anyhow::Result<(Vec<i64>, Vec<usize>, usize)> {
    let keys = events
        .iter()
        .map(|(s, e)| key(s, e))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let round = rounds(&keys);
    let n = round.iter().max().map_or(0, |m| m + 1);
    Ok((keys, round, n))
}

type Time = chrono::DateTime<chrono::Utc>;

fn id(stored: &StoredEvent) -> anyhow::Result<i64> {
    stored
        .aggregate_id_i64()
        .with_context(|| format!("aggregate id {} is not a number", stored.aggregate_id))
}

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

/// `chat_sessions`: one row per session.
pub struct Sessions;

#[async_trait]
impl Projection for Sessions {
    fn name(&self) -> &'static str {
        "chat_sessions"
    }
    fn tables(&self) -> Vec<&'static str> {
        vec!["chat_sessions"]
    }
    fn subjects(&self) -> Vec<String> {
        vec!["ev.session.>".into()]
    }
    /// Per round ([`rounds`]): one `UNNEST` insert of the started sessions and one `UNNEST`
    /// update of ends and bills. The updates of one session within one commit are merged into
    /// one row update first ([`SessionUpdate`]): ending a session commits `SessionEnded` and
    /// `SessionBilled` together, so each session costs one update instead of two.
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[LogMessage],
    ) -> anyhow::Result<()> {
        let events = decode_batch::<SessionEvent>(messages)?;
        let mut changes: Vec<(i64, SessionChange)> = Vec::with_capacity(events.len());
        for (e, event) in &events {
            let (session, pos, at) = (id(e)?, e.position(), e.recorded_at);
            let update = match event {
                SessionEvent::SessionStarted {
                    order_id,
                    user_id,
                    counselor_id,
                    counselor_user_id,
                    price_per_minute,
                    prepaid_minutes,
                    started_at,
                    ..
                } => {
                    changes.push((
                        session,
                        SessionChange::Started {
                            order_id: *order_id,
                            user_id: *user_id,
                            counselor_id: *counselor_id,
                            counselor_user_id: *counselor_user_id,
                            started_at: *started_at,
                            price_per_minute: *price_per_minute,
                            prepaid_minutes: *prepaid_minutes as i32,
                            pos,
                        },
                    ));
                    continue;
                }
                SessionEvent::SessionEnded {
                    ended_at,
                    duration_seconds,
                    ..
                } => SessionUpdate {
                    stream_sequence: e.stream_sequence,
                    status: Some(2),
                    end_time: Some(*ended_at),
                    duration: Some(*duration_seconds),
                    total: None,
                    at,
                    first_pos: pos,
                    pos,
                },
                SessionEvent::SessionBilled { amount, .. } => SessionUpdate {
                    stream_sequence: e.stream_sequence,
                    status: None,
                    end_time: None,
                    duration: None,
                    total: Some(*amount),
                    at,
                    first_pos: pos,
                    pos,
                },
            };
            match changes.last_mut() {
                Some((last, SessionChange::Updated(prior)))
                    if *last == session && prior.stream_sequence == update.stream_sequence =>
                {
                    prior.merge(update)
                }
                _ => changes.push((session, SessionChange::Updated(update))),
            }
        }
        let keys: Vec<i64> = changes.iter().map(|(k, _)| *k).collect();
        let round = rounds(&keys);
        let n = round.iter().max().map_or(0, |m| m + 1);
        for r in 0..n {
            let mut ins = (
                Vec::<i64>::new(),
                Vec::<i64>::new(),
                Vec::<i64>::new(),
                Vec::<i64>::new(),
                Vec::<i64>::new(),
                Vec::<Time>::new(),
                Vec::<i64>::new(),
                Vec::<i32>::new(),
                Vec::<i64>::new(),
            );
            let mut upd = (
                Vec::<i64>::new(),
                Vec::<Option<i16>>::new(),
                Vec::<Option<Time>>::new(),
                Vec::<Option<i64>>::new(),
                Vec::<Option<i64>>::new(),
                Vec::<Time>::new(),
                Vec::<i64>::new(),
                Vec::<i64>::new(),
            );
            for (i, (session, change)) in changes.iter().enumerate() {
                if round[i] != r {
                    continue;
                }
                match change {
                    SessionChange::Started {
                        order_id,
                        user_id,
                        counselor_id,
                        counselor_user_id,
                        started_at,
                        price_per_minute,
                        prepaid_minutes,
                        pos,
                    } => {
                        ins.0.push(*session);
                        ins.1.push(*order_id);
                        ins.2.push(*user_id);
                        ins.3.push(*counselor_id);
                        ins.4.push(*counselor_user_id);
                        ins.5.push(*started_at);
                        ins.6.push(*price_per_minute);
                        ins.7.push(*prepaid_minutes);
                        ins.8.push(*pos);
                    }
                    SessionChange::Updated(u) => {
                        upd.0.push(*session);
                        upd.1.push(u.status);
                        upd.2.push(u.end_time);
                        upd.3.push(u.duration);
                        upd.4.push(u.total);
                        upd.5.push(u.at);
                        upd.6.push(u.pos);
                        upd.7.push(u.first_pos);
                    }
                }
            }
            if !ins.0.is_empty() {
                sqlx::query(
                    "INSERT INTO chat_sessions (id, order_id, user_id, counselor_id, counselor_user_id, \
                     status, start_time, price_fen, prepaid_minutes, created_at, updated_at, last_position) \
                     SELECT id, o, u, c, cu, 1, st, p, pm, st, st, pos FROM unnest($1::bigint[], \
                     $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::timestamptz[], \
                     $7::bigint[], $8::int[], $9::bigint[]) AS t(id, o, u, c, cu, st, p, pm, pos) \
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
                .execute(&mut *tx)
                .await?;
            }
            if !upd.0.is_empty() {
                sqlx::query(
                    "UPDATE chat_sessions s SET status = COALESCE(t.status, s.status), \
                     end_time = COALESCE(t.end_time, s.end_time), \
                     duration = COALESCE(t.duration, s.duration), \
                     total_amount_fen = COALESCE(t.total, s.total_amount_fen), \
                     updated_at = t.at, last_position = t.pos \
                     FROM unnest($1::bigint[], $2::smallint[], $3::timestamptz[], $4::bigint[], \
                     $5::bigint[], $6::timestamptz[], $7::bigint[], $8::bigint[]) \
                     AS t(id, status, end_time, duration, total, at, pos, first_pos) \
                     WHERE s.id = t.id AND s.last_position < t.first_pos",
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

/// One change to a `chat_sessions` row, in a batch.
enum SessionChange {
    /// `SessionStarted`: the row is inserted.
    Started {
        order_id: i64,
        user_id: i64,
        counselor_id: i64,
        counselor_user_id: i64,
        started_at: Time,
        price_per_minute: i64,
        prepaid_minutes: i32,
        pos: i64,
    },
    /// `SessionEnded` and/or `SessionBilled`: the row is updated.
    Updated(SessionUpdate),
}

/// The updates of one session by consecutive events of one commit (stream sequence), merged:
/// each column takes the last value set, `at`/`pos` are the last event's, and the row's guard
/// is the first event's position (`last_position < first_pos`). Merging within one commit
/// only keeps the one-by-one result: a commit's events are applied in one transaction with
/// the checkpoint, so a row has seen either all of them or none.
struct SessionUpdate {
    stream_sequence: u64,
    status: Option<i16>,
    end_time: Option<Time>,
    duration: Option<i64>,
    /// The billed amount, in fen.
    total: Option<i64>,
    at: Time,
    first_pos: i64,
    pos: i64,
}

impl SessionUpdate {
    /// Folds `later` (the next event of the same commit and session) into `self`.
    fn merge(&mut self, later: SessionUpdate) {
        self.status = later.status.or(self.status);
        self.end_time = later.end_time.or(self.end_time);
        self.duration = later.duration.or(self.duration);
        self.total = later.total.or(self.total);
        self.at = later.at;
        self.pos = later.pos;
    }
}

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

/// `chat_messages`, from one chat stream: one row per message of the stream; id = the message's
/// id across the chat streams ([`eventstore::chat::message_id`]: stream sequence × 64 + shard).
/// There is one of these per chat stream of the layout (each with its own checkpoint: the legacy
/// `CHAT`'s is `chat_messages`, shard `k`'s `chat_messages_<k>`); they share the table and are
/// rebuilt together ([`Projection::siblings`]).
pub struct Messages {
    /// The layout of the chat streams.
    pub layout: eventstore::ChatLayout,
    /// The shard this one reads (0 = the legacy `CHAT`).
    pub shard: u16,
}

impl Messages {
    /// The checkpoint name of shard `shard`'s projection.
    pub fn name_of(shard: u16) -> &'static str {
        static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
        NAMES.get_or_init(|| {
            (0..=eventstore::chat::MAX_SHARDS)
                .map(|k| {
                    if k == 0 {
                        "chat_messages"
                    } else {
                        &*Box::leak(format!("chat_messages_{k}").into_boxed_str())
                    }
                })
                .collect()
        })[usize::from(shard.min(eventstore::chat::MAX_SHARDS))]
    }

    /// One projection per chat stream of `layout`.
    pub fn all(layout: &eventstore::ChatLayout) -> Vec<Arc<dyn Projection>> {
        layout
            .streams()
            .into_iter()
            .map(|(shard, _)| {
                Arc::new(Messages {
                    layout: *layout,
                    shard,
                }) as Arc<dyn Projection>
            })
            .collect()
    }

    fn id(&self, seq: u64) -> i64 {
        eventstore::chat::message_id(self.shard, seq)
    }
}

#[async_trait]
impl Projection for Messages {
    fn name(&self) -> &'static str {
        Self::name_of(self.shard)
    }
    fn tables(&self) -> Vec<&'static str> {
        vec!["chat_messages"]
    }
    fn stream(&self) -> &'static str {
        eventstore::chat::shard_stream(self.shard)
    }
    fn subjects(&self) -> Vec<String> {
        vec![if self.shard == 0 {
            "chat.*".into()
        } else {
            format!("chat.{}.*", self.shard)
        }]
    }
    /// Version 2: ids are message ids across the chat streams (stream sequence × 64 + shard),
    /// no longer the single `CHAT` stream's sequence.
    fn version(&self) -> i32 {
        2
    }
    fn siblings(&self) -> Vec<Arc<dyn Projection>> {
        Messages::all(&self.layout)
    }
    /// Each run of consecutive chat messages in one `UNNEST` insert; read receipts,
    /// revocations and redactions (which change earlier rows) one by one, in order.
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[LogMessage],
    ) -> anyhow::Result<()> {
        #[derive(Default)]
        struct Run {
            id: Vec<i64>,
            session: Vec<i64>,
            sender: Vec<i64>,
            sender_type: Vec<String>,
            content_type: Vec<String>,
            content: Vec<String>,
            file_url: Vec<String>,
            client_msg_id: Vec<String>,
            at: Vec<Time>,
        }
        async fn flush(tx: &mut PgConnection, run: &mut Run) -> anyhow::Result<()> {
            if run.id.is_empty() {
                return Ok(());
            }
            let r = std::mem::take(run);
            sqlx::query(
                "INSERT INTO chat_messages (id, session_id, sender_id, sender_type, content_type, \
                 content, file_url, client_msg_id, created_at) SELECT * FROM unnest($1::bigint[], \
                 $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], \
                 $8::text[], $9::timestamptz[]) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&r.id)
            .bind(&r.session)
            .bind(&r.sender)
            .bind(&r.sender_type)
            .bind(&r.content_type)
            .bind(&r.content)
            .bind(&r.file_url)
            .bind(&r.client_msg_id)
            .bind(&r.at)
            .execute(&mut *tx)
            .await?;
            Ok(())
        }
        let mut run = Run::default();
        for message in messages {
            let record: ChatRecord =
                serde_json::from_slice(&message.payload).with_context(|| {
                    format!("undecodable chat record at {}", message.stream_sequence)
                })?;
            match record {
                ChatRecord::Message(m) => {
                    run.id.push(self.id(message.stream_sequence));
                    run.session.push(m.session_id);
                    run.sender.push(m.sender_id);
                    run.sender_type.push(m.sender_type);
                    run.content_type.push(m.content_type);
                    run.content.push(m.content);
                    run.file_url.push(m.file_url);
                    run.client_msg_id.push(m.client_msg_id);
                    run.at.push(m.sent_at);
                }
                _ => {
                    flush(&mut *tx, &mut run).await?;
                    self.apply_record(&mut *tx, message).await?;
                }
            }
        }
        flush(&mut *tx, &mut run).await
    }
    /// One message: the batch path with a batch of one, so there is one way to apply.
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        self.apply_batch(tx, std::slice::from_ref(message)).await
    }
}

impl Messages {
    /// One `CHAT` record applied on its own: the batch path's updates (redactions, read
    /// receipts, revocations); messages are inserted in runs by `apply_batch`, but a lone one is
    /// applied here the same way.
    async fn apply_record(
        &self,
        tx: &mut PgConnection,
        message: &LogMessage,
    ) -> anyhow::Result<()> {
        let record: ChatRecord = serde_json::from_slice(&message.payload)
            .with_context(|| format!("undecodable chat record at {}", message.stream_sequence))?;
        match record {
            ChatRecord::Message(m) => {
                sqlx::query(
                    "INSERT INTO chat_messages (id, session_id, sender_id, sender_type, content_type, content, \
                     file_url, client_msg_id, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(self.id(message.stream_sequence))
                .bind(m.session_id)
                .bind(m.sender_id)
                .bind(m.sender_type)
                .bind(m.content_type)
                .bind(m.content)
                .bind(m.file_url)
                .bind(m.client_msg_id)
                .bind(m.sent_at)
                .execute(&mut *tx)
                .await?;
            }
            ChatRecord::Redaction(r) => {
                // The text disappears from the read model; the fact stays in the chat stream.
                let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                    "UPDATE chat_messages SET content = '', file_url = '', content_type = 'redacted' WHERE session_id = ",
                );
                q.push_bind(r.session_id);
                q.push(" AND id < ")
                    .push_bind(self.id(message.stream_sequence));
                if !r.message_ids.is_empty() {
                    let ids: Vec<i64> = r
                        .message_ids
                        .iter()
                        .map(|seq| self.id(*seq as u64))
                        .collect();
                    q.push(" AND id = ANY(").push_bind(ids).push(")");
                }
                q.build().execute(&mut *tx).await?;
            }
            // Read receipts and revocations are records of the same stream.
            ChatRecord::MessageRead(r) => {
                sqlx::query(
                    "UPDATE chat_messages SET is_read = TRUE, read_time = COALESCE(read_time, $3) \
                     WHERE id = $1 AND session_id = $2",
                )
                .bind(self.id(r.message_seq))
                .bind(r.session_id)
                .bind(r.read_at)
                .execute(&mut *tx)
                .await?;
            }
            ChatRecord::MessageRevoked(r) => {
                sqlx::query(
                    "UPDATE chat_messages SET revoked_at = COALESCE(revoked_at, $3) \
                     WHERE id = $1 AND session_id = $2",
                )
                .bind(self.id(r.message_seq))
                .bind(r.session_id)
                .bind(r.revoked_at)
                .execute(&mut *tx)
                .await?;
            }
        }
        Ok(())
    }
}

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
