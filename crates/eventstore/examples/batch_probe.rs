//! Probes how nats-server reports per-message failures inside an atomic batch.
//! `cargo run -p eventstore --example batch_probe`
use std::time::Duration;

use async_nats::header::{NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE};
use async_nats::HeaderMap;
use futures::StreamExt;

async fn batch(client: &async_nats::Client, id: &str, msgs: &[(&str, Option<u64>, Option<&str>)]) {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(format!("{inbox}.>")).await.unwrap();
    for (i, (subject, exp, msg_id)) in msgs.iter().enumerate() {
        let mut h = HeaderMap::new();
        h.insert(NATS_BATCH_ID, id);
        h.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
        if i + 1 == msgs.len() {
            h.insert(NATS_BATCH_COMMIT, "1");
        }
        if let Some(e) = exp {
            h.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                e.to_string().as_str(),
            );
        }
        if let Some(m) = msg_id {
            h.insert(async_nats::header::NATS_MESSAGE_ID, *m);
        }
        client
            .publish_with_reply_and_headers(
                subject.to_string(),
                format!("{inbox}.{}", i + 1),
                h,
                "x".into(),
            )
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let deadline = tokio::time::sleep(Duration::from_millis(400));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            m = sub.next() => { let m = m.unwrap(); println!("  {id} reply on {}: {}", m.subject, String::from_utf8_lossy(&m.payload)); }
            _ = &mut deadline => break,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = testkit::nats::NatsServer::start()?;
    let client = server.connect().await?;
    let js = async_nats::jetstream::new(client.clone());
    eventstore::ensure_streams(&js, &Default::default()).await?;
    println!("A: all good");
    batch(
        &client,
        "A",
        &[
            ("ev.t.a", Some(0), Some("ca")),
            ("ev.t.b", Some(0), Some("cb")),
            ("ev.t.c", Some(0), Some("cc")),
        ],
    )
    .await;
    println!("B: message 2 wrong expected seq");
    batch(
        &client,
        "B",
        &[
            ("ev.t.d", Some(0), Some("cd")),
            ("ev.t.a", Some(0), Some("ca2")),
            ("ev.t.e", Some(0), Some("ce")),
        ],
    )
    .await;
    println!("B2: message 3 (commit) wrong expected seq");
    batch(
        &client,
        "B2",
        &[
            ("ev.t.d", Some(0), Some("cd")),
            ("ev.t.e", Some(0), Some("ce")),
            ("ev.t.a", Some(0), Some("ca2")),
        ],
    )
    .await;
    println!("C: message 2 Msg-Id already stored (right expected seq)");
    batch(
        &client,
        "C",
        &[
            ("ev.t.f", Some(0), Some("cf")),
            ("ev.t.a", Some(1), Some("cb")),
            ("ev.t.g", Some(0), Some("cg")),
        ],
    )
    .await;
    println!("C2: message 2 Msg-Id already stored, no expected seq");
    batch(
        &client,
        "C2",
        &[
            ("ev.t.f", Some(0), Some("cf")),
            ("ev.t.z", None, Some("cb")),
            ("ev.t.g", Some(0), Some("cg")),
        ],
    )
    .await;
    println!("D: same Msg-Id twice inside the batch");
    batch(
        &client,
        "D",
        &[
            ("ev.t.h", Some(0), Some("dup")),
            ("ev.t.i", Some(0), Some("dup")),
        ],
    )
    .await;
    println!("E: same subject twice in batch, expected 0 and then 0");
    batch(
        &client,
        "E",
        &[
            ("ev.t.j", Some(0), Some("cj1")),
            ("ev.t.j", Some(0), Some("cj2")),
        ],
    )
    .await;
    println!("G: a plain publish repeating a Msg-Id stored by batch A");
    let ack = js
        .publish_with_headers(
            "ev.t.zz",
            {
                let mut h = HeaderMap::new();
                h.insert(async_nats::header::NATS_MESSAGE_ID, "ca");
                h
            },
            "x".into(),
        )
        .await?
        .await?;
    println!("  G ack: seq {} duplicate {}", ack.sequence, ack.duplicate);
    println!("H: batch without expected sequences, one subject three times");
    batch(
        &client,
        "H",
        &[
            ("ev.t.h1", None, Some("h1")),
            ("ev.t.h1", None, Some("h2")),
            ("ev.t.h1", None, Some("h3")),
        ],
    )
    .await;
    println!("F: batch of one");
    batch(&client, "F", &[("ev.t.k", Some(0), Some("ck"))]).await;
    for n in [2, 10, 50] {
        for with_reply in [false, true] {
            println!(
                "batch of {n}, replies on intermediates {with_reply}: {:.2} ms per batch",
                time_batches(&client, n, with_reply).await
            );
        }
    }
    let t = std::time::Instant::now();
    for i in 0..100 {
        js.publish(format!("ev.single.{i}"), "x".into())
            .await?
            .await?;
    }
    println!(
        "plain publish: {:.2} ms each",
        t.elapsed().as_secs_f64() * 10.0
    );
    let info = js.get_stream("EVENTS").await?.info().await?.state.clone();
    println!(
        "stream state: messages {} last {}",
        info.messages, info.last_sequence
    );
    Ok(())
}

/// Times sequential atomic batches of `n` (intermediate messages with or without a reply subject).
pub async fn time_batches(client: &async_nats::Client, n: usize, with_reply: bool) -> f64 {
    let start = std::time::Instant::now();
    let rounds = 30;
    for r in 0..rounds {
        let id = format!("t{n}{with_reply}{r}");
        for i in 1..=n {
            let mut h = HeaderMap::new();
            h.insert(NATS_BATCH_ID, id.as_str());
            h.insert(NATS_BATCH_SEQUENCE, i.to_string().as_str());
            let subject = format!("ev.time.{i}");
            if i < n {
                if with_reply {
                    client
                        .publish_with_reply_and_headers(subject, client.new_inbox(), h, "x".into())
                        .await
                        .unwrap();
                } else {
                    client
                        .publish_with_headers(subject, h, "x".into())
                        .await
                        .unwrap();
                }
            } else {
                h.insert(NATS_BATCH_COMMIT, "1");
                client
                    .request_with_headers(subject, h, "x".into())
                    .await
                    .unwrap();
            }
        }
    }
    start.elapsed().as_secs_f64() * 1000.0 / rounds as f64
}
