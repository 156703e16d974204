//! writ-runtime: a wasmtime host for any proxy-wasm module (ABI 0.2.1) and the standalone
//! gateway built on it. Architecture invariant: this crate knows nothing of writ policies.
