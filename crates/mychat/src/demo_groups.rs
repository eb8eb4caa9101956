//! `mychat demo`'s group chapter: a counselor's support group with two users, messages over
//! WebSocket (a mention included), a read cursor and the unread counts it leaves, and a recall.

use anyhow::{ensure, Context as _};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::demo::{expect_frame, step, Client, Socket};

/// What the chapter leaves for the demo's summary line.
pub struct GroupChapter {
    /// The group's id.
    pub group_id: i64,
    /// Messages stored in it.
    pub messages: usize,
    /// The demo user's unread count after reading.
    pub unread_user: i64,
    /// The second member's unread count (they read nothing).
    pub unread_second: i64,
}

async fn group_socket(ws: &str, group_id: i64, token: &str) -> anyhow::Result<Socket> {
    let url = format!("{ws}/ws/group/{group_id}?token={token}");
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .with_context(|| format!("connecting {ws}/ws/group/{group_id}"))?;
    expect_frame(&mut socket, "group_joined").await?;
    Ok(socket)
}

async fn say(socket: &mut Socket, content: &str, mentions: &[i64]) -> anyhow::Result<u64> {
    let frame =
        json!({ "type": "message", "payload": { "content": content, "mentions": mentions } });
    socket.send(Message::Text(frame.to_string().into())).await?;
    let ack = expect_frame(socket, "ack").await?;
    ack["data"]["seq"].as_u64().context("ack without seq")
}

/// The caller's unread count of `group_id` in `GET /api/group/list`.
async fn unread(c: &Client, api: &str, token: &str, group_id: i64) -> anyhow::Result<i64> {
    let list = c.get(&format!("{api}/api/group/list"), Some(token)).await?;
    list["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["id"] == group_id))
        .and_then(|g| g["unread"].as_i64())
        .context("the group is not in the member's list")
}

/// Plays the chapter as the counselor (`counselor_token`), the demo user and a second user
/// registered here, from step `first` on.
pub async fn run(
    c: &Client,
    (api, ws): (&str, &str),
    counselor_token: &str,
    (user_id, user_token): (i64, &str),
    first: usize,
) -> anyhow::Result<GroupChapter> {
    let second_name = format!(
        "member_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let password = "demo-password-1";
    let reg = c
        .post(
            &format!("{api}/api/register"),
            None,
            json!({ "username": second_name, "password": password }),
        )
        .await?;
    let second_id = reg["user_id"].as_i64().context("user_id")?;
    let login = c
        .post(
            &format!("{api}/api/login"),
            None,
            json!({ "username": second_name, "password": password }),
        )
        .await?;
    let second_token = login["token"].as_str().context("login token")?.to_string();
    let created = c
        .post(
            &format!("{api}/api/group/create"),
            Some(counselor_token),
            json!({ "name": "周三支持小组", "notice": "每周三晚八点", "member_ids": [user_id, second_id] }),
        )
        .await?;
    let group_id = created["group_id"].as_i64().context("group_id")?;
    step(
        first,
        format!("counselor created group {group_id} with users {user_id} and {second_id}"),
    );

    let mut counselor = group_socket(ws, group_id, counselor_token).await?;
    let mut user = group_socket(ws, group_id, user_token).await?;
    let mut second = group_socket(ws, group_id, &second_token).await?;
    let welcome = say(&mut counselor, "欢迎大家，今晚聊聊睡眠", &[user_id]).await?;
    let got = expect_frame(&mut user, "group_message").await?;
    ensure!(
        got["data"]["seq"].as_u64() == Some(welcome),
        "user got {got}"
    );
    expect_frame(&mut user, "group_mention").await?;
    expect_frame(&mut second, "group_message").await?;
    let reply = say(&mut second, "最近总是失眠", &[]).await?;
    expect_frame(&mut user, "group_message").await?;
    expect_frame(&mut counselor, "group_message").await?;
    step(
        first + 1,
        format!("three members talked over WebSocket: welcome at seq {welcome} (mentioning the user), reply at seq {reply}"),
    );

    c.post(
        &format!("{api}/api/group/{group_id}/read"),
        Some(user_token),
        json!({ "seq": reply }),
    )
    .await?;
    let unread_user = unread(c, api, user_token, group_id).await?;
    let unread_second = unread(c, api, &second_token, group_id).await?;
    ensure!(
        (unread_user, unread_second) == (0, 1),
        "unread counts: user {unread_user} (0 expected), second {unread_second} (1 expected)"
    );
    step(
        first + 2,
        format!("the user read up to seq {reply}: unread {unread_user}; the second user, who read nothing, {unread_second}"),
    );

    let typo = say(&mut counselor, "明晚八点（打错了）", &[]).await?;
    expect_frame(&mut user, "group_message").await?;
    c.post(
        &format!("{api}/api/group/{group_id}/messages/{typo}/recall"),
        Some(counselor_token),
        json!({}),
    )
    .await?;
    let recall = expect_frame(&mut user, "group_recall").await?;
    ensure!(
        recall["data"]["message_seq"].as_u64() == Some(typo),
        "recall frame {recall}"
    );
    let history: Value = c
        .get(
            &format!("{api}/api/group/{group_id}/messages?limit=1"),
            Some(user_token),
        )
        .await?;
    ensure!(
        history["messages"][0]["recalled"] == true,
        "history after the recall: {history}"
    );
    step(
        first + 3,
        format!("the counselor recalled seq {typo}: sockets and history show it recalled"),
    );
    Ok(GroupChapter {
        group_id,
        messages: 3,
        unread_user,
        unread_second,
    })
}
