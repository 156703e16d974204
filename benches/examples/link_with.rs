//! Links a bundled policy into an artifact with a given engine module, so the wire
//! benchmark can run two engines (e.g. two commits' builds from `benches/engine-ab.sh`)
//! against the same policy in one session:
//!
//! ```sh
//! WRIT_ENGINE_WASM=target/engine-ab/1-17ee285.wasm \
//!   cargo run --release -p writ-benches --example link_with -- support-assistant before.wasm
//! target/release/wire --artifact before.wasm …
//! ```
#![allow(clippy::print_stdout)]

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(policy), Some(out)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: link_with <bundled policy name> <out.wasm> (engine: $WRIT_ENGINE_WASM)");
    };
    let wasm = writ_benches::fixtures::artifact(&policy)?;
    std::fs::write(&out, &wasm)?;
    println!("{out}: {} bytes", wasm.len());
    Ok(())
}
