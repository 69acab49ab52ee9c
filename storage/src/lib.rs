//! Tokaroo's durable records. Only this crate knows on-disk formats: sled trees, the key
//! encoding (tuples with big-endian integers, so range scans follow time) and the value
//! envelope (a format-version byte before the JSON body).
// Tests may spawn freely; production code is held to the allow-list (clippy.toml).
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod actions;
mod collection;
mod error;
mod flusher;
pub mod harness;
mod key;
pub mod knowledge;
pub mod ledger;
pub mod media;
pub mod records;
mod store;
pub mod text_index;
pub mod url;
pub mod wal;

pub use collection::{Collection, Record};
pub use error::StorageError;
pub use flusher::FlusherStatus;
pub use key::{KeyPart, KeyTuple};
pub use store::{Store, SCHEMA_VERSION};
