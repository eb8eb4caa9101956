//! Aggregate ids from PostgreSQL sequences, taken in blocks: one query per
//! [`IdBlocks::BLOCK`] ids instead of one per command.
//!
//! An order, payment or withdrawal id is a new aggregate's id (`ev.order.<id>`); it only has to
//! be unique, positive and never reused. A process takes [`IdBlocks::BLOCK`] values of the
//! sequence at once (`nextval` over `generate_series`, so other processes taking ids at the same
//! time interleave with it and nobody gets a value twice) and hands them out from memory. Ids
//! left in a block when the process stops are never used: sequences have gaps anyway (a rolled
//! back `nextval` is not given back either).

use std::collections::{HashMap, VecDeque};

use sqlx::PgPool;
use tokio::sync::Mutex;

/// The sequences ids are taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdSequence {
    /// `order_ids`: orders (and their sessions: a session's id is its order's).
    Orders,
    /// `payment_ids`: payments (orders and recharges).
    Payments,
    /// `withdrawal_ids`: counselor withdrawals.
    Withdrawals,
    /// `group_ids`: group conversations.
    Groups,
    /// `api_key_ids`: API keys.
    ApiKeys,
}

impl IdSequence {
    fn name(self) -> &'static str {
        match self {
            Self::Orders => "order_ids",
            Self::Payments => "payment_ids",
            Self::Withdrawals => "withdrawal_ids",
            Self::Groups => "group_ids",
            Self::ApiKeys => "api_key_ids",
        }
    }
}

/// The process's blocks of ids. Cheap to share (`Arc`).
#[derive(Default)]
pub struct IdBlocks {
    blocks: Mutex<HashMap<IdSequence, VecDeque<i64>>>,
}

impl IdBlocks {
    /// Ids taken from a sequence at once.
    pub const BLOCK: i64 = 64;

    /// The next id of `sequence`: from this process's block, or from a new block when it is
    /// empty (one query).
    ///
    /// # Errors
    /// On a database error.
    pub async fn next(&self, db: &PgPool, sequence: IdSequence) -> Result<i64, sqlx::Error> {
        let mut blocks = self.blocks.lock().await;
        let block = blocks.entry(sequence).or_default();
        if block.is_empty() {
            let ids: Vec<i64> = sqlx::query_scalar(&format!(
                "SELECT nextval('{}') FROM generate_series(1, $1)",
                sequence.name()
            ))
            .bind(Self::BLOCK)
            .fetch_all(db)
            .await?;
            block.extend(ids);
        }
        Ok(block.pop_front().expect("a block holds BLOCK > 0 ids"))
    }
}
