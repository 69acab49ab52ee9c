use thiserror::Error;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("storage engine error: {0}")]
    Engine(#[from] sled::Error),
    #[error("data directory {path} is locked by another process (is another tokaroo server running on it?)")]
    Locked { path: String },
    #[error("could not open data directory {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("schema version mismatch: data has version {found}, this build expects {expected}")]
    SchemaVersion { found: u32, expected: u32 },
    #[error("record in tree `{tree}` has format version {found}, this build reads {expected}")]
    FormatVersion { tree: String, found: u8, expected: u8 },
    #[error("corrupt record in tree `{tree}`: {detail}")]
    Corrupt { tree: String, detail: String },
    #[error("a stored transaction conflicted; retry")]
    Conflict,
    #[error("storage flush failed: {0}")]
    Flush(String),
    #[error("storage is closed (the server is shutting down)")]
    Closed,
    /// A caller's mistake the store refuses (an id that cannot name a file).
    #[error("{0}")]
    Invalid(String),
}
