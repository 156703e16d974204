//! `writ coverage` proves the chain clause → rule → test → artifact, and names what breaks
//! it: a deleted rule, a deleted test, a deleted `manual` declaration.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::tempdir::TempDir;
use crate::support::{output_text, writ_bin};

const PAPER: &str = "# Paper\n\n- **GOV-1** Only approved models.\n- **GOV-2** Big requests are refused.\n- **GOV-3** A yearly review.\n";

const POLICY: &str = r#"policy "mini" version "1.0.0" {
  owner      "sec@example.com"
  implements "paper.md"
}

rule GOV-1 "Only approved models" {
  on request
  when model not in ["gpt-4o"]
  then deny 403 "not approved"
}

rule GOV-2 "No big requests" {
  on request
  when max_tokens > 1000
  then deny 400 "too big"
}

manual GOV-3 "Yearly review" {
  owner  "ciso@example.com"
  reason "A meeting."
}
"#;

const TESTS: &str = r#"policy: mini.policy
cases:
  - name: approved model passes
    request:
      body: { model: gpt-4o, messages: [{ role: user, content: hi }] }
    expect: { allowed: true, fired: [] }
  - name: other model refused
    request:
      body: { model: gpt-3.5, messages: [{ role: user, content: hi }] }
    expect: { allowed: false, status: 403, fired: [GOV-1] }
  - name: big request refused
    request:
      body: { model: gpt-4o, max_tokens: 5000, messages: [{ role: user, content: hi }] }
    expect: { allowed: false, status: 400, fired: [GOV-2] }
"#;

fn fixture(policy: &str, tests: &str) -> TempDir {
    let dir = TempDir::new("writ-coverage");
    std::fs::write(dir.path().join("paper.md"), PAPER).unwrap();
    std::fs::write(dir.path().join("mini.policy"), policy).unwrap();
    std::fs::write(dir.path().join("mini.tests.yaml"), tests).unwrap();
    dir
}

fn coverage(dir: &Path, extra: &[&str]) -> Output {
    Command::new(writ_bin())
        .arg("coverage")
        .arg(dir)
        .args(extra)
        .output()
        .expect("run writ coverage")
}

#[test]
fn a_complete_chain_passes_and_reports_tests_and_artifact() {
    let dir = fixture(POLICY, TESTS);
    let json = dir.path().join("coverage.json");
    let junit = dir.path().join("coverage.xml");
    let out = coverage(
        dir.path(),
        &[
            "--json",
            json.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ],
    );
    let t = output_text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("coverage: 3/3 clauses (100.0%)"), "{t}");
    assert!(
        t.contains("fires in: mini.tests.yaml: other model refused"),
        "{t}"
    );
    assert!(t.contains("mini-1.0.0.wasm (sha256 "), "{t}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    assert_eq!(report["covered"], 3);
    let xml = std::fs::read_to_string(junit).unwrap();
    assert!(xml.contains("tests=\"3\" failures=\"0\""), "{xml}");
}

#[test]
fn a_deleted_rule_leaves_its_clause_paper_only() {
    let without_rule = POLICY.replace(
        "rule GOV-2 \"No big requests\" {\n  on request\n  when max_tokens > 1000\n  then deny 400 \"too big\"\n}\n",
        "",
    );
    let tests = TESTS
        .replace("fired: [GOV-2]", "fired: []")
        .replace("allowed: false, status: 400", "allowed: true");
    let out = coverage(fixture(&without_rule, &tests).path(), &[]);
    let t = output_text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("GAP GOV-2"), "{t}");
    assert!(t.contains("paper only: no rule enforces it"), "{t}");
    // A lower bar lets the same report pass.
    assert!(
        coverage(fixture(&without_rule, &tests).path(), &["--min", "60"])
            .status
            .success()
    );
}

#[test]
fn a_deleted_test_leaves_its_rule_without_a_firing_test() {
    let tests = TESTS
        .split("  - name: big request refused")
        .next()
        .unwrap()
        .to_string();
    let out = coverage(fixture(POLICY, &tests).path(), &[]);
    let t = output_text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("rule GOV-2 \"No big requests\"")
            && t.contains("has no passing test that makes it fire"),
        "{t}"
    );
}

#[test]
fn a_deleted_manual_declaration_leaves_its_clause_paper_only() {
    let policy = POLICY.split("manual GOV-3").next().unwrap().to_string();
    let out = coverage(fixture(&policy, TESTS).path(), &[]);
    let t = output_text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("GAP GOV-3"), "{t}");
}

#[test]
fn a_rule_citing_a_clause_the_paper_lacks_is_named() {
    let policy = POLICY.replace("rule GOV-2 \"No big", "rule GOV-9 \"No big");
    let tests = TESTS.replace("[GOV-2]", "[GOV-9]");
    let out = coverage(fixture(&policy, &tests).path(), &[]);
    let t = output_text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("GAP GOV-9 (not in the paper policy)"), "{t}");
}

#[test]
fn a_failing_test_proves_nothing() {
    let tests = TESTS.replace("status: 403", "status: 418");
    let out = coverage(fixture(POLICY, &tests).path(), &[]);
    let t = output_text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("rule GOV-1 \"Only approved models\""), "{t}");
}

/// Two rules cite GOV-2 and a response rule cites GOV-1. A case naming the clause `GOV-2`
/// credits only the rule that acted (the artifact's audit record says which), so the
/// second one is a gap until a case names it as `GOV-2#2` and it fires. A response rule
/// named in a case whose request was denied is credited with nothing (that case fails).
#[test]
fn coverage_credits_each_rule_only_for_its_own_firings() {
    let policy = POLICY.replace(
        "manual GOV-3",
        r#"rule GOV-2 "No streaming of big answers" {
  on request
  when max_tokens > 500 and stream == true
  then deny 400 "no big streams"
}

rule GOV-1 "Invented addresses are masked" {
  on response
  when response has pii(email)
  then redact
}

manual GOV-3"#,
    );
    let dir = fixture(&policy, TESTS);
    let out = coverage(dir.path(), &[]);
    let t = output_text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("GAP GOV-2"), "{t}");
    assert!(
        t.contains("rule GOV-2#2 \"No streaming of big answers\"")
            && t.contains("no passing test that makes it fire"),
        "{t}"
    );

    // A case that names the second rule by its ordinal, and one where the response rule acts.
    let more = format!(
        "{TESTS}  - name: a big stream is refused by the second rule\n    request:\n      body: {{ model: gpt-4o, max_tokens: 800, stream: true, messages: [{{ role: user, content: hi }}] }}\n    expect: {{ allowed: false, status: 400, fired: [\"GOV-2#2\"] }}\n  - name: an invented address is masked\n    request:\n      body: {{ model: gpt-4o, messages: [{{ role: user, content: hi }}] }}\n    reply:\n      body: {{ choices: [{{ index: 0, message: {{ role: assistant, content: \"write to x@example.org\" }} }}] }}\n    expect: {{ allowed: true, fired: [GOV-1], client_never_sees: [\"x@example.org\"] }}\n"
    );
    let dir = fixture(&policy, &more);
    let out = coverage(dir.path(), &[]);
    let t = output_text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("(100.0%)"), "{t}");

    // A case that names the clause under a denied request passes (the request rule of
    // GOV-1 acted), but the response rule never ran: it is not credited.
    let stream_case = more
        .split("  - name: an invented address is masked")
        .next()
        .unwrap()
        .to_string();
    let denied = format!(
        "{stream_case}  - name: the clause named under a denied request\n    request:\n      body: {{ model: gpt-3.5, messages: [{{ role: user, content: hi }}] }}\n    reply:\n      body: {{ choices: [{{ index: 0, message: {{ role: assistant, content: \"write to x@example.org\" }} }}] }}\n    expect: {{ allowed: false, fired: [GOV-1] }}\n"
    );
    let dir = fixture(&policy, &denied);
    let out = coverage(dir.path(), &[]);
    let t = output_text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("rule GOV-1#2 \"Invented addresses are masked\"")
            && t.contains("has no passing test that makes it fire"),
        "{t}"
    );
}
