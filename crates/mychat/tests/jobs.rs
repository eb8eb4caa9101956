//! Reconciliations and audit replays as admin-API jobs, over real HTTP against a real
//! nats-server, Postgres, the projectors and the process manager, with a scoped API key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::auth::KIND_ADMIN;
use api::JwtKeys;
use domain::{
    ChatSession, EndReason, Order, OrderCommand, Payment, PaymentCommand, SessionCommand,
};
use eventstore::envelope::Upcasters;
use eventstore::{ensure_streams, Actor, CommandBus, CommandMeta, StreamSettings};
use projections::{Projector, ProjectorSettings};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use testkit::{NatsServer, Postgres};
use tokio_util::sync::CancellationToken;

struct Stack {
    admin: String,
    db: PgPool,
    nats: async_nats::Client,
    bus: CommandBus,
    jwt: Arc<JwtKeys>,
    http: reqwest::Client,
    shutdown: CancellationToken,
    _nats: NatsServer,
    _pg: Postgres,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Stack {
    let nats_server = NatsServer::start().unwrap();
    let pg = Postgres::start().unwrap();
    let db = PgPool::connect(&pg.url()).await.unwrap();
    projections::MIGRATOR.run(&db).await.unwrap();
    api::seed::seed_demo(&db).await.unwrap();
    let nats = nats_server.connect().await.unwrap();
    let js = async_nats::jetstream::new(nats.clone());
    let layout = ensure_streams(&js, &StreamSettings::default())
        .await
        .unwrap();
    let chat = eventstore::ChatLog::new(js.clone(), layout, Default::default());
    let bus = CommandBus::new(js, Upcasters::default());
    let shutdown = CancellationToken::new();
    let mut all = projections::read_models();
    all.push(Arc::new(projections::process_manager::ProcessManager {
        bus: bus.clone(),
    }));
    for projection in all {
        let projector = Projector {
            pool: db.clone(),
            nats: nats.clone(),
            projection,
            settings: ProjectorSettings::default(),
        };
        tokio::spawn(projector.run(shutdown.clone()));
    }
    let jwt = Arc::new(JwtKeys::new(b"jobs-test-secret-0123456789abcdefgh", 3600));
    let state = api::AppState::new(
        api::Services::follow(
            db.clone(),
            bus.clone(),
            nats.clone(),
            chat,
            jwt.clone(),
            Arc::new(api::ApiSettings {
                public_url: "http://127.0.0.1:1".into(),
                sandbox_secret: "sandbox".into(),
                settle_timeout: Duration::from_secs(5),
                cors_origins: Vec::new(),
                business_zone: chrono_tz::Asia::Shanghai,
            }),
        )
        .await
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = api::admin::router_with(
        state,
        api::admin::AdminOptions {
            jobs: api::admin::jobs::JobSettings {
                stale_after_seconds: 3,
                ..Default::default()
            },
        },
    );
    let token = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await
            .unwrap();
    });
    Stack {
        admin: format!("http://{addr}"),
        db,
        nats,
        bus,
        jwt,
        http: reqwest::Client::new(),
        shutdown,
        _nats: nats_server,
        _pg: pg,
    }
}

fn meta() -> CommandMeta {
    CommandMeta::new(Actor::system())
}

/// Order `id` placed, paid, chatted 3 of 10 minutes and ended (the process manager bills it).
async fn order_story(bus: &CommandBus, id: i64) {
    let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()
        + chrono::Duration::minutes(id * 200);
    let price = 100;
    bus.execute::<Order>(
        &id.to_string(),
        OrderCommand::Place {
            order_no: format!("ORD{id}"),
            user_id: 1,
            counselor_id: 1,
            duration_minutes: 10,
            price_per_minute: price,
            schedule_time: None,
            notes: String::new(),
            placed_at: t,
        },
        &meta(),
    )
    .await
    .unwrap();
    bus.execute::<Payment>(
        &id.to_string(),
        PaymentCommand::Create {
            payment_no: format!("PAY{id}"),
            order_id: id,
            user_id: 1,
            amount: 10 * price,
            method: "sandbox".into(),
            trade_type: "NATIVE".into(),
            created_at: t,
        },
        &meta(),
    )
    .await
    .unwrap();
    bus.execute::<Payment>(
        &id.to_string(),
        PaymentCommand::Capture {
            provider_txn_id: format!("TXN{id}"),
            amount: 10 * price,
            captured_at: t + chrono::Duration::seconds(5),
        },
        &meta(),
    )
    .await
    .unwrap();
    let start = t + chrono::Duration::minutes(1);
    bus.execute::<ChatSession>(
        &id.to_string(),
        SessionCommand::Start {
            order_id: id,
            user_id: 1,
            counselor_id: 1,
            counselor_user_id: 1001,
            price_per_minute: price,
            prepaid_minutes: 10,
            started_at: start,
        },
        &meta(),
    )
    .await
    .unwrap();
    bus.execute::<ChatSession>(
        &id.to_string(),
        SessionCommand::End {
            ended_by: 1,
            reason: EndReason::Participant,
            ended_at: start + chrono::Duration::seconds(3 * 60 - 30),
        },
        &meta(),
    )
    .await
    .unwrap();
}

impl Stack {
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.admin))
            .header("x-api-key", key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, text) = self.call(method, path, key, body).await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(json!({ "raw": text })),
        )
    }

    async fn key(&self, scopes: &[&str]) -> String {
        let token = self.jwt.issue(1, "admin", KIND_ADMIN).unwrap();
        let resp = self
            .http
            .post(format!("{}/api/admin/api-keys", self.admin))
            .bearer_auth(token)
            .json(&json!({"name": "jobs", "scopes": scopes}))
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        body["data"]["key"].as_str().unwrap().to_string()
    }

    async fn head(&self) -> u64 {
        let mut s = self
            .bus
            .jetstream()
            .get_stream(eventstore::EVENTS_STREAM)
            .await
            .unwrap();
        s.info().await.unwrap().state.last_sequence
    }

    /// Polls job `path` until it is done (or failed); its `data`.
    async fn finished(&self, path: &str, key: &str) -> Value {
        let start = Instant::now();
        loop {
            let (status, body) = self.json(Method::GET, path, key, None).await;
            assert_eq!(status, 200, "{body}");
            let state = body["data"]["state"].as_str().unwrap().to_string();
            if state == "done" || state == "failed" {
                return body["data"].clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{path} still {state}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn jobs_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM admin_jobs")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Waits until the projections have applied the whole log.
    async fn caught_up(&self) {
        let start = Instant::now();
        loop {
            let statuses =
                projections::status::status(&self.db, &self.nats, &projections::read_models())
                    .await
                    .unwrap();
            if statuses.iter().all(|s| s.lag_events == 0) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "projections caught up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn a_reconciliation_job_equals_the_cli_and_names_a_one_fen_change() {
    let s = start().await;
    order_story(&s.bus, 1).await;
    order_story(&s.bus, 2).await;
    let key = s.key(&["finance:view", "finance:reconcile"]).await;
    // Let the process manager's follow-ups land before the period is fixed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.caught_up().await;
    let to = s.head().await;

    // Bad input: 422 naming the field; nothing queued, nothing appended.
    let (jobs, head) = (s.jobs_count().await, s.head().await);
    for (body, field) in [
        (json!({"from": "10", "to": "3"}), "from"),
        (
            json!({"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"}),
            "from",
        ),
        (json!({"to": "yesterday"}), "to"),
        // Before 1678: no JetStream start time (a 500 before, found by schemathesis).
        (
            json!({"from": "1260290007", "to": "0952-10-13T20:28:35Z"}),
            "to",
        ),
    ] {
        let (status, b) = s
            .json(
                Method::POST,
                "/api/admin/finance/reconciliations",
                &key,
                Some(body),
            )
            .await;
        assert_eq!(status, 422, "{b}");
        assert_eq!(b["errors"][0]["field"], field, "{b}");
    }
    assert_eq!(s.jobs_count().await, jobs);
    assert_eq!(s.head().await, head);

    // The job's report is the CLI's JSON for the same range.
    let (status, b) = s
        .json(
            Method::POST,
            "/api/admin/finance/reconciliations",
            &key,
            Some(json!({"to": to.to_string()})),
        )
        .await;
    assert_eq!(status, 202, "{b}");
    assert_eq!(b["data"]["state"], "queued");
    let id = b["data"]["id"].as_i64().unwrap();
    let job = s
        .finished(&format!("/api/admin/finance/reconciliations/{id}"), &key)
        .await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["progress"]["done"], job["progress"]["total"]);
    assert_eq!(job["progress"]["total"], to);
    let cli = projections::reconcile::reconcile(
        &s.db,
        &s.nats,
        &projections::reconcile::ReconcileOptions {
            to: Some(projections::rebuild::AuditPoint::Sequence(to)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut expected = serde_json::to_value(&cli).unwrap();
    expected["ok"] = json!(cli.ok());
    assert_eq!(job["report"], expected);
    assert_eq!(job["report"]["ok"], true, "{}", job["report"]);
    assert_eq!(job["report"]["matched"]["payments"], 2);

    // A one-fen change in a read model shows in the next job's differences, and in its CSV.
    sqlx::query(
        "UPDATE counselor_accounts SET balance_fen = balance_fen + 1 WHERE counselor_id = 1",
    )
    .execute(&s.db)
    .await
    .unwrap();
    let (_, b) = s
        .json(
            Method::POST,
            "/api/admin/finance/reconciliations",
            &key,
            Some(json!({"to": to.to_string()})),
        )
        .await;
    let id = b["data"]["id"].as_i64().unwrap();
    let job = s
        .finished(&format!("/api/admin/finance/reconciliations/{id}"), &key)
        .await;
    assert_eq!(job["report"]["ok"], false);
    let differences = job["report"]["differences"].as_array().unwrap();
    assert!(
        differences
            .iter()
            .any(|d| d.as_str().unwrap().contains("counselor_accounts")),
        "{differences:#?}"
    );
    let (status, csv) = s
        .call(
            Method::GET,
            &format!("/api/admin/finance/reconciliations/{id}?format=csv"),
            &key,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(csv.starts_with("kind,text\r\n"), "{csv}");
    assert!(csv.contains("counselor_accounts"), "{csv}");

    // Outside its scopes, and unknown jobs.
    let (status, _) = s
        .json(
            Method::POST,
            "/api/admin/audit/replays",
            &key,
            Some(json!({"at": "1"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = s
        .json(
            Method::GET,
            "/api/admin/finance/reconciliations/999999",
            &key,
            None,
        )
        .await;
    assert_eq!(status, 404);

    // A job cut off by a crash (a runner that stopped beating) shows failed.
    let orphan: i64 = sqlx::query_scalar(
        "INSERT INTO admin_jobs (kind, state, params, created_by, runner, started_at, heartbeat_at) \
         VALUES ('reconcile', 'running', '{}', 1, 'gone', now() - interval '1 minute', \
         now() - interval '1 minute') RETURNING id",
    )
    .fetch_one(&s.db)
    .await
    .unwrap();
    let job = s
        .finished(
            &format!("/api/admin/finance/reconciliations/{orphan}"),
            &key,
        )
        .await;
    assert_eq!(job["state"], "failed");
    assert!(job["error"].as_str().unwrap().contains("cut off"), "{job}");
}

#[tokio::test]
async fn a_replay_job_at_a_past_sequence_diffs_against_live_by_what_changed_since() {
    let s = start().await;
    order_story(&s.bus, 1).await;
    let key = s.key(&["audit:replay"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.caught_up().await;
    let then = s.head().await;
    order_story(&s.bus, 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.caught_up().await;
    let now = s.head().await;

    // Bad input.
    let jobs = s.jobs_count().await;
    for (body, field) in [
        (json!({"at": "soon"}), "at"),
        (json!({"at": (now + 100).to_string()}), "at"),
        (json!({"at": "1", "projections": ["nope"]}), "projections"),
    ] {
        let (status, b) = s
            .json(Method::POST, "/api/admin/audit/replays", &key, Some(body))
            .await;
        assert_eq!(status, 422, "{b}");
        assert_eq!(b["errors"][0]["field"], field, "{b}");
    }
    assert_eq!(s.jobs_count().await, jobs);

    let replay = |at: u64| {
        let s = &s;
        let key = key.clone();
        async move {
            let (status, b) = s
                .json(
                    Method::POST,
                    "/api/admin/audit/replays",
                    &key,
                    Some(json!({"at": at.to_string(), "projections": ["orders", "payments"]})),
                )
                .await;
            assert_eq!(status, 202, "{b}");
            let id = b["data"]["id"].as_i64().unwrap();
            let job = s
                .finished(&format!("/api/admin/audit/replays/{id}"), &key)
                .await;
            assert_eq!(job["state"], "done", "{job}");
            (id, job)
        }
    };
    let (past, job) = replay(then).await;
    assert_eq!(job["schema"], format!("audit_seq{then}"));
    assert_eq!(job["report"]["events_upto"], then);
    assert_eq!(job["progress"]["done"], job["progress"]["total"]);

    // Against live: exactly order 2 and its payment, which came after.
    let (status, b) = s
        .json(
            Method::GET,
            &format!("/api/admin/audit/replays/{past}/diff"),
            &key,
            None,
        )
        .await;
    assert_eq!(status, 200, "{b}");
    let list = b["data"]["list"].as_array().unwrap();
    let mut rows: Vec<(String, String, bool)> = list
        .iter()
        .map(|d| {
            (
                d["table"].as_str().unwrap().to_string(),
                d["key"].as_str().unwrap().to_string(),
                d["left"].is_null(),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        vec![
            ("orders".to_string(), "id=2".to_string(), true),
            ("payments".to_string(), "id=2".to_string(), true),
        ],
        "{b}"
    );
    assert_eq!(b["data"]["total"], 2);
    // Paged.
    let (_, b) = s
        .json(
            Method::GET,
            &format!("/api/admin/audit/replays/{past}/diff?page=2&page_size=1"),
            &key,
            None,
        )
        .await;
    assert_eq!(b["data"]["list"].as_array().unwrap().len(), 1);
    assert_eq!(b["data"]["total"], 2);

    // At the head it equals live; two replays compare with each other.
    let (head_id, _) = replay(now).await;
    let (_, b) = s
        .json(
            Method::GET,
            &format!("/api/admin/audit/replays/{head_id}/diff?against=live"),
            &key,
            None,
        )
        .await;
    assert_eq!(b["data"]["total"], 0, "{b}");
    let (_, b) = s
        .json(
            Method::GET,
            &format!("/api/admin/audit/replays/{past}/diff?against={head_id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(b["data"]["total"], 2, "{b}");
    let (status, b) = s
        .json(
            Method::GET,
            &format!("/api/admin/audit/replays/{past}/diff?against=yesterday"),
            &key,
            None,
        )
        .await;
    assert_eq!(status, 422, "{b}");
}
