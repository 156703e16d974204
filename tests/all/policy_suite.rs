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
    std::fs::write(dir.path().join("support-assistant.tests.yaml"), tests).unwrap();
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
}
