//! Test kernels built from Debian's source with one upstream fix undone,
//! because no packaged kernel in reach carries the bug any more and the
//! patched code is built in, so a module of our own cannot carry it:
//!
//! - `buggy-7.3`: `linux-source-7.3` with d279c80e0bac's write-through
//!   decision re-created (what 6b65028e2b51 fixed), so that an O_DSYNC
//!   direct write into new or unwritten blocks runs no sync at all
//!   (NOTES §9). iomap is never a module.
//!
//! Where the patched code is a module (ext4 for `buggy-6.1`, f2fs for
//! `f2fs-fix-7.3`), `module_build.rs` rebuilds that module for Debian's
//! own kernel instead: minutes, not a kernel build, on a cold CI run.
//!
//! Each is a [`Recipe`], cached under `<name>/<key>/` where the key hashes
//! the source package version, the patch, the config fragments and the
//! recipe's build steps. The source tree is `source.rs`'s, kept per
//! source version and re-patched in place.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::apt::Apt;
use super::cache::{Cache, hash_parts};
use super::host::{self, ensure_packages, progress};
use super::source::{BUILD_DEPS, Patched, kmake, make_logged, unmet};

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
const BASE_FRAGMENT: &str = include_str!("../../kernel/base.config");

pub const BUGGY_73: Recipe = Recipe {
    name: "buggy-7.3",
    source_package: "linux-source-7.3",
    suite: Some("trixie-backports"),
    patch: include_str!("../../patches/iomap-redo-d279c80e0bac.patch"),
    patch_name: "patches/iomap-redo-d279c80e0bac.patch",
    fragments: &[BASE_FRAGMENT, include_str!("../../kernel/buggy-7.3.config")],
    steps: "tinyconfig+fragment, make bzImage, v1",
};

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
            let source = self.source();
            let _lock = source.lock(cache)?;
            let tree = source.tree(cache, &apt, &version)?;
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

    /// The fragments, in merge order, as one text.
    fn fragment(&self) -> String {
        self.fragments.join("\n")
    }

    /// The shared source tree this recipe patches.
    fn source(&self) -> Patched<'static> {
        Patched {
            name: self.name,
            source_package: self.source_package,
            patch: self.patch,
            patch_name: self.patch_name,
        }
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

/// `make -jN bzImage`.
fn make(tree: &Path) -> Result<()> {
    make_logged(tree, &["bzImage".into()], "kernel", "about 6 minutes on 2 cores")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_ask_for_btf_kprobes_and_the_disks() {
        let fragment = BUGGY_73.fragment();
        for opt in [
            "CONFIG_DEBUG_INFO_BTF=y",
            "CONFIG_KPROBES=y",
            "CONFIG_MODULES=y",
            "CONFIG_MAGIC_SYSRQ=y",
            "CONFIG_VIRTIO_BLK=y",
            "CONFIG_EXT4_FS=y",
            "CONFIG_BLK_DEV_NVME=y",
            "CONFIG_XFS_FS=y",
        ] {
            assert!(
                fragment.lines().any(|l| l == opt),
                "{opt} missing from buggy-7.3's fragments"
            );
        }
    }

    #[test]
    fn the_patch_touches_iomap_alone() {
        let files: Vec<&str> = BUGGY_73.patch.lines().filter(|l| l.starts_with("+++ ")).collect();
        assert_eq!(files, ["+++ b/fs/iomap/direct-io.c"]);
    }
}
