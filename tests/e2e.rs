//! End to end, against the `mychat` binary: `mychat up` (its embedded nats-server and PostgreSQL,
//! in a temp dir, on free ports), then `mychat demo` plays the whole story over HTTP and
//! WebSocket; then every kind of bad input of the skeleton is refused with a clear 4xx (or an
//! error frame) and leaves the log exactly as it was.

#[path = "support/up.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{log_of, start_up, Up};
use tokio_tungstenite::tungstenite::Message;

fn run_demo(up: &Up) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mychat"))
        .args([
            "demo", "--api", &up.api, "--admin", &up.admin, "--ws", &up.ws,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    (
        out.status.success(),
        format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// The last sequence of `EVENTS`, and the sum of the chat streams' (every stream named `CHAT…`),
/// read directly from JetStream (not through mychat).
async fn log_heads(nats_url: &str) -> (u64, u64) {
    use futures::TryStreamExt as _;
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.unwrap());
    let mut events = js.get_stream("EVENTS").await.unwrap();
    let names: Vec<String> = js.stream_names().try_collect().await.unwrap();
    let mut chat = 0;
    for name in names.iter().filter(|n| n.starts_with("CHAT")) {
        chat += js
            .get_stream(name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .last_sequence;
    }
    (events.info().await.unwrap().state.last_sequence, chat)
}

async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn login(api: &str, username: &str, password: &str) -> (String, Value) {
    let body = json!({ "username": username, "password": password }).to_string();
    let (status, v) = call(
        reqwest::Method::POST,
        &format!("{api}/api/login"),
        None,
        Some(&body),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    (
        v["data"]["token"].as_str().unwrap().to_string(),
        v["data"]["user"].clone(),
    )
}

#[test]
fn the_demo_story_runs_end_to_end_and_bad_input_changes_nothing() {
    let up = start_up();
    let (ok, output) = run_demo(&up);
    assert!(
        ok,
        "mychat demo failed:\n{output}\n--- mychat up log ---\n{}",
        log_of(&up)
    );
    let last: Value = serde_json::from_str(output.lines().last().unwrap()).unwrap();
    assert_eq!(last["demo"], "ok");
    assert_eq!(
        last["counselor_share_fen"].as_i64().unwrap() + last["platform_fee_fen"].as_i64().unwrap(),
        last["billed_fen"].as_i64().unwrap()
    );
    assert_eq!(
        last["refund_fen"].as_i64().unwrap(),
        last["prepaid_fen"].as_i64().unwrap() - last["billed_fen"].as_i64().unwrap()
    );
    assert_eq!(last["user_balance_fen"], last["refund_fen"]);

    // A second run reuses the running system (and proves the demo is repeatable).
    let (ok, output) = run_demo(&up);
    assert!(ok, "second demo failed:\n{output}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(bad_input_changes_nothing(&up, &last));
}

async fn bad_input_changes_nothing(up: &Up, demo: &Value) {
    use reqwest::Method;
    let api = up.api.as_str();
    let (user_token, _) = login(api, demo["username"].as_str().unwrap(), "demo-password-1").await;
    let (other_token, _) = login(api, "demo", "demo123").await;
    let (counselor_token, counselor) = login(api, "counselor1", "counselor123").await;
    let counselor_id = counselor["counselor_id"].as_i64().unwrap();
    let schedule = "2030-01-01T10:00:00+08:00";

    // Fixtures made before the snapshot: an unpaid order of the user, and a live session of
    // another user's paid order (which the demo user is not part of).
    let create = |token: String| async move {
        let body =
            json!({ "counselor_id": counselor_id, "duration": 30, "schedule_time": schedule })
                .to_string();
        let (s, v) = call(
            Method::POST,
            &format!("{api}/api/order/create"),
            Some(&token),
            Some(&body),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        v["data"]["order_id"].as_i64().unwrap()
    };
    let unpaid = create(user_token.clone()).await;
    let others = create(other_token.clone()).await;
    let body = json!({ "order_id": others, "payment_method": "sandbox" }).to_string();
    let (_, pay) = call(
        Method::POST,
        &format!("{api}/api/payment/create"),
        Some(&other_token),
        Some(&body),
    )
    .await;
    reqwest::get(pay["data"]["pay_url"].as_str().unwrap())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, o) = call(
            Method::GET,
            &format!("{api}/api/order/{others}"),
            Some(&other_token),
            None,
        )
        .await;
        if o["data"]["status"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the other order was never paid");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, v) = call(
        Method::POST,
        &format!("{api}/api/chat/start/{others}"),
        Some(&other_token),
        Some("{}"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let others_session = v["data"]["session_id"].as_i64().unwrap();
    let (_, paid_order) = call(
        Method::GET,
        &format!("{api}/api/order/{others}"),
        Some(&other_token),
        None,
    )
    .await;
    assert_eq!(paid_order["data"]["status"], 1);
    tokio::time::sleep(Duration::from_millis(500)).await; // let the process manager settle

    let before = log_heads(&up.nats_url).await;
    let admin_url = format!("{}/api/admin/withdraw/1/approve", up.admin);
    // (what, method, url, token, body, expected status, a word the msg must contain)
    type Case<'a> = (
        &'a str,
        Method,
        String,
        Option<&'a str>,
        Option<String>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("malformed JSON", Method::POST, format!("{api}/api/order/create"), Some(&user_token), Some("{\"counselor_id\": ".into()), 400, "malformed"),
        ("a missing field", Method::POST, format!("{api}/api/order/create"), Some(&user_token), Some(json!({ "counselor_id": counselor_id, "schedule_time": schedule }).to_string()), 400, "duration"),
        ("a zero amount", Method::POST, format!("{api}/api/chat/counselor/withdraw"), Some(&counselor_token), Some(json!({ "amount": 0, "bank_name": "b", "bank_account": "1", "account_name": "n" }).to_string()), 400, "amount"),
        ("a negative amount", Method::POST, format!("{api}/api/chat/counselor/withdraw"), Some(&counselor_token), Some(json!({ "amount": -5, "bank_name": "b", "bank_account": "1", "account_name": "n" }).to_string()), 400, "amount"),
        ("paying someone else's order", Method::POST, format!("{api}/api/payment/create"), Some(&user_token), Some(json!({ "order_id": others, "payment_method": "sandbox" }).to_string()), 403, "not your order"),
        ("paying twice", Method::POST, format!("{api}/api/payment/create"), Some(&other_token), Some(json!({ "order_id": others, "payment_method": "sandbox" }).to_string()), 422, "not awaiting payment"),
        ("starting a chat on an unpaid order", Method::POST, format!("{api}/api/chat/start/{unpaid}"), Some(&user_token), Some("{}".into()), 422, "not paid"),
        ("withdrawing more than the balance", Method::POST, format!("{api}/api/chat/counselor/withdraw"), Some(&counselor_token), Some(json!({ "amount": 1_000_000, "bank_name": "b", "bank_account": "1", "account_name": "n" }).to_string()), 422, "insufficient balance"),
        ("approving a withdrawal with a user token", Method::POST, admin_url, Some(&user_token), Some(json!({ "approved": true }).to_string()), 403, "administrator"),
        ("a bad path id", Method::GET, format!("{api}/api/order/abc"), Some(&user_token), None, 404, "no such resource"),
        ("no token", Method::POST, format!("{api}/api/order/create"), None, Some("{}".into()), 401, "token"),
    ];
    for (what, method, url, token, body, status, needle) in cases {
        let (s, v) = call(method, &url, token, body.as_deref()).await;
        assert_eq!(s, status, "{what}: {v}");
        assert_eq!(v["code"], status, "{what}: code must equal the status: {v}");
        let msg = v["msg"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            msg.contains(needle),
            "{what}: msg {msg:?} should mention {needle:?}"
        );
    }

    // A WebSocket message into someone else's session: an error frame, the socket stays usable.
    let url = format!("{}/ws/chat/{others_session}?token={user_token}", up.ws);
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let refused = next_frame(&mut socket).await;
    assert_eq!(refused["type"], "error", "{refused}");
    let frame = json!({ "type": "message", "session_id": others_session, "data": { "content": "intrusion", "id": "x-1" } });
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    let refused = next_frame(&mut socket).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert!(
        refused["data"]["error"]
            .as_str()
            .unwrap()
            .contains("not a participant"),
        "{refused}"
    );
    socket
        .send(Message::Text(json!({ "type": "ping" }).to_string().into()))
        .await
        .unwrap();
    assert_eq!(
        next_frame(&mut socket).await["type"],
        "pong",
        "the socket keeps working"
    );
    socket.send(Message::Text("{nope".into())).await.unwrap();
    assert_eq!(next_frame(&mut socket).await["type"], "error");

    // A handshake with a forged token is refused before the upgrade.
    let forged = format!("{}/ws/chat/{others_session}?token=abc.def.ghi", up.ws);
    assert!(tokio_tungstenite::connect_async(&forged).await.is_err());

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        log_heads(&up.nats_url).await,
        before,
        "bad input must not change the EVENTS or CHAT log"
    );
}

async fn next_frame<S>(socket: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame")
            .expect("open")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}
