//! Kubernetes resource quantities (`500m`, `1.5Gi`, `1e3`) as integers.
//!
//! Parsing is exact: the number is kept as an integer mantissa with a decimal
//! and a binary exponent, and converted to the target unit (millicores or
//! bytes) rounding *up*, as Kubernetes does when it asks a quantity for an
//! integer value. No floating point is involved.

use crate::{Error, Result};

/// Millicores in one CPU.
const MILLIS_PER_CPU: u64 = 1000;

/// Binary suffixes with their power of two, largest first (formatting picks
/// the largest that divides exactly).
const BINARY_SUFFIXES: &[(&str, u32)] = &[
    ("Ei", 60),
    ("Pi", 50),
    ("Ti", 40),
    ("Gi", 30),
    ("Mi", 20),
    ("Ki", 10),
];

/// Decimal SI suffixes with their power of ten.
const DECIMAL_SUFFIXES: &[(&str, i32)] = &[
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// Significant digits a `u128` mantissa always holds.
const MAX_DIGITS: usize = 38;

/// A parsed quantity: `mantissa * 10^exp10 * 2^exp2`, non-negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Exact {
    mantissa: u128,
    exp10: i64,
    exp2: u32,
}

/// Parses a CPU quantity into millicores: `"500m"` → 500, `"2"` → 2000,
/// `"0.5"` → 500. Amounts below a millicore round up to 1m, as Kubernetes
/// does for CPU.
///
/// # Errors
/// [`Error::Quantity`] if the text is not a non-negative quantity or the
/// result does not fit in a `u64`.
pub fn parse_cpu_millis(value: &str) -> Result<u64> {
    let exact = parse_exact(value)?;
    exact
        .scaled_ceil(3)
        .ok_or_else(|| invalid(value, "too large"))
}

/// Parses a memory quantity into bytes: `"1Gi"`, `"512M"`, `"128974848"`,
/// `"1e3"`, `"1.5Gi"`. Fractions of a byte round up.
///
/// # Errors
/// [`Error::Quantity`] if the text is not a non-negative quantity or the
/// result does not fit in a `u64`.
pub fn parse_memory_bytes(value: &str) -> Result<u64> {
    let exact = parse_exact(value)?;
    exact
        .scaled_ceil(0)
        .ok_or_else(|| invalid(value, "too large"))
}

/// Formats millicores the way Kubernetes writes them: whole CPUs without a
/// suffix (`"2"`), otherwise millicores (`"500m"`).
pub fn format_cpu_millis(millis: u64) -> String {
    if millis.is_multiple_of(MILLIS_PER_CPU) {
        (millis / MILLIS_PER_CPU).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Formats bytes with the largest binary suffix that divides them exactly
/// (`"1Gi"`, `"512Mi"`), otherwise as plain bytes.
pub fn format_memory_bytes(bytes: u64) -> String {
    if bytes != 0 {
        for &(suffix, shift) in BINARY_SUFFIXES {
            if bytes.trailing_zeros() >= shift {
                return format!("{}{suffix}", bytes >> shift);
            }
        }
    }
    bytes.to_string()
}

fn invalid(value: &str, reason: impl Into<String>) -> Error {
    Error::Quantity {
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Parses `<number><suffix>` where number is `[+]digits[.digits]` and suffix
/// is a binary suffix, a decimal suffix, an exponent (`e3`, `E-2`) or empty.
fn parse_exact(value: &str) -> Result<Exact> {
    if value.is_empty() {
        return Err(invalid(value, "empty"));
    }
    if value.starts_with('-') {
        return Err(invalid(value, "must not be negative"));
    }
    let unsigned = value.strip_prefix('+').unwrap_or(value);
    let number_len = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);

    let (mantissa, mut exp10) = parse_decimal(number).ok_or_else(|| {
        invalid(
            value,
            "expected a number with an optional suffix (m, k, M, G, Ki, Mi, Gi, e3...)",
        )
    })?;
    let mut exp2 = 0;
    if let Some(&(_, shift)) = BINARY_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        exp2 = shift;
    } else if let Some(&(_, power)) = DECIMAL_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        exp10 += i64::from(power);
    } else if let Some(exponent) = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))
    {
        let exponent: i64 = exponent
            .parse()
            .ok()
            .filter(|e: &i64| e.unsigned_abs() <= 1_000_000)
            .ok_or_else(|| invalid(value, format!("invalid exponent {suffix:?}")))?;
        exp10 += exponent;
    } else if !suffix.is_empty() {
        return Err(invalid(value, format!("unknown suffix {suffix:?}")));
    }
    if mantissa == 0 {
        // Zero with any suffix or exponent is zero; normalise so that a huge
        // exponent cannot be mistaken for an overflow.
        exp10 = 0;
        exp2 = 0;
    }
    Ok(Exact {
        mantissa,
        exp10,
        exp2,
    })
}

/// Parses `digits[.digits]` (either part may be empty, not both) into a
/// mantissa and a power of ten.
fn parse_decimal(number: &str) -> Option<(u128, i64)> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let significant = digits.trim_start_matches('0');
    let significant = significant.trim_end_matches('0');
    let trailing_zeros = digits.len() - digits.trim_end_matches('0').len();
    if significant.len() > MAX_DIGITS {
        return None;
    }
    let mantissa = if significant.is_empty() {
        0
    } else {
        significant.parse::<u128>().ok()?
    };
    let exp10 = i64::try_from(trailing_zeros).ok()? - i64::try_from(fraction.len()).ok()?;
    Some((mantissa, exp10))
}

impl Exact {
    /// `ceil(self * 10^extra_exp10)` as a `u64`, or `None` on overflow.
    fn scaled_ceil(self, extra_exp10: i64) -> Option<u64> {
        if self.mantissa == 0 {
            return Some(0);
        }
        let numerator = self.mantissa.checked_mul(1u128.checked_shl(self.exp2)?)?;
        let exp10 = self.exp10 + extra_exp10;
        let value = if exp10 >= 0 {
            let factor = 10u128.checked_pow(u32::try_from(exp10).ok()?)?;
            numerator.checked_mul(factor)?
        } else {
            match u32::try_from(-exp10)
                .ok()
                .and_then(|e| 10u128.checked_pow(e))
            {
                Some(denominator) => numerator.div_ceil(denominator),
                // The denominator exceeds any u128 numerator: a positive
                // fraction below one, which rounds up to one.
                None => 1,
            }
        };
        u64::try_from(value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu_quantities() {
        for (text, millis) in [
            ("500m", 500),
            ("2", 2000),
            ("0.5", 500),
            ("1.5", 1500),
            (".5", 500),
            ("+1", 1000),
            ("100u", 1),
            ("1n", 1),
            ("0", 0),
            ("0m", 0),
            ("0.0001", 1),
            ("1e3", 1_000_000),
            ("2k", 2_000_000),
            ("250m", 250),
            ("1000000e-3", 1_000_000),
        ] {
            assert_eq!(parse_cpu_millis(text).unwrap(), millis, "{text}");
        }
    }

    #[test]
    fn memory_quantities() {
        for (text, bytes) in [
            ("1Gi", 1 << 30),
            ("512Mi", 512 << 20),
            ("1Ki", 1024),
            ("1k", 1000),
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("1e3", 1000),
            ("1E3", 1000),
            ("1.5Gi", 1_610_612_736),
            ("0.1Ki", 103),
            ("1M", 1_000_000),
            ("1E", 1_000_000_000_000_000_000),
            ("15Ei", 15 << 60),
            ("100m", 1),
            ("0e99999", 0),
            ("0.000", 0),
            ("1.000000000000000000000000000000000000000000000", 1),
        ] {
            assert_eq!(parse_memory_bytes(text).unwrap(), bytes, "{text}");
        }
    }

    #[test]
    fn rejects_invalid_quantities() {
        for text in [
            "",
            "-1",
            "-0.5Gi",
            "abc",
            "1Q",
            "12Q",
            "1.2.3",
            ".",
            "1 Gi",
            " 1",
            "1Gi ",
            "Gi",
            "1e",
            "1e1.5",
            "1ee3",
            "1Gii",
            "16Ei",
            "1e30",
            "1e999999999999",
            "99999999999999999999999999999999999999999",
        ] {
            let err = parse_memory_bytes(text).unwrap_err();
            assert!(matches!(err, Error::Quantity { .. }), "{text}: {err}");
        }
        assert!(parse_cpu_millis("18446744073709552").is_err());
        let message = parse_memory_bytes("12Q").unwrap_err().to_string();
        assert_eq!(message, r#"invalid quantity "12Q": unknown suffix "Q""#);
        assert!(
            parse_cpu_millis("-1")
                .unwrap_err()
                .to_string()
                .contains("negative")
        );
    }

    #[test]
    fn formats() {
        assert_eq!(format_cpu_millis(500), "500m");
        assert_eq!(format_cpu_millis(2000), "2");
        assert_eq!(format_cpu_millis(0), "0");
        assert_eq!(format_memory_bytes(1 << 30), "1Gi");
        assert_eq!(format_memory_bytes(512 << 20), "512Mi");
        assert_eq!(format_memory_bytes(3072), "3Ki");
        assert_eq!(format_memory_bytes(1536), "1536");
        assert_eq!(format_memory_bytes(1000), "1000");
        assert_eq!(format_memory_bytes(0), "0");
        assert_eq!(format_memory_bytes(u64::MAX), u64::MAX.to_string());
    }

    proptest! {
        #[test]
        fn cpu_round_trips(millis in any::<u64>()) {
            prop_assert_eq!(parse_cpu_millis(&format_cpu_millis(millis)).unwrap(), millis);
        }

        #[test]
        fn memory_round_trips(bytes in any::<u64>(), shift in 0u32..64) {
            // Shifting makes binary-suffix outputs common, not just plain bytes.
            let bytes = bytes << shift;
            prop_assert_eq!(parse_memory_bytes(&format_memory_bytes(bytes)).unwrap(), bytes);
        }

        #[test]
        fn parsing_never_panics(text in "[-+0-9.eEkKMGTPimnu ]{0,24}") {
            let _ = parse_cpu_millis(&text);
            let _ = parse_memory_bytes(&text);
        }
    }
}
