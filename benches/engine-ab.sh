#!/usr/bin/env bash
# Builds the engine of two (or more) commits with the shipped code generation (opt-level 3,
# LTO, one codegen unit, panic=abort, stripped: the root build.rs's settings), so
# `benches/benches/engine_build.rs` can compare their request paths in one criterion run:
#
#   benches/engine-ab.sh 17ee285 HEAD
#   WRIT_ENGINE_VARIANTS=target/engine-ab cargo bench -p writ-benches --bench engine_build
#
# Each commit is exported with `git archive` (no work tree is touched) into
# target/engine-ab/src-<commit>; outputs are target/engine-ab/<n>-<commit>.wasm, numbered
# in argument order so the bench lists them in that order.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/engine-ab
mkdir -p "$OUT"
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
  || rustup target add wasm32-unknown-unknown
n=0
for rev in "$@"; do
  n=$((n + 1))
  sha=$(git rev-parse --short "$rev")
  src=$OUT/src-$sha
  rm -rf "$src" && mkdir -p "$src"
  git archive "$sha" | tar -x -C "$src"
  flags="--remap-path-prefix=$src=/writ"$'\x1f'"--remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
  echo "building the engine of $rev ($sha)" >&2
  (cd "$src" && env -u RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS \
    CARGO_ENCODED_RUSTFLAGS="$flags" \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=3 \
    CARGO_PROFILE_RELEASE_LTO=true \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
    CARGO_PROFILE_RELEASE_PANIC=abort \
    CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_PROFILE_RELEASE_INCREMENTAL=false \
    CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=false \
    CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=false \
    cargo build --release --quiet -p writ-plugin --lib --target wasm32-unknown-unknown \
      --target-dir "$OUT/build")
  cp "$OUT/build/wasm32-unknown-unknown/release/writ_plugin.wasm" "$OUT/$n-$sha.wasm"
  echo "  $(stat -c %s "$OUT/$n-$sha.wasm") bytes" >&2
done
