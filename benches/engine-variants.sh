#!/usr/bin/env bash
# Builds the engine (writ-plugin for wasm32-unknown-unknown) in several code-generation
# variants, so `benches/benches/engine_build.rs` can compare them in one criterion run
# (issue 14 §3: opt-level 3 against "s", wasm simd128, bulk memory).
#
#   benches/engine-variants.sh          # then:
#   cargo bench -p writ-benches --bench engine_build
#
# Every variant uses the release settings of the root build.rs (LTO, one codegen unit,
# panic=abort, stripped, paths remapped); only the named setting differs. Outputs go to
# target/engine-variants/<name>.wasm, which the bench reads ($WRIT_ENGINE_VARIANTS
# overrides the directory).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${WRIT_ENGINE_VARIANTS:-$ROOT/target/engine-variants}
mkdir -p "$OUT"
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
  || rustup target add wasm32-unknown-unknown

# name  opt-level  extra target features
VARIANTS=(
  "opt-s            s  "
  "opt-3            3  "
  "opt-3+simd128    3  +simd128"
  "opt-s+simd128    s  +simd128"
  "opt-3+simd128+bulk-memory 3 +simd128,+bulk-memory"
)
for v in "${VARIANTS[@]}"; do
  read -r name opt features <<<"$v"
  flags="--remap-path-prefix=$ROOT=/writ"$'\x1f'"--remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
  if [ -n "${features:-}" ]; then
    flags="$flags"$'\x1f'"-Ctarget-feature=$features"
  fi
  echo "building $name (opt-level $opt${features:+, $features})" >&2
  env -u RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS \
    CARGO_ENCODED_RUSTFLAGS="$flags" \
    CARGO_PROFILE_RELEASE_OPT_LEVEL="$opt" \
    CARGO_PROFILE_RELEASE_LTO=true \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
    CARGO_PROFILE_RELEASE_PANIC=abort \
    CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_PROFILE_RELEASE_INCREMENTAL=false \
    CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=false \
    CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=false \
    cargo build --release --quiet -p writ-plugin --lib --target wasm32-unknown-unknown \
      --target-dir "$ROOT/target/engine-variants/build-$name"
  cp "$ROOT/target/engine-variants/build-$name/wasm32-unknown-unknown/release/writ_plugin.wasm" \
    "$OUT/$name.wasm"
  echo "  $(stat -c %s "$OUT/$name.wasm") bytes, sha256 $(sha256sum "$OUT/$name.wasm" | cut -c1-16)" >&2
done
