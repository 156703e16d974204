//! `writ init`: the scaffold passes `check`, `test` and `coverage` at 100% as written, and
//! `init` never overwrites a file.

use crate::support::tempdir::TempDir;
use crate::support::{output_text, writ_in};

#[test]
fn the_scaffold_passes_check_test_and_full_coverage() {
    let dir = TempDir::new("writ-init");
    let target = dir.path().join("governance");
    let target_s = target.display().to_string();
    let init = writ_in(dir.path(), &["init", &target_s, "--name", "support-bot"]);
    assert!(init.status.success(), "{}", output_text(&init));
    for f in [
        "ai-policy.md",
        "support-bot.policy",
        "support-bot.tests.yaml",
        "README.md",
    ] {
        assert!(target.join(f).is_file(), "no {f}: {}", output_text(&init));
    }

    let check = writ_in(&target, &["check", "support-bot.policy"]);
    assert!(check.status.success(), "{}", output_text(&check));
    assert!(
        !output_text(&check).contains("warning"),
        "the scaffold checks without warnings: {}",
        output_text(&check)
    );
    let test = writ_in(&target, &["test", "."]);
    assert!(test.status.success(), "{}", output_text(&test));
    assert!(
        output_text(&test).contains("5 passed, 0 failed"),
        "{}",
        output_text(&test)
    );
    let coverage = writ_in(&target, &["coverage", ".", "--format", "json"]);
    assert!(coverage.status.success(), "{}", output_text(&coverage));
    let report: serde_json::Value = serde_json::from_slice(&coverage.stdout).unwrap();
    assert_eq!(report["percent"], 100.0, "{report}");

    // Every rule of the scaffold has a case where it fires and one where it does not.
    let text = writ_in(&target, &["coverage", "."]);
    let t = output_text(&text);
    assert_eq!(t.matches("fires in:").count(), 4, "{t}");
    assert_eq!(t.matches("must not fire in:").count(), 4, "{t}");

    // A second init into the same folder writes nothing.
    let before = std::fs::read_to_string(target.join("support-bot.policy")).unwrap();
    let again = writ_in(dir.path(), &["init", &target_s, "--name", "support-bot"]);
    assert!(!again.status.success());
    assert!(
        output_text(&again).contains("not overwriting"),
        "{}",
        output_text(&again)
    );
    assert_eq!(
        std::fs::read_to_string(target.join("support-bot.policy")).unwrap(),
        before
    );

    let bad = writ_in(dir.path(), &["init", "x", "--name", "Bad Name"]);
    assert!(!bad.status.success());
    assert!(
        output_text(&bad).contains("not a valid name"),
        "{}",
        output_text(&bad)
    );
}
