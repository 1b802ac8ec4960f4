//! Install what building and testing dio-trace needs on a fresh machine of
//! this kind, saying what it does. Idempotent: present things are skipped.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Debian packages beyond the kernel build's own
/// ([`crate::kernel::source::BUILD_DEPS`]): scratch filesystems, VMs,
/// benchmarks.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "e2fsprogs",
    // verify --fs xfs|f2fs|btrfs and the VM cells make these filesystems.
    "xfsprogs",
    "f2fs-tools",
    "btrfs-progs",
    "util-linux",
    "mount",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "fio",
    "bpftrace",
    // `watch --metrics` is tested against a real Prometheus and promtool.
    "prometheus",
    // Renders `check --svg` output in the SVG test.
    "chromium",
    // `cargo xtask dist` checks the .deb with Debian's own package checks.
    "lintian",
];

/// The `perfetto` PyPI package, whose `perfetto_trace_pb2` (Perfetto's own
/// schema) the Perfetto tests decode `--perfetto` output with. Pinned.
const PERFETTO_PY: &str = "perfetto==0.59.1";

/// bpf-linker release that uses rustc's own LLVM (no system LLVM needed).
const BPF_LINKER: CargoTool = CargoTool {
    krate: "bpf-linker",
    version: "0.10.4",
    version_command: &["bpf-linker", "--version"],
};

/// What the demo uses and nothing more: the tools to build dio-trace
/// (nightly with rust-src, bpf-linker) and to make and mount its scratch
/// ext4. The test suite's world (QEMU, Prometheus, Chromium, ...) is
/// [`run`]'s.
const DEMO_PACKAGES: &[&str] = &["e2fsprogs", "util-linux", "mount"];

/// Everything the tests need.
pub fn run() -> Result<()> {
    debian_packages(DEBIAN_PACKAGES)?;
    python_packages()?;
    nightly_with_rust_src()?;
    cargo_tool(&BPF_LINKER)?;
    perfetto_python()?;
    println!("setup: done");
    Ok(())
}

/// Only what `cargo xtask demo` uses.
pub fn for_demo() -> Result<()> {
    debian_packages(DEMO_PACKAGES)?;
    nightly_with_rust_src()?;
    cargo_tool(&BPF_LINKER)?;
    println!("setup: done (the demo's part; `cargo xtask test` installs the rest)");
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

fn debian_packages(wanted: &[&str]) -> Result<()> {
    let missing: Vec<&str> = wanted.iter().copied().filter(|p| !installed(p)).collect();
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

/// PyPI packages: (command it installs, `package==version`). The Kubernetes
/// manifest is validated against the official schema, which
/// kubernetes-validate carries (no network at test time).
const PYTHON_PACKAGES: &[(&str, &str)] = &[("kubernetes-validate", "kubernetes-validate==1.37.0")];

fn python_packages() -> Result<()> {
    for (command, spec) in PYTHON_PACKAGES {
        let present = Command::new(command)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if present {
            println!("setup: {command} present");
            continue;
        }
        println!("setup: installing {spec} from PyPI");
        sh(Command::new("python3").args(["-m", "pip", "install", "-q", spec]))?;
    }
    Ok(())
}

fn nightly_with_rust_src() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let Some(installed) = installed else {
        println!(
            "setup: installing the nightly toolchain with rust-src (the eBPF programs build with -Z build-std) and clippy (they are linted as built)"
        );
        return sh(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
            "--component",
            "clippy",
        ]));
    };
    let missing: Vec<&str> = NIGHTLY_COMPONENTS
        .into_iter()
        .filter(|c| !installed.lines().any(|l| l.starts_with(c)))
        .collect();
    if missing.is_empty() {
        println!("setup: nightly toolchain with rust-src and clippy present");
        return Ok(());
    }
    println!("setup: adding {} to the nightly toolchain", missing.join(" and "));
    sh(Command::new("rustup")
        .args(["component", "add", "--toolchain", "nightly"])
        .args(&missing))
}

/// Nightly components the build (rust-src, for -Z build-std) and the eBPF
/// lints (clippy) need.
const NIGHTLY_COMPONENTS: [&str; 2] = ["rust-src", "clippy"];

/// A tool `cargo install` builds from crates.io, pinned.
pub struct CargoTool {
    pub krate: &'static str,
    pub version: &'static str,
    /// The command (and its arguments) whose output names the installed
    /// version.
    pub version_command: &'static [&'static str],
}

/// Install `tool` at its pinned version unless that version is present
/// (a few minutes, once).
pub fn cargo_tool(tool: &CargoTool) -> Result<()> {
    let CargoTool {
        krate,
        version,
        version_command: cmd,
    } = tool;
    let installed = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if installed.contains(version) {
        println!("setup: {krate} {version} present");
        return Ok(());
    }
    println!("setup: installing {krate} {version} (a few minutes, once)");
    sh(Command::new("cargo").args(["install", krate, "--version", version, "--locked"]))
}

/// A Python venv with the `perfetto` package, under the cache (never the
/// work tree): `$DIO_TRACE_CACHE/py-perfetto`. The Perfetto tests find it
/// there (or through `DIO_TRACE_PERFETTO_PYTHON`).
fn perfetto_python() -> Result<()> {
    let cache = crate::kernel::Cache::from_env()?;
    let venv = cache.path("py-perfetto");
    let python = venv.join("bin/python");
    let has = |py: &std::path::Path| {
        Command::new(py)
            .args([
                "-c",
                "from perfetto.protos.perfetto.trace import perfetto_trace_pb2",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has(&python) {
        println!("setup: {PERFETTO_PY} present in {}", venv.display());
        return Ok(());
    }
    println!("setup: installing {PERFETTO_PY} into {}", venv.display());
    sh(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    sh(Command::new(&python).args(["-m", "pip", "install", "-q", PERFETTO_PY]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_installs_a_part_of_what_the_tests_do() {
        for p in DEMO_PACKAGES {
            assert!(DEBIAN_PACKAGES.contains(p), "{p}");
        }
        assert!(
            !DEMO_PACKAGES
                .iter()
                .any(|p| ["chromium", "qemu-system-x86", "prometheus", "bpftrace", "fio"].contains(p))
        );
    }
}
