//! `group_messages`, `group_reads` and `group_mentions` ([`GroupMessages`]): group
//! conversations' history, members' read cursors and `@` mentions, from the group records of the
//! chat shard streams (subjects `group.<shard>.*`, [`eventstore::group_chat`]). One projection per
//! shard, sharing the tables, like the sessions' `chat_messages`.

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use eventstore::group_chat::GroupRecord;
use sqlx::PgConnection;

use crate::runtime::{LogMessage, Projection};

/// The group records of one chat shard stream. Every write is idempotent (a message's row by its
/// id, a recall or redaction sets a time once, a read cursor only moves forward), so a record
/// applied twice changes nothing.
pub struct GroupMessages {
    /// The layout of the chat streams.
    pub layout: eventstore::ChatLayout,
    /// The shard this one reads (1-based; groups never live in the legacy `CHAT`).
    pub shard: u16,
}

impl GroupMessages {
    /// The checkpoint name of shard `shard`'s projection: `group_messages_<shard>`.
    pub fn name_of(shard: u16) -> &'static str {
        static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
        NAMES.get_or_init(|| {
            (0..=eventstore::chat::MAX_SHARDS)
                .map(|k| &*Box::leak(format!("group_messages_{k}").into_boxed_str()))
                .collect()
        })[usize::from(shard.min(eventstore::chat::MAX_SHARDS))]
    }

    /// One projection per shard stream of `layout`.
    pub fn all(layout: &eventstore::ChatLayout) -> Vec<Arc<dyn Projection>> {
        (1..=layout.shards)
            .map(|shard| {
                Arc::new(GroupMessages {
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
impl Projection for GroupMessages {
    fn name(&self) -> &'static str {
        Self::name_of(self.shard)
    }
    fn tables(&self) -> Vec<&'static str> {
        vec!["group_messages", "group_reads", "group_mentions"]
    }
    fn stream(&self) -> &'static str {
        eventstore::chat::shard_stream(self.shard)
    }
    /// The shard's groups, and its packs (whose group records the reader hands over).
    fn subjects(&self) -> Vec<String> {
        vec![
            format!("group.{}.*", self.shard),
            eventstore::chat::pack_subject(self.shard),
        ]
    }
    fn siblings(&self) -> Vec<Arc<dyn Projection>> {
        GroupMessages::all(&self.layout)
    }
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        let seq = message.position;
        let record: GroupRecord = serde_json::from_slice(&message.payload)
            .with_context(|| format!("undecodable group record at {seq}"))?;
        match record {
            GroupRecord::GroupMessage(m) => {
                let id = self.id(seq);
                let inserted = sqlx::query(
                    "INSERT INTO group_messages (id, group_id, seq, sender_id, content_type, \
                     content, file_url, client_msg_id, mentions, created_at) \
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(m.group_id)
                .bind(seq as i64)
                .bind(m.sender_id)
                .bind(&m.content_type)
                .bind(&m.content)
                .bind(&m.file_url)
                .bind(&m.client_msg_id)
                .bind(&m.mentions)
                .bind(m.sent_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 1 && !m.mentions.is_empty() {
                    sqlx::query(
                        "INSERT INTO group_mentions (user_id, message_id, group_id, seq, \
                         sender_id, created_at) SELECT u, $2, $3, $4, $5, $6 \
                         FROM unnest($1::bigint[]) AS t(u) ON CONFLICT DO NOTHING",
                    )
                    .bind(&m.mentions)
                    .bind(id)
                    .bind(m.group_id)
                    .bind(seq as i64)
                    .bind(m.sender_id)
                    .bind(m.sent_at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            GroupRecord::GroupRecall(r) => {
                sqlx::query(
                    "UPDATE group_messages SET recalled_at = COALESCE(recalled_at, $3) \
                     WHERE group_id = $1 AND seq = $2",
                )
                .bind(r.group_id)
                .bind(r.message_seq as i64)
                .bind(r.recalled_at)
                .execute(&mut *tx)
                .await?;
            }
            GroupRecord::GroupRedaction(r) => {
                // The text disappears from the read model; the fact stays in the chat stream.
                let seqs: Vec<i64> = r.message_seqs.iter().map(|s| *s as i64).collect();
                sqlx::query(
                    "UPDATE group_messages SET content = '', file_url = '', \
                     redacted_at = COALESCE(redacted_at, $3) \
                     WHERE group_id = $1 AND seq = ANY($2) AND seq < $4",
                )
                .bind(r.group_id)
                .bind(&seqs)
                .bind(r.redacted_at)
                .bind(seq as i64)
                .execute(&mut *tx)
                .await?;
            }
            GroupRecord::GroupRead(r) => {
                sqlx::query(
                    "INSERT INTO group_reads (group_id, user_id, seq, read_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (group_id, user_id) DO UPDATE \
                     SET seq = EXCLUDED.seq, read_at = EXCLUDED.read_at \
                     WHERE group_reads.seq < EXCLUDED.seq",
                )
                .bind(r.group_id)
                .bind(r.user_id)
                .bind(r.seq as i64)
                .bind(r.read_at)
                .execute(&mut *tx)
                .await?;
            }
        }
        Ok(())
    }
}
