//! The enforcement engine, prebuilt for `wasm32-unknown-unknown` by `build.rs` and embedded
//! in the CLI, so `writ build` links artifacts without a Rust toolchain.

/// The unlinked engine module: `writ build` appends a compiled policy to it.
pub static ENGINE_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/engine.wasm"));
