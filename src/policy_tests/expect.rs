//! Compares what happened to a request with what its case expects, producing
//! expected-versus-actual differences an author can read.

use super::format::Expect;

/// What the upstream received, when the request reached it.
#[derive(Debug, Clone, Default)]
pub struct SeenRequest {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A rule that matched, as the artifact's audit record reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredRule {
    /// The rule's identity in the artifact (`AIP-2.1`, `AIP-2.1#2`, `kill_switch`).
    pub id: String,
    pub clause: String,
    pub title: String,
    /// `enforce` or `monitor`.
    pub mode: String,
}

impl FiredRule {
    /// The 1-based place among the policy's rules citing the same clause.
    pub fn ordinal(&self) -> u32 {
        ordinal_of_id(&self.id)
    }
}

/// The ordinal a rule id carries: `AIP-2.1#2` is the second rule citing `AIP-2.1`, a bare
/// clause id the first.
pub fn ordinal_of_id(id: &str) -> u32 {
    match id.rsplit_once('#') {
        Some((_, n)) => n.parse().unwrap_or(0),
        None => 1,
    }
}

/// Everything observable about one request through an artifact.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub upstream: Option<SeenRequest>,
    pub client_status: u16,
    pub client_headers: Vec<(String, String)>,
    pub client_body: Vec<u8>,
    pub fired: Vec<FiredRule>,
    /// The review queue the reply was escalated to, if any.
    pub escalated: Option<String>,
}

/// One unmet expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub what: String,
    pub expected: String,
    pub actual: String,
}

/// Whether a test's rule reference names the rule with this clause, title and ordinal:
/// `AIP-2.1` names every rule citing the clause, `AIP-2.1#2` the second of them (as
/// `writ inspect` and the manifest number them), `AIP-2.1 "title"` the one with that title.
pub fn names(reference: &str, clause: &str, title: &str, ordinal: u32) -> bool {
    match reference.split_once(' ') {
        Some((c, t)) => c == clause && t.trim().trim_matches('"') == title,
        None => match reference.split_once('#') {
            Some((c, n)) => c == clause && n.parse::<u32>().is_ok_and(|n| n == ordinal),
            None => reference == clause,
        },
    }
}

/// Compares a set of rule references with the rules that fired in one mode.
fn compare_rules(what: &str, expected: &[String], fired: &[&FiredRule], out: &mut Vec<Mismatch>) {
    let unmatched_expected: Vec<&String> = expected
        .iter()
        .filter(|r| {
            !fired
                .iter()
                .any(|f| names(r, &f.clause, &f.title, f.ordinal()))
        })
        .collect();
    let unexpected: Vec<&&FiredRule> = fired
        .iter()
        .filter(|f| {
            !expected
                .iter()
                .any(|r| names(r, &f.clause, &f.title, f.ordinal()))
        })
        .collect();
    if !unmatched_expected.is_empty() || !unexpected.is_empty() {
        let mut exp: Vec<String> = expected.to_vec();
        exp.sort();
        let mut act: Vec<String> = fired
            .iter()
            .map(|f| format!("{} \"{}\"", f.id, f.title))
            .collect();
        act.sort();
        out.push(Mismatch {
            what: what.to_string(),
            expected: format!("[{}]", exp.join(", ")),
            actual: format!("[{}]", act.join(", ")),
        });
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Everything the upstream could see, for leak checks: path, headers and body.
fn upstream_view(seen: &SeenRequest) -> String {
    let mut all = seen.path.clone();
    for (k, v) in &seen.headers {
        all.push('\n');
        all.push_str(k);
        all.push_str(": ");
        all.push_str(v);
    }
    all.push('\n');
    all.push_str(&text(&seen.body));
    all
}

/// Every way `outcome` differs from `expect`; empty when the case passes.
pub fn check(expect: &Expect, outcome: &Outcome) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let reached = outcome.upstream.is_some();
    if let Some(allowed) = expect.allowed
        && allowed != reached
    {
        out.push(Mismatch {
            what: "allowed".into(),
            expected: allowed.to_string(),
            actual: format!("{reached} (client got {})", outcome.client_status),
        });
    }
    if let Some(status) = expect.status
        && status != outcome.client_status
    {
        out.push(Mismatch {
            what: "status".into(),
            expected: status.to_string(),
            actual: format!("{} {}", outcome.client_status, text(&outcome.client_body)),
        });
    }
    if let Some(fired) = &expect.fired {
        let acted: Vec<&FiredRule> = outcome
            .fired
            .iter()
            .filter(|f| f.mode != "monitor")
            .collect();
        compare_rules("fired", fired, &acted, &mut out);
    }
    if let Some(monitored) = &expect.monitored {
        let would: Vec<&FiredRule> = outcome
            .fired
            .iter()
            .filter(|f| f.mode == "monitor")
            .collect();
        compare_rules("monitored", monitored, &would, &mut out);
    }
    let upstream_body = outcome.upstream.as_ref().map(|s| text(&s.body));
    for needle in &expect.upstream_sees {
        if !upstream_body
            .as_deref()
            .is_some_and(|b| b.contains(needle.as_str()))
        {
            out.push(Mismatch {
                what: "upstream_sees".into(),
                expected: format!("a body containing {needle:?}"),
                actual: upstream_body
                    .clone()
                    .unwrap_or_else(|| "(the upstream was not called)".into()),
            });
        }
    }
    if let Some(seen) = &outcome.upstream {
        let view = upstream_view(seen);
        for needle in &expect.upstream_never_sees {
            if view.contains(needle.as_str()) {
                out.push(Mismatch {
                    what: "upstream_never_sees".into(),
                    expected: format!("no {needle:?} in path, headers or body"),
                    actual: view.clone(),
                });
            }
        }
    }
    let client_body = text(&outcome.client_body);
    for needle in &expect.client_sees {
        if !client_body.contains(needle.as_str()) {
            out.push(Mismatch {
                what: "client_sees".into(),
                expected: format!("a reply containing {needle:?}"),
                actual: client_body.clone(),
            });
        }
    }
    for needle in &expect.client_never_sees {
        if client_body.contains(needle.as_str()) {
            out.push(Mismatch {
                what: "client_never_sees".into(),
                expected: format!("no {needle:?} in the reply"),
                actual: client_body.clone(),
            });
        }
    }
    if let Some(model) = &expect.upstream_model {
        let actual = upstream_body
            .as_deref()
            .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
            .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_string));
        if actual.as_deref() != Some(model.as_str()) {
            out.push(Mismatch {
                what: "upstream_model".into(),
                expected: model.clone(),
                actual: actual.unwrap_or_else(|| "(none)".into()),
            });
        }
    }
    if let Some(queue) = &expect.escalated {
        let actual = outcome.escalated.clone().unwrap_or_else(|| "none".into());
        if *queue != actual {
            out.push(Mismatch {
                what: "escalated".into(),
                expected: queue.clone(),
                actual,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(clause: &str, title: &str, mode: &str) -> FiredRule {
        FiredRule {
            id: clause.into(),
            clause: clause.into(),
            title: title.into(),
            mode: mode.into(),
        }
    }

    #[test]
    fn fired_is_an_exact_set_and_monitor_rules_are_separate() {
        let outcome = Outcome {
            client_status: 403,
            fired: vec![
                rule("AIP-3.1", "Only approved models", "enforce"),
                rule("AIP-4.4", "Long", "monitor"),
            ],
            ..Outcome::default()
        };
        let ok = Expect {
            allowed: Some(false),
            status: Some(403),
            fired: Some(vec!["AIP-3.1".into()]),
            monitored: Some(vec!["AIP-4.4 \"Long\"".into()]),
            ..Expect::default()
        };
        assert_eq!(check(&ok, &outcome), vec![]);
        let wrong = Expect {
            fired: Some(vec!["AIP-3.1".into(), "AIP-2.1".into()]),
            status: Some(200),
            ..Expect::default()
        };
        let mismatches = check(&wrong, &outcome);
        let whats: Vec<&str> = mismatches.iter().map(|m| m.what.as_str()).collect();
        assert_eq!(whats, vec!["status", "fired"]);
    }

    #[test]
    fn leaks_are_found_in_headers_and_path_too() {
        let outcome = Outcome {
            upstream: Some(SeenRequest {
                path: "/v1/chat/completions?u=jane@example.com".into(),
                headers: vec![],
                body: b"{}".to_vec(),
            }),
            client_status: 200,
            ..Outcome::default()
        };
        let expect = Expect {
            upstream_never_sees: vec!["jane@example.com".into()],
            ..Expect::default()
        };
        assert_eq!(check(&expect, &outcome).len(), 1);
    }
}
