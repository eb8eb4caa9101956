//! Settings of the complete user API that the skeleton's [`crate::ApiSettings`] does not carry:
//! where uploads live, the payment providers offered and their verification keys, whether the
//! sandbox provider is enabled, the login rate limits and the refresh-token lifetime. Handlers
//! reach it as `Extension<Arc<UserApi>>`, added by [`crate::user_router_with`].
//!
//! The binary builds it from its settings (`[payments]`, `upload_dir`); this crate reads no
//! environment. Payments fail closed: the sandbox is off unless enabled, a method that is not
//! offered, or offered without credentials while the sandbox is off, is refused
//! ([`UserApi::check_method`]), and the sandbox's routes do not exist while it is off.

use std::path::PathBuf;
use std::sync::Arc;

use crate::user::payments::providers::alipay::AlipayConfig;
use crate::user::payments::providers::wechat::WechatConfig;

pub use web::auth::{ClientIp, LoginLimits};

/// See the module documentation.
#[derive(Clone)]
pub struct UserApiConfig {
    /// Directory that `/uploads/...` is served from.
    pub upload_dir: PathBuf,
    pub wechat: Option<WechatConfig>,
    pub alipay: Option<AlipayConfig>,
    pub login_limits: LoginLimits,
    /// Refresh-token lifetime, seconds (default 30 days).
    pub refresh_ttl_seconds: i64,
    /// Whether the sandbox provider is enabled (default **false**): its cashier page and
    /// callback exist, the `sandbox` method is offered, and an offered provider without keys
    /// runs in sandbox mode. It never captures a `wechat` / `alipay` payment whose real provider
    /// is configured.
    pub sandbox_payments: bool,
    /// The real providers offered (`wechat`, `alipay`; default both). A payment or recharge
    /// with another method is refused naming `payment_method`.
    pub methods: Vec<String>,
}

impl UserApiConfig {
    /// Defaults with `upload_dir`.
    pub fn new(upload_dir: PathBuf) -> Self {
        Self {
            upload_dir,
            wechat: None,
            alipay: None,
            login_limits: LoginLimits::default(),
            refresh_ttl_seconds: 30 * 24 * 3600,
            sandbox_payments: false,
            methods: vec!["wechat".into(), "alipay".into()],
        }
    }
}

/// The running user API's extras: its config and its rate limiters.
pub struct UserApi {
    pub config: UserApiConfig,
    /// The sandbox's signing side of `wechat` / `alipay` running in sandbox mode.
    pub sandbox: crate::user::payments::providers::sandbox::SandboxProviders,
    /// Login attempts per username and per client IP.
    pub logins: web::auth::LoginLimiter,
}

impl UserApi {
    /// The limiters of `config.login_limits` (governor's GCRA, in memory per node).
    pub fn new(config: UserApiConfig) -> Arc<Self> {
        Self::build(
            config,
            crate::user::payments::providers::sandbox::SandboxProviders {
                wechat: None,
                alipay: None,
            },
        )
    }

    /// Like [`UserApi::new`], and when the sandbox provider is on, `wechat` / `alipay` without
    /// real keys run in sandbox mode with keys derived from `sandbox_secret`
    /// ([`crate::user::payments::providers::sandbox`]).
    ///
    /// # Errors
    /// Only if key generation fails.
    pub fn with_sandbox(
        mut config: UserApiConfig,
        sandbox_secret: &str,
    ) -> anyhow::Result<Arc<Self>> {
        use crate::user::payments::providers::sandbox;
        let mut providers = sandbox::SandboxProviders {
            wechat: None,
            alipay: None,
        };
        if config.sandbox_payments && config.wechat.is_none() {
            let (verify, signer, key) = sandbox::wechat(sandbox_secret)?;
            config.wechat = Some(verify);
            providers.wechat = Some((signer, key));
        }
        if config.sandbox_payments && config.alipay.is_none() {
            let (verify, signer) = sandbox::alipay(sandbox_secret)?;
            config.alipay = Some(verify);
            providers.alipay = Some(signer);
        }
        Ok(Self::build(config, providers))
    }

    /// Whether payment `method` may be used on this server.
    ///
    /// # Errors
    /// 400 naming `payment_method` when the method is unknown; 422 when it is not offered, or
    /// offered without credentials while the sandbox is off (payments fail closed).
    pub fn check_method(&self, method: &str) -> Result<(), crate::ApiError> {
        let c = &self.config;
        let available = match method {
            "sandbox" => c.sandbox_payments,
            "wechat" => c.methods.iter().any(|m| m == "wechat") && c.wechat.is_some(),
            "alipay" => c.methods.iter().any(|m| m == "alipay") && c.alipay.is_some(),
            _ => {
                return Err(crate::ApiError::field(
                    "payment_method",
                    "one of sandbox, wechat, alipay",
                ))
            }
        };
        if available {
            Ok(())
        } else {
            // A documented method this server does not offer: its configuration refuses it.
            Err(crate::ApiError::unprocessable(
                "payment_method",
                format!("{method} payments are not available on this server"),
            ))
        }
    }

    fn build(
        config: UserApiConfig,
        sandbox: crate::user::payments::providers::sandbox::SandboxProviders,
    ) -> Arc<Self> {
        Arc::new(Self {
            sandbox,
            logins: web::auth::LoginLimiter::new(config.login_limits),
            config,
        })
    }
}
