//! The `buggy-6.1` kernel: Debian's 6.1 source with upstream 91562895f803
//! undone, so that an O_DIRECT|O_SYNC append is synced before its new size
//! is journaled (NOTES §1, §4). No packaged kernel has the bug any more.
//!
//! The result is cached under `buggy-6.1/<key>/` where the key hashes the
//! source package version, the patch, the config fragment and [`RECIPE`].
//! One source tree per source version is kept and re-patched in place, so
//! changing the patch rebuilds in seconds, not minutes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use super::apt::Apt;
use super::cache::{Cache, hash_parts};
use super::debian::fetch_deb;
use super::host::{self, ensure_packages, progress};

/// The change that brings the bug back.
const PATCH: &str = include_str!("../../patches/ext4-undo-91562895f803.patch");
/// Options merged on top of `make tinyconfig`; each is verified afterwards.
const FRAGMENT: &str = include_str!("../../kernel/buggy-6.1.config");
/// Bump when the build steps change in a way the inputs above do not show.
const RECIPE: &str = "tinyconfig+fragment, make bzImage, v1";
const SOURCE_PACKAGE: &str = "linux-source-6.1";
/// Directory name inside the package's tarball.
const SOURCE_DIR: &str = "linux-source-6.1";
/// Marker in the source tree holding the patch currently applied to it.
const APPLIED: &str = ".dio-trace-applied.patch";
/// Debian packages the kernel build needs.
pub const BUILD_DEPS: &[&str] = &[
    "make",
    "gcc",
    "libc6-dev",
    "flex",
    "bison",
    "bc",
    "libssl-dev",
    "libelf-dev",
    "dwarves",
    "xz-utils",
    "patch",
    "tar",
];

/// Builds (or finds cached) the buggy kernel and returns its bzImage.
pub fn build(cache: &Cache) -> Result<PathBuf> {
    let version = source_version()?;
    let key = hash_parts(&[
        version.as_bytes(),
        PATCH.as_bytes(),
        FRAGMENT.as_bytes(),
        RECIPE.as_bytes(),
    ]);
    let what = format!(
        "buggy-6.1 kernel ({SOURCE_PACKAGE} {version}, key {})",
        &key[..16]
    );
    let dir = cache.entry(format!("buggy-6.1/{}", &key[..16]), &what, |out| {
        ensure_packages(BUILD_DEPS)?;
        let _lock = lock(cache)?;
        let tree = source_tree(cache, &version)?;
        configure(&tree)?;
        make(&tree)?;
        for (from, to) in [
            ("arch/x86/boot/bzImage", "bzImage"),
            (".config", "config"),
            ("System.map", "System.map"),
        ] {
            std::fs::copy(tree.join(from), out.join(to)).with_context(|| format!("copying {from}"))?;
        }
        Ok(())
    })?;
    Ok(dir.join("bzImage"))
}

/// The `linux-source-6.1` version apt would fetch.
fn source_version() -> Result<String> {
    Apt::host()
        .candidate_version(SOURCE_PACKAGE)?
        .with_context(|| format!("apt offers no {SOURCE_PACKAGE} package"))
}

/// Serializes builds: the patched source tree is shared state.
fn lock(cache: &Cache) -> Result<File> {
    let path = cache.path("buggy-6.1/build.lock");
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

/// The source tree of `version` with [`PATCH`] applied. A tree that cannot
/// be brought to that state (an interrupted patch run, hand edits) is
/// unpacked afresh once.
fn source_tree(cache: &Cache, version: &str) -> Result<PathBuf> {
    let rel = format!("buggy-6.1/src-{version}");
    let unpacked = || {
        let what = format!("{SOURCE_PACKAGE} {version} source tree");
        cache.entry(&rel, &what, |dir| unpack_source(cache, version, dir))
    };
    let dir = unpacked()?;
    if let Err(e) = apply_patch(&dir.join(SOURCE_DIR)) {
        progress(format_args!(
            "source tree is in an unknown state ({e:#}); unpacking it again"
        ));
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        let dir = unpacked()?;
        apply_patch(&dir.join(SOURCE_DIR))?;
    }
    Ok(dir.join(SOURCE_DIR))
}

/// Unpacks the tarball inside the `linux-source-6.1` package into `dir`.
fn unpack_source(cache: &Cache, version: &str, dir: &Path) -> Result<()> {
    let deb = fetch_deb(&Apt::host(), SOURCE_PACKAGE, version, cache)?;
    progress(format_args!("unpacking {} (about 30 s)", deb.display()));
    let tarball = format!("./usr/src/{SOURCE_DIR}.tar.xz");
    let mut fsys = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting dpkg-deb --fsys-tarfile")?;
    let stdout = fsys.stdout.take().context("dpkg-deb has no stdout")?;
    host::run(
        Command::new("tar")
            .args(["-x", &tarball])
            .stdin(stdout)
            .current_dir(dir),
    )?;
    let status = fsys.wait().context("waiting for dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb --fsys-tarfile {} failed: {status}", deb.display());
    }
    let inner = dir.join(&tarball);
    host::run(Command::new("tar").arg("-xJf").arg(&inner).current_dir(dir))?;
    std::fs::remove_dir_all(dir.join("usr")).context("removing the unpacked tarball")?;
    if !dir.join(SOURCE_DIR).join("Makefile").is_file() {
        bail!("{} did not unpack to {SOURCE_DIR}/", inner.display());
    }
    Ok(())
}

/// Brings `tree` to "pristine + PATCH": reverses another patch left by an
/// earlier build, then applies ours. Applying is skipped if already done.
fn apply_patch(tree: &Path) -> Result<()> {
    let marker = tree.join(APPLIED);
    let applied = std::fs::read_to_string(&marker).ok();
    if applied.as_deref() == Some(PATCH) {
        return Ok(());
    }
    if let Some(old) = applied {
        progress("reverting the previously applied patch");
        patch(tree, &old, true)?;
        std::fs::remove_file(&marker).with_context(|| format!("removing {}", marker.display()))?;
    }
    progress("applying patches/ext4-undo-91562895f803.patch");
    patch(tree, PATCH, false)?;
    std::fs::write(&marker, PATCH).with_context(|| format!("writing {}", marker.display()))
}

fn patch(tree: &Path, diff: &str, reverse: bool) -> Result<()> {
    use std::io::Write as _;
    let mut cmd = Command::new("patch");
    cmd.args(["-p1", "--batch", "--forward", "--no-backup-if-mismatch"])
        .current_dir(tree);
    if reverse {
        cmd.arg("--reverse");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting patch")?;
    child
        .stdin
        .take()
        .context("patch has no stdin")?
        .write_all(diff.as_bytes())
        .context("feeding the patch")?;
    let out = child.wait_with_output().context("waiting for patch")?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}\n{}{}",
            host::describe(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `make tinyconfig`, merge [`FRAGMENT`], `make olddefconfig`, then check
/// that every option of the fragment survived.
fn configure(tree: &Path) -> Result<()> {
    progress("configuring: tinyconfig + kernel/buggy-6.1.config");
    let fragment = tree.join(".dio-trace-fragment.config");
    std::fs::write(&fragment, FRAGMENT).context("writing the config fragment")?;
    host::output(kmake(tree).arg("tinyconfig"))?;
    host::output(
        Command::new("sh")
            .arg("scripts/kconfig/merge_config.sh")
            .args(["-m", ".config"])
            .arg(&fragment)
            .current_dir(tree),
    )?;
    host::output(kmake(tree).arg("olddefconfig"))?;
    let config = std::fs::read_to_string(tree.join(".config")).context("reading .config")?;
    let missing = unmet(FRAGMENT, &config);
    if !missing.is_empty() {
        bail!(
            "after olddefconfig these fragment options are not set as asked (a dependency is \
             missing from kernel/buggy-6.1.config, or a build tool such as pahole is too old):\n  {}",
            missing.join("\n  ")
        );
    }
    Ok(())
}

/// Fragment lines (`CONFIG_X=v`) that `config` does not contain verbatim.
fn unmet(fragment: &str, config: &str) -> Vec<String> {
    let have: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_"))
        .filter(|l| !have.contains(l))
        .map(str::to_owned)
        .collect()
}

/// `make -jN bzImage`, output in `build.log` beside the tree.
fn make(tree: &Path) -> Result<()> {
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
    let log_path = tree.with_file_name("build.log");
    let log = File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    progress(format_args!(
        "building kernel (about 6 minutes on 2 cores; make -j{jobs} bzImage, log: {})",
        log_path.display()
    ));
    let start = Instant::now();
    let status = kmake(tree)
        .arg(format!("-j{jobs}"))
        .arg("bzImage")
        .stdout(log.try_clone().context("duplicating the log handle")?)
        .stderr(log)
        .status()
        .context("starting make")?;
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "kernel build failed ({status}); last lines of {}:\n{}",
            log_path.display(),
            tail.join("\n")
        );
    }
    progress(format_args!("kernel built in {:.0?}", start.elapsed()));
    Ok(())
}

/// `make` in the kernel tree, shielded from cargo's environment and with a
/// fixed build identity so that rebuilds of the same inputs match.
fn kmake(tree: &Path) -> Command {
    let mut cmd = Command::new("make");
    cmd.current_dir(tree)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .env("KBUILD_BUILD_USER", "dio-trace")
        .env("KBUILD_BUILD_HOST", "xtask")
        .stdin(Stdio::null());
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmet_lists_dropped_options() {
        let fragment = "# c\nCONFIG_A=y\nCONFIG_B=y\nCONFIG_S=\"x\"\n";
        let config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_S=\"x\"\n";
        assert_eq!(unmet(fragment, config), ["CONFIG_B=y"]);
    }

    #[test]
    fn fragment_asks_for_btf_and_kprobes() {
        for opt in [
            "CONFIG_DEBUG_INFO_BTF=y",
            "CONFIG_KPROBES=y",
            "CONFIG_MODULES=y",
            "CONFIG_MAGIC_SYSRQ=y",
        ] {
            assert!(
                FRAGMENT.lines().any(|l| l == opt),
                "{opt} missing from the fragment"
            );
        }
    }

    #[test]
    fn patch_touches_only_ext4_file_c() {
        let files: Vec<&str> = PATCH.lines().filter(|l| l.starts_with("+++ ")).collect();
        assert_eq!(files, ["+++ b/fs/ext4/file.c"]);
    }
}
