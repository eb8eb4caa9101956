//! The other data path, measured in the same run: the plain PostgreSQL event store the stack
//! names (`cqrs-es` + `postgres-es`). `POST /api/order/create` on an axum server in the bench's
//! process answers once `CqrsFramework::execute` has returned: the same `Order` aggregate's
//! `Place` handled, its events inserted into postgres-es's `events` table in one transaction, and
//! the order's view updated through `GenericQuery` + `PostgresViewRepository` before `execute`
//! returns (read-your-writes by construction). The PostgreSQL server is durable (`fsync` and
//! `synchronous_commit` on, as a store whose table is the record must be), started for this stage
//! alone. Same client, same body as the HTTP floors.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cqrs_es::persist::GenericQuery;
use cqrs_es::{EventEnvelope, View};
use domain::{Order, OrderCommand, OrderEvent};
use postgres_es::{PostgresCqrs, PostgresViewRepository};
use serde::{Deserialize, Serialize};

use super::{drive_http, Figures, Served};

/// postgres-es's schema (its `db/init.sql`): the events table, and one table per view.
const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS events (
        aggregate_type text NOT NULL,
        aggregate_id text NOT NULL,
        sequence bigint CHECK (sequence >= 0) NOT NULL,
        event_type text NOT NULL,
        event_version text NOT NULL,
        payload json NOT NULL,
        metadata json NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
    "CREATE TABLE IF NOT EXISTS order_view (
        view_id text NOT NULL,
        version bigint CHECK (version >= 0) NOT NULL,
        payload json NOT NULL,
        PRIMARY KEY (view_id))",
];

/// An order as its view keeps it (amounts in fen).
#[derive(Debug, Default, Serialize, Deserialize)]
struct OrderView {
    order_no: String,
    user_id: i64,
    counselor_id: i64,
    amount_fen: i64,
    /// 0 placed, 3 cancelled (the only events a placed order's view sees here).
    status: i16,
}

impl View<Order> for OrderView {
    fn update(&mut self, event: &EventEnvelope<Order>) {
        match &event.payload {
            OrderEvent::OrderPlaced {
                order_no,
                user_id,
                counselor_id,
                amount,
                ..
            } => {
                self.order_no.clone_from(order_no);
                self.user_id = *user_id;
                self.counselor_id = *counselor_id;
                self.amount_fen = *amount;
                self.status = 0;
            }
            OrderEvent::OrderCancelled { .. } => self.status = 3,
            _ => {}
        }
    }
}

/// The body the bench's HTTP client posts.
#[derive(Deserialize)]
struct CreateOrder {
    counselor_id: i64,
    duration: i64,
    #[serde(default)]
    notes: String,
}

/// `POST /api/order/create` through cqrs-es + postgres-es at each of `levels` connections, `d`
/// each. Returns the figures per level, in order.
///
/// # Errors
/// When PostgreSQL cannot be started or its schema created; a failed request counts as an
/// error in the figures.
pub(super) async fn postgres_es_stage(
    levels: &[usize],
    d: Duration,
) -> anyhow::Result<Vec<(usize, Figures)>> {
    use axum::routing::post;

    let pg = testkit::Postgres::start_durable().context("starting a durable PostgreSQL")?;
    pg.ensure_database("cqrs").await?;
    let top = levels.iter().copied().max().unwrap_or(1);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(top.min(32) as u32)
        .connect(&pg.url_for("cqrs"))
        .await?;
    for statement in SCHEMA {
        sqlx::query(statement).execute(&pool).await?;
    }
    let view = PostgresViewRepository::<OrderView, Order>::new("order_view", pool.clone());
    let cqrs: Arc<PostgresCqrs<Order>> = Arc::new(postgres_es::postgres_cqrs(
        pool.clone(),
        vec![Box::new(GenericQuery::new(Arc::new(view)))],
        (),
    ));
    const ANSWER: &str = r#"{"code":200,"msg":"success","data":null}"#;
    let create = move |axum::Json(req): axum::Json<CreateOrder>| {
        let cqrs = cqrs.clone();
        async move {
            let id = uuid::Uuid::now_v7().simple().to_string();
            let command = OrderCommand::Place {
                order_no: format!("ORD{id}"),
                user_id: 7,
                counselor_id: req.counselor_id,
                duration_minutes: req.duration,
                price_per_minute: 500,
                schedule_time: None,
                notes: req.notes,
                placed_at: chrono::Utc::now(),
            };
            match cqrs.execute(&id, command).await {
                Ok(()) => (axum::http::StatusCode::OK, ANSWER),
                Err(e) => {
                    // Counted as an error in the figures; `RUST_LOG=warn` shows why.
                    tracing::warn!(error = %e, "postgres-es: execute failed");
                    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "{}")
                }
            }
        }
    };
    let app = axum::Router::new().route("/api/order/create", post(create));
    let server = Served::start(app).await?;
    let url = format!("http://{}/api/order/create", server.addr);
    let body = serde_json::json!({ "counselor_id": 1, "duration": 30, "notes": "bench" });
    let mut out = Vec::new();
    for &clients in levels {
        out.push((clients, drive_http(&url, None, &body, clients, d).await?));
    }
    server.stop().await;
    // Every answered order is in the view, as `execute` promised.
    let (events, views): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM order_view)")
            .fetch_one(&pool)
            .await?;
    anyhow::ensure!(
        events == views,
        "postgres-es stored {events} order events but {views} views"
    );
    pool.close().await;
    Ok(out)
}
