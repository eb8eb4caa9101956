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
/// from its text.
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
    match s.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
