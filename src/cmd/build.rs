//! `writ build`: compile each policy, link it into the embedded engine, write
//! `<policy>-<version>.wasm` and `<policy>-<version>.manifest.json`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use writ_compiler::link;
use writ_plugin::ir;

/// Arguments of `writ build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Policy sources to build.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Folder the artifacts are written to (created if missing).
    #[arg(long, short, value_name = "DIR", default_value = "out")]
    pub out: PathBuf,
    /// Sign each artifact with this secret key (`writ keygen`): a `writ.signature` section
    /// appended last, deterministic, so the build stays byte-reproducible.
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
}

/// Builds every file, printing one line per artifact (path, size in bytes, sha256) to
/// stdout and diagnostics to stderr; exits 1 if any file has errors. Files without errors
/// are still built, so one bad policy does not hide the state of the others.
pub fn run(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let key = match &args.sign {
        Some(path) => Some(writ::trust::read_secret_key(path)?),
        None => None,
    };
    let mut failed = false;
    let mut written: Vec<(String, String)> = Vec::new();
    for path in &args.files {
        let source = super::read_source(path)?;
        let name = path.display().to_string();
        let compiled = match writ_compiler::compile(&name, &source) {
            Ok(c) => c,
            Err(diagnostics) => {
                failed = true;
                eprintln!("{}", diagnostics.render(&name, &source));
                continue;
            }
        };
        if !compiled.warnings.0.is_empty() {
            eprintln!("{}", compiled.warnings.render(&name, &source));
        }
        if let Some(refusal) = version_discipline(&args.out, &compiled.policy)? {
            failed = true;
            eprintln!("error: {name}: {refusal}");
            continue;
        }
        let mut artifact = link::link(writ::engine::ENGINE_WASM, &compiled)
            .with_context(|| format!("linking {name}"))?;
        if let Some(key) = &key {
            artifact.wasm =
                link::sign::sign(&artifact.wasm, key).with_context(|| format!("signing {name}"))?;
            artifact.manifest.artifact_sha256 = Some(link::sha256_hex(&artifact.wasm));
            artifact.manifest.signed_by = Some(key.public().key_id());
        }
        let stem = artifact.file_stem();
        if let Some((_, first)) = written.iter().find(|(s, _)| *s == stem) {
            eprintln!(
                "error: {name} and {first} both build `{stem}.wasm`; give them distinct names or versions"
            );
            failed = true;
            continue;
        }
        written.push((stem, name.clone()));
        let (wasm_path, _) = write(&args.out, &artifact)?;
        println!(
            "{}  {} bytes  sha256:{}",
            wasm_path.display(),
            artifact.wasm.len(),
            artifact
                .manifest
                .artifact_sha256
                .as_deref()
                .unwrap_or_default()
        );
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// An artifact of the same name and version already in `out` must enforce exactly the
/// same thing: a policy whose enforcement changed needs a new version, or audit records
/// citing that version would be ambiguous. Returns why the build is refused, if it is.
fn version_discipline(out: &Path, policy: &ir::Policy) -> anyhow::Result<Option<String>> {
    let previous = out.join(format!("{}-{}.wasm", policy.name, policy.version));
    if !previous.exists() {
        return Ok(None);
    }
    let bytes =
        std::fs::read(&previous).with_context(|| format!("reading {}", previous.display()))?;
    let old = link::read_policy(&bytes)
        .with_context(|| format!("reading the policy embedded in {}", previous.display()))?;
    if enforcement_of(&old) == enforcement_of(policy) {
        return Ok(None);
    }
    let changes = writ::diff::diff(&writ::diff::summarize(&old), &writ::diff::summarize(policy));
    let settings = writ::diff::diff_settings(&old, policy);
    let what = if changes.is_empty() && settings.is_empty() {
        // Equal in every listed respect yet not equal: say so rather than print nothing.
        "the compiled policy differs in a way `writ diff` does not itemise (a detector's compiled automaton)\n".to_string()
    } else {
        writ::diff::render_all(&changes, &settings)
    };
    Ok(Some(format!(
        "enforcement changed but the version is still {} ({} holds the previous build); bump the version\n{what}",
        policy.version,
        previous.display()
    )))
}

/// The policy with what does not affect enforcement (source hash, rule lines) erased.
fn enforcement_of(policy: &ir::Policy) -> ir::Policy {
    let mut p = policy.clone();
    p.source_sha256.clear();
    for r in &mut p.rules {
        r.line = 0;
    }
    p
}

/// Writes the artifact and its manifest into `out`, returning both paths. Each file is
/// written to a temporary name and renamed, so a reader never sees a half-written artifact.
pub fn write(out: &Path, artifact: &link::Artifact) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let stem = artifact.file_stem();
    let wasm = out.join(format!("{stem}.wasm"));
    let manifest = out.join(format!("{stem}.manifest.json"));
    write_atomic(&wasm, &artifact.wasm)?;
    write_atomic(&manifest, artifact.manifest.to_json_pretty().as_bytes())?;
    Ok((wasm, manifest))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
