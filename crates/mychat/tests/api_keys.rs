//! Scoped API keys over real HTTP against a real nats-server, Postgres and projectors: two admin
//! API nodes (each with its own NATS connection and key cache) on free ports.
//!
//! - `a_scoped_key_reads_what_it_holds_and_is_named_in_the_audit_log`
//! - `revocation_expiry_and_rotation_hold_on_every_node`
//! - `bad_keys_get_401_floods_get_429_and_refusals_change_nothing`

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::auth::KIND_ADMIN;
use api::JwtKeys;
use eventstore::envelope::Upcasters;
use eventstore::{ensure_streams, CommandBus, StreamSettings};
use projections::{Projector, ProjectorSettings};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use testkit::{NatsServer, Postgres};
use tokio_util::sync::CancellationToken;

struct Stack {
    /// Two admin API nodes.
    nodes: [String; 2],
    db: PgPool,
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

/// An admin API node on its own NATS connection.
async fn node(
    nats_server: &NatsServer,
    db: &PgPool,
    jwt: &Arc<JwtKeys>,
    shutdown: &CancellationToken,
) -> (String, CommandBus) {
    let nats = nats_server.connect().await.unwrap();
    let js = async_nats::jetstream::new(nats.clone());
    let layout = ensure_streams(&js, &StreamSettings::default())
        .await
        .unwrap();
    let chat = eventstore::ChatLog::new(js.clone(), layout, Default::default());
    let bus = CommandBus::new(js, Upcasters::default());
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
    let app = api::admin_router(state);
    let token = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await
            .unwrap();
    });
    (format!("http://{addr}"), bus)
}

async fn start() -> Stack {
    let nats_server = NatsServer::start().unwrap();
    let pg = Postgres::start().unwrap();
    let db = PgPool::connect(&pg.url()).await.unwrap();
    projections::MIGRATOR.run(&db).await.unwrap();
    api::seed::seed_demo(&db).await.unwrap();
    let shutdown = CancellationToken::new();
    let nats = nats_server.connect().await.unwrap();
    for projection in projections::read_models() {
        let projector = Projector {
            pool: db.clone(),
            nats: nats.clone(),
            projection,
            settings: ProjectorSettings::default(),
        };
        tokio::spawn(projector.run(shutdown.clone()));
    }
    let jwt = Arc::new(JwtKeys::new(b"api-keys-test-secret-0123456789abcdef", 3600));
    let (a, bus) = node(&nats_server, &db, &jwt, &shutdown).await;
    let (b, _) = node(&nats_server, &db, &jwt, &shutdown).await;
    Stack {
        nodes: [a, b],
        db,
        bus,
        jwt,
        http: reqwest::Client::new(),
        shutdown,
        _nats: nats_server,
        _pg: pg,
    }
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    /// `Authorization: Bearer <token>` (a JWT or a key).
    Bearer(&'a str),
    /// `X-API-Key: <key>`.
    Key(&'a str),
}

struct Answer {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: Value,
}

impl Stack {
    async fn call(
        &self,
        node: usize,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.nodes[node]));
        match auth {
            Auth::None => {}
            Auth::Bearer(t) => req = req.bearer_auth(t),
            Auth::Key(k) => req = req.header("x-api-key", k),
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type").unwrap_or_default();
        let retry_after = header("retry-after");
        let text = resp.text().await.unwrap();
        Answer {
            status,
            content_type,
            retry_after,
            body: serde_json::from_str(&text).unwrap_or(json!({ "raw": text })),
        }
    }

    /// The seeded super administrator's token.
    fn super_token(&self) -> String {
        self.jwt.issue(1, "admin", KIND_ADMIN).unwrap()
    }

    /// Issues a key through node 0 as `token`; answers `(id, key)`.
    async fn issue(&self, token: &str, body: Value) -> (i64, String) {
        let a = self
            .call(
                0,
                Method::POST,
                "/api/admin/api-keys",
                Auth::Bearer(token),
                Some(body),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        (
            a.body["data"]["id"].as_i64().unwrap(),
            a.body["data"]["key"].as_str().unwrap().to_string(),
        )
    }

    async fn events_head(&self) -> u64 {
        let mut s = self
            .bus
            .jetstream()
            .get_stream(eventstore::EVENTS_STREAM)
            .await
            .unwrap();
        s.info().await.unwrap().state.last_sequence
    }

    /// Polls `node` with `key` on a finance read until it answers `status`; the time it took.
    async fn until_status(&self, node: usize, key: &str, status: u16, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let a = self
                .call(
                    node,
                    Method::GET,
                    "/api/admin/finance/stats",
                    Auth::Key(key),
                    None,
                )
                .await;
            if a.status == status {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "node {node} still answers {} after {limit:?}: {}",
                a.status,
                a.body
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn assert_problem(a: &Answer, status: u16, what: &str) {
    assert_eq!(a.status, status, "{what}: {}", a.body);
    assert_eq!(a.content_type, "application/problem+json", "{what}");
    assert_eq!(a.body["status"], status, "{what}: {}", a.body);
    assert_eq!(a.body["code"], status, "{what}: {}", a.body);
}

#[tokio::test]
async fn a_scoped_key_reads_what_it_holds_and_is_named_in_the_audit_log() {
    let s = start().await;
    let admin = s.super_token();
    let (finance_id, finance) = s
        .issue(
            &admin,
            json!({"name": "finance export", "scopes": ["finance:view", "finance:reconcile"]}),
        )
        .await;
    // Both ways of presenting it, on both nodes.
    for node in 0..2 {
        let a = s
            .call(
                node,
                Method::GET,
                "/api/admin/finance/stats",
                Auth::Key(&finance),
                None,
            )
            .await;
        assert_eq!(a.status, 200, "node {node}: {}", a.body);
        let a = s
            .call(
                node,
                Method::GET,
                "/api/admin/finance/stats",
                Auth::Bearer(&finance),
                None,
            )
            .await;
        assert_eq!(a.status, 200, "node {node} (bearer): {}", a.body);
    }
    // Outside its scopes: 403, and nothing runs.
    let head = s.events_head().await;
    let a = s
        .call(
            0,
            Method::POST,
            "/api/admin/withdraw/1/approve",
            Auth::Key(&finance),
            None,
        )
        .await;
    assert_problem(&a, 403, "approving a withdrawal");
    assert!(a.body["msg"]
        .as_str()
        .unwrap()
        .contains("finance:approve_withdraw"));
    // An administrator's own session routes are not a key's.
    let a = s
        .call(
            0,
            Method::GET,
            "/api/admin/user/info",
            Auth::Key(&finance),
            None,
        )
        .await;
    assert_problem(&a, 403, "an administrator's own route");
    assert_eq!(s.events_head().await, head, "refusals append nothing");

    // A key that manages keys grants only what it holds, and is named in the audit log.
    let (manager_id, manager) = s
        .issue(
            &admin,
            json!({"name": "key robot", "scopes": ["apikey:manage", "finance:view"]}),
        )
        .await;
    let a = s
        .call(
            1,
            Method::POST,
            "/api/admin/api-keys",
            Auth::Key(&manager),
            Some(json!({"name": "more", "scopes": ["finance:reconcile"]})),
        )
        .await;
    assert_problem(&a, 403, "granting a code the key does not hold");
    assert!(a.body["msg"]
        .as_str()
        .unwrap()
        .contains("finance:reconcile"));
    let a = s
        .call(
            1,
            Method::POST,
            "/api/admin/api-keys",
            Auth::Key(&manager),
            Some(json!({"name": "reader", "scopes": ["finance:view"]})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = s
        .call(
            1,
            Method::DELETE,
            &format!("/api/admin/api-keys/{finance_id}"),
            Auth::Key(&manager),
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body["data"]["revoked_at"].is_string(), "{}", a.body);
    type AuditRow = (i64, Option<i64>, String, String, Option<i64>);
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT admin_id, api_key_id, api_key_name, operator, event_seq FROM admin_logs \
         WHERE api_key_id IS NOT NULL ORDER BY id",
    )
    .fetch_all(&s.db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (admin_id, key_id, name, operator, seq) in &rows {
        assert_eq!(*admin_id, 1, "on behalf of its issuer");
        assert_eq!(*key_id, Some(manager_id));
        assert_eq!(name, "key robot");
        assert_eq!(operator, &format!("apikey:{manager_id}:key robot"));
        assert!(seq.is_some(), "the row points at the committed event");
    }
    // The logs as the admin API answers them.
    let a = s
        .call(
            0,
            Method::GET,
            "/api/admin/logs",
            Auth::Bearer(&admin),
            None,
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body["data"]["list"][0]["api_key_id"], manager_id,
        "{}",
        a.body
    );
    assert_eq!(a.body["data"]["list"][0]["api_key_name"], "key robot");
    // The event's actor is the key.
    let actor: String = {
        let stream = s
            .bus
            .jetstream()
            .get_stream(eventstore::EVENTS_STREAM)
            .await
            .unwrap();
        let last = stream
            .get_last_raw_message_by_subject(&format!("ev.apikey.{finance_id}"))
            .await
            .unwrap();
        let commit = eventstore::Commit::decode(&last.payload).unwrap();
        commit.actor.to_string()
    };
    assert_eq!(actor, format!("apikey:{manager_id}"));

    // The list: no secrets; the last use is recorded (coalesced, within a few seconds).
    let start = Instant::now();
    loop {
        let a = s
            .call(
                0,
                Method::GET,
                "/api/admin/api-keys",
                Auth::Bearer(&admin),
                None,
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(
            !a.body.to_string().contains(&finance[16..]),
            "no secret in the list"
        );
        let list = a.body["data"]["list"].as_array().unwrap().clone();
        assert_eq!(list.len(), 3);
        let f = list.iter().find(|k| k["id"] == finance_id).unwrap();
        assert_eq!(f["prefix"], &finance[..16]);
        assert_eq!(f["scopes"], json!(["finance:view", "finance:reconcile"]));
        if f["last_used_at"].is_string() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "last use recorded: {f}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn revocation_expiry_and_rotation_hold_on_every_node() {
    let s = start().await;
    let admin = s.super_token();

    // Revoked through node 0: refused by node 1 within 1 s.
    let (id, key) = s
        .issue(
            &admin,
            json!({"name": "revoked", "scopes": ["finance:view"]}),
        )
        .await;
    s.until_status(1, &key, 200, Duration::from_secs(2)).await;
    let a = s
        .call(
            0,
            Method::DELETE,
            &format!("/api/admin/api-keys/{id}"),
            Auth::Bearer(&admin),
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let took = s.until_status(1, &key, 401, Duration::from_secs(1)).await;
    eprintln!("revocation reached the other node in {took:?}");
    let a = s
        .call(
            1,
            Method::GET,
            "/api/admin/finance/stats",
            Auth::Key(&key),
            None,
        )
        .await;
    assert_problem(&a, 401, "a revoked key");
    assert!(a.body["msg"].as_str().unwrap().contains("revoked"));

    // Expired: refused on both nodes from its expiry on.
    let expires = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (_, key) = s
        .issue(
            &admin,
            json!({"name": "short", "scopes": ["finance:view"], "expires_at": expires.to_rfc3339()}),
        )
        .await;
    s.until_status(1, &key, 200, Duration::from_secs(1)).await;
    tokio::time::sleep((expires - chrono::Utc::now()).to_std().unwrap_or_default()).await;
    for node in 0..2 {
        let a = s
            .call(
                node,
                Method::GET,
                "/api/admin/finance/stats",
                Auth::Key(&key),
                None,
            )
            .await;
        assert_problem(&a, 401, "an expired key");
        assert!(a.body["msg"].as_str().unwrap().contains("expired"));
    }

    // Rotated with a 3 s grace: the old secret works until then, never after; the new one does.
    let (id, old) = s
        .issue(
            &admin,
            json!({"name": "rotated", "scopes": ["finance:view"]}),
        )
        .await;
    let a = s
        .call(
            0,
            Method::POST,
            &format!("/api/admin/api-keys/{id}/rotate"),
            Auth::Bearer(&admin),
            Some(json!({"grace_seconds": 3})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let rotated_at = Instant::now();
    let new = a.body["data"]["key"].as_str().unwrap().to_string();
    assert_ne!(new[..16], old[..16], "a new prefix");
    s.until_status(1, &new, 200, Duration::from_secs(1)).await;
    for node in 0..2 {
        for key in [&old, &new] {
            let a = s
                .call(
                    node,
                    Method::GET,
                    "/api/admin/finance/stats",
                    Auth::Key(key),
                    None,
                )
                .await;
            assert_eq!(a.status, 200, "node {node} within the grace: {}", a.body);
        }
    }
    assert!(rotated_at.elapsed() < Duration::from_secs(3));
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(rotated_at.elapsed())).await;
    for node in 0..2 {
        let a = s
            .call(
                node,
                Method::GET,
                "/api/admin/finance/stats",
                Auth::Key(&old),
                None,
            )
            .await;
        assert_problem(&a, 401, "the old secret after its grace");
        let a = s
            .call(
                node,
                Method::GET,
                "/api/admin/finance/stats",
                Auth::Key(&new),
                None,
            )
            .await;
        assert_eq!(a.status, 200, "the new secret: {}", a.body);
    }
}

#[tokio::test]
async fn bad_keys_get_401_floods_get_429_and_refusals_change_nothing() {
    let s = start().await;
    let admin = s.super_token();
    let (_, key) = s
        .issue(
            &admin,
            json!({"name": "slow", "scopes": ["finance:view"], "rate_per_minute": 5}),
        )
        .await;
    let head = s.events_head().await;

    let unknown = format!("mck_000000000000_{}", "0".repeat(64));
    let wrong_secret = format!("{}_{}", &key[..16], "0".repeat(64));
    for (what, auth) in [
        ("malformed", Auth::Key("mck_nope")),
        ("malformed bearer", Auth::Bearer("mck_nope")),
        ("unknown", Auth::Key(&unknown)),
        ("wrong secret", Auth::Key(&wrong_secret)),
        ("nothing", Auth::None),
    ] {
        let a = s
            .call(1, Method::GET, "/api/admin/finance/stats", auth, None)
            .await;
        assert_problem(&a, 401, what);
    }

    // Bad key requests: 4xx naming the field, nothing appended.
    for (what, body, status, field) in [
        (
            "unknown scope",
            json!({"name": "x", "scopes": ["finance:nope"]}),
            422,
            "finance:nope",
        ),
        (
            "no scopes",
            json!({"name": "x", "scopes": []}),
            422,
            "scopes",
        ),
        (
            "blank name",
            json!({"name": "  ", "scopes": ["finance:view"]}),
            422,
            "name",
        ),
        (
            "past expiry",
            json!({"name": "x", "scopes": ["finance:view"], "expires_at": "2020-01-01T00:00:00Z"}),
            422,
            "expires_at",
        ),
        (
            "zero rate",
            json!({"name": "x", "scopes": ["finance:view"], "rate_per_minute": 0}),
            422,
            "rate_per_minute",
        ),
        (
            "not a date",
            json!({"name": "x", "scopes": ["finance:view"], "expires_at": "soon"}),
            400,
            "expires_at",
        ),
    ] {
        let a = s
            .call(
                0,
                Method::POST,
                "/api/admin/api-keys",
                Auth::Bearer(&admin),
                Some(body),
            )
            .await;
        assert_problem(&a, status, what);
        assert!(
            a.body["msg"].as_str().unwrap().contains(field),
            "{what}: {}",
            a.body
        );
    }
    let a = s
        .call(
            0,
            Method::POST,
            "/api/admin/api-keys/999999/rotate",
            Auth::Bearer(&admin),
            Some(json!({"grace_seconds": 10})),
        )
        .await;
    assert_problem(&a, 404, "rotating an unknown key");

    // A flood: the sixth request within the minute is refused with Retry-After.
    let mut refused = None;
    for i in 0..8 {
        let a = s
            .call(
                0,
                Method::GET,
                "/api/admin/finance/stats",
                Auth::Key(&key),
                None,
            )
            .await;
        if a.status == 429 {
            refused = Some((i, a));
            break;
        }
        assert_eq!(a.status, 200, "request {i}: {}", a.body);
    }
    let (i, a) = refused.expect("a flood is refused");
    assert_eq!(i, 5, "five a minute");
    assert_problem(&a, 429, "a flood");
    let wait: u64 = a.retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");

    // An unsupported method: 405 with `Allow`, before authentication.
    for auth in [Auth::None, Auth::Key(&key)] {
        let a = s
            .call(1, Method::TRACE, "/api/admin/finance/stats", auth, None)
            .await;
        assert_problem(&a, 405, "TRACE");
        let a = s
            .call(1, Method::PATCH, "/api/admin/api-keys/1", auth, None)
            .await;
        assert_problem(&a, 405, "PATCH");
    }
    let resp = s
        .http
        .request(Method::TRACE, format!("{}/api/admin/api-keys", s.nodes[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["allow"], "GET, HEAD, POST");

    assert_eq!(
        s.events_head().await,
        head,
        "refusals append nothing to the log"
    );

    // The document: the key routes typed, their refusals and the key scheme documented.
    let a = s
        .call(0, Method::GET, "/api-docs/openapi.json", Auth::None, None)
        .await;
    let doc = a.body;
    assert_eq!(
        doc["components"]["securitySchemes"]["apiKey"]["name"],
        "X-API-Key"
    );
    let create = &doc["paths"]["/api/admin/api-keys"]["post"];
    for status in ["200", "400", "401", "403", "413", "422", "429"] {
        assert!(
            create["responses"][status].is_object(),
            "POST api-keys documents {status}"
        );
    }
    assert_eq!(create["security"][1]["apiKey"], json!([]));
    let rotate = &doc["paths"]["/api/admin/api-keys/{id}/rotate"]["post"];
    for status in ["404", "409", "422"] {
        assert!(
            rotate["responses"][status].is_object(),
            "rotate documents {status}"
        );
    }
}
