//! The items of the low-code designer: form items and page items, kept as the designer sends
//! them, with the members mychat relies on (`type`, a form item's `field`) documented and checked.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use validator::{Validate, ValidationError, ValidationErrors};

/// A form item of the designer: an object with a `type` and a non-empty `field` (the key its
/// value is submitted under), plus whatever else the designer stores (`label`, `required`,
/// options…), kept as sent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = FormItemShape)]
pub struct FormItem(pub Map<String, Value>);

/// The documented shape of a [`FormItem`]: `type` and `field` required, any other member kept.
#[derive(ToSchema)]
#[allow(dead_code)]
struct FormItemShape {
    /// The item's kind (`input`, `select`, …), as the designer names it.
    r#type: String,
    /// The key its value is submitted under; not empty.
    #[schema(min_length = 1)]
    field: String,
}

/// A page item of the designer: an object with a `type`, plus whatever else the designer stores,
/// kept as sent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = PageItemShape)]
pub struct PageItem(pub Map<String, Value>);

/// The documented shape of a [`PageItem`]: `type` required, any other member kept.
#[derive(ToSchema)]
#[allow(dead_code)]
struct PageItemShape {
    /// The item's kind, as the designer names it.
    r#type: String,
}

/// `type` must be a string; with `field_required`, `field` a non-empty string.
fn check_item(item: &Map<String, Value>, field_required: bool) -> Result<(), ValidationErrors> {
    let required = || ValidationError::new("required").with_message("required".into());
    let mut errors = ValidationErrors::new();
    if !item.get("type").is_some_and(Value::is_string) {
        errors.add("type", required());
    }
    let field = item
        .get("field")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if field_required && field.is_empty() {
        errors.add("field", required());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

impl Validate for FormItem {
    fn validate(&self) -> Result<(), ValidationErrors> {
        check_item(&self.0, true)
    }
}

impl Validate for PageItem {
    fn validate(&self) -> Result<(), ValidationErrors> {
        check_item(&self.0, false)
    }
}
