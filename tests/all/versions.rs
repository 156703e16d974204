//! Version discipline and rule-level diffs: `writ diff` names what changed between two
//! versions, and `writ build` refuses a changed policy that kept its version.

use std::path::Path;

use crate::support::tempdir::TempDir;
use crate::support::{output_text, workspace_root, writ};

/// The bundled support policy with the allowlist widened and one rule put in monitor mode.
fn edited_support_policy(dir: &Path, version: &str) -> String {
    let source =
        std::fs::read_to_string(workspace_root().join("policies/support-assistant.policy"))
            .unwrap()
            .replace(
                "[\"gpt-4o-mini\", \"gpt-4o\"]",
                "[\"gpt-4o-mini\", \"gpt-4o\", \"gpt-4.1\"]",
            )
            .replace(
                "output tokens.\"\n}",
                "output tokens.\"\n  enforcement monitor\n}",
            )
            .replace("version \"1.0.0\"", &format!("version \"{version}\""));
    let path = dir.join("support-assistant.policy");
    std::fs::write(&path, source).unwrap();
    path.display().to_string()
}

#[test]
fn diff_names_the_changed_rules_between_two_versions() {
    let dir = TempDir::new("writ-diff");
    let new = edited_support_policy(dir.path(), "1.1.0");
    let out = writ(&["diff", "policies/support-assistant.policy", &new]);
    assert!(out.status.success(), "{}", output_text(&out));
    let t = output_text(&out);
    assert!(
        t.contains("support-assistant 1.0.0 → support-assistant 1.1.0"),
        "{t}"
    );
    assert!(
        t.contains("~ rule AIP-3.1 \"Only approved models\" (condition changed)"),
        "{t}"
    );
    assert!(
        t.contains("~ rule AIP-4.4 \"No long outputs\" (enforcement changed)"),
        "{t}"
    );
    assert!(
        !t.contains("AIP-2.1"),
        "unchanged rules are not listed: {t}"
    );

    // The same comparison from a built artifact gives the same changes.
    let built = TempDir::new("writ-diff-built");
    let out_dir = built.path().display().to_string();
    assert!(
        writ(&[
            "build",
            "policies/support-assistant.policy",
            "--out",
            &out_dir
        ])
        .status
        .success()
    );
    let artifact = built
        .path()
        .join("support-assistant-1.0.0.wasm")
        .display()
        .to_string();
    let from_artifact = writ(&["diff", &artifact, &new]);
    assert_eq!(output_text(&from_artifact), t);
}

#[test]
fn build_refuses_changed_enforcement_under_the_same_version() {
    let out_dir = TempDir::new("writ-versions");
    let out = out_dir.path().display().to_string();
    assert!(
        writ(&["build", "policies/support-assistant.policy", "--out", &out])
            .status
            .success()
    );

    let src = TempDir::new("writ-versions-src");
    let same_version = edited_support_policy(src.path(), "1.0.0");
    let refused = writ(&["build", &same_version, "--out", &out]);
    assert!(!refused.status.success());
    let t = output_text(&refused);
    assert!(
        t.contains("enforcement changed but the version is still 1.0.0"),
        "{t}"
    );
    assert!(t.contains("AIP-3.1"), "{t}");

    // A comment-only change is not an enforcement change.
    let reworded = src.path().join("reworded.policy");
    let original =
        std::fs::read_to_string(workspace_root().join("policies/support-assistant.policy"))
            .unwrap();
    std::fs::write(&reworded, format!("# reviewed again\n{original}")).unwrap();
    let ok = writ(&["build", &reworded.display().to_string(), "--out", &out]);
    assert!(ok.status.success(), "{}", output_text(&ok));

    // With the version bumped the build goes through beside the old one.
    let bumped = edited_support_policy(src.path(), "1.1.0");
    let ok = writ(&["build", &bumped, "--out", &out]);
    assert!(ok.status.success(), "{}", output_text(&ok));
    assert!(out_dir.path().join("support-assistant-1.1.0.wasm").exists());
    assert!(out_dir.path().join("support-assistant-1.0.0.wasm").exists());
}

/// What the author changed and `writ diff` used to hide: a workflow's `match`
/// header, the HOTL threshold, the assumed verification rate, a detector's regex and a
/// price. Each is listed old → new, `--exit-code` fails, and `--format json` carries the
/// same; `writ build` names the same changes when it refuses them under one version.
#[test]
fn diff_lists_workflow_price_and_detector_changes() {
    let dir = TempDir::new("writ-diff-settings");
    let source =
        std::fs::read_to_string(workspace_root().join("policies/support-assistant.policy"))
            .unwrap();
    let edited = source
        .replace(
            "match header \"x-workflow\" == \"support-assistant\"",
            "match header \"x-app\" == \"support-assistant\"",
        )
        .replace("oversight HOTL below 0.70", "oversight HOTL below 0.50")
        .replace(
            "assume verification_rate <= 10%",
            "assume verification_rate <= 20%",
        )
        .replace("review_cost 4.50 EUR", "review_cost 4.00 EUR")
        .replace("EMP-[0-9]{6}", "EMP-[0-9]{5,6}")
        .replace("input 2.50 EUR", "input 2.00 EUR");
    assert_ne!(edited, source);
    let path = dir.path().join("support-assistant.policy");
    std::fs::write(&path, &edited).unwrap();
    std::fs::copy(
        workspace_root().join("policies/ai-policy.md"),
        dir.path().join("ai-policy.md"),
    )
    .unwrap();
    let new = path.display().to_string();

    let out = writ(&["diff", "policies/support-assistant.policy", &new]);
    assert!(out.status.success(), "{}", output_text(&out));
    let t = output_text(&out);
    for line in [
        "~ workflow \"support-assistant\" match: header \"x-workflow\" == \"support-assistant\" → header \"x-app\" == \"support-assistant\"",
        "~ workflow \"support-assistant\" oversight: HOTL below 0.70 → HOTL below 0.50",
        "~ workflow \"support-assistant\" assume verification_rate: 10% → 20%",
        "~ workflow \"support-assistant\" review_cost: 4.5 EUR → 4 EUR",
        "~ detector \"employee_id\" kind: regex \"EMP-[0-9]{6}\" → regex \"EMP-[0-9]{5,6}\"",
        "~ price \"gpt-4o\" input: 2.5 EUR per 1M tokens → 2 EUR per 1M tokens",
    ] {
        assert!(t.contains(line), "missing `{line}` in:\n{t}");
    }
    assert!(!t.contains("no enforcement changes"), "{t}");

    let gated = writ(&[
        "diff",
        "policies/support-assistant.policy",
        &new,
        "--exit-code",
    ]);
    assert_eq!(gated.status.code(), Some(1), "{}", output_text(&gated));
    let same = writ(&[
        "diff",
        "policies/support-assistant.policy",
        "policies/support-assistant.policy",
        "--exit-code",
    ]);
    assert_eq!(same.status.code(), Some(0), "{}", output_text(&same));
    assert!(output_text(&same).contains("no enforcement changes"));

    let json = writ(&[
        "diff",
        "policies/support-assistant.policy",
        &new,
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["changed"], true);
    let fields: Vec<String> = v["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["item"].as_str().unwrap(),
                c["field"].as_str().unwrap()
            )
        })
        .collect();
    for f in [
        "workflow \"support-assistant\" match",
        "workflow \"support-assistant\" oversight",
        "workflow \"support-assistant\" assume verification_rate",
        "detector \"employee_id\" kind",
        "price \"gpt-4o\" input",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
    }

    // `writ build` refuses the same change under the same version, naming it.
    let out_dir = dir.path().join("out");
    let out_dir = out_dir.display().to_string();
    let first = writ(&[
        "build",
        "policies/support-assistant.policy",
        "--out",
        &out_dir,
    ]);
    assert!(first.status.success(), "{}", output_text(&first));
    let refused = writ(&["build", &new, "--out", &out_dir]);
    assert!(!refused.status.success());
    let r = output_text(&refused);
    assert!(
        r.contains("~ workflow \"support-assistant\" oversight: HOTL below 0.70 → HOTL below 0.50"),
        "{r}"
    );
}
