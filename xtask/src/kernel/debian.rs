//! Debian's packaged kernels: found with apt (the host's suites or
//! another one, [`Apt`]), fetched with `apt-get download`, unpacked with
//! `dpkg-deb -x`.
//!
//! Two packagings exist. Up to 6.12, `linux-image-*` holds
//! `boot/vmlinuz-<release>` and `lib/modules/<release>`. From 6.16 Debian
//! splits a kernel into `linux-binary-*` (`usr/lib/modules/<release>/vmlinuz`)
//! and `linux-modules-*`, and `linux-image-*` becomes a meta package that
//! holds no kernel at all.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::apt::Apt;
use super::cache::{Cache, hash_file, hash_parts};
use super::host::{self, ensure_packages, progress};

/// The newest package matching `pattern` from `apt`: (bzImage, modules dir).
pub fn packaged(apt: &Apt, pattern: &str, cache: &Cache) -> Result<(PathBuf, Option<PathBuf>)> {
    layout(&package_set(apt, pattern, cache)?.dir)
}

/// A packaged kernel, unpacked.
#[derive(Debug)]
pub struct Packaged {
    /// The kernel package (`linux-image-*` or `linux-binary-*`) and its version.
    pub package: String,
    pub version: String,
    /// Where it (and, split, its `linux-modules-*` and `linux-base-*`)
    /// was unpacked.
    pub dir: PathBuf,
}

impl Packaged {
    /// The kernel, its `lib/modules/<release>` and its release.
    pub fn layout(&self) -> Result<(PathBuf, Option<PathBuf>, String)> {
        let (vmlinuz, release) =
            find_vmlinuz(&self.dir).with_context(|| format!("{} holds no kernel", self.dir.display()))?;
        let (_, modules) = layout(&self.dir)?;
        Ok((vmlinuz, modules, release))
    }

    /// The kernel's own build configuration: `boot/config-<release>`
    /// (linux-image) or `config` beside the modules (linux-base, split).
    pub fn config(&self, release: &str) -> Result<PathBuf> {
        [
            format!("boot/config-{release}"),
            format!("usr/lib/modules/{release}/config"),
            format!("lib/modules/{release}/config"),
        ]
        .iter()
        .map(|p| self.dir.join(p))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{} {} ships no build configuration (boot/config-{release} or \
                 usr/lib/modules/{release}/config): cannot build modules for it",
                self.package, self.version
            )
        })
    }
}

/// The newest package matching `pattern` from `apt`, unpacked (cached).
pub fn package_set(apt: &Apt, pattern: &str, cache: &Cache) -> Result<Packaged> {
    ensure_packages(&["dpkg", "apt"])?;
    let names = apt.search_names(pattern)?;
    let Some(package) = newest(&names) else {
        bail!("apt offers no package matching `{pattern}`");
    };
    let version = apt
        .candidate_version(package)?
        .with_context(|| format!("apt lists {package} but has no installable version of it"))?;
    // Split packaging: the modules live in the binary's twin, and
    // modules.builtin (what needs no loading) in linux-base.
    let mut packages = vec![package.to_owned()];
    if let Some(release) = package.strip_prefix("linux-binary-") {
        packages.push(format!("linux-modules-{release}"));
        packages.push(format!("linux-base-{release}"));
    }
    let key = format!("debian/{package}_{version}");
    let dir = cache.entry(&key, &format!("{} {version}", packages.join(" + ")), |dir| {
        for p in &packages {
            let deb = fetch_deb(apt, p, &version, cache)?;
            unpack(&deb, dir)?;
        }
        Ok(())
    })?;
    Ok(Packaged {
        package: package.to_owned(),
        version,
        dir,
    })
}

/// `.deb` files the caller has (one `linux-image-*`, or a split
/// `linux-binary-*` + `linux-modules-*` pair), unpacked together and
/// cached by the hash of their bytes. A lone `linux-binary-*` brings its
/// `linux-modules-*` twin from the same folder when it is there.
pub fn from_debs(debs: &[PathBuf], cache: &Cache) -> Result<(PathBuf, Option<PathBuf>)> {
    ensure_packages(&["dpkg"])?;
    let mut debs = debs.to_vec();
    if let [one] = &debs[..]
        && let Some(twin) = modules_twin(one)
    {
        progress(format_args!("with its modules package {}", twin.display()));
        debs.push(twin);
    }
    let hashes = debs.iter().map(|d| hash_file(d)).collect::<Result<Vec<_>>>()?;
    let parts: Vec<&[u8]> = hashes.iter().map(|h| h.as_bytes()).collect();
    let key = format!("deb/{}", &hash_parts(&parts)[..16]);
    let what = debs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ");
    let dir = cache.entry(&key, &what, |dir| {
        for deb in &debs {
            unpack(deb, dir)?;
        }
        if find_vmlinuz(dir).is_none() {
            bail!("{}", no_kernel(&debs));
        }
        Ok(())
    })?;
    layout(&dir)
}

/// A folder the packages were unpacked to (`dpkg-deb -x`), or any folder
/// laid out like one.
pub fn from_dir(dir: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    layout(dir).with_context(|| {
        format!(
            "{} holds no kernel: expected boot/vmlinuz-<release> (linux-image-*) or \
             usr/lib/modules/<release>/vmlinuz (linux-binary-*, 6.16+)",
            dir.display()
        )
    })
}

/// `linux-modules-<release>_<version>_*.deb` beside a `linux-binary-*` one.
fn modules_twin(deb: &Path) -> Option<PathBuf> {
    let name = deb.file_name()?.to_str()?;
    let rest = name.strip_prefix("linux-binary-")?;
    let twin = format!("linux-modules-{rest}");
    let path = deb.with_file_name(twin);
    path.is_file().then_some(path)
}

/// Why unpacking `debs` gave no kernel, with what to do instead.
fn no_kernel(debs: &[PathBuf]) -> String {
    let field = |deb: &Path, f: &str| {
        host::output(Command::new("dpkg-deb").arg("-f").arg(deb).arg(f))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let mut why = Vec::new();
    for deb in debs {
        let package = field(deb, "Package");
        let depends = field(deb, "Depends");
        let binary = depends
            .split(',')
            .map(|d| d.split_whitespace().next().unwrap_or(""))
            .find(|d| d.starts_with("linux-binary-"));
        why.push(match binary {
            Some(binary) => format!(
                "{} ({package}) is a meta package that holds no kernel: the kernel is in {binary} and its \
                 modules in {}; download both (`apt-get download {binary} {}`) and pass them as \
                 --kernel BINARY.deb,MODULES.deb",
                deb.display(),
                binary.replacen("linux-binary-", "linux-modules-", 1),
                binary.replacen("linux-binary-", "linux-modules-", 1),
            ),
            None if package.starts_with("linux-modules-") => format!(
                "{} ({package}) holds modules only: pass it together with its linux-binary-* package, \
                 --kernel BINARY.deb,MODULES.deb",
                deb.display()
            ),
            None => format!(
                "{} ({}) holds no vmlinuz: not a kernel image package",
                deb.display(),
                if package.is_empty() {
                    "not a Debian package"
                } else {
                    &package
                }
            ),
        });
    }
    why.join("; ")
}

/// The package with the highest version numbers in its name. Names like
/// `linux-image-6.1.0-56-cloud-amd64-unsigned` sort by their digit runs.
fn newest(names: &[String]) -> Option<&str> {
    names.iter().max_by_key(|n| digit_runs(n)).map(String::as_str)
}

fn digit_runs(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|r| !r.is_empty())
        .map(|r| r.parse().unwrap_or(u64::MAX))
        .collect()
}

/// `package=version`'s .deb in the cache's `debs/`, downloaded if absent.
pub fn fetch_deb(apt: &Apt, package: &str, version: &str, cache: &Cache) -> Result<PathBuf> {
    apt.fetch(package, version, &cache.path("debs"))
}

fn unpack(deb: &Path, dir: &Path) -> Result<()> {
    progress(format_args!("unpacking {}", deb.display()));
    host::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir))
}

/// `boot/vmlinuz-<release>` (linux-image) or
/// `usr/lib/modules/<release>/vmlinuz` (linux-binary) under `dir`.
fn find_vmlinuz(dir: &Path) -> Option<(PathBuf, String)> {
    let boot = std::fs::read_dir(dir.join("boot"))
        .into_iter()
        .flatten()
        .flatten()
        .find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_owned();
            Some((e.path(), release))
        });
    boot.or_else(|| {
        ["usr/lib/modules", "lib/modules"].iter().find_map(|m| {
            std::fs::read_dir(dir.join(m)).ok()?.flatten().find_map(|e| {
                let vmlinuz = e.path().join("vmlinuz");
                vmlinuz
                    .is_file()
                    .then(|| (vmlinuz, e.file_name().to_string_lossy().into_owned()))
            })
        })
    })
}

/// The kernel and its `lib/modules/<release>` in an unpacked package set.
fn layout(dir: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    let (vmlinuz, release) = find_vmlinuz(dir).with_context(|| {
        format!(
            "no boot/vmlinuz-* or usr/lib/modules/*/vmlinuz in {}: not a kernel package",
            dir.display()
        )
    })?;
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|m| dir.join(m).join(&release))
        .find(|m| m.join("kernel").is_dir());
    Ok((vmlinuz, modules))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_compares_numbers_not_text() {
        let names: Vec<String> = [
            "linux-image-6.1.0-9-cloud-amd64-unsigned",
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
            "linux-image-6.1.0-47-cloud-amd64-unsigned",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(newest(&names), Some("linux-image-6.1.0-56-cloud-amd64-unsigned"));
        let names: Vec<String> = [
            "linux-image-6.12.99+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            newest(&names),
            Some("linux-image-6.12.117+deb12-cloud-amd64-unsigned")
        );
        assert_eq!(newest(&[]), None);
    }

    #[test]
    fn layout_finds_vmlinuz_and_modules() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("boot"))?;
        std::fs::write(dir.path().join("boot/vmlinuz-6.1.0-56-cloud-amd64"), b"")?;
        std::fs::create_dir_all(dir.path().join("lib/modules/6.1.0-56-cloud-amd64"))?;
        std::fs::create_dir_all(dir.path().join("lib/modules/6.1.0-56-cloud-amd64/kernel"))?;
        let (vmlinuz, modules) = layout(dir.path())?;
        assert!(vmlinuz.ends_with("boot/vmlinuz-6.1.0-56-cloud-amd64"));
        assert_eq!(modules, Some(dir.path().join("lib/modules/6.1.0-56-cloud-amd64")));
        Ok(())
    }

    #[test]
    fn layout_finds_split_packaging() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let rel = dir.path().join("usr/lib/modules/7.3.4+deb13-cloud-amd64");
        std::fs::create_dir_all(rel.join("kernel"))?;
        std::fs::write(rel.join("vmlinuz"), b"")?;
        let (vmlinuz, modules) = layout(dir.path())?;
        assert_eq!(vmlinuz, rel.join("vmlinuz"));
        assert_eq!(modules, Some(rel));
        Ok(())
    }

    /// A `.deb` made with dpkg-deb: `control` fields and no files.
    fn empty_deb(dir: &Path, name: &str, control: &str) -> Result<PathBuf> {
        let root = dir.join(name);
        std::fs::create_dir_all(root.join("DEBIAN"))?;
        std::fs::write(root.join("DEBIAN/control"), control)?;
        let deb = dir.join(format!("{name}.deb"));
        host::output(
            Command::new("dpkg-deb")
                .args(["--build", "--root-owner-group"])
                .arg(&root)
                .arg(&deb),
        )?;
        Ok(deb)
    }

    #[test]
    fn a_meta_package_names_the_packages_that_hold_the_kernel() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let meta = empty_deb(
            dir.path(),
            "linux-image-7.3.4+deb13-cloud-amd64",
            "Package: linux-image-7.3.4+deb13-cloud-amd64\nVersion: 7.3.4-1\nArchitecture: amd64\n\
             Maintainer: x <x@example.invalid>\nDescription: meta\n\
             Depends: linux-base-7.3.4+deb13-cloud-amd64 (= 7.3.4-1), linux-binary-7.3.4+deb13-cloud-amd64 (= 7.3.4-1)\n",
        )?;
        let cache = Cache::at(dir.path().join("cache"))?;
        let err = format!("{:#}", from_debs(&[meta], &cache).unwrap_err());
        assert!(err.contains("meta package that holds no kernel"), "{err}");
        assert!(
            err.contains("linux-binary-7.3.4+deb13-cloud-amd64")
                && err.contains("linux-modules-7.3.4+deb13-cloud-amd64"),
            "{err}"
        );
        assert!(
            !cache
                .path("deb")
                .read_dir()?
                .flatten()
                .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
        );
        Ok(())
    }

    #[test]
    fn an_empty_folder_holds_no_kernel() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let err = format!("{:#}", from_dir(dir.path()).unwrap_err());
        assert!(err.contains("holds no kernel"), "{err}");
        Ok(())
    }
}
