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
    }
}
