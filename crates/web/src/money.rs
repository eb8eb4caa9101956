//! Money at the MyChat edge: the clients send and read **yuan** as JSON numbers with two
//! decimals (contract a.5); inside, everything is `i64` fen.

use domain::Fen;

use crate::error::ApiError;

/// Fen as a yuan JSON number (`1234` → `12.34`). Exact for every amount below 2^53 fen.
pub fn yuan(fen: Fen) -> serde_json::Value {
    serde_json::Value::from(fen as f64 / 100.0)
}

/// Fen as yuan for a typed response field (`1234` → `12.34`): serializes exactly as [`yuan`]
/// does.
pub fn yuan_f64(fen: Fen) -> f64 {
    fen as f64 / 100.0
}

/// A yuan amount from a client as fen. Refuses NaN, infinities, more than two decimals and
/// amounts that are not positive; `field` names the field in the error.
///
/// # Errors
/// 400 naming `field`.
pub fn positive_fen(field: &str, yuan: f64) -> Result<Fen, ApiError> {
    if !yuan.is_finite() {
        return Err(ApiError::field(field, "must be a number"));
    }
    let cents = yuan * 100.0;
    let fen = cents.round();
    // Two decimals at most, up to the rounding of binary floating point: a few units in the last
    // place of `yuan * 100` (relative, so 323158185.46 passes as 0.1 + 0.2 does; an absolute
    // tolerance refused large amounts for the product's rounding).
    if (cents - fen).abs() > 8.0 * f64::EPSILON * cents.abs().max(1.0) {
        return Err(ApiError::field(field, "at most two decimals (fen)"));
    }
    if fen <= 0.0 {
        return Err(ApiError::field(field, "must be greater than 0"));
    }
    if fen > 1e12 {
        return Err(ApiError::field(field, "is too large"));
    }
    Ok(fen as Fen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_is_fen_over_a_hundred() {
        assert_eq!(yuan(1234).to_string(), "12.34");
        assert_eq!(yuan(500).to_string(), "5.0");
        assert_eq!(yuan(1).to_string(), "0.01");
    }

    #[test]
    fn client_amounts_become_exact_fen() {
        assert_eq!(positive_fen("amount", 12.34).unwrap(), 1234);
        assert_eq!(positive_fen("amount", 0.1 + 0.2).unwrap(), 30);
        assert!(positive_fen("amount", 0.0).is_err());
        assert!(positive_fen("amount", -1.0).is_err());
        assert!(positive_fen("amount", 1.234).is_err());
        assert_eq!(
            positive_fen("amount", 323_158_185.46).unwrap(),
            32_315_818_546
        );
        assert_eq!(
            positive_fen("amount", 99_999_999.99).unwrap(),
            9_999_999_999
        );
        assert!(positive_fen("amount", 99_999_999.999).is_err());
        assert!(positive_fen("amount", 50.001).is_err());
        assert!(positive_fen("amount", f64::NAN).is_err());
    }
}
