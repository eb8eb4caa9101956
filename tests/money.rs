//! Money fails closed, reconciles to the fen, and `mychat up` stops cleanly — against the
//! `mychat` binary, real nats-server and PostgreSQL.
//!
//! - `serve` refuses to start with a payment provider that has no credentials (the error names
//!   the missing setting); without the sandbox its cashier and callback do not exist and a
//!   sandbox payment is refused naming `payment_method`, changing nothing; with the sandbox
//!   enabled explicitly it says so, and opening a paid payment's cashier page again answers 200
//!   "paid".
//! - After the demo, `finance reconcile --schema` of an audit replay exits 1 naming the table,
//!   the row and the column for every money-bearing column tampered by one fen (or a status
//!   moved back), and 0 once restored.
//! - Notifications written by the API (an application's review) and a user's read / delete marks
//!   survive `projections rebuild --all`.
//! - SIGTERM or SIGINT to `mychat up`'s process group, or SIGTERM to its servers first, stops it
//!   within 10 s with PostgreSQL shut down cleanly and no child left; the next `mychat up`
//!   starts on the same data.

#[path = "support/up.rs"]
mod support;

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits for `child` up to `limit`; kills it and panics past that.
fn wait_exit(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- payments fail closed ----------------------------------------------------------------------

#[test]
fn serve_refuses_a_payment_provider_without_credentials_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 4] = [
        (
            &[],
            &["payments.wechat.mchid", "MYCHAT_PAYMENTS__WECHAT__MCHID"],
        ),
        (
            &[("MYCHAT_PAYMENTS__METHODS", "alipay")],
            &["payments.alipay.app_id", "MYCHAT_PAYMENTS__ALIPAY__APP_ID"],
        ),
        // Half a provider is refused even with the sandbox on.
        (
            &[
                ("MYCHAT_PAYMENTS__SANDBOX", "true"),
                ("MYCHAT_PAYMENTS__WECHAT__MCHID", "1900000001"),
            ],
            &["payments.wechat.appid"],
        ),
        (
            &[("MYCHAT_BUSINESS_TIME_ZONE", "Asia/Atlantis")],
            &["business_time_zone"],
        ),
    ];
    for (env, expected) in cases {
        // Nothing listens on these: the check must come before any connection.
        let mut child = Command::new(env!("CARGO_BIN_EXE_mychat"))
            .args(["serve", "api"])
            .env("MYCHAT_NATS_URL", "nats://127.0.0.1:1")
            .env(
                "MYCHAT_DATABASE_URL",
                "postgres://mychat@127.0.0.1:1/mychat",
            )
            .env("MYCHAT_DATA_DIR", dir.path())
            .env("MYCHAT_LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (status, _) = wait_exit(&mut child, Duration::from_secs(20));
        let out = child.wait_with_output().unwrap();
        assert!(!status.success(), "{env:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        for e in expected {
            assert!(err.contains(e), "{env:?}: `{e}` not named: {}", text(&out));
        }
    }
}

/// A `mychat serve api` child on real servers.
struct Serve {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = wait_exit(&mut self.child, Duration::from_secs(15));
    }
}

fn serve_api(
    nats: &testkit::NatsServer,
    pg: &testkit::Postgres,
    dir: &Path,
    env: &[(&str, &str)],
) -> Serve {
    serve_part("api", nats, pg, dir, env)
}

fn serve_part(
    part: &str,
    nats: &testkit::NatsServer,
    pg: &testkit::Postgres,
    dir: &Path,
    env: &[(&str, &str)],
) -> Serve {
    let port = testkit::free_port();
    let log = dir.join(format!("serve-{port}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_mychat"))
        .args(["serve", part, "--addr", &format!("127.0.0.1:{port}")])
        .env("MYCHAT_NATS_URL", nats.url())
        .env("MYCHAT_DATABASE_URL", pg.url_for("mychat"))
        .env("MYCHAT_DATA_DIR", dir)
        .env("MYCHAT_USER_ADDR", format!("127.0.0.1:{port}"))
        .env("MYCHAT_LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "serve did not listen: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Serve {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    }
}

async fn call(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    token: &str,
    body: Value,
) -> (u16, Value) {
    let r = http
        .request(method.parse().unwrap(), url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A fingerprint of the money: the `EVENTS` head and the payments and orders tables.
async fn money_fingerprint(pool: &sqlx::PgPool, nats: &async_nats::Client) -> String {
    let js = async_nats::jetstream::new(nats.clone());
    let head = js
        .get_stream(eventstore::EVENTS_STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    let tables: String = sqlx::query_scalar(
        "SELECT (SELECT md5(COALESCE(string_agg(p::text, '|' ORDER BY p.id), '')) FROM payments p) || \
         (SELECT md5(COALESCE(string_agg(o::text, '|' ORDER BY o.id), '')) FROM orders o)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    format!("{head}:{tables}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_sandbox_there_is_no_cashier_and_with_it_a_paid_page_says_paid() {
    let nats = testkit::NatsServer::start().unwrap();
    let pg = testkit::Postgres::start().unwrap();
    pg.ensure_database("mychat").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let client = nats.connect().await.unwrap();

    // No provider offered, no sandbox: the server starts, payments fail closed.
    let off = serve_api(&nats, &pg, dir.path(), &[("MYCHAT_PAYMENTS__METHODS", "")]);
    let pool = sqlx::PgPool::connect(&pg.url_for("mychat")).await.unwrap();
    for (method, path) in [
        ("GET", "/sandbox/cashier/PAY1"),
        ("POST", "/api/payment/sandbox/callback"),
    ] {
        let r = http
            .request(method.parse().unwrap(), format!("{}{path}", off.url))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            404,
            "{method} {path} exists without the sandbox"
        );
    }
    let (s, _) = call(
        &http,
        "POST",
        &format!("{}/api/register", off.url),
        "",
        json!({"username": "payer", "password": "secret123"}),
    )
    .await;
    assert_eq!(s, 200);
    let (_, login) = call(
        &http,
        "POST",
        &format!("{}/api/login", off.url),
        "",
        json!({"username": "payer", "password": "secret123"}),
    )
    .await;
    let token = login["data"]["token"].as_str().unwrap().to_string();
    let counselor: i64 = sqlx::query_scalar(
        "INSERT INTO counselors (name, price_fen) VALUES ('Tina', 500) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (s, order) = call(
        &http,
        "POST",
        &format!("{}/api/order/create", off.url),
        &token,
        json!({"counselor_id": counselor, "duration": 10, "schedule_time": "2026-12-01"}),
    )
    .await;
    assert_eq!(s, 200, "{order}");
    let order_id = order["data"]["order_id"].as_i64().unwrap();
    let before = money_fingerprint(&pool, &client).await;
    for method in ["sandbox", "wechat", "alipay"] {
        let (s, b) = call(
            &http,
            "POST",
            &format!("{}/api/payment/create", off.url),
            &token,
            json!({"order_id": order_id, "payment_method": method}),
        )
        .await;
        // A documented method this server does not offer: refused by its configuration (422).
        assert_eq!(s, 422, "{method}: {b}");
        assert_eq!(b["errors"][0]["field"], "payment_method", "{b}");
        assert_eq!(b["status"], 422);
    }
    assert_eq!(
        money_fingerprint(&pool, &client).await,
        before,
        "refusals change nothing"
    );
    drop(off);

    // The sandbox enabled explicitly: logged; a paid payment's page opened again says "paid"
    // (the projectors run beside it, as in a deployment: the cashier finds the payment in the
    // read model).
    let _projectors = serve_part("projectors", &nats, &pg, dir.path(), &[]);
    let on = serve_api(
        &nats,
        &pg,
        dir.path(),
        &[("MYCHAT_PAYMENTS__SANDBOX", "true")],
    );
    let log = std::fs::read_to_string(&on.log).unwrap();
    assert!(log.contains("sandbox payments enabled"), "{log}");
    let (s, payment) = call(
        &http,
        "POST",
        &format!("{}/api/payment/create", on.url),
        &token,
        json!({"order_id": order_id, "payment_method": "sandbox"}),
    )
    .await;
    assert_eq!(s, 200, "{payment}");
    let pay_url = payment["data"]["pay_url"].as_str().unwrap().to_string();
    assert!(pay_url.starts_with(&on.url), "{pay_url}");
    for _ in 0..3 {
        let page = http.get(&pay_url).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("paid"));
    }
}

// ---- reconcile every money figure; notifications survive a rebuild ------------------------------

fn mychat(up: &support::Up, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mychat"))
        .args(args)
        .env("MYCHAT_NATS_URL", &up.nats_url)
        .env("MYCHAT_DATABASE_URL", &up.database_url)
        .env("MYCHAT_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_names_every_tampered_money_column_and_a_rebuild_keeps_every_notification() {
    let up = support::start_up();
    let demo = Command::new(env!("CARGO_BIN_EXE_mychat"))
        .args([
            "demo", "--api", &up.api, "--admin", &up.admin, "--ws", &up.ws,
        ])
        .output()
        .unwrap();
    assert!(demo.status.success(), "demo: {}", text(&demo));
    assert!(String::from_utf8_lossy(&demo.stdout).contains("sandbox provider"));
    let pool = sqlx::PgPool::connect(&up.database_url).await.unwrap();

    let replay = mychat(
        &up,
        &["audit", "replay", "--at", &chrono::Utc::now().to_rfc3339()],
    );
    assert!(replay.status.success(), "{}", text(&replay));
    let schema: String = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'audit_%' ORDER BY nspname DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let reconcile = || mychat(&up, &["finance", "reconcile", "--schema", &schema]);
    let clean = reconcile();
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));

    // (table, key column(s) as reconcile names them, the change, its undo, columns named)
    let tampers: &[(&str, &str, &str, &str, &[&str])] = &[
        (
            "orders",
            "'id=' || id",
            "amount_fen = amount_fen + 1",
            "amount_fen = amount_fen - 1",
            &["amount_fen"],
        ),
        (
            "orders",
            "'id=' || id",
            "refunded_fen = refunded_fen + 1",
            "refunded_fen = refunded_fen - 1",
            &["refunded_fen"],
        ),
        (
            "orders",
            "'id=' || id",
            "price_fen = price_fen + 1",
            "price_fen = price_fen - 1",
            &["price_fen"],
        ),
        (
            "orders",
            "'id=' || id",
            "status = status - 1",
            "status = status + 1",
            &["status"],
        ),
        (
            "payments",
            "'id=' || id",
            "amount_fen = amount_fen + 1",
            "amount_fen = amount_fen - 1",
            &["amount_fen"],
        ),
        (
            "payments",
            "'id=' || id",
            "refunded_fen = refunded_fen + 1",
            "refunded_fen = refunded_fen - 1",
            &["refunded_fen"],
        ),
        (
            "payments",
            "'id=' || id",
            "status = status + 2",
            "status = status - 2",
            &["status"],
        ),
        (
            "chat_sessions",
            "'id=' || id",
            "total_amount_fen = total_amount_fen + 1",
            "total_amount_fen = total_amount_fen - 1",
            &["total_amount_fen"],
        ),
        (
            "chat_sessions",
            "'id=' || id",
            "price_fen = price_fen + 1",
            "price_fen = price_fen - 1",
            &["price_fen"],
        ),
        (
            "chat_billings",
            "'session_id=' || session_id",
            "platform_fee_fen = platform_fee_fen - 1, counselor_fee_fen = counselor_fee_fen + 1",
            "platform_fee_fen = platform_fee_fen + 1, counselor_fee_fen = counselor_fee_fen - 1",
            &["platform_fee_fen", "counselor_fee_fen"],
        ),
        (
            "chat_billings",
            "'session_id=' || session_id",
            "total_amount_fen = total_amount_fen + 1",
            "total_amount_fen = total_amount_fen - 1",
            &["total_amount_fen"],
        ),
        (
            "chat_billings",
            "'session_id=' || session_id",
            "refund_fen = refund_fen + 1",
            "refund_fen = refund_fen - 1",
            &["refund_fen"],
        ),
        (
            "withdrawals",
            "'id=' || id",
            "amount_fen = amount_fen + 1",
            "amount_fen = amount_fen - 1",
            &["amount_fen"],
        ),
        (
            "withdrawals",
            "'id=' || id",
            "status = 0",
            "status = 3",
            &["status"],
        ),
        (
            "wallet_transactions",
            "'stream_seq=' || stream_seq || ',idx=' || idx",
            "amount_fen = amount_fen + 1",
            "amount_fen = amount_fen - 1",
            &["amount_fen"],
        ),
        (
            "wallet_transactions",
            "'stream_seq=' || stream_seq || ',idx=' || idx",
            "balance_fen = balance_fen + 1",
            "balance_fen = balance_fen - 1",
            &["balance_fen"],
        ),
        (
            "user_wallets",
            "'user_id=' || user_id",
            "balance_fen = balance_fen + 1",
            "balance_fen = balance_fen - 1",
            &["balance_fen"],
        ),
        (
            "counselor_accounts",
            "'counselor_id=' || counselor_id",
            "balance_fen = balance_fen + 1",
            "balance_fen = balance_fen - 1",
            &["balance_fen"],
        ),
    ];
    for (table, key_sql, change, undo, columns) in tampers {
        let key: String = sqlx::query_scalar(&format!(
            "SELECT {key_sql} FROM {schema}.{table} ORDER BY 1 DESC LIMIT 1"
        ))
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| panic!("{table}: no row to tamper with: {e}"));
        let set = |sql: &str| format!("UPDATE {schema}.{table} SET {sql} WHERE {key_sql} = $1");
        sqlx::query(&set(change))
            .bind(&key)
            .execute(&pool)
            .await
            .unwrap();
        let out = reconcile();
        let shown = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{table} {key} {change}: {}",
            text(&out)
        );
        for column in *columns {
            assert!(
                shown.contains(&format!("{table} {key} {column}")),
                "{table} {key} {column} not named:\n{shown}"
            );
        }
        sqlx::query(&set(undo))
            .bind(&key)
            .execute(&pool)
            .await
            .unwrap();
    }
    let clean = reconcile();
    assert_eq!(clean.status.code(), Some(0), "restored: {}", text(&clean));

    // Notifications the API writes (an application's review) and the user's marks survive a
    // rebuild of every read model.
    let http = reqwest::Client::new();
    let (s, _) = call(
        &http,
        "POST",
        &format!("{}/api/register", up.api),
        "",
        json!({"username": "applicant1", "password": "secret123"}),
    )
    .await;
    assert_eq!(s, 200);
    let (_, login) = call(
        &http,
        "POST",
        &format!("{}/api/login", up.api),
        "",
        json!({"username": "applicant1", "password": "secret123"}),
    )
    .await;
    let token = login["data"]["token"].as_str().unwrap().to_string();
    let (s, app) = call(
        &http,
        "POST",
        &format!("{}/api/counselor/application", up.api),
        &token,
        json!({"name": "申请人", "phone": "13800138000", "title": "咨询师", "specialty": "情感", "certificate_img1": "https://example.com/cert.png"}),
    )
    .await;
    assert_eq!(s, 200, "{app}");
    let application: i64 =
        sqlx::query_scalar("SELECT id FROM counselor_applications ORDER BY id DESC LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    sqlx::query("UPDATE users SET is_admin = TRUE WHERE username = 'demo'")
        .execute(&pool)
        .await
        .unwrap();
    let (_, admin_login) = call(
        &http,
        "POST",
        &format!("{}/api/login", up.api),
        "",
        json!({"username": "demo", "password": "demo123"}),
    )
    .await;
    let admin_token = admin_login["data"]["token"].as_str().unwrap().to_string();
    let (s, b) = call(
        &http,
        "PUT",
        &format!("{}/api/counselor/application/{application}/review", up.api),
        &admin_token,
        json!({"status": 2, "reject_reason": "资料不全"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    // The demo's user's own notifications: read one, delete another.
    let demo_user: String = sqlx::query_scalar(
        "SELECT username FROM users WHERE username LIKE 'demo\\_%' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (_, login) = call(
        &http,
        "POST",
        &format!("{}/api/login", up.api),
        "",
        json!({"username": demo_user, "password": "demo-password-1"}),
    )
    .await;
    let user_token = login["data"]["token"].as_str().unwrap().to_string();
    let list = |token: String| {
        let http = http.clone();
        let url = format!("{}/api/notification/list?page_size=100", up.api);
        async move { call(&http, "GET", &url, &token, json!({})).await.1 }
    };
    let mine = list(user_token.clone()).await;
    let ids: Vec<i64> = mine["data"]["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect();
    assert!(ids.len() >= 2, "{mine}");
    let (s, _) = call(
        &http,
        "POST",
        &format!("{}/api/notification/{}/read", up.api, ids[0]),
        &user_token,
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(
        &http,
        "DELETE",
        &format!("{}/api/notification/{}", up.api, ids[1]),
        &user_token,
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let applicant_before = list(token.clone()).await;
    let demo_before = list(user_token.clone()).await;
    assert_eq!(applicant_before["data"]["total"], 1, "{applicant_before}");

    let rebuild = mychat(&up, &["projections", "rebuild", "--all"]);
    assert!(rebuild.status.success(), "{}", text(&rebuild));
    assert_eq!(
        list(token).await,
        applicant_before,
        "the review's notification survives"
    );
    let demo_after = list(user_token).await;
    let _ = admin_token;
    assert_eq!(demo_after, demo_before, "read and deleted marks survive");
    assert_eq!(
        demo_after["data"]["notifications"][0]["is_read"],
        json!(true)
    );
    assert!(!demo_after["data"]["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["id"] == ids[1]));
    // An audit replay of the notifications equals the live table (nothing the API wrote is in
    // it).
    let replay = mychat(
        &up,
        &[
            "audit",
            "replay",
            "--at",
            &chrono::Utc::now().to_rfc3339(),
            "--projection",
            "notifications",
        ],
    );
    assert!(replay.status.success(), "{}", text(&replay));
    let schema: String = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'audit_%' ORDER BY nspname DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let diff = mychat(&up, &["audit", "diff", &schema]);
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff));
}

// ---- stop cleanly --------------------------------------------------------------------------------

/// `mychat up` as a terminal runs it: the leader of its own process group.
struct Group {
    child: Child,
    dir: std::path::PathBuf,
    api: String,
    run: usize,
}

fn up_as_a_job(dir: &Path, ports: &[u16; 6], run: usize) -> Group {
    let [user, admin, ws, nats, pg, metrics] = *ports;
    let log = std::fs::File::create(dir.join(format!("up-{run}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mychat"))
        .arg("up")
        .env_remove("MYCHAT_NATS_URL")
        .env_remove("MYCHAT_DATABASE_URL")
        .env("MYCHAT_DATA_DIR", dir.join("data"))
        .env("MYCHAT_USER_ADDR", format!("127.0.0.1:{user}"))
        .env("MYCHAT_ADMIN_ADDR", format!("127.0.0.1:{admin}"))
        .env("MYCHAT_WS_ADDR", format!("127.0.0.1:{ws}"))
        .env("MYCHAT_METRICS_ADDR", format!("127.0.0.1:{metrics}"))
        .env("MYCHAT_NATS_PORT", nats.to_string())
        .env("MYCHAT_PG_PORT", pg.to_string())
        .env("MYCHAT_LOG_FORMAT", "json")
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    for p in [user, admin, ws, metrics] {
        while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mychat up did not listen on {p}: {}",
                std::fs::read_to_string(dir.join(format!("up-{run}.log"))).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Group {
        child,
        dir: dir.to_path_buf(),
        api: format!("http://127.0.0.1:{user}"),
        run,
    }
}

/// The processes whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.trim().to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// Signals the job as `how` says, then checks it is gone within 10 s, cleanly.
fn stop(mut job: Group, how: &str) {
    let run = job.run;
    let pid = job.child.id();
    let children = children_of(pid);
    assert_eq!(children.len(), 2, "nats-server and postgres: {children:?}");
    let pg_log = job.dir.join("data/pg.log");
    let shutdowns_before = std::fs::read_to_string(&pg_log)
        .unwrap_or_default()
        .matches("database system is shut down")
        .count();
    let group = Pid::from_raw(pid as i32);
    match how {
        "SIGTERM to the group" => killpg(group, Signal::SIGTERM).unwrap(),
        "SIGINT to the group" => killpg(group, Signal::SIGINT).unwrap(),
        // systemd's control-group stop: every process, the servers first.
        _ => {
            for c in &children {
                let _ = kill(Pid::from_raw(*c), Signal::SIGTERM);
            }
            std::thread::sleep(Duration::from_millis(200));
            killpg(group, Signal::SIGTERM).unwrap();
        }
    }
    let (status, took) = wait_exit(&mut job.child, Duration::from_secs(10));
    let log = std::fs::read_to_string(job.dir.join(format!("up-{run}.log"))).unwrap_or_default();
    assert!(took < Duration::from_secs(10), "{how}: {took:?}");
    let _ = status;
    std::thread::sleep(Duration::from_millis(200));
    for c in &children {
        assert!(!alive(*c), "{how}: child {c} left running\n{log}");
    }
    let shutdowns = std::fs::read_to_string(&pg_log)
        .unwrap_or_default()
        .matches("database system is shut down")
        .count();
    assert_eq!(
        shutdowns,
        shutdowns_before + 1,
        "{how}: PostgreSQL did not shut down cleanly\n{log}"
    );
    assert!(log.contains("shutting down"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_to_mychat_ups_process_group_stop_it_cleanly_and_it_starts_again_on_the_same_data()
{
    let dir = tempfile::Builder::new()
        .prefix("mychat-stop")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    let p = testkit::free_port;
    let ports = [p(), p(), p(), p(), p(), p()];
    let http = reqwest::Client::new();
    let job = up_as_a_job(dir.path(), &ports, 0);
    let log = std::fs::read_to_string(dir.path().join("up-0.log")).unwrap();
    assert!(
        log.contains("sandbox payments enabled"),
        "mychat up says it enables the sandbox"
    );
    let (s, _) = call(
        &http,
        "POST",
        &format!("{}/api/register", job.api),
        "",
        json!({"username": "survivor", "password": "secret123"}),
    )
    .await;
    assert_eq!(s, 200);
    let how = [
        "SIGTERM to the group",
        "SIGINT to the group",
        "SIGTERM to the servers first, then to the group",
    ];
    let mut job = job;
    for (run, how) in how.iter().enumerate() {
        let api = job.api.clone();
        tokio::task::block_in_place(|| stop(job, how));
        job = tokio::task::block_in_place(|| up_as_a_job(dir.path(), &ports, run + 1));
        assert_eq!(job.api, api);
        let (s, b) = call(
            &http,
            "POST",
            &format!("{}/api/login", job.api),
            "",
            json!({"username": "survivor", "password": "secret123"}),
        )
        .await;
        assert_eq!(s, 200, "after {how}, the data is there: {b}");
    }
    tokio::task::block_in_place(|| stop(job, "SIGTERM to the group"));
}
