//! The `chat_sessions` read model ([`Sessions`], from `ev.session.>`): one row per chat session,
//! with a batch's changes to a session merged before they are written.

use async_trait::async_trait;
use domain::SessionEvent;
use sqlx::PgConnection;

use crate::runtime::{LogMessage, Projection};

use super::batch::{decode_batch, id, rounds, Time};

/// `chat_sessions`: one row per session.
pub struct Sessions;

#[async_trait]
impl Projection for Sessions {
    fn name(&self) -> &'static str {
        "chat_sessions"
    }
    fn tables(&self) -> Vec<&'static str> {
        vec!["chat_sessions"]
    }
    fn subjects(&self) -> Vec<String> {
        vec!["ev.session.>".into()]
    }
    /// Per round ([`rounds`]): one `UNNEST` insert of the started sessions and one `UNNEST`
    /// update of ends and bills. The updates of one session within one commit are merged into
    /// one row update first ([`SessionUpdate`]): ending a session commits `SessionEnded` and
    /// `SessionBilled` together, so each session costs one update instead of two.
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[LogMessage],
    ) -> anyhow::Result<()> {
        let events = decode_batch::<SessionEvent>(messages)?;
        let mut changes: Vec<(i64, SessionChange)> = Vec::with_capacity(events.len());
        for (e, event) in &events {
            let (session, pos, at) = (id(e)?, e.position(), e.recorded_at);
            let update = match event {
                SessionEvent::SessionStarted {
                    order_id,
                    user_id,
                    counselor_id,
                    counselor_user_id,
                    price_per_minute,
                    prepaid_minutes,
                    started_at,
                    ..
                } => {
                    changes.push((
                        session,
                        SessionChange::Started {
                            order_id: *order_id,
                            user_id: *user_id,
                            counselor_id: *counselor_id,
                            counselor_user_id: *counselor_user_id,
                            started_at: *started_at,
                            price_per_minute: *price_per_minute,
                            prepaid_minutes: *prepaid_minutes as i32,
                            pos,
                        },
                    ));
                    continue;
                }
                SessionEvent::SessionEnded {
                    ended_at,
                    duration_seconds,
                    ..
                } => SessionUpdate {
                    stream_sequence: e.stream_sequence,
                    status: Some(2),
                    end_time: Some(*ended_at),
                    duration: Some(*duration_seconds),
                    total: None,
                    at,
                    first_pos: pos,
                    pos,
                },
                SessionEvent::SessionBilled { amount, .. } => SessionUpdate {
                    stream_sequence: e.stream_sequence,
                    status: None,
                    end_time: None,
                    duration: None,
                    total: Some(*amount),
                    at,
                    first_pos: pos,
                    pos,
                },
            };
            match changes.last_mut() {
                Some((last, SessionChange::Updated(prior)))
                    if *last == session && prior.stream_sequence == update.stream_sequence =>
                {
                    prior.merge(update)
                }
                _ => changes.push((session, SessionChange::Updated(update))),
            }
        }
        let keys: Vec<i64> = changes.iter().map(|(k, _)| *k).collect();
        let round = rounds(&keys);
        let n = round.iter().max().map_or(0, |m| m + 1);
        for r in 0..n {
            let mut ins = (
                Vec::<i64>::new(),
                Vec::<i64>::new(),
                Vec::<i64>::new(),
                Vec::<i64>::new(),
                Vec::<i64>::new(),
                Vec::<Time>::new(),
                Vec::<i64>::new(),
                Vec::<i32>::new(),
                Vec::<i64>::new(),
            );
            let mut upd = (
                Vec::<i64>::new(),
                Vec::<Option<i16>>::new(),
                Vec::<Option<Time>>::new(),
                Vec::<Option<i64>>::new(),
                Vec::<Option<i64>>::new(),
                Vec::<Time>::new(),
                Vec::<i64>::new(),
                Vec::<i64>::new(),
            );
            for (i, (session, change)) in changes.iter().enumerate() {
                if round[i] != r {
                    continue;
                }
                match change {
                    SessionChange::Started {
                        order_id,
                        user_id,
                        counselor_id,
                        counselor_user_id,
                        started_at,
                        price_per_minute,
                        prepaid_minutes,
                        pos,
                    } => {
                        ins.0.push(*session);
                        ins.1.push(*order_id);
                        ins.2.push(*user_id);
                        ins.3.push(*counselor_id);
                        ins.4.push(*counselor_user_id);
                        ins.5.push(*started_at);
                        ins.6.push(*price_per_minute);
                        ins.7.push(*prepaid_minutes);
                        ins.8.push(*pos);
                    }
                    SessionChange::Updated(u) => {
                        upd.0.push(*session);
                        upd.1.push(u.status);
                        upd.2.push(u.end_time);
                        upd.3.push(u.duration);
                        upd.4.push(u.total);
                        upd.5.push(u.at);
                        upd.6.push(u.pos);
                        upd.7.push(u.first_pos);
                    }
                }
            }
            if !ins.0.is_empty() {
                sqlx::query(
                    "INSERT INTO chat_sessions (id, order_id, user_id, counselor_id, counselor_user_id, \
                     status, start_time, price_fen, prepaid_minutes, created_at, updated_at, last_position) \
                     SELECT id, o, u, c, cu, 1, st, p, pm, st, st, pos FROM unnest($1::bigint[], \
                     $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::timestamptz[], \
                     $7::bigint[], $8::int[], $9::bigint[]) AS t(id, o, u, c, cu, st, p, pm, pos) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&ins.0)
                .bind(&ins.1)
                .bind(&ins.2)
                .bind(&ins.3)
                .bind(&ins.4)
                .bind(&ins.5)
                .bind(&ins.6)
                .bind(&ins.7)
                .bind(&ins.8)
                .execute(&mut *tx)
                .await?;
            }
            if !upd.0.is_empty() {
                sqlx::query(
                    "UPDATE chat_sessions s SET status = COALESCE(t.status, s.status), \
                     end_time = COALESCE(t.end_time, s.end_time), \
                     duration = COALESCE(t.duration, s.duration), \
                     total_amount_fen = COALESCE(t.total, s.total_amount_fen), \
                     updated_at = t.at, last_position = t.pos \
                     FROM unnest($1::bigint[], $2::smallint[], $3::timestamptz[], $4::bigint[], \
                     $5::bigint[], $6::timestamptz[], $7::bigint[], $8::bigint[]) \
                     AS t(id, status, end_time, duration, total, at, pos, first_pos) \
                     WHERE s.id = t.id AND s.last_position < t.first_pos",
                )
                .bind(&upd.0)
                .bind(&upd.1)
                .bind(&upd.2)
                .bind(&upd.3)
                .bind(&upd.4)
                .bind(&upd.5)
                .bind(&upd.6)
                .bind(&upd.7)
                .execute(&mut *tx)
                .await?;
            }
        }
        Ok(())
    }
    /// One message: the batch path with a batch of one, so there is one way to apply.
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        self.apply_batch(tx, std::slice::from_ref(message)).await
    }
}

/// One change to a `chat_sessions` row, in a batch.
enum SessionChange {
    /// `SessionStarted`: the row is inserted.
    Started {
        order_id: i64,
        user_id: i64,
        counselor_id: i64,
        counselor_user_id: i64,
        started_at: Time,
        price_per_minute: i64,
        prepaid_minutes: i32,
        pos: i64,
    },
    /// `SessionEnded` and/or `SessionBilled`: the row is updated.
    Updated(SessionUpdate),
}

/// The updates of one session by consecutive events of one commit (stream sequence), merged:
/// each column takes the last value set, `at`/`pos` are the last event's, and the row's guard
/// is the first event's position (`last_position < first_pos`). Merging within one commit
/// only keeps the one-by-one result: a commit's events are applied in one transaction with
/// the checkpoint, so a row has seen either all of them or none.
struct SessionUpdate {
    stream_sequence: u64,
    status: Option<i16>,
    end_time: Option<Time>,
    duration: Option<i64>,
    /// The billed amount, in fen.
    total: Option<i64>,
    at: Time,
    first_pos: i64,
    pos: i64,
}

impl SessionUpdate {
    /// Folds `later` (the next event of the same commit and session) into `self`.
    fn merge(&mut self, later: SessionUpdate) {
        self.status = later.status.or(self.status);
        self.end_time = later.end_time.or(self.end_time);
        self.duration = later.duration.or(self.duration);
        self.total = later.total.or(self.total);
        self.at = later.at;
        self.pos = later.pos;
    }
}
