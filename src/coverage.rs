//! Paper-to-code coverage: for every clause of the written policy, the rules that enforce
//! it, the tests that prove each rule fires and does not fire, and the artifacts that ship
//! it. The computation is a pure function of what the caller gathered, so it is tested
//! without compiling or running anything.

use serde::Serialize;
use std::collections::BTreeMap;

/// The clause ids of a paper policy, in order of first appearance (see [`scan_paper`]).
pub fn paper_clauses(markdown: &str) -> Vec<String> {
    scan_paper(markdown)
        .clauses
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// A clause id found in the paper, and the 1-based line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperClause {
    pub id: String,
    pub line: usize,
}

/// Something in a clause position that looks like an id but is not one (`AIP-2.x`,
/// `aip-2.1`, `AIP 2.1`): said aloud rather than skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperWarning {
    pub line: usize,
    pub message: String,
}

/// What [`scan_paper`] found.
#[derive(Debug, Clone, Default)]
pub struct Paper {
    pub clauses: Vec<PaperClause>,
    pub warnings: Vec<PaperWarning>,
}

/// Reads the clause ids of a paper policy (`docs/language.md`, "The paper policy"). An id
/// counts where an author writes one: in bold anywhere (`**AIP-2.1**`), as the first word
/// of a heading (`## AIP-2.1 Personal data`) or of a list item (`- AIP-2.1 …`,
/// `1. AIP-2.1: …`), or as the first cell of a table row (`| AIP-2.1 | … |`). Text in those
/// places that looks like an id but does not parse is a warning.
pub fn scan_paper(markdown: &str) -> Paper {
    let mut paper = Paper::default();
    let mut in_code = false;
    for (i, line) in markdown.lines().enumerate() {
        let n = i + 1;
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut candidates: Vec<&str> = Vec::new();
        let mut rest = line;
        while let Some(start) = rest.find("**") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("**") else { break };
            candidates.push(&after[..end]);
            rest = &after[end + 2..];
        }
        if let Some(first) = leading_word(trimmed) {
            candidates.push(first);
        }
        for c in candidates {
            let c = c
                .trim()
                .trim_matches('`')
                .trim_end_matches([':', '.', ',', ';']);
            let c = c.trim_matches('*').trim();
            if is_clause_id(c) {
                if !paper.clauses.iter().any(|k| k.id == c) {
                    paper.clauses.push(PaperClause {
                        id: c.to_string(),
                        line: n,
                    });
                }
            } else if looks_like_id(c)
                && !paper
                    .warnings
                    .iter()
                    .any(|w| w.line == n && w.message.starts_with(&format!("`{c}`")))
            {
                paper.warnings.push(PaperWarning {
                    line: n,
                    message: format!(
                        "`{c}` looks like a clause id but is not one: write capital letters or digits, a `-`, then dot-separated numbers (`AIP-2.1`)"
                    ),
                });
            }
        }
    }
    paper
}

/// The first word of a heading, a list item or a table row's first cell: where an id
/// begins a clause.
fn leading_word(line: &str) -> Option<&str> {
    if let Some(cell) = line.strip_prefix('|') {
        let cell = cell.split('|').next()?.trim();
        return (!cell.is_empty() && !cell.starts_with('-') && !cell.starts_with(':'))
            .then_some(cell);
    }
    let body = if line.starts_with('#') {
        let body = line.trim_start_matches('#');
        body.strip_prefix(' ')?
    } else if let Some(b) = ["- ", "* ", "+ "].iter().find_map(|m| line.strip_prefix(m)) {
        b
    } else {
        let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return None;
        }
        let after = &line[digits..];
        after
            .strip_prefix(". ")
            .or_else(|| after.strip_prefix(") "))?
    };
    body.split_whitespace().next()
}

/// Text shaped like an id gone wrong: capitals then a separator then a digit (`AIP 2.1`,
/// `AIP_2.1`, `AIP–2.1`, `AIP-2.x`), or any letters, a dash and a digit (`aip-2.1`).
fn looks_like_id(s: &str) -> bool {
    let letters = s.len()
        - s.trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .len();
    if letters == 0 || letters > 10 {
        return false;
    }
    let (prefix, rest) = s.split_at(letters);
    let Some(sep) = rest.chars().next() else {
        return false;
    };
    let after = &rest[sep.len_utf8()..];
    let digit_follows = after.starts_with(|c: char| c.is_ascii_digit());
    // An id is one short token, or two with a stray space (`AIP 2.1`), never prose.
    let short = s.chars().count() <= 24 && s.matches(char::is_whitespace).count() <= 1;
    let upper = prefix.chars().all(|c| c.is_ascii_uppercase());
    short && digit_follows && (sep == '-' || (upper && matches!(sep, ' ' | '_' | '–' | '—' | '.')))
}

/// `AIP-2.1`, `SEC-10`, `DP-3.2.1`: letters, a dash, then dot-separated numbers.
fn is_clause_id(s: &str) -> bool {
    let Some((prefix, number)) = s.split_once('-') else {
        return false;
    };
    !prefix.is_empty()
        && prefix
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && prefix.starts_with(|c: char| c.is_ascii_uppercase())
        && !number.is_empty()
        && number
            .split('.')
            .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// A rule as coverage sees it.
#[derive(Debug, Clone, Serialize)]
pub struct RuleRef {
    /// The rule's identity in its artifact (`AIP-2.1#2`), as audit records name it.
    pub id: String,
    pub clause: String,
    pub title: String,
    /// `path:line` of the rule in its source.
    pub location: String,
    /// Artifact file name and sha256 the rule ships in.
    pub artifact: String,
    pub artifact_sha256: String,
    /// A rule without a condition matches every request of its phase, so no test can
    /// show it not firing; coverage asks only for a firing test.
    pub unconditional: bool,
}

/// A manual clause declaration.
#[derive(Debug, Clone, Serialize)]
pub struct ManualRef {
    pub clause: String,
    pub owner: String,
    pub reason: String,
    pub location: String,
}

/// One executed test case and which rules it proved to fire or not to fire.
#[derive(Debug, Clone, Serialize)]
pub struct CaseRef {
    /// `file.tests.yaml: case name`.
    pub name: String,
    /// The policy (artifact) the case ran against.
    pub artifact: String,
    pub passed: bool,
    /// Indices into the policy's rules that the case asserted fired.
    pub asserted_fired: Vec<usize>,
    /// Indices of rules the case asserted did not fire (an exact `fired` list implies
    /// every other rule).
    pub asserted_not_fired: Vec<usize>,
}

/// Everything gathered about one policy file.
#[derive(Debug, Clone)]
pub struct PolicyInput {
    pub artifact: String,
    pub rules: Vec<RuleRef>,
    pub manual: Vec<ManualRef>,
    pub cases: Vec<CaseRef>,
}

/// The coverage of one rule.
#[derive(Debug, Clone, Serialize)]
pub struct RuleCoverage {
    #[serde(flatten)]
    pub rule: RuleRef,
    pub firing_tests: Vec<String>,
    pub non_firing_tests: Vec<String>,
}

/// The coverage of one paper clause.
#[derive(Debug, Clone, Serialize)]
pub struct ClauseCoverage {
    pub clause: String,
    pub rules: Vec<RuleCoverage>,
    pub manual: Vec<ManualRef>,
    /// Empty when covered; otherwise why not, one reason per gap.
    pub gaps: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub clauses: Vec<ClauseCoverage>,
    /// Rules citing a clause the paper policy does not have.
    pub unknown_clauses: Vec<RuleRef>,
    pub covered: usize,
    pub total: usize,
    pub percent: f64,
}

/// Joins the paper's clauses with rules, manual declarations, tests and artifacts.
pub fn compute(paper: &[String], policies: &[PolicyInput]) -> Report {
    let mut by_clause: BTreeMap<&str, (Vec<RuleCoverage>, Vec<ManualRef>)> = BTreeMap::new();
    let mut unknown_clauses = Vec::new();
    for policy in policies {
        for (i, rule) in policy.rules.iter().enumerate() {
            let passing = policy.cases.iter().filter(|c| c.passed);
            let firing_tests = passing
                .clone()
                .filter(|c| c.asserted_fired.contains(&i))
                .map(|c| c.name.clone())
                .collect();
            let non_firing_tests = passing
                .filter(|c| c.asserted_not_fired.contains(&i))
                .map(|c| c.name.clone())
                .collect();
            let coverage = RuleCoverage {
                rule: rule.clone(),
                firing_tests,
                non_firing_tests,
            };
            match paper.iter().find(|c| **c == rule.clause) {
                Some(c) => by_clause.entry(c).or_default().0.push(coverage),
                None => unknown_clauses.push(rule.clone()),
            }
        }
        for m in &policy.manual {
            if let Some(c) = paper.iter().find(|c| **c == m.clause) {
                by_clause.entry(c).or_default().1.push(m.clone());
            }
        }
    }
    let mut clauses = Vec::new();
    for clause in paper {
        let (rules, manual) = by_clause.remove(clause.as_str()).unwrap_or_default();
        let mut gaps = Vec::new();
        if rules.is_empty() && manual.is_empty() {
            gaps.push(
                "paper only: no rule enforces it and no `manual` declaration owns it".to_string(),
            );
        }
        for r in &rules {
            if r.firing_tests.is_empty() {
                gaps.push(format!(
                    "rule {} \"{}\" ({}) has no passing test that makes it fire",
                    r.rule.id, r.rule.title, r.rule.location
                ));
            }
            if r.non_firing_tests.is_empty() && !r.rule.unconditional {
                gaps.push(format!(
                    "rule {} \"{}\" ({}) has no passing test where it must not fire",
                    r.rule.id, r.rule.title, r.rule.location
                ));
            }
        }
        clauses.push(ClauseCoverage {
            clause: clause.clone(),
            rules,
            manual,
            gaps,
        });
    }
    let total = clauses.len() + unknown_clauses.len();
    let covered = clauses.iter().filter(|c| c.gaps.is_empty()).count();
    let percent = if total == 0 {
        100.0
    } else {
        100.0 * covered as f64 / total as f64
    };
    Report {
        clauses,
        unknown_clauses,
        covered,
        total,
        percent,
    }
}

impl Report {
    /// The human-readable report: one block per clause, gaps called out.
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for c in &self.clauses {
            let mark = if c.gaps.is_empty() { "ok  " } else { "GAP " };
            let _ = writeln!(out, "{mark}{}", c.clause);
            for r in &c.rules {
                let _ = writeln!(
                    out,
                    "      rule {} \"{}\" at {} in {} (sha256 {})",
                    r.rule.id,
                    r.rule.title,
                    r.rule.location,
                    r.rule.artifact,
                    short(&r.rule.artifact_sha256)
                );
                let _ = writeln!(out, "        fires in: {}", list_or_none(&r.firing_tests));
                if r.rule.unconditional && r.non_firing_tests.is_empty() {
                    let _ = writeln!(out, "        must not fire in: (unconditional rule)");
                } else {
                    let _ = writeln!(
                        out,
                        "        must not fire in: {}",
                        list_or_none(&r.non_firing_tests)
                    );
                }
            }
            for m in &c.manual {
                let _ = writeln!(
                    out,
                    "      manual, owned by {} at {}: {}",
                    m.owner, m.location, m.reason
                );
            }
            for g in &c.gaps {
                let _ = writeln!(out, "      missing: {g}");
            }
        }
        for r in &self.unknown_clauses {
            let _ = writeln!(
                out,
                "GAP {} (not in the paper policy): rule \"{}\" at {} cites a clause the paper does not have",
                r.clause, r.title, r.location
            );
        }
        let _ = writeln!(
            out,
            "\ncoverage: {}/{} clauses ({:.1}%)",
            self.covered, self.total, self.percent
        );
        out
    }

    /// JUnit XML: one test case per clause, failing with its gaps.
    pub fn render_junit(&self) -> String {
        use crate::policy_tests::junit::{CaseResult, render};
        let mut results: Vec<CaseResult> = self
            .clauses
            .iter()
            .map(|c| CaseResult {
                suite: "writ coverage".into(),
                name: c.clause.clone(),
                seconds: 0.0,
                failure: (!c.gaps.is_empty()).then(|| c.gaps.join("\n")),
            })
            .collect();
        results.extend(self.unknown_clauses.iter().map(|r| CaseResult {
            suite: "writ coverage".into(),
            name: r.clause.clone(),
            seconds: 0.0,
            failure: Some(format!(
                "rule \"{}\" at {} cites a clause the paper policy does not have",
                r.title, r.location
            )),
        }));
        render(&results)
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// The first few test names and how many more, so a rule every case exercises stays one
/// readable line (the JSON report has them all).
fn list_or_none(v: &[String]) -> String {
    const SHOWN: usize = 3;
    match v.len() {
        0 => "(none)".to_string(),
        n if n <= SHOWN => v.join("; "),
        n => format!("{}; and {} more", v[..SHOWN].join("; "), n - SHOWN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_bold_clause_ids_once_in_order() {
        let md = "- **AIP-1.1** Only ... **AIP-1.2** x **Note** **AIP-1.1** **SEC-10** **A-b**";
        assert_eq!(paper_clauses(md), vec!["AIP-1.1", "AIP-1.2", "SEC-10"]);
    }

    #[test]
    fn finds_ids_in_headings_list_items_and_tables() {
        let md = "# Policy\n\
## HR-1 Hiring\n\
### HR-1.1: Screening\n\
- HR-2.1 Staff may not paste CVs.\n\
* HR-2.2: nor references\n\
3. HR-2.3. Numbered item\n\
| Clause | Text |\n\
|---|---|\n\
| HR-3.1 | a table row |\n\
| `HR-3.2` | in code font |\n\
```\n\
- HR-9.9 inside a code block is not a clause\n\
```\n\
Prose that mentions HR-4.1 in passing is not a clause.\n";
        let paper = scan_paper(md);
        let ids: Vec<&str> = paper.clauses.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "HR-1", "HR-1.1", "HR-2.1", "HR-2.2", "HR-2.3", "HR-3.1", "HR-3.2"
            ]
        );
        assert_eq!(paper.clauses[0].line, 2);
        assert!(paper.warnings.is_empty(), "{:?}", paper.warnings);
    }

    #[test]
    fn warns_about_ids_that_do_not_parse() {
        let md = "- **AIP-2.x** wildcard\n- aip-2.1 lower case\n| AIP 2.2 | spaced |\n## AIP_2.3 underscored\n- **Note 1** is prose\n- **AIP-2.4** fine\n";
        let paper = scan_paper(md);
        let ids: Vec<&str> = paper.clauses.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["AIP-2.4"]);
        let lines: Vec<usize> = paper.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [1, 2, 3, 4], "{:?}", paper.warnings);
        assert!(paper.warnings[0].message.contains("`AIP-2.x`"));
    }

    fn rule(clause: &str) -> RuleRef {
        RuleRef {
            id: clause.into(),
            clause: clause.into(),
            title: format!("rule for {clause}"),
            location: "p.policy:3".into(),
            artifact: "p-1.0.0.wasm".into(),
            artifact_sha256: "ab".repeat(32),
            unconditional: false,
        }
    }

    fn case(name: &str, passed: bool, fired: Vec<usize>, not_fired: Vec<usize>) -> CaseRef {
        CaseRef {
            name: name.into(),
            artifact: "p-1.0.0.wasm".into(),
            passed,
            asserted_fired: fired,
            asserted_not_fired: not_fired,
        }
    }

    #[test]
    fn names_every_kind_of_gap() {
        let paper: Vec<String> = ["A-1", "A-2", "A-3", "A-4"].map(String::from).to_vec();
        let input = PolicyInput {
            artifact: "p-1.0.0.wasm".into(),
            rules: vec![rule("A-1"), rule("A-2"), rule("B-9")],
            manual: vec![ManualRef {
                clause: "A-3".into(),
                owner: "o".into(),
                reason: "r".into(),
                location: "p.policy:9".into(),
            }],
            cases: vec![
                case("fires A-1", true, vec![0], vec![1]),
                case("quiet", true, vec![], vec![0]),
                case("fires A-2 but fails", false, vec![1], vec![0]),
            ],
        };
        let report = compute(&paper, &[input]);
        let gaps = |c: &str| {
            report
                .clauses
                .iter()
                .find(|x| x.clause == c)
                .map(|x| x.gaps.clone())
                .unwrap_or_default()
        };
        assert!(gaps("A-1").is_empty());
        assert_eq!(gaps("A-2").len(), 1);
        assert!(gaps("A-2")[0].contains("no passing test that makes it fire"));
        assert!(gaps("A-3").is_empty());
        assert!(gaps("A-4")[0].starts_with("paper only"));
        assert_eq!(report.unknown_clauses.len(), 1);
        assert_eq!((report.covered, report.total), (2, 5));
        assert!(
            report
                .render_text()
                .contains("GAP B-9 (not in the paper policy)")
        );
        assert!(report.render_junit().contains("failures=\"3\""));
    }
}
