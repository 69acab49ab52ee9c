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
    tokaroo_actors::iso8601(ms)
}

/// `x-tokaroo-cost`: USD at the ledger's precision, so it equals the usage row's `charged_usd`.
pub fn cost_header(usd: f64) -> axum::http::HeaderValue {
    axum::http::HeaderValue::from_str(&format!("{usd:.10}")).expect("a formatted number is a valid header value")
}
