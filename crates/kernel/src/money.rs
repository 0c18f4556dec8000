//! Money: an integer count of minor units (cents, pence, yen) with an ISO-4217 currency.
//!
//! Decision: `i64` minor units. It is exact, stores as `BIGINT` on both databases and as a JSON
//! integer well inside 2^53 for any realistic balance. Every operation is checked; overflow and
//! currency mismatch are errors, never a wrap or a silent conversion. Rejected: floats (inexact),
//! `rust_decimal` (heavier, and the ledger never needs fractions of a minor unit; exchange
//! rates are rationals of integers, see [`Rate`]).

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// What went wrong with an amount or currency.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not a three-letter ISO-4217 code we know, or one without minor units (XAU, XXX…).
    #[error("unknown currency `{0}`")]
    UnknownCurrency(String),
    /// Two amounts in different currencies were combined.
    #[error("currency mismatch: {left} vs {right}")]
    CurrencyMismatch {
        /// Currency of the left operand.
        left: Currency,
        /// Currency of the right operand.
        right: Currency,
    },
    /// The result does not fit in an `i64` count of minor units.
    #[error("amount overflow")]
    Overflow,
    /// Text that is not an amount such as `12.50 EUR`.
    #[error("malformed amount `{0}`: expected e.g. `12.50 EUR`")]
    Malformed(String),
    /// More decimal places than the currency has minor units.
    #[error("`{text}` has more than {exponent} decimal places for {currency}")]
    TooPrecise {
        /// The text given.
        text: String,
        /// The currency's number of minor-unit digits.
        exponent: u32,
        /// The currency.
        currency: Currency,
    },
    /// An exchange rate that is zero, negative or malformed.
    #[error("malformed rate `{0}`: expected a positive decimal such as `1.0834`")]
    BadRate(String),
}

/// An ISO-4217 currency with a defined number of minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// From a three-letter code such as `EUR`.
    pub fn from_code(code: &str) -> Result<Currency, MoneyError> {
        let c = iso_currency::Currency::from_code(code)
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))?;
        if c.exponent().is_none() {
            return Err(MoneyError::UnknownCurrency(code.to_string()));
        }
        Ok(Currency(c))
    }

    /// The three-letter code.
    pub fn code(&self) -> &'static str {
        self.0.code()
    }

    /// Digits after the decimal point (2 for EUR, 0 for JPY, 3 for BHD).
    pub fn exponent(&self) -> u32 {
        // Invariant: `from_code` refuses currencies without an exponent.
        u32::from(self.0.exponent().unwrap_or(0))
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::from_code(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Reads the code where it lies (no copy of it: every amount read has one).
        struct Code;
        impl serde::de::Visitor<'_> for Code {
            type Value = Currency;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a three-letter ISO-4217 currency code")
            }
            fn visit_str<E: serde::de::Error>(self, code: &str) -> Result<Currency, E> {
                Currency::from_code(code).map_err(E::custom)
            }
        }
        d.deserialize_str(Code)
    }
}

/// An amount of money: minor units and their currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Amount {
    /// Count of minor units; may be negative for balances.
    pub minor: i64,
    /// The currency the units belong to.
    pub currency: Currency,
}

impl Amount {
    /// `minor` units of `currency`.
    pub fn new(minor: i64, currency: Currency) -> Amount {
        Amount { minor, currency }
    }

    /// `self + other`, same currency, checked.
    pub fn checked_add(self, other: Amount) -> Result<Amount, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Amount {
            minor,
            currency: self.currency,
        })
    }

    /// `self - other`, same currency, checked.
    pub fn checked_sub(self, other: Amount) -> Result<Amount, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Amount {
            minor,
            currency: self.currency,
        })
    }

    fn same_currency(self, other: Amount) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }

    /// Parses the decimal part of `12.50` for `currency` into minor units.
    pub fn parse_decimal(text: &str, currency: Currency) -> Result<Amount, MoneyError> {
        let malformed = || MoneyError::Malformed(text.to_string());
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, frac) = match digits.split_once('.') {
            Some((w, f)) => (w, f),
            None => (digits, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(frac) {
            return Err(malformed());
        }
        if digits.contains('.') && frac.is_empty() {
            return Err(malformed());
        }
        let exponent = currency.exponent();
        if frac.len() > exponent as usize {
            return Err(MoneyError::TooPrecise {
                text: text.to_string(),
                exponent,
                currency,
            });
        }
        let scale = 10_i64.checked_pow(exponent).ok_or(MoneyError::Overflow)?;
        let whole: i64 = whole.parse().map_err(|_| MoneyError::Overflow)?;
        let mut frac_minor: i64 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| malformed())?
        };
        for _ in frac.len()..exponent as usize {
            frac_minor *= 10;
        }
        let minor = whole
            .checked_mul(scale)
            .and_then(|m| m.checked_add(frac_minor))
            .ok_or(MoneyError::Overflow)?;
        Ok(Amount {
            minor: if negative { -minor } else { minor },
            currency,
        })
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let exponent = self.currency.exponent();
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        if exponent == 0 {
            return write!(f, "{sign}{abs} {}", self.currency);
        }
        let scale = 10_u64.pow(exponent);
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            abs / scale,
            abs % scale,
            self.currency,
            width = exponent as usize
        )
    }
}

impl FromStr for Amount {
    type Err = MoneyError;
    /// Parses `12.50 EUR` (also `EUR 12.50`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [a, b] = parts.as_slice() else {
            return Err(MoneyError::Malformed(s.to_string()));
        };
        let (number, code) = if a.len() == 3 && a.bytes().all(|c| c.is_ascii_alphabetic()) {
            (*b, *a)
        } else {
            (*a, *b)
        };
        let currency = Currency::from_code(code)?;
        Amount::parse_decimal(number, currency)
    }
}

/// An exchange rate as an exact ratio `numerator / denominator` of target minor units per
/// source minor unit, so conversion is integer arithmetic with one documented rounding (down,
/// in favour of the operator's liquidity account).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// Target minor units…
    pub numerator: i64,
    /// …per this many source minor units. Always > 0.
    pub denominator: i64,
}

impl Rate {
    /// A positive decimal rate in major units (`1.0834` USD per EUR) between two currencies,
    /// scaled for their minor-unit exponents.
    pub fn parse(text: &str, from: Currency, to: Currency) -> Result<Rate, MoneyError> {
        let bad = || MoneyError::BadRate(text.to_string());
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty()
            || frac.len() > 12
            || !whole
                .bytes()
                .chain(frac.bytes())
                .all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let digits: i64 = format!("{whole}{frac}").parse().map_err(|_| bad())?;
        if digits <= 0 {
            return Err(bad());
        }
        let frac_scale = 10_i64.checked_pow(frac.len() as u32).ok_or_else(bad)?;
        // minor_to = minor_from * rate * 10^to_exp / 10^from_exp
        let to_scale = 10_i64.pow(to.exponent());
        let from_scale = 10_i64.pow(from.exponent());
        let numerator = digits.checked_mul(to_scale).ok_or_else(bad)?;
        let denominator = frac_scale.checked_mul(from_scale).ok_or_else(bad)?;
        Ok(Rate {
            numerator,
            denominator,
        })
    }

    /// `minor * numerator / denominator`, rounded down, checked.
    pub fn convert(&self, minor: i64) -> Result<i64, MoneyError> {
        if self.denominator <= 0 || self.numerator <= 0 {
            return Err(MoneyError::BadRate(format!(
                "{}/{}",
                self.numerator, self.denominator
            )));
        }
        let wide = i128::from(minor) * i128::from(self.numerator) / i128::from(self.denominator);
        i64::try_from(wide).map_err(|_| MoneyError::Overflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        Currency::from_code("EUR").expect("EUR is ISO-4217")
    }

    #[test]
    fn displays_and_parses_in_minor_units() {
        let cases = [
            ("12.50 EUR", 1250, "12.50 EUR"),
            ("12.5 EUR", 1250, "12.50 EUR"),
            ("12 EUR", 1200, "12.00 EUR"),
            ("-0.05 EUR", -5, "-0.05 EUR"),
            ("EUR 1.01", 101, "1.01 EUR"),
            ("100 JPY", 100, "100 JPY"),
            ("1.234 BHD", 1234, "1.234 BHD"),
        ];
        for (text, minor, shown) in cases {
            let a: Amount = text.parse().expect(text);
            assert_eq!(a.minor, minor, "{text}");
            assert_eq!(a.to_string(), shown, "{text}");
        }
    }

    #[test]
    fn refuses_malformed_and_imprecise_amounts() {
        for bad in [
            "",
            "12.50",
            "EUR",
            "1.2.3 EUR",
            "1,50 EUR",
            "12. EUR",
            ".5 EUR",
            "+1 EUR",
            "1e3 EUR",
        ] {
            assert!(bad.parse::<Amount>().is_err(), "{bad:?} must be refused");
        }
        assert!(matches!(
            "1.505 EUR".parse::<Amount>(),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert!(matches!(
            "1.5 JPY".parse::<Amount>(),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert!(matches!(
            "1 XYZ".parse::<Amount>(),
            Err(MoneyError::UnknownCurrency(_))
        ));
        assert!(matches!(
            "1 XAU".parse::<Amount>(),
            Err(MoneyError::UnknownCurrency(_))
        ));
        assert!(matches!(
            "99999999999999999999 EUR".parse::<Amount>(),
            Err(MoneyError::Overflow)
        ));
    }

    #[test]
    fn arithmetic_is_checked() {
        let max = Amount::new(i64::MAX, eur());
        assert_eq!(
            max.checked_add(Amount::new(1, eur())),
            Err(MoneyError::Overflow)
        );
        let usd = Currency::from_code("USD").expect("USD");
        assert!(matches!(
            Amount::new(1, eur()).checked_add(Amount::new(1, usd)),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
        assert_eq!(
            Amount::new(5, eur())
                .checked_sub(Amount::new(7, eur()))
                .map(|a| a.minor),
            Ok(-2)
        );
    }

    #[test]
    fn rates_convert_between_exponents_rounding_down() {
        let jpy = Currency::from_code("JPY").expect("JPY");
        let rate = Rate::parse("161.5", eur(), jpy).expect("rate");
        // 10.00 EUR = 1000 minor -> 1615 JPY
        assert_eq!(rate.convert(1000), Ok(1615));
        let back = Rate::parse("0.0062", jpy, eur()).expect("rate");
        // 1615 JPY * 0.0062 = 10.013 EUR -> 1001 cents (rounded down)
        assert_eq!(back.convert(1615), Ok(1001));
        assert!(Rate::parse("0", eur(), jpy).is_err());
        assert!(Rate::parse("-1", eur(), jpy).is_err());
        assert!(Rate::parse("abc", eur(), jpy).is_err());
    }

    #[test]
    fn serde_uses_codes_and_integers() {
        let a = Amount::new(1250, eur());
        let json = serde_json::to_string(&a).expect("serialize");
        assert_eq!(json, r#"{"minor":1250,"currency":"EUR"}"#);
        let back: Amount = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, a);
        assert!(serde_json::from_str::<Amount>(r#"{"minor":1,"currency":"ZZZ"}"#).is_err());
        // A code read where it lies, from an owned value, or spelled with an escape; not a
        // number, not a code without minor units.
        let value = serde_json::json!({"minor": 1, "currency": "JPY"});
        let jpy: Amount = serde_json::from_value(value).expect("from a value");
        assert_eq!(jpy.currency.code(), "JPY");
        let escaped: Currency = serde_json::from_str(r#""E\u0055R""#).expect("escaped");
        assert_eq!(escaped, eur());
        for bad in ["12", r#""XAU""#, r#""eur""#, "null"] {
            assert!(serde_json::from_str::<Currency>(bad).is_err(), "{bad}");
        }
    }
}
