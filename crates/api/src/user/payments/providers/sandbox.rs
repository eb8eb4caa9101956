//! Sandbox mode of `wechat` and `alipay` (DESIGN §5): when a provider's real keys are not
//! configured, mychat plays that provider with keys derived from the sandbox secret, and the
//! sandbox cashier (`GET /sandbox/cashier/{payment_no}`) sends a **provider-format, signed**
//! notification (WeChat Pay v3: RSA-signed headers and an AES-256-GCM resource; Alipay: RSA2
//! form) to the real callback routes, which verify it exactly like one from the provider.
//!
//! The keys are derived deterministically (ChaCha20 seeded with SHA-256 of the sandbox secret
//! and a purpose), so every user-API node sharing the secret verifies every other node's
//! sandbox notifications.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};

use super::alipay::AlipayConfig;
use super::wechat::WechatConfig;

/// Sandbox WeChat Pay merchant id.
pub const WECHAT_MCHID: &str = "sandbox-mch";
/// Sandbox WeChat Pay app id.
pub const WECHAT_APPID: &str = "sandbox-app";
/// Sandbox WeChat Pay platform serial.
pub const WECHAT_SERIAL: &str = "SANDBOX-PLATFORM";
/// Sandbox Alipay app id.
pub const ALIPAY_APP_ID: &str = "sandbox-alipay-app";

/// The sandbox's signing side of both providers.
pub struct SandboxProviders {
    /// WeChat Pay: the platform signing key and the APIv3 key (when WeChat runs in sandbox mode).
    pub wechat: Option<(SigningKey<Sha256>, [u8; 32])>,
    /// Alipay's signing key (when Alipay runs in sandbox mode).
    pub alipay: Option<SigningKey<Sha256>>,
}

fn seed(secret: &str, purpose: &str) -> [u8; 32] {
    Sha256::digest(format!("{purpose}\n{secret}").as_bytes()).into()
}

fn key(secret: &str, purpose: &str) -> anyhow::Result<(SigningKey<Sha256>, String)> {
    let mut rng = ChaCha20Rng::from_seed(seed(secret, purpose));
    let private = RsaPrivateKey::new(&mut rng, 2048)?;
    let pem = RsaPublicKey::from(&private)
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((SigningKey::new(private), pem))
}

/// Sandbox WeChat Pay: its verification config and its signing side.
///
/// # Errors
/// Only if key generation fails.
pub fn wechat(secret: &str) -> anyhow::Result<(WechatConfig, SigningKey<Sha256>, [u8; 32])> {
    let (signer, pem) = key(secret, "wechat-platform")?;
    let api_v3_key = seed(secret, "wechat-apiv3");
    let config = WechatConfig::new(
        WECHAT_MCHID.into(),
        WECHAT_APPID.into(),
        &api_v3_key,
        WECHAT_SERIAL.into(),
        &pem,
    )?;
    Ok((config, signer, api_v3_key))
}

/// Sandbox Alipay: its verification config and its signing key.
///
/// # Errors
/// Only if key generation fails.
pub fn alipay(secret: &str) -> anyhow::Result<(AlipayConfig, SigningKey<Sha256>)> {
    let (signer, pem) = key(secret, "alipay")?;
    Ok((AlipayConfig::new(ALIPAY_APP_ID.into(), &pem)?, signer))
}

/// HTTP headers as (name, value) pairs.
pub type Headers = Vec<(&'static str, String)>;

/// A WeChat Pay v3 `TRANSACTION.SUCCESS` notification as WeChat sends it: `(headers, body)`.
///
/// # Errors
/// Only if encryption fails.
pub fn wechat_notification(
    signer: &SigningKey<Sha256>,
    api_v3_key: &[u8; 32],
    payment_no: &str,
    transaction_id: &str,
    total_fen: i64,
) -> anyhow::Result<(Headers, Vec<u8>)> {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    let transaction = serde_json::json!({
        "mchid": WECHAT_MCHID, "appid": WECHAT_APPID, "out_trade_no": payment_no,
        "transaction_id": transaction_id, "trade_type": "NATIVE", "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功", "success_time": chrono::Utc::now().to_rfc3339(),
        "amount": { "total": total_fen, "payer_total": total_fen, "currency": "CNY" },
    });
    let nonce = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let cipher =
        aes_gcm::Aes256Gcm::new_from_slice(api_v3_key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ciphertext = cipher
        .encrypt(
            aes_gcm::Nonce::from_slice(nonce.as_bytes()),
            Payload {
                msg: transaction.to_string().as_bytes(),
                aad: b"transaction",
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let body = serde_json::to_vec(&serde_json::json!({
        "id": uuid::Uuid::new_v4().to_string(), "create_time": chrono::Utc::now().to_rfc3339(),
        "resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
        "resource": { "original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": B64.encode(ciphertext), "associated_data": "transaction", "nonce": nonce },
    }))?;
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let header_nonce = uuid::Uuid::new_v4().simple().to_string();
    let mut message = format!("{timestamp}\n{header_nonce}\n").into_bytes();
    message.extend_from_slice(&body);
    message.push(b'\n');
    let signature = B64.encode(signer.sign(&message).to_bytes());
    Ok((
        vec![
            ("wechatpay-timestamp", timestamp),
            ("wechatpay-nonce", header_nonce),
            ("wechatpay-signature", signature),
            ("wechatpay-serial", WECHAT_SERIAL.to_string()),
        ],
        body,
    ))
}

/// An Alipay `TRADE_SUCCESS` notification as Alipay posts it (form-encoded, RSA2-signed).
pub fn alipay_notification(
    signer: &SigningKey<Sha256>,
    payment_no: &str,
    trade_no: &str,
    total_fen: i64,
) -> String {
    let total = format!("{}.{:02}", total_fen / 100, total_fen % 100);
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let params: Vec<(String, String)> = [
        ("app_id", ALIPAY_APP_ID.to_string()),
        ("auth_app_id", ALIPAY_APP_ID.to_string()),
        ("charset", "utf-8".into()),
        ("gmt_create", now.clone()),
        ("notify_time", now),
        ("notify_type", "trade_status_sync".into()),
        ("notify_id", uuid::Uuid::new_v4().simple().to_string()),
        ("out_trade_no", payment_no.to_string()),
        ("trade_no", trade_no.to_string()),
        ("trade_status", "TRADE_SUCCESS".into()),
        ("total_amount", total.clone()),
        ("receipt_amount", total),
        ("version", "1.0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let sign = B64.encode(
        signer
            .sign(super::alipay::signing_string(&params).as_bytes())
            .to_bytes(),
    );
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &params {
        form.append_pair(k, v);
    }
    form.append_pair("sign", &sign);
    form.append_pair("sign_type", "RSA2");
    form.finish()
}
