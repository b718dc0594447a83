//! A size in bytes that configs write as `"512MiB"`, `"2GiB"`, `"1.5GB"`, `"4gb"` or a plain integer.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A size in bytes.
///
/// Parses a number (decimals allowed) with an optional unit, case-insensitively, as
/// Kubernetes does: `Ki`, `Mi`, `Gi`, `Ti` and `KiB`, `MiB`, `GiB`, `TiB` are powers of 1024;
/// `K`, `M`, `G`, `T` and `KB`, `MB`, `GB`, `TB` are powers of 1000; `B` or no unit is bytes.
/// So `"4Gi"` and `"4GiB"` are 4 × 2³⁰ bytes, and `"4G"`, `"4GB"` and `"4gb"` are 4 × 10⁹.
/// A fraction of a byte is rounded up, as Kubernetes does (`"1.1GiB"` is 1181116007 bytes); a
/// size must fit in 64 bits.
///
/// It displays exactly, in the notation a user would write: the unit, binary or decimal,
/// that gives the smallest whole number (`4GB`, `4GiB`, `1536MiB`, `1500MB`, `100B`), and what
/// it displays parses back to the same size.
///
/// ```
/// use poolwarden_policies::ByteSize;
///
/// let size: ByteSize = "4gb".parse().unwrap();
/// assert_eq!(size.bytes(), 4_000_000_000);
/// assert_eq!(size.to_string(), "4GB");
/// assert_eq!("4Gi".parse::<ByteSize>().unwrap().to_string(), "4GiB");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// Why a size did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseByteSizeError {
    text: String,
    kind: ParseByteSizeErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParseByteSizeErrorKind {
    Syntax,
    Overflow,
}

impl fmt::Display for ParseByteSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = &self.text;
        match self.kind {
            ParseByteSizeErrorKind::Syntax => write!(
                f,
                "invalid size `{text}`: expected a number with an optional unit: B; Ki, Mi, Gi, Ti \
                 or KiB, MiB, GiB, TiB (powers of 1024); K, M, G, T or KB, MB, GB, TB (powers of 1000)"
            ),
            ParseByteSizeErrorKind::Overflow => write!(f, "size `{text}` does not fit in 64 bits"),
        }
    }
}

impl std::error::Error for ParseByteSizeError {}

/// Units, largest first within each family: (name as displayed, bytes).
const BINARY: [(&str, u64); 4] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
];
const DECIMAL: [(&str, u64); 4] = [
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
];

impl ByteSize {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// A size of `n` mebibytes.
    pub fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }

    /// A size of `n` gibibytes.
    pub fn gib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024 * 1024)
    }
}

/// The multiplier of a unit, matched case-insensitively.
fn multiplier(unit: &str) -> Option<u64> {
    let unit = unit.to_ascii_lowercase();
    let unit = unit.as_str();
    if unit.is_empty() || unit == "b" {
        return Some(1);
    }
    let mut chars = unit.chars();
    let power = match chars.next() {
        Some('k') => 1,
        Some('m') => 2,
        Some('g') => 3,
        Some('t') => 4,
        _ => return None,
    };
    let rest = chars.as_str();
    let base: u64 = match rest {
        "i" | "ib" => 1024,
        "" | "b" => 1000,
        _ => return None,
    };
    Some(base.pow(power))
}

impl FromStr for ByteSize {
    type Err = ParseByteSizeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = |kind| ParseByteSizeError {
            text: text.to_string(),
            kind,
        };
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let multiplier =
            multiplier(unit.trim()).ok_or_else(|| error(ParseByteSizeErrorKind::Syntax))?;
        let (whole, fraction) = match number.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (number, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
            return Err(error(ParseByteSizeErrorKind::Syntax));
        }
        // Exact arithmetic: whole × multiplier + ⌈fraction × multiplier / 10^len⌉.
        let overflow = || error(ParseByteSizeErrorKind::Overflow);
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| overflow())?
        };
        let fraction = fraction.trim_end_matches('0');
        let mut bytes = whole
            .checked_mul(u128::from(multiplier))
            .ok_or_else(overflow)?;
        if !fraction.is_empty() {
            // Digits past the 24th are below a billionth of a byte of any unit: they only
            // decide whether to round up.
            let (kept, rest) = fraction.split_at(fraction.len().min(24));
            let numerator: u128 = kept.parse().map_err(|_| overflow())?;
            let denominator = 10u128.pow(kept.len() as u32);
            let scaled = numerator * u128::from(multiplier);
            let round_up = !scaled.is_multiple_of(denominator) || !rest.is_empty();
            bytes = bytes
                .checked_add(scaled / denominator + u128::from(round_up))
                .ok_or_else(overflow)?;
        }
        u64::try_from(bytes).map(ByteSize).map_err(|_| overflow())
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exact = |units: &[(&'static str, u64)]| {
            units
                .iter()
                .find(|(_, size)| self.0 >= *size && self.0.is_multiple_of(*size))
                .map(|(name, size)| (self.0 / size, *name))
        };
        let best = match (exact(&BINARY), exact(&DECIMAL)) {
            (Some(b), Some(d)) => Some(if d.0 < b.0 { d } else { b }),
            (b, d) => b.or(d),
        };
        match best {
            Some((n, unit)) => write!(f, "{n}{unit}"),
            None => write!(f, "{}B", self.0),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"512MiB\" or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("size must not be negative, got {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(text: &str) -> u64 {
        text.parse::<ByteSize>()
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .bytes()
    }

    #[test]
    fn binary_units_are_powers_of_1024_in_either_spelling() {
        assert_eq!(size("512MiB"), 512 << 20);
        assert_eq!(size("512Mi"), 512 << 20);
        assert_eq!(size("2 GiB"), 2 << 30);
        assert_eq!(size("4Gi"), 4 << 30);
        assert_eq!(size("1Ti"), 1 << 40);
        assert_eq!(size("64ki"), 64 << 10);
        assert_eq!(size("64KIB"), 64 << 10);
    }

    #[test]
    fn decimal_units_are_powers_of_1000_case_insensitively() {
        assert_eq!(size("4G"), 4_000_000_000);
        assert_eq!(size("4GB"), 4_000_000_000);
        assert_eq!(size("4gb"), 4_000_000_000);
        assert_eq!(size("4g"), 4_000_000_000);
        assert_eq!(size("64k"), 64_000);
        assert_eq!(size("1.5GB"), 1_500_000_000);
        assert_eq!(size("2T"), 2_000_000_000_000);
        assert_eq!(size("3m"), 3_000_000);
    }

    #[test]
    fn plain_numbers_and_bytes() {
        assert_eq!(size("4096"), 4096);
        assert_eq!(size("100B"), 100);
        assert_eq!(size("100b"), 100);
        assert_eq!(size("0.5KiB"), 512);
        assert_eq!(size(".5K"), 500);
    }

    #[test]
    fn a_fraction_of_a_byte_rounds_up_as_in_kubernetes() {
        assert_eq!(size("1.1GiB"), 1_181_116_007);
        assert_eq!(size("0.5B"), 1);
        assert_eq!(size("1.0000000000000000000000000001KiB"), 1025);
        assert_eq!(size("2.50000000000000000000000000000000B"), 3);
        assert_eq!(
            size("2.000000000000000000000000000000000000000GB"),
            2_000_000_000
        );
    }

    #[test]
    fn rejects_garbage_and_overflow() {
        for bad in [
            "",
            "MiB",
            "4é",
            "4\u{1F600}",
            "12 parsecs",
            "4GiBB",
            "4Bi",
            "1.2.3G",
            "-1G",
            "4 G i",
            "1e3",
        ] {
            let error = bad.parse::<ByteSize>().unwrap_err();
            assert!(error.to_string().contains("invalid size"), "{bad}: {error}");
        }
        for big in ["99999999999TiB", "18446744073709551616", "20000000TB"] {
            let error = big.parse::<ByteSize>().unwrap_err();
            assert!(error.to_string().contains("64 bits"), "{big}: {error}");
        }
        assert_eq!(size("18446744073709551615"), u64::MAX);
    }

    #[test]
    fn displays_what_a_user_would_write() {
        assert_eq!(ByteSize(2 << 30).to_string(), "2GiB");
        assert_eq!(ByteSize(4_000_000_000).to_string(), "4GB");
        assert_eq!(ByteSize(1536 << 20).to_string(), "1536MiB");
        assert_eq!(ByteSize(1_500_000_000).to_string(), "1500MB");
        assert_eq!(ByteSize(1000).to_string(), "1KB");
        assert_eq!(ByteSize(1024).to_string(), "1KiB");
        assert_eq!(ByteSize(100).to_string(), "100B");
        assert_eq!(ByteSize(0).to_string(), "0B");
    }

    #[test]
    fn what_is_displayed_parses_back_to_the_same_size() {
        for text in [
            "4gb",
            "4Gi",
            "1.5GB",
            "1.5GiB",
            "1023",
            "123456789",
            "7TB",
            "18446744073709551615",
        ] {
            let parsed: ByteSize = text.parse().unwrap();
            let shown = parsed.to_string();
            assert_eq!(
                shown.parse::<ByteSize>().unwrap(),
                parsed,
                "{text} -> {shown}"
            );
        }
    }
}
