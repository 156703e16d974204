//! writ-plugin: the enforcement engine compiled into every writ artifact.
//!
//! Architecture invariant: everything except `filter` is plain Rust with no host calls, so
//! it builds natively and is unit-tested and benchmarked without a wasm host; only
//! `filter` (wasm32 only) touches proxy-wasm.

pub mod detect;
pub mod ir;
