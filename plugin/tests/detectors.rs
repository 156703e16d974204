//! Detector behaviour: precision and recall on the labelled corpus in
//! `tests/data/detectors/`, edge cases per detector, and the custom-DFA round trip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use regex_automata::dfa::regex::Regex;
use writ_plugin::detect::{self, Match, Scanner};
use writ_plugin::ir::{CustomDetector, Detector, DetectorClass, DetectorKind};

fn builtins() -> Vec<Detector> {
    detect::builtins()
        .iter()
        .map(|b| Detector {
            name: b.name.to_string(),
            class: b.class,
            kind: DetectorKind::Builtin(b.name.to_string()),
        })
        .collect()
}

fn scanner() -> Scanner {
    Scanner::new(&builtins()).unwrap()
}

/// (detector name, matched text) for every match in `text` with all built-ins wanted.
fn found(text: &str) -> Vec<(String, String)> {
    let s = scanner();
    let mut out = Vec::new();
    s.scan(text, &s.all_ids(), &mut out);
    out.iter()
        .map(|m| {
            (
                s.name(m.detector).unwrap().to_string(),
                text[m.start..m.end].to_string(),
            )
        })
        .collect()
}

/// A detector's id by name, so tests do not depend on the built-in list's order.
fn id_of(s: &Scanner, name: &str) -> u16 {
    s.all_ids()
        .into_iter()
        .find(|&id| s.name(id) == Some(name))
        .unwrap()
}

fn one(name: &str, text: &str) -> Option<String> {
    found(text)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/detectors")
}

#[test]
fn corpus_precision_and_recall() {
    let s = scanner();
    let all = s.all_ids();
    let mut out = Vec::new();
    let mut failures = Vec::new();
    let (mut total_pos, mut total_neg) = (0, 0);
    let mut stats = Vec::new();
    println!(
        "{:<16} {:>5} {:>5} {:>4} {:>4} {:>4} {:>9} {:>7}",
        "detector", "pos", "neg", "tp", "fp", "fn", "precision", "recall"
    );
    for (id, name) in detect::builtins().iter().map(|b| b.name).enumerate() {
        let id = id as u16;
        let path = corpus_dir().join(format!("{name}.jsonl"));
        let data = std::fs::read_to_string(&path).unwrap();
        let (mut tp, mut fp, mut fneg, mut pos, mut neg) = (0, 0, 0, 0, 0);
        for line in data.lines() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = row["text"].as_str().unwrap();
            let value = row["value"].as_str().unwrap();
            let is_match = row["label"] == "match";
            s.scan(text, &all, &mut out);
            let mine: Vec<&str> = out
                .iter()
                .filter(|m| m.detector == id)
                .map(|m| &text[m.start..m.end])
                .collect();
            if is_match {
                pos += 1;
                if mine.contains(&value) {
                    tp += 1;
                } else {
                    fneg += 1;
                    failures.push(format!("FN {name}: {value:?} in {text:?}, got {mine:?}"));
                }
                let extra = mine.iter().filter(|v| **v != value).count();
                if extra > 0 {
                    fp += extra;
                    failures.push(format!("FP {name}: {mine:?} in {text:?}"));
                }
            } else {
                neg += 1;
                if !mine.is_empty() {
                    fp += mine.len();
                    failures.push(format!("FP {name}: {mine:?} in {text:?}"));
                }
            }
        }
        total_pos += pos;
        total_neg += neg;
        let precision = f64::from(tp) / f64::from((tp + fp as u32).max(1));
        let recall = f64::from(tp) / f64::from((tp + fneg).max(1));
        println!(
            "{name:<16} {pos:>5} {neg:>5} {tp:>4} {fp:>4} {fneg:>4} {precision:>9.3} {recall:>7.3}"
        );
        stats.push((name, pos, neg, precision, recall));
        let floor = 1.0;
        if precision < floor || recall < floor {
            failures.push(format!(
                "{name}: precision {precision:.3} recall {recall:.3} under {floor}"
            ));
        }
    }
    println!("total: {total_pos} true values, {total_neg} near-misses");
    for f in &failures {
        println!("{f}");
    }
    assert!(total_pos >= 300 && total_neg >= 300);
    check_detector_table(&stats);
    assert!(
        !failures.iter().any(|f| f.contains(" under ")),
        "thresholds missed"
    );
}

/// `docs/detectors.md`: every built-in by region with its classes, validator and corpus
/// scores, generated here from the registry and this run's precision and recall, so it
/// can never drift from the code. `BLESS=1` rewrites it; otherwise a stale file fails.
fn check_detector_table(stats: &[(&str, u32, u32, f64, f64)]) {
    use std::fmt::Write;
    let mut md = String::new();
    let n = detect::builtins().len();
    md.push_str("# Built-in detectors\n\n");
    md.push_str(
        "Generated from the detector registry (`plugin/src/detect/mod.rs`) and the labelled \
         corpus (`tests/data/detectors/`) by `plugin/tests/detectors.rs`; do not edit. \
         `BLESS=1 cargo test -p writ-plugin --test detectors corpus` rewrites it, and the \
         test fails when it is stale or when a detector's precision or recall on the corpus \
         drops below 1.0.\n\n",
    );
    let _ = writeln!(
        md,
        "{n} detectors. \"True\" counts the corpus's valid values (synthetic, valid by the \
         validator), \"near\" its near-misses (bad checksums, wrong prefixes and lengths, \
         values inside words, valid numbers without their context keyword).\n"
    );
    md.push_str("## Classes and groups\n\n| name | stands for | built-ins |\n|---|---|---|\n");
    for (c, what) in detect::CLASSES {
        let members = detect::class_members(c).unwrap_or_default();
        let _ = writeln!(md, "| `{c}` | {what} | {} |", members.len());
    }
    let sections = [
        ("Global formats", "global", DetectorClass::Pii),
        ("United States (`pii.us`)", "US", DetectorClass::Pii),
        ("United Kingdom (`pii.uk`)", "UK", DetectorClass::Pii),
        ("European Union (`pii.eu`)", "EU", DetectorClass::Pii),
        ("India (`pii.in`)", "IN", DetectorClass::Pii),
        ("Canada (`pii.ca`)", "CA", DetectorClass::Pii),
        ("Australia (`pii.au`)", "AU", DetectorClass::Pii),
        ("Singapore (`pii.sg`)", "SG", DetectorClass::Pii),
        ("Credentials (`secret`)", "global", DetectorClass::Secret),
    ];
    let mut listed = 0;
    for (title, region, class) in sections {
        let _ = writeln!(
            md,
            "\n## {title}\n\n| detector | finds | groups | validator | true | near | precision | recall |\n|---|---|---|---|---|---|---|---|"
        );
        for b in detect::builtins()
            .iter()
            .filter(|b| b.region == region && b.class == class)
        {
            listed += 1;
            let (_, pos, neg, p, r) = stats
                .iter()
                .find(|s| s.0 == b.name)
                .copied()
                .unwrap_or((b.name, 0, 0, 0.0, 0.0));
            let groups = b
                .groups
                .iter()
                .map(|g| format!("`{g}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} | {pos} | {neg} | {p:.3} | {r:.3} |",
                b.name,
                b.what,
                if groups.is_empty() {
                    "–".to_string()
                } else {
                    groups
                },
                b.validator
            );
        }
    }
    assert_eq!(listed, n, "a built-in's region has no section");
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let bless = std::env::var_os("BLESS").is_some();
    let path = docs.join("detectors.md");
    if bless {
        std::fs::write(&path, &md).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == md,
        "docs/detectors.md is stale: run `BLESS=1 cargo test -p writ-plugin --test detectors corpus`"
    );

    // The same registry, without scores, between markers in the language reference.
    let mut list = String::from("<!-- detectors: generated by plugin/tests/detectors.rs -->\n");
    for (title, region, class) in sections {
        let _ = writeln!(
            list,
            "\n**{title}**\n\n| name | class | groups | finds | validator |\n|---|---|---|---|---|"
        );
        for b in detect::builtins()
            .iter()
            .filter(|b| b.region == region && b.class == class)
        {
            let class = if b.class == DetectorClass::Secret {
                "secret"
            } else {
                "pii"
            };
            let groups = b
                .groups
                .iter()
                .map(|g| format!("`{g}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                list,
                "| `{}` | {class} | {} | {} | {} |",
                b.name,
                if groups.is_empty() {
                    "–".to_string()
                } else {
                    groups
                },
                b.what,
                b.validator
            );
        }
    }
    list.push_str("\n<!-- detectors: end -->");
    let lang_path = docs.join("language.md");
    let lang = std::fs::read_to_string(&lang_path).unwrap();
    let (Some(a), Some(z)) = (
        lang.find("<!-- detectors: generated"),
        lang.find("<!-- detectors: end -->"),
    ) else {
        panic!("docs/language.md lacks the detector list markers");
    };
    let fresh = format!(
        "{}{list}{}",
        &lang[..a],
        &lang[z + "<!-- detectors: end -->".len()..]
    );
    if bless {
        std::fs::write(&lang_path, &fresh).unwrap();
    }
    assert!(
        std::fs::read_to_string(&lang_path).unwrap() == fresh,
        "the detector list in docs/language.md is stale: run `BLESS=1 cargo test -p writ-plugin --test detectors corpus`"
    );
}

#[test]
fn builtin_names_resolve_and_unknown_is_an_error() {
    assert!(detect::builtins().len() >= 40);
    assert!(
        detect::builtins()
            .iter()
            .any(|b| b.name == "jwt" && b.class == DetectorClass::Secret)
    );
    let bad = Detector {
        name: "emial".into(),
        class: DetectorClass::Pii,
        kind: DetectorKind::Builtin("emial".into()),
    };
    assert_eq!(
        Scanner::new(&[bad]).unwrap_err(),
        detect::DetectError::UnknownBuiltin("emial".into())
    );
}

#[test]
fn masks() {
    assert_eq!(detect::mask("email"), "[EMAIL]");
    assert_eq!(detect::mask("credit_card"), "[CREDIT_CARD]");
    assert_eq!(detect::mask("employee-id"), "[EMPLOYEE_ID]");
}

#[test]
fn validators() {
    assert!(detect::validate("luhn", "4111 1111 1111 1111"));
    assert!(!detect::validate("luhn", "4111 1111 1111 1112"));
    assert!(!detect::validate("luhn", "4111x1111"));
    assert!(detect::validate("iban", "GB82 WEST 1234 5698 7654 32"));
    assert!(detect::validate("iban", "gb82west12345698765432"));
    assert!(!detect::validate("iban", "GB82 WEST 1234 5698 7654 33"));
    assert!(detect::validate("mod97", "GB82WEST12345698765432"));
    assert!(detect::validate("ssn", "123-45-6789"));
    assert!(!detect::validate("ssn", "666-45-6789"));
    // Separated: any taxpayer-id area; bare digits: issued SSN areas only.
    assert!(detect::validate("ssn", "929-30-4053"));
    assert!(!detect::validate("ssn", "929304053"));
    assert!(detect::validate("ssn", "123456789"));
    assert!(detect::validate("email", "a@example.com"));
    assert!(!detect::validate("email", "a@example.com and more"));
    assert!(detect::validate("ipv4", "10.1.2.3"));
    assert!(!detect::validate("nosuch", "x"));
    assert!(detect::is_validator("luhn") && detect::is_validator("ipv6"));
    assert!(!detect::is_validator("lunh"));
}

#[test]
fn values_at_start_end_and_whole_text() {
    assert_eq!(one("email", "a@b.co"), Some("a@b.co".into()));
    assert_eq!(one("email", "a@b.co."), Some("a@b.co".into()));
    assert_eq!(one("ipv4", "1.1.1.1"), Some("1.1.1.1".into()));
    assert_eq!(
        one("credit_card", "4111111111111111"),
        Some("4111111111111111".into())
    );
    assert_eq!(
        one("aws_access_key", "x AKIAIOSFODNN7EXAMPLE"),
        Some("AKIAIOSFODNN7EXAMPLE".into())
    );
    assert_eq!(one("us_ssn", "123-45-6789"), Some("123-45-6789".into()));
    assert!(found("").is_empty());
    assert!(found("@").is_empty());
    assert!(found("-----BEGIN ").is_empty());
}

#[test]
fn unicode_around_values_keeps_char_boundaries() {
    let text = "é4111111111111111é ünï@exämple.com 名前10.0.0.1名前 ∑fe80::1∑";
    let s = scanner();
    let mut out = Vec::new();
    s.scan(text, &s.all_ids(), &mut out);
    for m in &out {
        assert!(text.is_char_boundary(m.start) && text.is_char_boundary(m.end));
    }
    let got = found(text);
    assert!(got.contains(&("credit_card".into(), "4111111111111111".into())));
    assert!(got.contains(&("ipv4".into(), "10.0.0.1".into())));
    assert!(got.contains(&("ipv6".into(), "fe80::1".into())));
    // Non-ASCII in the domain: not an ASCII email, and nothing half-matched.
    assert!(!got.iter().any(|(n, _)| n == "email"));
}

#[test]
fn adjacent_values_are_separate_and_sorted() {
    let text = "a@x.com,b@y.org 10.0.0.1 10.0.0.2;123-45-6789";
    let got = found(text);
    assert_eq!(
        got,
        vec![
            ("email".into(), "a@x.com".into()),
            ("email".into(), "b@y.org".into()),
            ("ipv4".into(), "10.0.0.1".into()),
            ("ipv4".into(), "10.0.0.2".into()),
            ("us_ssn".into(), "123-45-6789".into()),
        ]
    );
}

#[test]
fn wanted_restricts_detectors_and_any_agrees() {
    let s = scanner();
    let text = "mail a@x.com card 4111 1111 1111 1111";
    let email = id_of(&s, "email");
    let mut out = Vec::new();
    s.scan(text, &[email], &mut out);
    assert_eq!(out.len(), 1);
    assert!(s.any(text, &[email]));
    assert!(!s.any("nothing here", &s.all_ids()));
    assert!(!s.any(text, &[]));
    s.scan(text, &[999], &mut out);
    assert!(out.is_empty());
    let secrets = detect::builtins()
        .iter()
        .filter(|b| b.class == DetectorClass::Secret)
        .count();
    assert_eq!(s.ids_of_class(DetectorClass::Secret).len(), secrets);
}

#[test]
fn card_edges() {
    assert_eq!(
        one("credit_card", "pay 3782 822463 10005 now"),
        Some("3782 822463 10005".into())
    );
    assert_eq!(
        one("credit_card", "4111-1111-1111-1111"),
        Some("4111-1111-1111-1111".into())
    );
    assert_eq!(one("credit_card", "4111-1111-1111-1111-2222"), None);
    assert_eq!(one("credit_card", "4111 1111 1111 1112"), None);
    assert_eq!(one("credit_card", "12.4111111111111111"), None);
}

#[test]
fn ssn_edges() {
    assert_eq!(
        one("us_ssn", "ssn 123 45 6789."),
        Some("123 45 6789".into())
    );
    // The 9xx area holds real taxpayer ids (ITINs) and synthetic test data: never let it
    // through when written as 3-2-4.
    for good in ["929-30-4053", "900-12-3456", "999 93 9999", "667-01-0001"] {
        assert_eq!(one("us_ssn", good), Some(good.into()), "{good}");
    }
    for bad in [
        "000-12-3456",
        "666-12-3456",
        "900-00-3456",
        "123-00-4567",
        "123-45-0000",
        "123456789",
    ] {
        assert_eq!(one("us_ssn", bad), None, "{bad}");
    }
}

#[test]
fn itin_edges() {
    for good in [
        "912-70-1234",
        "900 50 0001",
        "999-99-9999",
        "912-65-1234",
        "912-94-1234",
    ] {
        assert_eq!(one("us_itin", good), Some(good.into()), "{good}");
    }
    for bad in [
        "912-49-1234",
        "912-66-1234",
        "912-89-1234",
        "912-93-1234",
        "912-70-0000",
        "812-70-1234",
        "912701234",
    ] {
        assert_eq!(one("us_itin", bad), None, "{bad}");
    }
    // Only `us_ssn` wanted: an ITIN is still a taxpayer id and is found.
    let s = Scanner::new(&[Detector {
        name: "us_ssn".into(),
        class: DetectorClass::Pii,
        kind: DetectorKind::Builtin("us_ssn".into()),
    }])
    .unwrap();
    assert!(s.any("itin 912-70-1234", &s.all_ids()));
}

#[test]
fn ip_edges() {
    assert_eq!(
        one("ipv6", "at 2001:db8::ff00:42:8329. Then"),
        Some("2001:db8::ff00:42:8329".into())
    );
    assert_eq!(one("ipv4", "1.2.3.4.5"), None);
    assert_eq!(one("ipv4", "256.1.1.1"), None);
    assert_eq!(one("ipv4", "Version 1.2.3.4"), None);
    assert_eq!(one("ipv4", "build=1.2.3.4"), None);
    assert_eq!(one("ipv4", "rebuild 1.2.3.4"), Some("1.2.3.4".into()));
    assert_eq!(one("ipv4", "host 10.0.0.1:8080"), Some("10.0.0.1".into()));
    assert_eq!(one("ipv4", "net 10.0.0.0/8"), Some("10.0.0.0".into()));
    assert_eq!(one("ipv6", "at 12:30:45"), None);
    assert_eq!(one("ipv6", "[::1]:80"), Some("::1".into()));
    assert_eq!(
        one("ipv6", "::ffff:192.0.2.128"),
        Some("::ffff:192.0.2.128".into())
    );
    assert_eq!(
        one("ipv6", "2001:db8:0:0:0:0:2:1"),
        Some("2001:db8:0:0:0:0:2:1".into())
    );
    assert_eq!(one("ipv6", "1:2:3:4:5:6:7:8:9"), None);
}

#[test]
fn phone_edges() {
    for v in [
        "+14155550132",
        "(415) 555-0132",
        "415-555-0132",
        "415.555.0132",
        "020 7946 0018",
        "+44 20 7946 0018",
        "+49 30 1234567",
        "01 23 45 67 89",
    ] {
        assert_eq!(
            one("phone", &format!("call {v} now")),
            Some(v.into()),
            "{v}"
        );
    }
    for v in [
        "2024-01-15",
        "01.02.2023",
        "1.2.3.4",
        "12345678901",
        "4111 1111 1111 1111",
        "v1.2.3",
        "0000 1234 5678",
        "+0 20 7946 0018",
    ] {
        assert_eq!(one("phone", v), None, "{v}");
    }
}

#[test]
fn secret_edges() {
    assert_eq!(
        one("aws_access_key", "AKIAIOSFODNN7EXAMPLEX"),
        None,
        "too long"
    );
    assert_eq!(one("openai_key", "pip install sk-learn"), None);
    let key = format!("sk-proj-{}", "Ab3d".repeat(20));
    assert_eq!(one("openai_key", &format!("key={key}")), Some(key));
    let pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\n-----END EC PRIVATE KEY-----";
    assert_eq!(
        one("private_key", &format!("here:\n{pem}\nthanks")),
        Some(pem.into())
    );
    assert_eq!(
        one(
            "jwt",
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcdefghijklmnop"
        ),
        Some("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcdefghijklmnop".into())
    );
}

#[test]
fn pathological_inputs_stay_fast() {
    let cases = [
        "1 ".repeat(50_000),
        "a@".repeat(50_000),
        "-----BEGIN PRIVATE KEY-----".repeat(5_000),
        "eyJa-".repeat(50_000),
        "1:".repeat(50_000),
        "9".repeat(100_000),
        "sk-".repeat(30_000),
    ];
    let s = scanner();
    let mut out = Vec::new();
    for text in &cases {
        let t = std::time::Instant::now();
        s.scan(text, &s.all_ids(), &mut out);
        // A bound against quadratic blow-ups (minutes on these inputs), not a speed
        // target: debug builds on a loaded 2-core machine take ~2 s for 54 detectors.
        assert!(t.elapsed().as_secs() < 15, "slow on {:?}", &text[..10]);
    }
}

fn custom(name: &str, pattern: &str, validator: Option<&str>) -> Detector {
    let re = Regex::new(pattern).unwrap();
    let (fwd, _) = re.forward().to_bytes_little_endian();
    let (rev, _) = re.reverse().to_bytes_little_endian();
    Detector {
        name: name.into(),
        class: DetectorClass::Pii,
        kind: DetectorKind::Custom(CustomDetector {
            pattern: pattern.into(),
            forward_dfa: fwd,
            reverse_dfa: rev,
            validator: validator.map(String::from),
        }),
    }
}

#[test]
fn custom_dfa_round_trip_with_validator_and_builtins() {
    let mut dets = builtins();
    dets.push(custom("employee_id", r"EMP-[0-9]{6}", None));
    dets.push(custom("card_like", r"[0-9]{16}", Some("luhn")));
    let s = Scanner::new(&dets).unwrap();
    let emp = id_of(&s, "employee_id");
    let card_like = id_of(&s, "card_like");
    let text = "EMP-123456 ok, 1234567812345670 and 1234567812345678, mail a@x.com";
    let mut out = Vec::new();
    s.scan(text, &s.all_ids(), &mut out);
    let got: Vec<(u16, &str)> = out
        .iter()
        .map(|m| (m.detector, &text[m.start..m.end]))
        .collect();
    assert_eq!(
        got,
        vec![
            (emp, "EMP-123456"),
            (card_like, "1234567812345670"),
            (id_of(&s, "email"), "a@x.com")
        ]
    );
    assert!(s.any("x EMP-000001", &[emp]));
    assert!(!s.any("x EMP-00001", &[emp]));
}

#[test]
fn overlapping_custom_and_builtin_take_leftmost_longest() {
    let mut dets = builtins();
    dets.push(custom("user_at", r"user[0-9]+", None));
    let s = Scanner::new(&dets).unwrap();
    let text = "write to user42@example.com";
    let mut out = Vec::new();
    s.scan(text, &s.all_ids(), &mut out);
    assert_eq!(
        out,
        vec![Match {
            detector: id_of(&s, "email"),
            start: 9,
            end: text.len()
        }]
    );
}

#[test]
fn bad_custom_dfa_and_validator_are_errors() {
    let mut d = custom("x", "a+", None);
    if let DetectorKind::Custom(c) = &mut d.kind {
        c.forward_dfa.truncate(10);
    }
    assert!(matches!(
        Scanner::new(&[d]),
        Err(detect::DetectError::BadDfa { .. })
    ));
    let v = custom("y", "a+", Some("nope"));
    assert!(matches!(
        Scanner::new(&[v]),
        Err(detect::DetectError::UnknownValidator { .. })
    ));
}

#[test]
fn custom_pattern_that_matches_empty_still_terminates() {
    let s = Scanner::new(&[custom("as", "a*", None)]).unwrap();
    let text = "bé aa b a";
    let mut out = Vec::new();
    s.scan(text, &[0], &mut out);
    let got: Vec<&str> = out.iter().map(|m| &text[m.start..m.end]).collect();
    assert_eq!(got, vec!["aa", "a"]);
}

#[test]
fn private_key_in_raw_json_and_truncated() {
    let raw = r#"{"content":"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"}"#;
    let v = one("private_key", raw).unwrap();
    assert!(v.starts_with("-----BEGIN") && v.ends_with("KEY-----"));
    let cut =
        r#"{"content":"-----BEGIN RSA PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nABCD"}"#;
    let v = one("private_key", cut).unwrap();
    assert!(v.ends_with("\\nABCD"), "{v}");
    let many = "-----BEGIN PRIVATE KEY-----\nAAAA\n".repeat(3);
    assert_eq!(found(&many).len(), 3);
}

/// Random texts built from fragments that exercise every detector's edges: no panic,
/// results sorted, non-overlapping and on char boundaries, `any` agrees with `scan`,
/// and every match is also a complete match on its own (context-free validation).
#[test]
fn random_fragment_texts_keep_the_invariants() {
    const FRAGS: &[&str] = &[
        "4111",
        "1111",
        " ",
        "-",
        ".",
        ":",
        "::",
        "@",
        "a",
        "Z",
        "é",
        "名",
        "0",
        "9",
        "+",
        "(",
        ")",
        "eyJ",
        "eyJhbGciOiJIUzI1NiJ9",
        "sk-",
        "ghp_",
        "AKIA",
        "xoxb-",
        "\n",
        "GB82",
        "WEST",
        "1",
        "255",
        "_",
        "/",
        "example.com",
        "x",
        "-----BEGIN PRIVATE KEY-----",
        "-----END PRIVATE KEY-----",
        "123",
        "45",
        "6789",
        "415",
        "555",
        "0132",
        "fe80",
        "\\n",
        "\"",
        "ABCDEFGHIJKLMNOP",
        "0123456789abcdef",
    ];
    let s = scanner();
    let all = s.all_ids();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Short-bounded detectors, so short texts still settle.
    let short: Vec<u16> = all
        .iter()
        .copied()
        .filter(|&id| s.max_match_len(&[id]).is_some_and(|l| l <= 48))
        .collect();
    assert!(short.len() >= 8, "{}", short.len());
    let mut out = Vec::new();
    let mut total = 0;
    for _ in 0..20_000 {
        let n = (next() % 60) as usize + 1;
        let text: String = (0..n)
            .map(|_| FRAGS[(next() % FRAGS.len() as u64) as usize])
            .collect();
        s.scan(&text, &all, &mut out);
        total += out.len();
        let mut last = 0;
        for m in &out {
            assert!(
                m.start >= last && m.start < m.end && m.end <= text.len(),
                "{text:?}"
            );
            assert!(text.is_char_boundary(m.start) && text.is_char_boundary(m.end));
            last = m.end;
            let name = s.name(m.detector).unwrap();
            let value = &text[m.start..m.end];
            assert!(
                detect::validate(name, value),
                "{name} {value:?} found in {text:?} but not alone"
            );
        }
        assert_eq!(s.any(&text, &all), !out.is_empty(), "{text:?}");
        // Streaming: a settled prefix of a cut agrees with the whole text.
        let cut = (next() as usize) % (text.len() + 1);
        if text.is_char_boundary(cut) {
            let mut whole = Vec::new();
            s.scan(&text, &short, &mut whole);
            let settled = s.settled_len(&text[..cut], &short);
            let mut part = Vec::new();
            s.scan(&text[..cut], &short, &mut part);
            let a: Vec<&Match> = whole.iter().filter(|m| m.start < settled).collect();
            let b: Vec<&Match> = part.iter().filter(|m| m.start < settled).collect();
            assert_eq!(a, b, "{text:?} cut {cut}");
            assert!(a.iter().all(|m| m.end <= settled));
        }
    }
    assert!(
        total > 1000,
        "fragments should produce matches, got {total}"
    );
}

/// The streaming contract of `settled_len`: cutting a text anywhere, the settled prefix's
/// matches are exactly the whole text's matches in that prefix, and none crosses the cut.
#[test]
fn settled_len_is_final_under_any_continuation() {
    let s = scanner();
    let all = s.all_ids();
    let pieces = [
        "mail jane.doe@example.com or call +44 20 7946 0018. ",
        "card 4111 1111 1111 1111 1 and IBAN GB82 WEST 1234 5698 7654 32 ok ",
        "hosts 10.0.0.1 and fe80::1ff:fe23:4567:890a; ",
        "key AKIAIOSFODNN7EXAMPLE, ssn 123-45-6789 — née ü. ",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n",
        "more prose in between the key lines to make the block long enough ",
        "-----END RSA PRIVATE KEY----- done. ",
    ];
    let text: String = pieces.concat().repeat(8);
    let no_jwt: Vec<u16> = all
        .iter()
        .copied()
        .filter(|&id| s.name(id) != Some("jwt"))
        .collect();
    for wanted in [&all, &no_jwt] {
        let mut whole = Vec::new();
        s.scan(&text, wanted, &mut whole);
        let mut part = Vec::new();
        let mut progress = 0;
        for cut in (0..=text.len()).filter(|&c| text.is_char_boundary(c)) {
            let prefix = &text[..cut];
            let n = s.settled_len(prefix, wanted);
            assert!(n <= cut && prefix.is_char_boundary(n));
            progress = progress.max(n);
            s.scan(prefix, wanted, &mut part);
            let a: Vec<Match> = whole.iter().copied().filter(|m| m.start < n).collect();
            let b: Vec<Match> = part.iter().copied().filter(|m| m.start < n).collect();
            assert_eq!(a, b, "cut {cut} settled {n}");
            assert!(a.iter().all(|m| m.end <= n), "cut {cut} settled {n}");
        }
        if wanted.len() < all.len() {
            assert!(progress > text.len() / 2, "{progress}");
        }
    }
    // Without private keys the hold-back is bounded, so long texts make progress.
    let bounded: Vec<u16> = all
        .iter()
        .copied()
        .filter(|&id| s.name(id) != Some("private_key") && s.name(id) != Some("jwt"))
        .collect();
    let long = "word ".repeat(400);
    assert!(s.settled_len(&long, &bounded) >= long.len() - 600);
    // The longest bounded match is a service-account file, but it is held only while
    // open, like a key block.
    assert_eq!(s.max_match_len(&bounded), Some(8192));
    assert_eq!(s.max_match_len(&all), None);
}

/// Everyday text (logs, code, versions, hashes, UUIDs, prices, times) raises no detector.
#[test]
fn clean_text_raises_nothing() {
    let data = std::fs::read_to_string(corpus_dir().join("clean.txt")).unwrap();
    let mut hits = Vec::new();
    let mut lines = 0;
    for line in data.lines().filter(|l| !l.starts_with('#')) {
        lines += 1;
        for f in found(line) {
            hits.push(format!("{f:?} in {line:?}"));
        }
    }
    assert!(lines >= 50);
    assert!(hits.is_empty(), "{hits:#?}");
}

#[test]
fn custom_detectors_hold_back_only_open_matches_and_scanner_is_shareable() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Scanner>();
    let mut dets = builtins();
    dets.push(custom("ticket", r"TCK-[0-9]+", None));
    let s = Scanner::new(&dets).unwrap();
    let text = "word ".repeat(500);
    let ticket = id_of(&s, "ticket");
    assert_eq!(s.max_match_len(&[ticket]), None);
    assert_eq!(s.settled_len(&text, &[ticket]), text.len());
    assert_eq!(s.settled_len("see TCK-12", &[ticket]), 4);
    let card_ip = [id_of(&s, "credit_card"), id_of(&s, "ipv4")];
    assert_eq!(s.max_match_len(&card_ip), Some(40));
    assert!(s.settled_len(&text, &card_ip) > 2000);
    assert_eq!(s.settled_len(&text, &[]), text.len());
}

/// The streaming contract with custom patterns in the mix, on random fragment texts.
#[test]
fn settled_len_with_custom_patterns_is_final() {
    const FRAGS: &[&str] = &[
        "TCK-", "12", "x", "yz", " ", "a@b.co", "10.0.0.1", "é", "-", "9",
    ];
    let mut dets = builtins();
    dets.push(custom("ticket", r"TCK-[0-9]+", None));
    dets.push(custom("xyz", r"x(?:yz)*", None));
    dets.push(custom("num", r"[0-9]{2}(?-u:\b)", Some("luhn")));
    let s = Scanner::new(&dets).unwrap();
    let wanted: Vec<u16> = vec![2, 3, 13, 14, 15];
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut whole, mut part) = (Vec::new(), Vec::new());
    let mut progressed = 0;
    for _ in 0..3_000 {
        let n = (next() % 120) as usize + 1;
        let text: String = (0..n)
            .map(|_| FRAGS[(next() % FRAGS.len() as u64) as usize])
            .collect();
        s.scan(&text, &wanted, &mut whole);
        for _ in 0..4 {
            let cut = (next() as usize) % (text.len() + 1);
            if !text.is_char_boundary(cut) {
                continue;
            }
            let settled = s.settled_len(&text[..cut], &wanted);
            progressed += usize::from(settled > 0);
            s.scan(&text[..cut], &wanted, &mut part);
            let a: Vec<&Match> = whole.iter().filter(|m| m.start < settled).collect();
            let b: Vec<&Match> = part.iter().filter(|m| m.start < settled).collect();
            assert_eq!(a, b, "{text:?} cut {cut} settled {settled}");
            assert!(a.iter().all(|m| m.end <= settled));
        }
    }
    assert!(progressed > 1000, "{progressed}");
}
