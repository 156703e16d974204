//! `writ check` as CI uses it: silence and exit 0 on clean policies; every problem of a
//! broken one, located, and a non-zero exit.

use crate::support::tempdir::TempDir;
use crate::support::{output_text, writ};

#[test]
fn clean_policies_print_nothing() {
    let out = writ(&[
        "check",
        "policies/support-assistant.policy",
        "policies/code-assistant.policy",
        "policies/claims-assistant.policy",
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(output_text(&out), "");
}

#[test]
fn a_policy_with_several_mistakes_reports_all_of_them() {
    let dir = TempDir::new("writ-check");
    let path = dir.path().join("broken.policy");
    std::fs::write(dir.path().join("paper.md"), "- **AIP-1** Cards.\n").unwrap();
    std::fs::write(
        &path,
        r#"policy "broken" version "1.0" {
  owner "a@example.com"
  implements "paper.md"
}
rule AIP-1 "cards" {
  on request
  when prompt has pii(email, credit_crd) and model == 3
  then deny 403 "no"
}
"#,
    )
    .unwrap();
    let out = writ(&["check", path.to_str().unwrap()]);
    let t = output_text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("error[E0403]: invalid version `1.0`"), "{t}");
    assert!(t.contains("broken.policy:1:25"), "{t}");
    assert!(
        t.contains("error[E0103]: unknown detector `credit_crd`"),
        "{t}"
    );
    assert!(t.contains("did you mean `credit_card`?"), "{t}");
    assert!(t.contains("error[E0301]"), "{t}");
    assert!(t.contains("3 errors"), "{t}");
}

/// A paper policy that does not exist is an error at the `implements` string; ids that
/// look like clause ids but do not parse are warned about, with the paper's line.
#[test]
fn the_paper_policy_must_exist_and_its_ids_must_parse() {
    let dir = TempDir::new("writ-check-paper");
    let policy = |implements: &str| {
        format!(
            "policy \"p\" version \"1.0.0\" {{\n  owner \"a@example.com\"\n  implements \"{implements}\"\n}}\nrule HR-1.1 \"models\" {{\n  on request\n  when model != \"gpt-4o\"\n  then deny 403 \"no\"\n}}\n"
        )
    };
    let path = dir.path().join("p.policy");
    std::fs::write(&path, policy("missing.md")).unwrap();
    let out = writ(&["check", path.to_str().unwrap()]);
    let t = output_text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("error[E0505]: the paper policy `missing.md` cannot be read"),
        "{t}"
    );
    assert!(
        t.contains("p.policy:3:"),
        "located at the implements line: {t}"
    );

    std::fs::write(
        dir.path().join("paper.md"),
        "# HR policy\n\n## HR-1.1 Models\n\n- **HR-1.x** a wildcard that names no clause\n",
    )
    .unwrap();
    std::fs::write(&path, policy("paper.md")).unwrap();
    let out = writ(&["check", path.to_str().unwrap()]);
    let t = output_text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("paper.md:5: `HR-1.x` looks like a clause id"),
        "{t}"
    );
}

/// `--format json` and `--format sarif` carry the same located diagnostics as data (SARIF
/// 2.1.0 for code-scanning UIs); `--deny-warnings` fails on a warning alone.
#[test]
fn diagnostics_as_json_and_sarif_and_warnings_can_fail_ci() {
    let dir = TempDir::new("writ-check-formats");
    std::fs::write(dir.path().join("paper.md"), "- **HR-1** Models.\n").unwrap();
    let path = dir.path().join("p.policy");
    // A custom detector no rule uses is a warning, not an error.
    std::fs::write(
        &path,
        "policy \"p\" version \"1.0.0\" {\n  owner \"a@example.com\"\n  implements \"paper.md\"\n}\nrule HR-1 \"models\" {\n  on request\n  when model != \"a\"\n  then deny 403 \"no\"\n}\ndetector badge = regex \"B-[0-9]{4}\"\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let text = writ(&["check", p]);
    assert!(text.status.success(), "{}", output_text(&text));
    assert!(
        output_text(&text).contains("warning["),
        "{}",
        output_text(&text)
    );
    let denied = writ(&["check", p, "--deny-warnings"]);
    assert!(!denied.status.success(), "{}", output_text(&denied));

    let json = writ(&["check", p, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let d = &v["diagnostics"][0];
    assert_eq!(d["level"], "warning", "{v}");
    assert_eq!(d["line"], 10, "{v}");
    assert!(d["code"].as_str().unwrap().starts_with('W'), "{v}");

    let sarif = writ(&["check", p, "--format", "sarif"]);
    let s: serde_json::Value = serde_json::from_slice(&sarif.stdout).unwrap();
    assert_eq!(s["version"], "2.1.0");
    let run = &s["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "writ");
    let r = &run["results"][0];
    assert_eq!(r["ruleId"], d["code"]);
    assert_eq!(r["level"], "warning");
    let region = &r["locations"][0]["physicalLocation"]["region"];
    assert_eq!(region["startLine"], 10);
    assert!(
        region["endColumn"].as_u64() > region["startColumn"].as_u64(),
        "{region}"
    );
    assert!(
        run["tool"]["driver"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|rule| rule["id"] == d["code"])
    );
}

/// Relations between rules (here W0008, two denies on one condition) reach CI the same
/// way: `--deny-warnings` fails on them, and JSON and SARIF carry both rules, the earlier
/// one as a related location.
#[test]
fn rule_relations_carry_both_rules_in_json_and_sarif() {
    let dir = TempDir::new("writ-check-relations");
    std::fs::write(dir.path().join("paper.md"), "- **HR-1** Models.\n").unwrap();
    let path = dir.path().join("p.policy");
    std::fs::write(
        &path,
        "policy \"p\" version \"1.0.0\" {\n  owner \"a@example.com\"\n  implements \"paper.md\"\n}\nrule HR-1 \"refused\" {\n  on request\n  when model == \"x\"\n  then deny 403 \"A\"\n}\nrule HR-1 \"limited\" {\n  on request\n  when model == \"x\"\n  then deny 429 \"B\"\n}\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let text = writ(&["check", p]);
    assert!(text.status.success(), "{}", output_text(&text));
    assert!(
        output_text(&text).contains("warning[W0008]"),
        "{}",
        output_text(&text)
    );
    assert!(!writ(&["check", p, "--deny-warnings"]).status.success());

    let json = writ(&["check", p, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "W0008", "{v}");
    assert_eq!(d["line"], 13, "{v}");
    assert_eq!(d["related"][0]["line"], 8, "{v}");
    assert!(
        d["related"][0]["label"]
            .as_str()
            .unwrap()
            .contains("instead"),
        "{v}"
    );

    let sarif = writ(&["check", p, "--format", "sarif"]);
    let s: serde_json::Value = serde_json::from_slice(&sarif.stdout).unwrap();
    let r = &s["runs"][0]["results"][0];
    assert_eq!(r["ruleId"], "W0008");
    assert_eq!(
        r["locations"][0]["physicalLocation"]["region"]["startLine"],
        13
    );
    assert_eq!(
        r["relatedLocations"][0]["physicalLocation"]["region"]["startLine"], 8,
        "{s}"
    );
}
