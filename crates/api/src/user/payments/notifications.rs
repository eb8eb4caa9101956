//! The payment providers' notifications (contract §e): the HTTP edge of [`super::providers`].
//! Each verifies the provider's signature over the exact bytes received (the provider module's
//! `verify`), then captures the payment ([`super::providers::capture`]); what it answers is what
//! the provider expects (WeChat Pay's `{code, message}`, Alipay's `text/plain`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use crate::app::AppState;
use crate::user::config::UserApi;
use crate::user::payments::providers::{
    alipay, capture, provider_reply as reply, wechat, CaptureError, ProviderAnswer, ProviderReply,
};

/// `POST /api/payment/alipay/callback` (contract §e, Alipay RSA2). Answers `text/plain`
/// `success` (applied or ignored; Alipay stops retrying) or `fail`: 400 for a body that is not a
/// notification (a parameter missing or malformed), 401 for a signature or app refused, 200
/// otherwise (Alipay reads only the text).
#[utoipa::path(
    post,
    path = "/api/payment/alipay/callback",
    tag = "providers",
    operation_id = "alipay_callback",
    summary = "Alipay async notification (RSA2); replies text success / fail",
    request_body(content = alipay::Notification, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`success` or `fail`", body = String, content_type = "text/plain"),
        (status = 400, description = "`fail`: a parameter is missing or malformed", body = String, content_type = "text/plain"),
        (status = 401, description = "`fail`: the signature or the app id is refused", body = String, content_type = "text/plain")
    )
)]
pub async fn alipay(
    State(state): State<AppState>,
    State(api): State<Arc<UserApi>>,
    body: Bytes,
) -> Response {
    // The body is read once: its shape (400), then its signature and app (401).
    let (params, trade) = match alipay::parse(&body) {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::warn!(error = %e, "Alipay notification malformed");
            return alipay::text_with(StatusCode::BAD_REQUEST, "fail");
        }
    };
    let Some(config) = api.config.alipay.as_ref() else {
        tracing::warn!("Alipay notification while Alipay is not configured");
        return alipay::text("fail");
    };
    if let Err(e) = alipay::verify(config, &params) {
        tracing::warn!(error = %e, "Alipay notification refused");
        return alipay::text_with(StatusCode::UNAUTHORIZED, "fail");
    }
    if !matches!(
        trade.trade_status.as_str(),
        "TRADE_SUCCESS" | "TRADE_FINISHED"
    ) {
        return alipay::text("success");
    }
    match capture(
        &state,
        "alipay",
        &trade.out_trade_no,
        &trade.trade_no,
        trade.total_amount,
    )
    .await
    {
        Ok(()) => alipay::text("success"),
        Err(e) => {
            if matches!(e, CaptureError::Internal(_)) {
                tracing::error!(error = %e, "Alipay capture failed");
            } else {
                tracing::warn!(error = %e, "Alipay notification not applied");
            }
            alipay::text("fail")
        }
    }
}

/// `POST /api/payment/wechat/callback` (contract §e, WeChat Pay v3). The body is read as bytes:
/// the signature covers them exactly.
#[utoipa::path(
    post,
    path = "/api/payment/wechat/callback",
    tag = "providers",
    operation_id = "wechat_callback",
    summary = "WeChat Pay v3 notification (signed, AES-256-GCM resource); replies {code, message}",
    params(
        ("Wechatpay-Timestamp" = String, Header, description = "Unix seconds the notification was signed at (within 5 minutes of now)", pattern = "^[0-9]{1,12}$"),
        ("Wechatpay-Nonce" = String, Header, description = "The signature's nonce", min_length = 1),
        ("Wechatpay-Signature" = String, Header, description = "Base64 SHA256withRSA over `timestamp\\nnonce\\nbody\\n`", min_length = 1),
        ("Wechatpay-Serial" = String, Header, description = "The WeChat Pay platform certificate's serial", min_length = 1)
    ),
    request_body = wechat::Notification,
    responses(
        (status = 200, description = "Applied, or acknowledged and ignored", body = ProviderReply),
        (status = 400, description = "Malformed, or refused by the payment", body = ProviderReply),
        (status = 401, description = "Signature, serial, timestamp or merchant refused", body = ProviderReply),
        (status = 404, description = "Unknown payment", body = ProviderReply),
        (status = 500, description = "mychat could not apply it now (WeChat Pay retries)", body = ProviderReply),
        (status = 503, description = "WeChat Pay is not configured", body = ProviderReply)
    )
)]
pub async fn wechat(
    State(state): State<AppState>,
    State(api): State<Arc<UserApi>>,
    headers: HeaderMap,
    body: Bytes,
) -> ProviderAnswer {
    let Some(config) = api.config.wechat.as_ref() else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "FAIL",
            "WeChat Pay is not configured",
        );
    };
    let (notification, txn) =
        match wechat::verify(config, &headers, &body, chrono::Utc::now().timestamp()) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "WeChat Pay notification refused");
                let status = match e {
                    wechat::VerifyError::Malformed(_) | wechat::VerifyError::MissingHeader(_) => {
                        StatusCode::BAD_REQUEST
                    }
                    _ => StatusCode::UNAUTHORIZED,
                };
                return reply(status, "FAIL", &e.to_string());
            }
        };
    let Some(txn) = txn else {
        tracing::info!(
            id = notification.id,
            event = notification.event_type,
            "WeChat Pay notification ignored"
        );
        return reply(StatusCode::OK, "SUCCESS", "ignored");
    };
    if txn.trade_state != "SUCCESS" {
        return reply(StatusCode::OK, "SUCCESS", "not a successful trade; ignored");
    }
    match capture(
        &state,
        "wechat",
        &txn.out_trade_no,
        &txn.transaction_id,
        txn.amount.total,
    )
    .await
    {
        Ok(()) => reply(StatusCode::OK, "SUCCESS", "OK"),
        Err(e @ CaptureError::Internal(_)) => {
            tracing::error!(error = %e, "WeChat Pay capture failed");
            reply(StatusCode::INTERNAL_SERVER_ERROR, "FAIL", "internal error")
        }
        Err(e @ CaptureError::UnknownPayment(_)) => {
            reply(StatusCode::NOT_FOUND, "FAIL", &e.to_string())
        }
        Err(e) => reply(StatusCode::BAD_REQUEST, "FAIL", &e.to_string()),
    }
}
