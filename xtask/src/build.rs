//! Building the user-space binary (which embeds the kernel programs).

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace());
    c
}

/// `cargo build --release -p dio-trace`.
pub fn release() -> Result<()> {
    let status = cargo()
        .args(["build", "--release", "-p", "dio-trace"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p dio-trace failed");
    }
    Ok(())
}

pub fn release_binary() -> PathBuf {
    workspace().join("target/release/dio-trace")
}

/// Run cargo with `args` in the workspace; fail on a non-zero exit.
pub fn cargo_step(what: &str, args: &[&str]) -> Result<()> {
    println!("test: {what}: cargo {}", args.join(" "));
    let status = cargo()
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("{what} failed (cargo {})", args.join(" "));
    }
    Ok(())
}
