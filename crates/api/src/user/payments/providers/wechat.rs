//! WeChat Pay API v3 payment notifications (`POST /api/payment/wechat/callback`).
//!
//! Verification, per WeChat Pay's "签名验证" and "回调报文解密" documents:
//! 1. headers `Wechatpay-Timestamp` (unix seconds, within 5 minutes), `Wechatpay-Nonce`,
//!    `Wechatpay-Signature` (base64), `Wechatpay-Serial` (must equal the configured platform
//!    certificate / public-key serial);
//! 2. the signature is SHA256withRSA (PKCS#1 v1.5) over `timestamp\nnonce\nbody\n` with the
//!    platform public key;
//! 3. `resource` (`algorithm` `AEAD_AES_256_GCM`) is decrypted with the APIv3 key, `nonce` and
//!    `associated_data`; the plaintext is the transaction: `mchid`, `appid`, `out_trade_no`
//!    (our `payment_no`), `transaction_id`, `trade_state`, `amount.total` (fen);
//! 4. `mchid` and `appid` must be ours, `trade_state` `SUCCESS`, and the amount the payment's.
//!
//! Reply as WeChat expects: HTTP 200 (empty body is enough; we send `{"code":"SUCCESS"}`) on
//! success, and 4xx/5xx with `{"code":"FAIL","message":…}` otherwise (WeChat then retries).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use rsa::RsaPublicKey;
use serde::Deserialize;
use sha2::Sha256;
use utoipa::ToSchema;

/// The merchant's WeChat Pay v3 settings.
#[derive(Clone)]
pub struct WechatConfig {
    pub mchid: String,
    pub appid: String,
    /// The 32-byte APIv3 key (AEAD_AES_256_GCM).
    pub api_v3_key: [u8; 32],
    /// Serial of the platform certificate / public key that signs notifications.
    pub platform_serial: String,
    pub platform_key: VerifyingKey<Sha256>,
}

impl WechatConfig {
    /// Settings from the merchant id, app id, APIv3 key (32 bytes), the platform serial and the
    /// platform public key (SPKI PEM, `-----BEGIN PUBLIC KEY-----`).
    ///
    /// # Errors
    /// A key of the wrong length or an unparsable PEM.
    pub fn new(
        mchid: String,
        appid: String,
        api_v3_key: &[u8],
        platform_serial: String,
        platform_public_key_pem: &str,
    ) -> anyhow::Result<Self> {
        let api_v3_key: [u8; 32] = api_v3_key
            .try_into()
            .map_err(|_| anyhow::anyhow!("the WeChat Pay APIv3 key must be 32 bytes"))?;
        let key = RsaPublicKey::from_public_key_pem(platform_public_key_pem)
            .map_err(|e| anyhow::anyhow!("WeChat Pay platform public key: {e}"))?;
        Ok(Self {
            mchid,
            appid,
            api_v3_key,
            platform_serial,
            platform_key: VerifyingKey::new(key),
        })
    }
}

/// The notification body (signed: `Wechatpay-Timestamp`, `Wechatpay-Nonce`,
/// `Wechatpay-Signature`, `Wechatpay-Serial` headers over the exact bytes).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = WechatNotification)]
pub struct Notification {
    /// The notification's id.
    pub id: String,
    /// `TRANSACTION.SUCCESS` for a payment; other events are acknowledged and ignored.
    #[schema(example = "TRANSACTION.SUCCESS")]
    pub event_type: String,
    pub resource: Resource,
}

/// The encrypted part of a notification.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Resource {
    /// `AEAD_AES_256_GCM`.
    #[schema(example = "AEAD_AES_256_GCM")]
    pub algorithm: String,
    /// The transaction, encrypted with the APIv3 key (base64).
    pub ciphertext: String,
    /// Authenticated data of the encryption.
    #[serde(default)]
    pub associated_data: String,
    /// The encryption's nonce.
    pub nonce: String,
}

/// The decrypted transaction (the fields we check).
#[derive(Debug, Deserialize)]
pub struct Transaction {
    pub mchid: String,
    pub appid: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub trade_state: String,
    pub amount: TransactionAmount,
}

/// `amount` of a transaction: `total` in fen.
#[derive(Debug, Deserialize)]
pub struct TransactionAmount {
    pub total: i64,
}

/// Why a notification was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("stale or invalid timestamp")]
    Stale,
    #[error("unknown platform serial")]
    WrongSerial,
    #[error("signature verification failed")]
    BadSignature,
    #[error("malformed notification: {0}")]
    Malformed(String),
    #[error("resource decryption failed")]
    Decrypt,
    #[error("notification is for another merchant or app")]
    WrongMerchant,
}

fn header<'a>(h: &'a HeaderMap, name: &'static str) -> Result<&'a str, VerifyError> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or(VerifyError::MissingHeader(name))
}

/// Verifies a notification's headers and signature, decrypts its resource and checks the
/// merchant. `now` is unix seconds.
///
/// # Errors
/// [`VerifyError`].
pub fn verify(
    config: &WechatConfig,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(Notification, Option<Transaction>), VerifyError> {
    let timestamp = header(headers, "wechatpay-timestamp")?;
    let nonce = header(headers, "wechatpay-nonce")?;
    let signature = header(headers, "wechatpay-signature")?;
    let serial = header(headers, "wechatpay-serial")?;
    let at: i64 = timestamp.parse().map_err(|_| VerifyError::Stale)?;
    if (now - at).abs() > 300 {
        return Err(VerifyError::Stale);
    }
    if serial != config.platform_serial {
        return Err(VerifyError::WrongSerial);
    }
    let signature = B64
        .decode(signature)
        .ok()
        .and_then(|s| Signature::try_from(s.as_slice()).ok())
        .ok_or(VerifyError::BadSignature)?;
    let mut message = Vec::with_capacity(body.len() + 64);
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(nonce.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(body);
    message.push(b'\n');
    config
        .platform_key
        .verify(&message, &signature)
        .map_err(|_| VerifyError::BadSignature)?;
    let notification: Notification =
        serde_json::from_slice(body).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    if notification.event_type != "TRANSACTION.SUCCESS" {
        return Ok((notification, None));
    }
    if notification.resource.algorithm != "AEAD_AES_256_GCM" {
        return Err(VerifyError::Malformed("algorithm".into()));
    }
    let plain = decrypt(&config.api_v3_key, &notification.resource)?;
    let txn: Transaction =
        serde_json::from_slice(&plain).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    if txn.mchid != config.mchid || txn.appid != config.appid {
        return Err(VerifyError::WrongMerchant);
    }
    Ok((notification, Some(txn)))
}

/// AEAD_AES_256_GCM decryption of a `resource` (ciphertext = base64 of ciphertext ‖ 16-byte tag).
///
/// # Errors
/// [`VerifyError::Decrypt`].
pub fn decrypt(key: &[u8; 32], resource: &Resource) -> Result<Vec<u8>, VerifyError> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| VerifyError::Decrypt)?;
    let data = B64
        .decode(&resource.ciphertext)
        .map_err(|_| VerifyError::Decrypt)?;
    if resource.nonce.len() != 12 {
        return Err(VerifyError::Decrypt);
    }
    cipher
        .decrypt(
            Nonce::from_slice(resource.nonce.as_bytes()),
            Payload {
                msg: &data,
                aad: resource.associated_data.as_bytes(),
            },
        )
        .map_err(|_| VerifyError::Decrypt)
}
