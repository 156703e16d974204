#!/usr/bin/env bash
# The main job: build the writ CLI, check and build every bundled policy, run the policy
# tests against the artifacts, and print paper-to-code coverage. Outputs go to out/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
writ=target/release/writ
out=${OUT:-out}
mkdir -p "$out"
"$writ" check policies/*.policy
"$writ" fmt --check policies/*.policy
"$writ" build policies/*.policy --out "$out"
"$writ" test policies --junit "$out/policy-tests.xml"
"$writ" coverage policies --junit "$out/coverage.xml" --json "$out/coverage.json"
echo
echo "artifacts:"
(cd "$out" && sha256sum ./*.wasm)
