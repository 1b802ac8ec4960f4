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

/// `cargo clippy` over the kernel programs, built as they ship: BPF target,
/// nightly, `-Z build-std` (a host build of them is not what loads).
pub fn ebpf_lints() -> Result<()> {
    let args = [
        "run",
        "nightly",
        "cargo",
        "clippy",
        "--release",
        "--manifest-path",
        "dio-trace-ebpf/Cargo.toml",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ];
    println!("test: eBPF lints: rustup {}", args.join(" "));
    let status = Command::new("rustup")
        .args(args)
        .current_dir(workspace())
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .status()
        .context("running rustup run nightly cargo clippy")?;
    if !status.success() {
        bail!("eBPF lints failed");
    }
    Ok(())
}

/// Target triple of the static guest binary (no musl target here: glibc
/// with `+crt-static`, NOTES §3).
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Build dio-trace as a static binary for QEMU guests and return its path.
/// With an explicit `--target`, RUSTFLAGS reach only the target crates, so
/// this does not disturb the host build.
pub fn static_binary() -> Result<PathBuf> {
    println!("xtask: building a static dio-trace for the guest");
    let status = cargo()
        .args(["build", "--release", "-p", "dio-trace", "--target", STATIC_TARGET])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .context("running cargo build (static)")?;
    if !status.success() {
        bail!("building the static dio-trace failed");
    }
    Ok(workspace()
        .join("target")
        .join(STATIC_TARGET)
        .join("release/dio-trace"))
}
