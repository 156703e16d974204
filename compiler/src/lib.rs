//! writ-compiler: from `.policy` source to a checked AST, to the engine's IR, to a linked,
//! reproducible `.wasm` artifact.
//!
//! Pipeline, one module per stage: `syntax` (the only module that knows pest) → `check`
//! (names, types, conflicts; collects every diagnostic and, on a file without errors,
//! resolves every name once into the tree of `resolved`) → `lower` (resolved tree to
//! `writ_plugin::ir`; total) → `link` (IR + engine wasm → artifact + manifest). `diag`
//! renders diagnostics rustc-style; `fmt` prints the canonical layout.

pub mod link;

pub mod ast;
mod check;
pub mod diag;
mod fmt;
/// Fuzz targets and their smoke runs (tests and the `fuzzing` feature only; see `docs/fuzzing.md`).
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
mod lower;
mod resolved;
pub mod rollout;
mod syntax;

pub use diag::{Diagnostic, Diagnostics, Severity};
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
    /// Each workflow's rollout pack, in workflow order: metadata for `writ review`, not
    /// compiled into the artifact.
    pub rollout: Vec<rollout::Pack>,
    /// Non-fatal diagnostics (warnings) found while compiling; render them with
    /// [`Diagnostics::render`] and the source.
    pub warnings: Diagnostics,
}

/// Compiles one policy source. On error, returns every diagnostic (errors and warnings),
/// typed and located, in source order; [`Diagnostics::render`] prints them rustc-style.
/// `path` is accepted for symmetry with [`check`]; diagnostics carry spans, not paths.
pub fn compile(path: &str, source: &str) -> Result<Compiled, Diagnostics> {
    let _ = path;
    let (_, diags, checked) = parse_and_check(source);
    // The check resolves a policy only when it found no error, so no checked policy is
    // refused here, and lowering cannot fail.
    match checked {
        Some(checked) => {
            let mut compiled = lower::lower(checked, source);
            compiled.warnings = Diagnostics(diags);
            Ok(compiled)
        }
        None => Err(Diagnostics(diags)),
    }
}

/// Every problem in a policy, errors and warnings, in source order. With syntax errors,
/// the items that parsed are still checked for problems of their own; checks that depend
/// on the whole file (names, prices, the header, rule relations) wait until it parses.
pub fn check(path: &str, source: &str) -> Vec<Diagnostic> {
    let _ = path;
    parse_and_check(source).1
}

/// [`check`] plus the paper policy: `read` is given the `implements` path as written and
/// returns the paper's text, or why it cannot (the compiler itself stays free of I/O). A
/// paper that cannot be read is an error ([`diag::codes::PAPER_NOT_FOUND`]) at the
/// `implements` string. The source is parsed once for both.
pub fn check_with_paper(
    path: &str,
    source: &str,
    read: impl Fn(&str) -> Result<String, String>,
) -> Vec<Diagnostic> {
    let _ = path;
    let (file, mut diags, _) = parse_and_check(source);
    for item in &file.items {
        let ast::Item::Policy(p) = &item.node else {
            continue;
        };
        for stmt in &p.stmts {
            if let ast::PolicyStmt::Implements(implements) = &stmt.node
                && !implements.node.trim().is_empty()
                && let Err(why) = read(&implements.node)
            {
                diags.push(
                    Diagnostic::new(
                        diag::codes::PAPER_NOT_FOUND,
                        format!("the paper policy `{}` cannot be read", implements.node),
                        implements.span,
                        why,
                    )
                    .help("the path is relative to this `.policy` file; the paper must exist for its clause ids to be checked"),
                );
            }
        }
    }
    diags
}

/// At most this many diagnostics are reported per file: past it, the rest are the same
/// damage repeated, and rendering thousands of them only buries the first.
pub const MAX_DIAGNOSTICS: usize = 200;

/// The parsed file, its diagnostics, and the resolved tree when the file checks clean.
fn parse_and_check(source: &str) -> (ast::File, Vec<Diagnostic>, Option<resolved::Checked>) {
    let (file, mut diags) = syntax::parse(source);
    let mut found = None;
    if diags.is_empty() {
        (diags, found) = check::check_and_resolve(&file);
    } else {
        // The items that did parse are still checked, but only for problems local to
        // them: anything that depends on the file's declarations (names, prices, the
        // header) or on all its rules (warnings) could be an echo of the broken item.
        use diag::codes::*;
        let depends_on_others = [
            MISSING_HEADER,
            MISSING_OWNER,
            MISSING_IMPLEMENTS,
            UNKNOWN_WORKFLOW,
            UNKNOWN_DETECTOR,
            CLASS_MISMATCH,
            ROUTE_WITHOUT_PRICE,
            CURRENCY_MISMATCH,
            DUPLICATE_ITEM,
            ROUTE_TO_DENIED_MODEL,
            FALLBACK_WITHOUT_PRICE,
            FALLBACK_TO_DENIED_MODEL,
        ];
        diags.extend(
            check::check(&file)
                .into_iter()
                .filter(|d| d.is_error() && !depends_on_others.contains(&d.code)),
        );
    }
    diag::sort(&mut diags);
    diags.truncate(MAX_DIAGNOSTICS);
    (file, diags, found)
}

/// Parses a policy into its AST, with syntax errors only.
pub fn parse(source: &str) -> (ast::File, Vec<Diagnostic>) {
    let (file, mut diags) = syntax::parse(source);
    diag::sort(&mut diags);
    diags.truncate(MAX_DIAGNOSTICS);
    (file, diags)
}

/// Renders diagnostics rustc-style with a fixed layout and no colour (see [`diag::render`]).
pub fn render(path: &str, source: &str, diags: &[Diagnostic]) -> String {
    diag::render(path, source, diags)
}

/// The canonical layout of a policy, for `writ fmt`. Refuses (with the syntax errors) a
/// source that does not parse, since it cannot be laid out without losing text.
pub fn format(source: &str) -> Result<String, Diagnostics> {
    let (file, mut diags) = syntax::parse(source);
    if diags.is_empty() {
        Ok(fmt::print_file(&file, source))
    } else {
        diag::sort(&mut diags);
        diags.truncate(MAX_DIAGNOSTICS);
        Err(Diagnostics(diags))
    }
}
