//! Alipay asynchronous notifications (`POST /api/payment/alipay/callback`).
//!
//! Verification, per Alipay's "异步通知验签" document: the body is
//! `application/x-www-form-urlencoded`; remove `sign` and `sign_type`, sort the remaining
//! parameters by name, join them as `k=v` with `&` (values URL-decoded, empty values kept out),
//! and verify `sign` (base64) as SHA256withRSA (`RSA2`) with Alipay's public key. Then:
//! `app_id` must be ours, `trade_status` `TRADE_SUCCESS` or `TRADE_FINISHED`, `out_trade_no` a
//! payment of ours and `total_amount` (yuan, two decimals) its amount.
//!
//! Reply: `text/plain` `success` (Alipay stops retrying) or `fail`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use rsa::RsaPublicKey;
use sha2::Sha256;
use utoipa::ToSchema;

/// The merchant's Alipay settings.
#[derive(Clone)]
pub struct AlipayConfig {
    pub app_id: String,
    pub alipay_key: VerifyingKey<Sha256>,
}

impl AlipayConfig {
    /// Settings from the app id and Alipay's public key (SPKI PEM).
    ///
    /// # Errors
    /// An unparsable PEM.
    pub fn new(app_id: String, alipay_public_key_pem: &str) -> anyhow::Result<Self> {
        let key = RsaPublicKey::from_public_key_pem(alipay_public_key_pem)
            .map_err(|e| anyhow::anyhow!("Alipay public key: {e}"))?;
        Ok(Self {
            app_id,
            alipay_key: VerifyingKey::new(key),
        })
    }
}

/// The string Alipay signs: the sorted parameters except `sign` / `sign_type`, `k=v&k=v`.
pub fn signing_string(params: &[(String, String)]) -> String {
    let mut kept: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, v)| k != "sign" && k != "sign_type" && !v.is_empty())
        .collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    kept.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A verified trade: what the notification says was paid.
#[derive(Debug, PartialEq, Eq)]
pub struct Trade {
    pub out_trade_no: String,
    pub trade_no: String,
    pub trade_status: String,
    /// Fen.
    pub total_amount: i64,
}

/// Why a notification was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing parameter {0}")]
    Missing(&'static str),
    #[error("sign_type must be RSA2")]
    SignType,
    #[error("signature verification failed")]
    BadSignature,
    #[error("notification is for another app")]
    WrongApp,
    #[error("total_amount is not a yuan amount")]
    BadAmount,
}

/// Parses `"12.34"` yuan into fen (at most two decimals).
pub fn yuan_to_fen(s: &str) -> Option<i64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    // At most 15 digits of yuan (the documented pattern): fen fit an `i64` with room to spare.
    if whole.is_empty()
        || whole.len() > 15
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 2
    {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac = format!("{frac:0<2}");
    Some(whole.parse::<i64>().ok()?.checked_mul(100)? + frac.parse::<i64>().ok()?)
}

/// A notification body (form-encoded) of the documented shape: its parameters and its trade.
/// Nothing is verified yet.
///
/// # Errors
/// [`VerifyError::Missing`], [`VerifyError::SignType`], [`VerifyError::BadAmount`].
pub fn parse(body: &[u8]) -> Result<(Vec<(String, String)>, Trade), VerifyError> {
    let params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let get = |k: &'static str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
            .ok_or(VerifyError::Missing(k))
    };
    if get("sign_type")? != "RSA2" {
        return Err(VerifyError::SignType);
    }
    get("sign")?;
    get("app_id")?;
    let trade = Trade {
        out_trade_no: get("out_trade_no")?.to_string(),
        trade_no: get("trade_no")?.to_string(),
        trade_status: get("trade_status")?.to_string(),
        total_amount: yuan_to_fen(get("total_amount")?).ok_or(VerifyError::BadAmount)?,
    };
    Ok((params, trade))
}

/// Verifies the parameters [`parse`] read from a notification: its signature and app id.
///
/// # Errors
/// [`VerifyError::BadSignature`], [`VerifyError::WrongApp`].
pub fn verify(config: &AlipayConfig, params: &[(String, String)]) -> Result<(), VerifyError> {
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map_or("", |(_, v)| v.as_str())
    };
    let signature = B64
        .decode(get("sign"))
        .ok()
        .and_then(|s| Signature::try_from(s.as_slice()).ok())
        .ok_or(VerifyError::BadSignature)?;
    config
        .alipay_key
        .verify(signing_string(params).as_bytes(), &signature)
        .map_err(|_| VerifyError::BadSignature)?;
    if get("app_id") != config.app_id {
        return Err(VerifyError::WrongApp);
    }
    Ok(())
}

/// An Alipay asynchronous notification (`application/x-www-form-urlencoded`; the fields mychat
/// checks, among others Alipay sends, all covered by `sign`).
#[derive(Debug, ToSchema)]
#[schema(as = AlipayNotification)]
#[allow(dead_code)]
pub struct Notification {
    /// mychat's `payment_no`.
    #[schema(min_length = 1)]
    out_trade_no: String,
    /// Alipay's trade number.
    #[schema(min_length = 1)]
    trade_no: String,
    /// `TRADE_SUCCESS` or `TRADE_FINISHED` for a payment; others are acknowledged and ignored.
    #[schema(example = "TRADE_SUCCESS", min_length = 1)]
    trade_status: String,
    /// Yuan, two decimals at most.
    #[schema(example = "12.34", pattern = r"^[0-9]{1,15}(?:\.[0-9]{0,2})?$")]
    total_amount: String,
    /// mychat's Alipay app id.
    #[schema(min_length = 1)]
    app_id: String,
    /// Base64 SHA256withRSA signature over the sorted parameters.
    #[schema(min_length = 1)]
    sign: String,
    /// `RSA2`.
    #[schema(example = "RSA2", pattern = "^RSA2$")]
    sign_type: String,
}

/// A `text/plain` reply (Alipay reads `success` or `fail`).
pub fn text(body: &'static str) -> Response {
    text_with(StatusCode::OK, body)
}

/// A `text/plain` reply with `status` (Alipay reads only the body; the status tells a person or
/// a monitor why it was refused).
pub fn text_with(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_strings_become_fen() {
        assert_eq!(yuan_to_fen("12.34"), Some(1234));
        assert_eq!(yuan_to_fen("12.3"), Some(1230));
        assert_eq!(yuan_to_fen("12"), Some(1200));
        assert_eq!(yuan_to_fen("12.345"), None);
        assert_eq!(yuan_to_fen("-1"), None);
        assert_eq!(yuan_to_fen("1e3"), None);
    }

    #[test]
    fn the_signing_string_is_sorted_and_leaves_out_the_signature() {
        let p = |k: &str, v: &str| (k.to_string(), v.to_string());
        let params = vec![
            p("b", "2"),
            p("sign", "x"),
            p("a", "1"),
            p("sign_type", "RSA2"),
            p("c", ""),
        ];
        assert_eq!(signing_string(&params), "a=1&b=2");
    }
}
