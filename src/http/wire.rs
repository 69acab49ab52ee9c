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
