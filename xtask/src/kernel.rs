//! Kernels to boot in the VM: Debian's packaged ones, a 6.1 built with the
//! ext4 O_SYNC direct-I/O bug put back, or files the caller names.
//!
//! `cargo xtask kernel <spec>` resolves a spec and prints where the kernel
//! is; `vm` does the same before booting.

pub mod buggy;
pub mod cache;
mod debian;
pub mod host;
pub mod modules;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context as _, Result, bail};
use clap::Args;

pub use cache::Cache;

/// What to boot, as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelSpec {
    /// Newest `linux-image-6.1.0-*-cloud-amd64-unsigned` apt offers (fixed).
    Debian61,
    /// Newest `linux-image-6.12.*-cloud-amd64-unsigned` apt offers (fixed).
    Debian612,
    /// Debian's 6.1 source with `patches/ext4-undo-91562895f803.patch`.
    Buggy61,
    /// A bzImage file; no modules.
    BzImage(PathBuf),
    /// A Debian `linux-image-*.deb` file.
    Deb(PathBuf),
}

impl FromStr for KernelSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "debian-6.1" => return Ok(Self::Debian61),
            "debian-6.12" => return Ok(Self::Debian612),
            "buggy-6.1" => return Ok(Self::Buggy61),
            _ => {}
        }
        let path = PathBuf::from(s);
        if !path.is_file() {
            bail!(
                "unknown kernel `{s}`: expected debian-6.1, debian-6.12, buggy-6.1, or a path to a bzImage or linux-image .deb"
            );
        }
        if path.extension().is_some_and(|e| e == "deb") {
            Ok(Self::Deb(path))
        } else {
            Ok(Self::BzImage(path))
        }
    }
}

impl fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Debian61 => f.write_str("debian-6.1"),
            Self::Debian612 => f.write_str("debian-6.12"),
            Self::Buggy61 => f.write_str("buggy-6.1"),
            Self::BzImage(p) | Self::Deb(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The spec it came from, for messages.
    pub spec: KernelSpec,
    /// The bzImage to pass to `-kernel`.
    pub bzimage: PathBuf,
    /// `lib/modules/<release>` when the kernel needs modules from the
    /// initramfs (Debian kernels build virtio as modules).
    pub modules: Option<PathBuf>,
}

/// Resolves `spec`, downloading or building into `cache` on first use.
pub fn resolve(spec: &KernelSpec, cache: &Cache) -> Result<Kernel> {
    let (bzimage, modules) = match spec {
        KernelSpec::Debian61 => debian::packaged(debian::Series::V6_1, cache)?,
        KernelSpec::Debian612 => debian::packaged(debian::Series::V6_12, cache)?,
        KernelSpec::Deb(path) => debian::from_deb(path, cache)?,
        KernelSpec::Buggy61 => (buggy::build(cache)?, None),
        KernelSpec::BzImage(path) => (bzimage_file(path)?, None),
    };
    Ok(Kernel {
        spec: spec.clone(),
        bzimage,
        modules,
    })
}

/// Checks that `path` looks like an x86 bzImage ("HdrS" boot header).
fn bzimage_file(path: &Path) -> Result<PathBuf> {
    let bytes = std::fs::read(path).with_context(|| format!("reading kernel image {}", path.display()))?;
    if bytes.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        bail!("{} is not an x86 bzImage (no HdrS boot header)", path.display());
    }
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// `cargo xtask kernel`: resolve a kernel spec and print its paths.
#[derive(Args)]
pub struct KernelArgs {
    /// debian-6.1, debian-6.12, buggy-6.1, or a path to a bzImage or .deb.
    spec: KernelSpec,
}

/// Entry point of `cargo xtask kernel`.
pub fn run(args: KernelArgs) -> Result<()> {
    let kernel = resolve(&args.spec, &Cache::from_env()?)?;
    println!("bzImage: {}", kernel.bzimage.display());
    if let Some(m) = &kernel.modules {
        println!("modules: {}", m.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_specs_parse() {
        assert_eq!(
            "debian-6.1".parse::<KernelSpec>().ok(),
            Some(KernelSpec::Debian61)
        );
        assert_eq!(
            "debian-6.12".parse::<KernelSpec>().ok(),
            Some(KernelSpec::Debian612)
        );
        assert_eq!("buggy-6.1".parse::<KernelSpec>().ok(), Some(KernelSpec::Buggy61));
    }

    #[test]
    fn unknown_spec_is_an_error() {
        let err = "debian-5.10".parse::<KernelSpec>().unwrap_err().to_string();
        assert!(err.contains("unknown kernel"), "{err}");
    }

    #[test]
    fn files_parse_by_extension() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let deb = dir.path().join("k.deb");
        let img = dir.path().join("bzImage");
        std::fs::write(&deb, b"")?;
        std::fs::write(&img, b"")?;
        assert_eq!(
            deb.to_str().context("utf8")?.parse::<KernelSpec>()?,
            KernelSpec::Deb(deb.clone())
        );
        assert_eq!(
            img.to_str().context("utf8")?.parse::<KernelSpec>()?,
            KernelSpec::BzImage(img.clone())
        );
        assert!(bzimage_file(&img).is_err());
        Ok(())
    }
}
