//! The read models: one projection per table group, each with its own checkpoint.
//!
//! Rows carry `last_position` (see [`StoredEvent::position`]); every update is guarded with
//! `last_position < $position`, so an event applied twice changes nothing.

use anyhow::Context as _;
use async_trait::async_trait;
use domain::{AccountEvent, CreditReason, OrderEvent, PaymentEvent, SessionEvent, WalletEvent};
use eventstore::chat::ChatRecord;
use eventstore::envelope::{StoredEvent, Upcasters};
use sqlx::PgConnection;

use crate::runtime::{LogMessage, Projection};

/// Decodes each event of an `EVENTS` message as `E`. An event no upcaster turns into an `E` (an
/// unknown type or version) is an error that names it: the projection stops there.
fn decode_events<E: serde::de::DeserializeOwned>(
    message: &LogMessage,
) -> anyhow::Result<Vec<(StoredEvent, E)>> {
    message
        .events(&Upcasters::default())?
        .into_iter()
        .map(|stored| {
            let event: E = stored.decode().with_context(|| {
                format!(
                    "unknown event {} v{} on {}",
                    stored.event_type, stored.event_version, message.subject
                )
            })?;
            Ok((stored, event))
        })
        .collect()
}

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
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        for (e, event) in decode_events::<OrderEvent>(message)? {
            let e = &e;
            let (order, pos, at) = (id(e)?, e.position(), e.recorded_at);
            match event {
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
                    sqlx::query(
                        "INSERT INTO orders (id, order_no, user_id, counselor_id, duration, price_fen, \
                         amount_fen, status, schedule_time, notes, created_at, updated_at, last_position) \
                         VALUES ($1,$2,$3,$4,$5,$6,$7,0,$8,$9,$10,$10,$11) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(order)
                    .bind(order_no)
                    .bind(user_id)
                    .bind(counselor_id)
                    .bind(duration_minutes as i32)
                    .bind(price_per_minute)
                    .bind(amount)
                    .bind(schedule_time)
                    .bind(notes)
                    .bind(placed_at)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                }
                OrderEvent::OrderPaid {
                    payment_id,
                    paid_at,
                    ..
                } => {
                    sqlx::query(
                        "UPDATE orders SET status = 1, payment_id = $2, pay_time = $3, updated_at = $4, \
                         last_position = $5 WHERE id = $1 AND last_position < $5",
                    )
                    .bind(order)
                    .bind(payment_id)
                    .bind(paid_at)
                    .bind(at)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                }
                OrderEvent::OrderServiceStarted { session_id, .. } => {
                    sqlx::query(
                        "UPDATE orders SET session_id = $2, updated_at = $3, last_position = $4 \
                         WHERE id = $1 AND last_position < $4",
                    )
                    .bind(order)
                    .bind(session_id)
                    .bind(at)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                }
                OrderEvent::OrderCompleted { .. } => {
                    sqlx::query(
                        "UPDATE orders SET status = 2, updated_at = $2, last_position = $3 \
                         WHERE id = $1 AND last_position < $3",
                    )
                    .bind(order)
                    .bind(at)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                }
                OrderEvent::OrderStatusChangedByAdmin { to, .. } => {
                    sqlx::query(
                        "UPDATE orders SET status = $2, updated_at = $3, last_position = $4 \
                         WHERE id = $1 AND last_position < $4",
                    )
                    .bind(order)
                    .bind(to.code())
                    .bind(at)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                }
                OrderEvent::OrderCancelled { .. } => {
                    sqlx::query(
                        "UPDATE orders SET status = 3, updated_at = $2, last_position = $3 \
                         WHERE id = $1 AND last_position < $3",
                    )
                    .bind(order)
                    .bind(at)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                }
                OrderEvent::OrderRefunded { amount, .. } => {
                    sqlx::query(
                        "UPDATE orders SET status = 4, refunded_fen = refunded_fen + $2, updated_at = $3, \
                         last_position = $4 WHERE id = $1 AND last_position < $4",
                    )
                    .bind(order)
                    .bind(amount)
                    .bind(at)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                }
                OrderEvent::OrderReviewed {
                    user_id,
                    counselor_id,
                    rating,
                    comment,
                    is_anonymous,
                    reviewed_at,
                } => {
                    let done = sqlx::query(
                        "UPDATE orders SET has_review = TRUE, updated_at = $2, last_position = $3 \
                         WHERE id = $1 AND last_position < $3",
                    )
                    .bind(order)
                    .bind(at)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() > 0 {
                        sqlx::query(
                            "INSERT INTO reviews (order_id, user_id, counselor_id, rating, comment, \
                             is_anonymous, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$7) \
                             ON CONFLICT (order_id) DO NOTHING",
                        )
                        .bind(order)
                        .bind(user_id)
                        .bind(counselor_id)
                        .bind(rating)
                        .bind(comment)
                        .bind(is_anonymous)
                        .bind(reviewed_at)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
        }
        Ok(())
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
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        for (e, event) in decode_events::<PaymentEvent>(message)? {
            let e = &e;
            let (payment, pos, at) = (id(e)?, e.position(), e.recorded_at);
            match event {
                PaymentEvent::PaymentCreated {
                    payment_no,
                    order_id,
                    user_id,
                    amount,
                    method,
                    trade_type,
                    created_at,
                } => {
                    sqlx::query(
                        "INSERT INTO payments (id, payment_no, order_id, user_id, payment_method, trade_type, \
                         amount_fen, status, created_at, updated_at, last_position) \
                         VALUES ($1,$2,$3,$4,$5,$6,$7,0,$8,$8,$9) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(payment)
                    .bind(payment_no)
                    .bind(order_id)
                    .bind(user_id)
                    .bind(method)
                    .bind(trade_type)
                    .bind(amount)
                    .bind(created_at)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                }
                PaymentEvent::RechargePaymentCreated {
                    payment_no,
                    user_id,
                    amount,
                    method,
                    trade_type,
                    created_at,
                } => {
                    sqlx::query(
                        "INSERT INTO payments (id, payment_no, order_id, user_id, payment_method, trade_type, \
                         amount_fen, status, purpose, created_at, updated_at, last_position) \
                         VALUES ($1,$2,0,$3,$4,$5,$6,0,'recharge',$7,$7,$8) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(payment)
                    .bind(payment_no)
                    .bind(user_id)
                    .bind(method)
                    .bind(trade_type)
                    .bind(amount)
                    .bind(created_at)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                }
                PaymentEvent::PaymentRefunded { total_refunded, .. } => {
                    sqlx::query(
                        "UPDATE payments SET status = 3, refunded_fen = $2, updated_at = $3, \
                         last_position = $4 WHERE id = $1 AND last_position < $4",
                    )
                    .bind(payment)
                    .bind(total_refunded)
                    .bind(at)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
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
                    sqlx::query(
                        "UPDATE payments SET status = 1, transaction_id = $2, pay_time = $3, notify_time = $4, updated_at = $4, \
                         last_position = $5 WHERE id = $1 AND last_position < $5",
                    )
                    .bind(payment)
                    .bind(provider_txn_id)
                    .bind(captured_at)
                    .bind(at)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        Ok(())
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
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        for (e, event) in decode_events::<SessionEvent>(message)? {
            let e = &e;
            let (session, pos, at) = (id(e)?, e.position(), e.recorded_at);
            match event {
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
                    sqlx::query(
                        "INSERT INTO chat_sessions (id, order_id, user_id, counselor_id, counselor_user_id, \
                         status, start_time, price_fen, prepaid_minutes, created_at, updated_at, last_position) \
                         VALUES ($1,$2,$3,$4,$5,1,$6,$7,$8,$6,$6,$9) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(session)
                    .bind(order_id)
                    .bind(user_id)
                    .bind(counselor_id)
                    .bind(counselor_user_id)
                    .bind(started_at)
                    .bind(price_per_minute)
                    .bind(prepaid_minutes as i32)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                }
                SessionEvent::SessionEnded {
                    ended_at,
                    duration_seconds,
                    ..
                } => {
                    sqlx::query(
                        "UPDATE chat_sessions SET status = 2, end_time = $2, duration = $3, updated_at = $4, \
                         last_position = $5 WHERE id = $1 AND last_position < $5",
                    )
                    .bind(session)
                    .bind(ended_at)
                    .bind(duration_seconds)
                    .bind(at)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                }
                SessionEvent::SessionBilled { amount, .. } => {
                    sqlx::query(
                        "UPDATE chat_sessions SET total_amount_fen = $2, updated_at = $3, last_position = $4 \
                         WHERE id = $1 AND last_position < $4",
                    )
                    .bind(session)
                    .bind(amount)
                    .bind(at)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        Ok(())
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
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        for (e, event) in decode_events::<SessionEvent>(message)? {
            let e = &e;
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
                sqlx::query(
                    "INSERT INTO chat_billings (session_id, order_id, user_id, counselor_id, duration, \
                     billed_minutes, price_fen, total_amount_fen, platform_fee_fen, counselor_fee_fen, \
                     refund_fen, status, created_at, last_position) \
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,1,$12,$13) ON CONFLICT (session_id) DO NOTHING",
                )
                .bind(id(e)?)
                .bind(order_id)
                .bind(user_id)
                .bind(counselor_id)
                .bind(duration_seconds)
                .bind(billed_minutes as i32)
                .bind(price_per_minute)
                .bind(amount)
                .bind(platform_fee)
                .bind(counselor_fee)
                .bind(refund)
                .bind(billed_at)
                .bind(e.position())
                .execute(&mut *tx)
                .await?;
            }
        }
        Ok(())
    }
}

/// `chat_messages`: one row per message of the `CHAT` stream; id = its stream sequence.
pub struct Messages;

#[async_trait]
impl Projection for Messages {
    fn name(&self) -> &'static str {
        "chat_messages"
    }
    fn tables(&self) -> Vec<&'static str> {
        vec!["chat_messages"]
    }
    fn stream(&self) -> &'static str {
        eventstore::CHAT_STREAM
    }
    fn subjects(&self) -> Vec<String> {
        vec!["chat.>".into()]
    }
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        let record: ChatRecord = serde_json::from_slice(&message.payload)
            .with_context(|| format!("undecodable chat record at {}", message.stream_sequence))?;
        match record {
            ChatRecord::Message(m) => {
                sqlx::query(
                    "INSERT INTO chat_messages (id, session_id, sender_id, sender_type, content_type, content, \
                     file_url, client_msg_id, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(message.stream_sequence as i64)
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
                // The text disappears from the read model; the fact stays in `CHAT` (issue 4).
                let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                    "UPDATE chat_messages SET content = '', file_url = '', content_type = 'redacted' WHERE session_id = ",
                );
                q.push_bind(r.session_id);
                q.push(" AND id < ")
                    .push_bind(message.stream_sequence as i64);
                if !r.message_ids.is_empty() {
                    q.push(" AND id = ANY(")
                        .push_bind(r.message_ids.clone())
                        .push(")");
                }
                q.build().execute(&mut *tx).await?;
            }
            // Issue 5: read receipts and revocations are records of the same stream.
            ChatRecord::MessageRead(r) => {
                sqlx::query(
                    "UPDATE chat_messages SET is_read = TRUE, read_time = COALESCE(read_time, $3) \
                     WHERE id = $1 AND session_id = $2",
                )
                .bind(r.message_seq as i64)
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
                .bind(r.message_seq as i64)
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
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        for (e, event) in decode_events::<AccountEvent>(message)? {
            let e = &e;
            // (income, balance, frozen, withdrawn) deltas, in fen.
            let delta: (i64, i64, i64, i64) = match event {
                AccountEvent::EarningsCredited { amount, .. } => (amount, amount, 0, 0),
                AccountEvent::WithdrawalRequested { amount, .. } => (0, -amount, amount, 0),
                AccountEvent::WithdrawalApproved { .. } => (0, 0, 0, 0),
                AccountEvent::WithdrawalRejected { amount, .. } => (0, amount, -amount, 0),
                AccountEvent::WithdrawalTransferred { amount, .. } => (0, 0, -amount, amount),
            };
            sqlx::query(
                "INSERT INTO counselor_accounts (counselor_id, total_income_fen, balance_fen, frozen_fen, \
                 withdrawn_fen, created_at, updated_at, last_position) VALUES ($1,$2,$3,$4,$5,$6,$6,$7) \
                 ON CONFLICT (counselor_id) DO UPDATE SET \
                 total_income_fen = counselor_accounts.total_income_fen + EXCLUDED.total_income_fen, \
                 balance_fen = counselor_accounts.balance_fen + EXCLUDED.balance_fen, \
                 frozen_fen = counselor_accounts.frozen_fen + EXCLUDED.frozen_fen, \
                 withdrawn_fen = counselor_accounts.withdrawn_fen + EXCLUDED.withdrawn_fen, \
                 updated_at = EXCLUDED.updated_at, last_position = EXCLUDED.last_position \
                 WHERE counselor_accounts.last_position < EXCLUDED.last_position",
            )
            .bind(id(e)?)
            .bind(delta.0)
            .bind(delta.1)
            .bind(delta.2)
            .bind(delta.3)
            .bind(e.recorded_at)
            .bind(e.position())
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
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
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        for (e, event) in decode_events::<AccountEvent>(message)? {
            let e = &e;
            let pos = e.position();
            let (withdrawal, status, reason, audited, transferred, at) = match event {
                AccountEvent::WithdrawalRequested {
                    counselor_id,
                    withdrawal_id,
                    amount,
                    bank_name,
                    bank_account,
                    account_name,
                    at,
                } => {
                    sqlx::query(
                        "INSERT INTO withdrawals (id, counselor_id, amount_fen, status, bank_name, bank_account, \
                         account_name, created_at, updated_at, last_position) \
                         VALUES ($1,$2,$3,0,$4,$5,$6,$7,$7,$8) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(withdrawal_id)
                    .bind(counselor_id)
                    .bind(amount)
                    .bind(bank_name)
                    .bind(bank_account)
                    .bind(account_name)
                    .bind(at)
                    .bind(pos)
                    .execute(&mut *tx)
                    .await?;
                    continue;
                }
                AccountEvent::EarningsCredited { .. } => continue,
                AccountEvent::WithdrawalApproved {
                    withdrawal_id, at, ..
                } => (withdrawal_id, 1i16, None, Some(at), None, at),
                AccountEvent::WithdrawalRejected {
                    withdrawal_id,
                    reason,
                    at,
                    ..
                } => (withdrawal_id, 2, Some(reason), Some(at), None, at),
                AccountEvent::WithdrawalTransferred {
                    withdrawal_id, at, ..
                } => (withdrawal_id, 3, None, None, Some(at), at),
            };
            sqlx::query(
                "UPDATE withdrawals SET status = $2, rejected_reason = COALESCE($3, rejected_reason), \
                 audited_at = COALESCE($4, audited_at), transferred_at = COALESCE($5, transferred_at), \
                 updated_at = $6, last_position = $7 WHERE id = $1 AND last_position < $7",
            )
            .bind(withdrawal)
            .bind(status)
            .bind(reason)
            .bind(audited)
            .bind(transferred)
            .bind(at)
            .bind(pos)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
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
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        for (e, event) in decode_events::<WalletEvent>(message)? {
            let e = &e;
            match event {
                WalletEvent::WalletCredited {
                    user_id,
                    amount,
                    reason,
                    balance_after,
                    at,
                } => {
                    sqlx::query(
                        "INSERT INTO user_wallets (user_id, balance_fen, updated_at, last_position) \
                         VALUES ($1,$2,$3,$4) ON CONFLICT (user_id) DO UPDATE SET \
                         balance_fen = EXCLUDED.balance_fen, updated_at = EXCLUDED.updated_at, \
                         last_position = EXCLUDED.last_position \
                         WHERE user_wallets.last_position < EXCLUDED.last_position",
                    )
                    .bind(user_id)
                    .bind(balance_after)
                    .bind(at)
                    .bind(e.position())
                    .execute(&mut *tx)
                    .await?;
                    let (kind, description, order_id) = match reason {
                        CreditReason::SessionRefund { order_id, .. } => (
                            "refund",
                            format!("订单 {order_id} 未使用时长退款"),
                            Some(order_id),
                        ),
                        CreditReason::Recharge { payment_id } => {
                            ("recharge", format!("充值（支付 {payment_id}）"), None)
                        }
                    };
                    sqlx::query(
                        "INSERT INTO wallet_transactions (stream_seq, idx, user_id, type, amount_fen, \
                         balance_fen, description, order_id, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(e.stream_sequence as i64)
                    .bind(e.index as i32)
                    .bind(user_id)
                    .bind(kind)
                    .bind(amount)
                    .bind(balance_after)
                    .bind(description)
                    .bind(order_id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        Ok(())
    }
}
