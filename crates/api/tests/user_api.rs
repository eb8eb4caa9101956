//! The user API over real HTTP against a real nats-server and PostgreSQL.
//!
//! `spawn_app()` starts both servers (testkit, free ports), migrates, creates the streams, runs
//! every projector and the process manager, and serves the user API on port 0 — the app the
//! binary serves, in process. Each test reads as a story; the refusal tables check that each bad
//! request gets its 4xx naming the problem and that the log did not move.

use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use api::user::config::{LoginLimits, UserApiConfig};
use api::user::payments::providers::alipay::AlipayConfig;
use api::user::payments::providers::wechat::WechatConfig;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use eventstore::envelope::Upcasters;
use eventstore::{ensure_streams, CommandBus, StreamSettings};
use projections::{CheckpointWatch, Projector, ProjectorSettings, MIGRATOR};
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

const WECHAT_KEY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";
const WECHAT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const MCHID: &str = "1900000001";
const APPID: &str = "wxd678efh567hg6787";
const ALIPAY_APP: &str = "2021000000000001";

struct TestApp {
    url: String,
    http: reqwest::Client,
    pool: sqlx::PgPool,
    js: async_nats::jetstream::Context,
    wechat_key: SigningKey<Sha256>,
    alipay_key: SigningKey<Sha256>,
    upload_dir: tempfile::TempDir,
    stop: CancellationToken,
    _nats: testkit::NatsServer,
    _pg: testkit::Postgres,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn rsa_key() -> (SigningKey<Sha256>, String) {
    let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let pem = RsaPublicKey::from(&private)
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    (SigningKey::new(private), pem)
}

async fn spawn_app() -> TestApp {
    spawn_app_with(LoginLimits {
        per_account_per_minute: 1000,
        per_ip_per_minute: 10_000,
    })
    .await
}

async fn spawn_app_with(limits: LoginLimits) -> TestApp {
    spawn(limits, true).await
}

/// An app whose `wechat` and `alipay` run in sandbox mode (no provider keys configured).
async fn spawn_sandbox_app() -> TestApp {
    spawn(
        LoginLimits {
            per_account_per_minute: 1000,
            per_ip_per_minute: 10_000,
        },
        false,
    )
    .await
}

async fn spawn(limits: LoginLimits, real_providers: bool) -> TestApp {
    let nats = testkit::NatsServer::start().unwrap();
    let pg = testkit::Postgres::start().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .connect(&pg.url())
        .await
        .unwrap();
    MIGRATOR.run(&pool).await.unwrap();
    let client = nats.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let layout = ensure_streams(&js, &StreamSettings::default())
        .await
        .unwrap();
    let chat = eventstore::ChatLog::new(js.clone(), layout, Default::default());
    let bus = CommandBus::new(js.clone(), Upcasters::default());
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
    let watch = CheckpointWatch::start(client.clone(), pool.clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = api::AppState::new(api::Services {
        db: pool.clone(),
        bus,
        nats: client.clone(),
        jwt: Arc::new(api::JwtKeys::new(
            b"test-secret-test-secret-test-secret!",
            3600,
        )),
        ids: Default::default(),
        chat: chat.clone(),
        counselors: api::app::counselor_terms::CounselorTerms::follow(&client)
            .await
            .unwrap(),
        tokens: api::TokenGate::follow(&client, api::TokenGate::DEFAULT_TTL)
            .await
            .unwrap(),
        watch,
        settings: Arc::new(api::ApiSettings {
            public_url: url.clone(),
            sandbox_secret: "sandbox-test-secret".into(),
            settle_timeout: Duration::from_secs(5),
            cors_origins: Vec::new(),
            business_zone: chrono_tz::Asia::Shanghai,
        }),
    });
    let upload_dir = tempfile::tempdir().unwrap();
    let (wechat_key, wechat_pem) = rsa_key();
    let (alipay_key, alipay_pem) = rsa_key();
    let mut config = UserApiConfig::new(upload_dir.path().to_path_buf());
    config.login_limits = limits;
    // These tests pay through the sandbox (and its provider-format modes): enabled explicitly.
    config.sandbox_payments = true;
    config.wechat = Some(
        WechatConfig::new(
            MCHID.into(),
            APPID.into(),
            WECHAT_KEY,
            WECHAT_SERIAL.into(),
            &wechat_pem,
        )
        .unwrap(),
    );
    config.alipay = Some(AlipayConfig::new(ALIPAY_APP.into(), &alipay_pem).unwrap());
    if !real_providers {
        config.wechat = None;
        config.alipay = None;
    }
    let app = api::user_router_with(state, config);
    let shutdown = stop.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .unwrap();
    });
    TestApp {
        url,
        http: reqwest::Client::new(),
        pool,
        js,
        wechat_key,
        alipay_key,
        upload_dir,
        stop,
        _nats: nats,
        _pg: pg,
    }
}

/// A response: HTTP status and JSON body (`Value::Null` when not JSON).
struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    fn data(&self) -> &Value {
        &self.body["data"]
    }
}

impl TestApp {
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }
    async fn get(&self, path: &str, token: &str) -> Reply {
        self.send("GET", path, Some(token), None).await
    }
    async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send("POST", path, Some(token), Some(body)).await
    }

    /// Registers and logs in `name`; returns (user id, token, refresh token).
    async fn user(&self, name: &str) -> (i64, String, String) {
        let r = self
            .send(
                "POST",
                "/api/register",
                None,
                Some(json!({"username": name, "password": "secret123"})),
            )
            .await;
        assert_eq!(r.status, 200, "register {name}: {}", r.body);
        let r = self
            .send(
                "POST",
                "/api/login",
                None,
                Some(json!({"username": name, "password": "secret123"})),
            )
            .await;
        assert_eq!(r.status, 200, "login {name}: {}", r.body);
        (
            r.data()["user"]["id"].as_i64().unwrap(),
            r.data()["token"].as_str().unwrap().to_string(),
            r.data()["refresh_token"].as_str().unwrap().to_string(),
        )
    }

    /// A user who is a counselor (price 5.00 yuan/min); returns (counselor id, user token).
    async fn counselor(&self, name: &str) -> (i64, String) {
        let (uid, token, _) = self.user(name).await;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO counselors (user_id, name, title, specialty, price_fen) VALUES ($1, $2, '心理咨询师', '情感咨询', 500) RETURNING id",
        )
        .bind(uid)
        .bind(format!("{name} 老师"))
        .fetch_one(&self.pool)
        .await
        .unwrap();
        (id, token)
    }

    async fn order(&self, token: &str, counselor: i64, minutes: i64) -> i64 {
        let r = self
            .post(
                "/api/order/create",
                token,
                json!({"counselor_id": counselor, "duration": minutes, "schedule_time": "2026-12-01T10:00:00+08:00"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.data()["order_id"].as_i64().unwrap()
    }

    /// Creates a payment of `method` for the order; returns (payment id, payment_no, pay_url).
    async fn payment(&self, token: &str, order: i64, method: &str) -> (i64, String, String) {
        let r = self
            .post(
                "/api/payment/create",
                token,
                json!({"order_id": order, "payment_method": method, "trade_type": "NATIVE"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        (
            r.data()["payment_id"].as_i64().unwrap(),
            r.data()["payment_no"].as_str().unwrap().to_string(),
            r.data()["pay_url"].as_str().unwrap().to_string(),
        )
    }

    /// Pays through the sandbox cashier and waits until the order reads as paid.
    async fn paid_order(&self, token: &str, counselor: i64) -> i64 {
        let order = self.order(token, counselor, 30).await;
        let (_, _, pay_url) = self.payment(token, order, "sandbox").await;
        assert_eq!(self.http.get(&pay_url).send().await.unwrap().status(), 200);
        self.wait_order_status(token, order, 1).await;
        order
    }

    async fn wait_order_status(&self, token: &str, order: i64, status: i64) {
        for _ in 0..200 {
            let r = self.get(&format!("/api/order/{order}"), token).await;
            if r.data()["status"].as_i64() == Some(status) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("order {order} never reached status {status}");
    }

    async fn events_in_log(&self) -> u64 {
        self.js
            .get_stream("EVENTS")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages
    }

    async fn payment_status(&self, id: i64) -> i16 {
        sqlx::query_scalar("SELECT status FROM payments WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

/// One row of a refusal table: method, path, token, body, expected status, text the message
/// must contain (the field or the problem).
type Refusal<'a> = (
    &'a str,
    String,
    Option<&'a str>,
    Option<Value>,
    u16,
    &'a str,
);

async fn assert_refusals(app: &TestApp, table: Vec<Refusal<'_>>) {
    let before = app.events_in_log().await;
    for (method, path, token, body, status, needle) in table {
        let r = app.send(method, &path, token, body.clone()).await;
        assert_eq!(
            r.status, status,
            "{method} {path} {body:?}: expected {status}, got {} {}",
            r.status, r.body
        );
        assert_eq!(
            r.body["code"].as_u64(),
            Some(u64::from(status)),
            "{method} {path}: {}",
            r.body
        );
        let msg = r.body["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{method} {path} {body:?}: msg {msg:?} should name {needle:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.events_in_log().await,
        before,
        "a refused request changed the log"
    );
}

#[tokio::test]
async fn accounts_refresh_rotation_revocation_and_login_limits() {
    let app = spawn_app_with(LoginLimits {
        per_account_per_minute: 3,
        per_ip_per_minute: 10_000,
    })
    .await;
    let (uid, token, refresh) = app.user("alice").await;

    // user info, profile
    let info = app.get("/api/user/info", &token).await;
    assert_eq!(info.data()["user_id"], json!(uid));
    assert_eq!(info.data()["balance"], json!(0.0));
    let r = app
        .send(
            "PUT",
            "/api/user/profile",
            Some(&token),
            Some(json!({"email": "a@example.com", "phone": "13800138000"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let info = app.get("/api/user/info", &token).await;
    assert_eq!(info.data()["phone"], json!("13800138000"));

    // refresh rotates: the new refresh works once, the old one is refused and revokes its family
    let r = app
        .send(
            "POST",
            "/api/token/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let refresh2 = r.data()["refresh_token"].as_str().unwrap().to_string();
    let token2 = r.data()["token"].as_str().unwrap().to_string();
    assert_eq!(app.get("/api/user/info", &token2).await.status, 200);
    let r = app
        .send(
            "POST",
            "/api/token/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(r.status, 401, "a rotated refresh token is refused");
    let r = app
        .send(
            "POST",
            "/api/token/refresh",
            None,
            Some(json!({"token": refresh2})),
        )
        .await;
    assert_eq!(r.status, 401, "re-use revoked the whole family: {}", r.body);

    // password change revokes every earlier token and returns a fresh pair
    let (_, bob, bob_refresh) = app.user("bob").await;
    let r = app
        .post(
            "/api/user/password",
            &bob,
            json!({"old_password": "secret123", "new_password": "newsecret"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let bob_new = r.data()["token"].as_str().unwrap().to_string();
    assert_eq!(app.get("/api/user/info", &bob).await.status, 401);
    assert_eq!(app.get("/api/user/info", &bob_new).await.status, 200);
    let r = app
        .send(
            "POST",
            "/api/token/refresh",
            None,
            Some(json!({"refresh_token": bob_refresh})),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = app
        .send(
            "POST",
            "/api/login",
            None,
            Some(json!({"username": "bob", "password": "newsecret"})),
        )
        .await;
    assert_eq!(r.status, 200);

    // logout revokes the access token and the refresh tokens
    let (_, carol, carol_refresh) = app.user("carol").await;
    assert_eq!(app.post("/api/logout", &carol, json!({})).await.status, 200);
    assert_eq!(app.get("/api/user/info", &carol).await.status, 401);
    let r = app
        .send(
            "POST",
            "/api/token/refresh",
            None,
            Some(json!({"refresh_token": carol_refresh})),
        )
        .await;
    assert_eq!(r.status, 401);

    // a disabled user is refused at login and with an existing token
    let (dave_id, dave, _) = app.user("dave").await;
    sqlx::query("UPDATE users SET status = 0 WHERE id = $1")
        .bind(dave_id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.get("/api/user/info", &dave).await.status, 403);
    let r = app
        .send(
            "POST",
            "/api/login",
            None,
            Some(json!({"username": "dave", "password": "secret123"})),
        )
        .await;
    assert_eq!(r.status, 403);

    // login is rate-limited per account (3 a minute here; alice used 1)
    app.user("erin").await;
    let mut codes = Vec::new();
    for _ in 0..3 {
        let r = app
            .send(
                "POST",
                "/api/login",
                None,
                Some(json!({"username": "erin", "password": "wrong"})),
            )
            .await;
        codes.push(r.status);
    }
    assert_eq!(
        codes,
        vec![401, 401, 429],
        "the 4th attempt in a minute is refused"
    );
    let r = app
        .send(
            "POST",
            "/api/login",
            None,
            Some(json!({"username": "erin", "password": "secret123"})),
        )
        .await;
    assert_eq!(r.status, 429, "even with the right password");
    assert!(r.body["msg"]
        .as_str()
        .unwrap()
        .contains("too many login attempts"));

    // transactions list (empty here) and its refusals
    let r = app
        .get("/api/user/transactions?page=1&page_size=20", &token2)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data()["total"], json!(0));

    let tampered = format!("{}x", &token2[..token2.len() - 1]);
    let expired = {
        let keys = api::JwtKeys::new(b"test-secret-test-secret-test-secret!", -3600);
        keys.issue(uid, "alice", "user").unwrap()
    };
    let t = Some(token2.as_str());
    assert_refusals(
        &app,
        vec![
            (
                "POST",
                "/api/register".into(),
                None,
                Some(json!({"username": "ab", "password": "secret123"})),
                400,
                "username",
            ),
            (
                "POST",
                "/api/register".into(),
                None,
                Some(json!({"username": "alice", "password": "secret123"})),
                409,
                "username",
            ),
            (
                "POST",
                "/api/register".into(),
                None,
                Some(json!({"username": "frank", "password": "123"})),
                400,
                "password",
            ),
            (
                "POST",
                "/api/register".into(),
                None,
                Some(json!({"username": "frank", "password": "secret123", "email": "nope"})),
                400,
                "email",
            ),
            (
                "POST",
                "/api/register".into(),
                None,
                Some(json!({"username": 5, "password": "secret123"})),
                400,
                "username",
            ),
            (
                "POST",
                "/api/login".into(),
                None,
                Some(json!({"username": "alice"})),
                400,
                "password",
            ),
            (
                "POST",
                "/api/login".into(),
                None,
                Some(json!({"username": "nobody", "password": "secret123"})),
                401,
                "wrong",
            ),
            (
                "POST",
                "/api/token/refresh".into(),
                None,
                Some(json!({})),
                422,
                "refresh_token",
            ),
            (
                "POST",
                "/api/token/refresh".into(),
                None,
                Some(json!({"refresh_token": "rt_forged"})),
                401,
                "invalid",
            ),
            ("POST", "/api/logout".into(), None, None, 401, "token"),
            (
                "GET",
                "/api/user/info".into(),
                None,
                None,
                401,
                "missing bearer token",
            ),
            (
                "GET",
                "/api/user/info".into(),
                Some(&tampered),
                None,
                401,
                "invalid token",
            ),
            (
                "GET",
                "/api/user/info".into(),
                Some(&expired),
                None,
                401,
                "invalid token",
            ),
            (
                "PUT",
                "/api/user/profile".into(),
                t,
                Some(json!({})),
                422,
                "nothing to update",
            ),
            (
                "PUT",
                "/api/user/profile".into(),
                t,
                Some(json!({"email": "x@"})),
                400,
                "email",
            ),
            (
                "PUT",
                "/api/user/profile".into(),
                t,
                Some(json!({"phone": "12345"})),
                400,
                "phone",
            ),
            (
                "POST",
                "/api/user/password".into(),
                t,
                Some(json!({"old_password": "bad", "new_password": "secret456"})),
                422,
                "old_password",
            ),
            (
                "POST",
                "/api/user/password".into(),
                t,
                Some(json!({"old_password": "secret123", "new_password": "1"})),
                400,
                "new_password",
            ),
            (
                "POST",
                "/api/user/recharge".into(),
                t,
                Some(json!({"amount": 0})),
                400,
                "amount",
            ),
            (
                "POST",
                "/api/user/recharge".into(),
                t,
                Some(json!({"amount": 1.234})),
                400,
                "amount",
            ),
            (
                "POST",
                "/api/user/recharge".into(),
                t,
                Some(json!({"amount": "ten"})),
                400,
                "amount",
            ),
            (
                "POST",
                "/api/user/recharge".into(),
                t,
                Some(json!({"amount": 10, "payment_method": "cash"})),
                400,
                "payment_method",
            ),
            (
                "GET",
                "/api/user/transactions?page_size=101".into(),
                t,
                None,
                400,
                "page_size",
            ),
            (
                "GET",
                "/api/user/transactions?type=gift".into(),
                t,
                None,
                400,
                "type",
            ),
            (
                "GET",
                "/api/counselor/list?sort_by=age".into(),
                None,
                None,
                400,
                "sort_by",
            ),
            (
                "GET",
                "/api/counselor/list?page=0".into(),
                None,
                None,
                400,
                "page",
            ),
            (
                "GET",
                "/api/counselor/999".into(),
                None,
                None,
                404,
                "counselor",
            ),
            ("GET", "/api/counselor/abc".into(), None, None, 404, ""),
        ],
    )
    .await;
}

#[tokio::test]
async fn recharge_goes_through_a_payment_and_credits_the_wallet_once() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("alice").await;
    let r = app
        .post("/api/user/recharge", &token, json!({"amount": 100.5}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.data()["balance"],
        json!(0.0),
        "nothing is credited before the payment"
    );
    let pay_url = r.data()["pay_url"].as_str().unwrap().to_string();
    assert_eq!(app.http.get(&pay_url).send().await.unwrap().status(), 200);
    // opening the cashier again pays nothing again: the page says "paid" (200), never a 5xx
    let again = app.http.get(&pay_url).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert!(again.text().await.unwrap().contains("paid"));
    let mut balance = json!(null);
    for _ in 0..200 {
        balance = app.get("/api/user/info", &token).await.data()["balance"].clone();
        if balance == json!(100.5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(balance, json!(100.5));
    // The balance is the ledger's; the movements are another projection's, which may still be
    // catching up.
    let mut r = app
        .get("/api/user/transactions?type=recharge", &token)
        .await;
    for _ in 0..200 {
        // The list and its total are two reads: wait until both show the movement.
        if r.data()["total"] == json!(1) && !r.data()["transactions"][0]["amount"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        r = app
            .get("/api/user/transactions?type=recharge", &token)
            .await;
    }
    assert_eq!(r.data()["total"], json!(1));
    assert_eq!(r.data()["transactions"][0]["amount"], json!(100.5));
    assert_eq!(r.data()["transactions"][0]["type"], json!("recharge"));
    let r = app.get("/api/payment/list", &token).await;
    assert_eq!(r.data()["payments"][0]["purpose"], json!("recharge"));
    assert_eq!(r.data()["payments"][0]["status"], json!(1));
}

#[tokio::test]
async fn orders_payments_cancel_and_refunds() {
    let app = spawn_app().await;
    let (counselor, counselor_token) = app.counselor("tina").await;
    let (_, token, _) = app.user("alice").await;
    let (_, other, _) = app.user("mallory").await;

    // every schedule_time form of the contract
    for form in [
        "2026-12-01T10:00:00+08:00",
        "2026-12-01T10:00:00",
        "2026-12-01 10:00:00",
        "2026-12-01",
    ] {
        let r = app
            .post(
                "/api/order/create",
                &token,
                json!({"counselor_id": counselor, "duration": 60, "schedule_time": form}),
            )
            .await;
        assert_eq!(r.status, 200, "{form}: {}", r.body);
        assert_eq!(r.data()["amount"], json!(300.0));
        assert!(r.data()["create_at"].is_string());
    }
    let r = app
        .get("/api/order/list?status=0&page=1&page_size=10", &token)
        .await;
    assert_eq!(r.data()["total"], json!(4));
    let unpaid = r.data()["orders"][0]["id"].as_i64().unwrap();

    // validate and timeline
    let r = app
        .get(&format!("/api/order/{unpaid}/validate"), &token)
        .await;
    assert_eq!(
        (r.data()["can_pay"].clone(), r.data()["can_chat"].clone()),
        (json!(true), json!(false))
    );

    // cancel an unpaid order: status 3, nothing to refund
    let r = app
        .post(&format!("/api/order/{unpaid}/cancel"), &token, json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["refund_amount"], json!(0.0));
    app.wait_order_status(&token, unpaid, 3).await;
    let r = app
        .get(&format!("/api/order/{unpaid}/timeline"), &token)
        .await;
    let types: Vec<&str> = r.data()["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["OrderPlaced", "OrderCancelled"]);

    // cancel a paid order: the whole amount goes back to the payment, the order becomes 4
    let paid = app.paid_order(&token, counselor).await;
    let payment_id = app.get(&format!("/api/order/{paid}"), &token).await.data()["payment_id"]
        .as_i64()
        .unwrap();
    let r = app
        .post(&format!("/api/order/{paid}/cancel"), &token, json!({}))
        .await;
    assert_eq!(r.data()["refund_amount"], json!(150.0));
    app.wait_order_status(&token, paid, 4).await;
    let r = app.get(&format!("/api/payment/{payment_id}"), &token).await;
    assert_eq!(r.data()["status"], json!(3));
    assert_eq!(r.data()["refunded_amount"], json!(150.0));
    let r = app
        .get(&format!("/api/order/{paid}/timeline"), &token)
        .await;
    let types: Vec<&str> = r.data()["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "OrderPlaced",
            "OrderPaid",
            "OrderCancelled",
            "OrderRefunded"
        ]
    );

    // two payments captured for one order: the second is refunded in full by the process manager
    let twice = app.order(&token, counselor, 30).await;
    let (first_pay, _, first_url) = app.payment(&token, twice, "sandbox").await;
    let (second_pay, _, second_url) = app.payment(&token, twice, "sandbox").await;
    assert_eq!(app.http.get(&first_url).send().await.unwrap().status(), 200);
    app.wait_order_status(&token, twice, 1).await;
    assert_eq!(
        app.http.get(&second_url).send().await.unwrap().status(),
        200
    );
    let mut status = 0;
    for _ in 0..200 {
        status = app.payment_status(second_pay).await;
        if status == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, 3, "the orphan capture is refunded");
    assert_eq!(app.payment_status(first_pay).await, 1);
    let r = app.get(&format!("/api/order/{twice}"), &token).await;
    assert_eq!(
        (r.data()["status"].clone(), r.data()["payment_id"].clone()),
        (json!(1), json!(first_pay))
    );

    // partial refunds up to the captured amount
    let paid2 = app.paid_order(&token, counselor).await;
    let pay2 = app.get(&format!("/api/order/{paid2}"), &token).await.data()["payment_id"]
        .as_i64()
        .unwrap();
    let r = app
        .post(
            "/api/payment/refund",
            &token,
            json!({"payment_id": pay2, "refund_amount": 100, "refund_reason": "partial"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["total_refunded"], json!(100.0));
    let r = app
        .post(
            "/api/payment/refund",
            &token,
            json!({"payment_id": pay2, "refund_amount": 50.01}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["msg"].as_str().unwrap().contains("exceeds"));
    let r = app
        .post(
            "/api/payment/refund",
            &token,
            json!({"payment_id": pay2, "refund_amount": 50}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data()["total_refunded"], json!(150.0));
    app.wait_order_status(&token, paid2, 4).await;

    // payment list and get
    let r = app.get("/api/payment/list?status=3", &token).await;
    assert_eq!(
        r.data()["total"],
        json!(3),
        "cancel refund, orphan refund, partial refunds"
    );
    assert_eq!(
        app.get("/api/payment/list?payment_method=alipay", &token)
            .await
            .data()["total"],
        json!(0)
    );

    // the counselor's view and status change
    let r = app
        .get("/api/counselor/orders?status=4", &counselor_token)
        .await;
    assert_eq!(r.data()["total"], json!(2));
    let paid3 = app.paid_order(&token, counselor).await;
    let r = app
        .send(
            "PUT",
            &format!("/api/order/{paid3}/status"),
            Some(&counselor_token),
            Some(json!({"status": 2})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    app.wait_order_status(&token, paid3, 2).await;
    let r = app
        .get(&format!("/api/order/{paid3}/validate"), &token)
        .await;
    assert_eq!(r.data()["can_review"], json!(true));

    let pending = app.order(&token, counselor, 30).await;
    let t = Some(token.as_str());
    let o = Some(other.as_str());
    let c = Some(counselor_token.as_str());
    assert_refusals(
        &app,
        vec![
            ("POST", "/api/order/create".into(), t, Some(json!({"duration": 60, "schedule_time": "2026-12-01"})), 400, "counselor_id"),
            ("POST", "/api/order/create".into(), t, Some(json!({"counselor_id": counselor, "duration": 5, "schedule_time": "2026-12-01"})), 400, "duration"),
            ("POST", "/api/order/create".into(), t, Some(json!({"counselor_id": counselor, "duration": "60", "schedule_time": "2026-12-01"})), 400, "duration"),
            ("POST", "/api/order/create".into(), t, Some(json!({"counselor_id": counselor, "duration": 60, "schedule_time": "tomorrow"})), 400, "schedule_time"),
            ("POST", "/api/order/create".into(), t, Some(json!({"counselor_id": 999, "duration": 60, "schedule_time": "2026-12-01"})), 404, "counselor"),
            ("POST", "/api/order/create".into(), None, Some(json!({"counselor_id": counselor, "duration": 60, "schedule_time": "2026-12-01"})), 401, "token"),
            ("GET", format!("/api/order/{pending}"), o, None, 403, "not your order"),
            ("GET", "/api/order/99999".into(), t, None, 404, "order"),
            ("GET", "/api/order/list?status=9".into(), t, None, 400, "status"),
            ("PUT", format!("/api/order/{pending}/status"), t, Some(json!({"status": 2})), 403, "counselor"),
            ("PUT", format!("/api/order/{pending}/status"), c, Some(json!({"status": 1})), 422, "status"),
            ("PUT", format!("/api/order/{pending}/status"), c, Some(json!({"status": 7})), 400, "status"),
            ("PUT", format!("/api/order/{pending}/status"), c, Some(json!({})), 400, "status"),
            ("POST", format!("/api/order/{pending}/cancel"), o, None, 403, "not your order"),
            ("POST", format!("/api/order/{unpaid}/cancel"), t, None, 422, "cannot be cancelled"),
            ("POST", format!("/api/order/{paid3}/cancel"), t, None, 422, "cannot be cancelled"),
            ("GET", format!("/api/order/{pending}/validate"), o, None, 403, "not your order"),
            ("GET", format!("/api/order/{pending}/timeline"), o, None, 403, "not your order"),
            ("GET", "/api/order/99999/timeline".into(), t, None, 404, "order"),
            ("GET", "/api/counselor/orders".into(), t, None, 403, "not a counselor"),
            ("GET", "/api/counselor/orders?page_size=0".into(), c, None, 400, "page_size"),
            ("POST", "/api/payment/create".into(), t, Some(json!({"order_id": pending, "payment_method": "paypal", "trade_type": "NATIVE"})), 400, "payment_method"),
            ("POST", "/api/payment/create".into(), t, Some(json!({"order_id": pending, "payment_method": "wechat", "trade_type": "POS"})), 400, "trade_type"),
            ("POST", "/api/payment/create".into(), o, Some(json!({"order_id": pending, "payment_method": "wechat", "trade_type": "NATIVE"})), 403, "not your order"),
            ("POST", "/api/payment/create".into(), t, Some(json!({"order_id": paid3, "payment_method": "wechat", "trade_type": "NATIVE"})), 422, "not awaiting payment"),
            ("GET", format!("/api/payment/{payment_id}"), o, None, 403, "not your payment"),
            ("GET", "/api/payment/99999".into(), t, None, 404, "payment"),
            ("GET", "/api/payment/list?status=8".into(), t, None, 400, "status"),
            ("POST", "/api/payment/refund".into(), t, Some(json!({"payment_id": payment_id})), 400, "refund_amount"),
            ("POST", "/api/payment/refund".into(), t, Some(json!({"payment_id": payment_id, "refund_amount": -1})), 400, "refund_amount"),
            ("POST", "/api/payment/refund".into(), t, Some(json!({"payment_id": payment_id, "refund_amount": 0.01})), 400, "exceeds"),
            ("POST", "/api/payment/refund".into(), o, Some(json!({"payment_id": payment_id, "refund_amount": 1})), 403, "not your payment"),
            ("POST", "/api/payment/refund".into(), t, Some(json!({"payment_id": 99999, "refund_amount": 1})), 404, "payment"),
        ],
    )
    .await;
}

#[tokio::test]
async fn idempotency_key_replays_the_first_response_and_refuses_another_body() {
    let app = spawn_app().await;
    let (counselor, _) = app.counselor("tina").await;
    let (_, token, _) = app.user("alice").await;
    let body = json!({"counselor_id": counselor, "duration": 30, "schedule_time": "2026-12-01"});
    let send = |b: Value| {
        app.http
            .post(format!("{}/api/order/create", app.url))
            .bearer_auth(&token)
            .header("Idempotency-Key", "order-1")
            .json(&b)
            .send()
    };
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let again = send(body.clone()).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again, "the repeat returns the first response");
    let other =
        send(json!({"counselor_id": counselor, "duration": 60, "schedule_time": "2026-12-01"}))
            .await
            .unwrap();
    assert_eq!(other.status(), 422);
    // A refusal replays as it was first served: a problem document.
    let refuse = |b: Value| {
        app.http
            .post(format!("{}/api/order/create", app.url))
            .bearer_auth(&token)
            .header("Idempotency-Key", "order-refused")
            .json(&b)
            .send()
    };
    let bad = json!({"counselor_id": counselor, "duration": 5, "schedule_time": "2026-12-01"});
    let refused = refuse(bad.clone()).await.unwrap();
    assert_eq!(refused.status(), 400);
    let replayed = refuse(bad).await.unwrap();
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(
        replayed.headers()["content-type"],
        refused.headers()["content-type"],
        "a replay keeps the first answer's media type"
    );
    assert_eq!(
        replayed.headers()["content-type"],
        "application/problem+json"
    );
    let r = app.get("/api/order/list", &token).await;
    assert_eq!(r.data()["total"], json!(1), "one order for one key");
    // another user may use the same key
    let (_, bob, _) = app.user("bob").await;
    let r = app
        .http
        .post(format!("{}/api/order/create", app.url))
        .bearer_auth(&bob)
        .header("Idempotency-Key", "order-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("idempotent-replayed").is_none());
    // a malformed key is refused
    let r = app
        .http
        .post(format!("{}/api/order/create", app.url))
        .bearer_auth(&bob)
        .header("Idempotency-Key", "")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A request refused for its caller does not claim its key: without a token, the same key on
    // two different requests is a 401 both times (never a 422), and an undeclared method is a 405
    // before the key is looked at.
    for (method, path) in [
        (reqwest::Method::POST, "/api/order/create"),
        (reqwest::Method::PUT, "/api/user/profile"),
    ] {
        let r = app
            .http
            .request(method, format!("{}{path}", app.url))
            .header("Idempotency-Key", "anonymous-1")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = app
        .http
        .delete(format!("{}/api/order/create", app.url))
        .bearer_auth(&bob)
        .header("Idempotency-Key", "order-1")
        .send()
        .await
        .unwrap();
    let status = r.status();
    let allow = r.headers().get("allow").cloned();
    assert_eq!(status, 405, "{}", r.text().await.unwrap());
    assert!(allow.is_some());
}

/// A claim whose request never finished (its process died mid-request) blocks retries
/// with 409 only for a while; after 60 s a retry with the same key runs (the command id keeps
/// it exactly-once in the log). A fresh unfinished claim still answers 409.
#[tokio::test]
async fn idempotency_claim_left_by_a_dead_process_is_taken_again() {
    use sha2::Digest as _;
    let app = spawn_app().await;
    let (counselor, _) = app.counselor("tina").await;
    let (user_id, token, _) = app.user("alice").await;
    let body = json!({"counselor_id": counselor, "duration": 30, "schedule_time": "2026-12-01"})
        .to_string();
    let path = "/api/order/create";
    let hash = hex::encode(sha2::Sha256::digest(
        format!("POST\n{path}\n{body}").as_bytes(),
    ));
    let claim = |key: &'static str, age_seconds: i64| {
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, created_at) \
             VALUES ($1, $2, $3, now() - $4 * interval '1 second')",
        )
        .bind(format!("user:{user_id}"))
        .bind(key)
        .bind(&hash)
        .bind(age_seconds as f64)
        .execute(&app.pool)
    };
    claim("fresh", 1).await.unwrap();
    claim("stale", 120).await.unwrap();
    let send = |key: &'static str| {
        app.http
            .post(format!("{}{path}", app.url))
            .bearer_auth(&token)
            .header("Idempotency-Key", key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
    };
    let r = send("fresh").await.unwrap();
    assert_eq!(r.status(), 409, "a request with this key is still running");
    let r = send("stale").await.unwrap();
    assert_eq!(r.status(), 200, "the dead claim is taken again");
    let again = send("stale").await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let r = app.get("/api/order/list", &token).await;
    assert_eq!(r.data()["total"], json!(1), "one order for the retried key");
}

// ---- providers ----------------------------------------------------------------------------

fn wechat_notification(
    app: &TestApp,
    payment_no: &str,
    txn: &str,
    total: i64,
    mchid: &str,
) -> Vec<u8> {
    let transaction = json!({
        "mchid": mchid, "appid": APPID, "out_trade_no": payment_no, "transaction_id": txn,
        "trade_type": "NATIVE", "trade_state": "SUCCESS", "trade_state_desc": "支付成功",
        "bank_type": "OTHERS", "success_time": "2026-11-22T10:00:00+08:00",
        "payer": { "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o" },
        "amount": { "total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY" }
    });
    let nonce = "fdasflkja484";
    let aad = "transaction";
    let cipher = Aes256Gcm::new_from_slice(WECHAT_KEY).unwrap();
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(nonce.as_bytes()),
            Payload {
                msg: transaction.to_string().as_bytes(),
                aad: aad.as_bytes(),
            },
        )
        .unwrap();
    let _ = app;
    serde_json::to_vec(&json!({
        "id": format!("EV-{txn}"), "create_time": "2026-11-22T10:00:00+08:00",
        "resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
        "resource": { "original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": B64.encode(ciphertext), "associated_data": aad, "nonce": nonce }
    }))
    .unwrap()
}

async fn post_wechat(
    app: &TestApp,
    body: &[u8],
    signed_body: &[u8],
    serial: &str,
    timestamp: i64,
    key: &SigningKey<Sha256>,
) -> u16 {
    let nonce = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS";
    let mut message = format!("{timestamp}\n{nonce}\n").into_bytes();
    message.extend_from_slice(signed_body);
    message.push(b'\n');
    let signature = B64.encode(key.sign(&message).to_bytes());
    app.http
        .post(format!("{}/api/payment/wechat/callback", app.url))
        .header("content-type", "application/json")
        .header("Wechatpay-Timestamp", timestamp.to_string())
        .header("Wechatpay-Nonce", nonce)
        .header("Wechatpay-Signature", signature)
        .header("Wechatpay-Serial", serial)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn wechat_pay_v3_callbacks_are_verified_and_applied_once() {
    let app = spawn_app().await;
    let (counselor, _) = app.counselor("tina").await;
    let (_, token, _) = app.user("alice").await;
    let order = app.order(&token, counselor, 30).await;
    let (payment, payment_no, pay_url) = app.payment(&token, order, "wechat").await;
    // with WeChat Pay configured, the sandbox cashier cannot pay a wechat payment (409, not 5xx)
    assert_eq!(app.http.get(&pay_url).send().await.unwrap().status(), 409);
    let now = chrono::Utc::now().timestamp();
    let key = &app.wechat_key;
    let (other_key, _) = rsa_key();
    let before = app.events_in_log().await;

    // forged signature (another key), altered body, wrong serial, stale timestamp, wrong amount,
    // unknown order, another merchant: all refused, nothing changes
    let good = wechat_notification(&app, &payment_no, "4200000001", 15_000, MCHID);
    assert_eq!(
        post_wechat(&app, &good, &good, WECHAT_SERIAL, now, &other_key).await,
        401,
        "forged signature"
    );
    let altered = wechat_notification(&app, &payment_no, "4200000009", 15_000, MCHID);
    assert_eq!(
        post_wechat(&app, &altered, &good, WECHAT_SERIAL, now, key).await,
        401,
        "altered body"
    );
    assert_eq!(
        post_wechat(&app, &good, &good, "0000", now, key).await,
        401,
        "wrong serial"
    );
    assert_eq!(
        post_wechat(&app, &good, &good, WECHAT_SERIAL, now - 3600, key).await,
        401,
        "stale"
    );
    let cheap = wechat_notification(&app, &payment_no, "4200000002", 1, MCHID);
    assert_eq!(
        post_wechat(&app, &cheap, &cheap, WECHAT_SERIAL, now, key).await,
        400,
        "wrong amount"
    );
    let unknown = wechat_notification(&app, "PAY-NOPE", "4200000003", 15_000, MCHID);
    assert_eq!(
        post_wechat(&app, &unknown, &unknown, WECHAT_SERIAL, now, key).await,
        404,
        "unknown order"
    );
    let merchant = wechat_notification(&app, &payment_no, "4200000004", 15_000, "1900000999");
    assert_eq!(
        post_wechat(&app, &merchant, &merchant, WECHAT_SERIAL, now, key).await,
        401,
        "other merchant"
    );
    let mut bad_cipher: Value = serde_json::from_slice(&good).unwrap();
    bad_cipher["resource"]["ciphertext"] = json!(B64.encode(b"not the real ciphertext at all!!"));
    let bad_cipher = serde_json::to_vec(&bad_cipher).unwrap();
    assert_eq!(
        post_wechat(&app, &bad_cipher, &bad_cipher, WECHAT_SERIAL, now, key).await,
        401,
        "undecryptable"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.events_in_log().await, before);
    assert_eq!(app.payment_status(payment).await, 0);

    // valid: captured, the order becomes paid
    assert_eq!(
        post_wechat(&app, &good, &good, WECHAT_SERIAL, now, key).await,
        200
    );
    app.wait_order_status(&token, order, 1).await;
    let after = app.events_in_log().await;
    // duplicate (providers retry): applied once
    assert_eq!(
        post_wechat(&app, &good, &good, WECHAT_SERIAL, now, key).await,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.events_in_log().await,
        after,
        "a duplicate callback adds no event"
    );
    let r = app.get(&format!("/api/payment/{payment}"), &token).await;
    assert_eq!(r.data()["transaction_id"], json!("4200000001"));
    assert_eq!(r.data()["status"], json!(1));
}

fn alipay_form(params: &[(&str, String)], key: &SigningKey<Sha256>) -> String {
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let signing = api::user::payments::providers::alipay::signing_string(&owned);
    let sign = B64.encode(key.sign(signing.as_bytes()).to_bytes());
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &owned {
        form.append_pair(k, v);
    }
    form.append_pair("sign", &sign);
    form.append_pair("sign_type", "RSA2");
    form.finish()
}

fn alipay_params(
    payment_no: &str,
    trade_no: &str,
    total: &str,
    app_id: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("gmt_create", "2026-11-22 10:00:00".into()),
        ("charset", "utf-8".into()),
        ("seller_email", "shop@example.com".into()),
        ("notify_time", "2026-11-22 10:00:01".into()),
        ("subject", "咨询订单".into()),
        ("buyer_id", "2088102177846880".into()),
        ("version", "1.0".into()),
        (
            "notify_id",
            format!("ac05099524730693a8b330c5ecf72da{trade_no}"),
        ),
        ("notify_type", "trade_status_sync".into()),
        ("out_trade_no", payment_no.into()),
        ("total_amount", total.into()),
        ("trade_status", "TRADE_SUCCESS".into()),
        ("trade_no", trade_no.into()),
        ("auth_app_id", app_id.into()),
        ("receipt_amount", total.into()),
        ("app_id", app_id.into()),
    ]
}

async fn post_alipay(app: &TestApp, form: String) -> String {
    app.http
        .post(format!("{}/api/payment/alipay/callback", app.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn alipay_rsa2_notifications_are_verified_and_applied_once() {
    let app = spawn_app().await;
    let (counselor, _) = app.counselor("tina").await;
    let (_, token, _) = app.user("alice").await;
    let order = app.order(&token, counselor, 30).await;
    let (payment, payment_no, _) = app.payment(&token, order, "alipay").await;
    let key = &app.alipay_key;
    let (other_key, _) = rsa_key();
    let before = app.events_in_log().await;

    let good = alipay_params(&payment_no, "2026112222001", "150.00", ALIPAY_APP);
    assert_eq!(
        post_alipay(&app, alipay_form(&good, &other_key)).await,
        "fail",
        "forged"
    );
    let altered = alipay_form(&good, key).replace("150.00", "1.00");
    assert_eq!(post_alipay(&app, altered).await, "fail", "altered body");
    let cheap = alipay_params(&payment_no, "2026112222002", "1.00", ALIPAY_APP);
    assert_eq!(
        post_alipay(&app, alipay_form(&cheap, key)).await,
        "fail",
        "wrong amount"
    );
    let unknown = alipay_params("PAY-NOPE", "2026112222003", "150.00", ALIPAY_APP);
    assert_eq!(
        post_alipay(&app, alipay_form(&unknown, key)).await,
        "fail",
        "unknown order"
    );
    let other_app = alipay_params(&payment_no, "2026112222004", "150.00", "2021999999999999");
    assert_eq!(
        post_alipay(&app, alipay_form(&other_app, key)).await,
        "fail",
        "other app_id"
    );
    let unsigned = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(good.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    assert_eq!(post_alipay(&app, unsigned).await, "fail", "unsigned");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.events_in_log().await, before);
    assert_eq!(app.payment_status(payment).await, 0);

    assert_eq!(post_alipay(&app, alipay_form(&good, key)).await, "success");
    app.wait_order_status(&token, order, 1).await;
    let after = app.events_in_log().await;
    assert_eq!(
        post_alipay(&app, alipay_form(&good, key)).await,
        "success",
        "duplicate"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.events_in_log().await,
        after,
        "a duplicate notification adds no event"
    );
    let r = app.get(&format!("/api/payment/{payment}"), &token).await;
    assert_eq!(r.data()["transaction_id"], json!("2026112222001"));
}

#[tokio::test]
async fn chat_billing_reviews_and_notifications() {
    let app = spawn_app().await;
    let (counselor, counselor_token) = app.counselor("tina").await;
    let (_, token, _) = app.user("alice").await;
    let (_, other, _) = app.user("mallory").await;
    let order = app.paid_order(&token, counselor).await;

    // chat: the user starts, sends over HTTP, reads history with sender, ends (billed)
    let r = app
        .post(&format!("/api/chat/start/{order}"), &token, json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let session = r.data()["session_id"].as_i64().unwrap();
    let r = app
        .get(&format!("/api/chat/order/{order}/session"), &token)
        .await;
    assert_eq!(r.data()["session_id"], json!(session));
    let r = app
        .post(
            &format!("/api/chat/session/{session}/message"),
            &token,
            json!({"content": "你好", "sender_type": "user", "content_type": "text"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app
        .get(
            &format!("/api/chat/messages/{session}?page=1&page_size=100"),
            &counselor_token,
        )
        .await;
    assert_eq!(
        r.data()["messages"][0]["sender"]["username"],
        json!("alice")
    );
    assert_eq!(
        r.data()["messages"][0]["session"]["counselor"]["name"],
        json!("tina 老师")
    );
    let r = app.get("/api/chat/sessions", &counselor_token).await;
    assert_eq!(r.data()["total"], json!(1));
    assert_eq!(r.data()["sessions"][0]["status"], json!(1));
    let r = app
        .post(&format!("/api/chat/end/{session}"), &token, json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    app.wait_order_status(&token, order, 2).await;
    // The billings read model is another projection: under load it may trail the order's.
    let mut r = app.get("/api/chat/billings", &token).await;
    for _ in 0..200 {
        // The list and its total are two reads: wait until both show the movement.
        if r.data()["total"] == json!(1) && !r.data()["transactions"][0]["amount"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        r = app.get("/api/chat/billings", &token).await;
    }
    assert_eq!(r.data()["total"], json!(1));
    assert_eq!(r.data()["billings"][0]["total_amount"], json!(5.0));
    let r = app
        .get("/api/chat/counselor/billings", &counselor_token)
        .await;
    assert_eq!(r.data()["billings"][0]["counselor_fee"], json!(3.5));
    let mut r = app
        .get("/api/chat/counselor/account", &counselor_token)
        .await;
    for _ in 0..200 {
        if r.data()["balance"] == json!(3.5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        r = app
            .get("/api/chat/counselor/account", &counselor_token)
            .await;
    }
    assert_eq!(r.data()["balance"], json!(3.5));

    // review: one per completed order
    let r = app
        .post("/api/counselor/review", &token, json!({"counselor_id": counselor, "order_id": order, "rating": 5, "comment": "很有帮助", "is_anonymous": false}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut reviews = json!(null);
    for _ in 0..100 {
        reviews = app
            .send(
                "GET",
                &format!("/api/counselor/{counselor}/reviews"),
                None,
                None,
            )
            .await
            .body;
        if reviews["data"]["total"] == json!(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        reviews["data"]["reviews"][0]["user"]["username"],
        json!("alice")
    );
    assert_eq!(reviews["data"]["reviews"][0]["comment"], json!("很有帮助"));
    let r = app
        .send("GET", &format!("/api/counselor/{counselor}"), None, None)
        .await;
    assert_eq!(r.data()["review_count"], json!(1));
    assert_eq!(r.data()["service_count"], json!(1));
    let r = app.get(&format!("/api/order/{order}"), &token).await;
    assert_eq!(r.data()["has_review"], json!(true));

    // notifications from events: paid, session started (both), session ended, earnings
    let mut list = json!(null);
    for _ in 0..100 {
        list = app.get("/api/notification/list", &token).await.body;
        if list["data"]["total"].as_i64() >= Some(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let titles: Vec<&str> = list["data"]["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap())
        .collect();
    assert!(
        titles.contains(&"订单已支付")
            && titles.contains(&"咨询已开始")
            && titles.contains(&"咨询已结束"),
        "{titles:?}"
    );
    assert_eq!(list["data"]["unread_count"], json!(3));
    let first = list["data"]["notifications"][0]["id"].as_i64().unwrap();
    let second = list["data"]["notifications"][1]["id"].as_i64().unwrap();
    assert_eq!(
        app.post(
            &format!("/api/notification/{first}/read"),
            &token,
            json!({})
        )
        .await
        .status,
        200
    );
    let r = app.get("/api/notification/list?is_read=true", &token).await;
    assert_eq!(
        (r.data()["total"].clone(), r.data()["unread_count"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(
        app.send(
            "DELETE",
            &format!("/api/notification/{second}"),
            Some(&token),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        app.post("/api/notification/read-all", &token, json!({}))
            .await
            .status,
        200
    );
    let r = app.get("/api/notification/list", &token).await;
    assert_eq!(
        (r.data()["total"].clone(), r.data()["unread_count"].clone()),
        (json!(2), json!(0))
    );
    let counselor_notes = app
        .get("/api/notification/list?type=chat", &counselor_token)
        .await;
    assert!(counselor_notes.data()["total"].as_i64().unwrap() >= 1);

    // the counselor list: keyword, sort by service_count, paging
    let r = app.send("GET", "/api/counselor/list?keyword=tina&sort_by=service_count&sort_order=desc&page=1&page_size=4", None, None).await;
    assert_eq!(r.data()["total"], json!(1));
    assert_eq!(r.data()["counselors"][0]["service_count"], json!(1));
    assert_eq!(r.data()["counselors"][0]["review_count"], json!(1));
    let r = app
        .send("GET", "/api/counselor/list?keyword=nobody", None, None)
        .await;
    assert_eq!(r.data()["total"], json!(0));

    // seed 001's aliases: start, messages, end
    let third = app.paid_order(&token, counselor).await;
    let r = app
        .post(
            &format!("/api/chat/session/{third}/start"),
            &counselor_token,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app
        .post(
            &format!("/api/chat/session/{third}/message"),
            &counselor_token,
            json!({"content": "您好"}),
        )
        .await;
    assert_eq!(r.data()["sender_type"], json!("counselor"));
    let r = app
        .get(&format!("/api/chat/session/{third}/messages"), &token)
        .await;
    assert_eq!(r.data()["total"], json!(1));
    let r = app
        .post(
            &format!("/api/chat/session/{third}/end"),
            &counselor_token,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.data()["billing"]["total_amount"].is_number());

    let other_order = app.paid_order(&token, counselor).await;
    let t = Some(token.as_str());
    let o = Some(other.as_str());
    assert_refusals(
        &app,
        vec![
            ("POST", format!("/api/chat/start/{other_order}"), o, None, 403, "participant"),
            ("POST", "/api/chat/start/99999".into(), t, None, 404, "order"),
            ("GET", format!("/api/chat/order/{order}/session"), o, None, 403, "participant"),
            ("GET", "/api/chat/order/99999/session".into(), t, None, 404, "order"),
            ("POST", format!("/api/chat/session/{session}/message"), t, Some(json!({"content": "late"})), 403, "ended"),
            ("POST", format!("/api/chat/session/{session}/message"), o, Some(json!({"content": "hi"})), 403, "participant"),
            ("POST", format!("/api/chat/session/{session}/message"), t, Some(json!({})), 400, "content"),
            ("GET", format!("/api/chat/messages/{session}"), o, None, 403, "participant"),
            ("GET", format!("/api/chat/messages/{session}?page_size=500"), t, None, 400, "page_size"),
            ("POST", format!("/api/chat/end/{session}"), o, None, 403, "participant"),
            ("GET", "/api/chat/sessions?status=7".into(), t, None, 400, "status"),
            ("GET", "/api/chat/billings?page=-1".into(), t, None, 400, "page"),
            ("GET", "/api/chat/counselor/billings".into(), t, None, 403, "not a counselor"),
            ("GET", "/api/chat/counselor/account".into(), t, None, 403, "not a counselor"),
            ("POST", "/api/chat/counselor/withdraw".into(), t, Some(json!({"amount": 1, "bank_name": "b", "bank_account": "1", "account_name": "a"})), 403, "not a counselor"),
            ("POST", "/api/chat/counselor/withdraw".into(), Some(&counselor_token), Some(json!({"amount": 1000, "bank_name": "b", "bank_account": "1", "account_name": "a"})), 422, "balance"),
            ("POST", "/api/chat/counselor/withdraw".into(), Some(&counselor_token), Some(json!({"amount": 1, "bank_account": "1", "account_name": "a"})), 400, "bank_name"),
            ("GET", "/api/chat/counselor/withdraws".into(), t, None, 403, "not a counselor"),
            ("POST", "/api/counselor/review".into(), t, Some(json!({"order_id": order, "rating": 4, "comment": "again"})), 422, "already reviewed"),
            ("POST", "/api/counselor/review".into(), t, Some(json!({"order_id": other_order, "rating": 4, "comment": "early"})), 422, "completed"),
            ("POST", "/api/counselor/review".into(), o, Some(json!({"order_id": order, "rating": 4, "comment": "not mine"})), 403, "not your order"),
            ("POST", "/api/counselor/review".into(), t, Some(json!({"order_id": order, "rating": 6, "comment": "x"})), 400, "rating"),
            ("POST", "/api/counselor/review".into(), t, Some(json!({"order_id": order, "rating": 5, "comment": "  "})), 400, "comment"),
            ("POST", "/api/counselor/review".into(), t, Some(json!({"order_id": order, "counselor_id": 999, "rating": 5, "comment": "x"})), 422, "counselor_id"),
            ("GET", "/api/counselor/999/reviews".into(), None, None, 404, "counselor"),
            ("POST", format!("/api/notification/{first}/read"), o, None, 403, "not your notification"),
            ("DELETE", format!("/api/notification/{first}"), o, None, 403, "not your notification"),
            ("DELETE", format!("/api/notification/{second}"), t, None, 404, "notification"),
            ("GET", "/api/notification/list?type=spam".into(), t, None, 400, "type"),
            ("GET", "/api/notification/list?page_size=1000".into(), t, None, 400, "page_size"),
            ("POST", "/api/notification/read-all".into(), None, None, 401, "token"),
            ("POST", "/api/notification/99999/read".into(), t, None, 404, "notification"),
            ("GET", "/api/chat/sessions".into(), None, None, 401, "token"),
            ("GET", "/api/chat/billings".into(), None, None, 401, "token"),
            ("POST", format!("/api/chat/session/{other_order}/start"), o, None, 403, "participant"),
            ("GET", format!("/api/chat/session/{session}/messages"), o, None, 403, "participant"),
            ("POST", format!("/api/chat/session/{session}/end"), t, None, 422, "ended"),
            ("GET", "/api/counselor/abc/reviews".into(), None, None, 404, ""),
            ("GET", format!("/api/counselor/{counselor}/reviews?page_size=0"), None, None, 400, "page_size"),
        ],
    )
    .await;
    // a withdrawal within the balance works
    let r = app
        .post("/api/chat/counselor/withdraw", &counselor_token, json!({"amount": 3, "bank_name": "招商银行", "bank_account": "6225", "account_name": "Tina"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        app.get("/api/chat/counselor/withdraws", &counselor_token)
            .await
            .data()["total"],
        json!(1)
    );
}

/// MyChat's web client enters a paid order's chat from Orders through
/// `GET /api/chat/order/:order_id/session` (contract b.3): before any session exists, that call
/// starts it exactly as `POST /api/chat/start/:order_id` would — by either participant, on a paid
/// order, once — and refuses whom the start route refuses, recording nothing.
#[tokio::test]
async fn the_order_session_route_starts_a_paid_orders_session_once() {
    let app = spawn_app().await;
    let (counselor, counselor_token) = app.counselor("olga").await;
    let (_, token, _) = app.user("bob").await;
    let (_, other, _) = app.user("eve").await;
    let order = app.paid_order(&token, counselor).await;
    let unpaid = app.order(&token, counselor, 30).await;

    // Refused as the start route refuses (each pair: the start route, then this one), and
    // nothing is appended to the log.
    let t = Some(token.as_str());
    let o = Some(other.as_str());
    assert_refusals(
        &app,
        vec![
            (
                "POST",
                format!("/api/chat/start/{order}"),
                o,
                None,
                403,
                "not a participant of this order",
            ),
            (
                "GET",
                format!("/api/chat/order/{order}/session"),
                o,
                None,
                403,
                "not a participant of this order",
            ),
            (
                "POST",
                format!("/api/chat/start/{unpaid}"),
                t,
                None,
                422,
                "order is not paid (status 0)",
            ),
            (
                "GET",
                format!("/api/chat/order/{unpaid}/session"),
                t,
                None,
                422,
                "order is not paid (status 0)",
            ),
            (
                "POST",
                "/api/chat/start/99999".into(),
                t,
                None,
                404,
                "order not found",
            ),
            (
                "GET",
                "/api/chat/order/99999/session".into(),
                t,
                None,
                404,
                "order not found",
            ),
            (
                "GET",
                format!("/api/chat/order/{order}/session"),
                None,
                None,
                401,
                "token",
            ),
        ],
    )
    .await;
    // The order's user enters from Orders: the session is started and answered.
    let before = app.events_in_log().await;
    let r = app
        .get(&format!("/api/chat/order/{order}/session"), &token)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["code"], json!(200));
    assert_eq!(r.data(), &json!({"session_id": order, "status": 1}));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = app.events_in_log().await;
    assert!(started > before, "starting the session appended its events");

    // Again, by either participant and through the start route: the same session, nothing new.
    let r = app
        .get(&format!("/api/chat/order/{order}/session"), &token)
        .await;
    assert_eq!(r.data(), &json!({"session_id": order, "status": 1}));
    let r = app
        .get(
            &format!("/api/chat/order/{order}/session"),
            &counselor_token,
        )
        .await;
    assert_eq!(r.data(), &json!({"session_id": order, "status": 1}));
    let r = app
        .post(&format!("/api/chat/start/{order}"), &token, json!({}))
        .await;
    assert_eq!(r.data(), &json!({"session_id": order}));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.events_in_log().await,
        started,
        "a second start recorded something"
    );

    // It is a real session: listed, writable, and once ended it is answered as ended.
    let r = app.get("/api/chat/sessions", &token).await;
    assert_eq!(r.data()["total"], json!(1));
    assert_eq!(r.data()["sessions"][0]["id"], json!(order));
    let r = app
        .post(
            &format!("/api/chat/session/{order}/message"),
            &token,
            json!({"content": "你好"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app
        .post(
            &format!("/api/chat/end/{order}"),
            &counselor_token,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app
        .get(&format!("/api/chat/order/{order}/session"), &token)
        .await;
    assert_eq!(r.data(), &json!({"session_id": order, "status": 2}));

    // The counselor may enter first too.
    let second = app.paid_order(&token, counselor).await;
    let r = app
        .get(
            &format!("/api/chat/order/{second}/session"),
            &counselor_token,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data(), &json!({"session_id": second, "status": 1}));
    let r = app
        .get(&format!("/api/chat/messages/{second}"), &token)
        .await;
    assert_eq!(r.data()["session"]["status"], json!(1));
}

/// A small valid PNG (1×1) and a JPEG header: enough for content sniffing.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0, 0,
    1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1F, 0x15, 0xC4, 0x89, 0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE,
    0x42, 0x60, 0x82,
];

async fn upload(
    app: &TestApp,
    path: &str,
    token: &str,
    name: &str,
    bytes: &[u8],
    fields: &[(&str, &str)],
) -> Reply {
    let boundary = "XyZmychatBoundary";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    if !name.is_empty() {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let res = app
        .http
        .post(format!("{}{path}", app.url))
        .bearer_auth(token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    Reply {
        status,
        body: res.json().await.unwrap_or(Value::Null),
    }
}

#[tokio::test]
async fn files_avatars_and_counselor_applications() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("alice").await;
    let (_, other, _) = app.user("mallory").await;
    let (admin_id, admin, _) = app.user("root").await;
    sqlx::query("UPDATE users SET is_admin = TRUE WHERE id = $1")
        .bind(admin_id)
        .execute(&app.pool)
        .await
        .unwrap();

    // general upload, get, served back, delete
    let r = upload(
        &app,
        "/api/upload",
        &token,
        "../../etc/passwd.png",
        PNG,
        &[("file_type", "image"), ("relation_type", "chat")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let file_id = r.data()["id"].as_i64().unwrap();
    let url = r.data()["file_url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("{}/uploads/image/", app.url)),
        "{url}"
    );
    assert_eq!(r.data()["mime_type"], json!("image/png"));
    let served = app.http.get(&url).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.bytes().await.unwrap().as_ref(), PNG);
    let r = app.get(&format!("/api/file/{file_id}"), &token).await;
    assert_eq!(r.data()["original_name"], json!("../../etc/passwd.png"));
    assert!(app
        .upload_dir
        .path()
        .join(r.data()["file_path"].as_str().unwrap())
        .exists());
    assert_eq!(
        app.get(&format!("/api/file/{file_id}"), &other)
            .await
            .status,
        403
    );
    assert_eq!(
        app.send(
            "DELETE",
            &format!("/api/file/{file_id}"),
            Some(&other),
            None
        )
        .await
        .status,
        403
    );
    assert_eq!(
        app.send(
            "DELETE",
            &format!("/api/file/{file_id}"),
            Some(&token),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        app.get(&format!("/api/file/{file_id}"), &token)
            .await
            .status,
        404
    );
    assert_eq!(app.http.get(&url).send().await.unwrap().status(), 404);

    // avatar: sets the user's avatar
    let r = upload(&app, "/api/upload/avatar", &token, "me.png", PNG, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let avatar = r.data()["url"].clone();
    assert_eq!(
        app.get("/api/user/info", &token).await.data()["avatar"],
        avatar
    );

    // upload refusals: type by content, size limits, fields
    let script = b"#!/bin/sh\nrm -rf /\n";
    let r = upload(&app, "/api/upload/avatar", &token, "evil.png", script, &[]).await;
    assert_eq!(
        (r.status, r.body["msg"].as_str().unwrap().contains("file")),
        (422, true),
        "{}",
        r.body
    );
    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;";
    let r = upload(&app, "/api/upload/avatar", &token, "a.gif", gif, &[]).await;
    assert_eq!(r.status, 422, "a GIF is not a JPEG/PNG avatar");
    let mut big = PNG.to_vec();
    big.resize(2 * 1024 * 1024 + 10, 0);
    let r = upload(&app, "/api/upload/avatar", &token, "big.png", &big, &[]).await;
    // An oversize upload is 413 Payload Too Large (naming `file`).
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body["msg"].as_str().unwrap().contains("2 MB"));
    // The form is one `file` part: none, or a part it does not have, is refused.
    let r = upload(&app, "/api/upload/avatar", &token, "", PNG, &[]).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["msg"].as_str().unwrap().contains("file"));
    let r = upload(
        &app,
        "/api/upload/avatar",
        &token,
        "me.png",
        PNG,
        &[("x", "1")],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = upload(&app, "/api/upload", &token, "", PNG, &[]).await;
    assert_eq!(r.status, 400);
    assert!(r.body["msg"].as_str().unwrap().contains("file"));
    let r = upload(
        &app,
        "/api/upload",
        &token,
        "a.png",
        PNG,
        &[("file_type", "weapon")],
    )
    .await;
    assert!(
        r.status == 400 && r.body["msg"].as_str().unwrap().contains("file_type"),
        "{}",
        r.body
    );
    let r = upload(
        &app,
        "/api/upload",
        &token,
        "a.png",
        PNG,
        &[("relation_id", "x")],
    )
    .await;
    assert!(
        r.status == 400 && r.body["msg"].as_str().unwrap().contains("relation_id"),
        "{}",
        r.body
    );
    let mut huge = PNG.to_vec();
    huge.resize(10 * 1024 * 1024 + 10, 0);
    assert_eq!(
        upload(&app, "/api/upload", &token, "h.png", &huge, &[])
            .await
            .status,
        413,
        "oversize is 413"
    );
    let r = upload(
        &app,
        "/api/counselor/upload-certificate",
        &token,
        "c.png",
        PNG,
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let certificate = r.data()["url"].as_str().unwrap().to_string();

    // applications: apply, my application, admin list and review
    let application = json!({
        "name": "Alice", "gender": "女", "phone": "13800138000", "email": "alice@example.com",
        "title": "国家二级心理咨询师", "years_exp": 5, "bio": "…", "specialty": "情感咨询,焦虑抑郁",
        "certificate_img1": certificate, "certificate_img2": "", "certificate_img3": ""
    });
    assert_eq!(
        app.get("/api/counselor/my-application", &token)
            .await
            .data(),
        &json!(null)
    );
    let r = app
        .post("/api/counselor/application", &token, application.clone())
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let app_id = r.data()["id"].as_i64().unwrap();
    assert_eq!(
        app.post("/api/counselor/application", &token, application.clone())
            .await
            .status,
        403
    );
    assert_eq!(
        app.get("/api/counselor/my-application", &token)
            .await
            .data()["status"],
        json!(0)
    );
    let r = app
        .get("/api/counselor/applications?status=0", &admin)
        .await;
    assert_eq!(
        (r.data()["total"].clone(), r.data()["page"].clone()),
        (json!(1), json!(1))
    );
    let r = app
        .send(
            "PUT",
            &format!("/api/counselor/application/{app_id}/review"),
            Some(&admin),
            Some(json!({"status": 1})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let counselor_id = r.data()["counselor_id"].as_i64().unwrap();
    let r = app
        .send("GET", &format!("/api/counselor/{counselor_id}"), None, None)
        .await;
    assert_eq!(
        (r.data()["name"].clone(), r.data()["price"].clone()),
        (json!("Alice"), json!(5.0))
    );
    assert_eq!(
        app.get("/api/chat/counselor/account", &token).await.status,
        200,
        "alice is a counselor now"
    );
    let r = app.get("/api/notification/list?type=system", &token).await;
    assert_eq!(
        r.data()["notifications"][0]["title"],
        json!("咨询师申请已通过")
    );
    assert_eq!(
        app.post("/api/counselor/application", &token, application.clone())
            .await
            .status,
        403
    );

    // a rejected applicant may apply again
    let r = app
        .post("/api/counselor/application", &other, application.clone())
        .await;
    let other_app = r.data()["id"].as_i64().unwrap();
    let r = app
        .send(
            "PUT",
            &format!("/api/counselor/application/{other_app}/review"),
            Some(&admin),
            Some(json!({"status": 2, "reject_reason": "证书不清晰"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        app.post("/api/counselor/application", &other, application.clone())
            .await
            .status,
        200
    );

    let t = Some(token.as_str());
    let o = Some(other.as_str());
    let a = Some(admin.as_str());
    let with = |k: &str, v: Value| {
        let mut b = application.clone();
        b[k] = v;
        Some(b)
    };
    assert_refusals(
        &app,
        vec![
            (
                "POST",
                "/api/counselor/application".into(),
                a,
                with("name", json!("")),
                400,
                "name",
            ),
            (
                "POST",
                "/api/counselor/application".into(),
                a,
                with("phone", json!("123")),
                400,
                "phone",
            ),
            (
                "POST",
                "/api/counselor/application".into(),
                a,
                with("email", json!("bad")),
                400,
                "email",
            ),
            (
                "POST",
                "/api/counselor/application".into(),
                a,
                with("title", json!("")),
                400,
                "title",
            ),
            (
                "POST",
                "/api/counselor/application".into(),
                a,
                with("specialty", json!("")),
                400,
                "specialty",
            ),
            (
                "POST",
                "/api/counselor/application".into(),
                a,
                with("years_exp", json!(-1)),
                400,
                "years_exp",
            ),
            (
                "POST",
                "/api/counselor/application".into(),
                a,
                with("years_exp", json!("five")),
                400,
                "years_exp",
            ),
            (
                "POST",
                "/api/counselor/application".into(),
                a,
                with("gender", json!("x")),
                400,
                "gender",
            ),
            (
                "POST",
                "/api/counselor/application".into(),
                a,
                with("certificate_img1", json!("")),
                422,
                "certificate",
            ),
            (
                "POST",
                "/api/counselor/application".into(),
                t,
                Some(application.clone()),
                403,
                "already a counselor",
            ),
            (
                "POST",
                "/api/counselor/application".into(),
                None,
                Some(application.clone()),
                401,
                "token",
            ),
            (
                "GET",
                "/api/counselor/my-application".into(),
                None,
                None,
                401,
                "token",
            ),
            (
                "GET",
                "/api/counselor/applications".into(),
                o,
                None,
                403,
                "administrators only",
            ),
            (
                "GET",
                "/api/counselor/applications?status=5".into(),
                a,
                None,
                400,
                "status",
            ),
            (
                "PUT",
                format!("/api/counselor/application/{app_id}/review"),
                o,
                Some(json!({"status": 1})),
                403,
                "administrators only",
            ),
            (
                "PUT",
                format!("/api/counselor/application/{app_id}/review"),
                a,
                Some(json!({"status": 1})),
                422,
                "not pending",
            ),
            (
                "PUT",
                format!("/api/counselor/application/{other_app}/review"),
                a,
                Some(json!({"status": 3})),
                400,
                "status",
            ),
            (
                "PUT",
                format!("/api/counselor/application/{other_app}/review"),
                a,
                Some(json!({"status": 2})),
                422,
                "reject_reason",
            ),
            (
                "PUT",
                "/api/counselor/application/99999/review".into(),
                a,
                Some(json!({"status": 1})),
                404,
                "application",
            ),
            ("GET", "/api/file/99999".into(), t, None, 404, "file"),
            ("DELETE", "/api/file/99999".into(), t, None, 404, "file"),
            ("POST", "/api/upload".into(), None, None, 401, "token"),
        ],
    )
    .await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_every_listed_route_is_served() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("alice").await;
    let doc = app
        .send("GET", "/api-docs/openapi.json", None, None)
        .await
        .body;
    assert_eq!(doc["info"]["title"], json!("mychat user API"));
    // contract b.1 and seed 001's user routes
    let contract = [
        "POST /api/register",
        "POST /api/login",
        "POST /api/token/refresh",
        "GET /api/user/info",
        "PUT /api/user/profile",
        "POST /api/user/password",
        "POST /api/upload/avatar",
        "POST /api/user/recharge",
        "GET /api/user/transactions",
        "GET /api/counselor/list",
        "GET /api/counselor/{id}",
        "GET /api/counselor/{id}/reviews",
        "POST /api/counselor/review",
        "POST /api/counselor/application",
        "GET /api/counselor/my-application",
        "GET /api/counselor/applications",
        "PUT /api/counselor/application/{id}/review",
        "POST /api/counselor/upload-certificate",
        "POST /api/order/create",
        "GET /api/order/list",
        "GET /api/order/{id}",
        "PUT /api/order/{id}/status",
        "POST /api/order/{id}/cancel",
        "GET /api/counselor/orders",
        "GET /api/order/{id}/validate",
        "GET /api/order/{id}/timeline",
        "POST /api/payment/create",
        "GET /api/payment/{id}",
        "GET /api/payment/list",
        "POST /api/payment/refund",
        "POST /api/payment/wechat/callback",
        "POST /api/payment/alipay/callback",
        "GET /api/notification/list",
        "POST /api/notification/{id}/read",
        "POST /api/notification/read-all",
        "DELETE /api/notification/{id}",
        "POST /api/chat/start/{order_id}",
        "GET /api/chat/order/{order_id}/session",
        "POST /api/chat/session/{session_id}/message",
        "GET /api/chat/messages/{session_id}",
        "POST /api/chat/end/{session_id}",
        "GET /api/chat/sessions",
        "POST /api/chat/session/{order_id}/start",
        "GET /api/chat/session/{session_id}/messages",
        "POST /api/chat/session/{session_id}/end",
        "GET /api/chat/billings",
        "GET /api/chat/counselor/billings",
        "GET /api/chat/counselor/account",
        "POST /api/chat/counselor/withdraw",
        "GET /api/chat/counselor/withdraws",
        "POST /api/upload",
        "GET /api/file/{id}",
        "DELETE /api/file/{id}",
        "GET /health",
        "GET /swagger",
    ];
    for route in contract {
        let (method, path) = route.split_once(' ').unwrap();
        assert!(
            doc["paths"][path][method.to_lowercase()].is_object(),
            "{route} is not documented"
        );
    }
    // every documented route answers (no router 404/405)
    let documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| ["get", "post", "put", "delete", "patch"].contains(&m.as_str()))
                .map(|m| (m.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(documented.len() >= contract.len());
    for (method, path) in documented {
        let path = path
            .replace("{payment_no}", "PAY0")
            .replace("{path}", "nothing.png");
        let path = path
            .split('/')
            .map(|s| if s.starts_with('{') { "1" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let res = app
            .http
            .request(method.parse().unwrap(), format!("{}{path}", app.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            !(status == 404 && body.is_empty() && !path.starts_with("/uploads")),
            "{method} {path} is not routed"
        );
    }
    let swagger = app
        .http
        .get(format!("{}/swagger", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(swagger.status(), 200);
}

#[tokio::test]
async fn in_sandbox_mode_the_cashier_pays_wechat_and_alipay_with_provider_format_signed_notifications(
) {
    let app = spawn_sandbox_app().await;
    let (counselor, _) = app.counselor("tina").await;
    let (_, token, _) = app.user("alice").await;
    for (method, prefix) in [("wechat", "SBXWX"), ("alipay", "SBXALI")] {
        let order = app.order(&token, counselor, 30).await;
        let (payment, _, pay_url) = app.payment(&token, order, method).await;
        assert_eq!(
            app.http.get(&pay_url).send().await.unwrap().status(),
            200,
            "{method}"
        );
        app.wait_order_status(&token, order, 1).await;
        let r = app.get(&format!("/api/payment/{payment}"), &token).await;
        assert!(
            r.data()["transaction_id"]
                .as_str()
                .unwrap()
                .starts_with(prefix),
            "{}",
            r.body
        );
        // the sandbox's own (HMAC) format cannot pay a provider payment
        let order = app.order(&token, counselor, 30).await;
        let (_, payment_no, _) = app.payment(&token, order, method).await;
        let body = serde_json::to_vec(&json!({"payment_no": payment_no, "transaction_id": "X", "amount": 15000, "trade_state": "SUCCESS"})).unwrap();
        let ts = chrono::Utc::now().timestamp().to_string();
        let sig =
            api::user::payments::checkout::sandbox_sign("sandbox-test-secret", &ts, "n", &body);
        let res = app
            .http
            .post(format!("{}/api/payment/sandbox/callback", app.url))
            .header("sandbox-timestamp", ts)
            .header("sandbox-nonce", "n")
            .header("sandbox-signature", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{method}");
    }
    // a notification signed with another key is still refused in sandbox mode
    let order = app.order(&token, counselor, 30).await;
    let (_, payment_no, _) = app.payment(&token, order, "alipay").await;
    let (stranger, _) = rsa_key();
    let form = api::user::payments::providers::sandbox::alipay_notification(
        &stranger,
        &payment_no,
        "T1",
        15_000,
    );
    assert_eq!(post_alipay(&app, form).await, "fail");
}

/// A chat stream that refuses writes fails only its own sessions over HTTP too: a message to a
/// session of that shard is a 503 with `Retry-After` and a problem naming the retry, and changes
/// nothing; a message to a session of another shard is stored as usual; once the stream takes
/// writes again, the resend with the same `client_msg_id` is stored, once.
#[tokio::test]
async fn a_chat_stream_that_refuses_writes_is_a_503_for_its_own_sessions_only() {
    let app = spawn_app().await;
    let (counselor, _) = app.counselor("carol").await;
    let (_, token, _) = app.user("bob").await;
    let layout = eventstore::ChatLayout::default();
    // Two active sessions whose chat records live in two streams.
    let mut sessions: Vec<i64> = Vec::new();
    while sessions.len() < 2 {
        let order = app.paid_order(&token, counselor).await;
        let r = app
            .post(&format!("/api/chat/start/{order}"), &token, json!({}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let s = r.data()["session_id"].as_i64().unwrap();
        if sessions
            .iter()
            .all(|&o| layout.place(o).stream != layout.place(s).stream)
        {
            sessions.push(s);
        }
    }
    let (s1, s2) = (sessions[0], sessions[1]);
    let say = |sid: i64, id: &str| {
        let url = format!("{}/api/chat/session/{sid}/message", app.url);
        app.http
            .post(url)
            .bearer_auth(&token)
            .json(&json!({"content": format!("to {sid}"), "client_msg_id": id}))
    };
    let r = say(s1, "before").send().await.unwrap();
    assert_eq!(r.status(), 200);

    // The first session's stream refuses new messages: full, discarding new ones.
    let original = testkit::refuse_new_messages(&app.js, layout.place(s1).stream)
        .await
        .unwrap();

    let r = say(s1, "during").send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "a problem document"
    );
    let problem: Value = r.json().await.unwrap();
    let detail = problem.to_string();
    assert!(
        detail.contains("retry with the same client_msg_id"),
        "{detail}"
    );
    let r = say(s2, "other").send().await.unwrap();
    assert_eq!(r.status(), 200, "the other shard's session is served");
    let count = |sid: i64| {
        let path = format!("/api/chat/session/{sid}/messages");
        let app = &app;
        let token = &token;
        async move {
            app.get(&path, token).await.data()["total"]
                .as_i64()
                .unwrap()
        }
    };
    assert_eq!(count(s1).await, 1, "the refused message changed nothing");

    // The stream takes writes again: the resend is stored, and only once.
    app.js.update_stream(&original).await.unwrap();
    let stored = |sid: i64, id: &'static str| {
        let request = say(sid, id);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let first = stored(s1, "during").await;
    assert_eq!(first["code"], 200, "{first}");
    let again = stored(s1, "during").await;
    assert_eq!(
        again["data"]["seq"], first["data"]["seq"],
        "a resend is the same message"
    );
    assert_eq!(count(s1).await, 2);
    assert_eq!(count(s2).await, 1);
}
