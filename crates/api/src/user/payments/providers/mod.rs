//! Payment providers' asynchronous notifications, verified for real (DESIGN §5):
//! [`wechat`] (WeChat Pay API v3) and [`alipay`] (Alipay RSA2 async notify). Both end in
//! [`capture`], which applies a verified notification to the `Payment` aggregate exactly once.

pub mod alipay;
pub mod sandbox;
pub mod wechat;

use axum::http::StatusCode;
use chrono::Utc;
use domain::{Payment, PaymentCommand};
use eventstore::{Actor, CommandError, CommandMeta};
use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use crate::AppState;

/// What a notification route answers, in WeChat Pay v3's format (the sandbox provider's too):
/// `SUCCESS` with HTTP 200 when applied or ignored, `FAIL` with a 4xx/5xx when refused (the
/// provider then retries).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProviderReply {
    /// `SUCCESS` or `FAIL`.
    #[schema(pattern = "^(SUCCESS|FAIL)$", example = "SUCCESS")]
    pub code: String,
    /// What was done, or why it was refused.
    pub message: String,
}

/// A notification route's answer: a status and the provider-format body.
pub type ProviderAnswer = (StatusCode, axum::Json<ProviderReply>);

/// The reply `{code, message}` with `status`.
pub fn provider_reply(status: StatusCode, code: &str, message: &str) -> ProviderAnswer {
    (
        status,
        axum::Json(ProviderReply {
            code: code.to_string(),
            message: message.to_string(),
        }),
    )
}

/// Why a verified notification was not applied.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("unknown payment {0}")]
    UnknownPayment(String),
    #[error("payment method is {0}, not this provider")]
    WrongProvider(String),
    #[error("amount {paid} fen does not match the payment's {expected} fen")]
    AmountMismatch { expected: i64, paid: i64 },
    #[error("refused: {0}")]
    Refused(String),
    #[error("internal: {0}")]
    Internal(String),
}

/// Captures payment `payment_no` for `provider` (`wechat` / `alipay`) with the provider's
/// transaction id and the amount it reports (fen). The amount must equal the payment's; the
/// command id is `<provider>:<transaction id>`, and the aggregate treats the same transaction
/// again as a no-op, so a provider's retries (for ~24 h) are applied once.
///
/// # Errors
/// [`CaptureError`]; nothing is changed on any error.
pub async fn capture(
    state: &AppState,
    provider: &str,
    payment_no: &str,
    transaction_id: &str,
    amount: i64,
) -> Result<(), CaptureError> {
    let row =
        sqlx::query("SELECT id, amount_fen, payment_method FROM payments WHERE payment_no = $1")
            .bind(payment_no)
            .fetch_optional(&state.db)
            .await
            .map_err(|e| CaptureError::Internal(e.to_string()))?
            .ok_or_else(|| CaptureError::UnknownPayment(payment_no.to_string()))?;
    let method: String = row.get("payment_method");
    if method != provider {
        return Err(CaptureError::WrongProvider(method));
    }
    let expected: i64 = row.get("amount_fen");
    if expected != amount {
        return Err(CaptureError::AmountMismatch {
            expected,
            paid: amount,
        });
    }
    let id: i64 = row.get("id");
    let mut meta = CommandMeta::new(Actor::system());
    meta.command_id = format!("{provider}:{transaction_id}");
    let command = PaymentCommand::Capture {
        provider_txn_id: transaction_id.to_string(),
        amount,
        captured_at: Utc::now(),
    };
    match state
        .bus
        .execute::<Payment>(&id.to_string(), command, &meta)
        .await
    {
        Ok(c) => {
            state.settle("payments", c.stream_sequence).await;
            Ok(())
        }
        Err(CommandError::Rejected(e)) => Err(CaptureError::Refused(e.to_string())),
        Err(e) => Err(CaptureError::Internal(e.to_string())),
    }
}
