//! What every HTTP service of mychat does for observability and hardening.
//!
//! - **Request id** ([`request_id`]): each request gets a correlation id, the client's
//!   `X-Request-Id` when it is a sane one (1..=128 visible ASCII characters), else a fresh UUID v7.
//!   It is written back into the request's headers and made the ambient correlation id
//!   ([`eventstore::bus::with_correlation`]), so every command the request runs carries it as its
//!   `correlation_id`, which the event store writes into every event's envelope; it is set
//!   on the response, and recorded on a `request` span that every log line of the request carries.
//! - **HTTP metrics** ([`http_metrics`]): `mychat_http_request_duration_seconds`, a histogram by
//!   `service`, `method`, `route` (the route template, e.g. `/api/order/{id}`, never the raw path)
//!   and `status`.
//! - **`/metrics`** ([`metrics_router`]): the process's metrics in the Prometheus text format,
//!   from one global recorder ([`install_recorder`]; until it is installed the page is empty).
//! - **Runtime lateness** ([`METRIC_RUNTIME_LATENESS_SECONDS`]): how late a task that wakes every
//!   [`LATENESS_PERIOD`] finds itself, a histogram; a wake-up later than [`STALL_WARNING`] is
//!   also logged. Anything that stops the async runtime's workers (a blocking call on a worker,
//!   page faults, CPU starvation) shows here before anywhere else.
//! - **Security headers** ([`security_headers`]): `X-Content-Type-Options: nosniff`,
//!   `X-Frame-Options: DENY`, `Content-Security-Policy: frame-ancestors 'none'`,
//!   `Referrer-Policy: no-referrer`, `Strict-Transport-Security` (OWASP Secure Headers; browsers
//!   ignore HSTS on plain HTTP, so it only takes effect behind a TLS proxy).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower_http::set_header::SetResponseHeaderLayer;
use tracing::Instrument as _;

/// The request-id header (`X-Request-Id`).
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Metric: HTTP request latency in seconds, by `service`, `method`, `route`, `status`.
pub const METRIC_HTTP_SECONDS: &str = "mychat_http_request_duration_seconds";

/// Metric: how late the runtime's probe task woke, in seconds (a histogram; see the module
/// documentation).
pub const METRIC_RUNTIME_LATENESS_SECONDS: &str = "mychat_runtime_lateness_seconds";

/// How often the lateness probe wakes.
pub const LATENESS_PERIOD: Duration = Duration::from_millis(10);

/// A wake-up later than this is logged as a runtime stall.
pub const STALL_WARNING: Duration = Duration::from_millis(100);

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (idempotent) and starts its upkeep task on the
/// current tokio runtime. Returns the handle `/metrics` renders.
pub fn install_recorder() -> &'static PrometheusHandle {
    RECORDER.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            // Latencies: 0.5 ms .. 10 s.
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
            .expect("non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        let upkeep = handle.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    upkeep.run_upkeep();
                }
            });
            rt.spawn(probe_lateness());
        }
        handle
    })
}

/// Sleeps [`LATENESS_PERIOD`] at a time, forever, recording how late each wake-up is
/// ([`METRIC_RUNTIME_LATENESS_SECONDS`]; tokio's timer counts whole milliseconds, so up to
/// ~1 ms is the timer's own). A wake-up later than [`STALL_WARNING`] is logged.
async fn probe_lateness() {
    let histogram = metrics::histogram!(METRIC_RUNTIME_LATENESS_SECONDS);
    watch_lateness(LATENESS_PERIOD, |_, late| {
        histogram.record(late.as_secs_f64());
        if late > STALL_WARNING {
            tracing::warn!(
                late_ms = late.as_millis() as u64,
                "the async runtime stalled: a timer woke late"
            );
        }
    })
    .await;
}

/// The runtime's lateness, watched: sleeps `period` at a time on the current runtime, forever,
/// and calls `wake(due, late)` after each sleep with when it was due and how late it woke. A
/// late wake-up means the runtime's workers were busy, blocked or not scheduled.
pub async fn watch_lateness(period: Duration, mut wake: impl FnMut(Instant, Duration)) {
    loop {
        let due = Instant::now() + period;
        tokio::time::sleep_until(due.into()).await;
        wake(due, Instant::now().saturating_duration_since(due));
    }
}

/// The metrics of this process in the Prometheus text format (empty before
/// [`install_recorder`]).
pub fn render() -> String {
    RECORDER
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// `GET /metrics` → the Prometheus text of this process.
pub fn metrics_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/metrics", get(metrics_page))
}

async fn metrics_page() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(),
    )
        .into_response()
}

/// Whether a client's `X-Request-Id` is used as is: 1..=128 visible ASCII characters.
pub fn acceptable_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Middleware: see the module documentation.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let value = HeaderValue::from_str(&id).expect("visible ASCII");
    request.headers_mut().insert(REQUEST_ID, value.clone());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("", MatchedPath::as_str),
    );
    let mut response = eventstore::bus::with_correlation(id, next.run(request))
        .instrument(span)
        .await;
    response.headers_mut().insert(REQUEST_ID, value);
    response
}

/// Middleware (state: the service's name): records [`METRIC_HTTP_SECONDS`].
pub async fn http_metrics(
    State(service): State<&'static str>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    metrics::histogram!(
        METRIC_HTTP_SECONDS,
        "service" => service,
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// Adds the security headers (unless a handler set them) to every response of `router`.
pub fn security_headers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let set = |name: &'static str, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )
    };
    router
        .layer(set("x-content-type-options", "nosniff"))
        .layer(set("x-frame-options", "DENY"))
        .layer(set("content-security-policy", "frame-ancestors 'none'"))
        .layer(set("referrer-policy", "no-referrer"))
        .layer(set(
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        ))
}

/// Wraps a service's router with everything of this module: `/metrics`, the security headers,
/// the HTTP metrics (as `service`) and the request id (outermost, so that every log line and
/// every response of the service carries it).
pub fn wrap<S: Clone + Send + Sync + 'static>(
    service: &'static str,
    router: Router<S>,
) -> Router<S> {
    let router = router.merge(metrics_router());
    security_headers(router)
        .layer(axum::middleware::from_fn_with_state(service, http_metrics))
        .layer(axum::middleware::from_fn(request_id))
}
