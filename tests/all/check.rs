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
