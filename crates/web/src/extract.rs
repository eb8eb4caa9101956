//! The extractors every handler uses, whose rejections are [`ApiError`]s (so a bad request gets
//! the same `{code, msg}` problem body as any other refusal; a path that does not parse is a 404): [`Json`], [`Query`], [`Path`],
//! [`Multipart`].
//!
//! They carry axum's names on purpose: `#[utoipa::path]` recognises `Json<T>`, `Query<T>` and
//! `Path<T>` arguments by name and documents the request body (`T`'s schema), the query
//! parameters and the path parameters from the handler's signature, so a handler's input and its
//! documentation cannot drift apart.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};

/// A JSON body. Malformed JSON, a wrong type, a missing field or a value its type refuses (a
/// validated input type) is a 400 that names the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request("request body must be a JSON object"));
        }
        parse_json(&bytes).map(Json)
    }
}

/// Whether JSON text holds a string with a NUL character (the escape `\u0000`; a raw NUL byte is
/// not valid JSON). PostgreSQL cannot store NUL in `text` or `jsonb`, so such a body is refused
/// at the edge: once in an event it would stop the projections that store it.
pub fn has_nul_escape(json: &[u8]) -> bool {
    let mut backslashes = 0usize;
    for (i, &b) in json.iter().enumerate() {
        if b == b'\\' {
            backslashes += 1;
            continue;
        }
        if b == b'u' && backslashes % 2 == 1 && json.get(i + 1..i + 5) == Some(b"0000".as_slice()) {
            return true;
        }
        backslashes = 0;
    }
    false
}

/// Names the field a serde error is about: the path, or for "missing field `x`" the field `x`.
fn field_error(path: String, inner: &serde_json::Error) -> FieldError {
    let text = inner.to_string();
    let message = text.split(" at line ").next().unwrap_or(&text).to_string();
    let field = match message
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        Some(name) if path == "." || path.is_empty() => name.to_string(),
        Some(name) => format!("{path}.{name}"),
        None if path == "." => String::new(),
        None => path,
    };
    FieldError { field, message }
}

/// Parses a JSON body like [`Json`] does: a 400 naming the field on any mismatch.
///
/// Every body the APIs read is a JSON object (or `null` where a body is optional): a top-level
/// array is refused before serde, which would otherwise read it as the struct's fields in order.
///
/// # Errors
/// 400 for malformed JSON, an array, a wrong type, a missing field, a refused value, or a NUL
/// character in a string ([`has_nul_escape`]).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::bad_request("request body must be a JSON object"));
    }
    if has_nul_escape(bytes) {
        // Well-formed JSON of the documented shape, refused for what it holds: a 422.
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "text must not contain NUL characters (\\u0000)",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(de) {
        Ok(value) => Ok(value),
        // JSON Schema counts `2.0` as an integer (a number with a zero fractional part, JSON
        // Schema 2020-12 validation §6.1.1), serde does not: such a body is read again with its
        // integral numbers as integers. Only a refused body pays for the second parse.
        Err(e)
            if e.inner()
                .to_string()
                .starts_with("invalid type: floating point") =>
        {
            let mut value: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|e| body_error(String::new(), e))?;
            integral_numbers_as_integers(&mut value);
            serde_path_to_error::deserialize(value)
                .map_err(|e| body_error(e.path().to_string(), e.into_inner()))
        }
        Err(e) => Err(body_error(e.path().to_string(), e.into_inner())),
    }
}

/// The 400 of a body serde refused at `path`.
fn body_error(path: String, inner: serde_json::Error) -> ApiError {
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::bad_request(format!("malformed JSON: {inner}"));
    }
    let fe = field_error(path, &inner);
    if fe.field.is_empty() {
        return ApiError::bad_request(fe.message);
    }
    ApiError::invalid_field(fe)
}

/// Rewrites every number with a zero fractional part that fits an `i64` (`3.0`) as that integer.
fn integral_numbers_as_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64() {
                // The range check keeps the cast exact: every f64 in it converts without loss.
                if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 {
                    *value = serde_json::Value::from(f as i64);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

/// A multipart body; a request that is not one (no or a bad boundary) is a 400 rather than
/// axum's plain-text rejection.
pub struct Multipart(pub axum::extract::Multipart);

impl<S: Send + Sync> FromRequest<S> for Multipart {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::extract::Multipart::from_request(req, state)
            .await
            .map(Multipart)
            .map_err(|e| {
                ApiError::new(
                    e.status(),
                    format!("a multipart/form-data body is required: {}", e.body_text()),
                )
            })
    }
}

/// Query-string parameters; a bad one is a 400 naming it.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::bad_request(format!("invalid query string: {}", e.body_text()))
    }
}

/// Path parameters; one that does not parse (e.g. `/api/order/abc`) is a 404: the path names no
/// resource.
///
/// An integer written with a zero fraction (`/api/order/3.0`) is read as that integer: the
/// documents type ids as JSON Schema integers, and JSON Schema counts `3.0` as one (as
/// [`parse_json`] does for bodies).
#[derive(Debug, Clone, Copy)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => {
                let raw = axum::extract::RawPathParams::from_request_parts(parts, state)
                    .await
                    .ok();
                raw.and_then(|raw| integral_path_params(&raw))
                    .map(Path)
                    .ok_or_else(|| rejection.into())
            }
        }
    }
}

/// `raw` read as `T` with every value that is an integer written with a zero fraction (`3.0`)
/// taken as that integer; `None` when there is no such value or `T` still refuses them.
///
/// axum's own path deserializer (which parses text into numbers) is private, so the values are
/// tried as JSON: a zero-fraction value or a plain integer as a number or as text (whichever `T`
/// takes), anything else as text; at most 2^n shapes for n ≤ 4 parameters.
fn integral_path_params<T: DeserializeOwned>(raw: &axum::extract::RawPathParams) -> Option<T> {
    let mut any = false;
    let choices: Vec<(String, Vec<serde_json::Value>)> = raw
        .iter()
        .map(|(name, value)| {
            let number = |whole: &str| {
                whole
                    .parse::<i64>()
                    .map(serde_json::Value::from)
                    .or_else(|_| whole.parse::<u64>().map(serde_json::Value::from))
                    .ok()
            };
            let zero_fraction = value
                .split_once('.')
                .filter(|(_, f)| !f.is_empty() && f.bytes().all(|b| b == b'0'))
                .and_then(|(whole, _)| number(whole));
            let options = match (zero_fraction, number(value)) {
                (Some(n), _) => {
                    any = true;
                    vec![n, value.into()]
                }
                (None, Some(n)) => vec![n, value.into()],
                (None, None) => vec![value.into()],
            };
            (name.to_string(), options)
        })
        .collect();
    if !any || choices.len() > 4 {
        return None;
    }
    let mut picks = vec![0usize; choices.len()];
    loop {
        let values: Vec<(String, serde_json::Value)> = choices
            .iter()
            .zip(&picks)
            .map(|((name, options), &i)| (name.clone(), options[i].clone()))
            .collect();
        if let Some(v) = read_params(values) {
            return Some(v);
        }
        // The next combination, as an odometer over each parameter's options.
        let mut i = 0;
        loop {
            if i == picks.len() {
                return None;
            }
            picks[i] += 1;
            if picks[i] < choices[i].1.len() {
                break;
            }
            picks[i] = 0;
            i += 1;
        }
    }
}

/// Path parameters as `T`: one as a value, several as a tuple or a struct.
fn read_params<T: DeserializeOwned>(values: Vec<(String, serde_json::Value)>) -> Option<T> {
    if let [(_, one)] = values.as_slice() {
        if let Ok(v) = serde_json::from_value(one.clone()) {
            return Some(v);
        }
    }
    let list = serde_json::Value::Array(values.iter().map(|(_, v)| v.clone()).collect());
    if let Ok(v) = serde_json::from_value(list) {
        return Some(v);
    }
    serde_json::from_value(serde_json::Value::Object(values.into_iter().collect())).ok()
}

/// A path whose parameter does not parse (`/api/order/abc`) names no resource: a 404. (A route
/// declared without the parameter its handler reads is a bug: a 500.)
impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        use axum::extract::path::ErrorKind;
        match e {
            PathRejection::FailedToDeserializePathParams(e)
                if !matches!(
                    e.kind(),
                    ErrorKind::WrongNumberOfParameters { .. } | ErrorKind::UnsupportedType { .. }
                ) =>
            {
                ApiError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    format!("no such resource: {}", e.body_text()),
                )
            }
            other => ApiError::internal(anyhow::anyhow!("path parameters: {}", other.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_escapes_are_found_and_escaped_backslashes_are_not() {
        assert!(has_nul_escape(br#"{"a":"x\u0000y"}"#));
        assert!(has_nul_escape(br#"{"a":"\\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"a":"\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"a":"\u00001"}"#.split_at(9).0));
        assert!(!has_nul_escape(br#"{"a":"\u0001"}"#));
        assert!(!has_nul_escape(b"\\"));
    }

    #[test]
    fn an_array_is_not_a_body() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Body {
            a: Option<i64>,
            b: Option<i64>,
        }
        let e = parse_json::<Body>(b" [null, 1]").unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.msg.as_str()),
            (400, "request body must be a JSON object")
        );
        assert!(parse_json::<Body>(br#"{"b": 1}"#).is_ok());
    }

    #[test]
    fn a_refused_field_is_named() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Body {
            amount: i64,
        }
        let e = parse_json::<Body>(br#"{"amount": "x"}"#).unwrap_err();
        assert_eq!(e.errors[0].field, "amount");
        assert!(e.msg.contains("amount"), "{}", e.msg);
        let e = parse_json::<Body>(b"{}").unwrap_err();
        assert_eq!(e.errors[0].field, "amount");
    }

    #[test]
    fn an_integral_number_is_an_integer_and_a_fraction_is_named() {
        #[derive(Debug, serde::Deserialize)]
        struct Body {
            ids: Vec<i64>,
            seconds: u32,
            yuan: f64,
        }
        let b =
            parse_json::<Body>(br#"{"ids": [1.0, -2.0], "seconds": 30.0, "yuan": 2.0}"#).unwrap();
        assert_eq!((b.ids, b.seconds, b.yuan), (vec![1, -2], 30, 2.0));
        // Large integral values too: they parse exactly (serde_json's `float_roundtrip`).
        let b = parse_json::<Body>(
            br#"{"ids": [3983910292165230.0, -2157477004811073.0], "seconds": 1, "yuan": 1}"#,
        )
        .unwrap();
        assert_eq!(b.ids, vec![3_983_910_292_165_230, -2_157_477_004_811_073]);
        let e = parse_json::<Body>(br#"{"ids": [1.5], "seconds": 1, "yuan": 1}"#).unwrap_err();
        assert_eq!(e.errors[0].field, "ids[0]");
        let e = parse_json::<Body>(br#"{"ids": [], "seconds": -1.0, "yuan": 1}"#).unwrap_err();
        assert_eq!(e.errors[0].field, "seconds");
    }
}
