//! Small pieces shared by the wire types of several route modules.

use serde::{Deserialize, Deserializer};

/// For PATCH bodies: absent → `None`, `null` → `Some(None)`, a value → `Some(Some(v))`.
pub fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

pub fn iso(ms: i64) -> String {
    tokaroo_actors::clock::iso8601(ms)
}

/// `x-tokaroo-cost`: USD at the ledger's precision, so it equals the usage row's `charged_usd`.
pub fn cost_header(usd: f64) -> axum::http::HeaderValue {
    axum::http::HeaderValue::from_str(&format!("{usd:.10}")).expect("a formatted number is a valid header value")
}

/// RFC 3339 in UTC with microsecond precision: usage rows' `created_at`, which is also the
/// `before` cursor, so it must round-trip exactly.
pub fn iso_us(us: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    t.format(&f).unwrap_or_default()
}

/// Parses an RFC 3339 timestamp to unix microseconds.
pub fn parse_iso_us(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000).ok()
}

/// USD from the ledger's integer units.
pub fn usd(units: i64) -> f64 {
    tokaroo_actors::money::billing::units_to_usd(units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsecond_timestamps_round_trip() {
        let us = 1_795_909_196_123_456;
        assert_eq!(iso_us(us), "2026-11-28T23:39:56.123456Z");
        assert_eq!(parse_iso_us(&iso_us(us)), Some(us));
        assert_eq!(parse_iso_us("2026-11-28T23:39:56Z"), Some(1_795_909_196_000_000));
        assert_eq!(parse_iso_us("yesterday"), None);
    }
}
