//! The event-store envelope decoder on arbitrary bytes, as the projectors, the gateway's session
//! consumer and the aggregate loader read `EVENTS` and `CHAT` messages: `Commit::decode`, the
//! commit's stored events (envelopes), the upcasters, each domain event type, the actor header
//! form and the `CHAT` record. Errors are fine; a panic is a finding.
#![no_main]

use eventstore::chat::ChatRecord;
use eventstore::envelope::Upcasters;
use eventstore::{Actor, Commit};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(commit) = Commit::decode(data) {
        let upcasters = Upcasters::default();
        for stored in commit.into_stored(u64::MAX) {
            let stored = upcasters.upcast(stored);
            let _ = stored.aggregate_id_i64();
            let _ = stored.position();
            let _ = stored.decode::<domain::OrderEvent>();
            let _ = stored.decode::<domain::PaymentEvent>();
            let _ = stored.decode::<domain::SessionEvent>();
            let _ = stored.decode::<domain::WalletEvent>();
            let _ = stored.decode::<domain::AccountEvent>();
        }
    }
    let _ = serde_json::from_slice::<ChatRecord>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<Actor>();
    }
});
