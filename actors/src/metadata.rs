//! Tenant-supplied `metadata` maps (workspaces, keys, missions, notes, ...): one size limit
//! for every record that carries one, since records are kept, listed and some held in
//! memory for good.

use serde_json::{Map, Value};

use crate::error::EngineError;

/// A record's `metadata`, serialized.
pub const MAX_METADATA_BYTES: usize = 16 << 10;

/// Refuses `metadata` larger than [`MAX_METADATA_BYTES`] as JSON, naming `field`.
pub fn check_metadata(field: &str, metadata: &Map<String, Value>) -> Result<(), EngineError> {
    let bytes = serde_json::to_vec(metadata).map(|b| b.len()).unwrap_or(usize::MAX);
    if bytes > MAX_METADATA_BYTES {
        return Err(EngineError::invalid(format!("{field} is {bytes} bytes as JSON; at most {MAX_METADATA_BYTES}")));
    }
    Ok(())
}
