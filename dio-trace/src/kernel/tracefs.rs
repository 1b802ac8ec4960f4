//! tracefs: where tracepoint formats live. Mounted on demand, as bpftrace
//! and perf do, because a host without it mounted is common.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs root, mounting it at /sys/kernel/tracing if nothing is there.
pub fn ensure_mounted() -> Result<PathBuf> {
    if let Some(p) = find() {
        return Ok(p);
    }
    let target = Path::new(CANDIDATES[0]);
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev"])
        .arg(target)
        .status()
        .context("running mount -t tracefs")?;
    if !status.success() || find().is_none() {
        bail!(
            "tracefs is not mounted and mounting it failed; run: mount -t tracefs nodev {}",
            target.display()
        );
    }
    Ok(target.to_path_buf())
}

/// A mounted tracefs, if any.
pub fn find() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// The `format` file of a tracepoint, if the kernel has it.
pub fn format(root: &Path, category: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(root.join("events").join(category).join(name).join("format")).ok()
}
