//! Policy tests: the `.tests.yaml` format next to each policy, the expectations, and the
//! JUnit report. `writ test` runs them against the compiled artifact in the wasmtime host.

pub mod expect;
pub mod format;
pub mod junit;
pub mod run;
