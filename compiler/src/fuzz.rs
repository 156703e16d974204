//! Fuzz targets for the compiler, as library functions that panic when an oracle fails,
//! with `smoke` runs for `cargo test` (see `writ_plugin::fuzz` for the generator and
//! `docs/fuzzing.md` for the campaigns).
//!
//! Built only for tests and with the `fuzzing` feature, so none of it is part of the
//! compiler's normal API.
//!
//! | target | oracles |
//! |---|---|
//! | [`policy`] | parse, check and render never panic; the check resolves every policy it accepts (no internal error E0900); a policy that parses formats, and the formatted text formats to itself, parses, and checks to the same diagnostics (code, severity, message) |
//! | [`policy_lower`] | [`policy`], and a policy that checks compiles (lowering is total on the resolved tree) to the same IR as its formatted text (source lines and hash aside) |
//! | [`request`] | the engine's native request path ([`writ_plugin::fuzz::native_exchange`]) never panics on any headers and body, answers locally only with a documented status and a JSON error, and forwards JSON |

#![allow(
    clippy::panic,
    reason = "a fuzz target reports a failed oracle by panicking"
)]

use std::sync::OnceLock;

use writ_plugin::eval::Engine;
use writ_plugin::fuzz as pf;

/// What a diagnostic says, without where: the part of a check that formatting must not
/// change (spans move when the layout changes).
fn gist(d: &crate::Diagnostic) -> (String, bool, String) {
    (d.code.id().to_string(), d.is_error(), d.message.clone())
}

/// Fuzz target for the front end: parse, check, format, compile. Input that is not UTF-8
/// is read with replacement characters, as a file would be after a lossy read.
pub fn policy(data: &[u8]) {
    let source = String::from_utf8_lossy(data);
    let diags = crate::check("fuzz.policy", &source);
    let _ = crate::render("fuzz.policy", &source, &diags);
    // The check resolves every file it accepts; a name it accepted but cannot resolve is
    // reported as an internal error, which must never happen.
    assert!(
        !diags.iter().any(|d| d.code == crate::diag::codes::INTERNAL),
        "the check accepted a policy it cannot resolve: {}",
        crate::render("fuzz.policy", &source, &diags)
    );
    let Ok(formatted) = crate::format(&source) else {
        // Parsed only here, where it is needed: most mutants do not parse, and a parse is
        // most of an execution's cost.
        let (_, syntax) = crate::parse(&source);
        assert!(!syntax.is_empty(), "format refused a policy that parses");
        return;
    };
    let again = crate::format(&formatted).unwrap_or_else(|e| {
        panic!(
            "the formatted policy does not parse: {}\n--- formatted ---\n{formatted}",
            crate::render("formatted.policy", &formatted, &e.0)
        )
    });
    assert!(
        again == formatted,
        "format is not idempotent\n--- once ---\n{formatted}\n--- twice ---\n{again}"
    );
    if formatted == source {
        // The check is a function of the text: the same text checks the same.
        return;
    }
    let mut before: Vec<_> = diags.iter().map(gist).collect();
    let mut after: Vec<_> = crate::check("fuzz.policy", &formatted)
        .iter()
        .map(gist)
        .collect();
    before.sort();
    after.sort();
    assert!(
        before == after,
        "the formatted policy checks differently\nbefore: {before:?}\nafter:  {after:?}\n--- formatted ---\n{formatted}"
    );
}

/// [`policy`], then lowering: a policy that checks compiles (lowering is total on the
/// resolved tree), to the same IR as its formatted text. Separate because lowering builds
/// the custom detectors' DFAs, which takes milliseconds: AFL runs [`policy`] (thousands
/// of executions a second), the smoke run and `fuzz/run.sh policy_lower` this one.
pub fn policy_lower(data: &[u8]) {
    policy(data);
    let source = String::from_utf8_lossy(data);
    if crate::check("fuzz.policy", &source)
        .iter()
        .any(crate::Diagnostic::is_error)
    {
        return;
    }
    let Ok(formatted) = crate::format(&source) else {
        return;
    };
    let compiled = crate::compile("fuzz.policy", &source).unwrap_or_else(|e| {
        panic!(
            "a checked policy failed to compile: {}",
            e.render("fuzz.policy", &source)
        )
    });
    let reformatted = crate::compile("fuzz.policy", &formatted).unwrap_or_else(|e| {
        panic!(
            "the formatted policy failed to compile: {}",
            e.render("fuzz.policy", &formatted)
        )
    });
    // Rules carry their source line, which the layout may move, and the policy the hash
    // of its source text.
    let without_lines = |mut p: writ_plugin::ir::Policy| {
        p.rules.iter_mut().for_each(|r| r.line = 0);
        p.source_sha256.clear();
        p
    };
    let (a, b) = (
        without_lines(compiled.policy),
        without_lines(reformatted.policy),
    );
    assert!(
        a == b,
        "the formatted policy compiles to a different IR\n--- formatted ---\n{formatted}"
    );
}

/// Seeds for [`policy`] given in code; the bundled policies and the golden-file cases are
/// in the committed corpus.
const POLICY_SEEDS: &[&[u8]] = &[
    FUZZ_POLICY.as_bytes(),
    b"policy \"p\" version \"1.0.0\" {}\n",
    // The business case and the rollout pack (formatter round trip through the nested block).
    b"policy \"p\" version \"1.0.0\" { owner \"o\" implements \"a.md\" }\nworkflow \"w\" {\n  match header \"x\" == \"w\"\n  oversight HOTL below 0.70\n  assume verification_rate <= 10%\n  assume cost_per_transaction <= 1.10 EUR\n  review_cost 4.50 EUR\n  manual_cost 6.00 EUR\n  rollout {  # pack\n    dri \"d\"\n    # c\n    phase beta\n    approved_models [\"m\"]\n  }\n}\n",
];

/// Keywords and shapes a fuzzer is unlikely to guess byte by byte.
const POLICY_DICT: &[&[u8]] = &[
    b"policy ",
    b"version \"1.0.0\"",
    b"owner ",
    b"implements ",
    b"workflow ",
    b"rule ",
    b"detector ",
    b"price ",
    b"kill_switch ",
    b"manual ",
    b"on request",
    b"on response",
    b"when ",
    b"then ",
    b" and ",
    b" or ",
    b"not ",
    b" in ",
    b" == ",
    b" != ",
    b" < ",
    b" >= ",
    b"prompt has pii(email)",
    b"secret",
    b"header \"x\"",
    b"model",
    b"workflow",
    b"deny 403 \"no\"",
    b"tokenise",
    b"redact",
    b"allow",
    b"route to cheapest [\"a\"]",
    b"escalate \"q\" reason \"r\"",
    b"tag \"k\" = \"v\"",
    b"enforcement monitor",
    b"spend(team, month)",
    b"5000 EUR",
    b"80%",
    b"regex \"[a-z]+\"",
    b"{",
    b"}",
    b"(",
    b")",
    b"[",
    b"]",
    b"\"",
    b"#",
    b"\n",
    b"AIP-1.1",
    b"oversight HITL",
    b"assume verification_rate <= 10%",
    b"assume cost_per_transaction <= 1.10 EUR",
    b"review_cost 4.50 EUR",
    b"manual_cost 6.00 EUR",
    b"rollout { dri \"d\" phase beta hard_stops [\"x\"] go_live \"2026-01-01\" }",
    b"identify team by trusted header \"x-jwt-team\"",
    b"confidence(header \"c\") < 0.70",
    b"((((((((((((((((((((((((((((((((",
    b"\xff",
];

/// A bounded, deterministic run of [`policy`] for `cargo test`.
pub fn policy_smoke() {
    let mut seeds: Vec<Vec<u8>> = POLICY_SEEDS.iter().map(|s| s.to_vec()).collect();
    seeds.extend(pf::corpus("policy"));
    pf::run_smoke(&policy_lower, &seeds, POLICY_DICT, 300, 0x9011);
}

// ---------------------------------------------------------------------------------------
// The request path.

/// The policy the request target and the agreement test enforce: a workflow with
/// identity and scanned carriers, tokenise, redact, deny on PII and secrets, routing, tags
/// and response redaction, everything the native path models (no spend, no kill switch).
pub const FUZZ_POLICY: &str = r#"policy "fuzz" version "1.0.0" {
  owner      "security@example.com"
  implements "ai-policy.md"
}

workflow "support" {
  match header "x-workflow" == "support"
  oversight HIC
  identify team by header "x-team", user by header "x-user"
  scan headers ["x-note"]
  scan query
}

price "gpt-4o-mini" input 0.15 EUR output 0.60 EUR per 1M tokens
price "gpt-4o" input 2.50 EUR output 10.00 EUR per 1M tokens

detector employee_id = regex "EMP-[0-9]{6}"

rule AIP-1.1 "Unregistered workflows are refused" {
  on request
  when workflow != "support"
  then deny 403 "This workflow is not registered for AI use."
}

rule AIP-2.1 "Customer data is pseudonymised" {
  on request
  when prompt has pii(email, phone, iban)
  then tokenise
}

rule AIP-2.2 "Government identifiers never leave" {
  on request
  when prompt has pii(us_ssn)
  then deny 400 "Remove government identifiers."
}

rule AIP-2.3 "Employee identifiers are masked" {
  on request
  when prompt has pii(employee_id, credit_card)
  then redact
}

rule AIP-2.4 "No credentials in prompts" {
  on request
  when prompt has secret
  then deny 400 "Remove credentials."
}

rule AIP-2.5 "Addresses the model invents are masked" {
  on response
  when response has pii(ipv4)
  then redact
}

rule AIP-3.1 "Only approved models" {
  on request
  when model not in ["gpt-4o-mini", "gpt-4o"]
  then deny 403 "Model not approved."
}

rule AIP-3.2 "Cheap lane" {
  on request
  when header "x-lane" == "cheap"
  then route to cheapest ["gpt-4o", "gpt-4o-mini"]
}

rule AIP-4.1 "Cost centre" {
  on request
  when workflow == "support"
  then tag "cost-center" = "customer-support"
}
"#;

/// The engine for [`FUZZ_POLICY`], compiled once per process.
pub fn fuzz_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let compiled = crate::compile("fuzz.policy", FUZZ_POLICY).unwrap_or_else(|e| {
            panic!(
                "the fuzz policy does not compile: {}",
                e.render("fuzz.policy", FUZZ_POLICY)
            )
        });
        Engine::new(compiled.policy).unwrap_or_else(|e| panic!("the fuzz policy: {e}"))
    })
}

/// The body limit the request target uses: small, so a fuzzer reaches the 413 paths.
pub const FUZZ_BODY_LIMIT: usize = 4096;

/// Fuzz target for the engine's request path: the input is split into headers and body
/// by [`writ_plugin::fuzz::split_request`] and run through
/// [`writ_plugin::fuzz::native_exchange`] with [`FUZZ_POLICY`] and an echoing upstream.
pub fn request(data: &[u8]) {
    let engine = fuzz_engine();
    let (headers, body) = pf::split_request(data);
    let outcome = pf::native_exchange(
        engine,
        &headers,
        &body,
        FUZZ_BODY_LIMIT,
        [3; 16],
        &pf::echo_reply,
    );
    pf::check_outcome(&body, &outcome);
}

/// Seeds for [`request`] given in code.
const REQUEST_SEEDS: &[&[u8]] = &[
    b"x-workflow: support\nx-team: t1\ncontent-type: application/json\n\n{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"mail jane@example.com or +14155550100, EMP-123456\"}]}",
    b":path: /v1/chat/completions?email=jane@example.com\nx-workflow: support\nx-note: call +1 415 555 0100\ncontent-type: application/json\nx-lane: cheap\n\n{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"card 4111 1111 1111 1111\"}],\"metadata\":{\"jane@example.com\":1}}",
    b"x-workflow: support\ncontent-type: application/json\n\n{\"model\":\"gpt-4o-mini\",\"prompt\":\"SSN 123-45-6789\"}",
    b"x-workflow: support\ncontent-type: application/json\n\n{\"model\":\"gpt-4o-mini\",\"input\":\"key AKIAIOSFODNN7EXAMPLE\"}",
    b"x-workflow: other\ncontent-type: application/json\n\n{\"model\":\"gpt-4o\"}",
    b"x-workflow: support\ncontent-type: text/plain\n\nhello",
    b"x-workflow: support\ncontent-type: application/json\n\n{\"model\":\"gpt-4o\",\"messages\":[",
    b"x-workflow: support\ncontent-type: application/json\ncontent-length: 99999\n\n{}",
    b"x-workflow: support\n:method: GET\n:path: /v1/models\n\n",
    b"{\"model\":\"gpt-4o\",\"messages\":[{\"content\":\"ip 10.0.0.1 EMAIL_0000\"}]}",
];

/// Tokens a fuzzer is unlikely to guess byte by byte.
const REQUEST_DICT: &[&[u8]] = &[
    b"x-workflow: support\n",
    b"x-team: ",
    b"x-lane: cheap\n",
    b"x-note: ",
    b"content-type: application/json\n",
    b"content-length: ",
    b"content-encoding: gzip\n",
    b":path: /v1/chat/completions?q=",
    b"\n\n",
    b"jane@example.com",
    b"+14155550100",
    b"DE89 3704 0044 0532 0130 00",
    b"EMP-123456",
    b"4111 1111 1111 1111",
    b"123-45-6789",
    b"AKIAIOSFODNN7EXAMPLE",
    b"10.0.0.1",
    b"\"model\":\"gpt-4o\"",
    b"\"messages\":[{\"role\":\"user\",\"content\":\"",
    b"\"}]",
    b"EMAIL_",
    b"\\u0040",
    b"%40",
    b"\xef\xbc\x94",
    b"\xff",
];

/// A bounded, deterministic run of [`request`] for `cargo test`.
pub fn request_smoke() {
    let mut seeds: Vec<Vec<u8>> = REQUEST_SEEDS.iter().map(|s| s.to_vec()).collect();
    seeds.extend(pf::corpus("request"));
    pf::run_smoke(&request, &seeds, REQUEST_DICT, 1500, 0x4e0);
}

/// The inputs the agreement test runs through both the artifact and the native path: the
/// request seeds and corpus plus `mutants` mutations of them, deterministic.
pub fn request_inputs(mutants: usize) -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = REQUEST_SEEDS.iter().map(|s| s.to_vec()).collect();
    seeds.extend(pf::corpus("request"));
    let mut rng = pf::Rng::new(0xa9ee);
    let mut all = seeds.clone();
    for _ in 0..mutants {
        all.push(pf::mutate(&mut rng, &seeds, REQUEST_DICT));
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_smoke_test() {
        policy_smoke();
    }

    #[test]
    fn request_smoke_test() {
        request_smoke();
    }
}
