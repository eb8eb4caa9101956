//! How the admin client sends values, read leniently where it always has been: integers as
//! numeric strings (select boxes), booleans as `0`/`1`; `null` (and, for numbers, `""`) means
//! "not given". Text is a string, as the documents type it (MyChat's Go backend refused a
//! number there too), taken as sent. Used with `#[serde(default,
//! deserialize_with = ...)]` on `Option` fields, so a missing key and `null` are both `None`
//! (an update leaves that column as it is) while a zero value (`status: 0`, `sort: 0`) is applied.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Text and integer fields are read as everywhere in the admin API.
pub use crate::admin::common::lenient::{int, text};

/// A tree node's `parent_id`: like [`int`], except that `""` is given and means the root (0),
/// as the client's "no parent" choice sends it.
///
/// # Errors
/// "must be an integer".
pub fn parent<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) if s.is_empty() => Ok(Some(0)),
        other => int(other.unwrap_or(Value::Null)).map_err(D::Error::custom),
    }
}

/// A menu's `type`: 1 (directory), 2 (menu) or 3 (button), read like [`int`]; 0 (the
/// client's "unset") is a menu (2).
///
/// # Errors
/// "must be 1 (directory), 2 (menu) or 3 (button)".
pub fn menu_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i16>, D::Error> {
    match int::<D, i16>(d) {
        Ok(None) => Ok(None),
        Ok(Some(0)) => Ok(Some(2)),
        Ok(Some(t @ 1..=3)) => Ok(Some(t)),
        _ => Err(D::Error::custom(
            "must be 1 (directory), 2 (menu) or 3 (button)",
        )),
    }
}

/// A boolean field: `true`/`false` or `0`/`1`.
///
/// # Errors
/// "must be a boolean" for anything else.
pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::Number(n)) if n.as_i64() == Some(0) => Ok(Some(false)),
        Some(Value::Number(n)) if n.as_i64() == Some(1) => Ok(Some(true)),
        Some(_) => Err(D::Error::custom("must be a boolean")),
    }
}

/// A config's `value`: the client sends JSON-encoded text, kept as sent; any other JSON value is
/// stored as its JSON text.
///
/// # Errors
/// Never for valid JSON.
pub fn json_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(v) => Some(v.to_string()),
    })
}

/// An RBAC code: a role's (`^[a-z][a-z0-9_]*$`) or a permission's (`^[a-z][a-z0-9:_]*$`, the
/// colon separating its parts), at most 100 characters.
fn code(code: &str, perm: bool, message: &'static str) -> Result<(), validator::ValidationError> {
    let first_ok = code.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = code
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || (perm && c == ':'));
    if first_ok && rest_ok && code.len() <= 100 {
        Ok(())
    } else {
        Err(validator::ValidationError::new("pattern").with_message(message.into()))
    }
}

/// A role's code: `^[a-z][a-z0-9_]*$`, at most 100 characters.
///
/// # Errors
/// "must match ^[a-z][a-z0-9_]*$".
pub fn role_code(c: &str) -> Result<(), validator::ValidationError> {
    code(c, false, "must match ^[a-z][a-z0-9_]*$")
}

/// A permission's code: `^[a-z][a-z0-9:_]*$` (`role:view`), at most 100 characters.
///
/// # Errors
/// "must match ^[a-z][a-z0-9:_]*$".
pub fn permission_code(c: &str) -> Result<(), validator::ValidationError> {
    code(c, true, "must match ^[a-z][a-z0-9:_]*$")
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "super::int")]
        n: Option<i32>,
        #[serde(default, deserialize_with = "super::text")]
        s: Option<String>,
        #[serde(default, deserialize_with = "super::boolean")]
        b: Option<bool>,
        #[serde(default, deserialize_with = "super::parent")]
        p: Option<i64>,
    }

    fn parse(json: &str) -> Result<Body, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn values_are_read_as_the_admin_client_sends_them() {
        let b = parse(r#"{"n": "7", "s": "12", "b": 1, "p": ""}"#).unwrap();
        assert_eq!(
            (b.n, b.s.as_deref(), b.b, b.p),
            (Some(7), Some("12"), Some(true), Some(0))
        );
        let b = parse(r#"{"n": null, "s": " x ", "b": false, "p": null}"#).unwrap();
        assert_eq!(
            (b.n, b.s.as_deref(), b.b, b.p),
            (None, Some(" x "), Some(false), None),
            "text is taken as sent, not trimmed"
        );
        let b = parse(r#"{"n": 0, "p": "3"}"#).unwrap();
        assert_eq!((b.n, b.p, b.s), (Some(0), Some(3), None));
        assert!(parse(r#"{"n": "x"}"#).is_err());
        assert!(parse(r#"{"n": 3000000000}"#).is_err());
        assert!(parse(r#"{"s": []}"#).is_err());
        assert!(parse(r#"{"s": 12}"#).is_err(), "text is a string");
        assert!(parse(r#"{"n": "\t"}"#).is_err(), "only \"\" is not given");
        assert!(
            parse(r#"{"n": " 7"}"#).is_err(),
            "a numeric string is the number alone"
        );
        assert!(parse(r#"{"b": 2}"#).is_err());
    }

    #[test]
    fn codes() {
        assert!(super::role_code("auditor_2").is_ok());
        assert!(super::role_code("report:view").is_err());
        assert!(super::permission_code("report:view").is_ok());
        assert!(super::permission_code("Report").is_err());
        assert!(super::permission_code("").is_err());
    }
}
