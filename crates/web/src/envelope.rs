//! MyChat's success envelope `{code: 200, msg, data}` (contract a.3).

use axum::Json;
use serde::Serialize;

/// MyChat's success envelope: `{code: 200, msg: "success", data}`.
pub fn ok<T: Serialize>(data: T) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "code": 200, "msg": "success", "data": data }))
}

/// MyChat's success envelope without data: `{code: 200, msg}`.
pub fn ok_msg(msg: &str) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "code": 200, "msg": msg }))
}

/// `GET /health`: `{status: "ok"}` (no envelope, as MyChat's).
pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}
