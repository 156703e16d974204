#!/usr/bin/env bash
# Bounded AFL++ campaigns for writ's fuzz targets, one at a time (see docs/fuzzing.md).
#
#   fuzz/run.sh                      # every target, 10^7 executions each
#   fuzz/run.sh sse detectors        # just these
#   EXECS=100000 fuzz/run.sh policy  # a shorter run
#
# Installs what it needs on stable Rust: cargo-afl from crates.io (its `config --build`
# builds AFL++ and the runtime for this rustc; no nightly, no system AFL). Output goes to
# fuzz/out/<target>/ (ignored by git); crashes and hangs are in
# fuzz/out/<target>/default/{crashes,hangs}/. A second run of a target resumes its
# campaign. Environment: EXECS (executions per target, default 10000000), MAX_SECONDS
# (wall-clock cap per target, default 7200), NICE (default 15: other builds share the
# machine), TIMEOUT_MS (per execution before AFL calls it a hang, default 1000),
# MAX_SEED_BYTES (the largest committed seed AFL starts from, default 1024).
set -euo pipefail
cd "$(dirname "$0")"

TARGETS=(policy json_strings sse detectors request)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); fi
EXECS="${EXECS:-10000000}"
MAX_SECONDS="${MAX_SECONDS:-7200}"
NICE="${NICE:-15}"
TIMEOUT_MS="${TIMEOUT_MS:-1000}"

if ! command -v cargo-afl >/dev/null 2>&1; then
    cargo install cargo-afl --locked
fi
# `afl-fuzz -h` exits 1 even when it works, so look for its banner instead.
if ! (cargo afl fuzz -h 2>&1 || true) | grep "afl-fuzz" >/dev/null; then
    cargo afl config --build
fi
nice -n "$NICE" cargo afl build --release

for t in "${TARGETS[@]}"; do
    out="out/$t"
    # AFL starts from the committed seeds no larger than MAX_SEED_BYTES (default 1024): a
    # whole bundled policy (2-4 KB) costs a full parse, check and format per mutant, and
    # AFL mutates small inputs better. The smoke runs under `cargo test` use every seed.
    input="$out.seeds"
    rm -rf "$input" && mkdir -p "$input"
    find "corpus/${t%_lower}" -type f -size "-$((${MAX_SEED_BYTES:-1024} + 1))c" \
        -exec cp {} "$input/" \; # policy_lower shares the policy corpus
    if [ -f "$out/default/fuzzer_stats" ]; then
        input="-" # resume the campaign
    fi
    mkdir -p "$out"
    echo "== $t: up to $EXECS executions or $MAX_SECONDS s"
    # AFL_NO_UI: plain log lines; the next two only skip host checks that need root
    # settings (CPU governor, core_pattern) and change nothing about the results.
    # AFL_NO_FASTRESUME: resume from the queue itself; AFL++'s fast-resume file aborts the
    # run ("Short read from queue data") when a campaign was stopped abruptly or the target
    # was rebuilt since.
    AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_FASTRESUME=1 \
        nice -n "$NICE" cargo afl fuzz -i "$input" -o "$out" -E "$EXECS" -V "$MAX_SECONDS" \
        -t "$TIMEOUT_MS" -- "target/release/$t" >"$out/afl.log" 2>&1 || true
    stats="$out/default/fuzzer_stats"
    if [ -f "$stats" ]; then
        grep -E '^(run_time|execs_done|execs_per_sec|corpus_count|saved_crashes|saved_hangs) ' "$stats"
    else
        echo "no fuzzer_stats: see $out/afl.log"
        tail -20 "$out/afl.log"
    fi
done
