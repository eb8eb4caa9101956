//! The frame protocol (contract §d), both dialects.
//!
//! Client frames are JSON text: Go's `{type, session_id, data}` or the web client's
//! `{type, payload}` (no `session_id`: the socket's bound session is meant). Server frames carry
//! their object under both `data` and `payload`, so either client reads them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Largest client frame accepted, in bytes.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// A frame from a client, either dialect.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClientFrame {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub session_id: Option<i64>,
    /// The group a group frame (`join_group`, `group_message`, `group_read`, a `typing` with a
    /// group) is about.
    #[serde(default)]
    pub group_id: Option<i64>,
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub payload: Option<Value>,
    /// The client's message id (also accepted inside `data` / `payload` as `id` or
    /// `client_msg_id`).
    #[serde(default)]
    pub id: Option<Value>,
}

impl ClientFrame {
    /// Parses a text frame.
    ///
    /// # Errors
    /// A message for the client's `error` frame.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_FRAME_BYTES {
            return Err(format!("frame larger than {MAX_FRAME_BYTES} bytes"));
        }
        // NUL cannot be stored by the read models; in a chat stream it would stop them.
        if web::extract::has_nul_escape(text.as_bytes()) {
            return Err("text must not contain NUL characters (\\u0000)".into());
        }
        serde_json::from_str(text).map_err(|e| format!("malformed frame: {e}"))
    }

    /// The body: `data`, else `payload` (the web dialect), else `{}`.
    pub fn body(&self) -> Value {
        self.data
            .clone()
            .or_else(|| self.payload.clone())
            .unwrap_or_else(|| json!({}))
    }

    /// The body without copying it (`Null` when there is none).
    fn body_ref(&self) -> &Value {
        static NULL: Value = Value::Null;
        self.data
            .as_ref()
            .or(self.payload.as_ref())
            .unwrap_or(&NULL)
    }

    /// A string field of the body.
    pub fn field(&self, name: &str) -> String {
        match self.body_ref().get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        }
    }

    /// The client's message id, if it sent one.
    pub fn client_msg_id(&self) -> String {
        let from_body = |key| match self.body_ref().get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        match &self.id {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                let id = from_body("client_msg_id");
                if id.is_empty() {
                    from_body("id")
                } else {
                    id
                }
            }
        }
    }
}

/// A server frame: `{type, session_id, data, payload}`, `data` and `payload` the same object.
/// Written straight to text (no `Value` tree is built or copied on the way).
pub fn frame(kind: &str, session_id: i64, data: impl Serialize) -> String {
    encode(&Envelope {
        kind,
        id_key: "session_id",
        id: session_id,
        data: &data,
    })
}

/// A group's server frame: `{type, group_id, data, payload}` (as [`frame`]).
pub fn group_frame(kind: &str, group_id: i64, data: impl Serialize) -> String {
    encode(&Envelope {
        kind,
        id_key: "group_id",
        id: group_id,
        data: &data,
    })
}

/// A server frame's envelope (contract d.2), in this key order: `type`, the id (`session_id`
/// or `group_id`), `data`, `payload`; the body goes under both of the last two.
struct Envelope<'a, D> {
    kind: &'a str,
    id_key: &'static str,
    id: i64,
    data: &'a D,
}

impl<D: Serialize> Serialize for Envelope<'_, D> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("type", self.kind)?;
        map.serialize_entry(self.id_key, &self.id)?;
        map.serialize_entry("data", self.data)?;
        map.serialize_entry("payload", self.data)?;
        map.end()
    }
}

/// The JSON text of a server frame. The frames' bodies are plain records and `Value`s, which
/// always encode; should one not, the client gets an `error` frame instead of nothing.
fn encode<D: Serialize>(envelope: &Envelope<'_, D>) -> String {
    serde_json::to_string(envelope).unwrap_or_else(|e| {
        tracing::error!(kind = envelope.kind, error = %e, "a server frame could not be encoded");
        let (key, id) = (envelope.id_key, envelope.id);
        format!(
            r#"{{"type":"error","{key}":{id},"data":{{"error":"internal error"}},"payload":{{"error":"internal error"}}}}"#
        )
    })
}

/// An `error` frame about a group (the socket stays open).
pub fn group_error_frame(group_id: i64, message: &str) -> String {
    group_frame("error", group_id, json!({ "error": message }))
}

/// An `error` frame.
pub fn error_frame(session_id: i64, message: &str) -> String {
    frame("error", session_id, json!({ "error": message }))
}

/// A token bucket: `rate` frames per second sustained, `burst` at once.
pub(crate) struct RateLimit {
    pub(crate) tokens: f64,
    pub(crate) rate: f64,
    pub(crate) burst: f64,
    pub(crate) at: std::time::Instant,
}

impl RateLimit {
    pub(crate) fn allow(&mut self) -> bool {
        let now = std::time::Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_dialects_parse_to_the_same_message() {
        let go = ClientFrame::parse(
            r#"{"type":"message","session_id":3,"data":{"content":"hi","id":"m1"}}"#,
        )
        .unwrap();
        let web = ClientFrame::parse(r#"{"type":"message","payload":{"content_type":"text","content":"hi","client_msg_id":"m1"}}"#).unwrap();
        assert_eq!(
            (go.field("content"), go.client_msg_id()),
            ("hi".into(), "m1".into())
        );
        assert_eq!(
            (web.field("content"), web.client_msg_id()),
            ("hi".into(), "m1".into())
        );
        assert_eq!(go.session_id, Some(3));
        assert_eq!(web.session_id, None);
    }

    #[test]
    fn bad_frames_are_refused_with_a_reason() {
        assert!(ClientFrame::parse("{not json").is_err());
        assert!(ClientFrame::parse(r#"{"session_id":1}"#).is_err());
        assert!(ClientFrame::parse(&"x".repeat(MAX_FRAME_BYTES + 1)).is_err());
        assert!(ClientFrame::parse(r#"{"type":"message","data":{"content":"a\u0000b"}}"#).is_err());
        // An escaped backslash before `u0000` is literal text, not a NUL.
        assert!(ClientFrame::parse(r#"{"type":"message","data":{"content":"a\\u0000b"}}"#).is_ok());
    }

    #[test]
    fn a_server_frame_carries_its_body_under_data_and_payload_in_envelope_order() {
        assert_eq!(
            frame("ack", 7, json!({ "client_msg_id": "m1", "seq": 3 })),
            r#"{"type":"ack","session_id":7,"data":{"client_msg_id":"m1","seq":3},"payload":{"client_msg_id":"m1","seq":3}}"#
        );
        assert_eq!(
            group_error_frame(9, "not a member"),
            r#"{"type":"error","group_id":9,"data":{"error":"not a member"},"payload":{"error":"not a member"}}"#
        );
    }
}
