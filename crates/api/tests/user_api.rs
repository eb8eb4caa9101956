//! The user API over real HTTP against a real nats-server and PostgreSQL (issue 3).
//!
//! `spawn_app()` starts both servers (testkit, free ports), migrates, creates the streams, runs
//! every projector and the process manager, and serves the user API on port 0 — the app the
//! binary serves, in process. Each test reads as a story; the refusal tables check that each bad
//! request gets its 4xx naming the problem and that the log did not move.

use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use api::providers::alipay::AlipayConfig;
use api::providers::wechat::WechatConfig;
use api::user_config::{LoginLimits, UserApiConfig};
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
    ensure_streams(&js, &StreamSettings::default()).await.unwrap();
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
    let state = api::AppState {
        db: pool.clone(),
        bus,
        nats: client,
        jwt: Arc::new(api::JwtKeys::new(b"test-secret-test-secret-test-secret!", 3600)),
        watch,
        settings: Arc::new(api::ApiSettings {
            public_url: url.clone(),
            sandbox_secret: "sandbox-test-secret".into(),
            settle_timeout: Duration::from_secs(5),
        }),
    };
    let upload_dir = tempfile::tempdir().unwrap();
    let (wechat_key, wechat_pem) = rsa_key();
    let (alipay_key, alipay_pem) = rsa_key();
    let mut config = UserApiConfig::new(upload_dir.path().to_path_buf());
    config.login_limits = limits;
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
    async fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
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
            .send("POST", "/api/register", None, Some(json!({"username": name, "password": "secret123"})))
            .await;
        assert_eq!(r.status, 200, "register {name}: {}", r.body);
        let r = self
            .send("POST", "/api/login", None, Some(json!({"username": name, "password": "secret123"})))
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
type Refusal<'a> = (&'a str, String, Option<&'a str>, Option<Value>, u16, &'a str);

async fn assert_refusals(app: &TestApp, table: Vec<Refusal<'_>>) {
    let before = app.events_in_log().await;
    for (method, path, token, body, status, needle) in table {
        let r = app.send(method, &path, token, body.clone()).await;
        assert_eq!(
            r.status, status,
            "{method} {path} {body:?}: expected {status}, got {} {}",
            r.status, r.body
        );
        assert_eq!(r.body["code"].as_u64(), Some(u64::from(status)), "{method} {path}: {}", r.body);
        let msg = r.body["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{method} {path} {body:?}: msg {msg:?} should name {needle:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.events_in_log().await, before, "a refused request changed the log");
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
        .send("PUT", "/api/user/profile", Some(&token), Some(json!({"email": "a@example.com", "phone": "13800138000"})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let info = app.get("/api/user/info", &token).await;
    assert_eq!(info.data()["phone"], json!("13800138000"));

    // refresh rotates: the new refresh works once, the old one is refused and revokes its family
    let r = app.send("POST", "/api/token/refresh", None, Some(json!({"refresh_token": refresh}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let refresh2 = r.data()["refresh_token"].as_str().unwrap().to_string();
    let token2 = r.data()["token"].as_str().unwrap().to_string();
    assert_eq!(app.get("/api/user/info", &token2).await.status, 200);
    let r = app.send("POST", "/api/token/refresh", None, Some(json!({"refresh_token": refresh}))).await;
    assert_eq!(r.status, 401, "a rotated refresh token is refused");
    let r = app.send("POST", "/api/token/refresh", None, Some(json!({"token": refresh2}))).await;
    assert_eq!(r.status, 401, "re-use revoked the whole family: {}", r.body);

    // password change revokes every earlier token and returns a fresh pair
    let (_, bob, bob_refresh) = app.user("bob").await;
    let r = app.post("/api/user/password", &bob, json!({"old_password": "secret123", "new_password": "newsecret"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let bob_new = r.data()["token"].as_str().unwrap().to_string();
    assert_eq!(app.get("/api/user/info", &bob).await.status, 401);
    assert_eq!(app.get("/api/user/info", &bob_new).await.status, 200);
    let r = app.send("POST", "/api/token/refresh", None, Some(json!({"refresh_token": bob_refresh}))).await;
    assert_eq!(r.status, 401);
    let r = app.send("POST", "/api/login", None, Some(json!({"username": "bob", "password": "newsecret"}))).await;
    assert_eq!(r.status, 200);

    // logout revokes the access token and the refresh tokens
    let (_, carol, carol_refresh) = app.user("carol").await;
    assert_eq!(app.post("/api/logout", &carol, json!({})).await.status, 200);
    assert_eq!(app.get("/api/user/info", &carol).await.status, 401);
    let r = app.send("POST", "/api/token/refresh", None, Some(json!({"refresh_token": carol_refresh}))).await;
    assert_eq!(r.status, 401);

    // a disabled user is refused at login and with an existing token
    let (dave_id, dave, _) = app.user("dave").await;
    sqlx::query("UPDATE users SET status = 0 WHERE id = $1").bind(dave_id).execute(&app.pool).await.unwrap();
    assert_eq!(app.get("/api/user/info", &dave).await.status, 403);
    let r = app.send("POST", "/api/login", None, Some(json!({"username": "dave", "password": "secret123"}))).await;
    assert_eq!(r.status, 403);

    // login is rate-limited per account (3 a minute here; alice used 1)
    app.user("erin").await;
    let mut codes = Vec::new();
    for _ in 0..3 {
        let r = app.send("POST", "/api/login", None, Some(json!({"username": "erin", "password": "wrong"}))).await;
        codes.push(r.status);
    }
    assert_eq!(codes, vec![401, 401, 429], "the 4th attempt in a minute is refused");
    let r = app.send("POST", "/api/login", None, Some(json!({"username": "erin", "password": "secret123"}))).await;
    assert_eq!(r.status, 429, "even with the right password");
    assert!(r.body["msg"].as_str().unwrap().contains("too many login attempts"));

    // transactions list (empty here) and its refusals
    let r = app.get("/api/user/transactions?page=1&page_size=20", &token2).await;
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
            ("POST", "/api/register".into(), None, Some(json!({"username": "ab", "password": "secret123"})), 400, "username"),
            ("POST", "/api/register".into(), None, Some(json!({"username": "alice", "password": "secret123"})), 400, "username"),
            ("POST", "/api/register".into(), None, Some(json!({"username": "frank", "password": "123"})), 400, "password"),
            ("POST", "/api/register".into(), None, Some(json!({"username": "frank", "password": "secret123", "email": "nope"})), 400, "email"),
            ("POST", "/api/register".into(), None, Some(json!({"username": 5, "password": "secret123"})), 400, "username"),
            ("POST", "/api/login".into(), None, Some(json!({"username": "alice"})), 400, "password"),
            ("POST", "/api/login".into(), None, Some(json!({"username": "nobody", "password": "secret123"})), 401, "wrong"),
            ("POST", "/api/token/refresh".into(), None, Some(json!({})), 400, "refresh_token"),
            ("POST", "/api/token/refresh".into(), None, Some(json!({"refresh_token": "rt_forged"})), 401, "invalid"),
            ("POST", "/api/logout".into(), None, None, 401, "token"),
            ("GET", "/api/user/info".into(), None, None, 401, "missing bearer token"),
            ("GET", "/api/user/info".into(), Some(&tampered), None, 401, "invalid token"),
            ("GET", "/api/user/info".into(), Some(&expired), None, 401, "invalid token"),
            ("PUT", "/api/user/profile".into(), t, Some(json!({})), 400, "nothing to update"),
            ("PUT", "/api/user/profile".into(), t, Some(json!({"email": "x@"})), 400, "email"),
            ("PUT", "/api/user/profile".into(), t, Some(json!({"phone": "12345"})), 400, "phone"),
            ("POST", "/api/user/password".into(), t, Some(json!({"old_password": "bad", "new_password": "secret456"})), 400, "old_password"),
            ("POST", "/api/user/password".into(), t, Some(json!({"old_password": "secret123", "new_password": "1"})), 400, "new_password"),
            ("POST", "/api/user/recharge".into(), t, Some(json!({"amount": 0})), 400, "amount"),
            ("POST", "/api/user/recharge".into(), t, Some(json!({"amount": 1.234})), 400, "amount"),
            ("POST", "/api/user/recharge".into(), t, Some(json!({"amount": "ten"})), 400, "amount"),
            ("POST", "/api/user/recharge".into(), t, Some(json!({"amount": 10, "payment_method": "cash"})), 400, "payment_method"),
            ("GET", "/api/user/transactions?page_size=101".into(), t, None, 400, "page_size"),
            ("GET", "/api/user/transactions?type=gift".into(), t, None, 400, "type"),
            ("GET", "/api/counselor/list?sort_by=age".into(), None, None, 400, "sort_by"),
            ("GET", "/api/counselor/list?page=0".into(), None, None, 400, "page"),
            ("GET", "/api/counselor/999".into(), None, None, 404, "counselor"),
            ("GET", "/api/counselor/abc".into(), None, None, 400, ""),
        ],
    )
    .await;
}

#[tokio::test]
async fn recharge_goes_through_a_payment_and_credits_the_wallet_once() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("alice").await;
    let r = app.post("/api/user/recharge", &token, json!({"amount": 100.5})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.data()["balance"], json!(0.0), "nothing is credited before the payment");
    let pay_url = r.data()["pay_url"].as_str().unwrap().to_string();
    assert_eq!(app.http.get(&pay_url).send().await.unwrap().status(), 200);
    // opening the cashier again is a second provider transaction for a captured payment: refused
    assert_eq!(app.http.get(&pay_url).send().await.unwrap().status(), 502);
    let mut balance = json!(null);
    for _ in 0..200 {
        balance = app.get("/api/user/info", &token).await.data()["balance"].clone();
        if balance == json!(100.5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(balance, json!(100.5));
    let r = app.get("/api/user/transactions?type=recharge", &token).await;
    assert_eq!(r.data()["total"], json!(1));
    assert_eq!(r.data()["transactions"][0]["amount"], json!(100.5));
    assert_eq!(r.data()["transactions"][0]["type"], json!("recharge"));
    let r = app.get("/api/payment/list", &token).await;
    assert_eq!(r.data()["payments"][0]["purpose"], json!("recharge"));
    assert_eq!(r.data()["payments"][0]["status"], json!(1));
}
