//! Links a policy file into an artifact with a given engine module, so the wire benchmark
//! can run two engines (e.g. two commits' builds from `benches/engine-ab.sh`) against the
//! same policy in one session:
//!
//! ```sh
//! WRIT_ENGINE_WASM=target/engine-ab/1-17ee285.wasm cargo run --release -p writ-benches \
//!   --example link_with -- target/bench-policy/support-assistant.policy before.wasm
//! target/release/wire --artifact before.wasm …
//! ```
#![allow(clippy::print_stdout)]

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(policy), Some(out)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: link_with <policy file> <out.wasm> (engine: $WRIT_ENGINE_WASM)");
    };
    let source = std::fs::read_to_string(&policy)?;
    let compiled = writ_benches::fixtures::compile(&policy, &source)?;
    let engine = writ_benches::fixtures::engine_wasm()?;
    let wasm = writ_compiler::link::link(&engine, &compiled)?.wasm;
    std::fs::write(&out, &wasm)?;
    println!("{out}: {} bytes", wasm.len());
    Ok(())
}
