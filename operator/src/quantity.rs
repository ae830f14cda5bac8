//! Just enough of Kubernetes' resource quantities to size quotas: parse a quantity into
//! thousandths of its unit, add overheads, and print it back canonically.

use std::fmt;

/// A non-negative amount in thousandths of the unit (millicores for CPU, millibytes for memory),
/// which holds every quantity Kubernetes accepts without rounding. `Display` prints it
/// memory-style (`1536Mi`); use [`Amount::to_cpu_string`] for CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Amount(i128);

/// Why a quantity string is not one novads can size a quota with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "`{0}` is not a quantity (expected a number with an optional suffix such as m, Mi, Gi or Ti)"
    )]
    Malformed(String),
    #[error("`{0}` is negative")]
    Negative(String),
    #[error("`{0}` is too large")]
    TooLarge(String),
}

const BINARY_SUFFIXES: [(&str, u32); 6] = [
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];
const DECIMAL_SUFFIXES: [(&str, u32); 7] = [
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
    ("", 0),
];

impl Amount {
    /// Whole units, e.g. `Amount::units(2)` is 2 CPUs or 2 bytes.
    pub const fn units(units: i64) -> Self {
        Self(units as i128 * 1000)
    }

    /// Thousandths of a unit, e.g. `Amount::milli(100)` is 100m CPU.
    pub const fn milli(milli: i64) -> Self {
        Self(milli as i128)
    }

    /// `mebibytes` MiB.
    pub const fn mebibytes(mebibytes: i64) -> Self {
        Self(mebibytes as i128 * 1000 * (1 << 20))
    }

    /// Parses a Kubernetes quantity (`16`, `7500m`, `64Gi`, `1.5G`, `1e3`). Fractions finer
    /// than a thousandth round up, as Kubernetes does.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let malformed = || QuantityError::Malformed(text.to_string());
        let trimmed = text.trim();
        if trimmed.starts_with('-') {
            return Err(QuantityError::Negative(text.to_string()));
        }
        let unsigned = trimmed.strip_prefix('+').unwrap_or(trimmed);
        let number_end = unsigned
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(unsigned.len());
        let (number, suffix) = unsigned.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return Err(malformed());
        }
        let digits = format!("{whole}{fraction}");
        let mantissa: i128 = digits.parse().map_err(|_| malformed())?;
        // value = mantissa × 10^-fraction_len × multiplier; kept as (numerator, denominator).
        let mut numerator = mantissa.checked_mul(1000).ok_or_else(|| too_large(text))?;
        let mut denominator: i128 = 10i128
            .checked_pow(u32::try_from(fraction.len()).map_err(|_| malformed())?)
            .ok_or_else(malformed)?;
        if let Some((_, power)) = BINARY_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
            numerator = numerator
                .checked_mul(1i128 << power)
                .ok_or_else(|| too_large(text))?;
        } else if suffix == "m" {
            denominator *= 1000;
        } else if let Some((_, power)) = DECIMAL_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
            numerator = numerator
                .checked_mul(10i128.pow(*power))
                .ok_or_else(|| too_large(text))?;
        } else if let Some(exponent) = suffix.strip_prefix(['e', 'E']) {
            let exponent: i32 = exponent.parse().map_err(|_| malformed())?;
            let scale = 10i128
                .checked_pow(exponent.unsigned_abs())
                .ok_or_else(|| too_large(text))?;
            if exponent >= 0 {
                numerator = numerator
                    .checked_mul(scale)
                    .ok_or_else(|| too_large(text))?;
            } else {
                denominator = denominator
                    .checked_mul(scale)
                    .ok_or_else(|| too_large(text))?;
            }
        } else {
            return Err(malformed());
        }
        // Round up to a whole thousandth.
        let milli = (numerator + denominator - 1) / denominator;
        // Kubernetes caps quantities at 2^63-1 of the base unit.
        if milli / 1000 > i128::from(i64::MAX) {
            return Err(too_large(text));
        }
        Ok(Self(milli))
    }

    /// Sum, saturating at the largest quantity Kubernetes accepts.
    pub fn plus(self, other: Self) -> Self {
        Self((self.0 + other.0).min(i128::from(i64::MAX) * 1000))
    }

    /// How much `self` exceeds `other`; zero when it does not.
    pub fn saturating_sub(self, other: Self) -> Self {
        Self((self.0 - other.0).max(0))
    }

    /// `self` taken `times` times.
    pub fn times(self, times: i64) -> Self {
        Self((self.0 * i128::from(times)).min(i128::from(i64::MAX) * 1000))
    }

    /// As a CPU quantity: whole cores (`16`) or millicores (`7500m`), never a byte suffix.
    pub fn to_cpu_string(self) -> String {
        if self.0 % 1000 == 0 {
            format!("{}", self.0 / 1000)
        } else {
            format!("{}m", self.0)
        }
    }
}

fn too_large(text: &str) -> QuantityError {
    QuantityError::TooLarge(text.to_string())
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 1000 != 0 {
            return write!(f, "{}m", self.0);
        }
        let units = self.0 / 1000;
        if units != 0 {
            for (suffix, power) in BINARY_SUFFIXES.iter().rev() {
                let size = 1i128 << power;
                if units % size == 0 {
                    return write!(f, "{}{suffix}", units / size);
                }
            }
        }
        write!(f, "{units}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_admins_write() {
        assert_eq!(Amount::parse("16"), Ok(Amount::units(16)));
        assert_eq!(Amount::parse("7500m"), Ok(Amount::milli(7500)));
        assert_eq!(Amount::parse("1.5"), Ok(Amount::milli(1500)));
        assert_eq!(Amount::parse("64Gi"), Ok(Amount::mebibytes(64 * 1024)));
        assert_eq!(Amount::parse("1k"), Ok(Amount::units(1000)));
        assert_eq!(Amount::parse("1e3"), Ok(Amount::units(1000)));
        assert_eq!(Amount::parse("+2"), Ok(Amount::units(2)));
        assert_eq!(Amount::parse("0.0001"), Ok(Amount::milli(1)), "rounds up");
    }

    #[test]
    fn refuses_what_kubernetes_would_not_size() {
        assert!(matches!(
            Amount::parse("-1Gi"),
            Err(QuantityError::Negative(_))
        ));
        for bad in ["", "Gi", "lots", "1.2.3", "5XB", "1e", "."] {
            assert!(
                matches!(Amount::parse(bad), Err(QuantityError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Amount::parse("100Ei"),
            Err(QuantityError::TooLarge(_))
        ));
    }

    #[test]
    fn prints_canonically() {
        assert_eq!(
            Amount::parse("1536Mi").map(|a| a.to_string()),
            Ok("1536Mi".into())
        );
        assert_eq!(
            Amount::parse("2048Gi").map(|a| a.to_string()),
            Ok("2Ti".into())
        );
        assert_eq!(Amount::milli(7500).to_string(), "7500m");
        assert_eq!(Amount::units(16).to_string(), "16");
        assert_eq!(Amount::units(1000).to_string(), "1000");
        assert_eq!(Amount::units(2048).to_cpu_string(), "2048");
        assert_eq!(Amount::milli(2500).to_cpu_string(), "2500m");
        assert_eq!(Amount::default().to_string(), "0");
    }

    #[test]
    fn subtracts_down_to_zero() {
        let over = Amount::parse("68Gi").map(|a| a.saturating_sub(Amount::mebibytes(64 * 1024)));
        assert_eq!(over.map(|a| a.to_string()), Ok("4Gi".into()));
        assert_eq!(
            Amount::units(1).saturating_sub(Amount::units(2)),
            Amount::default()
        );
    }

    #[test]
    fn adds_overheads() {
        let memory = Amount::parse("64Gi").map(|m| m.plus(Amount::mebibytes(400).times(10)));
        assert_eq!(memory.map(|m| m.to_string()), Ok("69536Mi".into()));
    }
}
