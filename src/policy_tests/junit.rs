//! JUnit XML for CI systems that chart test results.

use std::fmt::Write;

/// One executed case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The suite: the test file the case comes from.
    pub suite: String,
    pub name: String,
    pub seconds: f64,
    /// The readable expected-versus-actual diff, when the case failed.
    pub failure: Option<String>,
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even when escaped.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Renders results grouped by suite, in the order they ran.
pub fn render(results: &[CaseResult]) -> String {
    let mut suites: Vec<(&str, Vec<&CaseResult>)> = Vec::new();
    for r in results {
        match suites.iter_mut().find(|(s, _)| *s == r.suite) {
            Some((_, v)) => v.push(r),
            None => suites.push((&r.suite, vec![r])),
        }
    }
    let failures = results.iter().filter(|r| r.failure.is_some()).count();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"writ test\" tests=\"{}\" failures=\"{failures}\">",
        results.len()
    );
    for (suite, cases) in suites {
        let f = cases.iter().filter(|r| r.failure.is_some()).count();
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\">",
            escape(suite),
            cases.len()
        );
        for c in cases {
            let _ = write!(
                xml,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.6}\"",
                escape(suite),
                escape(&c.name),
                c.seconds
            );
            match &c.failure {
                Some(diff) => {
                    let _ = writeln!(
                        xml,
                        ">\n      <failure message=\"expectation not met\">{}</failure>\n    </testcase>",
                        escape(diff)
                    );
                }
                None => xml.push_str("/>\n"),
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_failures_and_escapes_text() {
        let xml = render(&[
            CaseResult {
                suite: "a.tests.yaml".into(),
                name: "ok".into(),
                seconds: 0.1,
                failure: None,
            },
            CaseResult {
                suite: "a.tests.yaml".into(),
                name: "deny <model>".into(),
                seconds: 0.2,
                failure: Some("status: expected 403, got 200 & more".into()),
            },
        ]);
        assert!(xml.contains("tests=\"2\" failures=\"1\""));
        assert!(xml.contains("name=\"deny &lt;model&gt;\""));
        assert!(xml.contains("got 200 &amp; more</failure>"));
    }
}
