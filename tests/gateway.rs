//! The realtime gateway over real sockets: gateway nodes are `mychat serve gateway`
//! processes against a real nats-server and PostgreSQL (testkit, free ports). Sessions are started
//! with commands on the `ChatSession` aggregate; tokens are signed with the nodes' secret.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cqrs_es::EventStore;
use domain::{ChatSession, SessionCommand, SessionEvent};
use eventstore::envelope::Upcasters;
use eventstore::{Actor, CommandBus, CommandMeta};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "gateway-test-secret-0123456789abcdef0123456789";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Node {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Node {
    fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }
    fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }
    fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    nats: testkit::NatsServer,
    pg: testkit::Postgres,
    bus: CommandBus,
    jwt: api::JwtKeys,
    db: sqlx::PgPool,
}

async fn cluster() -> Cluster {
    cluster_with(Default::default()).await
}

/// A cluster whose streams are created with `settings` (the nodes keep the recorded layout).
async fn cluster_with(settings: eventstore::StreamSettings) -> Cluster {
    let nats = tokio::task::spawn_blocking(testkit::NatsServer::start)
        .await
        .unwrap()
        .unwrap();
    let pg = tokio::task::spawn_blocking(testkit::Postgres::start)
        .await
        .unwrap()
        .unwrap();
    let db = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    projections::MIGRATOR.run(&db).await.unwrap();
    // The handshake checks the token's account (exists, enabled, not revoked), so the
    // users the tests hand tokens to exist.
    sqlx::query(
        "INSERT INTO users (id, username, password_hash) \
         SELECT n, 'u' || n, 'x' FROM generate_series(1, 60) n WHERE n NOT IN (21, 22)",
    )
    .execute(&db)
    .await
    .unwrap();
    let client = nats.connect().await.unwrap();
    let js = async_nats::jetstream::new(client);
    eventstore::ensure_streams(&js, &settings).await.unwrap();
    Cluster {
        bus: CommandBus::new(js, Upcasters::default()),
        jwt: api::JwtKeys::new(SECRET.as_bytes(), 3600),
        nats,
        pg,
        db,
    }
}

impl Cluster {
    /// Starts a gateway node process with extra `MYCHAT_*` settings.
    async fn node(&self, extra: &[(&str, &str)]) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("mychat-gw")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = testkit::free_port();
        let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mychat"));
        cmd.args(["serve", "gateway", "--addr", &format!("127.0.0.1:{port}")])
            .env("MYCHAT_NATS_URL", self.nats.url())
            .env("MYCHAT_DATABASE_URL", self.pg.url())
            .env("MYCHAT_JWT_SECRET", SECRET)
            .env("MYCHAT_SANDBOX_SECRET", "sandbox")
            .env("MYCHAT_DATA_DIR", dir.path().join("data"))
            .env("MYCHAT_LOG_FORMAT", "json")
            .env("MYCHAT_GATEWAY_PRESENCE_TIMEOUT_MS", "1500")
            .env("RUST_LOG", "info,async_nats=warn,sqlx=warn");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let node = Node { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/health", node.http())).await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node did not start: {}",
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node
    }

    fn token(&self, user_id: i64) -> String {
        self.jwt
            .issue(user_id, &format!("u{user_id}"), "user")
            .unwrap()
    }

    /// Starts session `sid` between user `user` and counselor login `counselor_user`.
    async fn session(&self, sid: i64, user: i64, counselor_user: i64, prepaid_minutes: i64) {
        self.bus
            .execute::<ChatSession>(
                &sid.to_string(),
                SessionCommand::Start {
                    order_id: sid,
                    user_id: user,
                    counselor_id: counselor_user,
                    counselor_user_id: counselor_user,
                    price_per_minute: 500,
                    prepaid_minutes,
                    started_at: chrono::Utc::now(),
                },
                &CommandMeta::new(Actor::user(user)),
            )
            .await
            .unwrap();
    }

    async fn session_events(&self, sid: i64) -> Vec<SessionEvent> {
        let store = self.bus.store::<ChatSession>().await.unwrap();
        store
            .load_events(&sid.to_string())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.payload)
            .collect()
    }

    /// The session's records in its chat stream, read independently: every stream message by
    /// direct get, a pack (`Mychat-Pack`: a JSON array of `{subject, kind, dedup_id, record}`)
    /// as its entries on the session's subject.
    async fn chat_records(&self, sid: i64) -> Vec<Value> {
        let place = place(sid);
        let mut stream = self.bus.jetstream().get_stream(place.stream).await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            let m = stream.direct_get(seq).await.unwrap();
            if m.headers.get("Mychat-Pack").is_some() {
                let entries: Vec<Value> = serde_json::from_slice(&m.payload).unwrap();
                out.extend(
                    entries
                        .into_iter()
                        .filter(|e| e["subject"] == place.subject.as_str())
                        .map(|e| e["record"].clone()),
                );
            } else if m.subject.as_str() == place.subject {
                out.push(serde_json::from_slice(&m.payload).unwrap());
            }
        }
        out
    }
}

/// Where a session's chat records live (the default layout, which the test servers have).
fn place(session_id: i64) -> eventstore::chat::ChatPlace {
    eventstore::ChatLayout::default().place(session_id)
}

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next text frame (as JSON) within `wait`; `None` on timeout. Panics on close.
async fn next(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(c)))) => panic!("socket closed: {c:?}"),
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("socket ended: {other:?}"),
        }
    }
}

/// No text frame of type `kind` arrives within `wait` (others are read and dropped).
async fn silent(ws: &mut Ws, kind: &str, wait: Duration) {
    let deadline = Instant::now() + wait;
    while let Some(f) = next(ws, deadline.saturating_duration_since(Instant::now())).await {
        assert_ne!(f["type"], kind, "unexpected `{kind}` frame: {f}");
    }
}

/// The next frame of type `kind`, skipping others (within 10 s).
async fn expect(ws: &mut Ws, kind: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no `{kind}` frame"));
        let f = next(ws, left)
            .await
            .unwrap_or_else(|| panic!("no `{kind}` frame"));
        if f["type"] == kind {
            return f;
        }
    }
}

/// Reads until the socket closes; returns the close code and the text frames seen before.
async fn until_close(ws: &mut Ws, wait: Duration) -> (Option<u16>, usize) {
    let deadline = Instant::now() + wait;
    let mut frames = 0;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("socket not closed in time");
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => panic!("socket not closed in time"),
            Ok(Some(Ok(Message::Close(c)))) => return (c.map(|c| u16::from(c.code)), frames),
            Ok(Some(Ok(Message::Text(_)))) => frames += 1,
            Ok(Some(Ok(_))) => {}
            Ok(_) => return (None, frames),
        }
    }
}

async fn online(node: &Node) -> Vec<i64> {
    let v: Value = reqwest::get(format!("{}/ws/counselors/online", node.http()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"]["counselors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["user_id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_dialects_cross_two_nodes_with_acks_dedup_typing_reads_and_revokes() {
    let c = cluster().await;
    let (a, b) = (c.node(&[]).await, c.node(&[]).await);
    c.session(101, 1, 2, 30).await;
    c.session(102, 3, 4, 30).await;

    // The user (web dialect) on node A, bound on connect; the counselor (Go dialect) on node B.
    let mut user = connect(&format!("{}/ws/chat/101?token={}", a.ws(), c.token(1))).await;
    expect(&mut user, "join_success").await;
    let mut counselor = connect(&format!("{}/ws?token={}", b.ws(), c.token(2))).await;
    send(&mut counselor, json!({"type":"join","session_id":101})).await;
    expect(&mut counselor, "join_success").await;
    // Both present (across nodes): both get session_start.
    expect(&mut user, "session_start").await;
    expect(&mut counselor, "session_start").await;
    // The user's second socket (phone), on node B.
    let mut phone = connect(&format!("{}/ws/chat/101?token={}", b.ws(), c.token(1))).await;
    expect(&mut phone, "join_success").await;

    send(&mut user, json!({"type":"message","payload":{"content_type":"text","content":"hello","client_msg_id":"w1"}})).await;
    let ack = expect(&mut user, "ack").await;
    let seq = ack["data"]["seq"].as_u64().unwrap();
    // The message's id across the chat streams (stream sequence × 64 + shard).
    let id = ack["data"]["message_id"].as_i64().unwrap();
    assert_eq!(id, eventstore::chat::message_id(place(101).shard, seq));
    assert_eq!(ack["data"]["client_msg_id"], "w1");
    let got = expect(&mut counselor, "message").await;
    assert_eq!(got["data"]["seq"].as_u64(), Some(seq));
    assert_eq!(
        got["payload"]["content"], "hello",
        "web clients read `payload`"
    );
    assert_eq!(got["data"]["sender_type"], "user");
    assert_eq!(
        expect(&mut phone, "message").await["data"]["seq"].as_u64(),
        Some(seq)
    );

    // A resend with the same client id is stored once and not delivered again.
    send(
        &mut user,
        json!({"type":"message","payload":{"content":"hello","client_msg_id":"w1"}}),
    )
    .await;
    let again = expect(&mut user, "ack").await;
    assert_eq!(again["data"]["seq"].as_u64(), Some(seq));
    assert_eq!(again["data"]["duplicate"], true);

    // Go dialect back.
    send(
        &mut counselor,
        json!({"type":"message","session_id":101,"data":{"content":"hi there","id":"g1"}}),
    )
    .await;
    let ack2 = expect(&mut counselor, "ack").await;
    let seq2 = ack2["data"]["seq"].as_u64().unwrap();
    let id2 = ack2["data"]["message_id"].as_i64().unwrap();
    let m = expect(&mut user, "message").await;
    assert_eq!(
        m["data"]["seq"].as_u64(),
        Some(seq2),
        "no second copy of w1 came first"
    );
    assert_eq!(m["data"]["sender_type"], "counselor");

    // Typing over core NATS, across nodes, to the other side only.
    send(&mut counselor, json!({"type":"typing","session_id":101})).await;
    let t = expect(&mut user, "typing").await;
    assert_eq!(t["data"]["user_id"], 2);
    send(
        &mut user,
        json!({"type":"typing","payload":{"is_typing":false}}),
    )
    .await;
    expect(&mut counselor, "typing_stop").await;

    // Read receipts: only the recipient; stored and fanned out.
    send(
        &mut counselor,
        json!({"type":"read","session_id":101,"data":{"message_id":id2}}),
    )
    .await;
    let e = expect(&mut counselor, "error").await;
    assert!(e["data"]["error"].as_str().unwrap().contains("recipient"));
    send(
        &mut user,
        json!({"type":"read","payload":{"message_id":id2}}),
    )
    .await;
    expect(&mut user, "ack").await;
    let r = expect(&mut counselor, "message_read").await;
    assert_eq!(r["data"]["message_id"].as_i64(), Some(id2));
    assert_eq!(r["data"]["message_seq"].as_u64(), Some(seq2));
    assert_eq!(r["data"]["read_by"], 1);

    // Revokes: only the sender.
    send(
        &mut counselor,
        json!({"type":"revoke","session_id":101,"data":{"message_id":id}}),
    )
    .await;
    expect(&mut counselor, "error").await;
    send(&mut user, json!({"type":"revoke","payload":{"seq":seq}})).await;
    expect(&mut user, "ack").await;
    let rv = expect(&mut counselor, "message_revoked").await;
    assert_eq!(rv["data"]["message_id"].as_i64(), Some(id));

    // Bad input: an error frame each, the socket keeps working, nothing stored.
    let before = c.chat_records(101).await.len();
    user.send(Message::Text("{not json".into())).await.unwrap();
    expect(&mut user, "error").await;
    user.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    expect(&mut user, "error").await;
    send(&mut user, json!({"type":"nonsense"})).await;
    expect(&mut user, "error").await;
    send(
        &mut user,
        json!({"type":"message","session_id":102,"data":{"content":"intrude"}}),
    )
    .await;
    let e = expect(&mut user, "error").await;
    assert!(e["data"]["error"].as_str().unwrap().contains("participant"));
    let oversize = json!({"type":"message","payload":{"content":"x".repeat(100_000)}});
    send(&mut user, oversize).await;
    let e = expect(&mut user, "error").await;
    assert!(e["data"]["error"].as_str().unwrap().contains("larger"));
    send(&mut user, json!({"type":"ping"})).await;
    expect(&mut user, "pong").await;
    assert_eq!(c.chat_records(101).await.len(), before);
    assert!(c.chat_records(102).await.is_empty());
    // Handshake refusals are plain HTTP.
    assert!(
        tokio_tungstenite::connect_async(format!("{}/ws/chat/101?token=forged", a.ws()))
            .await
            .is_err()
    );

    // The stored records: one message per client id, then the read and the revoke.
    let kinds: Vec<String> = c
        .chat_records(101)
        .await
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        ["message", "message", "message_read", "message_revoked"]
    );

    // Admin reach on any node: a broadcast on `notify.all`, a kick on `notify.<user_id>`.
    let admin = c.nats.connect().await.unwrap();
    admin
        .publish(
            "notify.all",
            json!({"type":"system_message","data":{"content":"maintenance"}})
                .to_string()
                .into(),
        )
        .await
        .unwrap();
    assert_eq!(
        expect(&mut counselor, "system_message").await["data"]["content"],
        "maintenance"
    );
    assert_eq!(
        expect(&mut user, "system_message").await["data"]["content"],
        "maintenance"
    );
    admin
        .publish(
            "notify.1",
            json!({"type":"force_logout","data":{"reason":"policy"},"close":"kicked by admin"})
                .to_string()
                .into(),
        )
        .await
        .unwrap();
    expect(&mut phone, "force_logout").await;
    let (code, _) = until_close(&mut phone, Duration::from_secs(5)).await;
    assert_eq!(code, Some(4001));
    // Every socket of the user, on every node.
    expect(&mut user, "force_logout").await;
    let (code, _) = until_close(&mut user, Duration::from_secs(5)).await;
    assert_eq!(code, Some(4001));

    // A flood from one socket is closed with a reason; the others keep working.
    let mut flood = connect(&format!("{}/ws?token={}", a.ws(), c.token(1))).await;
    for _ in 0..200 {
        if flood
            .send(Message::Text(r#"{"type":"ping"}"#.into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, _) = until_close(&mut flood, Duration::from_secs(10)).await;
    assert_eq!(code, Some(1008));
    send(&mut counselor, json!({"type":"ping"})).await;
    expect(&mut counselor, "pong").await;
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_disconnect_gets_every_missed_message_once_then_the_live_tail() {
    let c = cluster().await;
    let (a, b) = (c.node(&[]).await, c.node(&[]).await);
    c.session(201, 11, 12, 30).await;
    let mut counselor = connect(&format!("{}/ws/chat/201?token={}", b.ws(), c.token(12))).await;
    expect(&mut counselor, "join_success").await;
    let mut user = connect(&format!("{}/ws/chat/201?token={}", a.ws(), c.token(11))).await;
    expect(&mut user, "join_success").await;

    let mut sent = Vec::new();
    for i in 0..3 {
        send(&mut counselor, json!({"type":"message","session_id":201,"data":{"content":format!("m{i}"),"id":format!("c{i}")}})).await;
        sent.push(
            expect(&mut counselor, "ack").await["data"]["seq"]
                .as_u64()
                .unwrap(),
        );
    }
    let mut last = 0;
    for s in &sent {
        let m = expect(&mut user, "message").await;
        assert_eq!(m["data"]["seq"].as_u64(), Some(*s));
        last = *s;
    }
    user.close(None).await.unwrap();
    drop(user);

    // Sent while the user is away.
    let mut missed = Vec::new();
    for i in 3..8 {
        send(&mut counselor, json!({"type":"message","session_id":201,"data":{"content":format!("m{i}"),"id":format!("c{i}")}})).await;
        missed.push(
            expect(&mut counselor, "ack").await["data"]["seq"]
                .as_u64()
                .unwrap(),
        );
    }

    // Reconnect on the other node with ?after_seq=, while the counselor keeps sending.
    let mut user = connect(&format!(
        "{}/ws/chat/201?token={}&after_seq={last}",
        b.ws(),
        c.token(11)
    ))
    .await;
    let mut live = Vec::new();
    for i in 8..12 {
        send(&mut counselor, json!({"type":"message","session_id":201,"data":{"content":format!("m{i}"),"id":format!("c{i}")}})).await;
        live.push(
            expect(&mut counselor, "ack").await["data"]["seq"]
                .as_u64()
                .unwrap(),
        );
    }
    let mut got = Vec::new();
    let mut resumed = None;
    while got.len() < missed.len() + live.len() || resumed.is_none() {
        let f = next(&mut user, Duration::from_secs(10))
            .await
            .expect("a frame");
        match f["type"].as_str().unwrap() {
            "message" => got.push(f["data"]["seq"].as_u64().unwrap()),
            "resumed" => resumed = Some(f),
            _ => {}
        }
    }
    let resumed = resumed.expect("resumed frame");
    assert_eq!(resumed["data"]["recovered"], true);
    let mut expected = missed.clone();
    expected.extend(&live);
    assert_eq!(got, expected, "no gap, no duplicate, in order");
    assert!(
        next(&mut user, Duration::from_millis(500)).await.is_none(),
        "nothing more"
    );

    // The `resume` frame on a plain socket does the same.
    let mut other = connect(&format!("{}/ws?token={}", a.ws(), c.token(11))).await;
    send(
        &mut other,
        json!({"type":"resume","session_id":201,"data":{"after_seq":missed[2]}}),
    )
    .await;
    let mut again = Vec::new();
    loop {
        let f = next(&mut other, Duration::from_secs(10))
            .await
            .expect("a frame");
        match f["type"].as_str().unwrap() {
            "message" => again.push(f["data"]["seq"].as_u64().unwrap()),
            "resumed" => break,
            _ => {}
        }
    }
    assert_eq!(again, expected[3..].to_vec());

    // More missed than a node replays: `recovered: false` (the client reloads from REST), and
    // the live tail still follows.
    let small = c.node(&[("MYCHAT_GATEWAY_MAX_REPLAY", "2")]).await;
    let mut third = connect(&format!(
        "{}/ws/chat/201?token={}&after_seq={last}",
        small.ws(),
        c.token(11)
    ))
    .await;
    let resumed = expect(&mut third, "resumed").await;
    assert_eq!(resumed["data"]["recovered"], false);
    send(
        &mut counselor,
        json!({"type":"message","session_id":201,"data":{"content":"tail","id":"tail"}}),
    )
    .await;
    let tail = expect(&mut counselor, "ack").await["data"]["seq"]
        .as_u64()
        .unwrap();
    assert_eq!(
        expect(&mut third, "message").await["data"]["seq"].as_u64(),
        Some(tail)
    );
    drop((a, b, small));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_nodes_expires_when_a_node_is_killed_and_drains_on_sigterm() {
    let c = cluster().await;
    sqlx::query(
        "INSERT INTO users (id, username, password_hash) VALUES (21, 'c21', 'x'), (22, 'c22', 'x')",
    )
    .execute(&c.db)
    .await
    .unwrap();
    sqlx::query("INSERT INTO counselors (id, user_id, name, price_fen) VALUES (5, 21, 'Counselor Five', 500), (6, 22, 'Counselor Six', 500)")
        .execute(&c.db)
        .await
        .unwrap();
    let (a, b, d) = (c.node(&[]).await, c.node(&[]).await, c.node(&[]).await);

    // The counselor's own socket: id check, then `connected`.
    let refused = tokio_tungstenite::connect_async(format!(
        "{}/ws/counselor/6?token={}",
        b.ws(),
        c.token(21)
    ))
    .await;
    assert!(
        refused.is_err(),
        "someone else's counselor socket is refused"
    );
    let mut five = connect(&format!("{}/ws/counselor/5?token={}", b.ws(), c.token(21))).await;
    assert_eq!(
        expect(&mut five, "connected").await["data"]["counselor_id"],
        5
    );
    let mut six = connect(&format!("{}/ws/counselor/6?token={}", d.ws(), c.token(22))).await;
    expect(&mut six, "connected").await;

    // Seen online from node A (neither socket is there).
    let deadline = Instant::now() + Duration::from_secs(5);
    while online(&a).await != vec![21, 22] {
        assert!(
            Instant::now() < deadline,
            "not online: {:?}",
            online(&a).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Node B crashes: counselor 5 goes offline within the presence timeout (1.5 s).
    b.signal(nix::sys::signal::Signal::SIGKILL);
    let killed = Instant::now();
    while online(&a).await != vec![22] {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "still online: {:?}",
            online(&a).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Node D is stopped: its socket is told to reconnect elsewhere (1012), presence goes at once.
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let (code, _) = until_close(&mut six, Duration::from_secs(10)).await;
    assert_eq!(code, Some(1012));
    let stopped = Instant::now();
    while !online(&a).await.is_empty() {
        assert!(stopped.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((a, b, d));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_closed_while_a_fast_one_gets_everything() {
    let c = cluster().await;
    let a = c.node(&[]).await;
    c.session(301, 31, 32, 30).await;
    let mut slow = connect(&format!("{}/ws/chat/301?token={}", a.ws(), c.token(31))).await;
    expect(&mut slow, "join_success").await;
    let mut fast = connect(&format!("{}/ws/chat/301?token={}", a.ws(), c.token(32))).await;
    expect(&mut fast, "join_success").await;

    // Big messages, appended straight to CHAT (pipelined): the node fans them out.
    let js = c.bus.jetstream().clone();
    let body = "慢".repeat(5000);
    let n = 1500;
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.len() < n {
            let f = next(&mut fast, Duration::from_secs(30))
                .await
                .expect("fast client starved");
            if f["type"] == "message" {
                seqs.push(f["data"]["seq"].as_u64().unwrap());
            }
        }
        seqs
    });
    let mut acks = Vec::new();
    for i in 0..n {
        let m = eventstore::chat::ChatMessage {
            session_id: 301,
            sender_id: 31,
            sender_type: "user".into(),
            content_type: "text".into(),
            content: body.clone(),
            file_url: String::new(),
            client_msg_id: format!("big{i}"),
            sent_at: chrono::Utc::now(),
        };
        let payload = serde_json::to_vec(&eventstore::chat::ChatRecord::Message(m)).unwrap();
        acks.push(
            js.publish(place(301).subject, payload.into())
                .await
                .unwrap(),
        );
        // Pipelined in batches: a burst, not a flood that no reader could follow.
        if acks.len() == 50 {
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
    let seqs = reader.await.unwrap();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicate"
    );
    // The slow client (which never read) was closed with a reason, after what was buffered.
    let (code, frames) = until_close(&mut slow, Duration::from_secs(20)).await;
    assert_eq!(code, Some(4008), "closed as too slow");
    assert!(
        frames < n,
        "the slow client did not get everything ({frames})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prepaid_time_ends_the_session_once_across_two_nodes_with_a_warning() {
    let c = cluster().await;
    // A "minute" of one second: 3 prepaid minutes run out after 3 s.
    let fast_minute = [("MYCHAT_GATEWAY_MINUTE_MS", "1000")];
    let (a, b) = (c.node(&fast_minute).await, c.node(&fast_minute).await);
    c.session(401, 41, 42, 3).await;
    let mut user = connect(&format!("{}/ws/chat/401?token={}", a.ws(), c.token(41))).await;
    expect(&mut user, "join_success").await;
    let mut counselor = connect(&format!("{}/ws/chat/401?token={}", b.ws(), c.token(42))).await;
    expect(&mut counselor, "join_success").await;

    for ws in [&mut user, &mut counselor] {
        let w = expect(ws, "system_message").await;
        assert_eq!(w["data"]["kind"], "session_ending");
        let bill = expect(ws, "billing").await;
        assert_eq!(bill["data"]["session_id"], 401);
        let end = expect(ws, "session_end").await;
        assert_eq!(end["data"]["ended_by"], 0);
    }
    // Nothing more: in particular no second bill.
    for ws in [&mut user, &mut counselor] {
        while let Some(f) = next(ws, Duration::from_millis(1500)).await {
            assert_ne!(f["type"], "billing", "billed twice: {f}");
        }
    }
    let events = c.session_events(401).await;
    let bills = events
        .iter()
        .filter(|e| matches!(e, SessionEvent::SessionBilled { .. }))
        .count();
    assert_eq!(bills, 1, "{events:?}");
    assert!(events.iter().any(|e| matches!(
        e,
        SessionEvent::SessionEnded {
            reason: domain::EndReason::PrepaidTimeUsed,
            ..
        }
    )));
    // A message into the ended session is refused and not stored.
    let mut late = connect(&format!("{}/ws?token={}", a.ws(), c.token(41))).await;
    send(
        &mut late,
        json!({"type":"message","session_id":401,"data":{"content":"late"}}),
    )
    .await;
    expect(&mut late, "error").await;
    assert!(c.chat_records(401).await.is_empty());
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_session_is_ended_and_billed_once_after_the_timeout() {
    let c = cluster().await;
    let a = c.node(&[("MYCHAT_GATEWAY_INACTIVITY_SECONDS", "2")]).await;
    c.session(501, 51, 52, 30).await;
    let mut user = connect(&format!("{}/ws/chat/501?token={}", a.ws(), c.token(51))).await;
    expect(&mut user, "join_success").await;
    // A message is activity: it pushes the timeout back.
    send(
        &mut user,
        json!({"type":"message","payload":{"content":"anyone?"}}),
    )
    .await;
    expect(&mut user, "ack").await;
    let quiet = Instant::now();
    expect(&mut user, "billing").await;
    assert!(
        quiet.elapsed() >= Duration::from_millis(1500),
        "ended too early"
    );
    expect(&mut user, "session_end").await;
    let events = c.session_events(501).await;
    assert!(events.iter().any(|e| matches!(
        e,
        SessionEvent::SessionEnded {
            reason: domain::EndReason::Inactivity,
            ..
        }
    )));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, SessionEvent::SessionBilled { .. }))
            .count(),
        1
    );
}

/// Group commit through the gateway: many sockets' messages share the atomic batches of their
/// chat stream's committer (the sessions here all live in one shard), and a resend is still stored once and acked with the first copy's sequence, whether
/// it was stored through this node's committer, through another node (an atomic batch holding it
/// is refused whole by nats-server and written again record by record), or races its twin from
/// another socket of the same user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_through_the_batched_chat_path_are_stored_once() {
    // Shards written one record per message (a deployment from before packs), through
    // committers with one write in flight and batches of 2 to 1000 records: concurrent appends
    // are batched.
    let c = cluster_with(eventstore::StreamSettings {
        chat_packs: Some(false),
        ..Default::default()
    })
    .await;
    let batched = [(
        "MYCHAT_GATEWAY_CHAT_COMMIT",
        "{min_batch=2,max_batch=1000,max_in_flight=1}",
    )];
    let stats = resends_are_stored_once(&c, &batched).await;
    let commit = &stats["data"]["chat_commit"];
    eprintln!("node A group commit: {commit}");
    let batches: u64 = commit
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["batches"].as_u64().unwrap())
        .sum();
    assert!(batches >= 1, "concurrent appends shared a batch: {commit}");
    // The fields set, laid over the default of the layout (16 shards: plain publishes).
    let stride = i64::from(eventstore::ChatLayout::default().shards);
    assert_eq!(
        stats["data"]["chat_commit_settings"],
        json!({ "shards": stride, "max_batch": 1000, "min_batch": 2, "max_in_flight": 1 })
    );
}

/// The same through packed shards (the default): two nodes' packers write the same shard, node
/// A answering resends of what node B stored from reading the shard, and every dedup id is
/// still stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_through_packed_shards_are_stored_once_across_nodes() {
    let c = cluster().await;
    let stats = resends_are_stored_once(&c, &[]).await;
    assert_eq!(stats["data"]["chat_packed"], true);
    let packs = &stats["data"]["chat_packs"];
    eprintln!("node A packers: {packs}");
    let sum = |k: &str| -> u64 {
        packs
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s[k].as_u64().unwrap())
            .sum()
    };
    assert!(
        sum("duplicates") >= 1,
        "resends answered by the packer: {packs}"
    );
    assert!(
        sum("records") > sum("packs"),
        "concurrent appends shared a pack: {packs}"
    );
    // Node A knew node B's packs from reading the shard (before its first pack, or after a
    // pack of its own was fenced by one of B's).
    assert!(sum("catch_ups") >= 1, "node A read the shard: {packs}");
}

/// Two nodes; originals through node B, then through node A at once new messages, resends of
/// what B stored and of its own, and a second socket racing the same ids: each acked with the
/// first copy's sequence, stored once. Returns node A's `/ws/stats`.
async fn resends_are_stored_once(c: &Cluster, env: &[(&str, &str)]) -> Value {
    let (a, b) = (c.node(env).await, c.node(env).await);
    let n = 8i64;
    // Sessions 200, 200 + N, … (N shards): one shard, so their appends meet in one committer.
    let stride = i64::from(eventstore::ChatLayout::default().shards);
    let sid = |k: i64| 200 + stride * k;
    assert!((0..n).all(|k| place(sid(k)).stream == place(200).stream));
    for k in 0..n {
        c.session(sid(k), 11 + k, 21 + k, 30).await;
    }
    let chat =
        |node: &Node, k: i64| format!("{}/ws/chat/{}?token={}", node.ws(), sid(k), c.token(11 + k));
    // Originals o0..o2 of every user, stored through node B.
    let mut first: HashMap<(i64, String), u64> = HashMap::new();
    for k in 0..n {
        let mut ws = connect(&chat(&b, k)).await;
        expect(&mut ws, "join_success").await;
        for j in 0..3 {
            let id = format!("o{j}");
            send(
                &mut ws,
                json!({"type":"message","payload":{"content":"first","client_msg_id":id}}),
            )
            .await;
            let ack = expect(&mut ws, "ack").await;
            assert_eq!(ack["data"]["duplicate"], false);
            first.insert((k, id), ack["data"]["seq"].as_u64().unwrap());
        }
    }
    // Node A: every user's socket sends at once: new messages, resends of what node B stored,
    // and resends of its own new messages; user 0 has a second socket racing the same ids.
    let mut sockets = Vec::new();
    for k in 0..n {
        let mut ws = connect(&chat(&a, k)).await;
        expect(&mut ws, "join_success").await;
        sockets.push((k, ws));
    }
    let mut twin = connect(&chat(&a, 0)).await;
    expect(&mut twin, "join_success").await;
    let script = ["n0", "o1", "n1", "n2", "o2", "n0", "n3", "o0", "n1"];
    for (_, ws) in &mut sockets {
        for id in script {
            send(
                ws,
                json!({"type":"message","payload":{"content":"second","client_msg_id":id}}),
            )
            .await;
        }
    }
    for j in 0..4 {
        send(
            &mut twin,
            json!({"type":"message","payload":{"content":"twin","client_msg_id":format!("t{j}")}}),
        )
        .await;
        send(
            &mut sockets[0].1,
            json!({"type":"message","payload":{"content":"twin","client_msg_id":format!("t{j}")}}),
        )
        .await;
    }
    // Acks come back in each socket's frame order.
    let mut twin_acks: HashMap<String, Vec<(u64, bool)>> = HashMap::new();
    for (k, ws) in &mut sockets {
        let extra = if *k == 0 { 4 } else { 0 };
        for i in 0..script.len() + extra {
            let ack = expect(ws, "ack").await;
            let id = ack["data"]["client_msg_id"].as_str().unwrap().to_string();
            let seq = ack["data"]["seq"].as_u64().unwrap();
            let duplicate = ack["data"]["duplicate"].as_bool().unwrap();
            if i >= script.len() {
                twin_acks.entry(id).or_default().push((seq, duplicate));
                continue;
            }
            assert_eq!(id, script[i]);
            match first.get(&(*k, id.clone())) {
                Some(&s) => {
                    assert!(duplicate, "user {k}: resend of {id} is a duplicate");
                    assert_eq!(seq, s, "user {k}: resend of {id} acked with the first seq");
                }
                None => {
                    assert!(!duplicate, "user {k}: {id} is new");
                    first.insert((*k, id), seq);
                }
            }
        }
    }
    for _ in 0..4 {
        let ack = expect(&mut twin, "ack").await;
        let id = ack["data"]["client_msg_id"].as_str().unwrap().to_string();
        twin_acks.entry(id).or_default().push((
            ack["data"]["seq"].as_u64().unwrap(),
            ack["data"]["duplicate"].as_bool().unwrap(),
        ));
    }
    for (id, acks) in &twin_acks {
        assert_eq!(acks.len(), 2, "{id}: both sockets acked");
        assert_eq!(acks[0].0, acks[1].0, "{id}: one sequence for both copies");
        assert_eq!(
            acks.iter().filter(|(_, d)| !*d).count(),
            1,
            "{id}: exactly one copy stored"
        );
    }
    // The log: every client message id of every session exactly once.
    for k in 0..n {
        let mut count: HashMap<String, usize> = HashMap::new();
        for r in c.chat_records(sid(k)).await {
            if r["kind"] == "message" {
                *count
                    .entry(r["client_msg_id"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
        let expected = if k == 0 { 3 + 4 + 4 } else { 3 + 4 };
        assert_eq!(count.len(), expected, "session {}: {count:?}", sid(k));
        assert!(count.values().all(|&c| c == 1), "stored once: {count:?}");
    }
    let stats: Value = reqwest::get(format!("{}/ws/stats", a.http()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    drop((a, b));
    stats
}

/// The live paths survive their consumer's deletion and a nats-server restart mid-stream: the
/// node's fan-out reader and the `chat_messages` projector's live feed (the log's gap-checking reader) re-create
/// their consumers after the last sequence they had and catch up within 2 s of the server being
/// back. A message the sender could not store meanwhile (an error frame) is resent with the same
/// client id. In the end the other participant has received every acknowledged message exactly
/// once, and the read model holds each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_paths_catch_up_after_their_consumers_are_deleted_and_nats_restarts() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,eventstore=debug,projections=debug")
            .with_test_writer()
            .try_init();
    }
    let mut c = cluster().await;
    let a = c.node(&[]).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    // The chat-messages projectors, in this process, on a connection of their own.
    let projector_nats = async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|n| Duration::from_millis((n as u64 * 100).min(500)))
        .connect(c.nats.url())
        .await
        .unwrap();
    // They read through their process's live feeds, as in a service process.
    let feeds = projections::LiveFeeds::new(projector_nats.clone(), 500);
    for projection in projections::read_models::Messages::all(&eventstore::ChatLayout::default()) {
        let projector = projections::Projector {
            pool: c.db.clone(),
            nats: projector_nats.clone(),
            projection,
            settings: projections::ProjectorSettings {
                feeds: Some(feeds.clone()),
                ..Default::default()
            },
        };
        tokio::spawn(projector.run(shutdown.clone()));
    }
    c.session(501, 1, 2, 60).await;
    let mut user = connect(&format!("{}/ws/chat/501?token={}", a.ws(), c.token(1))).await;
    expect(&mut user, "join_success").await;
    let mut counselor = connect(&format!("{}/ws/chat/501?token={}", a.ws(), c.token(2))).await;
    expect(&mut counselor, "join_success").await;

    // The counselor's socket, read on its own: (seq, when) of every message frame.
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u64, Instant)>::new()));
    let reading = {
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = counselor.next().await {
                if let Message::Text(t) = m {
                    let f: Value = serde_json::from_str(&t).unwrap();
                    if f["type"] == "message" {
                        let seq = f["data"]["seq"].as_u64().unwrap();
                        received.lock().unwrap().push((seq, Instant::now()));
                    }
                }
            }
        })
    };
    // The user sends 120 messages, one every 25 ms; each is resent with its id until acked.
    let back = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let sending = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..120 {
            let id = format!("f{i}");
            loop {
                send(&mut user, json!({"type":"message","payload":{"content":format!("m{i}"),"client_msg_id":id}})).await;
                let mut answered = None;
                let deadline = Instant::now() + Duration::from_secs(3);
                while let Some(f) = next(
                    &mut user,
                    deadline.saturating_duration_since(Instant::now()),
                )
                .await
                {
                    if f["type"] == "ack" && f["data"]["client_msg_id"] == id.as_str() {
                        answered = Some(f["data"]["seq"].as_u64().unwrap());
                        break;
                    }
                    if f["type"] == "error" {
                        break;
                    }
                }
                match answered {
                    Some(seq) => {
                        acked.push((seq, Instant::now()));
                        break;
                    }
                    None => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        acked
    });
    // Mid-stream: delete every consumer of the session's stream (the node's fan-out reader and
    // the projector's), then restart nats-server.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let js = async_nats::jetstream::new(c.nats.connect().await.unwrap());
    let stream = js.get_stream(place(501).stream).await.unwrap();
    let names: Vec<String> = futures_util::TryStreamExt::try_collect(stream.consumer_names())
        .await
        .unwrap();
    assert!(
        names.len() >= 2,
        "the fan-out and the projector read the stream: {names:?}"
    );
    for name in &names {
        stream.delete_consumer(name).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    tokio::task::block_in_place(|| c.nats.restart().unwrap());
    *back.lock().unwrap() = Some(Instant::now());
    let acked = sending.await.unwrap();
    let back = back.lock().unwrap().unwrap();
    // Everything acked reaches the counselor; then compare.
    let last = acked.iter().map(|(s, _)| *s).max().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !received.lock().unwrap().iter().any(|(s, _)| *s == last) {
        assert!(Instant::now() < deadline, "the last message never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    reading.abort();
    let received = received.lock().unwrap().clone();
    let mut got: Vec<u64> = received.iter().map(|(s, _)| *s).collect();
    let mut want: Vec<u64> = acked.iter().map(|(s, _)| *s).collect();
    want.sort_unstable();
    assert_eq!(want.len(), 120);
    let delivered = got.len();
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), delivered, "nothing delivered twice");
    assert_eq!(got, want, "every acknowledged message delivered");
    // Caught up within 2 s of the server being back: a message acked after that is delivered
    // no later than 2 s after the server came back, or at once after its ack.
    for (seq, at) in acked.iter().filter(|(_, at)| *at >= back) {
        let (_, arrived) = received.iter().find(|(s, _)| s == seq).unwrap();
        let limit = (*at).max(back + Duration::from_secs(2)) + Duration::from_millis(500);
        assert!(
            *arrived <= limit,
            "message {seq} acked {:?} after the restart arrived {:?} after it",
            at.duration_since(back),
            arrived.duration_since(back)
        );
    }
    // The read model: every acked message once, caught up within 2 s of the last ack.
    let shard = place(501).shard;
    let name = projections::read_models::Messages::name_of(shard);
    let head = async_nats::jetstream::new(c.nats.connect().await.unwrap())
        .get_stream(place(501).stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    let caught_up_by = Instant::now() + Duration::from_secs(2);
    loop {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(&c.db)
                .await
                .unwrap();
        if position == Some(head as i64) {
            break;
        }
        assert!(
            Instant::now() < caught_up_by,
            "{name} at {position:?}, the stream at {head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM chat_messages WHERE session_id = 501 ORDER BY id")
            .fetch_all(&c.db)
            .await
            .unwrap();
    let want_ids: Vec<i64> = want
        .iter()
        .map(|s| eventstore::chat::message_id(shard, *s))
        .collect();
    assert_eq!(ids, want_ids, "the read model holds every message once");
    shutdown.cancel();
}

/// A node that cannot read its streams says so: with nats-server gone, its readers fail and
/// `/health` answers 503 naming the parts down (the node still holds its sockets); once the
/// server is back they re-create their consumers and `/health` answers 200 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_readers_are_down_answers_503_until_they_recover() {
    let mut c = cluster().await;
    let a = c.node(&[]).await;
    let health = || async {
        let r = reqwest::get(format!("{}/health", a.http())).await.unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap_or_default())
    };
    assert_eq!(health().await.0, 200);
    tokio::task::block_in_place(|| c.nats.kill());
    let deadline = Instant::now() + Duration::from_secs(10);
    let down = loop {
        let (status, body) = health().await;
        if status == 503 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "still healthy without nats-server: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(down["status"], "degraded", "{down}");
    // Whichever stream reader notices first is named (which one is a race).
    let parts = down["down"].as_array().expect("a list of parts");
    let reader = |p: &Value| {
        let p = p.as_str().unwrap_or_default();
        p.starts_with("chat fan-out") || p == "group events" || p == "session events"
    };
    assert!(parts.iter().any(reader), "{down}");
    tokio::task::block_in_place(|| c.nats.restart().unwrap());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = health().await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not recovered: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A chat stream that refuses writes concerns only the sessions it holds. One counselor socket
/// (the Go dialect, several sessions on one socket) in two sessions on two shards: while the first
/// session's stream refuses new messages (full, discarding new ones), a message there is answered
/// with an error frame naming that session and telling to retry with the same id, the socket
/// stays open, and a message to the other session on the same socket is acked and delivered. Once
/// the stream takes writes again, the resend with the same client id is stored and delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_stream_that_refuses_writes_fails_only_its_own_sessions() {
    let c = cluster().await;
    let node = c.node(&[]).await;
    let (s1, s2) = (601i64, 602i64);
    assert_ne!(place(s1).stream, place(s2).stream, "two shards");
    c.session(s1, 31, 41, 30).await;
    c.session(s2, 32, 41, 30).await;
    let mut counselor = connect(&format!("{}/ws?token={}", node.ws(), c.token(41))).await;
    for sid in [s1, s2] {
        send(&mut counselor, json!({"type":"join","session_id":sid})).await;
        expect(&mut counselor, "join_success").await;
    }
    let mut user1 = connect(&format!("{}/ws/chat/{s1}?token={}", node.ws(), c.token(31))).await;
    expect(&mut user1, "join_success").await;
    let mut user2 = connect(&format!("{}/ws/chat/{s2}?token={}", node.ws(), c.token(32))).await;
    expect(&mut user2, "join_success").await;
    let say = |sid: i64, id: &str| json!({"type":"message","session_id":sid,"data":{"content":format!("to {sid}"),"id":id}});
    // One message stored in the first session's stream while it takes writes.
    send(&mut counselor, say(s1, "before")).await;
    let ack = expect(&mut counselor, "ack").await;
    assert_eq!(ack["session_id"], s1);
    assert_eq!(
        expect(&mut user1, "message").await["data"]["seq"],
        ack["data"]["seq"]
    );

    // The first session's stream refuses new messages: full, discarding new ones.
    let js = async_nats::jetstream::new(c.nats.connect().await.unwrap());
    let original = testkit::refuse_new_messages(&js, place(s1).stream)
        .await
        .unwrap();

    send(&mut counselor, say(s1, "during")).await;
    let refused = expect(&mut counselor, "error").await;
    assert_eq!(refused["session_id"], s1, "the error names its session");
    let why = refused["data"]["error"].as_str().unwrap();
    assert!(why.contains("retry with the same id"), "{why}");
    // The same socket, the other shard's session: acked and delivered as usual.
    send(&mut counselor, say(s2, "other")).await;
    let other = expect(&mut counselor, "ack").await;
    assert_eq!(other["session_id"], s2);
    assert_eq!(other["data"]["duplicate"], false);
    let got = expect(&mut user2, "message").await;
    assert_eq!(got["data"]["seq"], other["data"]["seq"]);
    // Nothing of the refused message reached the first session's user.
    silent(&mut user1, "message", Duration::from_millis(500)).await;

    // The stream takes writes again: the resend is stored once, delivered once.
    js.update_stream(&original).await.unwrap();
    send(&mut counselor, say(s1, "during")).await;
    let stored = expect(&mut counselor, "ack").await;
    assert_eq!(stored["session_id"], s1);
    assert_eq!(
        stored["data"]["duplicate"], false,
        "the refused copy was not stored"
    );
    let seq = stored["data"]["seq"].as_u64().unwrap();
    assert_eq!(
        expect(&mut user1, "message").await["data"]["seq"].as_u64(),
        Some(seq)
    );
    send(&mut counselor, say(s1, "during")).await;
    let again = expect(&mut counselor, "ack").await;
    assert_eq!(again["data"]["duplicate"], true);
    assert_eq!(again["data"]["seq"].as_u64(), Some(seq));
    let ids: Vec<String> = c
        .chat_records(s1)
        .await
        .iter()
        .filter(|r| r["kind"] == "message")
        .map(|r| r["client_msg_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        ["before", "during"],
        "each message stored once, in order"
    );
    silent(&mut user1, "message", Duration::from_millis(300)).await;
    drop(node);
}
