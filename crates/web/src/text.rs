//! Rules on request text that `validator` has no rule for, stated so that `#[web::limits]`
//! documents them.

use validator::ValidationError;

/// The pattern `#[web::limits]` documents for a field validated with
/// `#[validate(custom(function = "web::text::not_blank"))]`: "a character that is not white
/// space". The class is written out (Unicode White_Space, the characters `str::trim` removes)
/// instead of `\S`, because schema readers disagree on `\s`: Python's, which fuzzers read the
/// document with, also matches U+001C–U+001F, which Rust keeps.
pub const NOT_BLANK_PATTERN: &str =
    r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";

/// The pattern `#[web::limits]` documents for a field validated with
/// `#[validate(custom(function = "web::text::trimmed"))]`: not empty, and neither the first nor
/// the last character is white space (the class of [`NOT_BLANK_PATTERN`]).
pub const TRIMMED_PATTERN: &str = r"^[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000](?:[\s\S]*[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?$";

/// Text that holds something besides white space (Unicode White_Space, as `str::trim`); put it
/// first among the field's rules, so that blank text is refused as `required`, not by a length.
/// Documented by `#[web::limits]` as [`NOT_BLANK_PATTERN`].
///
/// # Errors
/// `required` ("required") when `text` is empty or only white space.
pub fn not_blank(text: &str) -> Result<(), ValidationError> {
    if text.trim().is_empty() {
        Err(ValidationError::new("required").with_message("required".into()))
    } else {
        Ok(())
    }
}

/// Text that is not empty and neither begins nor ends with white space (Unicode White_Space, as
/// `str::trim`): a name or a key, which is stored as sent and so must be sent as meant.
/// Documented by `#[web::limits]` as [`TRIMMED_PATTERN`].
///
/// # Errors
/// `required` ("required") when `text` is blank; `trimmed` ("no surrounding spaces") when it
/// begins or ends with white space.
pub fn trimmed(text: &str) -> Result<(), ValidationError> {
    not_blank(text)?;
    if text.trim() != text {
        return Err(ValidationError::new("trimmed").with_message("no surrounding spaces".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented pattern and the check agree, white space of every kind included.
    #[test]
    fn the_pattern_is_the_rule() {
        let pattern = regex::Regex::new(NOT_BLANK_PATTERN).unwrap();
        let blank: Vec<String> = (0..=0x3000u32)
            .filter_map(char::from_u32)
            .filter(|c| c.is_whitespace())
            .map(|c| format!("{c}{c}"))
            .chain(["".to_string()])
            .collect();
        for text in &blank {
            assert!(not_blank(text).is_err(), "{text:?} is blank");
            assert!(!pattern.is_match(text), "{text:?} is blank");
        }
        for text in ["a", " a ", "\u{1c}", "\u{85}x", "中", "\u{200b}"] {
            assert!(not_blank(text).is_ok(), "{text:?} is not blank");
            assert!(pattern.is_match(text), "{text:?} is not blank");
        }
        let trimmed_pattern = regex::Regex::new(TRIMMED_PATTERN).unwrap();
        for text in
            blank
                .iter()
                .map(String::as_str)
                .chain([" a", "a ", "a\u{3000}", "\u{85}x", "x\n"])
        {
            assert!(trimmed(text).is_err(), "{text:?} is not trimmed");
            assert!(!trimmed_pattern.is_match(text), "{text:?} is not trimmed");
        }
        for text in ["a", "a b", "\u{1c}", "中 文", "a\nb", "\u{200b}"] {
            assert!(trimmed(text).is_ok(), "{text:?} is trimmed");
            assert!(trimmed_pattern.is_match(text), "{text:?} is trimmed");
        }
    }
}
