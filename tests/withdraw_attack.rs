//! the concurrency attack: 1,000 concurrent withdrawal requests against one counselor
//! balance, split over two API nodes (two `mychat` processes: `mychat up` and a second
//! `mychat serve api` on the same nats-server and PostgreSQL).
//!
//! The counselor is credited a known balance through the command bus; then every request is sent
//! at once. Checked: no request fails with a 5xx or without an answer; every refusal is a 4xx with
//! the `{code,msg}` envelope; the sum of the accepted withdrawals never exceeds the balance; and
//! it equals what the event log (read directly from JetStream) and the read model show.

#[path = "support/up.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use domain::{AccountCommand, CounselorAccount};
use eventstore::envelope::Upcasters;
use eventstore::{Actor, CommandBus, CommandMeta};
use futures_util::StreamExt;
use serde_json::{json, Value};
use support::start_up;

/// The credited balance: ¥250.00.
const BALANCE_FEN: i64 = 25_000;
/// Requests fired at once.
const REQUESTS: usize = 1_000;

/// The second API node; SIGKILLed on drop.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }
        // No answer (connection error, timeout): recorded as 0, which the test refuses.
        Err(e) => (0, json!({ "error": e.to_string() })),
    }
}

/// The amount of a `WithdrawalRequested` event's payload (the inner object or the tagged form).
fn requested_amount(event: &Value) -> Option<i64> {
    if event["event_type"] != "WithdrawalRequested" {
        return None;
    }
    let p = &event["payload"];
    p["amount"]
        .as_i64()
        .or_else(|| p["WithdrawalRequested"]["amount"].as_i64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_withdrawals_on_two_api_nodes_never_overdraw() {
    let up = start_up();
    // The second API node: same NATS, same Postgres, same secrets (the data dir of `mychat up`).
    let port = testkit::free_port();
    let log = std::fs::File::create(up.dir.path().join("api-2.log")).unwrap();
    let node = Node(
        Command::new(env!("CARGO_BIN_EXE_mychat"))
            .args(["serve", "api", "--addr", &format!("127.0.0.1:{port}")])
            .env("MYCHAT_NATS_URL", &up.nats_url)
            .env("MYCHAT_DATABASE_URL", &up.database_url)
            .env("MYCHAT_DATA_DIR", up.dir.path().join("data"))
            .env("MYCHAT_LOG_FORMAT", "json")
            // A sibling of `mychat up`, whose sandbox it shares (payments fail closed without).
            .env("MYCHAT_PAYMENTS__SANDBOX", "true")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the second API node did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let apis = [up.api.clone(), format!("http://127.0.0.1:{port}")];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();

    // The counselor, on each node.
    let (status, login) = call(
        &http,
        reqwest::Method::POST,
        &format!("{}/api/login", apis[1]),
        None,
        Some(json!({ "username": "counselor1", "password": api::seed::COUNSELOR_PASSWORD })),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let token = login["data"]["token"].as_str().unwrap().to_string();
    let counselor_id = login["data"]["user"]["counselor_id"].as_i64().unwrap();

    // A known balance, credited through the command bus (as a billed session would).
    let nats = async_nats::connect(&up.nats_url).await.unwrap();
    let js = async_nats::jetstream::new(nats.clone());
    let bus = CommandBus::new(js.clone(), Upcasters::default());
    bus.execute::<CounselorAccount>(
        &counselor_id.to_string(),
        AccountCommand::CreditEarnings {
            counselor_id,
            session_id: 990_001,
            order_id: 990_001,
            amount: BALANCE_FEN,
            at: chrono::Utc::now(),
        },
        &CommandMeta::new(Actor::system()),
    )
    .await
    .unwrap();
    let account_url = format!("{}/api/chat/counselor/account", apis[0]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, acc) = call(
            &http,
            reqwest::Method::GET,
            &account_url,
            Some(&token),
            None,
        )
        .await;
        if acc["data"]["balance_fen"] == BALANCE_FEN {
            break;
        }
        assert!(Instant::now() < deadline, "balance never showed: {acc}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The attack: every request at once, alternating nodes; ¥1.00 to ¥1.60 each. A request
    // refused with 409 (it lost the race for the aggregate's sequence: retry) is fired again,
    // all of them at once, round after round, as clients would, until every request is either
    // accepted or refused for good (422: more than the balance).
    let started = Instant::now();
    let mut pending: Vec<(usize, i64)> = (0..REQUESTS)
        .map(|i| (i, 100 + (i as i64 % 7) * 10))
        .collect();
    let mut accepted_fen = 0i64;
    let mut accepted = 0usize;
    let mut rounds: Vec<BTreeMap<u16, usize>> = Vec::new();
    let mut bad = Vec::new();
    while !pending.is_empty() && rounds.len() < 60 {
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(pending.len()));
        let mut tasks = Vec::new();
        for &(i, amount_fen) in &pending {
            let (http, token, barrier) = (http.clone(), token.clone(), barrier.clone());
            let url = format!(
                "{}/api/chat/counselor/withdraw",
                apis[(i + rounds.len()) % 2]
            );
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let body = json!({
                    "amount": amount_fen as f64 / 100.0,
                    "bank_name": "招商银行",
                    "bank_account": "6225880000000000",
                    "account_name": "林晓",
                });
                let (status, body) =
                    call(&http, reqwest::Method::POST, &url, Some(&token), Some(body)).await;
                (i, amount_fen, status, body)
            }));
        }
        let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
        let mut retry = Vec::new();
        for t in tasks {
            let (i, amount, status, body) = t.await.unwrap();
            *by_status.entry(status).or_default() += 1;
            match status {
                200 => {
                    assert_eq!(body["code"], 200, "{body}");
                    assert_eq!(
                        body["data"]["amount"],
                        json!(amount as f64 / 100.0),
                        "{body}"
                    );
                    accepted += 1;
                    accepted_fen += amount;
                }
                400..=499 => {
                    // A clear refusal: the envelope with a message.
                    if !body["code"].is_i64() || body["msg"].as_str().is_none_or(str::is_empty) {
                        bad.push(format!("{status}: {body}"));
                    }
                    if status == 409 {
                        retry.push((i, amount));
                    }
                }
                _ => bad.push(format!("{status}: {body}")),
            }
        }
        rounds.push(by_status);
        pending = retry;
    }
    let elapsed = started.elapsed();
    let refused_422 = rounds
        .iter()
        .map(|r| r.get(&422).copied().unwrap_or(0))
        .sum::<usize>();
    println!(
        "withdraw attack: {REQUESTS} requests on 2 API nodes; first round {:?}; {} rounds \
         (409s re-fired) in {:.1} s; accepted {accepted} (¥{:.2} of ¥{:.2}), refused for the \
         balance {refused_422}; rounds {rounds:?}",
        rounds[0],
        rounds.len(),
        elapsed.as_secs_f64(),
        accepted_fen as f64 / 100.0,
        BALANCE_FEN as f64 / 100.0
    );
    if !bad.is_empty() {
        // The servers' own words for the failures.
        let mut errors = std::collections::BTreeSet::new();
        for file in ["up.log", "api-2.log"] {
            let text = std::fs::read_to_string(up.dir.path().join(file)).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("\"ERROR\"")) {
                errors.insert(line.chars().skip(40).take(400).collect::<String>());
            }
        }
        panic!(
            "{} answers were not 200 or a clear 4xx, e.g. {:?}; server errors: {:#?}",
            bad.len(),
            &bad[..bad.len().min(3)],
            errors.iter().take(8).collect::<Vec<_>>()
        );
    }
    assert!(
        accepted_fen <= BALANCE_FEN,
        "overdrawn: accepted {accepted_fen} fen of {BALANCE_FEN}"
    );
    assert!(
        pending.is_empty(),
        "{} requests never settled",
        pending.len()
    );
    // The balance was exhausted: what is left is less than the largest request, and the rest
    // were refused for it.
    assert!(
        BALANCE_FEN - accepted_fen < 160 && refused_422 + accepted == REQUESTS,
        "accepted {accepted_fen} fen, {refused_422} refused for the balance"
    );

    // The event log, read directly: the account's WithdrawalRequested events sum to the same.
    let mut stream = js.get_stream("EVENTS").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("ev.account.{counselor_id}"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let (mut logged_fen, mut logged) = (0i64, 0usize);
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        let Ok(Some(Ok(msg))) = next else { break };
        let commit: Value = serde_json::from_slice(&msg.payload).unwrap();
        for event in commit["events"].as_array().unwrap() {
            if let Some(a) = requested_amount(event) {
                logged_fen += a;
                logged += 1;
            }
        }
        if msg.info().unwrap().stream_sequence >= last {
            break;
        }
    }
    assert_eq!(
        (logged, logged_fen),
        (accepted, accepted_fen),
        "the log's withdrawals differ from the accepted answers"
    );

    // The read model agrees: balance = credited − reserved, frozen = reserved.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, acc) = call(
            &http,
            reqwest::Method::GET,
            &account_url,
            Some(&token),
            None,
        )
        .await;
        let d = &acc["data"];
        if d["balance_fen"] == BALANCE_FEN - accepted_fen && d["frozen_amount_fen"] == accepted_fen
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "read model: {d} (accepted {accepted_fen})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(node);
}
