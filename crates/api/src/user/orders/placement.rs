//! Orders: create (a command on the `Order` aggregate), get and list (from the `orders` read
//! model).

use axum::extract::State;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use domain::{Order, OrderCommand};
use eventstore::Actor;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::{Validate, ValidationError};
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;
use web::money::yuan_f64;

use crate::user::state::UserState;
use crate::{paging, ApiError, ApiJson, ApiPath, ApiQuery, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(list))
        .routes(routes!(get_one))
}

pub use web::command::request_meta;

/// The forms [`parse_schedule_time`] reads, as the document states them (`CreateOrder`'s
/// `schedule_time` pattern, checked equal by a test): RFC 3339 (with `T`, `t` or a space, any
/// fraction, `Z` or an offset), `YYYY-MM-DDTHH:mm:ss`, `YYYY-MM-DD HH:mm:ss`, `YYYY-MM-DD`.
pub const SCHEDULE_TIME_PATTERN: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}:[0-9]{2}|[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2}))?$";

/// Parses MyChat's `schedule_time` forms (contract b.1 #21): RFC 3339
/// (`2026-01-20T15:00:00+08:00`, the web client's form), `YYYY-MM-DDTHH:mm:ss`,
/// `YYYY-MM-DD HH:mm:ss` and `YYYY-MM-DD`. Times without an offset are China time (UTC+8).
///
/// # Errors
/// 400 naming `schedule_time` for text of none of these forms ([`SCHEDULE_TIME_PATTERN`]); 422
/// for one of them that names no instant (`2026-02-30`, `25:00:00`, an offset of 99 hours).
pub fn parse_schedule_time(s: &str) -> Result<DateTime<Utc>, ApiError> {
    if !SCHEDULE_TIME_FORMS.is_match(s) {
        return Err(ApiError::field("schedule_time", SCHEDULE_TIME_FORMS_TEXT));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let china = FixedOffset::east_opt(8 * 3600).expect("UTC+8");
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
        .or_else(|_| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight"))
        })
        .map_err(|_| ApiError::unprocessable("schedule_time", "names no date and time"))?;
    china
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| ApiError::unprocessable("schedule_time", "not a valid local time"))
}

static SCHEDULE_TIME_FORMS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(SCHEDULE_TIME_PATTERN).expect("SCHEDULE_TIME_PATTERN compiles")
});

const SCHEDULE_TIME_FORMS_TEXT: &str =
    "expected YYYY-MM-DDTHH:mm:ss+08:00, YYYY-MM-DDTHH:mm:ss, YYYY-MM-DD HH:mm:ss or YYYY-MM-DD";

/// The shape of `schedule_time` (a 400 when it is none of the forms); whether it names an
/// instant is [`parse_schedule_time`]'s (a 422).
fn schedule_time_rule(s: &str) -> Result<(), ValidationError> {
    if SCHEDULE_TIME_FORMS.is_match(s) {
        Ok(())
    } else {
        Err(ValidationError::new("schedule_time").with_message(SCHEDULE_TIME_FORMS_TEXT.into()))
    }
}

/// `POST /api/order/create` body. The duration's bounds are the `Order` aggregate's
/// (`domain::order::MIN_DURATION_MINUTES` and `MAX_DURATION_MINUTES`).
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct CreateOrder {
    /// The counselor to book.
    #[validate(range(min = 1, message = "must be a positive id"))]
    pub counselor_id: i64,
    /// Minutes, 10–180.
    #[validate(range(min = 10, max = 180, message = "must be between 10 and 180 minutes"))]
    pub duration: i64,
    /// `YYYY-MM-DDTHH:mm:ss+08:00` (RFC 3339), `YYYY-MM-DDTHH:mm:ss`, `YYYY-MM-DD HH:mm:ss` or
    /// `YYYY-MM-DD`; without an offset, China time (UTC+8).
    #[schema(
        example = "2026-01-20T15:00:00+08:00",
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}:[0-9]{2}|[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2}))?$"
    )]
    #[validate(custom(function = "schedule_time_rule"))]
    pub schedule_time: String,
    /// At most 500 characters.
    #[serde(default)]
    #[validate(length(max = 500, message = "at most 500 characters"))]
    pub notes: String,
}

/// The order just placed, awaiting payment.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderCreated {
    pub order_id: i64,
    pub order_no: String,
    /// `duration × price`, yuan.
    pub amount: f64,
    /// The same, fen.
    pub amount_fen: i64,
    /// Always 0 (awaiting payment).
    pub status: i16,
    /// When it was placed (RFC 3339; MyChat's spelling).
    pub create_at: DateTime<Utc>,
    /// The same.
    pub created_at: DateTime<Utc>,
}

/// `POST /api/order/create` → `{order_id, order_no, amount, amount_fen, status: 0, create_at}`.
/// The amount is `duration × the counselor's current price`, fixed in the order.
#[utoipa::path(
    post,
    path = "/api/order/create",
    operation_id = "create_order",
    tag = "orders",
    summary = "Place an order (amount = minutes × price)",
    security(("bearer" = [])),
    request_body = CreateOrder,
    responses(
        (status = 200, description = "Placed, awaiting payment", body = Envelope<OrderCreated>),
        (status = 400, description = "A field is not of the documented shape", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such counselor", body = Problem, content_type = "application/problem+json")
    )
)]
#[tracing::instrument(level = "debug", name = "order_create", skip_all)]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<CreateOrder>,
) -> Reply<OrderCreated> {
    req.validate()?;
    let schedule_time = parse_schedule_time(&req.schedule_time)?;
    let counselor = state
        .counselors
        .get(&state.db, req.counselor_id)
        .await?
        .ok_or_else(|| ApiError::not_found("counselor"))?;
    if counselor.status != 1 {
        return Err(ApiError::unprocessable(
            "counselor_id",
            "counselor is not available",
        ));
    }
    if counselor.user_id == Some(user.user_id) {
        return Err(ApiError::unprocessable(
            "counselor_id",
            "a counselor cannot order a session with themself",
        ));
    }
    let id = state
        .ids
        .next(&state.db, crate::app::ids::IdSequence::Orders)
        .await?;
    let now = Utc::now();
    let order_no = format!("ORD{}{}{id}", now.timestamp(), user.user_id);
    let command = OrderCommand::Place {
        order_no: order_no.clone(),
        user_id: user.user_id,
        counselor_id: req.counselor_id,
        duration_minutes: req.duration,
        price_per_minute: counselor.price_fen,
        schedule_time: Some(schedule_time),
        notes: req.notes,
        placed_at: now,
    };
    let meta = request_meta(&headers, Actor::user(user.user_id));
    let committed = state
        .bus
        .execute_new::<Order>(&id.to_string(), command, &meta)
        .await?;
    state.settle("orders", committed.stream_sequence).await;
    // A retried Idempotency-Key answers with the order its first attempt placed.
    let id: i64 = committed
        .aggregate_id
        .parse()
        .map_err(|_| anyhow::anyhow!("order id {}", committed.aggregate_id))?;
    let (order_no, amount) = match committed.events.first() {
        Some(domain::OrderEvent::OrderPlaced {
            order_no, amount, ..
        }) => (order_no.clone(), *amount),
        _ => {
            return Err(ApiError::internal(anyhow::anyhow!(
                "order {id}: no OrderPlaced"
            )))
        }
    };
    Ok(reply(OrderCreated {
        order_id: id,
        order_no,
        amount: yuan_f64(amount),
        amount_fen: amount,
        status: 0,
        create_at: now,
        created_at: now,
    }))
}

pub(crate) const ORDER_SELECT: &str = "SELECT o.*, u.username AS u_username, u.avatar AS u_avatar, \
     u.email AS u_email, u.phone AS u_phone, c.name AS c_name, c.avatar AS c_avatar, c.title AS c_title, \
     c.specialty AS c_specialty, c.price_fen AS c_price_fen, c.user_id AS c_user_id \
     FROM orders o JOIN users u ON u.id = o.user_id JOIN counselors c ON c.id = o.counselor_id";

/// The user who placed an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderUser {
    pub id: i64,
    pub username: String,
    pub avatar: String,
    pub email: String,
    pub phone: String,
}

/// The counselor booked by an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderCounselor {
    pub id: i64,
    pub name: String,
    pub avatar: String,
    pub title: String,
    pub specialty: String,
    /// The counselor's current price per minute, yuan.
    pub price: f64,
}

/// An order as the MyChat clients read it (contract b.2), with nested `user` and `counselor`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    pub id: i64,
    pub order_no: String,
    pub user_id: i64,
    pub counselor_id: i64,
    /// Minutes.
    pub duration: i32,
    /// Yuan.
    pub amount: f64,
    /// Fen.
    pub amount_fen: i64,
    /// The price per minute fixed in the order, yuan.
    pub price: f64,
    /// 0 awaiting payment, 1 paid, 2 completed, 3 cancelled, 4 refunded.
    #[schema(minimum = 0, maximum = 4)]
    pub status: i16,
    /// RFC 3339, `null` when none.
    pub schedule_time: Option<DateTime<Utc>>,
    pub notes: String,
    /// When it was paid (RFC 3339), `null` before.
    pub pay_time: Option<DateTime<Utc>>,
    /// Its payment, `null` before one is captured.
    pub payment_id: Option<i64>,
    /// Its chat session, `null` before one starts.
    pub session_id: Option<i64>,
    /// Whether its user has reviewed it.
    pub has_review: bool,
    /// RFC 3339.
    pub created_at: DateTime<Utc>,
    /// RFC 3339.
    pub updated_at: DateTime<Utc>,
    pub user: OrderUser,
    pub counselor: OrderCounselor,
}

impl OrderView {
    /// From a row of [`ORDER_SELECT`].
    pub fn from_row(row: &sqlx::postgres::PgRow) -> Self {
        let amount: i64 = row.get("amount_fen");
        Self {
            id: row.get("id"),
            order_no: row.get("order_no"),
            user_id: row.get("user_id"),
            counselor_id: row.get("counselor_id"),
            duration: row.get("duration"),
            amount: yuan_f64(amount),
            amount_fen: amount,
            price: yuan_f64(row.get("price_fen")),
            status: row.get("status"),
            schedule_time: row.get("schedule_time"),
            notes: row.get("notes"),
            pay_time: row.get("pay_time"),
            payment_id: row.get("payment_id"),
            session_id: row.get("session_id"),
            has_review: row.try_get::<bool, _>("has_review").unwrap_or(false),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
            user: OrderUser {
                id: row.get("user_id"),
                username: row.get("u_username"),
                avatar: row.get("u_avatar"),
                email: row.get("u_email"),
                phone: row.get("u_phone"),
            },
            counselor: OrderCounselor {
                id: row.get("counselor_id"),
                name: row.get("c_name"),
                avatar: row.get("c_avatar"),
                title: row.get("c_title"),
                specialty: row.get("c_specialty"),
                price: yuan_f64(row.get("c_price_fen")),
            },
        }
    }
}

/// `GET /api/order/:id` → the order; only its user or its counselor may read it (403 otherwise).
#[utoipa::path(
    get,
    path = "/api/order/{id}",
    tag = "orders",
    operation_id = "get_order",
    summary = "An order (its user or counselor)",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order", body = Envelope<OrderView>),
        (status = 403, description = "Not the caller's order", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> Reply<OrderView> {
    let row = sqlx::query(&format!("{ORDER_SELECT} WHERE o.id = $1"))
        .bind(id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    let counselor_user: Option<i64> = row.get("c_user_id");
    if row.get::<i64, _>("user_id") != user.user_id && counselor_user != Some(user.user_id) {
        return Err(ApiError::forbidden("not your order"));
    }
    Ok(reply(OrderView::from_row(&row)))
}

/// A list of orders; every parameter may be empty.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct OrderListQuery {
    /// Page number, from 1 (default 1).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[param(value_type = Option<i64>)]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Rows per page, 1–100 (default 10).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[param(value_type = Option<i64>)]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
    /// Only orders in this status (0–4); empty: all.
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[param(value_type = Option<i16>)]
    #[validate(range(min = 0, max = 4, message = "must be 0 to 4"))]
    pub status: Option<i16>,
}

/// `GET /api/order/list` query.
pub type ListQuery = OrderListQuery;

/// A page of orders.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderList {
    /// Newest first.
    pub orders: Vec<OrderView>,
    /// Matching orders in all pages.
    pub total: i64,
}

/// `GET /api/order/list` → `{orders, total}`: the caller's orders, newest first, optionally by
/// `status` (0–4).
#[utoipa::path(
    get,
    path = "/api/order/list",
    tag = "orders",
    operation_id = "list_orders",
    summary = "The caller's orders, newest first",
    security(("bearer" = [])),
    params(OrderListQuery),
    responses(
        (status = 200, description = "A page of orders", body = Envelope<OrderList>),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Reply<OrderList> {
    let (limit, offset) = paging(q.page, q.page_size, 10)?;
    q.validate()?;
    let rows = sqlx::query(&format!(
        "{ORDER_SELECT} WHERE o.user_id = $1 AND ($2::smallint IS NULL OR o.status = $2) \
         ORDER BY o.id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(user.user_id)
    .bind(q.status)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders WHERE user_id = $1 AND ($2::smallint IS NULL OR status = $2)",
    )
    .bind(user.user_id)
    .bind(q.status)
    .fetch_one(&state.db)
    .await?;
    let orders = rows.iter().map(OrderView::from_row).collect();
    Ok(reply(OrderList { orders, total }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schedule_time_form_of_the_contract_parses_to_the_same_instant() {
        let expected = parse_schedule_time("2026-01-20T15:00:00+08:00").unwrap();
        assert_eq!(
            parse_schedule_time("2026-01-20T15:00:00").unwrap(),
            expected
        );
        assert_eq!(
            parse_schedule_time("2026-01-20 15:00:00").unwrap(),
            expected
        );
        assert_eq!(
            parse_schedule_time("2026-01-20").unwrap(),
            parse_schedule_time("2026-01-20T00:00:00+08:00").unwrap()
        );
        assert!(parse_schedule_time("\"2026-01-20\"").is_err());
        assert!(parse_schedule_time("tomorrow").is_err());
        assert_eq!(parse_schedule_time("tomorrow").unwrap_err().status, 400);
        // Of the documented shape, yet no instant: a 422.
        for s in [
            "2026-02-30",
            "2026-01-20T25:00:00",
            "2026-01-20T15:00:00+99:00",
        ] {
            assert_eq!(parse_schedule_time(s).unwrap_err().status, 422, "{s}");
        }
    }

    #[test]
    fn the_documented_schedule_time_pattern_is_the_one_checked() {
        assert_eq!(
            crate::user::openapi::documented_pattern("CreateOrder", "schedule_time"),
            SCHEDULE_TIME_PATTERN
        );
    }

    #[test]
    fn the_documented_duration_bounds_are_the_aggregates() {
        let at = |duration| CreateOrder {
            counselor_id: 1,
            duration,
            schedule_time: "2026-01-20".into(),
            notes: String::new(),
        };
        for d in [
            domain::order::MIN_DURATION_MINUTES,
            domain::order::MAX_DURATION_MINUTES,
        ] {
            assert!(at(d).validate().is_ok(), "{d}");
        }
        for d in [
            domain::order::MIN_DURATION_MINUTES - 1,
            domain::order::MAX_DURATION_MINUTES + 1,
        ] {
            assert!(at(d).validate().is_err(), "{d}");
        }
    }
}
