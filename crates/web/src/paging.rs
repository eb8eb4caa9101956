//! Paging as MyChat's clients ask for it: `page` (1-based) and `page_size`, each possibly sent as
//! `""` meaning "the default" (contract a.3).

use crate::error::ApiError;

/// The last page a list serves: with at most 100 rows a page, no list reads past 10 million
/// rows (a larger offset is a slow scan, and `(page - 1) * size` could overflow).
pub const MAX_PAGE: i64 = 100_000;

/// Page and page size from MyChat's query parameters: `page` in 1..=[`MAX_PAGE`] (default 1),
/// `page_size` in 1..=100 (default `default_size`). Returns `(limit, offset)`. The query types
/// state the same bounds in their `#[validate]` attributes, which is what their documents show.
///
/// # Errors
/// 400 naming `page` or `page_size` when out of range.
pub fn paging(
    page: Option<i64>,
    page_size: Option<i64>,
    default_size: i64,
) -> Result<(i64, i64), ApiError> {
    let page = page.unwrap_or(1);
    let size = page_size.unwrap_or(default_size);
    if !(1..=MAX_PAGE).contains(&page) {
        return Err(ApiError::field("page", "must be between 1 and 100000"));
    }
    if !(1..=100).contains(&size) {
        return Err(ApiError::field("page_size", "must be between 1 and 100"));
    }
    Ok((size, (page - 1) * size))
}

/// Checks `pageSize`, the admin client's spelling of `page_size`, on its own: a list reads
/// `page_size` when both are sent, yet a `pageSize` out of 1..=100 is still refused.
///
/// # Errors
/// 400 naming `pageSize`.
pub fn check_page_size_alias(alias: Option<i64>) -> Result<(), ApiError> {
    match alias {
        Some(size) if !(1..=100).contains(&size) => {
            Err(ApiError::field("pageSize", "must be between 1 and 100"))
        }
        _ => Ok(()),
    }
}

/// MyChat's paged list query: `page` (1-based), `page_size` and an optional `status` filter;
/// each may be sent as `""`, meaning "default" / "no filter" (contract a.3).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct PageQuery {
    #[serde(default, deserialize_with = "empty_as_none")]
    pub page: Option<i64>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub page_size: Option<i64>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub status: Option<i16>,
}

/// Deserialises an optional value that MyChat's clients may send as `""` (meaning "no filter")
/// from its text. Only the empty text is absent: the documents state the parameter's type or
/// `""` (`allowEmptyValue`), so `" 8"` or `"8\r"` is refused like any other text.
///
/// # Errors
/// The value's own parse error.
pub fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let s: Option<String> = serde::Deserialize::deserialize(d)?;
    match s.as_deref() {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// States in `doc` what [`empty_as_none`] and the list handlers do with a query parameter sent
/// empty (`?status=`, contract a.3): every optional query parameter gets `allowEmptyValue: true`
/// (OpenAPI 3.1 §4.8.12.2: "sending a parameter with an empty value"), which clients and
/// generators read as "the schema, or the empty string". utoipa has no field for it, so it is
/// written as a raw member beside the parameter's extensions.
pub fn document_empty_query_values(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::Required;
    for item in doc.paths.paths.values_mut() {
        for (_, op) in crate::swagger::operations_mut(item) {
            for param in op.parameters.iter_mut().flatten() {
                if param.parameter_in == ParameterIn::Query && param.required == Required::False {
                    param
                        .extensions
                        .get_or_insert_with(Default::default)
                        .insert("allowEmptyValue".into(), true.into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_empty_value_is_absent() {
        let read = |q: &str| {
            let uri: axum::http::Uri = format!("/x?{q}").parse().unwrap();
            axum::extract::Query::<PageQuery>::try_from_uri(&uri).map(|q| q.0)
        };
        let q = read("page=&page_size=&status=").unwrap();
        assert_eq!((q.page, q.page_size, q.status), (None, None, None));
        assert_eq!(read("page=8").unwrap().page, Some(8));
        assert!(read("page=8%0D").is_err());
        assert!(read("page=%208").is_err());
    }

    #[test]
    fn a_huge_page_is_a_400_not_an_overflow() {
        assert_eq!(
            paging(Some(i64::MAX), Some(100), 20).unwrap_err().status,
            400
        );
        assert_eq!(
            paging(Some(i64::MAX - 1), None, 20).unwrap_err().status,
            400
        );
        assert_eq!(
            paging(Some(100_002), Some(100), 20).unwrap_err().status,
            400
        );
        assert_eq!(paging(Some(3), Some(10), 20).unwrap(), (10, 20));
        assert_eq!(
            paging(Some(MAX_PAGE), Some(100), 20).unwrap(),
            (100, 9_999_900)
        );
        assert_eq!(
            paging(Some(MAX_PAGE + 1), Some(1), 20).unwrap_err().status,
            400
        );
    }
}
