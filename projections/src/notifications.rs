//! `notifications`: the per-user notifications of contract b.1 #33–#36, produced from events so
//! that a replay rebuilds them.
//!
//! | event | recipient | `type` / `level` |
//! |---|---|---|
//! | `PaymentCaptured` | the user | `payment` / `success` |
//! | `RechargeCaptured` | the user | `payment` / `success` |
//! | `PaymentRefunded` | the user | `payment` / `info` |
//! | `OrderCancelled` | the user | `order` / `warning` |
//! | `SessionStarted` | user and counselor | `chat` / `info` |
//! | `SessionBilled` | the user | `chat` / `info` |
//! | `EarningsCredited` | the counselor's user | `chat` / `success` |
//! | `WithdrawalApproved` / `Rejected` / `Transferred` | the counselor's user | `system` |
//!
//! Each row's `source` is `<event position>:<recipient>`, unique, so an event applied twice adds
//! nothing. Every row comes from the log: the user's read / deleted marks and the notifications
//! that are not events (an application's review) live in tables no projection owns
//! (`notification_marks`, `direct_notifications`), so a rebuild or a replay changes nothing a
//! user sees.

use async_trait::async_trait;
use domain::{AccountEvent, OrderEvent, PaymentEvent, SessionEvent};
use eventstore::envelope::StoredEvent;
use serde_json::json;
use sqlx::PgConnection;

use crate::runtime::{LogMessage, Projection};

/// The notifications projector. Checkpoint name `notifications`.
pub struct Notifications;

/// Who receives a notification: a users.id, or the user behind a counselors.id.
enum To {
    User(i64),
    Counselor(i64),
}

struct Note {
    to: To,
    kind: &'static str,
    level: &'static str,
    title: String,
    content: String,
    extra: serde_json::Value,
}

fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, (fen % 100).abs())
}

fn notes_for(e: &StoredEvent) -> anyhow::Result<Vec<Note>> {
    let id = e.aggregate_id_i64().ok_or_else(|| {
        anyhow::anyhow!(
            "{} {}: aggregate id {:?} is not a number",
            e.aggregate_type,
            e.event_type,
            e.aggregate_id
        )
    })?;
    let note = |to, kind, level, title: &str, content: String, extra| Note {
        to,
        kind,
        level,
        title: title.to_string(),
        content,
        extra,
    };
    Ok(match e.aggregate_type.as_str() {
        "payment" => match crate::runtime::decode::<PaymentEvent>(e)? {
            PaymentEvent::PaymentCaptured {
                order_id,
                user_id,
                amount,
                ..
            } => vec![note(
                To::User(user_id),
                "payment",
                "success",
                "订单已支付",
                format!("订单 {order_id} 已支付 ¥{}", yuan(amount)),
                json!({ "order_id": order_id, "payment_id": id }),
            )],
            PaymentEvent::RechargeCaptured {
                user_id, amount, ..
            } => vec![note(
                To::User(user_id),
                "payment",
                "success",
                "充值成功",
                format!("余额已充值 ¥{}", yuan(amount)),
                json!({ "payment_id": id }),
            )],
            PaymentEvent::PaymentRefunded {
                order_id,
                user_id,
                amount,
                ..
            } => vec![note(
                To::User(user_id),
                "payment",
                "info",
                "退款成功",
                format!("订单 {order_id} 已退款 ¥{}", yuan(amount)),
                json!({ "order_id": order_id, "payment_id": id }),
            )],
            _ => vec![],
        },
        "order" => match crate::runtime::decode::<OrderEvent>(e)? {
            OrderEvent::OrderCancelled {
                user_id,
                refund_amount,
                ..
            } => vec![note(
                To::User(user_id),
                "order",
                "warning",
                "订单已取消",
                if refund_amount > 0 {
                    format!("订单 {id} 已取消，¥{} 将原路退回", yuan(refund_amount))
                } else {
                    format!("订单 {id} 已取消")
                },
                json!({ "order_id": id }),
            )],
            _ => vec![],
        },
        "session" => match crate::runtime::decode::<SessionEvent>(e)? {
            SessionEvent::SessionStarted {
                order_id,
                user_id,
                counselor_user_id,
                ..
            } => {
                let extra = json!({ "order_id": order_id, "session_id": id });
                vec![
                    note(
                        To::User(user_id),
                        "chat",
                        "info",
                        "咨询已开始",
                        format!("订单 {order_id} 的咨询会话已开始"),
                        extra.clone(),
                    ),
                    note(
                        To::User(counselor_user_id),
                        "chat",
                        "info",
                        "咨询已开始",
                        format!("订单 {order_id} 的咨询会话已开始"),
                        extra,
                    ),
                ]
            }
            SessionEvent::SessionBilled {
                order_id,
                user_id,
                billed_minutes,
                amount,
                refund,
                ..
            } => vec![note(
                To::User(user_id),
                "chat",
                "info",
                "咨询已结束",
                format!(
                    "本次咨询 {billed_minutes} 分钟，计费 ¥{}，退回余额 ¥{}",
                    yuan(amount),
                    yuan(refund)
                ),
                json!({ "order_id": order_id, "session_id": id }),
            )],
            _ => vec![],
        },
        "account" => match crate::runtime::decode::<AccountEvent>(e)? {
            AccountEvent::EarningsCredited {
                session_id, amount, ..
            } => vec![note(
                To::Counselor(id),
                "chat",
                "success",
                "咨询收入到账",
                format!("会话 {session_id} 收入 ¥{}", yuan(amount)),
                json!({ "session_id": session_id }),
            )],
            AccountEvent::WithdrawalApproved {
                withdrawal_id,
                amount,
                ..
            } => vec![note(
                To::Counselor(id),
                "system",
                "success",
                "提现已通过",
                format!("提现 ¥{} 已审核通过", yuan(amount)),
                json!({ "withdrawal_id": withdrawal_id }),
            )],
            AccountEvent::WithdrawalRejected {
                withdrawal_id,
                amount,
                reason,
                ..
            } => vec![note(
                To::Counselor(id),
                "system",
                "warning",
                "提现被拒绝",
                format!("提现 ¥{} 被拒绝：{reason}", yuan(amount)),
                json!({ "withdrawal_id": withdrawal_id }),
            )],
            AccountEvent::WithdrawalTransferred {
                withdrawal_id,
                amount,
                ..
            } => vec![note(
                To::Counselor(id),
                "system",
                "success",
                "提现已打款",
                format!("提现 ¥{} 已打款", yuan(amount)),
                json!({ "withdrawal_id": withdrawal_id }),
            )],
            _ => vec![],
        },
        _ => vec![],
    })
}

#[async_trait]
impl Projection for Notifications {
    fn name(&self) -> &'static str {
        "notifications"
    }
    fn tables(&self) -> Vec<&'static str> {
        vec!["notifications"]
    }
    fn subjects(&self) -> Vec<String> {
        vec![
            "ev.payment.>".into(),
            "ev.order.>".into(),
            "ev.session.>".into(),
            "ev.account.>".into(),
        ]
    }
    /// The events that notify nobody.
    fn ignores(&self) -> &'static [&'static str] {
        &[
            "OrderPlaced",
            "OrderPaid",
            "OrderServiceStarted",
            "OrderCompleted",
            "OrderRefunded",
            "OrderReviewed",
            "OrderStatusChangedByAdmin",
            "PaymentCreated",
            "OrderRefundRequested",
            "OfflinePaymentRecorded",
            "RechargePaymentCreated",
            "SessionEnded",
            "WithdrawalRequested",
        ]
    }
    /// Every notification of the batch in one `UNNEST` insert; a counselor recipient is
    /// resolved to its user in the same statement, as [`Projection::apply`] does.
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[LogMessage],
    ) -> anyhow::Result<()> {
        let mut n_ = (
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<bool>::new(),
            Vec::<&'static str>::new(),
            Vec::<&'static str>::new(),
            Vec::<String>::new(),
            Vec::<String>::new(),
            Vec::<String>::new(),
            Vec::<String>::new(),
            Vec::<chrono::DateTime<chrono::Utc>>::new(),
        );
        for message in messages {
            for e in message.events()?.iter() {
                for (n, note) in notes_for(e)?.into_iter().enumerate() {
                    let (who, counselor) = match note.to {
                        To::User(u) => (u, false),
                        To::Counselor(c) => (c, true),
                    };
                    n_.0.push(e.position() * 8 + n as i64);
                    n_.1.push(who);
                    n_.2.push(counselor);
                    n_.3.push(note.kind);
                    n_.4.push(note.level);
                    n_.5.push(note.title);
                    n_.6.push(note.content);
                    n_.7.push(note.extra.to_string());
                    n_.8.push(format!("{}:{n}", e.position()));
                    n_.9.push(e.recorded_at);
                }
            }
        }
        if n_.0.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO notifications (id, user_id, type, level, title, content, extra_data, source, created_at) \
             SELECT id, u, k, l, ti, co, ex, so, at FROM (SELECT t.*, CASE WHEN t.c \
             THEN (SELECT user_id FROM counselors WHERE counselors.id = t.who) \
             ELSE t.who END AS u FROM unnest($1::bigint[], $2::bigint[], $3::bool[], $4::text[], \
             $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[]) \
             AS t(id, who, c, k, l, ti, co, ex, so, at)) r \
             WHERE u IS NOT NULL AND (c OR u > 0) ORDER BY id \
             ON CONFLICT (source) DO NOTHING",
        )
        .bind(&n_.0)
        .bind(&n_.1)
        .bind(&n_.2)
        .bind(&n_.3)
        .bind(&n_.4)
        .bind(&n_.5)
        .bind(&n_.6)
        .bind(&n_.7)
        .bind(&n_.8)
        .bind(&n_.9)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
    /// One message: the batch path with a batch of one, so there is one way to apply.
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        self.apply_batch(tx, std::slice::from_ref(message)).await
    }
}
