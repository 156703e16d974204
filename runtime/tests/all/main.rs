//! Integration tests of writ-runtime: one binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod gateway;
mod host_abi;
mod limits;
mod perf;
