//! Money: integer fen (1/100 CNY) everywhere inside mychat, never floats.
//!
//! The MyChat clients read and send yuan as JSON numbers with two decimals; conversion happens at
//! the API edge only (`api::money`).

/// An amount of money in fen (1/100 CNY). Signed so that differences and ledger postings can be
/// expressed; every aggregate refuses negative amounts where they make no sense.
pub type Fen = i64;

/// The platform's commission on a billed session, in percent (the counselor gets the rest).
pub const PLATFORM_FEE_PERCENT: i64 = 30;

/// Splits a billed amount (fen) into `(platform_fee, counselor_fee)`.
///
/// The platform keeps 30 % and the counselor gets 70 %. The platform's share is rounded **up** to
/// the whole fen (in the platform's favour), so `platform_fee + counselor_fee == amount` always
/// holds and no fraction of a fen is created or lost. A negative amount is treated as zero.
///
/// ```
/// assert_eq!(domain::split_platform_fee(1000), (300, 700));
/// assert_eq!(domain::split_platform_fee(1), (1, 0));
/// assert_eq!(domain::split_platform_fee(101), (31, 70));
/// ```
pub fn split_platform_fee(amount: Fen) -> (Fen, Fen) {
    let amount = amount.max(0);
    let platform = (amount * PLATFORM_FEE_PERCENT + 99) / 100;
    (platform, amount - platform)
}

/// Billed minutes for a session that lasted `seconds`: `ceil(seconds / 60)`, at least 1, and at
/// most `cap_minutes` (the minutes the user prepaid). A negative duration (clock skew) bills 1.
///
/// ```
/// assert_eq!(domain::money::billed_minutes(0, 10), 1);
/// assert_eq!(domain::money::billed_minutes(60, 10), 1);
/// assert_eq!(domain::money::billed_minutes(61, 10), 2);
/// assert_eq!(domain::money::billed_minutes(3600, 10), 10);
/// ```
pub fn billed_minutes(seconds: i64, cap_minutes: i64) -> i64 {
    let minutes = (seconds.max(0) + 59) / 60;
    minutes.max(1).min(cap_minutes.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_fee_and_counselor_fee_always_add_up_to_the_amount() {
        for amount in 0..5_000 {
            let (p, c) = split_platform_fee(amount);
            assert_eq!(p + c, amount);
            assert!(
                p * 100 >= amount * PLATFORM_FEE_PERCENT,
                "platform rounded down at {amount}"
            );
            assert!((p - 1) * 100 < amount * PLATFORM_FEE_PERCENT || p == 0);
        }
    }
}
