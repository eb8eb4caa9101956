//! Helpers shared by the admin-API modules: the authenticated [`Caller`] that the RBAC guard
//! puts in the request, the business day, typed rows rendered by Postgres (`to_jsonb(row)`, read
//! into structs whose fields keep Postgres' key order), typed lists ([`Listed`]), lenient field
//! readers for what the admin client sends, the audit row's event reference, and `LIKE` escaping.
//! Updates are typed per area (an `Option` per column, named in fixed SQL): no column name ever
//! comes from a request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde_json::Value;
use sqlx::{Postgres, QueryBuilder};

use crate::{ApiError, AppState};

/// The business calendar ([`crate::ApiSettings::business_zone`], default Asia/Shanghai): every
/// admin figure counts days, weeks, months and years in it — "today", date ranges, series and
/// reports — so that two screens asked about the same dates add up the same events.
#[derive(Debug, Clone, Copy)]
pub struct BusinessDays(pub chrono_tz::Tz);

impl BusinessDays {
    /// The calendar of the admin API's settings.
    pub fn of(state: &AppState) -> Self {
        Self(state.settings.business_zone)
    }
    /// The zone's IANA name, for SQL's `AT TIME ZONE $n` (PostgreSQL knows the same names).
    pub fn zone_name(&self) -> &'static str {
        self.0.name()
    }
    /// Today's date in the business zone.
    pub fn today(&self) -> chrono::NaiveDate {
        chrono::Utc::now().with_timezone(&self.0).date_naive()
    }
    /// The instant (UTC) business day `day` starts: its local midnight (in a zone whose clocks
    /// skip midnight, the first instant of the day).
    pub fn start_of(&self, day: chrono::NaiveDate) -> chrono::DateTime<chrono::Utc> {
        use chrono::TimeZone as _;
        let midnight = day.and_time(chrono::NaiveTime::MIN);
        (0..=3)
            .find_map(|h| {
                self.0
                    .from_local_datetime(&(midnight + chrono::Duration::hours(h)))
                    .earliest()
            })
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_else(|| midnight.and_utc())
    }
    /// The first day of `day`'s month.
    pub fn month_of(day: chrono::NaiveDate) -> chrono::NaiveDate {
        day.with_day0(0).unwrap_or(day)
    }
}

use chrono::Datelike as _;

/// The administrator the RBAC guard ([`crate::admin::guard`]) authenticated and authorised for
/// this request, with the permission codes of their role. Only the guard creates it: a handler
/// reached without the guard fails closed with 401.
#[derive(Debug, Clone)]
pub struct Caller {
    pub admin_id: i64,
    pub username: String,
    /// The role code (`super_admin`, `admin`, or a role created in the RBAC screens).
    pub role: String,
    /// The role's enabled permission codes (every code for `super_admin`).
    pub permissions: Vec<String>,
    /// The token's id (`jti`): revoked on logout.
    pub jti: String,
    /// The token's expiry, unix seconds (an API key: its expiry, 0 when it has none).
    pub expires_at: i64,
    /// The API key that authenticated the request, if it was a key (then `admin_id` is the
    /// administrator who issued it, `role` is `api_key` and `permissions` are its scopes).
    pub api_key: Option<KeyActor>,
}

/// The API key a request acted with: named in the audit log and as the events' actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyActor {
    /// The key's id.
    pub id: i64,
    /// The key's name.
    pub name: String,
}

impl Caller {
    /// The actor of the commands this caller issues: the API key (`apikey:<id>`) when a key
    /// authenticated the request, else the administrator (`admin:<id>`).
    pub fn actor(&self) -> eventstore::Actor {
        match &self.api_key {
            Some(k) => eventstore::Actor {
                kind: "apikey".into(),
                id: k.id,
            },
            None => eventstore::Actor::admin(self.admin_id),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))
    }
}

pub use web::error::unique_violation;

/// Runs a `SELECT count(*)` built by `qb`.
///
/// # Errors
/// On a database error.
pub async fn count(state: &AppState, mut qb: QueryBuilder<'_, Postgres>) -> Result<i64, ApiError> {
    Ok(qb.build_query_scalar().fetch_one(&state.db).await?)
}

/// The event an admin command committed: its stream and stream sequence (a chat record: its
/// position in its chat stream, which `eventstore::chat_read::record_at` reads). A handler
/// attaches it to its response ([`with_event`]); the RBAC guard's audit row then points at that
/// event (the event carries the actor in its envelope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef {
    /// `EVENTS` or a chat stream (`CHAT_<k>`, the legacy `CHAT`).
    pub stream: &'static str,
    /// Its stream sequence (`EVENTS`), or position (a chat stream).
    pub seq: u64,
}

/// `body` as a response carrying the [`EventRef`] of the committed event, if any (`None` = the
/// command was a no-op).
pub fn with_event(
    body: impl axum::response::IntoResponse,
    stream: &'static str,
    seq: Option<u64>,
) -> axum::response::Response {
    let mut response = body.into_response();
    if let Some(seq) = seq {
        response.extensions_mut().insert(EventRef { stream, seq });
    }
    response
}

/// A typed answer carrying the [`EventRef`] of the event its command committed (see
/// [`with_event`]); `None` when the command was a no-op.
#[derive(Debug)]
pub struct Evented<T> {
    /// The answer.
    pub body: axum::Json<T>,
    /// The committed event.
    pub event: Option<EventRef>,
}

impl<T> Evented<T> {
    /// `body`, pointing at stream sequence `seq` of `stream`.
    pub fn new(body: axum::Json<T>, stream: &'static str, seq: Option<u64>) -> Self {
        Self {
            body,
            event: seq.map(|seq| EventRef { stream, seq }),
        }
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Evented<T> {
    fn into_response(self) -> axum::response::Response {
        let mut response = self.body.into_response();
        if let Some(e) = self.event {
            response.extensions_mut().insert(e);
        }
        response
    }
}

/// An `ILIKE` pattern matching `text` anywhere, literally: `%`, `_` and `\` in the text are
/// escaped (a search for `%` finds a literal `%`, not every row).
pub fn contains_pattern(text: &str) -> String {
    format!(
        "%{}%",
        text.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}

// ---- typed rows, lists and request fields --------------------------------------------------------

/// A row Postgres rendered as JSON (`to_jsonb(t)::text`) as the typed `T`, without the columns in
/// `hidden` (secrets such as `password_hash`; `T` has no field for them).
///
/// `T` declares its fields in the order Postgres writes a `jsonb` object's keys (shorter keys
/// first, then bytewise), so the response is the row exactly as the untyped handler sent it;
/// debug builds check that, key for key and byte for byte, on every row.
///
/// # Errors
/// 500 when the row does not fit `T`.
pub fn typed_row<T: serde::de::DeserializeOwned + serde::Serialize>(
    text: &str,
    hidden: &[&str],
) -> Result<T, ApiError> {
    let row: T = serde_json::from_str(text)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("row shape: {e}")))?;
    // Debug builds check the wire: the typed row serializes as the row Postgres rendered, less
    // the columns the answer hides (a release build parses the text once, straight into `T`).
    #[cfg(debug_assertions)]
    {
        let mut value = parse(text);
        if let Some(m) = value.as_object_mut() {
            for h in hidden {
                m.shift_remove(*h);
            }
        }
        debug_assert_eq!(
            serde_json::to_string(&row).ok(),
            serde_json::to_string(&value).ok(),
            "a typed row serializes as the row Postgres rendered"
        );
    }
    #[cfg(not(debug_assertions))]
    let _ = hidden;
    Ok(row)
}

/// Runs a `SELECT <json text>` built by `qb` and types each row ([`typed_row`]).
///
/// # Errors
/// On a database error or a row that does not fit `T`.
pub async fn typed_rows<T: serde::de::DeserializeOwned + serde::Serialize>(
    state: &AppState,
    mut qb: QueryBuilder<'_, Postgres>,
) -> Result<Vec<T>, ApiError> {
    let rows: Vec<String> = qb.build_query_scalar().fetch_all(&state.db).await?;
    rows.iter().map(|s| typed_row(s, &[])).collect()
}

/// One page of a filtered list and the filter's total, with the same `filter` for both:
/// `SELECT to_jsonb(t)::text FROM (SELECT <cols> FROM <from> … ORDER BY <order_by> LIMIT …
/// OFFSET …) t` and `SELECT count(*) FROM <from> …`. `cols`, `from` and `order_by` are the caller's
/// constants (never request input); `filter` appends the `WHERE` clause with bound values.
///
/// # Errors
/// A database error, or 500 when a row does not have `T`'s shape.
pub async fn page_rows<T: serde::de::DeserializeOwned + serde::Serialize>(
    state: &AppState,
    cols: &'static str,
    from: &'static str,
    filter: impl Fn(&mut QueryBuilder<'_, Postgres>),
    order_by: &'static str,
    limit: i64,
    offset: i64,
) -> Result<(Vec<T>, i64), ApiError> {
    let mut qb = QueryBuilder::new(format!(
        "SELECT to_jsonb(t)::text FROM (SELECT {cols} FROM {from}"
    ));
    filter(&mut qb);
    qb.push(format!(" ORDER BY {order_by} LIMIT "))
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset)
        .push(") t");
    let list = typed_rows(state, qb).await?;
    let mut cq = QueryBuilder::new(format!("SELECT count(*) FROM {from}"));
    filter(&mut cq);
    let total: i64 = cq.build_query_scalar().fetch_one(&state.db).await?;
    Ok((list, total))
}

/// One row (`sql` selects its JSON text with the id as `$1`) typed, or 404 naming `what`.
///
/// # Errors
/// 404, a database error or a row that does not fit `T`.
pub async fn typed_one<T: serde::de::DeserializeOwned + serde::Serialize>(
    state: &AppState,
    sql: &str,
    id: i64,
    what: &str,
) -> Result<T, ApiError> {
    let row: Option<String> = sqlx::query_scalar(sql)
        .bind(id)
        .fetch_optional(&state.db)
        .await?;
    typed_row(&row.ok_or_else(|| ApiError::not_found(what))?, &[])
}

/// A list answer as MyChat's admin client reads it: the page (`{<key>: rows, list: rows, total,
/// …}`) both at the root and in `data` (contract a.3, f.4). The root carries the page's members
/// first, then `code`, `msg`, `data`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Listed<L> {
    /// The page's members, also at the root.
    #[serde(flatten)]
    pub root: L,
    /// Always 200 on success.
    #[schema(example = 200)]
    pub code: u16,
    /// `"success"`.
    pub msg: String,
    /// The page.
    pub data: L,
}

/// The [`Listed`] answer for `page` (the typed `list_envelope`).
pub fn listed<L: Clone>(page: L) -> axum::Json<Listed<L>> {
    axum::Json(Listed {
        root: page.clone(),
        code: 200,
        msg: "success".to_string(),
        data: page,
    })
}

/// A paged admin list's query: `page`, `page_size` (alias `pageSize`), `keyword`, `status`; each
/// may be sent as `""`, meaning "default" / "no filter".
#[web::limits]
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams, validator::Validate)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1-based page (default 1).
    #[serde(default, deserialize_with = "web::paging::empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Rows per page, 1 to 100 (default 20).
    #[serde(default, deserialize_with = "web::paging::empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
    /// Alias of `page_size` (the client sends either).
    #[serde(
        default,
        rename = "pageSize",
        deserialize_with = "web::paging::empty_as_none"
    )]
    #[param(rename = "pageSize", minimum = 1, maximum = 100)]
    pub page_size_alias: Option<i64>,
    /// Matched anywhere in the list's text columns, literally (`%` and `_` are not wildcards).
    #[serde(default)]
    pub keyword: Option<String>,
    /// Only rows with this status (each list's own codes, all within 0–9).
    #[serde(default, deserialize_with = "web::paging::empty_as_none")]
    #[validate(range(min = 0, max = 9, message = "must be between 0 and 9"))]
    pub status: Option<i16>,
}

impl ListQuery {
    /// `(limit, offset, page, page_size)` (page size 1..=100, default `default_size`).
    ///
    /// # Errors
    /// 400 naming `page` or `page_size`.
    pub fn paging(&self, default_size: i64) -> Result<(i64, i64, i64, i64), ApiError> {
        validator::Validate::validate(self)?;
        web::paging::check_page_size_alias(self.page_size_alias)?;
        let (limit, offset) = crate::paging(
            self.page,
            self.page_size.or(self.page_size_alias),
            default_size,
        )?;
        Ok((limit, offset, self.page.unwrap_or(1), limit))
    }

    /// The `ILIKE` pattern of a non-empty `keyword` ([`contains_pattern`]).
    pub fn keyword_pattern(&self) -> Option<String> {
        self.keyword
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(contains_pattern)
    }
}

/// Request-field readers as MyChat's admin client sends fields, for `#[serde(deserialize_with)]`
/// on `Option` fields: a missing or `null` field is absent, a present one is applied even when
/// it is a zero value (`status: 0`).
pub mod lenient {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// Text, as sent: not trimmed, so the limits the documents state (`maxLength`, `pattern`)
    /// hold for exactly what was sent and what is stored. (A number is refused like any other
    /// non-string, as the documents type these fields `string`, and as MyChat's Go backend
    /// refused it.)
    ///
    /// # Errors
    /// "must be a string" on any other type.
    pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(D::Error::custom("must be a string")),
        }
    }

    /// An integer: a JSON integer (or a float without a fraction) or a numeric string (a
    /// select's value); `""` is "not given". A boolean is refused (the documents type these
    /// fields `integer`). `T` is the field's integer type, whose range is checked.
    ///
    /// # Errors
    /// "must be an integer" otherwise, or for a value out of `T`'s range.
    pub fn int<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i64>,
    {
        let v = match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) if s.is_empty() => return Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            Some(Value::String(s)) => s.parse().ok(),
            Some(_) => None,
        };
        v.and_then(|v| T::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| D::Error::custom("must be an integer"))
    }

    /// A number; a numeric string is accepted, `""` is absent.
    ///
    /// # Errors
    /// "must be a number" otherwise.
    pub fn num<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        let bad = || D::Error::custom("must be a number");
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_f64().map(Some).ok_or_else(bad),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }
}

/// Parses JSON text produced by Postgres (`to_jsonb(...)::text`).
pub fn parse(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or(Value::Null)
}

#[cfg(test)]
/// `{code:200, msg, data:{<key>: list, list, total}, <key>: list, list, total}`: the list under
/// the key the server used and under the key the client reads (contract a.3, f.4), in `data` and
/// at the root.
pub fn list_envelope(key: &str, list: Vec<Value>, total: i64, extra: Value) -> axum::Json<Value> {
    let mut data = serde_json::Map::new();
    data.insert(key.to_string(), Value::Array(list.clone()));
    data.insert("list".into(), Value::Array(list));
    data.insert("total".into(), Value::from(total));
    if let Value::Object(e) = extra {
        data.extend(e);
    }
    let mut root = data.clone();
    root.insert("code".into(), Value::from(200));
    root.insert("msg".into(), Value::from("success"));
    root.insert("data".into(), Value::Object(data));
    axum::Json(Value::Object(root))
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Row {
        id: i64,
        name: String,
        price: serde_json::Number,
        created_at: String,
        deleted_at: Option<String>,
    }

    #[derive(Debug, Clone, Serialize)]
    struct Page {
        rows: Vec<Row>,
        list: Vec<Row>,
        total: i64,
        page: i64,
    }

    #[test]
    fn a_typed_list_is_byte_for_byte_the_untyped_one() {
        let text = r#"{"id": 7, "name": "x", "price": 1.00000000000000000000, "created_at": "2026-12-04T09:57:15.123456+00:00", "deleted_at": null}"#;
        let row: Row = typed_row(text, &[]).unwrap();
        let untyped = list_envelope("rows", vec![parse(text)], 1, json!({"page": 2}));
        let typed = listed(Page {
            rows: vec![row.clone()],
            list: vec![row],
            total: 1,
            page: 2,
        });
        assert_eq!(
            serde_json::to_string(&typed.0).unwrap(),
            serde_json::to_string(&untyped.0).unwrap()
        );
    }

    #[test]
    fn hidden_columns_are_left_out() {
        #[derive(Serialize, Deserialize)]
        struct Account {
            id: i64,
        }
        let a: Account =
            typed_row(r#"{"id": 1, "password_hash": "h"}"#, &["password_hash"]).unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"id":1}"#);
    }

    #[derive(Debug, Deserialize)]
    struct Fields {
        #[serde(default, deserialize_with = "lenient::text")]
        text: Option<String>,
        #[serde(default, deserialize_with = "lenient::int")]
        int: Option<i64>,
        #[serde(default, deserialize_with = "lenient::num")]
        num: Option<f64>,
    }

    #[test]
    fn request_fields_read_as_the_client_sends_them() {
        let f: Fields =
            serde_json::from_value(json!({"text": "12", "int": "3", "num": "1.5"})).unwrap();
        assert_eq!(
            (f.text.as_deref(), f.int, f.num),
            (Some("12"), Some(3), Some(1.5))
        );
        let f: Fields =
            serde_json::from_value(json!({"text": " a ", "int": 0, "num": ""})).unwrap();
        assert_eq!(
            (f.text.as_deref(), f.int, f.num),
            (Some(" a "), Some(0), None),
            "text is taken as sent, not trimmed"
        );
        let f: Fields = serde_json::from_value(json!({"int": null})).unwrap();
        assert_eq!((f.text, f.int, f.num), (None, None, None));
        // Text is a string, as documented: a number is refused.
        assert!(serde_json::from_value::<Fields>(json!({"text": 12})).is_err());
        // Only "" is "not given"; other white space is not a number.
        assert!(serde_json::from_value::<Fields>(json!({"int": "\t"})).is_err());
        assert!(serde_json::from_value::<Fields>(json!({"num": " "})).is_err());
        let e = web::extract::parse_json::<Fields>(br#"{"int": "x"}"#).unwrap_err();
        assert!(
            e.msg.contains("int") && e.msg.contains("must be an integer"),
            "{}",
            e.msg
        );
    }
}
