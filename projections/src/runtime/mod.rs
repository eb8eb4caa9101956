//! The projector runtime: one worker per projection, reading a stream from the projection's
//! checkpoint with an ordered consumer and applying batches transactionally.

mod apply;
mod checkpoint;
pub mod feed;
mod projection;
mod projector;
mod reader;
mod schema;

pub use apply::{apply_in_tx, is_transient, load_skips, BatchError};
pub use checkpoint::{checkpoint, checkpoint_in, checkpoint_subject, IGNORED_CHECKPOINT_EVERY};
pub use feed::{LiveFeed, LiveFeeds};
pub use projection::{
    correlation_of, decode, upcasters, EventRef, FailedAt, LogMessage, Projection,
};
pub use projector::{Projector, ProjectorSettings};
pub use reader::{follow, spawn_reader, ProjectionReader};
pub(crate) use schema::table_exists;
pub use schema::{prepare_schema, schema_ident, LIVE_SCHEMA};

pub use eventstore::reader::subject_matches;

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn subject_filters_match_as_nats_does() {
        assert!(subject_matches("ev.order.>", "ev.order.12"));
        assert!(subject_matches("ev.order.>", "ev.order.12.x"));
        assert!(!subject_matches("ev.order.>", "ev.order"));
        assert!(!subject_matches("ev.order.>", "ev.orders.1"));
        assert!(subject_matches("ev.*.1", "ev.order.1"));
        assert!(!subject_matches("ev.*.1", "ev.order.2"));
        assert!(subject_matches("chat.>", "chat.5"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
    }
}
