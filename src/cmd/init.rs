//! `writ init`: a starting point that already passes. It writes a paper policy with clause
//! ids, a `.policy` implementing it, a tests file with a firing and a non-firing case per
//! rule, and a README with the next commands; `check`, `test` and `coverage` (100%) pass on
//! it as written, which `tests/all/init.rs` proves.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

/// Arguments of `writ init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The folder to write into (created if missing).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The policy's and its first workflow's name: lower-case letters, digits and `-`.
    #[arg(long, default_value = "assistant")]
    pub name: String,
}

const PAPER: &str = include_str!("init/ai-policy.md");
const POLICY: &str = include_str!("init/template.policy");
const TESTS: &str = include_str!("init/template.tests.yaml");
const README: &str = include_str!("init/README.md");

/// The files of a scaffold named `name`: (file name, contents).
pub fn scaffold(name: &str) -> Vec<(String, String)> {
    let fill = |t: &str| t.replace("{{name}}", name);
    vec![
        ("ai-policy.md".into(), PAPER.to_string()),
        (format!("{name}.policy"), fill(POLICY)),
        (format!("{name}.tests.yaml"), fill(TESTS)),
        ("README.md".into(), fill(README)),
    ]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Writes the scaffold; refuses to overwrite any file that exists (nothing is written then).
pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    if !valid_name(&args.name) {
        anyhow::bail!(
            "`{}` is not a valid name: use lower-case letters, digits and `-`, starting with a letter",
            args.name
        );
    }
    let files = scaffold(&args.name);
    let path_of = |f: &str| args.dir.join(f);
    let existing: Vec<String> = files
        .iter()
        .map(|(f, _)| path_of(f))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() {
        anyhow::bail!(
            "not overwriting {}; choose another folder or --name",
            existing.join(", ")
        );
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    for (file, text) in &files {
        write_new(&path_of(file), text)?;
        println!("wrote {}", path_of(file).display());
    }
    println!(
        "\nnext: cd {} && writ check {}.policy && writ test . && writ coverage .",
        args.dir.display(),
        args.name
    );
    Ok(ExitCode::SUCCESS)
}

fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
