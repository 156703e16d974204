//! Detector scan throughput on a 4 KB chat request (MB/s): writ's `Scanner` with every
//! built-in on (validated: Luhn, mod 97, Verhoeff, base58check, …), with the 14 built-ins
//! that existed before issue 10 (the pre-change scanner, same engine), against two
//! baselines measured in the same run: a `memchr` pass counting one byte (the floor of
//! any byte scan) and the `regex` crate running equivalent, unvalidated patterns for the
//! 14 older detectors as a `RegexSet` (which occur) and as one alternation with
//! `find_iter` (where they occur). `benches/README.md` records the ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use writ_plugin::detect::{self, Match, Scanner};
use writ_plugin::ir::{Detector, DetectorKind};

/// Roughly equivalent patterns, ASCII word boundaries so the lazy DFA never bails.
const PATTERNS: &[&str] = &[
    r"(?-u:\b)(?:[0-9][ -]?){12,18}[0-9](?-u:\b)",
    r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?-u:\b)",
    r"(?-u:\b)[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}(?-u:\b)",
    r"(?-u:\b)(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?-u:\b)",
    r"(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,7}:(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?|::(?:[0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4}",
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?-u:\b)",
    r"(?-u:\b)gh[pousr]_[A-Za-z0-9]{36,255}(?-u:\b)|(?-u:\b)github_pat_[A-Za-z0-9_]{82}(?-u:\b)",
    r"(?-u:\b)x(?:ox[baprs]|app)-[0-9]+-[A-Za-z0-9-]{10,}",
    r"(?-u:\b)sk-[A-Za-z0-9_-]{20,}",
    r"(?-u:\b)eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{8,}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY[A-Z ]*-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY[A-Z ]*-----",
    r"\+[1-9][0-9 ().-]{7,18}[0-9]|\(?[2-9][0-9]{2}\)?[-. ]?[2-9][0-9]{2}[-. ][0-9]{4}",
];

fn bench(c: &mut Criterion) {
    let body = writ_benches::payload::chat_request(false);
    let text = String::from_utf8(body).unwrap();
    let dets: Vec<Detector> = detect::builtins()
        .iter()
        .map(|b| Detector {
            name: b.name.to_string(),
            class: b.class,
            kind: DetectorKind::Builtin(b.name.to_string()),
        })
        .collect();
    let scanner = Scanner::new(&dets).unwrap();
    let all = scanner.all_ids();
    let n = all.len();
    // The built-ins before issue 10, for the pre-change ratio.
    const OLD: &[&str] = &[
        "credit_card",
        "iban",
        "us_itin",
        "us_ssn",
        "ipv4",
        "ipv6",
        "email",
        "aws_access_key",
        "github_token",
        "slack_token",
        "openai_key",
        "jwt",
        "private_key",
        "phone",
    ];
    let old: Vec<u16> = all
        .iter()
        .copied()
        .filter(|&id| scanner.name(id).is_some_and(|n| OLD.contains(&n)))
        .collect();
    assert_eq!(old.len(), OLD.len());
    let mut out: Vec<Match> = Vec::new();
    let set = regex::RegexSet::new(PATTERNS).unwrap();
    let alt = regex::Regex::new(&PATTERNS.join("|")).unwrap();
    let clean = "plain prose with no values at all, just words and punctuation. ".repeat(64);

    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("baseline memchr count of one byte", |b| {
        b.iter(|| memchr::memchr_iter(b'@', black_box(text.as_bytes())).count())
    });
    g.bench_function(format!("writ Scanner::scan (all {n} built-ins)"), |b| {
        b.iter(|| {
            scanner.scan(black_box(&text), &all, &mut out);
            out.len()
        })
    });
    g.bench_function("writ Scanner::scan (the 14 pre-issue-10 built-ins)", |b| {
        b.iter(|| {
            scanner.scan(black_box(&text), &old, &mut out);
            out.len()
        })
    });
    g.bench_function(format!("writ Scanner::any (all {n} built-ins)"), |b| {
        b.iter(|| scanner.any(black_box(&text), &all))
    });
    g.bench_function("regex RegexSet::matches", |b| {
        b.iter(|| set.matches(black_box(&text)).iter().count())
    });
    g.bench_function("regex alternation find_iter", |b| {
        b.iter(|| alt.find_iter(black_box(&text)).count())
    });
    g.throughput(Throughput::Bytes(clean.len() as u64));
    g.bench_function("baseline memchr count of one byte (clean prose)", |b| {
        b.iter(|| memchr::memchr_iter(b'@', black_box(clean.as_bytes())).count())
    });
    g.bench_function(
        format!("writ Scanner::scan (all {n} built-ins, clean prose)"),
        |b| {
            b.iter(|| {
                scanner.scan(black_box(&clean), &all, &mut out);
                out.len()
            })
        },
    );
    g.bench_function(
        "writ Scanner::scan (14 pre-issue-10 built-ins, clean prose)",
        |b| {
            b.iter(|| {
                scanner.scan(black_box(&clean), &old, &mut out);
                out.len()
            })
        },
    );
    g.bench_function("regex RegexSet::matches (clean prose)", |b| {
        b.iter(|| set.matches(black_box(&clean)).iter().count())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
