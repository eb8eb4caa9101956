//! The order expiry sweep (contract f.9) against real nats-server and Postgres: an order left
//! unpaid past the limit is cancelled by the system (status 3, not MyChat's 2), a payment that
//! lands after the read model saw the order pending wins, a recent order is left alone, and a
//! second sweep changes nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use domain::{Order, OrderCommand, OrderStatus};
use eventstore::{Actor, CommandMeta};
use projections::expiry::{expire_unpaid, ExpiryReport, ExpirySettings};
use tokio_util::sync::CancellationToken;

async fn place(env: &common::Env, id: i64, minutes_ago: i64) {
    env.bus
        .execute::<Order>(
            &id.to_string(),
            OrderCommand::Place {
                order_no: format!("EXP{id}"),
                user_id: 70 + id,
                counselor_id: 3,
                duration_minutes: 10,
                price_per_minute: 100,
                schedule_time: None,
                notes: String::new(),
                placed_at: Utc::now() - chrono::Duration::minutes(minutes_ago),
            },
            &CommandMeta::new(Actor::user(70 + id)),
        )
        .await
        .unwrap();
}

async fn read_statuses(env: &common::Env) -> Vec<(i64, i16)> {
    sqlx::query_as("SELECT id, status FROM orders ORDER BY id")
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

async fn wait_statuses(env: &common::Env, want: &[(i64, i16)]) {
    for _ in 0..100 {
        if read_statuses(env).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(read_statuses(env).await, want);
}

#[tokio::test]
async fn unpaid_orders_expire_as_cancelled_once_and_a_late_payment_wins() {
    let env = common::env().await;
    let shutdown = CancellationToken::new();
    let orders = common::start(&env, Arc::new(projections::read_models::Orders), &shutdown);
    place(&env, 1, 45).await; // unpaid for 45 minutes: expires
    place(&env, 2, 45).await; // paid below, after the read model saw it pending
    place(&env, 3, 5).await; // placed 5 minutes ago: too recent
    wait_statuses(&env, &[(1, 0), (2, 0), (3, 0)]).await;

    // Order 2 is paid while the projector is stopped: the read model still says pending.
    shutdown.cancel();
    orders.await.unwrap();
    env.bus
        .execute::<Order>(
            "2",
            OrderCommand::MarkPaid {
                payment_id: 9,
                amount: 1000,
                paid_at: Utc::now(),
            },
            &CommandMeta::new(Actor::system()),
        )
        .await
        .unwrap();

    let settings = ExpirySettings::default();
    let report = expire_unpaid(&env.pool, &env.bus, &settings, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        report,
        ExpiryReport {
            expired: 1,
            skipped: 1
        }
    );
    let status = |id: &'static str| {
        let bus = env.bus.clone();
        async move { bus.load::<Order>(id).await.unwrap().0.status }
    };
    assert_eq!(status("1").await, OrderStatus::Cancelled);
    assert_eq!(status("2").await, OrderStatus::Paid);
    assert_eq!(status("3").await, OrderStatus::Pending);

    // The read model follows (3 = cancelled, contract a.6); a second sweep changes nothing.
    let shutdown = CancellationToken::new();
    common::start(&env, Arc::new(projections::read_models::Orders), &shutdown);
    wait_statuses(&env, &[(1, 3), (2, 1), (3, 0)]).await;
    let again = expire_unpaid(&env.pool, &env.bus, &settings, Utc::now())
        .await
        .unwrap();
    assert_eq!(again, ExpiryReport::default());
    let (order, _) = env.bus.load::<Order>("1").await.unwrap();
    assert_eq!(order.status, OrderStatus::Cancelled);
    shutdown.cancel();
}
