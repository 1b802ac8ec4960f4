//! Builds the kernel programs with nightly + bpf-linker and leaves the object
//! in OUT_DIR, where `loader.rs` embeds it: the binary carries its programs.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let meta = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cargo metadata")?;
    let text = String::from_utf8(meta.stdout).context("cargo metadata output")?;
    // Find the ebpf package's manifest directory without a JSON dependency.
    let key = "\"manifest_path\":\"";
    let root = text
        .split(key)
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .find(|p| p.ends_with("dio-trace-ebpf/Cargo.toml"))
        .ok_or_else(|| anyhow!("dio-trace-ebpf package not found"))?
        .trim_end_matches("/Cargo.toml")
        .to_owned();
    aya_build::build_ebpf(
        [Package {
            name: "dio-trace-ebpf",
            root_dir: &root,
            ..Default::default()
        }],
        Toolchain::default(),
    )?;
    version_facts()
}

/// What `dio-trace --version` says besides the crate version: the commit
/// it was built from and which BPF object it embeds, so that a bug report
/// names the exact programs that ran.
fn version_facts() -> anyhow::Result<()> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // Rebuild when HEAD moves: HEAD itself, and the branch it points at.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = std::path::Path::new(&dir);
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", dir.join(r).display());
        }
    }
    let out = std::env::var("OUT_DIR").context("OUT_DIR")?;
    let object =
        std::fs::read(std::path::Path::new(&out).join("dio-trace")).context("reading the BPF object")?;
    println!("cargo:rustc-env=DIO_TRACE_COMMIT={commit}");
    println!(
        "cargo:rustc-env=DIO_TRACE_BPF=crc32 {:08x}, {} bytes",
        crc32fast::hash(&object),
        object.len()
    );
    Ok(())
}
