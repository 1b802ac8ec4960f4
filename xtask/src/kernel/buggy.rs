//! Test kernels built from Debian's source with one upstream fix undone,
//! because no packaged kernel in reach carries the bug any more:
//!
//! - `buggy-6.1`: `linux-source-6.1` with 91562895f803 undone, so that an
//!   O_DIRECT|O_SYNC append is synced before its new size is journaled
//!   (NOTES §1, §4);
//! - `buggy-7.3`: `linux-source-7.3` with d279c80e0bac's write-through
//!   decision re-created (what 6b65028e2b51 fixed), so that an O_DSYNC
//!   direct write into new or unwritten blocks runs no sync at all
//!   (NOTES §9).
//!
//! Each is a [`Recipe`], cached under `<name>/<key>/` where the key hashes
//! the source package version, the patch, the config fragments and the
//! recipe's build steps. One source tree per source version is kept and
//! re-patched in place, so changing the patch rebuilds in seconds, not
//! minutes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use super::apt::Apt;
use super::cache::{Cache, hash_parts};
use super::debian::fetch_deb;
use super::host::{self, ensure_packages, progress};

/// How one test kernel is made.
#[derive(Debug, PartialEq, Eq)]
pub struct Recipe {
    /// Its name in the cache (and the named kernel's).
    pub name: &'static str,
    /// Debian's source package; its tarball unpacks to a folder of the
    /// same name.
    source_package: &'static str,
    /// The Debian suite that has it (`None`: the host's own suites).
    suite: Option<&'static str>,
    /// The change that brings the bug back, and its file name for messages.
    patch: &'static str,
    patch_name: &'static str,
    /// Options merged in order on top of `make tinyconfig` (a later
    /// fragment's line overrides an earlier one's); each effective line
    /// is verified afterwards.
    fragments: &'static [&'static str],
    /// Bump when the build steps change in a way the inputs above do not show.
    steps: &'static str,
}

/// Options every test kernel needs: QEMU boot, virtio-blk, ext4, BPF, BTF.
const BASE_FRAGMENT: &str = include_str!("../../kernel/buggy-6.1.config");

pub const BUGGY_61: Recipe = Recipe {
    name: "buggy-6.1",
    source_package: "linux-source-6.1",
    suite: None,
    patch: include_str!("../../patches/ext4-undo-91562895f803.patch"),
    patch_name: "patches/ext4-undo-91562895f803.patch",
    fragments: &[BASE_FRAGMENT],
    steps: "tinyconfig+fragment, make bzImage, v1",
};

pub const BUGGY_73: Recipe = Recipe {
    name: "buggy-7.3",
    source_package: "linux-source-7.3",
    suite: Some("trixie-backports"),
    patch: include_str!("../../patches/iomap-redo-d279c80e0bac.patch"),
    patch_name: "patches/iomap-redo-d279c80e0bac.patch",
    fragments: &[BASE_FRAGMENT, include_str!("../../kernel/buggy-7.3.config")],
    steps: "tinyconfig+fragment, make bzImage, v1",
};

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

impl Recipe {
    /// Builds (or finds cached) this kernel and returns its bzImage.
    pub fn build(&self, cache: &Cache) -> Result<PathBuf> {
        let apt = self.apt(cache)?;
        let version = apt
            .candidate_version(self.source_package)?
            .with_context(|| format!("apt offers no {} package", self.source_package))?;
        let fragment = self.fragment();
        let key = hash_parts(&[
            version.as_bytes(),
            self.patch.as_bytes(),
            fragment.as_bytes(),
            self.steps.as_bytes(),
        ]);
        let what = format!(
            "{} kernel ({} {version}, key {})",
            self.name,
            self.source_package,
            &key[..16]
        );
        let dir = cache.entry(format!("{}/{}", self.name, &key[..16]), &what, |out| {
            ensure_packages(BUILD_DEPS)?;
            let _lock = self.lock(cache)?;
            let tree = self.source_tree(cache, &apt, &version)?;
            self.configure(&tree, &fragment)?;
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

    fn apt(&self, cache: &Cache) -> Result<Apt> {
        match self.suite {
            Some(suite) => Apt::suite(suite, cache),
            None => Ok(Apt::host()),
        }
    }

    /// The fragments, in merge order, as one text. With a single fragment
    /// this is that fragment verbatim (so buggy-6.1's cache key is the one
    /// it always had).
    fn fragment(&self) -> String {
        self.fragments.join("\n")
    }

    /// Serializes builds: the patched source tree is shared state.
    fn lock(&self, cache: &Cache) -> Result<File> {
        let path = cache.path(format!("{}/build.lock", self.name));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(file)
    }

    /// The source tree of `version` with the patch applied. A tree that
    /// cannot be brought to that state (an interrupted patch run, hand
    /// edits) is unpacked afresh once.
    fn source_tree(&self, cache: &Cache, apt: &Apt, version: &str) -> Result<PathBuf> {
        let rel = format!("{}/src-{version}", self.name);
        let unpacked = || {
            let what = format!("{} {version} source tree", self.source_package);
            cache.entry(&rel, &what, |dir| self.unpack_source(cache, apt, version, dir))
        };
        let dir = unpacked()?;
        let tree = dir.join(self.source_package);
        if let Err(e) = self.apply_patch(&tree) {
            progress(format_args!(
                "source tree is in an unknown state ({e:#}); unpacking it again"
            ));
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            unpacked()?;
            self.apply_patch(&tree)?;
        }
        Ok(tree)
    }

    /// Unpacks the tarball inside the source package into `dir`.
    fn unpack_source(&self, cache: &Cache, apt: &Apt, version: &str, dir: &Path) -> Result<()> {
        let source = self.source_package;
        let deb = fetch_deb(apt, source, version, cache)?;
        progress(format_args!("unpacking {} (about 30 s)", deb.display()));
        let tarball = format!("./usr/src/{source}.tar.xz");
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
        if !dir.join(source).join("Makefile").is_file() {
            bail!("{} did not unpack to {source}/", inner.display());
        }
        Ok(())
    }

    /// Brings `tree` to "pristine + patch": reverses another patch left by
    /// an earlier build, then applies ours. Applying is skipped if already
    /// done.
    fn apply_patch(&self, tree: &Path) -> Result<()> {
        let marker = tree.join(APPLIED);
        let applied = std::fs::read_to_string(&marker).ok();
        if applied.as_deref() == Some(self.patch) {
            return Ok(());
        }
        if let Some(old) = applied {
            progress("reverting the previously applied patch");
            patch(tree, &old, true)?;
            std::fs::remove_file(&marker).with_context(|| format!("removing {}", marker.display()))?;
        }
        progress(format_args!("applying {}", self.patch_name));
        patch(tree, self.patch, false)?;
        std::fs::write(&marker, self.patch).with_context(|| format!("writing {}", marker.display()))
    }

    /// `make tinyconfig`, merge the fragments, `make olddefconfig`, then
    /// check that every effective option of the fragments survived.
    fn configure(&self, tree: &Path, fragment: &str) -> Result<()> {
        progress(format_args!(
            "configuring {}: tinyconfig + {} fragment(s)",
            self.name,
            self.fragments.len()
        ));
        let file = tree.join(".dio-trace-fragment.config");
        std::fs::write(&file, fragment).context("writing the config fragment")?;
        host::output(kmake(tree).arg("tinyconfig"))?;
        host::output(
            Command::new("sh")
                .arg("scripts/kconfig/merge_config.sh")
                .args(["-m", ".config"])
                .arg(&file)
                .current_dir(tree),
        )?;
        host::output(kmake(tree).arg("olddefconfig"))?;
        let config = std::fs::read_to_string(tree.join(".config")).context("reading .config")?;
        let missing = unmet(fragment, &config);
        if !missing.is_empty() {
            bail!(
                "after olddefconfig these fragment options are not set as asked (a dependency is \
                 missing from the {} fragments in xtask/kernel/, or a build tool such as pahole is too old):\n  {}",
                self.name,
                missing.join("\n  ")
            );
        }
        Ok(())
    }
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

/// Fragment lines (`CONFIG_X=v`) that `config` does not contain verbatim.
/// Where several lines set one option, the last one counts, as in
/// `merge_config.sh`.
fn unmet(fragment: &str, config: &str) -> Vec<String> {
    let have: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    let lines: Vec<&str> = fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_"))
        .collect();
    let option = |l: &str| l.split('=').next().unwrap_or(l).to_owned();
    lines
        .iter()
        .enumerate()
        .filter(|(i, l)| !lines[i + 1..].iter().any(|later| option(later) == option(l)))
        .map(|(_, l)| *l)
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
    fn a_later_fragment_line_overrides() {
        let fragment = "CONFIG_L=\"a\"\nCONFIG_B=y\n\nCONFIG_L=\"b\"\n";
        assert!(unmet(fragment, "CONFIG_L=\"b\"\nCONFIG_B=y\n").is_empty());
        assert_eq!(
            unmet(fragment, "CONFIG_L=\"a\"\nCONFIG_B=y\n"),
            ["CONFIG_L=\"b\""]
        );
    }

    #[test]
    fn fragments_ask_for_btf_kprobes_and_the_disks() {
        for (recipe, opts) in [
            (&BUGGY_61, &["CONFIG_VIRTIO_BLK=y", "CONFIG_EXT4_FS=y"][..]),
            (
                &BUGGY_73,
                &["CONFIG_VIRTIO_BLK=y", "CONFIG_BLK_DEV_NVME=y", "CONFIG_XFS_FS=y"][..],
            ),
        ] {
            let fragment = recipe.fragment();
            let base = [
                "CONFIG_DEBUG_INFO_BTF=y",
                "CONFIG_KPROBES=y",
                "CONFIG_MODULES=y",
                "CONFIG_MAGIC_SYSRQ=y",
            ];
            for opt in base.iter().chain(opts) {
                assert!(
                    fragment.lines().any(|l| l == *opt),
                    "{opt} missing from {}'s fragments",
                    recipe.name
                );
            }
        }
    }

    #[test]
    fn each_patch_touches_one_file() {
        for (recipe, file) in [
            (&BUGGY_61, "+++ b/fs/ext4/file.c"),
            (&BUGGY_73, "+++ b/fs/iomap/direct-io.c"),
        ] {
            let files: Vec<&str> = recipe.patch.lines().filter(|l| l.starts_with("+++ ")).collect();
            assert_eq!(files, [file], "{}", recipe.name);
        }
    }
}
