//! Paper-to-code coverage: for every clause of the written policy, the rules that enforce
//! it, the tests that prove each rule fires and does not fire, and the artifacts that ship
//! it. The computation is a pure function of what the caller gathered, so it is tested
//! without compiling or running anything.

use serde::Serialize;
use std::collections::BTreeMap;

/// A clause id as the paper policy writes it, in bold: `**AIP-2.1**`.
pub fn paper_clauses(markdown: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = markdown;
    while let Some(start) = rest.find("**") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("**") else { break };
        let candidate = &after[..end];
        if is_clause_id(candidate) && !out.iter().any(|c| c == candidate) {
            out.push(candidate.to_string());
        }
        rest = &after[end + 2..];
    }
    out
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
                    "rule \"{}\" ({}) has no passing test that makes it fire",
                    r.rule.title, r.rule.location
                ));
            }
            if r.non_firing_tests.is_empty() && !r.rule.unconditional {
                gaps.push(format!(
                    "rule \"{}\" ({}) has no passing test where it must not fire",
                    r.rule.title, r.rule.location
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
                    "      rule \"{}\" at {} in {} (sha256 {})",
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

    fn rule(clause: &str) -> RuleRef {
        RuleRef {
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
