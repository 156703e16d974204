//! Fuzz-style robustness test: thousands of mutated policies (byte flips, token deletions,
//! duplications and insertions, truncations, hostile nesting) go through parse, check,
//! render and format. Oracles: nothing panics or overflows the stack; for every input that
//! parses cleanly, `format` is idempotent and its output parses back to the same AST.
//! Deterministic (fixed seed) and fast enough for every `cargo test` run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "#",
    ",",
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "%",
    "and",
    "or",
    "not",
    "in",
    "has",
    "pii",
    "secret",
    "prompt",
    "response",
    "model",
    "header",
    "spend",
    "tokens",
    "requests",
    "minute",
    "confidence",
    "team",
    "month",
    "rule",
    "policy",
    "workflow",
    "price",
    "detector",
    "manual",
    "kill_switch",
    "on",
    "when",
    "then",
    "deny",
    "allow",
    "redact",
    "tokenise",
    "route to",
    "cheapest",
    "escalate",
    "tag",
    "alert at",
    "enforcement",
    "monitor",
    "request",
    " ",
    "\n",
    "0.5",
    "403",
    "10%",
    "5 EUR",
    "true",
    "\"x\"",
    "\\",
    "é",
    "AIP-1.2",
    "regex",
    "1M",
];

fn mutate(rng: &mut Rng, src: &str) -> String {
    let mut b = src.as_bytes().to_vec();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        let len = b.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                const BYTES: &[u8] = b" ({[]})\"#=<>!%,.-_aznot0123\n\\";
                b[i] = BYTES[rng.below(BYTES.len())];
            }
            1 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below(12.min(len - i));
                b.drain(i..i + n);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below(40.min(len - i));
                let chunk: Vec<u8> = b[i..i + n].to_vec();
                b.splice(i..i, chunk);
            }
            3 if len > 0 => b.truncate(rng.below(len)),
            4 => {
                let i = rng.below(len + 1);
                let t = TOKENS[rng.below(TOKENS.len())];
                b.splice(i..i, t.bytes());
            }
            5 if len > 0 => {
                // Swap two lines.
                let text = String::from_utf8_lossy(&b).to_string();
                let mut lines: Vec<&str> = text.lines().collect();
                if lines.len() > 1 {
                    let (x, y) = (rng.below(lines.len()), rng.below(lines.len()));
                    lines.swap(x, y);
                }
                b = lines.join("\n").into_bytes();
            }
            _ => {
                let i = rng.below(len + 1);
                let t = TOKENS[rng.below(TOKENS.len())];
                let times = 1 + rng.below(4);
                for _ in 0..times {
                    b.splice(i..i, t.bytes());
                }
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// Runs every stage over one input and checks the formatter oracle.
fn exercise(input: &str) -> bool {
    let diags = writ_compiler::check("fuzz.policy", input);
    let _ = writ_compiler::render("fuzz.policy", input, &diags);
    let (ast, syntax) = writ_compiler::parse(input);
    match writ_compiler::format(input) {
        Ok(formatted) => {
            assert!(syntax.is_empty());
            let (again, errs) = writ_compiler::parse(&formatted);
            assert!(
                errs.is_empty(),
                "formatted output does not parse:\n--- input\n{input}\n--- formatted\n{formatted}\n--- errors\n{}",
                writ_compiler::render("fmt.policy", &formatted, &errs)
            );
            assert_eq!(
                again, ast,
                "format changed the AST:\n--- input\n{input}\n--- formatted\n{formatted}"
            );
            let twice = writ_compiler::format(&formatted).unwrap();
            assert_eq!(
                twice, formatted,
                "format is not idempotent:\n--- input\n{input}"
            );
            if diags.iter().all(|d| !d.is_error()) {
                // Checked clean: lowering must succeed too.
                assert!(
                    writ_compiler::compile("fuzz.policy", input).is_ok(),
                    "{input}"
                );
            }
            true
        }
        Err(_) => {
            assert!(!syntax.is_empty());
            false
        }
    }
}

fn seeds() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "policy") {
                out.push(p);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut paths = Vec::new();
    walk(&root.join("policies"), &mut paths);
    walk(&root.join("tests/ui"), &mut paths);
    paths.sort();
    // The oversized-regex case costs a second per DFA build in debug; it has its own test.
    paths.retain(|p| !p.ends_with("regex_too_large.policy"));
    assert!(!paths.is_empty());
    paths
        .into_iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

#[test]
fn mutated_policies_never_panic_and_format_round_trips() {
    let seeds = seeds();
    // FUZZ_ITERS and FUZZ_SEED run a longer or different campaign locally.
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let mut rng = Rng(env("FUZZ_SEED").unwrap_or(0x5EED_1234_ABCD_0001) | 1);
    let mut clean = 0;
    let iterations = env("FUZZ_ITERS").map_or(2000, |n| n as usize);
    for i in 0..iterations {
        let seed = &seeds[i % seeds.len()];
        let input = mutate(&mut rng, seed);
        if exercise(&input) {
            clean += 1;
        }
    }
    // The mutations are mild enough that a share still parses, so the oracle is exercised.
    assert!(clean > iterations / 20, "only {clean} inputs parsed");
}

#[test]
fn hostile_nesting_is_rejected_without_overflowing() {
    let rule =
        |cond: &str| format!("rule A \"t\" {{\n  on request\n  when {cond}\n  then allow\n}}\n");
    let deep = 10_000;
    let cases = [
        rule(&format!(
            "{}model == \"a\"{}",
            "(".repeat(deep),
            ")".repeat(deep)
        )),
        rule(&format!("{}model == \"a\"", "(".repeat(deep))),
        rule(&format!("{}stream", "not ".repeat(deep))),
        rule(&format!(
            "{}stream{}",
            "not (".repeat(deep),
            ")".repeat(deep)
        )),
        rule(&format!("model in {}", "[".repeat(deep))),
        // Flat chains are not nested, only long; debug-mode pest makes them slow to test.
        rule(&vec!["stream"; deep / 5].join(" and ")),
        rule(&vec!["stream"; deep / 5].join(" or not ")),
        "{".repeat(deep),
        "}".repeat(deep),
        "\"".repeat(deep),
        "#".repeat(deep),
        "rule ".repeat(deep),
    ];
    for (i, c) in cases.iter().enumerate() {
        let t = std::time::Instant::now();
        exercise(c);
        eprintln!("case {i}: {:?}", t.elapsed());
    }
    // Deep but within the limit still parses and formats.
    let ok = rule(&format!(
        "{}model == \"a\"{}",
        "(".repeat(60),
        ")".repeat(60)
    ));
    assert!(exercise(&ok));
    let ok = rule(&format!("{}stream", "not ".repeat(60)));
    assert!(exercise(&ok));
    // Past it, a diagnostic and not a crash.
    let diags = writ_compiler::check("x", &cases[0]);
    assert_eq!(diags[0].code.id(), "E0004");
}

/// Every seed itself (the bundled policies and golden cases) satisfies the oracle.
#[test]
fn seeds_satisfy_the_formatter_oracle() {
    let seeds = seeds();
    let parsed = seeds.iter().filter(|s| exercise(s)).count();
    assert!(
        parsed > seeds.len() / 2,
        "{parsed} of {} seeds parse",
        seeds.len()
    );
}
