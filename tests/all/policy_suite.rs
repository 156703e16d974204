//! The bundled policies prove themselves: `writ test policies/` passes against the built
//! artifacts, `writ coverage policies/` reaches 100%, and a wrong expectation fails with a
//! readable expected-versus-actual diff and a non-zero exit.

use std::process::Command;

use crate::support::tempdir::TempDir;
use crate::support::{output_text, workspace_root, writ, writ_bin};

#[test]
fn bundled_policy_tests_pass_and_write_junit() {
    let dir = TempDir::new("writ-policy-tests");
    let junit = dir.path().join("tests.xml");
    let out = writ(&["test", "policies", "--junit", junit.to_str().unwrap()]);
    let t = output_text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains(" 0 failed"), "{t}");
    let xml = std::fs::read_to_string(junit).unwrap();
    assert!(xml.contains("failures=\"0\""), "{xml}");
    assert!(xml.contains("support-assistant.tests.yaml"), "{xml}");
}

#[test]
fn bundled_policies_are_fully_covered() {
    let out = writ(&["coverage", "policies"]);
    let t = output_text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("(100.0%)"), "{t}");
    assert!(!t.contains("GAP "), "{t}");
}

#[test]
fn a_wrong_expectation_fails_with_a_readable_diff() {
    let dir = TempDir::new("writ-wrong-expectation");
    for f in ["support-assistant.policy", "ai-policy.md"] {
        std::fs::copy(
            workspace_root().join("policies").join(f),
            dir.path().join(f),
        )
        .unwrap();
    }
    let tests =
        std::fs::read_to_string(workspace_root().join("policies/support-assistant.tests.yaml"))
            .unwrap()
            .replacen(
                "      status: 403\n      fired: [AIP-3.1, AIP-4.1]",
                "      status: 404\n      fired: [AIP-3.1, AIP-4.1]",
                1,
            );
    std::fs::write(dir.path().join("support-assistant.tests.yaml"), &tests).unwrap();
    let out = Command::new(writ_bin())
        .arg("test")
        .arg(dir.path())
        .output()
        .unwrap();
    let t = output_text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("FAIL  a model outside the allowlist is refused"),
        "{t}"
    );
    assert!(t.contains("- expected: 404"), "{t}");
    assert!(t.contains("+ actual:   403"), "{t}");
    assert!(t.contains("1 failed"), "{t}");
    // The failure names its file and line.
    let line = tests
        .lines()
        .position(|l| l.contains("name: a model outside the allowlist is refused"))
        .unwrap()
        + 1;
    assert!(
        t.contains(&format!("support-assistant.tests.yaml:{line})")),
        "{t}"
    );

    // The same as data.
    let json = Command::new(writ_bin())
        .arg("test")
        .arg(dir.path())
        .args(["--format", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["failed"], 1, "{v}");
    let failed: Vec<&serde_json::Value> = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["line"], line);
    assert_eq!(failed[0]["mismatches"][0]["expected"], "404");
}

/// Writes the support-assistant policy, its paper and `tests` into a fresh folder and runs
/// `writ test` there.
fn run_support_tests(tests: &str) -> (bool, String) {
    let dir = TempDir::new("writ-policy-tests");
    for f in ["support-assistant.policy", "ai-policy.md"] {
        std::fs::copy(
            workspace_root().join("policies").join(f),
            dir.path().join(f),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("support-assistant.tests.yaml"), tests).unwrap();
    let out = Command::new(writ_bin())
        .arg("test")
        .arg(dir.path())
        .output()
        .unwrap();
    (out.status.success(), output_text(&out))
}

const STOP: &str = r#"  - name: an operator stops every workflow
    request:
      path: /writ/admin/kill-switch
      headers: { authorization: "Bearer test" }
      body: { workflow: "*", action: stop, reason: drill }
    expect:
      status: 200
"#;

const ASK: &str = r#"    request:
      headers: { x-workflow: support-assistant }
      body: { model: gpt-4o-mini, messages: [{ role: user, content: "hi" }] }
"#;

/// Each case starts from a gateway that has served nothing: a kill-switch stop in one
/// case does not answer the next, unless that case says `continue: true`.
#[test]
fn cases_start_from_fresh_state_unless_they_continue() {
    let tests = format!(
        "policy: support-assistant.policy\ncases:\n{STOP}  - name: the next case is not stopped\n{ASK}    expect:\n      allowed: true\n{STOP}  - name: a continuing case sees the stop\n    continue: true\n{ASK}    expect:\n      allowed: false\n      status: 503\n"
    );
    let (ok, t) = run_support_tests(&tests);
    assert!(ok, "{t}");
    assert!(t.contains("4 passed, 0 failed"), "{t}");
}

/// `expect: {}` asserts nothing and is refused, naming the case.
#[test]
fn an_expectation_that_asserts_nothing_is_an_error() {
    let tests = format!(
        "policy: support-assistant.policy\ncases:\n  - name: vacuous\n{ASK}    expect: {{}}\n"
    );
    let (ok, t) = run_support_tests(&tests);
    assert!(!ok, "{t}");
    assert!(t.contains("case `vacuous` asserts nothing"), "{t}");
}

/// `defaults` gives every case the same headers (a case's own win) and reply.
#[test]
fn defaults_are_shared_by_every_case() {
    let tests = r#"policy: support-assistant.policy
defaults:
  headers: { x-workflow: support-assistant, x-jwt-team: billing }
  reply:
    body: { choices: [{ index: 0, message: { role: assistant, content: "From the defaults." } }] }
cases:
  - name: the default workflow header applies
    request:
      body: { model: gpt-4o-mini, messages: [{ role: user, content: "hi" }] }
    expect:
      allowed: true
      client_sees: ["From the defaults."]
  - name: a case's own header wins
    request:
      headers: { x-workflow: unregistered }
      body: { model: gpt-4o-mini, messages: [{ role: user, content: "hi" }] }
    expect:
      allowed: false
      status: 403
"#;
    let (ok, t) = run_support_tests(tests);
    assert!(ok, "{t}");
    assert!(t.contains("2 passed, 0 failed"), "{t}");
}
