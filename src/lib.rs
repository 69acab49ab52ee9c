//! The `tokaroo` binary's library: configuration, the HTTP API (axum) and start-up.
//! Only this crate knows axum and Tokaroo's wire JSON.
// Tests may spawn freely; production code is held to the allow-list (clippy.toml).
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod cli;
pub mod config;
pub mod http;
pub mod listener;
pub mod models;
pub mod server;
