//! Debian's packaged kernels: found with apt, fetched with `apt-get
//! download`, unpacked with `dpkg-deb -x`. All of them carry the ext4 fix.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::cache::{Cache, hash_file};
use super::host::{self, candidate_version, ensure_packages, progress, search_names};

/// A kernel series Debian ships as a cloud image.
#[derive(Clone, Copy, Debug)]
pub enum Series {
    V6_1,
    V6_12,
}

impl Series {
    /// `apt-cache search --names-only` pattern for the unsigned cloud image.
    fn pattern(self) -> &'static str {
        match self {
            Self::V6_1 => r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
            Self::V6_12 => r"^linux-image-6\.12\.[0-9]+.*-cloud-amd64-unsigned$",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::V6_1 => "6.1",
            Self::V6_12 => "6.12",
        }
    }
}

/// The newest packaged cloud kernel of `series`: (bzImage, modules dir).
pub fn packaged(series: Series, cache: &Cache) -> Result<(PathBuf, Option<PathBuf>)> {
    ensure_packages(&["dpkg", "apt"])?;
    let names = search_names(series.pattern())?;
    let Some(package) = newest(&names) else {
        bail!(
            "apt offers no Debian {} cloud kernel (searched `{}`); on bookworm the 6.12 \
             images come from bookworm-security/bookworm-backports: add that suite to apt's sources",
            series.name(),
            series.pattern()
        );
    };
    let version = candidate_version(package)?
        .with_context(|| format!("apt lists {package} but has no installable version of it"))?;
    let key = format!("debian/{package}_{version}");
    let dir = cache.entry(&key, &format!("{package} {version}"), |dir| {
        let deb = fetch_deb(package, &version, cache)?;
        unpack(&deb, dir)
    })?;
    layout(&dir)
}

/// A `linux-image-*.deb` the caller has, cached by the hash of its bytes.
pub fn from_deb(deb: &Path, cache: &Cache) -> Result<(PathBuf, Option<PathBuf>)> {
    ensure_packages(&["dpkg"])?;
    let hash = hash_file(deb)?;
    let key = format!("deb/{}", &hash[..16]);
    let dir = cache.entry(&key, &deb.display().to_string(), |dir| unpack(deb, dir))?;
    layout(&dir)
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
pub fn fetch_deb(package: &str, version: &str, cache: &Cache) -> Result<PathBuf> {
    let dir = cache.path("debs");
    let name = format!("{package}_{}_", version.replace(':', "%3a"));
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let file = e.file_name();
            let file = file.to_string_lossy();
            if file.starts_with(&name) && file.ends_with(".deb") {
                progress(format_args!("cached: {file}"));
                return Ok(e.path());
            }
        }
    }
    host::download(package, version, &dir)
}

fn unpack(deb: &Path, dir: &Path) -> Result<()> {
    progress(format_args!("unpacking {}", deb.display()));
    host::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir))
}

/// Finds `boot/vmlinuz-<release>` and `lib/modules/<release>` in an
/// unpacked image package.
fn layout(dir: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    let boot = dir.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .with_context(|| format!("{} has no boot/: not a linux-image package?", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz-* in {}", boot.display()))?;
    let release = vmlinuz
        .file_name()
        .map(|n| n.to_string_lossy().trim_start_matches("vmlinuz-").to_owned())
        .unwrap_or_default();
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|m| dir.join(m).join(&release))
        .find(|m| m.is_dir());
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
        let (vmlinuz, modules) = layout(dir.path())?;
        assert!(vmlinuz.ends_with("boot/vmlinuz-6.1.0-56-cloud-amd64"));
        assert_eq!(modules, Some(dir.path().join("lib/modules/6.1.0-56-cloud-amd64")));
        Ok(())
    }
}
