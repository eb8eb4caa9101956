//! The upgrade from the single `CHAT` stream to the chat shards, against a real nats-server and
//! PostgreSQL: a deployment that holds `CHAT` (subjects `chat.<session>`) and a `chat_messages`
//! read model of the old version (ids = `CHAT` sequences) keeps all of its history readable.
//! The sessions `CHAT` has stay there (new records of theirs too), later sessions go to the
//! shards, the read model is rebuilt blue/green with message ids across the streams, and the
//! layout cannot be changed afterwards.

use std::time::Duration;

use chrono::Utc;
use eventstore::chat::{message_id, ChatMessage, ChatRecord, ReadReceipt, LEGACY_CHAT_STREAM};
use eventstore::{ensure_streams, ChatLayout, ChatLog, StreamSettings};
use projections::read_models::Messages;
use projections::{Projector, MIGRATOR};
use tokio_util::sync::CancellationToken;

fn message(session_id: i64, sender_id: i64, id: &str) -> ChatMessage {
    ChatMessage {
        session_id,
        sender_id,
        sender_type: "user".into(),
        content_type: "text".into(),
        content: format!("text {id}"),
        file_url: String::new(),
        client_msg_id: id.into(),
        sent_at: Utc::now(),
    }
}

/// The `CHAT` stream as deployments before the shards created it.
async fn legacy_chat(js: &async_nats::jetstream::Context) {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: LEGACY_CHAT_STREAM.into(),
        subjects: vec!["chat.>".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        allow_atomic_publish: true,
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn publish(js: &async_nats::jetstream::Context, subject: &str, record: &ChatRecord) -> u64 {
    js.publish(
        subject.to_string(),
        serde_json::to_vec(record).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap()
    .sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_deployment_keeps_its_chat_history_readable() {
    let nats = testkit::NatsServer::start().unwrap();
    let pg = testkit::Postgres::start().unwrap();
    let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    MIGRATOR.run(&pool).await.unwrap();
    let js = async_nats::jetstream::new(nats.connect().await.unwrap());

    // Before: sessions 5 and 9 chatted in `CHAT`; the old read model has them with id = seq.
    legacy_chat(&js).await;
    let a = publish(&js, "chat.5", &ChatRecord::Message(message(5, 1, "a"))).await;
    let b = publish(&js, "chat.9", &ChatRecord::Message(message(9, 3, "b"))).await;
    let read = ChatRecord::MessageRead(ReadReceipt {
        session_id: 5,
        message_seq: a,
        read_by: 2,
        read_at: Utc::now(),
    });
    publish(&js, "chat.5", &read).await;
    for (id, session) in [(a, 5), (b, 9)] {
        sqlx::query(
            "INSERT INTO chat_messages (id, session_id, sender_id, sender_type, content_type, \
             content, client_msg_id, created_at) VALUES ($1, $2, 1, 'user', 'text', 'old', 'x', now())",
        )
        .bind(id as i64)
        .bind(session)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO projection_checkpoints (name, position, version) VALUES ('chat_messages', 3, 1)",
    )
    .execute(&pool)
    .await
    .unwrap();

    // The upgrade: the shards are created, `CHAT` keeps the sessions it has.
    let layout = ensure_streams(
        &js,
        &StreamSettings {
            chat_shards: Some(8),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        layout,
        ChatLayout {
            legacy_upto_session: Some(9),
            ..ChatLayout::new(8)
        }
    );
    let legacy = js.get_stream(LEGACY_CHAT_STREAM).await.unwrap();
    assert_eq!(legacy.cached_info().config.subjects, vec!["chat.*"]);
    assert_eq!(layout.place(5).stream, LEGACY_CHAT_STREAM);
    assert_eq!(layout.place(9).subject, "chat.9");
    assert_eq!(layout.place(10).stream, "CHAT_3");
    assert_eq!(layout.place(10).subject, "chat.3.10");
    // Idempotent, with the same number or none set (the recorded layout is kept, though the
    // default for a new deployment is another); a different number of shards is refused (the
    // sessions would move), and so is one that is not a number of shards.
    assert_ne!(eventstore::chat::DEFAULT_SHARDS, 8);
    for chat_shards in [Some(8), None] {
        assert_eq!(
            ensure_streams(
                &js,
                &StreamSettings {
                    chat_shards,
                    ..Default::default()
                }
            )
            .await
            .unwrap(),
            layout
        );
    }
    for (chat_shards, says) in [(4, "resharding"), (0, "1..=63"), (64, "1..=63")] {
        let refused = ensure_streams(
            &js,
            &StreamSettings {
                chat_shards: Some(chat_shards),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert!(format!("{refused:#}").contains(says), "{refused:#}");
    }
    assert_eq!(ChatLayout::load(&js).await.unwrap(), Some(layout));

    // After: session 9 goes on in `CHAT`, session 10 starts in its shard.
    // Nothing set: the committers (the legacy stream's; the shards are packed) group appends as
    // measured for 8 shards (atomic batches), not as for 16 or more (plain publishes).
    let log = ChatLog::new(js.clone(), layout, Default::default());
    let grouping = log.commit_settings();
    assert_eq!(
        (
            grouping.max_batch,
            grouping.min_batch,
            grouping.max_in_flight
        ),
        (1000, 16, 16)
    );
    let c = log.append_message(&message(9, 4, "c")).await.unwrap();
    assert_eq!(c.seq, 4, "session 9's next record follows in CHAT");
    assert_eq!(c.id, message_id(0, 4));
    let d = log.append_message(&message(10, 6, "d")).await.unwrap();
    // The new shards are written in packs: the first record is at position 1 × 1,024 + 0.
    let first = eventstore::pack::position(1, 0);
    assert_eq!((d.seq, d.id), (first, message_id(3, first)));

    // The projectors start: the old version of chat_messages is rebuilt with every stream's
    // projection; ids are message ids across the streams.
    let shutdown = CancellationToken::new();
    let client = nats.connect().await.unwrap();
    for projection in Messages::all(&layout) {
        let projector = Projector {
            pool: pool.clone(),
            nats: client.clone(),
            projection,
            settings: Default::default(),
        };
        tokio::spawn(projector.run(shutdown.clone()));
    }
    let want = vec![
        (message_id(0, a), 5i64, true),
        (message_id(0, b), 9, false),
        (message_id(0, 4), 9, false),
        (message_id(3, first), 10, false),
    ];
    let mut rows = Vec::new();
    for _ in 0..200 {
        rows = sqlx::query_as::<_, (i64, i64, bool)>(
            "SELECT id, session_id, is_read FROM chat_messages ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let mut sorted = want.clone();
        sorted.sort();
        if rows == sorted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut sorted = want.clone();
    sorted.sort();
    assert_eq!(
        rows, sorted,
        "every message of both layouts, once, with its new id"
    );
    let version: i32 = sqlx::query_scalar(
        "SELECT version FROM projection_checkpoints WHERE name = 'chat_messages'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(version, 2, "rebuilt to the current version");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_deployment_without_a_shard_setting_gets_the_default_and_keeps_what_it_recorded() {
    let nats = testkit::NatsServer::start().unwrap();
    let js = async_nats::jetstream::new(nats.connect().await.unwrap());
    let unset = StreamSettings::default();
    assert_eq!(unset.chat_shards, None);

    let layout = ensure_streams(&js, &unset).await.unwrap();
    assert_eq!(layout, ChatLayout::new(eventstore::chat::DEFAULT_SHARDS));
    assert_eq!(layout.legacy_upto_session, None);
    for (shard, stream) in layout.streams() {
        let info = js.get_stream(stream).await.unwrap();
        let recorded = &info.cached_info().config.metadata;
        for (key, value) in layout.metadata(shard) {
            assert_eq!(recorded.get(&key), Some(&value), "{stream}: {key}");
        }
    }
    assert!(js.get_stream(LEGACY_CHAT_STREAM).await.is_err());
    // Read back from the streams, and kept by a later start with the number set or unset.
    assert_eq!(ChatLayout::load(&js).await.unwrap(), Some(layout));
    for chat_shards in [None, Some(eventstore::chat::DEFAULT_SHARDS)] {
        let settings = StreamSettings {
            chat_shards,
            ..Default::default()
        };
        assert_eq!(ensure_streams(&js, &settings).await.unwrap(), layout);
    }
}
