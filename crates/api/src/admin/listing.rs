//! Paging of the admin API's lists as MyChat's admin client sends it ([`PageParams`]), validated,
//! and [`invalid`], the refusal of a custom validation rule. The typed rows and list envelopes
//! themselves are in [`crate::admin::common`] (`typed_rows`, `Listed`).

use serde::Deserialize;
use utoipa::IntoParams;
use validator::Validate;

use crate::{empty_as_none, ApiError};

/// A page of a list: `page` (1-based, default 1) and `page_size` (1–100; `pageSize` is the
/// admin client's spelling). An empty value means the default.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// The page, from 1 (default 1).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Rows per page, 1–100 (each list has its own default).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
    /// Same as `page_size` (the admin client's spelling); `page_size` wins when both are sent.
    #[serde(default, rename = "pageSize", deserialize_with = "empty_as_none")]
    // Checked by `web::paging::check_page_size_alias`, named `pageSize` in a refusal.
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
        web::paging::check_page_size_alias(self.page_size_alias)?;
        crate::paging(
            self.page,
            self.page_size.or(self.page_size_alias),
            default_size,
        )
    }
}

/// A validation error with `message` (what the client reads after the field's name).
pub fn invalid(code: &'static str, message: &'static str) -> validator::ValidationError {
    validator::ValidationError::new(code).with_message(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_refused_naming_the_parameter() {
        let page = |page, page_size, page_size_alias| PageParams {
            page,
            page_size,
            page_size_alias,
        };
        assert_eq!(
            page(Some(0), None, None).limits(20).unwrap_err().msg,
            "page: must be between 1 and 100000"
        );
        assert_eq!(
            page(None, None, Some(101)).limits(20).unwrap_err().msg,
            "pageSize: must be between 1 and 100"
        );
        assert_eq!(
            page(None, Some(10), Some(-3)).limits(20).unwrap_err().msg,
            "pageSize: must be between 1 and 100"
        );
        assert_eq!(page(Some(2), None, Some(10)).limits(20).unwrap(), (10, 10));
        assert_eq!(page(None, None, None).limits(20).unwrap(), (20, 0));
    }
}
