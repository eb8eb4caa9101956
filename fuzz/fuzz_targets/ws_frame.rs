//! The gateway's client-frame parser (`gateway::protocol::ClientFrame`, both dialects) on
//! arbitrary text: it must answer a frame or a reason for the client's `error` frame, never
//! panic, and whatever it accepts must be readable by the accessors the socket loop uses.
#![no_main]

use gateway::protocol::ClientFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = ClientFrame::parse(text) {
        let _ = frame.body();
        let _ = frame.field("content");
        let _ = frame.field("content_type");
        let _ = frame.field("session_id");
        let _ = frame.client_msg_id();
    }
});
