//! Inputs the criterion benches share: the bundled policies, the engine module the
//! artifacts are linked from, generated policies of a given size, and the artifacts.

use std::path::PathBuf;

/// The workspace root (the benches crate's parent directory).
pub fn root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// The bundled policies, `(file name, source)`, in name order.
pub fn bundled_policies() -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir(root().join("policies")) {
        for e in dir.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "policy")
                && let Ok(src) = std::fs::read_to_string(&p)
            {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push((name, src));
            }
        }
    }
    out.sort();
    out
}

/// The per-user rate limit of `support-assistant` (AIP-4.5), and what the benches raise it
/// to: a bench sends thousands of requests a minute as one user, which the bundled cap of
/// 60 would answer 429. Raised, the rule still runs and counts every request; it never
/// fires. `benches/run.sh` applies the same change to the artifact the wire bench loads.
const RATE_LIMIT: (&str, &str) = (
    "requests(user, minute) > 60\n",
    "requests(user, minute) > 1000000000\n",
);

/// One bundled policy's source, as the benches run it (see [`RATE_LIMIT`]).
pub fn policy_source(name: &str) -> anyhow::Result<String> {
    let source = std::fs::read_to_string(root().join("policies").join(format!("{name}.policy")))?;
    if name == "support-assistant" {
        anyhow::ensure!(
            source.contains(RATE_LIMIT.0),
            "support-assistant.policy no longer says `{}`; update benches/src/fixtures.rs",
            RATE_LIMIT.0.trim()
        );
        return Ok(source.replace(RATE_LIMIT.0, RATE_LIMIT.1));
    }
    Ok(source)
}

/// The engine module `writ build` links policies into: `$WRIT_ENGINE_WASM`, else the one
/// the root `build.rs` leaves in `target/engine` (run `cargo build -p writ` first).
pub fn engine_wasm() -> anyhow::Result<Vec<u8>> {
    let path = match std::env::var_os("WRIT_ENGINE_WASM") {
        Some(p) => PathBuf::from(p),
        None => root().join("target/engine/wasm32-unknown-unknown/release/writ_plugin.wasm"),
    };
    std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the engine at {}: {e} (build writ first, or set WRIT_ENGINE_WASM)",
            path.display()
        )
    })
}

/// The pass-through proxy-wasm filter, built by `benches/run.sh` (or `$WRIT_PASSTHROUGH_WASM`).
pub fn passthrough_wasm() -> anyhow::Result<Vec<u8>> {
    let path = match std::env::var_os("WRIT_PASSTHROUGH_WASM") {
        Some(p) => PathBuf::from(p),
        None => root().join(
            "benches/passthrough-filter/target/wasm32-unknown-unknown/release/passthrough_filter.wasm",
        ),
    };
    std::fs::read(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// Compiles a policy source, errors rendered.
pub fn compile(name: &str, source: &str) -> anyhow::Result<writ_compiler::Compiled> {
    writ_compiler::compile(name, source).map_err(|d| anyhow::anyhow!("{}", d.render(name, source)))
}

/// Compiles and links a bundled policy into its artifact bytes.
pub fn artifact(name: &str) -> anyhow::Result<Vec<u8>> {
    let compiled = compile(name, &policy_source(name)?)?;
    Ok(writ_compiler::link::link(&engine_wasm()?, &compiled)?.wasm)
}

/// A policy of `rules` rules shaped like real ones: model allowlists, token caps, header
/// checks, PII and custom-detector rules in rotation, so build cost grows with every
/// stage (parse, check, lower, detector compilation, link).
pub fn generated_policy(rules: usize) -> String {
    let mut s = String::from(
        "policy \"generated\" version \"1.0.0\" {\n  owner \"bench@example.com\"\n  implements \"ai-policy.md\"\n  currency EUR\n}\n\n\
         workflow \"gen\" {\n  match header \"x-workflow\" == \"gen\"\n  identify team by trusted header \"x-jwt-team\", user by trusted header \"x-jwt-sub\"\n}\n\n\
         price \"gpt-4o-mini\" input 0.15 EUR output 0.60 EUR per 1M tokens\n\n",
    );
    for i in 0..rules.div_ceil(5) {
        s.push_str(&format!("detector d{i} = regex \"ID{i}-[0-9]{{6}}\"\n"));
    }
    s.push('\n');
    for i in 0..rules {
        let body = match i % 5 {
            0 => format!(
                "  on request\n  when model not in [\"gpt-4o-mini\", \"m{i}\"]\n  then deny 403 \"model {i}\""
            ),
            1 => format!(
                "  on request\n  when max_tokens > {}\n  then deny 400 \"cap {i}\"",
                1000 + i
            ),
            2 => format!(
                "  on request\n  when header \"x-h{i}\" == \"v{i}\"\n  then deny 403 \"header {i}\""
            ),
            3 => "  on request\n  when prompt has pii(email, iban)\n  then redact".to_string(),
            _ => format!(
                "  on request\n  when prompt has pii(d{})\n  then redact",
                i / 5
            ),
        };
        s.push_str(&format!(
            "rule GEN-{i} \"Generated rule {i}\" {{\n{body}\n}}\n\n"
        ));
    }
    s
}

/// A policy of `rules` rules with the variety the rule-relation checks look at: per-team
/// model allowlists, routes, exceptions (`allow`), budgets, token caps, header and path
/// rules, detector rules, drawn from small domains (60 teams, 24 models, 30 paths, 20
/// custom detectors) so that rules share fields and values, and some pairs really do
/// shadow, conflict or overlap. The custom detectors stay at 20 whatever the size, so the
/// time measured is the checks' and not regex compilation's.
pub fn varied_policy(rules: usize) -> String {
    let mut s = String::from(
        "policy \"varied\" version \"1.0.0\" {\n  owner \"bench@example.com\"\n  implements \"ai-policy.md\"\n  currency EUR\n}\n\n\
         workflow \"gen\" {\n  match header \"x-workflow\" == \"gen\"\n  identify team by trusted header \"x-jwt-team\", user by trusted header \"x-jwt-sub\"\n}\n\n",
    );
    for m in 0..24 {
        s.push_str(&format!(
            "price \"m{m}\" input 0.{m:02} EUR output 1.{m:02} EUR per 1M tokens\n"
        ));
    }
    s.push('\n');
    for d in 0..20 {
        s.push_str(&format!("detector d{d} = regex \"ID{d}-[0-9]{{6}}\"\n"));
    }
    s.push('\n');
    for i in 0..rules {
        let team = i % 60;
        let model = (i * 7) % 24;
        let other = (i * 11 + 5) % 24;
        let body = match i % 10 {
            0 => format!(
                "  on request\n  when team == \"t{team}\" and model not in [\"m{model}\", \"m{other}\"]\n  then deny 403 \"team {team}: model not approved\""
            ),
            1 => format!(
                "  on request\n  when team == \"t{team}\" and max_tokens > {}\n  then deny 400 \"cap {i}\"",
                1000 + (i * 37) % 8000
            ),
            2 => format!(
                "  on request\n  when header \"x-h{}\" == \"v{}\"\n  then deny 403 \"header {i}\"",
                i % 100,
                i % 7
            ),
            3 => format!(
                "  on request\n  when team == \"t{team}\" and prompt has pii(email, iban)\n  then tokenise"
            ),
            4 => format!(
                "  on request\n  when team == \"t{team}\" and model == \"m{other}\"\n  then route to \"m{model}\""
            ),
            5 => format!(
                "  on request\n  when team == \"t{team}\" and user == \"u{}\"\n  then allow",
                i % 500
            ),
            6 => format!(
                "  on request\n  when team == \"t{team}\" and spend(team, month) > {} EUR\n  then deny 429 \"budget {i}\"",
                100 * (1 + i % 40)
            ),
            7 => format!(
                "  on request\n  when path == \"/v1/p{}\" and method == \"POST\"\n  then tag \"route\" = \"p{i}\"",
                i % 30
            ),
            8 => format!(
                "  on response\n  when team == \"t{team}\" and response has pii(d{})\n  then redact",
                i % 20
            ),
            _ => format!(
                "  on request\n  when model in [\"m{model}\", \"m{other}\"] and stream\n  then route to cheapest [\"m{model}\", \"m{other}\"]"
            ),
        };
        s.push_str(&format!(
            "rule GEN-{i} \"Generated rule {i}\" {{\n{body}\n}}\n\n"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_policies_compile() {
        for n in [10, 100] {
            let src = generated_policy(n);
            let result = compile("gen.policy", &src);
            assert!(result.is_ok(), "{result:?}\n{src}");
        }
    }

    /// The varied policy compiles, and its rules do meet: the relation checks have
    /// findings to report, so the bench exercises them.
    #[test]
    fn varied_policies_compile_and_their_rules_meet() {
        let src = varied_policy(1000);
        let result = compile("varied.policy", &src);
        assert!(result.is_ok(), "{result:?}");
        let diags = writ_compiler::check("varied.policy", &src);
        for code in ["W0001", "W0008", "W0009"] {
            assert!(
                diags.iter().any(|d| d.code.id() == code),
                "no {code} in {:?}",
                diags.iter().map(|d| d.code.id()).collect::<Vec<_>>()
            );
        }
    }
}
