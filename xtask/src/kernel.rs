//! Kernels to boot in the VM: Debian's packaged ones, a 6.1 built with the
//! ext4 O_SYNC direct-I/O bug put back, a 7.3 built with the 2025 O_DSYNC
//! regression put back, or files the caller names.
//!
//! `cargo xtask kernel <spec>` resolves a spec and prints where the kernel
//! is; `vm` does the same before booting.

mod apt;
pub mod buggy;
pub mod cache;
mod debian;
mod ext4_btf;
pub mod host;
pub mod module_build;
pub mod modules;
pub mod named;
pub mod source;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context as _, Result, bail};
use clap::Args;

pub use cache::Cache;
pub use named::Named;

/// What to boot, as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelSpec {
    /// A row of [`named::NAMED`]: downloaded or built, then cached.
    Named(&'static Named),
    /// A bzImage file; no modules.
    BzImage(PathBuf),
    /// Debian packages: one `linux-image-*.deb`, or a split
    /// `linux-binary-*` + `linux-modules-*` pair.
    Debs(Vec<PathBuf>),
    /// A folder Debian kernel packages were unpacked to.
    Dir(PathBuf),
}

impl KernelSpec {
    /// The named kernel `name`; panics on a name not in the table (for
    /// the matrix's own constants).
    pub fn named(name: &str) -> Self {
        Self::Named(named::find(name).unwrap_or_else(|| panic!("{name} is not a named kernel")))
    }

    /// The row behind this spec, if it is a named kernel.
    pub fn row(&self) -> Option<&'static Named> {
        match self {
            Self::Named(n) => Some(n),
            _ => None,
        }
    }
}

impl FromStr for KernelSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        if let Some(n) = named::find(s) {
            return Ok(Self::Named(n));
        }
        let usage = || {
            format!(
                "expected a named kernel ({}), a bzImage, a linux-image .deb, a linux-binary.deb,linux-modules.deb \
                 pair, or a folder they were unpacked to",
                named::names()
            )
        };
        if s.contains(',') {
            let debs: Vec<PathBuf> = s
                .split(',')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect();
            for d in &debs {
                if !d.is_file() {
                    bail!("no such file {} in `{s}`: {}", d.display(), usage());
                }
            }
            return Ok(Self::Debs(debs));
        }
        let path = PathBuf::from(s);
        if path.is_dir() {
            return Ok(Self::Dir(path));
        }
        if !path.is_file() {
            bail!("unknown kernel `{s}`: {}", usage());
        }
        if path.extension().is_some_and(|e| e == "deb") {
            Ok(Self::Debs(vec![path]))
        } else {
            Ok(Self::BzImage(path))
        }
    }
}

impl fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Named(n) => f.write_str(n.name),
            Self::BzImage(p) | Self::Dir(p) => write!(f, "{}", p.display()),
            Self::Debs(ps) => {
                let names: Vec<String> = ps.iter().map(|p| p.display().to_string()).collect();
                f.write_str(&names.join(","))
            }
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
    /// ext4's BTF made from the kernel's `-dbg` package, for a kernel that
    /// publishes none for modules (`dio-trace --btf`).
    pub ext4_btf: Option<PathBuf>,
}

/// Resolves `spec`, downloading or building into `cache` on first use.
pub fn resolve(spec: &KernelSpec, cache: &Cache) -> Result<Kernel> {
    let mut ext4_btf = None;
    let (bzimage, modules) = match spec {
        KernelSpec::Named(n) => match n.origin {
            named::Origin::Apt { suite, pattern } => {
                let apt = apt_for(suite, cache)?;
                if let Some(dbg) = n.ext4_btf_from {
                    ext4_btf = Some(
                        ext4_btf::from_dbg(&apt, dbg, cache)
                            .with_context(|| format!("ext4's BTF for {}", n.name))?,
                    );
                }
                debian::packaged(&apt, pattern, cache).with_context(|| format!("getting {}", n.name))?
            }
            named::Origin::Built(recipe) => (recipe.build(cache)?, None),
            named::Origin::AptPatched {
                suite,
                pattern,
                recipe,
            } => {
                let apt = apt_for(suite, cache)?;
                let set = debian::package_set(&apt, pattern, cache)
                    .with_context(|| format!("getting {}", n.name))?;
                let modules = recipe
                    .build(&apt, &set, cache)
                    .with_context(|| format!("building {}'s modules", n.name))?;
                let (vmlinuz, _, _) = set.layout()?;
                (vmlinuz, Some(modules))
            }
        },
        KernelSpec::Debs(debs) => debian::from_debs(debs, cache)?,
        KernelSpec::Dir(dir) => debian::from_dir(dir)?,
        KernelSpec::BzImage(path) => (bzimage_file(path)?, None),
    };
    Ok(Kernel {
        spec: spec.clone(),
        bzimage,
        modules,
        ext4_btf,
    })
}

/// apt for a row's suite (`None`: the host's own).
fn apt_for(suite: Option<&str>, cache: &Cache) -> Result<apt::Apt> {
    match suite {
        Some(suite) => apt::Apt::suite(suite, cache),
        None => Ok(apt::Apt::host()),
    }
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
    #[arg(help = spec_help())]
    spec: KernelSpec,
}

/// What `--kernel` takes, with the named kernels from the table itself, so
/// `--help` never lists a stale set.
pub fn spec_help() -> String {
    format!(
        "A named kernel ({}), a bzImage, a linux-image .deb, a linux-binary.deb,linux-modules.deb pair, \
         or a folder they were unpacked to",
        named::names()
    )
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
        for n in named::NAMED {
            assert_eq!(n.name.parse::<KernelSpec>().ok(), Some(KernelSpec::Named(n)));
        }
    }

    #[test]
    fn unknown_spec_is_an_error() {
        let err = "debian-4.19".parse::<KernelSpec>().unwrap_err().to_string();
        assert!(
            err.contains("unknown kernel") && err.contains("debian-5.10"),
            "{err}"
        );
        let err = "/nonexistent/a.deb,/nonexistent/b.deb"
            .parse::<KernelSpec>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such file"), "{err}");
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
            KernelSpec::Debs(vec![deb.clone()])
        );
        let pair = format!("{},{}", deb.display(), img.display());
        assert_eq!(
            pair.parse::<KernelSpec>()?,
            KernelSpec::Debs(vec![deb.clone(), img.clone()])
        );
        assert_eq!(
            dir.path().to_str().context("utf8")?.parse::<KernelSpec>()?,
            KernelSpec::Dir(dir.path().to_owned())
        );
        assert_eq!(
            img.to_str().context("utf8")?.parse::<KernelSpec>()?,
            KernelSpec::BzImage(img.clone())
        );
        assert!(bzimage_file(&img).is_err());
        Ok(())
    }
}
