//! The one integration-test binary of the `writ` package: one module per area, so the
//! end-to-end tests link once.

// Tests report failure by panicking; these lints guard library code, not assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod apis_e2e;
mod artifact;
mod budget_concurrency;
mod check;
mod coverage;
mod enforcement;
mod envoy;
mod envoy_audit;
mod explain;
mod fallback;
mod fallback_envoy;
mod families;
mod fleet;
mod fleet_review;
mod fuzz_agree;
mod host_calls;
mod hostile;
mod identity;
mod init;
mod mcp_e2e;
mod metrics;
mod otel;
mod package;
mod pii_carriers_e2e;
mod pii_e2e;
mod policy_suite;
mod rate_limits;
mod review;
mod serve_audit;
mod signing;
mod support;
mod tools_apis_e2e;
mod tools_e2e;
mod verdicts;
mod versions;
