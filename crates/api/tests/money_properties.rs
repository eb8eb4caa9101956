//! Money cannot appear from nowhere: a property test over the real user and admin APIs (served
//! in process on free ports), a real nats-server and PostgreSQL, every projector and the process
//! manager.
//!
//! Each case drives a random sequence of user commands (place an order, create a payment, cancel,
//! refund, start and end the chat), provider commands (signed sandbox notifications: the right
//! amount, a wrong one, a second transaction), administrator commands (status changes 0–4, paid
//! with or without the offline payment that paid it) and expiry commands, against orders of two
//! users with two counselors. Once the process manager is quiet it asserts that
//!
//! - no counselor was ever credited more than was captured for their orders and not refunded;
//! - no ledger account ever left its normal side (the running balance of every account, event
//!   by event in log order, stays ≥ 0 on its normal side), and the postings sum to zero;
//! - `finance reconcile` finds nothing.

use std::sync::Arc;
use std::time::Duration;

use eventstore::envelope::Upcasters;
use eventstore::{ensure_streams, Actor, CommandBus, CommandMeta, StreamSettings};
use projections::{Projector, ProjectorSettings};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use testkit::{NatsServer, Postgres};
use tokio_util::sync::CancellationToken;

const SANDBOX_SECRET: &str = "money-properties-sandbox";

struct App {
    api: String,
    admin: String,
    http: reqwest::Client,
    pool: sqlx::PgPool,
    bus: CommandBus,
    nats: async_nats::Client,
    stop: CancellationToken,
    /// `METHOD route status` → how many times (printed with `--nocapture`: what the cases did).
    outcomes: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
    _nats: NatsServer,
    _pg: Postgres,
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(app: axum::Router, stop: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .unwrap();
    });
    url
}

async fn start() -> App {
    let nats = NatsServer::start().unwrap();
    let pg = Postgres::start().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .connect(&pg.url())
        .await
        .unwrap();
    projections::MIGRATOR.run(&pool).await.unwrap();
    api::seed::seed_demo(&pool).await.unwrap();
    let client = nats.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let layout = ensure_streams(&js, &StreamSettings::default())
        .await
        .unwrap();
    let chat = eventstore::ChatLog::new(js.clone(), layout, Default::default());
    let bus = CommandBus::new(js, Upcasters::default());
    let stop = CancellationToken::new();
    let mut all = projections::read_models();
    all.push(Arc::new(projections::process_manager::ProcessManager {
        bus: bus.clone(),
    }));
    for projection in all {
        let projector = Projector {
            pool: pool.clone(),
            nats: client.clone(),
            projection,
            settings: ProjectorSettings::default(),
        };
        tokio::spawn(projector.run(stop.clone()));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let state = api::AppState::new(
        api::Services::follow(
            pool.clone(),
            bus.clone(),
            client.clone(),
            chat,
            Arc::new(api::JwtKeys::new(
                b"money-properties-jwt-secret-0123456789",
                3600,
            )),
            Arc::new(api::ApiSettings {
                public_url: api_url.clone(),
                sandbox_secret: SANDBOX_SECRET.into(),
                settle_timeout: Duration::from_secs(5),
                cors_origins: Vec::new(),
                business_zone: chrono_tz::Asia::Shanghai,
            }),
        )
        .await
        .unwrap(),
    );
    let uploads = tempfile::tempdir().unwrap();
    let mut config = api::UserApiConfig::new(uploads.path().to_path_buf());
    config.sandbox_payments = true;
    let user_app = api::user_router_with(state.clone(), config);
    // The user API on the port its public URL names (the sandbox posts to it).
    let listener = tokio::net::TcpListener::bind(api_url.trim_start_matches("http://"))
        .await
        .unwrap();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(
                listener,
                user_app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .unwrap();
        });
    }
    let admin = serve(api::admin_router(state), stop.clone()).await;
    std::mem::forget(uploads);
    App {
        api: api_url,
        admin,
        http: reqwest::Client::new(),
        pool,
        bus,
        nats: client,
        stop,
        outcomes: Default::default(),
        _nats: nats,
        _pg: pg,
    }
}

impl App {
    async fn call(
        &self,
        base: &str,
        method: &str,
        path: &str,
        token: &str,
        body: Value,
    ) -> (u16, Value) {
        let req = self
            .http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body);
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert!(status < 500, "{method} {path} {body}: {status} {text}");
        let route: String = path
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        *self
            .outcomes
            .lock()
            .unwrap()
            .entry(format!(
                "{method} {route} {status} {}",
                serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|b| b["msg"]
                        .as_str()
                        .filter(|_| status >= 400)
                        .map(|m| m.chars().take(50).collect::<String>()))
                    .unwrap_or_default()
            ))
            .or_default() += 1;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn user(&self, name: &str) -> (i64, String) {
        let (s, b) = self
            .call(
                &self.api,
                "POST",
                "/api/register",
                "",
                json!({"username": name, "password": "secret123"}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = self
            .call(
                &self.api,
                "POST",
                "/api/login",
                "",
                json!({"username": name, "password": "secret123"}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        (
            b["data"]["user"]["id"].as_i64().unwrap(),
            b["data"]["token"].as_str().unwrap().to_string(),
        )
    }

    async fn counselor(&self, name: &str) -> (i64, String) {
        let (uid, token) = self.user(name).await;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO counselors (user_id, name, price_fen) VALUES ($1, $2, 37) RETURNING id",
        )
        .bind(uid)
        .bind(name)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        (id, token)
    }

    async fn admin_token(&self) -> String {
        let (s, b) = self
            .call(
                &self.admin,
                "POST",
                "/api/admin2/login",
                "",
                json!({"username": "admin", "password": "admin123"}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b["data"]["token"].as_str().unwrap().to_string()
    }

    /// Posts a sandbox provider notification, signed as the sandbox provider signs.
    async fn notify(&self, payment_no: &str, txn: &str, amount: i64) -> u16 {
        let body = serde_json::to_vec(&json!({
            "payment_no": payment_no, "transaction_id": txn, "amount": amount, "trade_state": "SUCCESS",
        }))
        .unwrap();
        let ts = chrono::Utc::now().timestamp().to_string();
        let sig = api::user::payments::checkout::sandbox_sign(SANDBOX_SECRET, &ts, "n", &body);
        self.http
            .post(format!("{}/api/payment/sandbox/callback", self.api))
            .header("content-type", "application/json")
            .header("sandbox-timestamp", ts)
            .header("sandbox-nonce", "n")
            .header("sandbox-signature", sig)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Waits until the log stops growing with the ledger (which reads every aggregate type)
    /// at its head and the process manager still: three polls 100 ms apart with nothing
    /// moving. (`projections::status` is exact but creates consumers; polled this often it
    /// would exhaust the stream's consumer limit.)
    async fn quiet(&self) {
        let js = self.bus.jetstream();
        let mut last = (u64::MAX, -1i64);
        let mut calm = 0;
        for _ in 0..600 {
            let head = js
                .get_stream(eventstore::EVENTS_STREAM)
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .state
                .last_sequence;
            let (ledger, pm): (Option<i64>, Option<i64>) = sqlx::query_as(
                "SELECT (SELECT position FROM projection_checkpoints WHERE name = 'ledger'), \
                 (SELECT position FROM projection_checkpoints WHERE name = 'process_manager')",
            )
            .fetch_one(&self.pool)
            .await
            .unwrap();
            let now = (head, pm.unwrap_or(0));
            if ledger.unwrap_or(0) as u64 >= head && now == last {
                calm += 1;
                if calm == 3 {
                    return;
                }
            } else {
                calm = 0;
            }
            last = now;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the projections did not catch up");
    }

    /// Replays every read model message by message (each message its own batch) into a fresh
    /// schema and diffs it against the live, batched read models.
    async fn one_by_one_diff(&self) -> Vec<String> {
        let models: Vec<Arc<dyn projections::Projection>> = projections::read_models()
            .into_iter()
            .map(|p| Arc::new(OneByOne(p)) as Arc<dyn projections::Projection>)
            .collect();
        sqlx::query("DROP SCHEMA IF EXISTS onebyone CASCADE")
            .execute(&self.pool)
            .await
            .unwrap();
        projections::runtime::prepare_schema(&self.pool, "onebyone", &models, false)
            .await
            .unwrap();
        for p in &models {
            projections::rebuild::replay_into(
                &self.pool,
                &self.nats,
                p.as_ref(),
                "onebyone",
                None,
                &projections::rebuild::LogProgress,
            )
            .await
            .unwrap();
        }
        projections::rebuild::diff(&self.pool, "onebyone", "public", &models)
            .await
            .unwrap()
            .iter()
            .map(|d| d.to_string())
            .collect()
    }
}

/// A read model applied strictly one message at a time: everything delegates to the read
/// model except `apply_batch`, whose default runs [`projections::Projection::apply`] on each
/// message.
struct OneByOne(Arc<dyn projections::Projection>);

#[async_trait::async_trait]
impl projections::Projection for OneByOne {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn stream(&self) -> &'static str {
        self.0.stream()
    }
    fn subjects(&self) -> Vec<String> {
        self.0.subjects()
    }
    fn version(&self) -> i32 {
        self.0.version()
    }
    fn tables(&self) -> Vec<&'static str> {
        self.0.tables()
    }
    async fn apply(
        &self,
        tx: &mut sqlx::PgConnection,
        message: &projections::LogMessage,
    ) -> anyhow::Result<()> {
        self.0.apply(tx, message).await
    }
}

/// One command of a case (with, beside it in the case, whether to wait for the process
/// manager before the next). Indices pick among the last orders and payments made.
#[derive(Debug, Clone)]
enum Step {
    Place {
        user: usize,
        counselor: usize,
        minutes: i64,
    },
    Pay {
        order: usize,
    },
    /// The happy path's payment: created, and the provider confirms it at once.
    PayNow {
        order: usize,
    },
    Notify {
        payment: usize,
        txn: u8,
        wrong_amount: bool,
    },
    Cancel {
        order: usize,
    },
    Refund {
        order: usize,
        percent: i64,
    },
    StartChat {
        order: usize,
        by_counselor: bool,
    },
    EndChat {
        order: usize,
    },
    Admin {
        order: usize,
        status: i64,
        with_payment: bool,
        exact: bool,
    },
    Expire {
        order: usize,
    },
}

/// Indices pick among the last few orders and payments, so that a case tells a few stories
/// with many turns each rather than many stories of one step.
fn step() -> impl Strategy<Value = Step> {
    let pick = 0usize..3;
    prop_oneof![
        1 => (0usize..2, 0usize..2, 10i64..=20).prop_map(|(user, counselor, minutes)| Step::Place { user, counselor, minutes }),
        2 => pick.clone().prop_map(|order| Step::Pay { order }),
        4 => pick.clone().prop_map(|order| Step::PayNow { order }),
        4 => (pick.clone(), 0u8..2, prop::bool::weighted(0.15)).prop_map(|(payment, txn, wrong_amount)| Step::Notify { payment, txn, wrong_amount }),
        1 => pick.clone().prop_map(|order| Step::Cancel { order }),
        4 => (pick.clone(), prop_oneof![Just(100i64), 1i64..=100]).prop_map(|(order, percent)| Step::Refund { order, percent }),
        4 => (pick.clone(), any::<bool>()).prop_map(|(order, by_counselor)| Step::StartChat { order, by_counselor }),
        2 => pick.clone().prop_map(|order| Step::EndChat { order }),
        2 => (pick.clone(), 0i64..=4, any::<bool>(), prop::bool::weighted(0.8)).prop_map(|(order, status, with_payment, exact)| Step::Admin { order, status, with_payment, exact }),
        1 => pick.prop_map(|order| Step::Expire { order }),
    ]
}

struct Order {
    id: i64,
    token: String,
    counselor_token: String,
    amount: i64,
}

#[test]
fn no_counselor_is_credited_more_than_was_captured_and_no_account_leaves_its_normal_side() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(start());
    let (users, counselors, admin) = rt.block_on(async {
        let users = vec![app.user("prop-u1").await, app.user("prop-u2").await];
        let counselors = vec![
            app.counselor("prop-c1").await,
            app.counselor("prop-c2").await,
        ];
        (users, counselors, app.admin_token().await)
    });
    let mut runner = TestRunner::new(Config {
        cases: 16,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec((step(), prop::bool::weighted(0.7)), 20..50), |steps| {
            rt.block_on(async {
                let mut orders: Vec<Order> = Vec::new();
                let mut payments: Vec<(String, i64)> = Vec::new();
                for (s, settle) in &steps {
                    let pick = |i: usize| {
                        (!orders.is_empty()).then(|| &orders[orders.len() - 1 - i % orders.len().min(3)])
                    };
                    match s.clone() {
                        Step::Place { user, counselor, minutes } => {
                            let (cid, ctoken) = &counselors[counselor];
                            let token = users[user].1.clone();
                            let (st, b) = app
                                .call(&app.api, "POST", "/api/order/create", &token, json!({"counselor_id": cid, "duration": minutes, "schedule_time": "2026-12-01"}))
                                .await;
                            assert_eq!(st, 200, "{b}");
                            orders.push(Order {
                                id: b["data"]["order_id"].as_i64().unwrap(),
                                token,
                                counselor_token: ctoken.clone(),
                                amount: minutes * 37,
                            });
                        }
                        Step::Pay { order } => {
                            let Some(o) = pick(order) else { continue };
                            let (st, b) = app
                                .call(&app.api, "POST", "/api/payment/create", &o.token, json!({"order_id": o.id, "payment_method": "sandbox"}))
                                .await;
                            if st == 200 {
                                payments.push((b["data"]["payment_no"].as_str().unwrap().to_string(), o.amount));
                            }
                        }
                        Step::PayNow { order } => {
                            let Some(o) = pick(order) else { continue };
                            let (st, b) = app
                                .call(
                                    &app.api,
                                    "POST",
                                    "/api/payment/create",
                                    &o.token,
                                    json!({"order_id": o.id, "payment_method": "sandbox"}),
                                )
                                .await;
                            if st == 200 {
                                let no = b["data"]["payment_no"].as_str().unwrap().to_string();
                                let status = app.notify(&no, &format!("T-{no}"), o.amount).await;
                                assert!(status < 500, "notify: {status}");
                                payments.push((no, o.amount));
                            }
                        }
                        Step::Notify { payment, txn, wrong_amount } => {
                            if payments.is_empty() {
                                continue;
                            }
                            let (no, amount) =
                                &payments[payments.len() - 1 - payment % payments.len().min(3)];
                            let amount = if wrong_amount { amount + 1 } else { *amount };
                            let st = app.notify(no, &format!("T{txn}-{no}"), amount).await;
                            assert!(st < 500, "notify: {st}");
                        }
                        Step::Cancel { order } => {
                            let Some(o) = pick(order) else { continue };
                            app.call(&app.api, "POST", &format!("/api/order/{}/cancel", o.id), &o.token, json!({})).await;
                        }
                        Step::Refund { order, percent } => {
                            let Some(o) = pick(order) else { continue };
                            let payment: Option<i64> = sqlx::query_scalar("SELECT payment_id FROM orders WHERE id = $1")
                                .bind(o.id)
                                .fetch_one(&app.pool)
                                .await
                                .unwrap();
                            let Some(payment) = payment else { continue };
                            let fen = (o.amount * percent / 100).max(1);
                            app.call(&app.api, "POST", "/api/payment/refund", &o.token, json!({"payment_id": payment, "refund_amount": fen as f64 / 100.0})).await;
                        }
                        Step::StartChat { order, by_counselor } => {
                            let Some(o) = pick(order) else { continue };
                            let token = if by_counselor { &o.counselor_token } else { &o.token };
                            app.call(&app.api, "POST", &format!("/api/chat/start/{}", o.id), token, json!({})).await;
                        }
                        Step::EndChat { order } => {
                            let Some(o) = pick(order) else { continue };
                            app.call(&app.api, "POST", &format!("/api/chat/end/{}", o.id), &o.token, json!({})).await;
                        }
                        Step::Admin { order, status, with_payment, exact } => {
                            let Some(o) = pick(order) else { continue };
                            let mut body = json!({"status": status});
                            if with_payment {
                                let amount = if exact { o.amount } else { o.amount + 100 };
                                body["payment_method"] = json!("bank_transfer");
                                body["amount"] = json!(amount as f64 / 100.0);
                                body["note"] = json!("received at the front desk");
                            }
                            app.call(&app.admin, "PUT", &format!("/api/admin/orders/{}/status", o.id), &admin, body).await;
                        }
                        Step::Expire { order } => {
                            let Some(o) = pick(order) else { continue };
                            let mut meta = CommandMeta::new(Actor::system());
                            meta.command_id = format!("expire:{}", o.id);
                            let _ = app
                                .bus
                                .execute::<domain::Order>(
                                    &o.id.to_string(),
                                    domain::OrderCommand::Expire { reason: "unpaid".into(), expired_at: chrono::Utc::now() },
                                    &meta,
                                )
                                .await;
                        }
                    }
                    // Mostly the next command sees what the process manager made of this one;
                    // sometimes it races it.
                    if *settle {
                        app.quiet().await;
                    }
                }
                // End every session still running, so that every start is billed.
                for o in &orders {
                    app.call(&app.api, "POST", &format!("/api/chat/end/{}", o.id), &o.token, json!({})).await;
                }
                app.quiet().await;

                // No counselor credited more than was captured (and kept) for their orders.
                let over: Vec<(i64, i64, i64)> = sqlx::query_as(
                    "WITH credited AS (SELECT substring(account FROM 'counselor:(\\d+):payable')::bigint AS c, \
                       -sum(amount_fen)::bigint AS fen FROM ledger_postings \
                       WHERE event_type = 'EarningsCredited' AND account LIKE 'counselor:%:payable' GROUP BY 1), \
                     kept AS (SELECT o.counselor_id AS c, sum(p.amount_fen - p.refunded_fen)::bigint AS fen \
                       FROM payments p JOIN orders o ON o.id = p.order_id WHERE p.status IN (1, 3) GROUP BY 1) \
                     SELECT credited.c, credited.fen, COALESCE(kept.fen, 0) FROM credited LEFT JOIN kept USING (c) \
                     WHERE credited.fen > COALESCE(kept.fen, 0)",
                )
                .fetch_all(&app.pool)
                .await
                .unwrap();
                assert!(over.is_empty(), "counselors credited more than captured: {over:?}\n{steps:#?}");
                // No account ever leaves its normal side, event by event in log order.
                let negative: Vec<(String, i64, i64)> = sqlx::query_as(
                    "WITH per_event AS (SELECT account, stream_seq, idx, sum(amount_fen) AS fen \
                       FROM ledger_postings GROUP BY 1, 2, 3), \
                     running AS (SELECT account, stream_seq, sum(fen) OVER (PARTITION BY account ORDER BY stream_seq, idx) AS signed \
                       FROM per_event) \
                     SELECT account, stream_seq, signed::bigint FROM running \
                     WHERE CASE WHEN account LIKE 'provider:%' THEN signed ELSE -signed END < 0 LIMIT 5",
                )
                .fetch_all(&app.pool)
                .await
                .unwrap();
                assert!(negative.is_empty(), "accounts off their normal side: {negative:?}\n{steps:#?}");
                let total: Option<i64> = sqlx::query_scalar("SELECT sum(amount_fen)::bigint FROM ledger_postings")
                    .fetch_one(&app.pool)
                    .await
                    .unwrap();
                assert_eq!(total.unwrap_or(0), 0);
                let report = projections::reconcile::reconcile(
                    &app.pool,
                    &app.nats,
                    &projections::reconcile::ReconcileOptions::default(),
                )
                .await
                .unwrap();
                assert!(report.ok(), "{}\n{steps:#?}", projections::reconcile::render(&report));
                // The read models applied message by message equal the batched live ones.
                let diffs = app.one_by_one_diff().await;
                assert!(diffs.is_empty(), "{diffs:#?}\n{steps:#?}");
            });
            Ok(())
        })
        .unwrap();
    eprintln!("{:#?}", app.outcomes.lock().unwrap());
}
