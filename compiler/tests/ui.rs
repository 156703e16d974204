//! Golden tests: every `tests/ui/<area>/<case>.policy` is checked and its rendered
//! diagnostics compared with `<case>.stderr` beside it (an empty or missing file means "no
//! output"). `BLESS=1 cargo test -p writ-compiler --test ui` rewrites the expectations;
//! review every blessed file by eye.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn cases(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            cases(&p, out);
        } else if p.extension().is_some_and(|e| e == "policy") {
            out.push(p);
        }
    }
}

/// A line diff by longest common subsequence (golden files are small).
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        }
    }
    out
}

#[test]
fn ui() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut all = Vec::new();
    cases(&root.join("tests/ui"), &mut all);
    assert!(
        all.len() >= 25,
        "expected the golden cases, found {}",
        all.len()
    );
    let bless = std::env::var_os("BLESS").is_some();
    let mut failures = Vec::new();
    for case in &all {
        let rel = case
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let source = std::fs::read_to_string(case).unwrap();
        let diags = writ_compiler::check(&rel, &source);
        let actual = writ_compiler::render(&rel, &source, &diags);
        let expected_path = case.with_extension("stderr");
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            if bless {
                if actual.is_empty() {
                    let _ = std::fs::remove_file(&expected_path);
                } else {
                    std::fs::write(&expected_path, &actual).unwrap();
                }
            } else {
                failures.push(format!(
                    "--- {rel} (- expected, + actual)\n{}",
                    diff(&expected, &actual)
                ));
            }
        }
        // Every case that has diagnostics must not compile only if one is an error, and the
        // rendering must name the case's path.
        if !diags.is_empty() {
            assert!(actual.contains(&format!("--> {rel}:")), "{rel}");
        }
        assert_eq!(
            writ_compiler::compile(&rel, &source).is_err(),
            diags.iter().any(|d| d.is_error()),
            "{rel}: compile and check disagree"
        );
    }
    assert!(
        failures.is_empty(),
        "{} golden file(s) differ (BLESS=1 to update):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The bundled policies compile without errors.
#[test]
fn bundled_policies_compile() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut n = 0;
    for e in std::fs::read_dir(&root).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "policy") {
            let source = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if let Err(errs) = writ_compiler::compile(&name, &source) {
                panic!("{name}:\n{}", errs.render(&name, &source));
            }
            n += 1;
        }
    }
    assert!(n > 0);
}

/// Codes are unique, there are enough of them to tell problems apart, and each has its
/// paragraph in `codes.rs`.
#[test]
fn codes_are_unique() {
    let all = writ_compiler::diag::codes::ALL;
    assert!(all.len() >= 25);
    let mut ids: Vec<&str> = all.iter().map(|c| c.id()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "duplicate code");
    let rendered = diagnostics_doc(&read_doc());
    for id in ids {
        assert_eq!(
            rendered.matches(&format!("### {id} ")).count(),
            1,
            "{id} must be a `pub const` with a doc paragraph in compiler/src/diag/codes.rs"
        );
    }
}

fn read_doc() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join("docs/diagnostics.md")).unwrap()
}

/// `docs/diagnostics.md` rendered from `compiler/src/diag/codes.rs`: the page's own
/// introduction (everything before its first `## `), then one `##` section per
/// `// ---- name ----` group of codes and one `###` entry per code, in code order, whose
/// text is the constant's doc paragraph.
fn diagnostics_doc(current: &str) -> String {
    let codes =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/diag/codes.rs"))
            .unwrap();
    let mut out = current
        .find("\n## ")
        .map_or(current, |i| &current[..=i])
        .to_string();
    /// (id, title, text) of one code.
    type Entry = (String, String, String);
    let mut sections: Vec<(String, Vec<Entry>)> = Vec::new();
    let mut doc: Vec<&str> = Vec::new();
    for line in codes.lines() {
        if let Some(name) = line
            .strip_prefix("// ---- ")
            .and_then(|l| l.strip_suffix(" ----"))
        {
            sections.push((name.to_string(), Vec::new()));
            doc.clear();
        } else if let Some(text) = line.strip_prefix("///") {
            doc.push(text.trim());
        } else if let Some(rest) = line.strip_prefix("pub const ")
            && let Some((name, id)) = rest.split_once(": Code = Code(\"")
            && let Some((_, entries)) = sections.last_mut()
        {
            let id = id.trim_end_matches("\");").to_string();
            let title = name.to_ascii_lowercase().replace('_', " ");
            entries.push((id, title, doc.join(" ")));
            doc.clear();
        } else {
            doc.clear();
        }
    }
    for (name, mut entries) in sections {
        let mut chars = name.chars();
        let first = chars.next().map(|c| c.to_ascii_uppercase()).unwrap_or(' ');
        out.push_str(&format!("## {first}{}\n\n", chars.as_str()));
        entries.sort();
        for (id, title, text) in entries {
            out.push_str(&format!("### {id} — {title}\n\n{text}\n\n"));
        }
    }
    format!("{}\n", out.trim_end())
}

/// `docs/diagnostics.md` is generated from the doc comments in `codes.rs` (the source of
/// truth), so the two never drift; `BLESS=1` rewrites the page.
#[test]
fn diagnostics_doc_is_generated_from_codes() {
    let current = read_doc();
    let expected = diagnostics_doc(&current);
    if current != expected {
        if std::env::var_os("BLESS").is_some() {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            std::fs::write(root.join("docs/diagnostics.md"), &expected).unwrap();
        } else {
            panic!(
                "docs/diagnostics.md is out of date with compiler/src/diag/codes.rs (BLESS=1 to regenerate):\n{}",
                diff(&current, &expected)
            );
        }
    }
}
