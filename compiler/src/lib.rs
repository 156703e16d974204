//! writ-compiler: from `.policy` source to a checked AST, to the engine's IR, to a linked,
//! reproducible `.wasm` artifact.
//!
//! Pipeline, one module per stage: `syntax` (the only module that knows pest) → `check`
//! (names, types, conflicts; collects every diagnostic) → `lower` (checked AST to
//! `writ_plugin::ir`) → `link` (IR + engine wasm → artifact + manifest). `diag` renders
//! diagnostics rustc-style; `fmt` prints the canonical layout.

pub mod link;

use writ_plugin::ir;

/// A rule's place in its source, carried into the manifest so audits and coverage can point
/// at the line that enforces a clause.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuleInfo {
    /// The paper policy's clause id the rule cites, e.g. `AIP-3.1`.
    pub clause: String,
    pub title: String,
    /// 1-based line and column of the `rule` keyword.
    pub line: u32,
    pub column: u32,
    /// Byte range of the whole rule in the source.
    pub start: u32,
    pub end: u32,
}

/// A clause the policy declares enforced outside the gateway.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManualClause {
    pub clause: String,
    pub title: String,
    pub owner: String,
    pub reason: String,
    pub line: u32,
}

/// Everything `writ build` needs from a checked policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// The IR the engine evaluates; `rules[i]` corresponds to `rule_info[i]`.
    pub policy: ir::Policy,
    pub rule_info: Vec<RuleInfo>,
    pub manual: Vec<ManualClause>,
    pub owner: String,
    /// The paper policy path as written in the source (relative to the `.policy` file).
    pub implements: String,
    /// Non-fatal diagnostics (warnings) found while compiling.
    pub warnings: Vec<String>,
}

/// Compiles one policy source. `path` is used only in diagnostics. On error, returns every
/// diagnostic already rendered rustc-style (no colour).
pub fn compile(path: &str, source: &str) -> Result<Compiled, Vec<String>> {
    let _ = (path, source);
    Err(vec!["error: the front end is not implemented yet".to_string()])
}
