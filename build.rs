//! Builds the enforcement engine (`writ-plugin`) for `wasm32-unknown-unknown` and hands it
//! to `src/engine.rs`, so `cargo build` of the CLI yields a `writ` that embeds the engine
//! and `writ build` needs no Rust toolchain.
//!
//! The nested `cargo build` uses its own target directory (`target/engine`): sharing the
//! outer build's directory would wait forever on the lock the outer cargo holds. Inherited
//! flags are cleared and paths remapped so the engine bytes do not depend on where the
//! repository or the cargo home lives — a precondition of reproducible artifacts.

use std::env;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    for path in [
        "plugin/src",
        "plugin/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("engine"),
        None => root.join("target").join("engine"),
    };
    let cargo_home = match env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".cargo"),
    };

    let rustflags = [
        format!("--remap-path-prefix={}=/writ", root.display()),
        format!("--remap-path-prefix={}=/cargo", cargo_home.display()),
    ]
    .join("\x1f");

    ensure_target_installed(&root)?;

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "-p", "writ-plugin", "--lib"])
        .args(["--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    // Everything the outer build set for itself must not leak into the engine build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    // opt-level 3, not "s": the whole 4 KB exchange runs ~10 % faster in wasmtime for a
    // module ~14 % larger (benches/README.md, `engine_build`); simd128 bought nothing
    // measurable, so the artifact keeps to the baseline feature set every host has.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .env("CARGO_PROFILE_RELEASE_INCREMENTAL", "false")
        .env("CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS", "false")
        .env("CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS", "false");

    let output = cmd.output()?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprintln!("{stderr}");
        let hint = if stderr.contains("target may not be installed") {
            format!(" (install the target: `rustup target add {TARGET}`)")
        } else {
            String::new()
        };
        return Err(format!(
            "building the engine (writ-plugin) for {TARGET} failed{hint}; its errors are above"
        )
        .into());
    }
    let built = target_dir
        .join(TARGET)
        .join("release")
        .join("writ_plugin.wasm");
    copy_if_changed(&built, &out_dir.join("engine.wasm"))?;
    Ok(())
}

/// Makes sure the standard library for the engine's target is present before the nested
/// build needs it. rustup installs the targets of `rust-toolchain.toml` only when it installs
/// the toolchain itself, so a machine that already had the toolchain lacks the target: add
/// it with `rustup target add` when rustup is there, and say exactly what to do otherwise.
fn ensure_target_installed(root: &Path) -> Result<(), Box<dyn Error>> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |sysroot: &Path| {
        sysroot
            .join("lib")
            .join("rustlib")
            .join(TARGET)
            .join("lib")
            .is_dir()
    };
    if sysroot.as_deref().is_some_and(installed) {
        return Ok(());
    }
    let mut rustup = Command::new("rustup");
    rustup.current_dir(root).args(["target", "add", TARGET]);
    if let Some(toolchain) = env::var_os("RUSTUP_TOOLCHAIN") {
        rustup.arg("--toolchain").arg(toolchain);
    }
    match rustup.output() {
        Ok(out) if out.status.success() => {
            println!(
                "cargo:warning=installed the {TARGET} target with `rustup target add {TARGET}`"
            );
            Ok(())
        }
        Ok(out) => Err(format!(
            "the {TARGET} target is missing and `rustup target add {TARGET}` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into()),
        Err(_) => Err(format!(
            "the {TARGET} target is missing and rustup is not available to add it; install \
             the Rust standard library for {TARGET} for this toolchain, then build again"
        )
        .into()),
    }
}

/// Copies without touching the destination when the bytes are equal, so an unchanged
/// engine does not force the CLI to relink.
fn copy_if_changed(from: &Path, to: &Path) -> Result<(), Box<dyn Error>> {
    let bytes = std::fs::read(from).map_err(|e| format!("{}: {e}", from.display()))?;
    if std::fs::read(to).ok().as_deref() != Some(&bytes[..]) {
        std::fs::write(to, &bytes)?;
    }
    Ok(())
}
