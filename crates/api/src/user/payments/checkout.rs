//! Payments: creating one for an order, and the built-in **sandbox** provider.
//!
//! The sandbox is off unless enabled (`UserApiConfig::sandbox_payments`): while it is off its
//! cashier page and callback are not routed at all, and a payment can only be created for a
//! provider with real credentials ([`check_method`]).
//!
//! The sandbox behaves like a real provider: `pay_url` points at its cashier page
//! (`GET /sandbox/cashier/{payment_no}` on the user API); opening that page makes the "provider"
//! send a signed notification to `POST /api/payment/sandbox/callback`, which verifies it exactly
//! as a real callback is verified (signature over `timestamp\nnonce\nbody\n`, freshness, amount,
//! payment) before capturing the payment. The order becomes paid through the process manager
//! (`PaymentCaptured` → `Order::MarkPaid`).
//!
//! Signature: `Sandbox-Signature` = hex HMAC-SHA256 with the sandbox secret over
//! `timestamp\nnonce\nbody\n` (the same string-to-sign as WeChat Pay API v3), with
//! `Sandbox-Timestamp` (unix seconds, within 5 minutes) and `Sandbox-Nonce`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Html;
use chrono::{DateTime, Utc};
use domain::{Order, OrderStatus, Payment, PaymentCommand};
use eventstore::Actor;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::{Validate, ValidationError};
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;
use web::money::yuan_f64;

use crate::user::orders::placement::request_meta;
use crate::user::payments::providers::{provider_reply, ProviderAnswer, ProviderReply};
use crate::user::state::UserState;
use crate::{ApiError, ApiJson, ApiPath, ApiResult, AppState, AuthUser};
use web::error::refusal;

/// The user-API routes of this module. The sandbox's cashier page and callback exist only
/// when `sandbox` is true.
pub fn router(sandbox: bool) -> OpenApiRouter<UserState> {
    let router = OpenApiRouter::new().routes(routes!(create));
    if !sandbox {
        return router;
    }
    router
        .routes(routes!(sandbox_callback))
        .routes(routes!(sandbox_cashier))
}

/// Whether payment `method` may be used: the user API's [`crate::user::config::UserApi`] decides;
/// without it nothing is available (fail closed).
///
/// # Errors
/// 422 naming `payment_method` (a documented method this server does not offer), 400 for one
/// no server offers.
pub fn check_method(
    api: Option<&std::sync::Arc<crate::user::config::UserApi>>,
    method: &str,
) -> Result<(), ApiError> {
    match api {
        Some(api) => api.check_method(method),
        None => Err(ApiError::unprocessable(
            "payment_method",
            "no payment provider is configured on this server",
        )),
    }
}

fn strict_trade_type_rule(trade_type: &str) -> Result<(), ValidationError> {
    if matches!(trade_type, "NATIVE" | "H5" | "JSAPI" | "APP") {
        return Ok(());
    }
    Err(refusal("trade_type", "one of NATIVE, H5, JSAPI, APP"))
}

/// `POST /api/payment/create` body (contract b.1 #27).
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct CreatePayment {
    /// The caller's order awaiting payment.
    #[validate(range(min = 1, message = "must be a positive id"))]
    pub order_id: i64,
    /// `sandbox`, `wechat` or `alipay`, as offered by this server (`wechat` and `alipay` run
    /// through the sandbox cashier while the sandbox is on and no provider credentials are
    /// configured).
    #[schema(pattern = "^(sandbox|wechat|alipay)$")]
    pub payment_method: String,
    /// `NATIVE` (default), `H5`, `JSAPI` or `APP`.
    #[serde(default = "native")]
    #[schema(pattern = "^(NATIVE|H5|JSAPI|APP)$", default = "NATIVE")]
    #[validate(custom(function = "strict_trade_type_rule"))]
    pub trade_type: String,
    /// The payer's IP address (accepted, not used).
    #[serde(default)]
    pub client_ip: String,
    /// Where to return after paying (accepted, not used).
    #[serde(default)]
    pub return_url: String,
}

/// A payment awaiting the payer at `pay_url`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentCreated {
    pub payment_id: i64,
    pub payment_no: String,
    /// The order's amount, yuan.
    pub amount: f64,
    /// The same, fen.
    pub amount_fen: i64,
    /// Where the payer pays (the provider's cashier).
    pub pay_url: String,
    /// Parameters for an in-app (JSAPI / APP) payment; `null`: the payer goes to `pay_url`.
    pub pay_params: Option<BTreeMap<String, String>>,
    pub trade_type: String,
    /// When the payment lapses (RFC 3339; two hours after creation).
    pub expired_at: DateTime<Utc>,
}

fn native() -> String {
    "NATIVE".into()
}

/// `POST /api/payment/create` → `{payment_id, payment_no, amount, pay_url, pay_params,
/// trade_type, expired_at}`. The order must be the caller's and awaiting payment.
#[utoipa::path(
    post,
    path = "/api/payment/create",
    tag = "payments",
    operation_id = "create_payment",
    summary = "Create a payment for a pending order",
    security(("bearer" = [])),
    request_body = CreatePayment,
    responses(
        (status = 200, description = "The payment, awaiting the payer", body = Envelope<PaymentCreated>),
        (status = 400, description = "A field is invalid, or the method is not offered", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The order is not awaiting payment", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the caller's order", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn create(
    State(state): State<AppState>,
    State(api): State<std::sync::Arc<crate::user::config::UserApi>>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreatePayment>,
) -> Reply<PaymentCreated> {
    // Whether the method is offered is this server's configuration: checked first.
    check_method(Some(&api), &req.payment_method)?;
    req.validate()?;
    let (order, version) = state.bus.load::<Order>(&req.order_id.to_string()).await?;
    if version == 0 {
        return Err(ApiError::not_found("order"));
    }
    if order.user_id != user.user_id {
        return Err(ApiError::forbidden("not your order"));
    }
    if order.status != OrderStatus::Pending {
        return Err(ApiError::refused(format!(
            "order is not awaiting payment (status {})",
            order.status.code()
        )));
    }
    let id = state
        .ids
        .next(&state.db, crate::app::ids::IdSequence::Payments)
        .await?;
    let now = Utc::now();
    let payment_no = format!("PAY{}{id}", now.timestamp_nanos_opt().unwrap_or_default());
    let command = PaymentCommand::Create {
        payment_no: payment_no.clone(),
        order_id: req.order_id,
        user_id: user.user_id,
        amount: order.amount,
        method: req.payment_method.clone(),
        trade_type: req.trade_type.clone(),
        created_at: now,
    };
    let meta = request_meta(&headers, Actor::user(user.user_id));
    let committed = state
        .bus
        .execute_new::<Payment>(&id.to_string(), command, &meta)
        .await?;
    state.settle("payments", committed.stream_sequence).await;
    let (id, payment_no) = match committed.events.first() {
        Some(domain::PaymentEvent::PaymentCreated { payment_no, .. }) => (
            committed.aggregate_id.parse::<i64>().unwrap_or(id),
            payment_no.clone(),
        ),
        _ => (id, payment_no),
    };
    Ok(reply(PaymentCreated {
        payment_id: id,
        pay_url: format!("{}/sandbox/cashier/{payment_no}", state.settings.public_url),
        payment_no,
        amount: yuan_f64(order.amount),
        amount_fen: order.amount,
        pay_params: None,
        trade_type: req.trade_type,
        expired_at: now + chrono::Duration::hours(2),
    }))
}

/// The sandbox provider's notification body (signed: `Sandbox-Timestamp`, `Sandbox-Nonce`,
/// `Sandbox-Signature` headers over the exact bytes).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SandboxNotify {
    /// mychat's payment number.
    pub payment_no: String,
    /// The provider's transaction id.
    pub transaction_id: String,
    /// Fen; must equal the payment's amount.
    pub amount: i64,
    /// `SUCCESS` for a paid transaction; others are acknowledged and ignored.
    #[schema(example = "SUCCESS")]
    pub trade_state: String,
}

type HmacSha256 = Hmac<Sha256>;

fn sandbox_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + 64);
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// Signs a sandbox notification as the sandbox provider does: hex HMAC-SHA256.
pub fn sandbox_sign(secret: &str, timestamp: &str, nonce: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(&sandbox_message(timestamp, nonce, body));
    hex::encode(mac.finalize().into_bytes())
}

fn sandbox_verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let (timestamp, nonce, signature) = (
        get("sandbox-timestamp"),
        get("sandbox-nonce"),
        get("sandbox-signature"),
    );
    if timestamp.is_empty() || nonce.is_empty() || signature.is_empty() {
        return Err("missing signature headers");
    }
    let at: i64 = timestamp.parse().map_err(|_| "bad timestamp")?;
    if (Utc::now().timestamp() - at).abs() > 300 {
        return Err("stale notification");
    }
    let signature = hex::decode(signature).map_err(|_| "bad signature encoding")?;
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(&sandbox_message(timestamp, nonce, body));
    mac.verify_slice(&signature)
        .map_err(|_| "signature mismatch")
}

/// `POST /api/payment/sandbox/callback`: the sandbox provider's notification. Verified (signature,
/// freshness), then the payment is captured (the amount must match; a repeat is a no-op). Replies
/// as WeChat Pay v3 does: 200 `{code: "SUCCESS"}`, or 4xx `{code: "FAIL", message}` when refused.
///
/// Refused (403) unless the sandbox is enabled in the user API's configuration (a missing
/// configuration refuses too: fail closed; the route is not even mounted while the sandbox is
/// off), and for a `wechat` / `alipay` payment whose real provider is configured — those are
/// paid only through the provider's verified notification.
#[utoipa::path(
    post,
    path = "/api/payment/sandbox/callback",
    tag = "providers",
    operation_id = "sandbox_callback",
    summary = "The sandbox provider's signed notification",
    params(
        ("Sandbox-Timestamp" = String, Header, description = "Unix seconds, within 5 minutes"),
        ("Sandbox-Nonce" = String, Header, description = "A random string"),
        ("Sandbox-Signature" = String, Header, description = "Hex HMAC-SHA256 with the sandbox secret over `timestamp\\nnonce\\nbody\\n`")
    ),
    request_body = SandboxNotify,
    responses(
        (status = 200, description = "Applied, or acknowledged and ignored", body = ProviderReply),
        (status = 400, description = "Malformed, or refused by the payment", body = ProviderReply),
        (status = 401, description = "Signature or timestamp refused", body = ProviderReply),
        (status = 403, description = "The sandbox is disabled, or the payment is not a sandbox payment", body = ProviderReply),
        (status = 404, description = "Unknown payment", body = ProviderReply),
        (status = 500, description = "mychat could not apply it now (the provider retries)", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn sandbox_callback(
    State(state): State<AppState>,
    State(api): State<std::sync::Arc<crate::user::config::UserApi>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<ProviderAnswer> {
    if !api.config.sandbox_payments {
        return Ok(provider_reply(
            StatusCode::FORBIDDEN,
            "FAIL",
            "the sandbox provider is disabled",
        ));
    }
    let secret = secrecy::ExposeSecret::expose_secret(&state.settings.sandbox_secret);
    if let Err(why) = sandbox_verify(secret, &headers, &body) {
        tracing::warn!(why, "sandbox notification refused");
        return Ok(provider_reply(StatusCode::UNAUTHORIZED, "FAIL", why));
    }
    let notify: SandboxNotify = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(_) => {
            return Ok(provider_reply(
                StatusCode::BAD_REQUEST,
                "FAIL",
                "malformed notification",
            ))
        }
    };
    if notify.trade_state != "SUCCESS" {
        return Ok(provider_reply(
            StatusCode::OK,
            "SUCCESS",
            "not a payment; ignored",
        ));
    }
    let row: Option<(i64, String)> =
        match sqlx::query_as("SELECT id, payment_method FROM payments WHERE payment_no = $1")
            .bind(&notify.payment_no)
            .fetch_optional(&state.db)
            .await
        {
            Ok(row) => row,
            Err(e) => return Err(ApiError::from(e)),
        };
    let Some((id, method)) = row else {
        return Ok(provider_reply(
            StatusCode::NOT_FOUND,
            "FAIL",
            "unknown payment",
        ));
    };
    // Only `sandbox` payments: a `wechat` / `alipay` payment (sandbox mode or real) is paid by
    // that provider's own verified notification, an offline one by an administrator.
    if method != "sandbox" {
        return Ok(provider_reply(
            StatusCode::FORBIDDEN,
            "FAIL",
            "this payment is confirmed only by its provider's notification",
        ));
    }
    let command = PaymentCommand::Capture {
        provider_txn_id: notify.transaction_id.clone(),
        amount: notify.amount,
        captured_at: Utc::now(),
    };
    let mut meta = eventstore::CommandMeta::new(Actor::system());
    meta.command_id = format!("sandbox:{}:{}", notify.payment_no, notify.transaction_id);
    match state
        .bus
        .execute::<Payment>(&id.to_string(), command, &meta)
        .await
    {
        Ok(_) => Ok(provider_reply(StatusCode::OK, "SUCCESS", "OK")),
        Err(eventstore::CommandError::Rejected(e)) => Ok(provider_reply(
            StatusCode::BAD_REQUEST,
            "FAIL",
            &e.to_string(),
        )),
        Err(e) => Err(ApiError::from(e)),
    }
}

/// The cashier page's answer: 200 paid, 409 refused, not payable here, or not delivered (the
/// provider's notification could not reach mychat: nothing was paid; the page may be opened
/// again).
fn cashier_page(
    status: StatusCode,
    headline: &str,
    method: &str,
    payment_no: &str,
    amount: i64,
) -> CashierPage {
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>Sandbox cashier</title>\
         <h1>{headline}</h1><p>{method} payment {payment_no}: ¥{}.{:02}</p>",
        amount / 100,
        amount % 100
    );
    (status, Html(html))
}

/// The cashier's answer: a status and an HTML page saying what happened.
pub type CashierPage = (StatusCode, Html<String>);

const PAID: &str = "支付成功 Payment complete (paid)";

/// The payment's state in the log (not the read model, which may lag): `(status, method,
/// amount)`; `None` when there is no such payment.
async fn payment_state(
    state: &AppState,
    id: i64,
) -> Result<Option<(domain::PaymentStatus, String, i64)>, ApiError> {
    let (payment, version) = state.bus.load::<Payment>(&id.to_string()).await?;
    Ok((version > 0).then_some((payment.status, payment.method, payment.amount)))
}

/// `GET /sandbox/cashier/{payment_no}`: the sandbox provider's cashier page (only routed while
/// the sandbox is enabled). Opening it pays: the provider signs a notification and posts it to
/// mychat's notify URL, then the page says whether mychat accepted it. Opening the page of a
/// payment that is already paid pays nothing again and answers 200 "paid"; a refunded one, or a
/// payment the sandbox may not pay (its real provider is configured, an offline payment), 409;
/// a notification mychat refused or could not receive, 409 with the reason (never a 5xx).
///
/// A `wechat` / `alipay` payment whose provider runs in sandbox mode is paid with that
/// provider's own notification format, signed with the sandbox keys, posted to the provider's
/// real callback route ([`crate::user::payments::providers::sandbox`]).
#[utoipa::path(
    get,
    path = "/sandbox/cashier/{payment_no}",
    tag = "providers",
    summary = "The sandbox cashier page: opening it pays (HTML)",
    params(("payment_no" = String, Path, description = "The payment's number")),
    responses(
        (status = 200, description = "Paid (now or before)", body = String, content_type = "text/html"),
        (status = 404, description = "No such payment", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Refunded, refused, not payable through the sandbox, or the notification could not reach mychat (nothing paid)", body = String, content_type = "text/html")
    )
)]
pub async fn sandbox_cashier(
    State(state): State<AppState>,
    State(api): State<std::sync::Arc<crate::user::config::UserApi>>,
    ApiPath(payment_no): ApiPath<String>,
) -> ApiResult<CashierPage> {
    let id: i64 = sqlx::query_scalar("SELECT id FROM payments WHERE payment_no = $1")
        .bind(&payment_no)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    let (status, method, amount) = payment_state(&state, id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    match status {
        domain::PaymentStatus::Paid => {
            return Ok(cashier_page(
                StatusCode::OK,
                PAID,
                &method,
                &payment_no,
                amount,
            ))
        }
        domain::PaymentStatus::Refunded => {
            return Ok(cashier_page(
                StatusCode::CONFLICT,
                "已退款 This payment was paid and refunded",
                &method,
                &payment_no,
                amount,
            ))
        }
        _ => {}
    }
    let delivered: Result<bool, anyhow::Error> =
        match (method.as_str(), &api.sandbox.wechat, &api.sandbox.alipay) {
            ("wechat", Some((signer, key)), _) => {
                let txn = format!(
                    "SBXWX{}",
                    Utc::now().timestamp_nanos_opt().unwrap_or_default()
                );
                let (headers, body) =
                    crate::user::payments::providers::sandbox::wechat_notification(
                        signer,
                        key,
                        &payment_no,
                        &txn,
                        amount,
                    )?;
                let mut req = reqwest::Client::new()
                    .post(format!(
                        "{}/api/payment/wechat/callback",
                        state.settings.public_url
                    ))
                    .header("content-type", "application/json")
                    .body(body);
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                req.send()
                    .await
                    .map(|reply| reply.status().is_success())
                    .map_err(|e| anyhow::anyhow!("sandbox WeChat Pay: {e}"))
            }
            ("alipay", _, Some(signer)) => {
                let trade = format!(
                    "SBXALI{}",
                    Utc::now().timestamp_nanos_opt().unwrap_or_default()
                );
                let form = crate::user::payments::providers::sandbox::alipay_notification(
                    signer,
                    &payment_no,
                    &trade,
                    amount,
                );
                match reqwest::Client::new()
                    .post(format!(
                        "{}/api/payment/alipay/callback",
                        state.settings.public_url
                    ))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form)
                    .send()
                    .await
                {
                    Ok(reply) => Ok(reply.text().await.unwrap_or_default() == "success"),
                    Err(e) => Err(anyhow::anyhow!("sandbox Alipay: {e}")),
                }
            }
            ("sandbox", _, _) => {
                let notify = SandboxNotify {
                    payment_no: payment_no.clone(),
                    transaction_id: format!("SBX{}", uuid::Uuid::new_v4().simple()),
                    amount,
                    trade_state: "SUCCESS".into(),
                };
                let body = serde_json::to_vec(&notify).map_err(anyhow::Error::from)?;
                let timestamp = Utc::now().timestamp().to_string();
                let nonce = uuid::Uuid::new_v4().simple().to_string();
                let secret = secrecy::ExposeSecret::expose_secret(&state.settings.sandbox_secret);
                let signature = sandbox_sign(secret, &timestamp, &nonce, &body);
                let url = format!("{}/api/payment/sandbox/callback", state.settings.public_url);
                reqwest::Client::new()
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("sandbox-timestamp", &timestamp)
                    .header("sandbox-nonce", &nonce)
                    .header("sandbox-signature", &signature)
                    .body(body)
                    .send()
                    .await
                    .map(|reply| reply.status().is_success())
                    .map_err(|e| anyhow::anyhow!("sandbox provider could not reach {url}: {e}"))
            }
            _ => {
                return Ok(cashier_page(
                    StatusCode::CONFLICT,
                    "此支付不能在沙箱收银台支付 This payment is not paid through the sandbox",
                    &method,
                    &payment_no,
                    amount,
                ))
            }
        };
    match delivered {
        Ok(true) => Ok(cashier_page(
            StatusCode::OK,
            PAID,
            &method,
            &payment_no,
            amount,
        )),
        Ok(false) => {
            // Refused: another opening of the page may have paid it meanwhile.
            let paid = matches!(
                payment_state(&state, id).await?,
                Some((domain::PaymentStatus::Paid, ..))
            );
            Ok(if paid {
                cashier_page(StatusCode::OK, PAID, &method, &payment_no, amount)
            } else {
                cashier_page(
                    StatusCode::CONFLICT,
                    "支付失败 Payment refused",
                    &method,
                    &payment_no,
                    amount,
                )
            })
        }
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "sandbox notification not delivered"
            );
            // Another opening of the page may have paid it meanwhile; otherwise nothing was paid
            // and the page can be opened again (409: a page, not a server error).
            let paid = matches!(
                payment_state(&state, id).await,
                Ok(Some((domain::PaymentStatus::Paid, ..)))
            );
            Ok(if paid {
                cashier_page(StatusCode::OK, PAID, &method, &payment_no, amount)
            } else {
                cashier_page(
                    StatusCode::CONFLICT,
                    "支付未完成 The sandbox provider could not reach mychat; open the page again",
                    &method,
                    &payment_no,
                    amount,
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_notification_verifies_and_an_altered_one_does_not() {
        let body =
            br#"{"payment_no":"PAY1","transaction_id":"T","amount":5000,"trade_state":"SUCCESS"}"#;
        let ts = Utc::now().timestamp().to_string();
        let sig = sandbox_sign("k", &ts, "n", body);
        let mut headers = HeaderMap::new();
        headers.insert("sandbox-timestamp", ts.parse().unwrap());
        headers.insert("sandbox-nonce", "n".parse().unwrap());
        headers.insert("sandbox-signature", sig.parse().unwrap());
        assert!(sandbox_verify("k", &headers, body).is_ok());
        assert!(sandbox_verify("other", &headers, body).is_err());
        assert!(sandbox_verify("k", &headers, &body[1..]).is_err());
    }
}
