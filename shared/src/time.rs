//! Wall-clock timestamps: epoch milliseconds inside, RFC 3339 UTC with milliseconds on the wire.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time with millisecond precision, written as `2026-11-25T18:00:00.123Z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        Self(i64::try_from(ms).unwrap_or(i64::MAX))
    }

    pub fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// RFC 3339, UTC, exactly three fractional digits, `Z`.
    pub fn to_rfc3339(self) -> String {
        let t = UNIX_EPOCH + Duration::from_millis(self.0.max(0) as u64);
        humantime::format_rfc3339_millis(t).to_string()
    }

    /// Accepts any RFC 3339 UTC time (`Z`), with or without fractional seconds.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = humantime::parse_rfc3339_weak(s).ok()?;
        let ms = t.duration_since(UNIX_EPOCH).ok()?.as_millis();
        i64::try_from(ms).ok().map(Self)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 UTC time"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_millis() {
        let t = Timestamp::parse_rfc3339("2026-11-25T18:00:00.123Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-25T18:00:00.123Z");
        let whole = Timestamp::parse_rfc3339("2026-11-25T18:00:00Z").unwrap();
        assert_eq!(whole.to_rfc3339(), "2026-11-25T18:00:00.000Z");
        assert!(Timestamp::parse_rfc3339("yesterday").is_none());
    }
}
