//! The chat log's appends through its stream's committer, against a real nats-server with the
//! project's `nats.conf` (`sync_interval: always`): concurrent appends share atomic batches, each
//! gets its own sequence, and a resend of a client message id is stored once and answered with
//! the first copy's sequence, whether it meets the original in the committer (it waits for the
//! original to settle), was stored by this committer, or was stored by another process (the
//! batch it lands in is refused and written one by one). One shard, so that every record of the
//! test is in one stream.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use eventstore::chat::{message_dedup_id, shard_stream, Appended, ChatMessage, ChatRecord};
use eventstore::{ensure_streams, ChatLayout, ChatLog, GroupCommitSettings, StreamSettings};
use futures::StreamExt;
use testkit::NatsServer;

fn message(session_id: i64, sender_id: i64, client_msg_id: &str) -> ChatMessage {
    ChatMessage {
        session_id,
        sender_id,
        sender_type: "user".into(),
        content_type: "text".into(),
        content: format!("hello {client_msg_id}"),
        file_url: String::new(),
        client_msg_id: client_msg_id.into(),
        sent_at: Utc::now(),
    }
}

fn settings() -> GroupCommitSettings {
    // One write in flight: while it is out, everything else queues and goes as one batch.
    GroupCommitSettings {
        max_in_flight: 1,
        min_batch: 2,
        ..Default::default()
    }
}

/// A server's chat streams as one shard.
async fn one_shard(js: &async_nats::jetstream::Context) -> ChatLayout {
    ensure_streams(
        js,
        &StreamSettings {
            chat_shards: Some(1),
            // The one-record format, written through the stream's committer.
            chat_packs: Some(false),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Every record of the one chat shard by an independent reader: dedup id (`Nats-Msg-Id`) →
/// stream sequences.
async fn log(js: &async_nats::jetstream::Context) -> HashMap<String, Vec<u64>> {
    let stream = js.get_stream(shard_stream(1)).await.unwrap();
    let last = stream.cached_info().state.last_sequence;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out: HashMap<String, Vec<u64>> = HashMap::new();
    let mut seen = 0;
    while seen < last {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("log read")
            .unwrap()
            .unwrap();
        let seq = m.info().unwrap().stream_sequence;
        seen = seq;
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        let record: ChatRecord = serde_json::from_slice(&m.payload).unwrap();
        if let ChatRecord::Message(msg) = record {
            assert_eq!(message_dedup_id(&msg), id, "record at {seq}");
        }
        out.entry(id).or_default().push(seq);
    }
    out
}

#[tokio::test]
async fn chat_appends_share_batches_and_resends_are_stored_once() {
    let server = NatsServer::start().unwrap();
    let client = server.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let layout = one_shard(&js).await;
    let committer = ChatLog::new(js.clone(), layout, settings().into());

    // 1. 60 concurrent appends over 6 sessions; 10 of them are sent twice at the same time.
    let mut appends = Vec::new();
    for i in 0..60i64 {
        appends.push(message(i % 6 + 1, 100 + i % 6, &format!("m{i}")));
        if i % 6 == 0 {
            appends.push(message(i % 6 + 1, 100 + i % 6, &format!("m{i}")));
        }
    }
    let results: Vec<Appended> =
        futures::future::join_all(appends.iter().map(|m| committer.append_message(m)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let (_, batches, batched, _, _) = committer.stats()[0].1.snapshot();
    assert!(
        batches >= 1 && batched >= 10,
        "appends shared batches: {batches} batches, {batched} records"
    );
    let mut first: HashMap<String, u64> = HashMap::new();
    for (m, a) in appends.iter().zip(&results) {
        match first.get(&m.client_msg_id) {
            None => {
                assert!(!a.duplicate, "{} first copy", m.client_msg_id);
                first.insert(m.client_msg_id.clone(), a.seq);
            }
            Some(seq) => {
                assert!(
                    a.duplicate,
                    "{} second copy is a duplicate",
                    m.client_msg_id
                );
                assert_eq!(
                    a.seq, *seq,
                    "{} second copy answered with the first's seq",
                    m.client_msg_id
                );
            }
        }
    }

    // 2. Resends through the same committer, inside a busy group: plain publishes, answered by
    //    JetStream as duplicates with the first sequence.
    let mut second = Vec::new();
    for i in 0..30i64 {
        second.push(message(7, 200, &format!("n{i}")));
        if i % 5 == 0 {
            second.push(message(
                (i * 2) % 6 + 1,
                100 + (i * 2) % 6,
                &format!("m{}", i * 2),
            ));
        }
    }
    let results2 =
        futures::future::join_all(second.iter().map(|m| committer.append_message(m))).await;
    for (m, a) in second.iter().zip(results2) {
        let a = a.unwrap();
        if m.client_msg_id.starts_with('m') {
            assert!(a.duplicate);
            assert_eq!(
                a.seq, first[&m.client_msg_id],
                "resend of {}",
                m.client_msg_id
            );
        } else {
            assert!(!a.duplicate);
            first.insert(m.client_msg_id.clone(), a.seq);
        }
    }

    // 3. Resends through another process's committer (it has not seen the ids): its batch is
    //    refused (10201) and written record by record; every append gets the right answer.
    let other_js = async_nats::jetstream::new(server.connect().await.unwrap());
    let other = ChatLog::new(other_js, layout, settings().into());
    let mut third = Vec::new();
    for i in 0..30i64 {
        third.push(message(8, 300, &format!("o{i}")));
        if i % 10 == 3 {
            third.push(message(7, 200, &format!("n{i}")));
        }
    }
    let results3 = futures::future::join_all(third.iter().map(|m| other.append_message(m))).await;
    for (m, a) in third.iter().zip(results3) {
        let a = a.unwrap();
        if m.client_msg_id.starts_with('n') {
            assert!(a.duplicate, "resend of {} is a duplicate", m.client_msg_id);
            assert_eq!(
                a.seq, first[&m.client_msg_id],
                "resend of {}",
                m.client_msg_id
            );
        } else {
            assert!(!a.duplicate);
            first.insert(m.client_msg_id.clone(), a.seq);
        }
    }
    let (_, _, _, failed, _) = other.stats()[0].1.snapshot();
    assert!(
        failed >= 1,
        "the batch holding a stored id was refused and retried one by one"
    );

    // 4. The log, read independently: every client message id exactly once, at the sequence
    //    its sender was told.
    let log = log(&js).await;
    assert_eq!(log.len(), first.len(), "one record per client message id");
    for (id, seqs) in &log {
        assert_eq!(seqs.len(), 1, "{id} stored once");
        let client_id = id.rsplit(':').next().unwrap();
        assert_eq!(first[client_id], seqs[0], "{id} acked at its sequence");
    }
}

/// The gateway's default batch bound (1,000 records) is within what nats-server accepts in one
/// atomic batch: 1,001 concurrent appends with one write in flight go as one plain publish and
/// one batch of 1,000, none refused.
#[tokio::test]
async fn a_batch_of_a_thousand_records_is_accepted() {
    let server = NatsServer::start().unwrap();
    let client = server.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let layout = one_shard(&js).await;
    let committer = ChatLog::new(
        js,
        layout,
        GroupCommitSettings {
            max_batch: 1000,
            max_in_flight: 1,
            ..Default::default()
        }
        .into(),
    );
    let appends: Vec<ChatMessage> = (0..1001i64)
        .map(|i| message(i % 50 + 1, 7, &format!("k{i}")))
        .collect();
    let results =
        futures::future::join_all(appends.iter().map(|m| committer.append_message(m))).await;
    let mut seqs: Vec<u64> = results.into_iter().map(|r| r.unwrap().seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 1001, "every record at its own sequence");
    let (singles, batches, batched, failed, _) = committer.stats()[0].1.snapshot();
    assert_eq!(failed, 0, "no batch refused");
    assert_eq!(batched + singles, 1001);
    assert!(
        batched >= 900,
        "{batches} batches carried {batched} records"
    );
}
