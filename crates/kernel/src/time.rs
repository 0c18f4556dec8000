//! `Timestamp`: microseconds since the Unix epoch, UTC, in an `i64`.
//!
//! One integer is exact, sorts, and stores as `BIGINT` on both SQLite and PostgreSQL. Only the
//! edges (server, CLI) call [`Timestamp::now`]; everything else receives `now` as an argument,
//! which keeps protocol and ledger code deterministic under test.

use serde::{Deserialize, Serialize};

/// Microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The wall clock. Call only at the edges.
    pub fn now() -> Timestamp {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
    }

    /// Microseconds since the epoch.
    pub fn as_micros(self) -> i64 {
        self.0
    }

    /// This instant plus `seconds` (saturating).
    pub fn plus_seconds(self, seconds: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(seconds.saturating_mul(1_000_000)))
    }

    /// This instant plus `micros` (saturating).
    pub fn plus_micros(self, micros: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(micros))
    }

    /// Parses RFC 3339 text (`2026-11-01T00:00:00Z`); `None` if malformed or out of range.
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        let t =
            ::time::OffsetDateTime::parse(text, &::time::format_description::well_known::Rfc3339)
                .ok()?;
        i64::try_from(t.unix_timestamp_nanos() / 1000)
            .ok()
            .map(Timestamp)
    }

    /// RFC 3339 text, e.g. `2026-11-22T01:58:51.123456Z`.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1000;
        match ::time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => t
                .format(&::time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| self.0.to_string()),
            Err(_) => self.0.to_string(),
        }
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_refuses_garbage() {
        let t = Timestamp(1_795_000_000_123_456);
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-01T00:00:00Z"),
            Some(Timestamp(1_793_491_200_000_000))
        );
        assert_eq!(Timestamp::parse_rfc3339("2026-13-01"), None);
    }

    #[test]
    fn formats_as_rfc3339() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(1_500_000).to_rfc3339(), "1970-01-01T00:00:01.5Z");
        assert_eq!(Timestamp(5).plus_seconds(2), Timestamp(2_000_005));
        assert_eq!(Timestamp(i64::MAX).plus_seconds(1), Timestamp(i64::MAX));
    }
}
