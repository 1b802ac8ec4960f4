//! Install what building and testing dio-trace needs on a fresh machine of
//! this kind, saying what it does. Idempotent: present things are skipped.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Debian packages beyond the kernel build's own
/// ([`crate::kernel::buggy::BUILD_DEPS`]): scratch filesystems, VMs,
/// benchmarks.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "e2fsprogs",
    "util-linux",
    "mount",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "fio",
    "bpftrace",
];

/// bpf-linker release that uses rustc's own LLVM (no system LLVM needed).
const BPF_LINKER_VERSION: &str = "0.10.4";

pub fn run() -> Result<()> {
    debian_packages()?;
    nightly_with_rust_src()?;
    bpf_linker()?;
    println!("setup: done");
    Ok(())
}

fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        println!("setup: Debian packages present");
        return Ok(());
    }
    println!("setup: installing Debian packages: {}", missing.join(" "));
    sh(Command::new("apt-get").arg("update").arg("-q"))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn nightly_with_rust_src() -> Result<()> {
    let has_src = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("rust-src"))
        .unwrap_or(false);
    if has_src {
        println!("setup: nightly toolchain with rust-src present");
        return Ok(());
    }
    println!(
        "setup: installing the nightly toolchain with rust-src (the eBPF programs build with -Z build-std)"
    );
    sh(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn bpf_linker() -> Result<()> {
    let version = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if version.contains(BPF_LINKER_VERSION) {
        println!("setup: bpf-linker {BPF_LINKER_VERSION} present");
        return Ok(());
    }
    println!("setup: installing bpf-linker {BPF_LINKER_VERSION} (a few minutes, once)");
    sh(Command::new("cargo").args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
    ]))
}
