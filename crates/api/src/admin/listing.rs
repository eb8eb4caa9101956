//! Typed building blocks of the admin API's business, finance, low-code and online replies and
//! requests:
//!
//! - [`Spread`]: the envelope whose `data` members MyChat's admin client also reads at the root
//!   (paged lists, contract a.3 / f.4, and the dashboard and finance figures);
//! - [`PageParams`]: `page` and `page_size` (alias `pageSize`), empty meaning "default";
//! - [`lenient`]: request fields as the admin client sends them (numbers as strings, `0`/`1` for
//!   booleans, text trimmed);
//! - [`parse_rows`] / [`parse_row`]: rows Postgres renders as JSON (`to_jsonb(t)::text`) read
//!   into their typed structs, so that the bytes the client gets (key order, number and
//!   timestamp forms) are Postgres's own.

use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;

use crate::admin::common::EventRef;
use crate::{empty_as_none, ApiError, AppState};

/// MyChat's success envelope with `data`'s members repeated at the root:
/// `{<data's members>…, code: 200, msg: "success", data}` (the admin client reads some of them
/// at the root, contract a.3 / f.4). The schema names `code`, `msg` and `data`; every member of
/// `data` is also present at the root, before `code`.
#[derive(Debug, Clone, ToSchema)]
pub struct Spread<D> {
    /// Always 200 on success.
    #[schema(example = 200)]
    pub code: u16,
    /// `"success"`.
    #[schema(example = "success")]
    pub msg: String,
    /// The operation's result (its members are repeated at the root).
    pub data: D,
}

impl<D: Serialize> Serialize for Spread<D> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeMap as _};
        let serde_json::Value::Object(members) =
            serde_json::to_value(&self.data).map_err(S::Error::custom)?
        else {
            return Err(S::Error::custom(
                "a spread envelope's data must be an object",
            ));
        };
        let mut map = serializer.serialize_map(Some(members.len() + 3))?;
        for (k, v) in &members {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry("code", &self.code)?;
        map.serialize_entry("msg", &self.msg)?;
        map.serialize_entry("data", &members)?;
        map.end()
    }
}

/// `data` in a [`Spread`] envelope.
pub fn spread<D>(data: D) -> Json<Spread<D>> {
    Json(Spread {
        code: 200,
        msg: "success".into(),
        data,
    })
}

/// The response part that points the audit row of this request at the event the command
/// committed (see [`crate::admin::guard`]); `None` for a command that committed nothing.
pub type Committed = Option<axum::Extension<EventRef>>;

/// The [`Committed`] part of event `seq` of `stream`.
pub fn committed(stream: &'static str, seq: Option<u64>) -> Committed {
    seq.map(|seq| axum::Extension(EventRef { stream, seq }))
}

/// A page of a list: `page` (1-based, default 1) and `page_size` (1–100; `pageSize` is the
/// admin client's spelling). An empty value means the default.
#[derive(Debug, Clone, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// The page, from 1 (default 1).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(minimum = 1)]
    #[validate(range(min = 1, message = "must be at least 1"))]
    pub page: Option<i64>,
    /// Rows per page, 1–100 (each list has its own default).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(minimum = 1, maximum = 100)]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
    /// Same as `page_size` (the admin client's spelling); `page_size` wins when both are sent.
    #[serde(default, rename = "pageSize", deserialize_with = "empty_as_none")]
    #[param(minimum = 1, maximum = 100)]
    pub page_size_alias: Option<i64>,
}

impl PageParams {
    /// `(limit, offset)` of the page, `default_size` rows when no size is given.
    ///
    /// # Errors
    /// 400 naming `page` or `page_size`.
    pub fn limits(&self, default_size: i64) -> Result<(i64, i64), ApiError> {
        self.validate()?;
        crate::paging(
            self.page,
            self.page_size.or(self.page_size_alias),
            default_size,
        )
    }
}

/// Reads a row rendered as JSON text by Postgres into `T`.
///
/// # Errors
/// 500 when the row does not have `T`'s shape (a programming error).
pub fn parse_row<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    serde_json::from_str(text).map_err(|e| {
        ApiError::internal(anyhow::anyhow!(
            "a row does not match {}: {e}",
            std::any::type_name::<T>()
        ))
    })
}

/// Runs a `SELECT <json text>` built by `qb` and reads each row into `T`.
///
/// # Errors
/// On a database error, or 500 when a row does not have `T`'s shape.
pub async fn parse_rows<T: DeserializeOwned>(
    state: &AppState,
    mut qb: QueryBuilder<'_, Postgres>,
) -> Result<Vec<T>, ApiError> {
    let rows: Vec<String> = qb.build_query_scalar().fetch_all(&state.db).await?;
    rows.iter().map(|s| parse_row(s)).collect()
}

/// One row (`sql` selects one JSON text with `$1` = `id`) as `T`, or 404 naming `what`.
///
/// # Errors
/// 404, a database error, or 500 when the row does not have `T`'s shape.
pub async fn one_row<T: DeserializeOwned>(
    state: &AppState,
    sql: &str,
    id: i64,
    what: &str,
) -> Result<T, ApiError> {
    let row: Option<String> = sqlx::query_scalar(sql)
        .bind(id)
        .fetch_optional(&state.db)
        .await?;
    parse_row(&row.ok_or_else(|| ApiError::not_found(what))?)
}

/// Request fields as MyChat's admin client sends them: a missing or `null` field is absent; an
/// integer may arrive as a numeric string (select boxes) and `""` means absent; a boolean may be
/// `0`/`1`; text is trimmed and a number is taken as its text. Use with `#[serde(default,
/// deserialize_with = "…")]` on an `Option` field.
pub mod lenient {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// An optional integer.
    ///
    /// # Errors
    /// "must be an integer" on any other value.
    pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        const MSG: &str = "must be an integer";
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| D::Error::custom(MSG)),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| D::Error::custom(MSG)),
            Some(Value::Bool(b)) => Ok(Some(i64::from(b))),
            Some(_) => Err(D::Error::custom(MSG)),
        }
    }

    /// An optional number.
    ///
    /// # Errors
    /// "must be a number" on any other value.
    pub fn num<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        const MSG: &str = "must be a number";
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| D::Error::custom(MSG)),
            Some(_) => Err(D::Error::custom(MSG)),
        }
    }

    /// An optional boolean (`true`/`false`, `0`/`1`).
    ///
    /// # Errors
    /// "must be a boolean" on any other value.
    pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::Number(n)) if n.as_i64() == Some(0) => Ok(Some(false)),
            Some(Value::Number(n)) if n.as_i64() == Some(1) => Ok(Some(true)),
            Some(_) => Err(D::Error::custom("must be a boolean")),
        }
    }

    /// An optional text, trimmed.
    ///
    /// # Errors
    /// "must be a string" on any other value.
    pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(D::Error::custom("must be a string")),
        }
    }
}

/// A validation error with `message` (what the client reads after the field's name).
pub fn invalid(code: &'static str, message: &'static str) -> validator::ValidationError {
    validator::ValidationError::new(code).with_message(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Figures {
        total: i64,
        amount: f64,
    }

    #[test]
    fn a_spread_envelope_has_data_members_at_the_root_first() {
        let body = serde_json::to_string(
            &spread(Figures {
                total: 2,
                amount: 1.5,
            })
            .0,
        )
        .unwrap();
        assert_eq!(
            body,
            r#"{"total":2,"amount":1.5,"code":200,"msg":"success","data":{"total":2,"amount":1.5}}"#
        );
    }

    #[test]
    fn lenient_fields_take_what_the_client_sends() {
        #[derive(Deserialize)]
        struct B {
            #[serde(default, deserialize_with = "lenient::int")]
            n: Option<i64>,
            #[serde(default, deserialize_with = "lenient::bool")]
            b: Option<bool>,
            #[serde(default, deserialize_with = "lenient::text")]
            t: Option<String>,
        }
        let b: B = serde_json::from_str(r#"{"n": "7", "b": 0, "t": " x "}"#).unwrap();
        assert_eq!(
            (b.n, b.b, b.t.as_deref()),
            (Some(7), Some(false), Some("x"))
        );
        let b: B = serde_json::from_str(r#"{"n": "", "t": null}"#).unwrap();
        assert_eq!((b.n, b.b, b.t), (None, None, None));
        assert!(serde_json::from_str::<B>(r#"{"n": "x"}"#).is_err());
    }
}
