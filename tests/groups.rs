//! Group conversations end to end, against `mychat up` (its embedded nats-server and PostgreSQL):
//! every rule of the `Group` aggregate and of group messages driven over REST and WebSocket, as
//! clients do, with the log's heads compared before and after every refused request (nothing is
//! appended by bad input).

#[path = "support/up.rs"]
mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use support::{log_of, start_up, Up};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The last sequence of `EVENTS` and of every chat stream, read from JetStream directly.
async fn heads(nats_url: &str) -> Vec<(String, u64)> {
    use futures::TryStreamExt as _;
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.unwrap());
    let mut names: Vec<String> = js.stream_names().try_collect().await.unwrap();
    names.retain(|n| n == "EVENTS" || n.starts_with("CHAT"));
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let last = js
            .get_stream(&name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .last_sequence;
        out.push((name, last));
    }
    out
}

async fn call(method: Method, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A registered user: token and id.
struct Member {
    token: String,
    id: i64,
}

async fn user(api: &str, name: &str) -> Member {
    let password = "group-password-1";
    let (status, v) = call(
        Method::POST,
        &format!("{api}/api/register"),
        None,
        Some(json!({ "username": name, "password": password })),
    )
    .await;
    assert_eq!(status, 200, "register {name}: {v}");
    let (status, v) = call(
        Method::POST,
        &format!("{api}/api/login"),
        None,
        Some(json!({ "username": name, "password": password })),
    )
    .await;
    assert_eq!(status, 200, "login {name}: {v}");
    Member {
        token: v["data"]["token"].as_str().unwrap().to_string(),
        id: v["data"]["user"]["id"].as_i64().unwrap(),
    }
}

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

/// The next text frame (10 s at most).
async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// The next frame of type `kind`, skipping others (presence, typing, …).
async fn expect(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let f = next(ws).await;
        if f["type"] == kind {
            return f;
        }
        assert_ne!(f["type"], "error", "expected {kind}, got an error: {f}");
    }
}

/// No frame of type `kind` arrives within `wait`.
async fn silent(ws: &mut Ws, kind: &str, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Text(t) = msg {
            let f: Value = serde_json::from_str(t.as_str()).unwrap();
            assert_ne!(f["type"], kind, "unexpected {kind}: {f}");
        }
    }
}

struct Ctx<'a> {
    up: &'a Up,
    group: i64,
}

impl Ctx<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}/api/group/{}{path}", self.up.api, self.group)
    }

    /// Runs `request`, asserts its status, and asserts that no stream moved.
    async fn refused(
        &self,
        status: u16,
        method: Method,
        url: &str,
        who: &Member,
        body: Option<Value>,
    ) -> Value {
        let before = heads(&self.up.nats_url).await;
        let (got, v) = call(method.clone(), url, Some(&who.token), body).await;
        assert_eq!(got, status, "{method} {url}: {v}");
        assert!(
            v["title"].is_string() || v["detail"].is_string() || v["msg"].is_string(),
            "a problem body: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            heads(&self.up.nats_url).await,
            before,
            "{method} {url} appended to the log"
        );
        v
    }

    async fn ok(&self, method: Method, url: &str, who: &Member, body: Option<Value>) -> Value {
        let (status, v) = call(method.clone(), url, Some(&who.token), body).await;
        assert_eq!(status, 200, "{method} {url}: {v}");
        v["data"].clone()
    }

    /// The caller's entry of this group in `GET /api/group/list`.
    async fn listed(&self, who: &Member) -> Value {
        let v = self
            .ok(
                Method::GET,
                &format!("{}/api/group/list", self.up.api),
                who,
                None,
            )
            .await;
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == self.group)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

#[test]
fn group_conversations_follow_every_rule_over_rest_and_websocket() {
    let up = start_up();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(240), drive(&up))
            .await
            .unwrap_or_else(|_| panic!("timed out; log:\n{}", log_of(&up)));
    });
}

async fn drive(up: &Up) {
    let api = up.api.as_str();
    let (owner, bob, carol, dave) = (
        user(api, "grp_owner").await,
        user(api, "grp_bob").await,
        user(api, "grp_carol").await,
        user(api, "grp_dave").await,
    );

    // --- creation: an unknown member id is refused and nothing is written ---
    let mut ctx = Ctx { up, group: 0 };
    ctx.refused(
        422,
        Method::POST,
        &format!("{api}/api/group/create"),
        &owner,
        Some(json!({ "name": "支持小组", "member_ids": [bob.id, 999_999] })),
    )
    .await;
    ctx.refused(
        400,
        Method::POST,
        &format!("{api}/api/group/create"),
        &owner,
        Some(json!({ "name": "" })),
    )
    .await;
    let created = ctx
        .ok(
            Method::POST,
            &format!("{api}/api/group/create"),
            &owner,
            Some(json!({ "name": "支持小组", "notice": "每周三见", "member_ids": [bob.id] })),
        )
        .await;
    ctx.group = created["group_id"].as_i64().unwrap();
    let g = ctx.group;
    let shown = ctx.ok(Method::GET, &ctx.url(""), &bob, None).await;
    assert_eq!(
        (
            shown["name"].as_str(),
            shown["role"].as_str(),
            shown["member_count"].as_i64()
        ),
        (Some("支持小组"), Some("member"), Some(2))
    );

    // --- membership rules ---
    ctx.refused(403, Method::GET, &ctx.url(""), &dave, None)
        .await;
    ctx.refused(
        404,
        Method::GET,
        &format!("{api}/api/group/987654"),
        &dave,
        None,
    )
    .await;
    ctx.refused(
        403,
        Method::POST,
        &ctx.url("/members"),
        &bob,
        Some(json!({ "user_ids": [carol.id] })),
    )
    .await;
    ctx.refused(
        422,
        Method::POST,
        &ctx.url("/members"),
        &owner,
        Some(json!({ "user_ids": [424_242] })),
    )
    .await;
    ctx.ok(
        Method::POST,
        &ctx.url("/members"),
        &owner,
        Some(json!({ "user_ids": [carol.id] })),
    )
    .await;
    // Past the member cap (2,000 with the owner): 1,998 more users exist, 1,998 + 3 > 2,000.
    let db = sqlx::PgPool::connect(&up.database_url).await.unwrap();
    let crowd: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO users (id, username, password_hash) \
         SELECT 9000000 + g, 'crowd' || g, '-' FROM generate_series(1, 1998) g RETURNING id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let cap = ctx
        .refused(
            422,
            Method::POST,
            &ctx.url("/members"),
            &owner,
            Some(json!({ "user_ids": crowd })),
        )
        .await;
    assert!(cap.to_string().contains("2000"), "{cap}");
    let members = ctx
        .ok(Method::GET, &ctx.url("/members"), &carol, None)
        .await;
    assert_eq!(members["total"], 3);
    assert_eq!(members["members"][0]["role"], "owner");
    ctx.refused(409, Method::POST, &ctx.url("/leave"), &owner, None)
        .await;
    ctx.refused(
        403,
        Method::PUT,
        &ctx.url(&format!("/members/{}/mute", owner.id)),
        &owner,
        Some(json!({ "minutes": 5 })),
    )
    .await;
    ctx.refused(
        400,
        Method::PUT,
        &ctx.url(&format!("/members/{}/mute", bob.id)),
        &owner,
        Some(json!({ "minutes": -1 })),
    )
    .await;

    // --- sockets: a non-member is refused with an error frame and nothing is stored ---
    let mut bob_ws = connect(&format!("{}/ws/group/{g}?token={}", up.ws, bob.token)).await;
    assert_eq!(
        expect(&mut bob_ws, "group_joined").await["data"]["role"],
        "member"
    );
    let mut carol_ws = connect(&format!("{}/ws?token={}", up.ws, carol.token)).await;
    send(
        &mut carol_ws,
        json!({ "type": "join_group", "group_id": g }),
    )
    .await;
    expect(&mut carol_ws, "group_joined").await;
    let before = heads(&up.nats_url).await;
    let mut dave_ws = connect(&format!("{}/ws/group/{g}?token={}", up.ws, dave.token)).await;
    let refused = next(&mut dave_ws).await;
    assert_eq!(
        (refused["type"].as_str(), refused["group_id"].as_i64()),
        (Some("error"), Some(g)),
        "{refused}"
    );
    send(
        &mut dave_ws,
        json!({ "type": "group_message", "group_id": g, "data": { "content": "let me in" } }),
    )
    .await;
    assert_eq!(next(&mut dave_ws).await["type"], "error");
    // The web dialect on the refused group socket means that group.
    send(
        &mut dave_ws,
        json!({ "type": "message", "payload": { "content": "let me in" } }),
    )
    .await;
    let web = next(&mut dave_ws).await;
    assert_eq!(
        (web["group_id"].as_i64(), web["data"]["error"].as_str()),
        (Some(g), Some("not a member of this group")),
        "{web}"
    );
    // The socket stays open after an error frame.
    send(&mut dave_ws, json!({ "type": "ping" })).await;
    assert_eq!(expect(&mut dave_ws, "pong").await["type"], "pong");
    ctx.refused(
        403,
        Method::POST,
        &ctx.url("/messages"),
        &dave,
        Some(json!({ "content": "hi" })),
    )
    .await;
    ctx.refused(403, Method::GET, &ctx.url("/messages"), &dave, None)
        .await;
    assert_eq!(heads(&up.nats_url).await, before);

    // --- a message over the socket: acked with its sequence, delivered, mention notified ---
    let mut owner_ws = connect(&format!("{}/ws?token={}", up.ws, owner.token)).await;
    send(
        &mut owner_ws,
        json!({ "type": "join_group", "group_id": g }),
    )
    .await;
    expect(&mut owner_ws, "group_joined").await;
    send(
        &mut owner_ws,
        json!({ "type": "group_message", "group_id": g, "data": { "content": "大家好，欢迎加入", "client_msg_id": "m-1", "mentions": [carol.id] } }),
    )
    .await;
    let ack = expect(&mut owner_ws, "ack").await;
    let seq1 = ack["data"]["seq"].as_u64().unwrap();
    assert_eq!(ack["data"]["duplicate"], false);
    let got = expect(&mut bob_ws, "group_message").await;
    assert_eq!(
        (got["data"]["seq"].as_u64(), got["data"]["content"].as_str()),
        (Some(seq1), Some("大家好，欢迎加入"))
    );
    let mention = expect(&mut carol_ws, "group_mention").await;
    assert_eq!(mention["data"]["seq"].as_u64(), Some(seq1));
    // A resend with the same client id is stored once.
    send(
        &mut owner_ws,
        json!({ "type": "group_message", "group_id": g, "data": { "content": "大家好，欢迎加入", "client_msg_id": "m-1", "mentions": [carol.id] } }),
    )
    .await;
    let again = expect(&mut owner_ws, "ack").await;
    assert_eq!(
        (
            again["data"]["seq"].as_u64(),
            again["data"]["duplicate"].as_bool()
        ),
        (Some(seq1), Some(true))
    );
    // Typing reaches the group's other sockets, never stored.
    let before = heads(&up.nats_url).await;
    send(
        &mut owner_ws,
        json!({ "type": "typing", "group_id": g, "data": {} }),
    )
    .await;
    let typing = expect(&mut bob_ws, "typing").await;
    assert_eq!(
        (
            typing["group_id"].as_i64(),
            typing["data"]["user_id"].as_i64()
        ),
        (Some(g), Some(owner.id))
    );
    assert_eq!(heads(&up.nats_url).await, before);
    // A mention of a non-member is refused.
    send(&mut owner_ws, json!({ "type": "group_message", "group_id": g, "data": { "content": "x", "mentions": [dave.id] } })).await;
    assert_eq!(next(&mut owner_ws).await["type"], "error");

    // --- the HTTP fallback, bad messages ---
    for (status, bad) in [
        (422, json!({ "content": "" })),
        (400, json!({ "content": "x".repeat(5001) })),
        (422, json!({ "content": "a\u{0}b" })),
        (400, json!({ "content": "x", "content_type": "video" })),
    ] {
        ctx.refused(status, Method::POST, &ctx.url("/messages"), &bob, Some(bad))
            .await;
    }
    let sent = ctx
        .ok(
            Method::POST,
            &ctx.url("/messages"),
            &bob,
            Some(json!({ "content": "second, from bob", "client_msg_id": "b-1" })),
        )
        .await;
    let seq2 = sent["seq"].as_u64().unwrap();
    assert_eq!(
        expect(&mut owner_ws, "group_message").await["data"]["seq"].as_u64(),
        Some(seq2)
    );

    // --- unread counts and read cursors ---
    let carol_entry = ctx.listed(&carol).await;
    assert_eq!(
        (
            carol_entry["unread"].as_i64(),
            carol_entry["unread_mentions"].as_i64()
        ),
        (Some(2), Some(1)),
        "{carol_entry}"
    );
    assert_eq!(carol_entry["last_message"]["seq"].as_u64(), Some(seq2));
    assert_eq!(
        ctx.listed(&bob).await["unread"],
        1,
        "bob's own message is not unread to him"
    );
    ctx.refused(
        400,
        Method::POST,
        &ctx.url("/read"),
        &carol,
        Some(json!({ "seq": 0 })),
    )
    .await;
    ctx.ok(
        Method::POST,
        &ctx.url("/read"),
        &carol,
        Some(json!({ "seq": seq2 })),
    )
    .await;
    assert_eq!(ctx.listed(&carol).await["unread"], 0);
    let read = expect(&mut owner_ws, "group_read").await;
    assert_eq!(
        (
            read["data"]["user_id"].as_i64(),
            read["data"]["read_seq"].as_u64()
        ),
        (Some(carol.id), Some(seq2))
    );

    // --- history paging and cursors ---
    let newest = ctx
        .ok(Method::GET, &ctx.url("/messages?limit=1"), &carol, None)
        .await;
    assert_eq!(
        (
            newest["messages"][0]["seq"].as_u64(),
            newest["has_more"].as_bool()
        ),
        (Some(seq2), Some(true))
    );
    let older = ctx
        .ok(
            Method::GET,
            &ctx.url(&format!("/messages?before_seq={seq2}&limit=10")),
            &carol,
            None,
        )
        .await;
    assert_eq!(older["messages"][0]["seq"].as_u64(), Some(seq1));
    assert_eq!(older["messages"][0]["mentions"], json!([carol.id]));
    for (status, bad) in [
        (400, "limit=0"),
        (400, "limit=101"),
        (400, "before_seq=abc"),
        // Each alone is of the documented shape; together, a rule across fields refuses them.
        (422, "before_seq=1&after_seq=1"),
    ] {
        ctx.refused(
            status,
            Method::GET,
            &ctx.url(&format!("/messages?{bad}")),
            &carol,
            None,
        )
        .await;
    }

    // --- recall: own message within 2 minutes; not someone else's ---
    ctx.refused(
        404,
        Method::POST,
        &ctx.url("/messages/0/recall"),
        &bob,
        None,
    )
    .await;
    ctx.refused(
        403,
        Method::POST,
        &ctx.url(&format!("/messages/{seq2}/recall")),
        &owner,
        None,
    )
    .await;
    ctx.ok(
        Method::POST,
        &ctx.url(&format!("/messages/{seq2}/recall")),
        &bob,
        None,
    )
    .await;
    let recall = expect(&mut owner_ws, "group_recall").await;
    assert_eq!(recall["data"]["message_seq"].as_u64(), Some(seq2));
    let after = ctx
        .ok(Method::GET, &ctx.url("/messages?limit=1"), &owner, None)
        .await;
    assert_eq!(
        (
            after["messages"][0]["recalled"].as_bool(),
            after["messages"][0]["content"].as_str()
        ),
        (Some(true), Some(""))
    );
    // A resume from before the recall shows the message without its text.
    let mut fresh = connect(&format!(
        "{}/ws/group/{g}?token={}&after_seq=0",
        up.ws, carol.token
    ))
    .await;
    let mut replayed_seq2 = None;
    loop {
        let f = next(&mut fresh).await;
        if f["type"] == "group_message" && f["data"]["seq"].as_u64() == Some(seq2) {
            replayed_seq2 = Some(f["data"]["content"].clone());
        }
        if f["type"] == "group_resumed" {
            break;
        }
    }
    assert_eq!(
        replayed_seq2,
        Some(json!("")),
        "a recalled message replays blank"
    );
    // Group ids are positive: a socket for group 0 is refused at the handshake, a frame naming
    // a negative group gets an error frame.
    assert!(tokio_tungstenite::connect_async(format!(
        "{}/ws/group/0?token={}",
        up.ws, carol.token
    ))
    .await
    .is_err());
    send(&mut fresh, json!({ "type": "join_group", "group_id": -5 })).await;
    assert_eq!(expect_error(&mut fresh).await["group_id"], 0);
    drop(fresh);
    // A message sent 3 minutes ago (written as the gateway writes it) can no longer be recalled.
    let js = async_nats::jetstream::new(async_nats::connect(&up.nats_url).await.unwrap());
    let chat = eventstore::ChatLog::open(js, Default::default())
        .await
        .unwrap();
    let old = chat
        .append_group(&eventstore::group_chat::GroupRecord::GroupMessage(
            eventstore::group_chat::GroupMessage {
                group_id: g,
                sender_id: bob.id,
                content_type: "text".into(),
                content: "an old one".into(),
                file_url: String::new(),
                client_msg_id: "b-old".into(),
                mentions: Vec::new(),
                sent_at: chrono::Utc::now() - chrono::Duration::minutes(3),
            },
        ))
        .await
        .unwrap();
    expect(&mut owner_ws, "group_message").await;
    ctx.refused(
        400,
        Method::POST,
        &ctx.url(&format!("/messages/{}/recall", old.seq)),
        &bob,
        None,
    )
    .await;

    // --- search, Chinese included, only in the caller's groups ---
    let found = ctx
        .ok(
            Method::GET,
            &format!("{api}/api/group/search?q=欢迎"),
            &carol,
            None,
        )
        .await;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["messages"][0]["seq"].as_u64(), Some(seq1));
    let none = ctx
        .ok(
            Method::GET,
            &format!("{api}/api/group/search?q=欢迎"),
            &dave,
            None,
        )
        .await;
    assert_eq!(none["total"], 0);
    ctx.refused(
        403,
        Method::GET,
        &format!("{api}/api/group/search?q=欢迎&group_id={g}"),
        &dave,
        None,
    )
    .await;
    ctx.refused(
        400,
        Method::GET,
        &format!("{api}/api/group/search?q="),
        &carol,
        None,
    )
    .await;
    let mentions = ctx
        .ok(
            Method::GET,
            &format!("{api}/api/group/mentions"),
            &carol,
            None,
        )
        .await;
    assert_eq!(mentions["total"], 1);

    // --- mutes: a muted member is refused over both paths, nothing stored ---
    ctx.ok(
        Method::PUT,
        &ctx.url(&format!("/members/{}/mute", bob.id)),
        &owner,
        Some(json!({ "minutes": 10 })),
    )
    .await;
    expect(&mut bob_ws, "group_member_muted").await;
    let before = heads(&up.nats_url).await;
    send(
        &mut bob_ws,
        json!({ "type": "message", "payload": { "content": "am I muted?" } }),
    )
    .await;
    let muted = expect_error(&mut bob_ws).await;
    assert!(
        muted["data"]["error"].as_str().unwrap().contains("muted"),
        "{muted}"
    );
    assert_eq!(heads(&up.nats_url).await, before);
    ctx.refused(
        403,
        Method::POST,
        &ctx.url("/messages"),
        &bob,
        Some(json!({ "content": "muted" })),
    )
    .await;
    ctx.ok(
        Method::PUT,
        &ctx.url(&format!("/members/{}/mute", bob.id)),
        &owner,
        Some(json!({ "minutes": 0 })),
    )
    .await;
    ctx.ok(
        Method::PUT,
        &ctx.url("/mute"),
        &owner,
        Some(json!({ "muted": true })),
    )
    .await;
    ctx.refused(
        403,
        Method::POST,
        &ctx.url("/messages"),
        &carol,
        Some(json!({ "content": "group muted" })),
    )
    .await;
    ctx.ok(
        Method::POST,
        &ctx.url("/messages"),
        &owner,
        Some(json!({ "content": "owners still speak" })),
    )
    .await;
    ctx.ok(
        Method::PUT,
        &ctx.url("/mute"),
        &owner,
        Some(json!({ "muted": false })),
    )
    .await;

    // --- resume: exactly what was missed, then live ---
    let bob_seen = last_group_seq(&mut bob_ws, g).await;
    drop(bob_ws);
    let m1 = ctx
        .ok(
            Method::POST,
            &ctx.url("/messages"),
            &carol,
            Some(json!({ "content": "missed one" })),
        )
        .await["seq"]
        .as_u64()
        .unwrap();
    let m2 = ctx
        .ok(
            Method::POST,
            &ctx.url("/messages"),
            &carol,
            Some(json!({ "content": "missed two" })),
        )
        .await["seq"]
        .as_u64()
        .unwrap();
    let mut bob_ws = connect(&format!(
        "{}/ws/group/{g}?token={}&after_seq={bob_seen}",
        up.ws, bob.token
    ))
    .await;
    let mut replayed = Vec::new();
    loop {
        let f = next(&mut bob_ws).await;
        match f["type"].as_str().unwrap() {
            "group_message" => replayed.push(f["data"]["seq"].as_u64().unwrap()),
            "group_resumed" => {
                assert_eq!(f["data"]["recovered"], true);
                break;
            }
            _ => {}
        }
    }
    assert!(
        replayed.ends_with(&[m1, m2]),
        "replayed {replayed:?}, missed {m1} {m2}"
    );
    assert!(replayed.iter().all(|s| *s > bob_seen));

    // --- roles: only the owner changes them; ownership transfer; then the old owner may leave ---
    ctx.refused(
        403,
        Method::PUT,
        &ctx.url(&format!("/members/{}/role", carol.id)),
        &bob,
        Some(json!({ "role": "admin" })),
    )
    .await;
    ctx.refused(
        400,
        Method::PUT,
        &ctx.url(&format!("/members/{}/role", carol.id)),
        &owner,
        Some(json!({ "role": "king" })),
    )
    .await;
    ctx.ok(
        Method::PUT,
        &ctx.url(&format!("/members/{}/role", bob.id)),
        &owner,
        Some(json!({ "role": "owner" })),
    )
    .await;
    assert_eq!(
        ctx.ok(Method::GET, &ctx.url(""), &owner, None).await["role"],
        "admin"
    );
    ctx.ok(Method::POST, &ctx.url("/leave"), &owner, None).await;
    expect(&mut bob_ws, "group_member_left").await;

    // --- a member removed while connected stops receiving at once ---
    ctx.ok(
        Method::DELETE,
        &ctx.url(&format!("/members/{}", carol.id)),
        &bob,
        None,
    )
    .await;
    expect(&mut carol_ws, "group_member_removed").await;
    ctx.ok(
        Method::POST,
        &ctx.url("/messages"),
        &bob,
        Some(json!({ "content": "after carol left" })),
    )
    .await;
    silent(&mut carol_ws, "group_message", Duration::from_millis(800)).await;
    ctx.refused(403, Method::GET, &ctx.url("/messages"), &carol, None)
        .await;
    // Added back, the same socket joins again and receives again.
    ctx.ok(
        Method::POST,
        &ctx.url("/members"),
        &bob,
        Some(json!({ "user_ids": [carol.id] })),
    )
    .await;
    send(
        &mut carol_ws,
        json!({ "type": "join_group", "group_id": g }),
    )
    .await;
    expect(&mut carol_ws, "group_joined").await;
    let back = ctx
        .ok(
            Method::POST,
            &ctx.url("/messages"),
            &bob,
            Some(json!({ "content": "welcome back" })),
        )
        .await;
    let got = expect(&mut carol_ws, "group_message").await;
    assert_eq!(got["data"]["seq"], back["seq"]);

    // --- the platform's administrators: list, messages, redaction, dissolution ---
    let (status, login) = call(
        Method::POST,
        &format!("{}/api/admin/login", up.admin),
        None,
        Some(json!({ "username": "admin", "password": "admin123" })),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let admin = Member {
        token: login["token"]
            .as_str()
            .or(login["data"]["token"].as_str())
            .unwrap()
            .to_string(),
        id: 0,
    };
    let listed = ctx
        .ok(
            Method::GET,
            &format!("{}/api/admin/groups?keyword=支持", up.admin),
            &admin,
            None,
        )
        .await;
    assert!(
        listed["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == g),
        "{listed}"
    );
    let history = ctx
        .ok(
            Method::GET,
            &format!("{}/api/admin/groups/{g}/messages", up.admin),
            &admin,
            None,
        )
        .await;
    assert!(history["messages"].as_array().unwrap().len() >= 5);
    // A user's token is not an administrator's.
    ctx.refused(
        403,
        Method::GET,
        &format!("{}/api/admin/groups", up.admin),
        &bob,
        None,
    )
    .await;
    for missing in [
        format!("{g}/messages/0"),
        format!("{}/messages/1", i64::MAX - 1),
    ] {
        ctx.refused(
            404,
            Method::DELETE,
            &format!("{}/api/admin/groups/{missing}", up.admin),
            &admin,
            None,
        )
        .await;
    }
    ctx.ok(
        Method::DELETE,
        &format!("{}/api/admin/groups/{g}/messages/{seq1}", up.admin),
        &admin,
        None,
    )
    .await;
    let redacted = ctx
        .ok(
            Method::GET,
            &ctx.url(&format!("/messages?after_seq={}&limit=1", seq1 - 1)),
            &bob,
            None,
        )
        .await;
    assert_eq!(
        (
            redacted["messages"][0]["redacted"].as_bool(),
            redacted["messages"][0]["content"].as_str()
        ),
        (Some(true), Some(""))
    );
    let found = ctx
        .ok(
            Method::GET,
            &format!("{api}/api/group/search?q=欢迎"),
            &bob,
            None,
        )
        .await;
    assert_eq!(found["total"], 0, "redacted text is not found");
    ctx.ok(
        Method::POST,
        &format!("{}/api/admin/groups/{g}/dissolve", up.admin),
        &admin,
        None,
    )
    .await;
    expect(&mut bob_ws, "group_dissolved").await;
    ctx.refused(
        409,
        Method::POST,
        &ctx.url("/messages"),
        &bob,
        Some(json!({ "content": "anyone?" })),
    )
    .await;
    // Dissolving again is a no-op: answered, nothing written.
    let before = heads(&up.nats_url).await;
    ctx.ok(Method::POST, &ctx.url("/dissolve"), &bob, None)
        .await;
    assert_eq!(heads(&up.nats_url).await, before);
    assert!(
        ctx.listed(&bob).await.is_null(),
        "a dissolved group leaves the list"
    );
}

/// The next `error` frame.
async fn expect_error(ws: &mut Ws) -> Value {
    loop {
        let f = next(ws).await;
        if f["type"] == "error" {
            return f;
        }
    }
}

/// The highest group record sequence a socket has been sent so far (reads what is queued).
async fn last_group_seq(ws: &mut Ws, group: i64) -> u64 {
    let mut last = 0;
    while let Ok(Some(Ok(Message::Text(t)))) =
        tokio::time::timeout(Duration::from_millis(300), ws.next()).await
    {
        let f: Value = serde_json::from_str(t.as_str()).unwrap();
        if f["group_id"] == group {
            if let Some(seq) = f["data"]["seq"].as_u64() {
                last = last.max(seq);
            }
        }
    }
    last
}

/// A chat stream that refuses writes concerns only the groups it holds. Two groups on two
/// shards: while the first one's stream refuses new messages, the owner's message there gets an
/// error frame naming that group and telling to retry with the same id; the same socket, bound to
/// the other group next, has its message there acked and delivered; the REST send to the refused
/// group is a 503 with `Retry-After`, and nothing reaches the refused group's members. Once the
/// stream takes writes again, the resend with the same id is stored and delivered once.
#[test]
fn a_chat_stream_that_refuses_writes_fails_only_its_own_groups() {
    let up = start_up();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), refused_shard(&up))
            .await
            .unwrap_or_else(|_| panic!("timed out; log:\n{}", log_of(&up)));
    });
}

async fn refused_shard(up: &Up) {
    let api = up.api.as_str();
    let (owner, bob) = (user(api, "shard_owner").await, user(api, "shard_bob").await);
    let layout = eventstore::ChatLayout::default();
    // Two groups whose records live in two streams.
    let mut groups: Vec<i64> = Vec::new();
    while groups.len() < 2 {
        let (status, v) = call(
            Method::POST,
            &format!("{api}/api/group/create"),
            Some(&owner.token),
            Some(json!({ "name": "分片", "member_ids": [bob.id] })),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        let g = v["data"]["group_id"].as_i64().unwrap();
        if groups
            .iter()
            .all(|&o| layout.place_group(o).stream != layout.place_group(g).stream)
        {
            groups.push(g);
        }
    }
    let (g1, g2) = (groups[0], groups[1]);
    // Bob reads each group on a socket bound to it; the owner writes on one socket, bound to
    // one group at a time (`join_group`).
    let mut bob1 = connect(&format!("{}/ws/group/{g1}?token={}", up.ws, bob.token)).await;
    expect(&mut bob1, "group_joined").await;
    let mut bob2 = connect(&format!("{}/ws/group/{g2}?token={}", up.ws, bob.token)).await;
    expect(&mut bob2, "group_joined").await;
    let mut owner_ws = connect(&format!("{}/ws?token={}", up.ws, owner.token)).await;
    let join = |g: i64| json!({ "type": "join_group", "group_id": g });
    let say = |g: i64, id: &str| json!({ "type": "group_message", "group_id": g, "data": { "content": format!("to {g}"), "client_msg_id": id } });
    send(&mut owner_ws, join(g1)).await;
    expect(&mut owner_ws, "group_joined").await;
    send(&mut owner_ws, say(g1, "before")).await;
    let before = expect(&mut owner_ws, "ack").await;
    assert_eq!(
        expect(&mut bob1, "group_message").await["data"]["seq"],
        before["data"]["seq"]
    );

    // The first group's stream refuses new messages: full, discarding new ones.
    let js = async_nats::jetstream::new(async_nats::connect(&up.nats_url).await.unwrap());
    let original = testkit::refuse_new_messages(&js, layout.place_group(g1).stream)
        .await
        .unwrap();

    send(&mut owner_ws, say(g1, "during")).await;
    let refused = expect_error(&mut owner_ws).await;
    assert_eq!(
        refused["group_id"], g1,
        "the error names its group: {refused}"
    );
    let why = refused["data"]["error"].as_str().unwrap();
    assert!(why.contains("retry with the same id"), "{why}");
    // The same socket, the other shard's group: acked and delivered as usual.
    send(&mut owner_ws, join(g2)).await;
    expect(&mut owner_ws, "group_joined").await;
    send(&mut owner_ws, say(g2, "other")).await;
    let other = expect(&mut owner_ws, "ack").await;
    assert_eq!(other["group_id"], g2, "{other}");
    assert_eq!(
        expect(&mut bob2, "group_message").await["data"]["seq"],
        other["data"]["seq"]
    );
    let rest = reqwest::Client::new()
        .post(format!("{api}/api/group/{g1}/messages"))
        .bearer_auth(&owner.token)
        .json(&json!({ "content": "over REST", "client_msg_id": "rest" }))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 503);
    assert_eq!(rest.headers()["retry-after"], "1");
    silent(&mut bob1, "group_message", Duration::from_millis(500)).await;

    // The stream takes writes again: the resend is stored, delivered once.
    js.update_stream(&original).await.unwrap();
    send(&mut owner_ws, join(g1)).await;
    expect(&mut owner_ws, "group_joined").await;
    send(&mut owner_ws, say(g1, "during")).await;
    let stored = expect(&mut owner_ws, "ack").await;
    assert_eq!(
        stored["data"]["duplicate"], false,
        "the refused copy was not stored"
    );
    let seq = stored["data"]["seq"].as_u64();
    assert_eq!(
        expect(&mut bob1, "group_message").await["data"]["seq"].as_u64(),
        seq
    );
    send(&mut owner_ws, say(g1, "during")).await;
    let again = expect(&mut owner_ws, "ack").await;
    assert_eq!(
        (
            again["data"]["seq"].as_u64(),
            again["data"]["duplicate"].as_bool()
        ),
        (seq, Some(true))
    );
    silent(&mut bob1, "group_message", Duration::from_millis(500)).await;
}
