#!/usr/bin/env bash
# Instructions per exchange of proxy-wasm modules in node's V8, counted by callgrind: a
# comparison of guest builds that holds on a loaded machine, where CPU time does not
# (these machines run builds and fuzzers beside the benches; callgrind counts the same
# instructions whatever else runs). Envoy 1.40 compiles every module with TurboFan up
# front (`--no-liftoff`), and so does this run.
#
#   benches/v8/ir.sh BASE.wasm BRANCH.wasm ...    # one line per module
#   LO=100 HI=600 benches/v8/ir.sh A.wasm         # exchanges in the two runs (defaults)
#
# Each module runs `exchange.js` twice, LO and HI exchanges; the difference divided by
# HI - LO removes node's start-up and the module's compilation. Repeated runs of one
# module agree within about 1.5 % (JIT and GC placement); read smaller differences as
# none. Needs valgrind (Debian) and node.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
LO=${LO:-100}
HI=${HI:-600}
count() {
  valgrind --tool=callgrind --smc-check=all-non-file --callgrind-out-file=/dev/null \
    node --no-liftoff --single-threaded "$here/exchange.js" "$1" "$2" 2>&1 \
    | sed -n 's/.*Collected : //p'
}
for module in "$@"; do
  lo=$(count "$module" "$LO")
  hi=$(count "$module" "$HI")
  echo "$(basename "$module"): $(((hi - lo) / (HI - LO))) instructions per exchange"
done
