//! MyChat's success envelope `{code: 200, msg, data}` (contract a.3), typed so that the OpenAPI
//! documents describe each operation's `data`.
//!
//! A handler answers [`Reply<T>`]: `Ok(reply(data))` serializes as
//! `{"code":200,"msg":"success","data":…}`, field for field what MyChat's Go backend sent, and
//! its `#[utoipa::path]` names `Envelope<T>` as the response body. Refusals are
//! [`crate::ApiError`]s.

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiResult;

/// MyChat's success envelope: `code` is always 200, `msg` `"success"` unless an operation says
/// otherwise, `data` the operation's result.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Envelope<T> {
    /// Always 200 on success (MyChat's business code, not the HTTP status).
    #[schema(example = 200)]
    pub code: u16,
    /// `"success"`, or an operation's own message.
    #[schema(example = "success")]
    pub msg: String,
    /// The operation's result.
    pub data: T,
}

/// MyChat's envelope without `data`: `{code: 200, msg}` (operations that only acknowledge).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Message {
    /// Always 200 on success.
    #[schema(example = 200)]
    pub code: u16,
    /// What was done, in the client's words (`"logged out"`, …).
    pub msg: String,
}

/// What a handler answers: the envelope around `T`, or an [`crate::ApiError`].
pub type Reply<T> = ApiResult<Json<Envelope<T>>>;

/// The success envelope around `data`, `msg` `"success"`.
pub fn reply<T>(data: T) -> Json<Envelope<T>> {
    Json(Envelope {
        code: 200,
        msg: "success".to_string(),
        data,
    })
}

/// The success envelope around `data` with an operation's own `msg`.
pub fn reply_with<T>(msg: &str, data: T) -> Json<Envelope<T>> {
    Json(Envelope {
        code: 200,
        msg: msg.to_string(),
        data,
    })
}

/// The envelope without data: `{code: 200, msg}`.
pub fn message(msg: &str) -> Json<Message> {
    Json(Message {
        code: 200,
        msg: msg.to_string(),
    })
}

/// MyChat's success envelope around untyped data: `{code: 200, msg: "success", data}`.
/// Kept for the operations not yet typed; a typed operation answers [`reply`].
pub fn ok<T: Serialize>(data: T) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "code": 200, "msg": "success", "data": data }))
}

/// MyChat's success envelope without data: `{code: 200, msg}` (untyped; see [`message`]).
pub fn ok_msg(msg: &str) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "code": 200, "msg": msg }))
}

/// `GET /health`: `{status: "ok"}` (no envelope, as MyChat's).
pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, ToSchema)]
    struct Created {
        order_id: i64,
        order_no: String,
    }

    #[test]
    fn the_typed_envelope_is_byte_for_byte_the_untyped_one() {
        let typed = serde_json::to_string(
            &reply(Created {
                order_id: 7,
                order_no: "ORD1".into(),
            })
            .0,
        )
        .unwrap();
        let untyped =
            serde_json::to_string(&ok(serde_json::json!({"order_id": 7, "order_no": "ORD1"})).0)
                .unwrap();
        assert_eq!(typed, untyped);
        assert_eq!(
            serde_json::to_string(&message("done").0).unwrap(),
            serde_json::to_string(&ok_msg("done").0).unwrap()
        );
    }
}
