//! The `chat_messages` projection of a chat shard applies the stream's read receipts and
//! revocations idempotently, against a real PostgreSQL; rows are keyed by message id (stream
//! sequence × 64 + shard).

use chrono::Utc;
use eventstore::chat::{ChatMessage, ChatRecord, ReadReceipt, Revocation};
use projections::read_models::Messages;
use projections::{LogMessage, Projection, MIGRATOR};

const SHARD: u16 = 3;

fn log(seq: u64, record: &ChatRecord) -> LogMessage {
    LogMessage::new(
        seq,
        format!("chat.{SHARD}.{}", record.session_id()),
        Utc::now(),
        serde_json::to_vec(record).unwrap().into(),
    )
}

#[tokio::test]
async fn read_receipts_and_revocations_update_the_message_row_once() {
    let pg = tokio::task::spawn_blocking(testkit::Postgres::start)
        .await
        .unwrap()
        .unwrap();
    let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    MIGRATOR.run(&pool).await.unwrap();
    let message = ChatRecord::Message(ChatMessage {
        session_id: 9,
        sender_id: 1,
        sender_type: "user".into(),
        content_type: "text".into(),
        content: "hello".into(),
        file_url: String::new(),
        client_msg_id: "m1".into(),
        sent_at: Utc::now(),
    });
    let first_read = Utc::now();
    let read = |at| {
        ChatRecord::MessageRead(ReadReceipt {
            session_id: 9,
            message_seq: 5,
            read_by: 2,
            read_at: at,
        })
    };
    let revoke = ChatRecord::MessageRevoked(Revocation {
        session_id: 9,
        message_seq: 5,
        revoked_by: 1,
        revoked_at: Utc::now(),
    });
    let mut conn = pool.acquire().await.unwrap();
    let messages = Messages {
        layout: eventstore::ChatLayout::new(8),
        shard: SHARD,
    };
    messages.apply(&mut conn, &log(5, &message)).await.unwrap();
    messages
        .apply(&mut conn, &log(6, &read(first_read)))
        .await
        .unwrap();
    // A later receipt (another reader, or a replay) does not move the first read time.
    messages
        .apply(
            &mut conn,
            &log(7, &read(first_read + chrono::Duration::seconds(30))),
        )
        .await
        .unwrap();
    messages.apply(&mut conn, &log(8, &revoke)).await.unwrap();
    let (is_read, read_time, revoked): (bool, Option<chrono::DateTime<Utc>>, bool) =
        sqlx::query_as(
            "SELECT is_read, read_time, revoked_at IS NOT NULL FROM chat_messages WHERE id = $1",
        )
        .bind(eventstore::chat::message_id(SHARD, 5))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(is_read);
    assert_eq!(
        read_time.map(|t| t.timestamp_micros()),
        Some(first_read.timestamp_micros())
    );
    assert!(revoked);
}
