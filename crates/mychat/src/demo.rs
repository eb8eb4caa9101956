//! `mychat demo`: the main job on real input. Against a running mychat it plays the whole story
//! as real clients would, over HTTP and WebSocket, prints each step, and ends with one JSON line
//! (`{"demo":"ok", …}`). Any failure exits non-zero.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Where the running mychat is.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// User API base URL.
    #[arg(long, env = "MYCHAT_DEMO_API", default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// Admin API base URL.
    #[arg(
        long,
        env = "MYCHAT_DEMO_ADMIN",
        default_value = "http://127.0.0.1:8081"
    )]
    pub admin: String,
    /// WebSocket gateway base URL.
    #[arg(long, env = "MYCHAT_DEMO_WS", default_value = "ws://127.0.0.1:8082")]
    pub ws: String,
    /// The seeded counselor to book (login name).
    #[arg(long, default_value = "counselor1")]
    pub counselor: String,
    /// Minutes to order.
    #[arg(long, default_value_t = 10)]
    pub minutes: i64,
}

pub(crate) struct Client {
    http: reqwest::Client,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method.clone(), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .with_context(|| format!("{method} {url}: body is not JSON"))?;
        ensure!(
            status.is_success() && body["code"] == 200,
            "{method} {url} → {status}: {}",
            body["msg"].as_str().unwrap_or(&body.to_string())
        );
        Ok(body["data"].clone())
    }
    pub(crate) async fn get(&self, url: &str, token: Option<&str>) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, url, token, None).await
    }
    pub(crate) async fn post(
        &self,
        url: &str,
        token: Option<&str>,
        body: Value,
    ) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, url, token, Some(body))
            .await
    }
}

pub(crate) fn step(n: usize, text: String) {
    println!("[{n:>2}] {text}");
}

fn fen(v: &Value) -> i64 {
    v.as_i64().unwrap_or_default()
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_ws(base: &str, session_id: i64, token: &str) -> anyhow::Result<Socket> {
    let url = format!("{base}/ws/chat/{session_id}?token={token}");
    let (socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .with_context(|| format!("connecting {base}/ws/chat/{session_id}"))?;
    Ok(socket)
}

/// Reads frames until one of type `kind` arrives (others are skipped), up to 10 s.
pub(crate) async fn expect_frame(socket: &mut Socket, kind: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, socket.next())
            .await
            .with_context(|| format!("no `{kind}` frame within 10 s"))?
            .context("socket closed")??;
        if let Message::Text(text) = msg {
            let frame: Value = serde_json::from_str(text.as_str())?;
            if frame["type"] == kind {
                return Ok(frame);
            }
            if frame["type"] == "error" {
                bail!(
                    "error frame while waiting for `{kind}`: {}",
                    frame["data"]["error"]
                );
            }
        }
    }
}

/// Polls `f` until it returns `Some`, up to 15 s.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the story.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let c = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()?,
    };
    let (api, admin) = (
        args.api.trim_end_matches('/'),
        args.admin.trim_end_matches('/'),
    );

    // 1. A user registers and logs in.
    let username = format!("demo_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let password = "demo-password-1";
    let reg = c
        .post(
            &format!("{api}/api/register"),
            None,
            json!({ "username": username, "password": password }),
        )
        .await?;
    let login = c
        .post(
            &format!("{api}/api/login"),
            None,
            json!({ "username": username, "password": password }),
        )
        .await?;
    let user_token = login["token"].as_str().context("login token")?.to_string();
    let user_id = reg["user_id"].as_i64().context("user_id")?;
    step(
        1,
        format!("registered and logged in as {username} (user {user_id})"),
    );

    // 2. The counselor logs in (a counselor is a user linked to a counselor profile).
    let clogin = c
        .post(
            &format!("{api}/api/login"),
            None,
            json!({ "username": args.counselor, "password": api_seed_password() }),
        )
        .await?;
    let counselor_token = clogin["token"]
        .as_str()
        .context("counselor token")?
        .to_string();
    let counselor_id = clogin["user"]["counselor_id"]
        .as_i64()
        .context("the demo counselor has no counselor profile")?;
    step(
        2,
        format!(
            "counselor {} logged in (counselor {counselor_id})",
            args.counselor
        ),
    );

    // 3. The user lists counselors and picks that one.
    let list = c
        .get(
            &format!("{api}/api/counselor/list?page=1&page_size=10&sort_by=price&sort_order=asc"),
            None,
        )
        .await?;
    let counselor = list["counselors"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == counselor_id))
        .context("the counselor is not in the list")?
        .clone();
    let price_fen = fen(&counselor["price_fen"]);
    step(
        3,
        format!(
            "listed {} counselors; booking {} at ¥{}/min",
            list["total"], counselor["name"], counselor["price"]
        ),
    );

    let account_before = c
        .get(
            &format!("{api}/api/chat/counselor/account"),
            Some(&counselor_token),
        )
        .await?;

    // 4. Order N minutes.
    let schedule = (chrono::Utc::now() + chrono::Duration::hours(1))
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("+08:00"))
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let order = c
        .post(
            &format!("{api}/api/order/create"),
            Some(&user_token),
            json!({ "counselor_id": counselor_id, "duration": args.minutes, "schedule_time": schedule, "notes": "mychat demo" }),
        )
        .await?;
    let order_id = order["order_id"].as_i64().context("order_id")?;
    let prepaid_fen = fen(&order["amount_fen"]);
    ensure!(
        prepaid_fen == args.minutes * price_fen,
        "order amount {prepaid_fen} ≠ {} × {price_fen}",
        args.minutes
    );
    step(
        4,
        format!(
            "ordered {} minutes: order {order_id} ({}), prepaid ¥{}",
            args.minutes, order["order_no"], order["amount"]
        ),
    );

    // 5. Pay through the sandbox provider: open the cashier page, as the web client does. The
    // demo moves no real money: it needs the server's sandbox (on under `mychat up`, off unless
    // enabled under `mychat serve`), and says so.
    println!(
        "     (payments: the sandbox provider — the server must run with payments.sandbox = true, \
         as `mychat up` does; no real money moves)"
    );
    let payment = c
        .post(
            &format!("{api}/api/payment/create"),
            Some(&user_token),
            json!({ "order_id": order_id, "payment_method": "sandbox", "trade_type": "NATIVE" }),
        )
        .await
        .context(
            "creating a sandbox payment: is the server's sandbox enabled (payments.sandbox = true, \
             MYCHAT_PAYMENTS__SANDBOX=true; `mychat up` enables it)?",
        )?;
    let payment_id = payment["payment_id"].as_i64().context("payment_id")?;
    let pay_url = payment["pay_url"].as_str().context("pay_url")?;
    let cashier = c.http.get(pay_url).send().await?;
    ensure!(
        cashier.status().is_success(),
        "sandbox cashier answered {}",
        cashier.status()
    );
    let paid = eventually("the order to be paid", || async {
        let o = c
            .get(&format!("{api}/api/order/{order_id}"), Some(&user_token))
            .await?;
        Ok((o["status"] == 1).then_some(o))
    })
    .await?;
    step(
        5,
        format!(
            "paid payment {payment_id} via the sandbox cashier (sandbox provider, no real money); order status {} at {}",
            paid["status"], paid["pay_time"]
        ),
    );

    // 6. Start the session (the user, as MyChat's web client does).
    let started = c
        .post(
            &format!("{api}/api/chat/start/{order_id}"),
            Some(&user_token),
            json!({}),
        )
        .await?;
    let session_id = started["session_id"].as_i64().context("session_id")?;
    step(6, format!("session {session_id} started"));

    // 7. Both connect by WebSocket and exchange messages (each sees the other's).
    let ws = args.ws.trim_end_matches('/');
    let mut user_ws = connect_ws(ws, session_id, &user_token).await?;
    let mut counselor_ws = connect_ws(ws, session_id, &counselor_token).await?;
    expect_frame(&mut user_ws, "join_success").await?;
    expect_frame(&mut counselor_ws, "join_success").await?;
    // The web client's dialect: {type, payload}, no session_id.
    let hello = json!({ "type": "message", "payload": { "content_type": "text", "content": "你好，我最近睡不好。", "client_msg_id": format!("demo-u-{session_id}") } });
    user_ws
        .send(Message::Text(hello.to_string().into()))
        .await?;
    let ack = expect_frame(&mut user_ws, "ack").await?;
    let got = expect_frame(&mut counselor_ws, "message").await?;
    ensure!(
        got["payload"]["content"] == "你好，我最近睡不好。" && got["data"]["sender_id"] == user_id,
        "counselor got {got}"
    );
    step(
        7,
        format!(
            "user → counselor: stored at CHAT seq {}, delivered",
            ack["data"]["seq"]
        ),
    );
    // Go's dialect: {type, session_id, data}.
    let reply = json!({ "type": "message", "session_id": session_id, "data": { "content": "你好，我们慢慢聊。", "id": format!("demo-c-{session_id}") } });
    counselor_ws
        .send(Message::Text(reply.to_string().into()))
        .await?;
    let ack = expect_frame(&mut counselor_ws, "ack").await?;
    let got = expect_frame(&mut user_ws, "message").await?;
    ensure!(
        got["data"]["content"] == "你好，我们慢慢聊。" && got["data"]["sender_type"] == "counselor",
        "user got {got}"
    );
    step(
        8,
        format!(
            "counselor → user: stored at CHAT seq {}, delivered",
            ack["data"]["seq"]
        ),
    );

    let history = eventually("both messages in the history", || async {
        let h = c
            .get(
                &format!("{api}/api/chat/messages/{session_id}?page=1&page_size=100"),
                Some(&user_token),
            )
            .await?;
        Ok((h["total"].as_i64() == Some(2)).then_some(h))
    })
    .await?;
    step(
        9,
        format!(
            "history has {} messages, first from {}",
            history["total"], history["messages"][0]["sender"]["username"]
        ),
    );

    // 8. End the session: it is billed once; both sockets hear it.
    let ended = c
        .post(
            &format!("{api}/api/chat/end/{session_id}"),
            Some(&user_token),
            json!({}),
        )
        .await?;
    let bill = &ended["billing"];
    let billed = fen(&bill["total_amount_fen"]);
    let share = fen(&bill["counselor_fee_fen"]);
    let platform = fen(&bill["platform_fee_fen"]);
    let refund = fen(&bill["refund_fen"]);
    ensure!(
        billed == bill["duration_minutes"].as_i64().unwrap_or(0) * price_fen,
        "billed {billed}"
    );
    ensure!(
        platform + share == billed && refund == prepaid_fen - billed,
        "bill does not add up: {bill}"
    );
    for socket in [&mut user_ws, &mut counselor_ws] {
        expect_frame(socket, "billing").await?;
        expect_frame(socket, "session_end").await?;
    }
    step(10, format!("session ended after {} s: billed ¥{} ({} min), counselor ¥{}, platform ¥{}, refund ¥{}",
        ended["duration"], bill["total_amount"], bill["duration_minutes"], bill["counselor_fee"], bill["platform_fee"], bill["refund"]));

    // 9. The counselor's account shows the 70 % share; the user's balance the refund.
    let before_balance = fen(&account_before["balance_fen"]);
    let account = eventually("the counselor to be credited", || async {
        let a = c
            .get(
                &format!("{api}/api/chat/counselor/account"),
                Some(&counselor_token),
            )
            .await?;
        Ok((fen(&a["balance_fen"]) == before_balance + share).then_some(a))
    })
    .await?;
    let user_info = eventually("the refund", || async {
        let u = c
            .get(&format!("{api}/api/user/info"), Some(&user_token))
            .await?;
        Ok((fen(&u["balance_fen"]) == refund).then_some(u))
    })
    .await?;
    step(
        11,
        format!(
            "counselor balance ¥{} (+¥{}); user balance ¥{}",
            account["balance"], bill["counselor_fee"], user_info["balance"]
        ),
    );

    // 10. The counselor's support group: the group chapter (steps 12–15), before the
    // withdrawal, so that the log's last events come after the group's chat records.
    let group = crate::demo_groups::run(
        &c,
        (api, args.ws.trim_end_matches('/')),
        &counselor_token,
        (user_id, &user_token),
        12,
    )
    .await?;

    // 11. The counselor withdraws the balance; the admin approves and transfers it.
    let amount_fen = fen(&account["balance_fen"]);
    let withdrawal = c
        .post(
            &format!("{api}/api/chat/counselor/withdraw"),
            Some(&counselor_token),
            json!({ "amount": amount_fen as f64 / 100.0, "bank_name": "招商银行", "bank_account": "6225880000000000", "account_name": "林晓" }),
        )
        .await?;
    let withdrawal_id = withdrawal["id"].as_i64().context("withdrawal id")?;
    step(
        16,
        format!(
            "counselor requested withdrawal {withdrawal_id} of ¥{}",
            withdrawal["amount"]
        ),
    );
    let alogin = c
        .post(
            &format!("{admin}/api/admin/login"),
            None,
            json!({ "username": "admin", "password": "admin123" }),
        )
        .await?;
    let admin_token = alogin["token"].as_str().context("admin token")?.to_string();
    let approved = c
        .post(
            &format!("{admin}/api/admin/withdraw/{withdrawal_id}/approve"),
            Some(&admin_token),
            json!({ "approved": true }),
        )
        .await?;
    ensure!(
        approved["status"] == 1,
        "approve gave status {}",
        approved["status"]
    );
    let transferred = c
        .post(
            &format!("{admin}/api/admin/withdraw/{withdrawal_id}/transfer"),
            Some(&admin_token),
            json!({}),
        )
        .await?;
    ensure!(
        transferred["status"] == 3,
        "transfer gave status {}",
        transferred["status"]
    );
    step(
        17,
        format!("admin approved and transferred withdrawal {withdrawal_id}"),
    );

    let final_account = eventually("the account to show the transfer", || async {
        let a = c
            .get(
                &format!("{api}/api/chat/counselor/account"),
                Some(&counselor_token),
            )
            .await?;
        Ok(
            (fen(&a["withdrawn_fen"]) >= fen(&account_before["withdrawn_fen"]) + amount_fen
                && fen(&a["frozen_amount_fen"]) == 0)
                .then_some(a),
        )
    })
    .await?;
    step(
        18,
        format!(
            "final: counselor balance ¥{}, withdrawn ¥{}, total income ¥{}; user balance ¥{}",
            final_account["balance"],
            final_account["withdrawn"],
            final_account["total_income"],
            user_info["balance"]
        ),
    );
    let summary = json!({
        "demo": "ok",
        "user_id": user_id,
        "username": username,
        "counselor_id": counselor_id,
        "order_id": order_id,
        "payment_id": payment_id,
        "session_id": session_id,
        "withdrawal_id": withdrawal_id,
        "prepaid_fen": prepaid_fen,
        "billed_fen": billed,
        "platform_fee_fen": platform,
        "counselor_share_fen": share,
        "refund_fen": refund,
        "withdrawn_fen": amount_fen,
        "user_balance_fen": fen(&user_info["balance_fen"]),
        "counselor_balance_fen": fen(&final_account["balance_fen"]),
        "counselor_total_income_fen": fen(&final_account["total_income_fen"]),
        "counselor_withdrawn_fen": fen(&final_account["withdrawn_fen"]),
        "group_id": group.group_id,
        "group_messages": group.messages,
        "group_unread_user": group.unread_user,
        "group_unread_second": group.unread_second,
    });
    println!("{summary}");
    Ok(())
}

fn api_seed_password() -> &'static str {
    api::seed::COUNSELOR_PASSWORD
}
