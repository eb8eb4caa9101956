//! The `chat_messages` read model ([`Messages`]): one projection per chat stream of the layout,
//! sharing the table; each inserts its stream's messages and applies redactions, read receipts and
//! revocations.

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use eventstore::chat::ChatRecord;
use sqlx::PgConnection;

use crate::runtime::{LogMessage, Projection};

use super::batch::Time;

/// `chat_messages`, from one chat stream: one row per message of the stream; id = the message's
/// id across the chat streams ([`eventstore::chat::message_id`]: stream sequence × 64 + shard).
/// There is one of these per chat stream of the layout (each with its own checkpoint: the legacy
/// `CHAT`'s is `chat_messages`, shard `k`'s `chat_messages_<k>`); they share the table and are
/// rebuilt together ([`Projection::siblings`]).
pub struct Messages {
    /// The layout of the chat streams.
    pub layout: eventstore::ChatLayout,
    /// The shard this one reads (0 = the legacy `CHAT`).
    pub shard: u16,
}

impl Messages {
    /// The checkpoint name of shard `shard`'s projection.
    pub fn name_of(shard: u16) -> &'static str {
        static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
        NAMES.get_or_init(|| {
            (0..=eventstore::chat::MAX_SHARDS)
                .map(|k| {
                    if k == 0 {
                        "chat_messages"
                    } else {
                        &*Box::leak(format!("chat_messages_{k}").into_boxed_str())
                    }
                })
                .collect()
        })[usize::from(shard.min(eventstore::chat::MAX_SHARDS))]
    }

    /// One projection per chat stream of `layout`.
    pub fn all(layout: &eventstore::ChatLayout) -> Vec<Arc<dyn Projection>> {
        layout
            .streams()
            .into_iter()
            .map(|(shard, _)| {
                Arc::new(Messages {
                    layout: *layout,
                    shard,
                }) as Arc<dyn Projection>
            })
            .collect()
    }

    fn id(&self, seq: u64) -> i64 {
        eventstore::chat::message_id(self.shard, seq)
    }
}

#[async_trait]
impl Projection for Messages {
    fn name(&self) -> &'static str {
        Self::name_of(self.shard)
    }
    fn tables(&self) -> Vec<&'static str> {
        vec!["chat_messages"]
    }
    fn stream(&self) -> &'static str {
        eventstore::chat::shard_stream(self.shard)
    }
    fn subjects(&self) -> Vec<String> {
        vec![if self.shard == 0 {
            "chat.*".into()
        } else {
            format!("chat.{}.*", self.shard)
        }]
    }
    /// Version 2: ids are message ids across the chat streams (stream sequence × 64 + shard),
    /// no longer the single `CHAT` stream's sequence.
    fn version(&self) -> i32 {
        2
    }
    fn siblings(&self) -> Vec<Arc<dyn Projection>> {
        Messages::all(&self.layout)
    }
    /// Each run of consecutive chat messages in one `UNNEST` insert; read receipts,
    /// revocations and redactions (which change earlier rows) one by one, in order.
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[LogMessage],
    ) -> anyhow::Result<()> {
        #[derive(Default)]
        struct Run {
            id: Vec<i64>,
            session: Vec<i64>,
            sender: Vec<i64>,
            sender_type: Vec<String>,
            content_type: Vec<String>,
            content: Vec<String>,
            file_url: Vec<String>,
            client_msg_id: Vec<String>,
            at: Vec<Time>,
        }
        async fn flush(tx: &mut PgConnection, run: &mut Run) -> anyhow::Result<()> {
            if run.id.is_empty() {
                return Ok(());
            }
            let r = std::mem::take(run);
            sqlx::query(
                "INSERT INTO chat_messages (id, session_id, sender_id, sender_type, content_type, \
                 content, file_url, client_msg_id, created_at) SELECT * FROM unnest($1::bigint[], \
                 $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], \
                 $8::text[], $9::timestamptz[]) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&r.id)
            .bind(&r.session)
            .bind(&r.sender)
            .bind(&r.sender_type)
            .bind(&r.content_type)
            .bind(&r.content)
            .bind(&r.file_url)
            .bind(&r.client_msg_id)
            .bind(&r.at)
            .execute(&mut *tx)
            .await?;
            Ok(())
        }
        let mut run = Run::default();
        for message in messages {
            let record: ChatRecord =
                serde_json::from_slice(&message.payload).with_context(|| {
                    format!("undecodable chat record at {}", message.stream_sequence)
                })?;
            match record {
                ChatRecord::Message(m) => {
                    run.id.push(self.id(message.position));
                    run.session.push(m.session_id);
                    run.sender.push(m.sender_id);
                    run.sender_type.push(m.sender_type);
                    run.content_type.push(m.content_type);
                    run.content.push(m.content);
                    run.file_url.push(m.file_url);
                    run.client_msg_id.push(m.client_msg_id);
                    run.at.push(m.sent_at);
                }
                _ => {
                    flush(&mut *tx, &mut run).await?;
                    self.apply_record(&mut *tx, message).await?;
                }
            }
        }
        flush(&mut *tx, &mut run).await
    }
    /// One message: the batch path with a batch of one, so there is one way to apply.
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        self.apply_batch(tx, std::slice::from_ref(message)).await
    }
}

impl Messages {
    /// One `CHAT` record applied on its own: the batch path's updates (redactions, read
    /// receipts, revocations); messages are inserted in runs by `apply_batch`, but a lone one is
    /// applied here the same way.
    async fn apply_record(
        &self,
        tx: &mut PgConnection,
        message: &LogMessage,
    ) -> anyhow::Result<()> {
        let record: ChatRecord = serde_json::from_slice(&message.payload)
            .with_context(|| format!("undecodable chat record at {}", message.stream_sequence))?;
        match record {
            ChatRecord::Message(m) => {
                sqlx::query(
                    "INSERT INTO chat_messages (id, session_id, sender_id, sender_type, content_type, content, \
                     file_url, client_msg_id, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(self.id(message.position))
                .bind(m.session_id)
                .bind(m.sender_id)
                .bind(m.sender_type)
                .bind(m.content_type)
                .bind(m.content)
                .bind(m.file_url)
                .bind(m.client_msg_id)
                .bind(m.sent_at)
                .execute(&mut *tx)
                .await?;
            }
            ChatRecord::Redaction(r) => {
                // The text disappears from the read model; the fact stays in the chat stream.
                let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                    "UPDATE chat_messages SET content = '', file_url = '', content_type = 'redacted' WHERE session_id = ",
                );
                q.push_bind(r.session_id);
                q.push(" AND id < ").push_bind(self.id(message.position));
                if !r.message_ids.is_empty() {
                    let ids: Vec<i64> = r
                        .message_ids
                        .iter()
                        .map(|seq| self.id(*seq as u64))
                        .collect();
                    q.push(" AND id = ANY(").push_bind(ids).push(")");
                }
                q.build().execute(&mut *tx).await?;
            }
            // Read receipts and revocations are records of the same stream.
            ChatRecord::MessageRead(r) => {
                sqlx::query(
                    "UPDATE chat_messages SET is_read = TRUE, read_time = COALESCE(read_time, $3) \
                     WHERE id = $1 AND session_id = $2",
                )
                .bind(self.id(r.message_seq))
                .bind(r.session_id)
                .bind(r.read_at)
                .execute(&mut *tx)
                .await?;
            }
            ChatRecord::MessageRevoked(r) => {
                sqlx::query(
                    "UPDATE chat_messages SET revoked_at = COALESCE(revoked_at, $3) \
                     WHERE id = $1 AND session_id = $2",
                )
                .bind(self.id(r.message_seq))
                .bind(r.session_id)
                .bind(r.revoked_at)
                .execute(&mut *tx)
                .await?;
            }
        }
        Ok(())
    }
}
