//! Projections, replays and reconciliation against the `mychat` binary.
//!
//! 1. After `mychat demo` on `mychat up`: `finance reconcile` exits 0; `projections status` and
//!    `/metrics` show the projections caught up; `projections rebuild --all` leaves every read
//!    model as it was (`audit diff` against a replay taken before); `audit replay --at` a time in
//!    the middle of the demo shows the state then; `audit events` prints an aggregate's history;
//!    a hand-edited balance makes `finance reconcile` and `audit diff` exit non-zero naming the
//!    row.
//! 2. Real `mychat serve projectors` child processes, two at a time on one database, SIGKILLed
//!    while they project: the read models end equal to a fresh replay.

#[path = "support/up.rs"]
mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{start_up, Up};

/// Runs `mychat <args>` against the servers at `nats_url` / `database_url`.
fn mychat(nats_url: &str, database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mychat"))
        .args(args)
        .env("MYCHAT_NATS_URL", nats_url)
        .env("MYCHAT_DATABASE_URL", database_url)
        .env("MYCHAT_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Up {
    fn run(&self, args: &[&str]) -> Output {
        mychat(&self.nats_url, &self.database_url, args)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_demo_reconcile_rebuild_and_audit_replay_hold() {
    let up = start_up();
    let demo = Command::new(env!("CARGO_BIN_EXE_mychat"))
        .args([
            "demo", "--api", &up.api, "--admin", &up.admin, "--ws", &up.ws,
        ])
        .output()
        .unwrap();
    assert!(demo.status.success(), "demo failed: {}", text(&demo));
    let summary: Value = serde_json::from_str(
        String::from_utf8_lossy(&demo.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    let order_id = summary["order_id"].as_i64().unwrap();
    let counselor_id = summary["counselor_id"].as_i64().unwrap();

    // Reconcile exits 0 (the process manager's last follow-ups may still be in flight).
    let mut out = up.run(&["finance", "reconcile"]);
    for _ in 0..10 {
        if out.status.success() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        out = up.run(&["finance", "reconcile"]);
    }
    assert!(out.status.success(), "reconcile: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("RECONCILED"));
    let out = up.run(&["finance", "reconcile", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["matched"]["payments"], 1, "{report}");
    assert_eq!(report["matched"]["sessions"], 1, "{report}");
    assert_eq!(
        report["totals"]["billed"].as_i64(),
        summary["billed_fen"].as_i64()
    );

    // Status and /metrics.
    let out = up.run(&["projections", "status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let statuses: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ledger = statuses
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ledger")
        .unwrap();
    assert_eq!(ledger["state"], "running", "{statuses}");
    assert_eq!(ledger["lag_events"], 0, "{statuses}");
    let metrics = reqwest::get(&up.metrics)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mychat_projection_lag_events{projection=\"ledger\"} 0"),
        "{metrics}"
    );

    // An aggregate's history.
    let out = up.run(&[
        "audit",
        "events",
        "--aggregate",
        &format!("order:{order_id}"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let history: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = history
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "OrderPlaced",
            "OrderPaid",
            "OrderServiceStarted",
            "OrderCompleted"
        ]
    );
    assert!(history[1]["command_id"]
        .as_str()
        .unwrap()
        .starts_with("pm:"));

    // A replay of now, then rebuild --all: every read model as it was.
    let js = async_nats::jetstream::new(async_nats::connect(&up.nats_url).await.unwrap());
    let mut events = js.get_stream("EVENTS").await.unwrap();
    let head = events.info().await.unwrap().state.last_sequence;
    let out = up.run(&["audit", "replay", "--at", &head.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let now_schema = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(now_schema, format!("audit_seq{head}"));
    let out = up.run(&["audit", "diff", &now_schema]);
    assert!(out.status.success(), "{}", text(&out));
    let out = up.run(&["projections", "rebuild", "--all"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ledger: version 1 rebuilt"));
    let out = up.run(&["audit", "diff", &now_schema]);
    assert!(out.status.success(), "after rebuild: {}", text(&out));

    // audit replay --at a time in the middle of the demo: after the payment, before the bill.
    let mut billed_seq = None;
    for seq in 1..=head {
        let m = events.direct_get(seq).await.unwrap();
        if m.subject.starts_with("ev.session.")
            && String::from_utf8_lossy(&m.payload).contains("SessionBilled")
        {
            billed_seq = Some(seq);
            break;
        }
    }
    let before_bill = events.direct_get(billed_seq.unwrap() - 1).await.unwrap();
    let at = chrono::DateTime::from_timestamp(
        before_bill.time.unix_timestamp(),
        before_bill.time.nanosecond(),
    )
    .unwrap()
    .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let out = up.run(&["audit", "replay", "--at", &at]);
    assert!(out.status.success(), "{}", text(&out));
    let mid_schema = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let pool = sqlx::PgPool::connect(&up.database_url).await.unwrap();
    let (status_then, billings_then): (i16, i64) = sqlx::query_as(&format!(
        "SELECT (SELECT status FROM {mid_schema}.orders WHERE id = $1), \
         (SELECT count(*) FROM {mid_schema}.chat_billings)"
    ))
    .bind(order_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((status_then, billings_then), (1, 0), "paid, not yet billed");
    let status_now: i16 = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status_now, 2);
    let out = up.run(&["audit", "diff", &mid_schema]);
    assert!(!out.status.success());
    let diff_lines = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        diff_lines
            .lines()
            .any(|l| l.starts_with(&format!("orders [id={order_id}]:"))
                && l.contains(" status: 1 ≠ 2;")),
        "{}",
        text(&out)
    );
    // The replayed moment reconciles on its own.
    let out = up.run(&["finance", "reconcile", "--schema", &mid_schema]);
    assert!(out.status.success(), "{}", text(&out));

    // The API's money figures are the ledger's (after order → pay → chat → bill → withdraw).
    let ledger = |account: String| {
        let pool = pool.clone();
        async move {
            let signed: i64 = sqlx::query_scalar(
                "SELECT COALESCE((SELECT balance_fen FROM ledger_balances WHERE account = $1), 0)",
            )
            .bind(&account)
            .fetch_one(&pool)
            .await
            .unwrap();
            -signed // user and counselor accounts are credit accounts
        }
    };
    let user_id = summary["user_id"].as_i64().unwrap();
    let user_balance = ledger(format!("user:{user_id}:balance")).await;
    let payable = ledger(format!("counselor:{counselor_id}:payable")).await;
    let in_transit = ledger(format!("counselor:{counselor_id}:in_transit")).await;
    assert_eq!(summary["user_balance_fen"].as_i64(), Some(user_balance));
    assert_eq!(user_balance, summary["refund_fen"].as_i64().unwrap());
    assert_eq!(summary["counselor_balance_fen"].as_i64(), Some(payable));
    assert_eq!(in_transit, 0);
    let http = reqwest::Client::new();
    let data = |v: Value| {
        assert_eq!(v["code"], 200, "{v}");
        v["data"].clone()
    };
    let login = data(
        http.post(format!("{}/api/login", up.api))
            .json(&serde_json::json!({ "username": summary["username"], "password": "demo-password-1" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap(),
    );
    let user_token = login["token"].as_str().unwrap().to_string();
    let admin_login = data(
        http.post(format!("{}/api/admin/login", up.admin))
            .json(&serde_json::json!({ "username": "admin", "password": "admin123" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap(),
    );
    let admin_token = admin_login["token"].as_str().unwrap().to_string();
    let get = |url: String, token: String| {
        let http = http.clone();
        async move {
            let v: Value = http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(v["code"], 200, "{v}");
            v
        }
    };
    let api_figures = || async {
        let info = get(format!("{}/api/user/info", up.api), user_token.clone()).await;
        let account = get(
            format!("{}/api/admin/finance/accounts/{counselor_id}", up.admin),
            admin_token.clone(),
        )
        .await;
        let stats = get(
            format!("{}/api/admin/finance/stats", up.admin),
            admin_token.clone(),
        )
        .await;
        (
            info["data"]["balance_fen"].as_i64().unwrap(),
            account["data"]["account"]["balance_fen"].as_i64().unwrap(),
            account["data"]["account"]["withdrawn_fen"]
                .as_i64()
                .unwrap(),
            account["data"]["account"]["total_income_fen"]
                .as_i64()
                .unwrap(),
            (stats["data"]["total_counselor_balance"].as_f64().unwrap() * 100.0).round() as i64,
            (stats["data"]["total_withdrawn"].as_f64().unwrap() * 100.0).round() as i64,
        )
    };
    let all_payable: i64 = sqlx::query_scalar(
        "SELECT COALESCE(-sum(balance_fen), 0)::bigint FROM ledger_balances WHERE account LIKE 'counselor:%:payable'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let payouts = ledger("platform:payouts".to_string()).await;
    let before = api_figures().await;
    assert_eq!(
        before,
        (
            user_balance,
            payable,
            summary["counselor_withdrawn_fen"].as_i64().unwrap(),
            summary["counselor_total_income_fen"].as_i64().unwrap(),
            all_payable,
            payouts,
        )
    );
    assert!(payouts >= summary["withdrawn_fen"].as_i64().unwrap());

    // The revenue series and the income report read the ledger's `SessionBilled` postings: they
    // agree with the billings read model (another projection of the same events) and do not
    // follow a hand edit of it.
    let billings_sql = "SELECT COALESCE(sum(total_amount_fen), 0)::bigint, count(*), \
         COALESCE(sum(platform_fee_fen), 0)::bigint, COALESCE(sum(counselor_fee_fen), 0)::bigint FROM chat_billings";
    let from_billings: (i64, i64, i64, i64) =
        sqlx::query_as(billings_sql).fetch_one(&pool).await.unwrap();
    assert!(from_billings.1 > 0, "the demo bills sessions");
    let series = || async {
        let fen = |v: &Value| (v.as_f64().unwrap() * 100.0).round() as i64;
        let revenue = get(
            format!("{}/api/admin/finance/revenue?group_by=day", up.admin),
            admin_token.clone(),
        )
        .await;
        let income = get(
            format!("{}/api/admin/finance/reports?type=income", up.admin),
            admin_token.clone(),
        )
        .await;
        let days = revenue["data"]["revenue_data"].as_array().unwrap().clone();
        let records = income["data"]["records"].as_array().unwrap().clone();
        (
            days.iter().map(|d| fen(&d["amount"])).sum::<i64>(),
            days.iter()
                .map(|d| d["count"].as_i64().unwrap())
                .sum::<i64>(),
            records.iter().map(|r| fen(&r["commission"])).sum::<i64>(),
            records
                .iter()
                .map(|r| fen(&r["counselor_earnings"]))
                .sum::<i64>(),
            records.iter().map(|r| fen(&r["amount"])).sum::<i64>(),
        )
    };
    let before_series = series().await;
    assert_eq!(
        before_series,
        (
            from_billings.0,
            from_billings.1,
            from_billings.2,
            from_billings.3,
            from_billings.0
        )
    );
    sqlx::query("UPDATE chat_billings SET total_amount_fen = total_amount_fen + 1")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(series().await, before_series, "the series read the ledger");
    sqlx::query("UPDATE chat_billings SET total_amount_fen = total_amount_fen - 1")
        .execute(&pool)
        .await
        .unwrap();

    // A hand-edited balance: reconcile and diff exit non-zero naming the row, and the API,
    // which reads the ledger, does not move.
    sqlx::query(
        "UPDATE counselor_accounts SET balance_fen = balance_fen + 100 WHERE counselor_id = $1",
    )
    .bind(counselor_id)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE user_wallets SET balance_fen = balance_fen + 12345 WHERE user_id = $1")
        .bind(user_id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(api_figures().await, before, "the API reads the ledger");
    let out = up.run(&["finance", "reconcile"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "counselor_accounts counselor_id={counselor_id} balance_fen"
        )),
        "{}",
        text(&out)
    );
    let out = up.run(&["audit", "diff", &now_schema]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "counselor_accounts [counselor_id={counselor_id}]: balance_fen"
        )),
        "{}",
        text(&out)
    );
    // Bad input: a clear error, exit non-zero.
    let out = up.run(&["audit", "replay", "--at", "yesterday"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("neither a stream sequence nor an RFC 3339 time"));
    let out = up.run(&["projections", "skip", "orders", "3", "--reason", ""]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_projector_processes_end_equal_to_a_fresh_replay() {
    let nats = testkit::NatsServer::start().unwrap();
    let pg = testkit::Postgres::start().unwrap();
    let out = mychat(&nats.url(), &pg.url(), &["migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    let client = nats.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    eventstore::ensure_streams(&js, &eventstore::StreamSettings::default())
        .await
        .unwrap();
    let bus = eventstore::CommandBus::new(js.clone(), eventstore::envelope::Upcasters::default());
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_mychat"))
            .args([
                "serve",
                "projectors",
                "--addr",
                &format!("127.0.0.1:{}", testkit::free_port()),
            ])
            .env("MYCHAT_NATS_URL", nats.url())
            .env("MYCHAT_DATABASE_URL", pg.url())
            .env("MYCHAT_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Two workers per projection (two processes), killed and replaced while the log grows.
    let mut children = vec![spawn(), spawn()];
    let writer = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for id in 1..=600i64 {
                bus.execute::<domain::Order>(
                    &id.to_string(),
                    domain::OrderCommand::Place {
                        order_no: format!("ORD{id}"),
                        user_id: 7,
                        counselor_id: 3,
                        duration_minutes: 10,
                        price_per_minute: 500,
                        schedule_time: None,
                        notes: String::new(),
                        placed_at: chrono::Utc::now(),
                    },
                    &eventstore::CommandMeta::new(eventstore::Actor::user(7)),
                )
                .await
                .unwrap();
            }
        })
    };
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let victim = round % 2;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(children[victim].id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = children[victim].wait();
        children[victim] = spawn();
    }
    writer.await.unwrap();
    let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(&pool)
            .await
            .unwrap();
        if n == 600 {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} orders projected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for mut c in children {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = c.wait();
    }
    let head = js
        .get_stream("EVENTS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    let out = mychat(
        &nats.url(),
        &pg.url(),
        &["audit", "replay", "--at", &head.to_string()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let schema = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = mychat(&nats.url(), &pg.url(), &["audit", "diff", &schema]);
    assert!(out.status.success(), "{}", text(&out));
    let out = mychat(&nats.url(), &pg.url(), &["finance", "reconcile"]);
    assert!(out.status.success(), "{}", text(&out));
}
