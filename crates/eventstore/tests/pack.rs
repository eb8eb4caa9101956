//! Packs (several records in one stream message) written by [`eventstore::pack::Packer`], against
//! a real nats-server with the project's `nats.conf` (`sync_interval: always`): records that
//! arrive while a pack is out share the next one, in order, at consecutive positions; a dedup
//! id is stored once per window and a repeat is answered with the first copy's position —
//! within one pack, from the writer's memory, through a second writer of the same stream (two
//! processes, fenced by the stream's last sequence), and after a restart (the window read back);
//! a stream that refuses new messages fails the append and stores nothing; an independent
//! reader of the stream finds every acknowledged record exactly once.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use eventstore::pack::{self, PackAppend, PackOutcome, PackSettings, Packer};
use testkit::NatsServer;

const STREAM: &str = "PACKED";
const SUBJECT: &str = "packed.1";

async fn packed_stream(js: &jetstream::Context) {
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec!["packed.*".into()],
        storage: stream::StorageType::File,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        ..Default::default()
    })
    .await
    .unwrap();
}

fn append(session: i64, id: &str) -> PackAppend {
    PackAppend {
        subject: format!("chat.1.{session}"),
        kind: "message".into(),
        dedup_id: format!("{session}:7:{id}"),
        body: Bytes::from(format!(
            r#"{{"session_id":{session},"content":"hello {id}"}}"#
        )),
    }
}

/// Every record in the stream, read independently (direct gets of every stream message, each
/// decoded as a pack): dedup id → positions, and the packs' sizes.
async fn log(js: &jetstream::Context) -> (HashMap<String, Vec<u64>>, Vec<usize>) {
    let mut stream = js.get_stream(STREAM).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let (mut ids, mut sizes) = (HashMap::<String, Vec<u64>>::new(), vec![]);
    for seq in 1..=last {
        let m = stream.direct_get(seq).await.unwrap();
        assert!(pack::is_pack(Some(&m.headers)), "{seq} is a pack");
        let records = pack::decode(seq, &m.payload).unwrap();
        sizes.push(records.len());
        for r in records {
            ids.entry(r.dedup_id).or_default().push(r.position);
        }
    }
    (ids, sizes)
}

#[tokio::test]
async fn concurrent_records_share_packs_in_order_and_each_is_stored_once() {
    let server = NatsServer::start().unwrap();
    let js = jetstream::new(server.connect().await.unwrap());
    packed_stream(&js).await;
    let packer = Packer::start(js.clone(), STREAM, SUBJECT, PackSettings::default());

    // 300 concurrent appends, 20 of them repeats of earlier ids.
    let mut tasks = vec![];
    for i in 0..300 {
        let packer = packer.clone();
        let id = if i % 15 == 14 { i - 7 } else { i };
        tasks.push(tokio::spawn(async move {
            (
                id,
                packer.append(append(16, &format!("m{id}"))).await.unwrap(),
            )
        }));
    }
    let mut answers: HashMap<i32, Vec<PackOutcome>> = HashMap::new();
    for t in tasks {
        let (id, outcome) = t.await.unwrap();
        answers.entry(id).or_default().push(outcome);
    }
    // Every id: exactly one Stored, its repeats Duplicate at the same position.
    for (id, outcomes) in &answers {
        let stored: Vec<_> = outcomes
            .iter()
            .filter(|o| matches!(o, PackOutcome::Stored { .. }))
            .collect();
        assert_eq!(stored.len(), 1, "m{id}: {outcomes:?}");
        assert!(outcomes
            .iter()
            .all(|o| o.position() == stored[0].position()));
    }
    let (ids, sizes) = log(&js).await;
    assert_eq!(ids.len(), 280);
    for (id, positions) in &answers {
        assert_eq!(
            ids[&format!("16:7:m{id}")],
            vec![positions[0].position()],
            "m{id}"
        );
    }
    assert!(
        sizes.len() < 300,
        "packs: {sizes:?} (records that wait share one)"
    );
    let (packs, records, duplicates, fenced, _) = packer.stats().snapshot();
    assert_eq!(
        (packs as usize, records, duplicates, fenced),
        (sizes.len(), 280, 20, 0)
    );

    // A record appended alone goes out alone, after the others.
    let lone = packer.append(append(16, "lone")).await.unwrap();
    let (seq, index) = pack::split_position(lone.position());
    assert_eq!(index, 0);
    assert!(ids.values().all(|p| p[0] < lone.position()), "{seq}");
    // Positions follow the order of appends from one task.
    let mut previous = lone.position();
    for i in 0..5 {
        let p = packer
            .append(append(17, &format!("seq{i}")))
            .await
            .unwrap()
            .position();
        assert!(p > previous);
        previous = p;
    }
}

#[tokio::test]
async fn two_writers_of_one_stream_store_each_dedup_id_once() {
    let server = NatsServer::start().unwrap();
    let js = jetstream::new(server.connect().await.unwrap());
    packed_stream(&js).await;
    // Two processes' writers (each its own connection) appending the same ids concurrently.
    let js2 = jetstream::new(server.connect().await.unwrap());
    let a = Packer::start(js.clone(), STREAM, SUBJECT, PackSettings::default());
    a.append(append(3, "a0")).await.unwrap();
    let b = Packer::start(js2, STREAM, SUBJECT, PackSettings::default());
    b.append(append(3, "b0")).await.unwrap();
    // `a` last wrote before `b`'s pack: its next pack is refused until it has read `b`'s.
    let a1 = a.append(append(3, "a1")).await.unwrap();
    assert_eq!(
        a.stats().snapshot().3,
        1,
        "a's pack after b's is fenced once"
    );
    assert_eq!(
        b.append(append(3, "a1")).await.unwrap(),
        PackOutcome::Duplicate {
            position: a1.position(),
            stream_sequence: a1.stream_sequence()
        }
    );
    let mut tasks = vec![];
    for i in 0..200 {
        for packer in [a.clone(), b.clone()] {
            tasks.push(tokio::spawn(async move {
                (i, packer.append(append(3, &format!("x{i}"))).await.unwrap())
            }));
        }
    }
    let mut answers: HashMap<i32, Vec<PackOutcome>> = HashMap::new();
    for t in tasks {
        let (i, o) = t.await.unwrap();
        answers.entry(i).or_default().push(o);
    }
    let (ids, _) = log(&js).await;
    assert_eq!(ids.len(), 203);
    for (i, outcomes) in answers {
        let positions = &ids[&format!("3:7:x{i}")];
        assert_eq!(positions.len(), 1, "x{i} stored {positions:?}");
        let stored = outcomes
            .iter()
            .filter(|o| matches!(o, PackOutcome::Stored { .. }))
            .count();
        assert_eq!(stored, 1, "x{i}: {outcomes:?}");
        assert!(outcomes.iter().all(|o| o.position() == positions[0]));
    }
}

#[tokio::test]
async fn a_restarted_writer_reads_the_window_back_and_answers_a_resend() {
    let server = NatsServer::start().unwrap();
    let js = jetstream::new(server.connect().await.unwrap());
    packed_stream(&js).await;
    let settings = PackSettings {
        dedup_window: Duration::from_secs(3),
        ..Default::default()
    };
    let old = {
        let first = Packer::start(js.clone(), STREAM, SUBJECT, settings.clone());
        first.append(append(5, "old")).await.unwrap()
    };
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let recent = {
        let second = Packer::start(js.clone(), STREAM, SUBJECT, settings.clone());
        second.append(append(5, "recent")).await.unwrap()
    };
    // A writer of a restarted process: the resend within the window is answered with the first
    // copy; the one from before the window is a new record (JetStream's duplicate window alike).
    let third = Packer::start(js.clone(), STREAM, SUBJECT, settings);
    assert_eq!(
        third.append(append(5, "recent")).await.unwrap(),
        PackOutcome::Duplicate {
            position: recent.position(),
            stream_sequence: recent.stream_sequence()
        }
    );
    let again = third.append(append(5, "old")).await.unwrap();
    assert!(matches!(again, PackOutcome::Stored { .. }), "{again:?}");
    assert!(again.position() > old.position());
    let (ids, _) = log(&js).await;
    assert_eq!(ids["5:7:old"].len(), 2);
    assert_eq!(ids["5:7:recent"], vec![recent.position()]);
}

#[tokio::test]
async fn a_refused_or_bad_record_fails_and_stores_nothing() {
    let server = NatsServer::start().unwrap();
    let js = jetstream::new(server.connect().await.unwrap());
    packed_stream(&js).await;
    let packer = Packer::start(js.clone(), STREAM, SUBJECT, PackSettings::default());
    let stored = packer.append(append(9, "a")).await.unwrap();

    let mut bad = append(9, "bad");
    bad.body = Bytes::from_static(b"{\"unterminated\":");
    let e = packer.append(bad).await.unwrap_err();
    assert!(e.0.contains("not JSON"), "{e}");

    let original = testkit::nats::refuse_new_messages(&js, STREAM)
        .await
        .unwrap();
    let e = packer.append(append(9, "b")).await.unwrap_err();
    assert!(e.0.contains("JetStream error"), "{e}");
    js.update_stream(&original).await.unwrap();
    // Once the stream takes messages again, the same record is stored, once.
    let b = packer.append(append(9, "b")).await.unwrap();
    assert!(matches!(b, PackOutcome::Stored { .. }));
    let (ids, sizes) = log(&js).await;
    assert_eq!(sizes, vec![1, 1]);
    assert_eq!(ids["9:7:a"], vec![stored.position()]);
    assert_eq!(ids["9:7:b"], vec![b.position()]);
}

#[tokio::test]
async fn a_lost_ack_is_learned_from_the_stream_and_a_resend_stays_exact() {
    let server = NatsServer::start().unwrap();
    let js = jetstream::new(server.connect().await.unwrap());
    packed_stream(&js).await;
    // Acks given up on almost at once: most packs are stored but their ack "lost"; the writer
    // finds its pack in the stream by its id (or sends it again, or reports an unknown outcome).
    let hasty = Packer::start(
        js.clone(),
        STREAM,
        SUBJECT,
        PackSettings {
            ack_timeout: Duration::ZERO,
            ..Default::default()
        },
    );
    let mut first: HashMap<String, u64> = HashMap::new();
    let mut unknown = 0;
    for i in 0..60 {
        match hasty.append(append(11, &format!("h{i}"))).await {
            Ok(PackOutcome::Stored { position }) => {
                first.insert(format!("11:7:h{i}"), position);
            }
            Ok(other) => panic!("h{i}: {other:?}"),
            Err(_) => unknown += 1,
        }
    }
    // Every client resends through a writer with patience: each id is in the log once, where the
    // first answer said.
    let patient = Packer::start(js.clone(), STREAM, SUBJECT, PackSettings::default());
    for i in 0..60 {
        let resent = patient.append(append(11, &format!("h{i}"))).await.unwrap();
        if let Some(&p) = first.get(&format!("11:7:h{i}")) {
            assert_eq!(resent.position(), p, "h{i}");
            assert!(matches!(resent, PackOutcome::Duplicate { .. }), "h{i}");
            assert_eq!(resent.stream_sequence(), pack::split_position(p).0);
        }
    }
    let (ids, _) = log(&js).await;
    assert_eq!(ids.len(), 60, "{unknown} unknown outcomes");
    for (id, positions) in &ids {
        assert_eq!(positions.len(), 1, "{id}: {positions:?}");
        if let Some(&p) = first.get(id) {
            assert_eq!(positions[0], p, "{id}");
        }
    }
    let catch_ups = hasty.stats().snapshot().4;
    eprintln!(
        "{} answered stored, {unknown} unknown, {catch_ups} reads of the stream",
        first.len()
    );
    assert!(catch_ups > 1, "lost acks were looked for ({catch_ups})");
}

#[tokio::test]
async fn a_reader_hands_over_a_pack_as_its_records_whole_and_filtered_by_their_subjects() {
    let server = NatsServer::start().unwrap();
    let js = jetstream::new(server.connect().await.unwrap());
    packed_stream(&js).await;
    let packer = Packer::start(js.clone(), STREAM, SUBJECT, PackSettings::default());
    packer.append(append(1, "first")).await.unwrap();
    // Appended together while nothing is in flight: the first goes alone, the rest share packs.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let packer = packer.clone();
            tokio::spawn(async move { packer.append(append(i % 2, &format!("r{i}"))).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let read = |subjects: Vec<String>| {
        let js = js.clone();
        async move {
            let mut reader = eventstore::LogReader::spawn(
                js,
                eventstore::ReadOptions::new(STREAM, 0, eventstore::ReadUntil::Head)
                    .subjects(subjects)
                    .batch_size(2),
            );
            let mut batches = vec![];
            while let Some(batch) = reader.next().await {
                batches.push(batch.unwrap());
            }
            batches
        }
    };
    let (ids, sizes) = log(&js).await;
    assert!(sizes.iter().any(|&n| n > 2), "{sizes:?}");
    let batches = read(vec![]).await;
    let entries: Vec<_> = batches.iter().flatten().collect();
    assert_eq!(entries.len(), 41);
    // In log order, each with its position, dedup id and kind; a pack's records share a batch.
    for pair in entries.windows(2) {
        assert!(pair[0].position < pair[1].position);
    }
    for e in &entries {
        let headers = e.headers.as_ref().unwrap();
        let id = headers.get("Nats-Msg-Id").unwrap().as_str();
        assert_eq!(ids[id], vec![e.position]);
        assert_eq!(headers.get("Mychat-Record").unwrap().as_str(), "message");
        assert_eq!(pack::split_position(e.position).0, e.stream_sequence);
    }
    for batch in &batches {
        let last = batch.last().unwrap().stream_sequence;
        assert!(
            batches
                .iter()
                .filter(|b| !std::ptr::eq(*b, batch))
                .flatten()
                .all(|e| e.stream_sequence != last),
            "a pack split across batches"
        );
    }
    // Subject filters apply to the records (the pack subject lets the packs through).
    let session_1 = read(vec!["chat.1.1".into(), "packed.*".into()]).await;
    let subjects: Vec<_> = session_1.iter().flatten().map(|e| &e.subject).collect();
    assert_eq!(subjects.len(), 21);
    assert!(subjects.iter().all(|s| *s == "chat.1.1"));
}

#[tokio::test]
async fn a_deployment_switched_to_packs_keeps_its_records_and_their_positions() {
    use eventstore::chat::{message_dedup_id, ChatMessage};
    use eventstore::chat_read::{record_at, records_after};
    use eventstore::{ensure_streams, ChatLog, StreamSettings};
    let server = NatsServer::start().unwrap();
    let js = jetstream::new(server.connect().await.unwrap());
    let settings = |chat_packs| StreamSettings {
        chat_shards: Some(1),
        chat_packs,
        ..Default::default()
    };
    let message = |id: &str| ChatMessage {
        session_id: 5,
        sender_id: 7,
        sender_type: "user".into(),
        content_type: "text".into(),
        content: format!("hello {id}"),
        file_url: String::new(),
        client_msg_id: id.into(),
        sent_at: chrono::Utc::now(),
    };
    // Before: one record per stream message.
    let records = ensure_streams(&js, &settings(Some(false))).await.unwrap();
    assert!(!records.packed);
    let old = ChatLog::new(js.clone(), records, Default::default());
    let a = old.append_message(&message("a")).await.unwrap();
    let b = old.append_message(&message("b")).await.unwrap();
    assert_eq!((a.seq, b.seq), (1, 2));
    drop(old);

    // The switch; a later start with nothing set keeps it; going back is refused.
    let packed = ensure_streams(&js, &settings(Some(true))).await.unwrap();
    assert!(packed.packed);
    assert_eq!(ensure_streams(&js, &settings(None)).await.unwrap(), packed);
    let refused = ensure_streams(&js, &settings(Some(false)))
        .await
        .unwrap_err();
    assert!(format!("{refused:#}").contains("going back"), "{refused:#}");

    // After: packs, above every earlier position; a resend of an earlier record is answered with
    // its position (the packer read the records written before it).
    let log = ChatLog::new(js.clone(), packed, Default::default());
    let c = log.append_message(&message("c")).await.unwrap();
    assert_eq!(c.seq, pack::position(3, 0));
    assert_eq!(c.stream_sequence, 3);
    let again = log.append_message(&message("a")).await.unwrap();
    assert!(again.duplicate);
    // A record from before packs: its position is its own stream sequence.
    assert_eq!((again.seq, again.stream_sequence), (a.seq, a.seq));
    // Read by position, either format; after a position, in order.
    let shard = packed.place(5).shard;
    for (at, id) in [(a.seq, "a"), (b.seq, "b"), (c.seq, "c")] {
        let r = record_at(&js, &packed, shard, at).await.unwrap().unwrap();
        let m: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(m["client_msg_id"], id);
    }
    let subject = packed.place(5).subject;
    for (after, want) in [
        (0, vec!["a", "b", "c"]),
        (a.seq, vec!["b", "c"]),
        (b.seq, vec!["c"]),
    ] {
        let (got, complete) = records_after(&js, &packed, shard, &subject, after, 10)
            .await
            .unwrap();
        assert!(complete);
        let ids: Vec<String> = got
            .iter()
            .map(|r| {
                let m: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                m["client_msg_id"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(ids, want, "after {after}");
    }
    assert_eq!(message_dedup_id(&message("a")), "5:7:a");
}
