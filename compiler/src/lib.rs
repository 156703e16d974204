//! writ-compiler: from `.policy` source to a checked AST, to the engine's IR, to a linked,
//! reproducible `.wasm` artifact.
//!
//! Pipeline, one module per stage: `syntax` (the only module that knows pest) → `check`
//! (names, types, conflicts; collects every diagnostic) → `lower` (checked AST to
//! `writ_plugin::ir`) → `link` (IR + engine wasm → artifact + manifest). `diag` renders
//! diagnostics rustc-style; `fmt` prints the canonical layout.
