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
    )
}
