//! The `writ` CLI's library half: what the subcommands share and the integration tests
//! reach directly (policy test files, coverage). `main.rs` stays a thin dispatcher.

pub mod audit_log;
pub mod coverage;
pub mod diff;
pub mod engine;
pub mod explain;
pub mod fleet;
pub mod guardrail_events;
pub mod identity;
pub mod oci;
pub mod policy_tests;
pub mod review;
pub mod trust;
pub mod wasm_plugin;
