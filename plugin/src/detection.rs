//! One detection pass over a request body (issue 14 §2): every string of the body (object
//! keys included) is walked once for the union of the detectors the policy's request
//! rules use, and every `prompt has …` rule and the tokeniser/redactor read the result
//! instead of scanning again.
//!
//! Exactness: the scanner resolves overlaps greedily, so a scan with more detectors can
//! hide a value of one detector under a longer value of another. The pass therefore
//! records, per string, which detectors are *present*: each one `Scanner::any(text,
//! &[d])` finds, computed exactly for all of them in one walk by [`Scanner::present`]. A
//! rule reads presence; the rewriter skips every string in which none of its detectors
//! is present (a scan there finds nothing) and scans the others as it always did, so its
//! matches, and how their overlaps are resolved, are unchanged. It starts the built-ins'
//! walk of such a string where the pass first found one of its detectors, and skips the
//! search for disguised forms where the pass saw there are none ([`ScanHint`]): up to
//! there the two walks are the same, and found nothing. Plain Rust, no host calls.

use std::ops::Range;

use crate::detect::{Match, ScanHint, Scanner};
use crate::json_strings::{self, JsonError, Leaf, Path, Visitor};

/// What one pass found in one body, for the detectors in [`Detection::union`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detection {
    /// The detectors the pass looked for, sorted, without repeats.
    union: Vec<u16>,
    /// The detectors of `union` present anywhere in the body, sorted.
    present: Vec<u16>,
    /// The strings holding anything, in document order (by where they start).
    strings: Vec<Found>,
}

/// One string of the body with at least one value of the union in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    /// Where the string (its opening quote) starts in the body.
    at: usize,
    /// The detectors present in this string, sorted.
    present: Vec<u16>,
    /// (detector, byte of the decoded string) where the pass first found each built-in
    /// detector in the string as written.
    starts: Vec<(u16, usize)>,
    /// The string has no disguised form to look into ([`ScanHint::plain`]).
    plain: bool,
}

/// What [`Detection::matches`] knows about one string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known<'d> {
    /// The string's matches for the asked detectors (none: nothing of them is there).
    Matches(&'d [Match]),
    /// Some of the asked detectors are present (or were not looked for): scan the string,
    /// with these shortcuts ([`Scanner::scan_with`]).
    Scan(ScanHint),
}

impl Detection {
    /// Walks every string and key of `body` (a JSON document) once for `union`.
    pub fn of(scanner: &Scanner, body: &[u8], union: &[u16]) -> Result<Detection, JsonError> {
        let mut union = union.to_vec();
        union.sort_unstable();
        union.dedup();
        struct Pass<'s> {
            scanner: &'s Scanner,
            out: Detection,
        }
        impl Pass<'_> {
            fn string(&mut self, text: &str, at: usize) {
                let mut present: Vec<u16> = Vec::new();
                let mut starts: Vec<(u16, usize)> = Vec::new();
                let plain = self
                    .scanner
                    .present(text, &self.out.union, &mut present, &mut starts);
                if present.is_empty() {
                    return;
                }
                for d in &present {
                    if let Err(i) = self.out.present.binary_search(d) {
                        self.out.present.insert(i, *d);
                    }
                }
                self.out.strings.push(Found {
                    at,
                    present,
                    starts,
                    plain,
                });
            }
        }
        impl<'a> Visitor<'a> for Pass<'_> {
            fn leaf(&mut self, _: &Path<'a>, leaf: Leaf<'_>, span: Range<usize>) {
                if let Leaf::Str(s) = leaf {
                    self.string(s, span.start);
                }
            }
            fn key(&mut self, _: &Path<'a>, key: &str, span: Range<usize>) {
                self.string(key, span.start);
            }
        }
        let mut pass = Pass {
            scanner,
            out: Detection {
                union,
                ..Detection::default()
            },
        };
        if pass.out.union.is_empty() {
            return Ok(pass.out);
        }
        json_strings::visit(body, &mut pass)?;
        Ok(pass.out)
    }

    /// The detectors the pass looked for.
    pub fn union(&self) -> &[u16] {
        &self.union
    }

    /// Whether any of `detectors` is present in some string of the body (what
    /// `prompt has …` over the body asks), or `None` when one of them was not looked for.
    pub fn has_any(&self, detectors: &[u16]) -> Option<bool> {
        if !self.covers(detectors) {
            return None;
        }
        Some(
            detectors
                .iter()
                .any(|d| self.present.binary_search(d).is_ok()),
        )
    }

    /// What a scan of the string starting at byte `at` of the body with exactly `wanted`
    /// would return, as far as the pass knows: nothing, when none of `wanted` is present
    /// there; else where the built-ins' walk may start.
    pub fn matches(&self, at: usize, wanted: &[u16]) -> Known<'_> {
        if !self.covers(wanted) {
            return Known::Scan(ScanHint::default());
        }
        match self.strings.binary_search_by_key(&at, |f| f.at) {
            Ok(i) => match self.strings.get(i) {
                Some(found) if found.present.iter().all(|d| !wanted.contains(d)) => {
                    Known::Matches(&[])
                }
                Some(found) => Known::Scan(ScanHint {
                    // No start for any of `wanted`: the built-ins' walk finds none of them
                    // in the string as written (they are there in a disguised form, or
                    // they are custom detectors), so it need not run at all.
                    from: found
                        .starts
                        .iter()
                        .filter(|(d, _)| wanted.contains(d))
                        .map(|&(_, from)| from)
                        .min()
                        .unwrap_or(usize::MAX),
                    plain: found.plain,
                }),
                None => Known::Scan(ScanHint::default()),
            },
            // Nothing of the union there, so nothing of a subset either.
            Err(_) => Known::Matches(&[]),
        }
    }

    fn covers(&self, detectors: &[u16]) -> bool {
        detectors
            .iter()
            .all(|d| self.union.binary_search(d).is_ok())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::ir::{Detector, DetectorClass, DetectorKind};

    fn scanner(names: &[&str]) -> Scanner {
        let ds: Vec<Detector> = names
            .iter()
            .map(|n| Detector {
                name: (*n).to_string(),
                class: DetectorClass::Pii,
                kind: DetectorKind::Builtin((*n).to_string()),
            })
            .collect();
        Scanner::new(&ds).unwrap()
    }

    /// Every string (keys included) of a JSON body with its start offset, decoded.
    fn strings(body: &[u8]) -> Vec<(usize, String)> {
        struct S(Vec<(usize, String)>);
        impl<'a> Visitor<'a> for S {
            fn leaf(&mut self, _: &Path<'a>, leaf: Leaf<'_>, span: Range<usize>) {
                if let Leaf::Str(s) = leaf {
                    self.0.push((span.start, s.to_string()));
                }
            }
            fn key(&mut self, _: &Path<'a>, key: &str, span: Range<usize>) {
                self.0.push((span.start, key.to_string()));
            }
        }
        let mut s = S(Vec::new());
        json_strings::visit(body, &mut s).unwrap();
        s.0
    }

    /// Every non-empty subset of `0..n`.
    fn subsets(n: u16) -> Vec<Vec<u16>> {
        (1u32..(1 << n))
            .map(|bits| (0..n).filter(|i| bits & (1 << i) != 0).collect())
            .collect()
    }

    /// The pass answers every subset of its union as the per-rule scans do.
    fn agrees(s: &Scanner, body: &str) {
        let union = s.all_ids();
        let d = Detection::of(s, body.as_bytes(), &union).unwrap();
        let strings = strings(body.as_bytes());
        for wanted in subsets(u16::try_from(union.len()).unwrap()) {
            let any = strings.iter().any(|(_, t)| s.any(t, &wanted));
            assert_eq!(d.has_any(&wanted), Some(any), "{wanted:?} in {body}");
            for (at, t) in &strings {
                let mut expect = Vec::new();
                s.scan(t, &wanted, &mut expect);
                match d.matches(*at, &wanted) {
                    Known::Matches(m) => assert_eq!(m, expect.as_slice(), "{wanted:?} in {t:?}"),
                    Known::Scan(hint) => {
                        let mut got = Vec::new();
                        s.scan_with(t, &wanted, hint, &mut got);
                        assert_eq!(got, expect, "{wanted:?} with {hint:?} in {t:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn one_pass_answers_as_every_per_rule_scan() {
        let s = scanner(&["email", "phone", "credit_card", "iban", "us_ssn", "ipv4"]);
        for body in [
            r#"{"messages":[{"role":"user","content":"mail jane.doe@example.com or call +1 415 555 0100"}]}"#,
            r#"{"a":"card 4111 1111 1111 1111, iban DE89370400440532013000, ssn 123-45-6789"}"#,
            r#"{"jane@example.com":1,"b":["10.0.0.1","nothing here"],"c":"078-05-1120"}"#,
            r#"{"x":"DE89 3704 0044 0532 0130 00 4111111111111111 415-555-0100"}"#,
            r#"{"y":"no personal data at all","z":{"k":"still none"}}"#,
            r#"{"f":"ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ and amFuZUBleGFtcGxlLmNvbQ=="}"#,
        ] {
            agrees(&s, body);
        }
    }

    #[test]
    fn a_value_hidden_under_a_longer_one_is_still_present() {
        // The IBAN's digit groups hold a phone number: a scan with both reports the IBAN
        // only (the longer candidate wins), yet `has phone` on its own finds the phone.
        let s = scanner(&["iban", "phone"]);
        let body = r#"{"t":"DE89 3704 0044 0532 0130 00"}"#;
        let text = "DE89 3704 0044 0532 0130 00";
        let mut union = Vec::new();
        s.scan(text, &[0, 1], &mut union);
        assert!(union.iter().all(|m| m.detector == 0), "{union:?}");
        assert!(s.any(text, &[1]));
        let d = Detection::of(&s, body.as_bytes(), &[0, 1]).unwrap();
        assert_eq!(d.has_any(&[1]), Some(true));
        assert!(matches!(d.matches(5, &[0]), Known::Scan(_)));
        agrees(&s, body);
        // Likewise an ITIN-shaped number hides an SSN candidate.
        agrees(
            &scanner(&["us_ssn", "us_itin", "email"]),
            r#"{"a":"900-70-1234","b":"x@example.com"}"#,
        );
    }

    #[test]
    fn strings_without_the_asked_detectors_are_not_scanned() {
        let s = scanner(&["email", "phone"]);
        let body = r#"{"a":"x@example.com","b":"nothing","c":"call +1 415 555 0100"}"#;
        let d = Detection::of(&s, body.as_bytes(), &[0, 1]).unwrap();
        // "a" holds an e-mail only: a phone rewrite skips it, an e-mail one scans it.
        assert_eq!(d.matches(5, &[1]), Known::Matches(&[]));
        // The pass found the e-mail at its `@`, byte 1: the scan for it starts there, and
        // skips the disguised forms (the string has none: no folded view, no encoded run).
        assert_eq!(
            d.matches(5, &[0]),
            Known::Scan(ScanHint {
                from: 1,
                plain: true
            })
        );
        // "b" holds nothing.
        assert_eq!(d.matches(25, &[0, 1]), Known::Matches(&[]));
        agrees(&s, body);
    }

    /// The labelled detector corpus (`tests/data/detectors/`), every built-in on: for each
    /// detector alone, each class, every built-in together and a hundred fixed
    /// pseudo-random subsets, the one pass answers `has` and the rewriter's matches exactly
    /// as the per-rule scans do.
    #[test]
    fn one_pass_equals_the_per_rule_scans_on_the_detector_corpus() {
        let ds: Vec<Detector> = crate::detect::builtins()
            .iter()
            .map(|b| Detector {
                name: b.name.to_string(),
                class: b.class,
                kind: DetectorKind::Builtin(b.name.to_string()),
            })
            .collect();
        let s = Scanner::new(&ds).unwrap();
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/detectors");
        let mut texts: Vec<String> = Vec::new();
        for b in crate::detect::builtins() {
            let data = std::fs::read_to_string(dir.join(format!("{}.jsonl", b.name))).unwrap();
            let lines: Vec<String> = data
                .lines()
                .map(|l| {
                    let row: serde_json::Value = serde_json::from_str(l).unwrap();
                    row["text"].as_str().unwrap().to_string()
                })
                .collect();
            // One string per detector's file, and its lines one by one too.
            texts.push(lines.join(" \n"));
            texts.extend(lines);
        }
        texts.push(std::fs::read_to_string(dir.join("clean.txt")).unwrap());
        let body = serde_json::to_vec(&serde_json::json!({ "messages": texts })).unwrap();
        let union = s.all_ids();
        let d = Detection::of(&s, &body, &union).unwrap();
        let strings = strings(&body);
        let n = u16::try_from(union.len()).unwrap();
        let mut sets: Vec<Vec<u16>> = (0..n).map(|i| vec![i]).collect();
        sets.push(union.clone());
        for class in [DetectorClass::Pii, DetectorClass::Secret] {
            sets.push(s.ids_of_class(class));
        }
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..100 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let k = 2 + (seed % 6) as usize;
            let mut set: Vec<u16> = (0..k)
                .map(|j| ((seed >> (8 * j)) % u64::from(n)) as u16)
                .collect();
            set.sort_unstable();
            set.dedup();
            sets.push(set);
        }
        let (mut reused, mut scanned, mut started_late, mut plain) = (0usize, 0, 0, 0);
        let mut expect = Vec::new();
        for wanted in &sets {
            let any = strings.iter().any(|(_, t)| s.any(t, wanted));
            assert_eq!(d.has_any(wanted), Some(any), "has {wanted:?}");
            for (at, t) in &strings {
                s.scan(t, wanted, &mut expect);
                match d.matches(*at, wanted) {
                    Known::Matches(m) => {
                        reused += 1;
                        assert_eq!(m, expect.as_slice(), "{wanted:?} in {t:?}");
                    }
                    Known::Scan(hint) => {
                        scanned += 1;
                        started_late += usize::from(hint.from > 0);
                        plain += usize::from(hint.plain);
                        let mut got = Vec::new();
                        s.scan_with(t, wanted, hint, &mut got);
                        assert_eq!(got, expect, "{wanted:?} with {hint:?} in {t:?}");
                    }
                }
            }
        }
        // Every way is exercised: strings skipped, strings scanned, scans that start past
        // the beginning of their string, and scans that skip the disguised forms.
        assert!(
            reused > 0 && scanned > 0 && started_late > 0 && plain > 0,
            "{reused} skipped, {scanned} scanned, {started_late} started late, {plain} plain"
        );
    }

    #[test]
    fn detectors_outside_the_union_are_not_answered() {
        let s = scanner(&["email", "phone"]);
        let d = Detection::of(&s, br#"{"a":"x@example.com"}"#, &[0]).unwrap();
        assert_eq!(d.has_any(&[0]), Some(true));
        assert_eq!(d.has_any(&[1]), None);
        assert_eq!(d.matches(5, &[0, 1]), Known::Scan(ScanHint::default()));
    }
}
