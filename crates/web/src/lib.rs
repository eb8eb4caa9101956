//! What every HTTP service of mychat shares (the user API, the admin API and the WebSocket
//! gateway), so that none of them depends on another:
//!
//! - [`error`]: [`ApiError`], answered as MyChat's `{code, msg}` with the RFC 9457 problem
//!   members (`application/problem+json`); domain rejections map to 4xx.
//! - [`extract`]: [`Json`], [`Query`], [`Path`], [`Multipart`], whose rejections are
//!   [`ApiError`]s.
//! - [`envelope`]: the success envelope `{code: 200, msg, data}`.
//! - [`auth`]: JWTs, passwords, the [`auth::AuthUser`] extractor, the [`auth::TokenGate`]
//!   (revocations announced over NATS) and the login rate limits.
//! - [`observe`]: request ids as correlation ids, HTTP metrics and `/metrics`, security headers;
//!   [`command`]: the command metadata of a request (correlation, `Idempotency-Key`).
//! - [`cors`], [`paging`], [`money`] (the yuan ↔ fen edge), [`swagger`] (Swagger UI, vendored),
//!   [`text`] (rules on request text that `validator` lacks, documented by [`limits`]).
//! - [`gateway_bus`]: the subjects and bodies the admin API and the gateway exchange over NATS.
//! - [`registry`]: every process registered as a NATS micro service, and the live list of them.

pub mod auth;
pub mod command;
pub mod cors;
pub mod envelope;
pub mod error;
pub mod extract;
pub mod gateway_bus;
pub mod money;
pub mod observe;
pub mod paging;
pub mod registry;
pub mod swagger;
pub mod text;

pub use error::{ApiError, ApiResult, FieldError, Problem};
pub use extract::{Json, Multipart, Path, Query};
/// Documents a request type's `#[validate]` limits in its OpenAPI schema (see `web-macros`).
pub use web_macros::limits;
