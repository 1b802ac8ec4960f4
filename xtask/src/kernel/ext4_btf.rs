//! ext4's BTF for a kernel that publishes none for its modules (5.10
//! generic: ext4 is a module, `CONFIG_DEBUG_INFO_BTF_MODULES` came in
//! 5.11), made the way dio-trace's own error tells a user to: from the
//! kernel's `-dbg` package, `pahole --btf_encode_detached` over the debug
//! `ext4.ko`. The result is what `dio-trace --btf FILE` takes.
//!
//! The `-dbg` package is large (800 MB for 5.10): only `ext4.ko` is taken
//! out of it, and the package is deleted once the BTF is cached (the cache
//! key is the package and its version).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use super::apt::Apt;
use super::cache::Cache;
use super::host::{self, ensure_packages, progress};

/// Builds (or finds cached) `ext4.btf` from the newest package matching
/// `dbg_pattern` in `apt`.
pub fn from_dbg(apt: &Apt, dbg_pattern: &str, cache: &Cache) -> Result<PathBuf> {
    let names = apt.search_names(dbg_pattern)?;
    let package = names
        .first()
        .with_context(|| format!("apt offers no package matching `{dbg_pattern}`"))?;
    let version = apt
        .candidate_version(package)?
        .with_context(|| format!("apt lists {package} but has no installable version of it"))?;
    let key = format!("ext4-btf/{package}_{version}");
    let dir = cache.entry(&key, &format!("ext4 BTF from {package} {version}"), |out| {
        ensure_packages(&["dwarves", "dpkg", "tar"])?;
        let deb = super::debian::fetch_deb(apt, package, &version, cache)?;
        let scratch = tempfile::tempdir_in(out).context("creating a scratch directory")?;
        let ko = extract_ext4_ko(&deb, scratch.path())?;
        progress(format_args!("pahole --btf_encode_detached over {}", ko.display()));
        host::run(
            Command::new("pahole")
                .arg(format!(
                    "--btf_encode_detached={}",
                    out.join("ext4.btf").display()
                ))
                .arg(&ko),
        )?;
        // The BTF is what is cached; the package is 800 MB.
        let _ = std::fs::remove_file(&deb);
        Ok(())
    })?;
    Ok(dir.join("ext4.btf"))
}

/// `…/kernel/fs/ext4/ext4.ko` out of a `-dbg` package, into `dir`.
fn extract_ext4_ko(deb: &Path, dir: &Path) -> Result<PathBuf> {
    progress(format_args!(
        "taking ext4.ko out of {} (the whole package is decompressed: a few minutes)",
        deb.display()
    ));
    let mut fsys = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running dpkg-deb --fsys-tarfile {}", deb.display()))?;
    let stdout = fsys.stdout.take().context("dpkg-deb has no stdout")?;
    let tar = Command::new("tar")
        .args(["-x", "--wildcards", "--no-anchored", "*/kernel/fs/ext4/ext4.ko"])
        .stdin(stdout)
        .current_dir(dir)
        .status()
        .context("running tar")?;
    let dpkg = fsys.wait().context("waiting for dpkg-deb")?;
    if !tar.success() || !dpkg.success() {
        bail!(
            "no kernel/fs/ext4/ext4.ko in {} (tar {tar}, dpkg-deb {dpkg})",
            deb.display()
        );
    }
    let mut found = None;
    super::modules::walk(dir, &mut |p| {
        if p.file_name().is_some_and(|n| n == "ext4.ko") {
            found = Some(p.to_owned());
        }
    })?;
    found.with_context(|| format!("tar left no ext4.ko under {}", dir.display()))
}
