//! Integration tests: each test starts the real `tokaroo` binary on a random loopback port
//! with a temporary data directory and talks to it over HTTP.
#![allow(clippy::disallowed_methods)] // a test harness spawns its own clients and servers

mod fakes;
mod fakes_stripe;
mod harness;
mod images;

mod actions;
mod auth_and_errors;
mod billing;
mod breakers;
mod cache;
mod chat_simulator;
mod conformance;
mod connections;
mod credentials;
mod embedder;
mod foundation;
mod hostile;
mod http_limits;
mod keys_and_workspaces;
mod knowledge_reply;
mod ledger;
mod memory;
mod memory_graph;
mod missions;
mod money_once;
mod payments;
mod rate_limits;
mod sdk_clients;
mod semantic_cache;
mod sources;
mod speech;
mod storage_stress;
mod supervision;
mod traces;
mod url;
