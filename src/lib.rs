//! The `tokaroo` binary's library: configuration, the HTTP API (axum) and start-up.
//! Only this crate knows axum and Tokaroo's wire JSON.

pub mod cli;
pub mod config;
pub mod http;
pub mod listener;
pub mod server;
