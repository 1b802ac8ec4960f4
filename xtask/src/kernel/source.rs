//! Debian's kernel source, unpacked once per version under a cache name and
//! kept patched with one patch: what `buggy.rs` builds whole kernels from
//! and `module_build.rs` builds modules from.
//!
//! A tree lives in `<name>/src-<version>/<source package>/`. It is
//! re-patched in place (the patch applied last is kept beside it), so a
//! changed patch rebuilds in seconds, not minutes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use super::apt::Apt;
use super::cache::Cache;
use super::debian::fetch_deb;
use super::host::{self, progress};

/// Marker in the source tree holding the patch currently applied to it.
const APPLIED: &str = ".dio-trace-applied.patch";
/// Debian packages a kernel or module build needs.
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

/// One source package with one patch, kept under a cache name.
#[derive(Clone, Copy, Debug)]
pub struct Patched<'a> {
    /// The cache folder the tree (and its build lock) lives in.
    pub name: &'a str,
    /// Debian's source package; its tarball unpacks to a folder of the
    /// same name.
    pub source_package: &'a str,
    /// The patch, and its file name for messages.
    pub patch: &'a str,
    pub patch_name: &'a str,
}

impl Patched<'_> {
    /// Serializes builds: the patched source tree is shared state.
    pub fn lock(&self, cache: &Cache) -> Result<File> {
        let path = cache.path(format!("{}/build.lock", self.name));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(file)
    }

    /// The source tree of `version` with the patch applied. A tree that
    /// cannot be brought to that state (an interrupted patch run, hand
    /// edits) is unpacked afresh once.
    pub fn tree(&self, cache: &Cache, apt: &Apt, version: &str) -> Result<PathBuf> {
        let rel = format!("{}/src-{version}", self.name);
        let unpacked = || {
            let what = format!("{} {version} source tree", self.source_package);
            cache.entry(&rel, &what, |dir| self.unpack(cache, apt, version, dir))
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
    fn unpack(&self, cache: &Cache, apt: &Apt, version: &str, dir: &Path) -> Result<()> {
        let source = self.source_package;
        let deb = fetch_deb(apt, source, version, cache)?;
        progress(format_args!("unpacking {} (about 30 s)", deb.display()));
        let tarball = format!("./usr/src/{source}.tar.xz");
        extract_member(&deb, &tarball, dir)?;
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
}

/// Extracts one file (`./path` as the package lists it) of a `.deb` into
/// `dir`, without unpacking the rest.
pub fn extract_member(deb: &Path, member: &str, dir: &Path) -> Result<()> {
    let mut fsys = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting dpkg-deb --fsys-tarfile")?;
    let stdout = fsys.stdout.take().context("dpkg-deb has no stdout")?;
    host::run(
        Command::new("tar")
            .args(["-x", member])
            .stdin(stdout)
            .current_dir(dir),
    )?;
    let status = fsys.wait().context("waiting for dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb --fsys-tarfile {} failed: {status}", deb.display());
    }
    Ok(())
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
pub fn unmet(fragment: &str, config: &str) -> Vec<String> {
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

/// `make -jN ARGS` in `tree`, output in `build.log` beside the tree;
/// `what` and `about` (its expected duration) are for progress lines.
pub fn make_logged(tree: &Path, args: &[String], what: &str, about: &str) -> Result<()> {
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
    let log_path = tree.with_file_name("build.log");
    let log = File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    progress(format_args!(
        "building {what} ({about}; make -j{jobs} {}, log: {})",
        args.join(" "),
        log_path.display()
    ));
    let start = Instant::now();
    let status = kmake(tree)
        .arg(format!("-j{jobs}"))
        .args(args)
        .stdout(log.try_clone().context("duplicating the log handle")?)
        .stderr(log)
        .status()
        .context("starting make")?;
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{what} build failed ({status}); last lines of {}:\n{}",
            log_path.display(),
            tail.join("\n")
        );
    }
    progress(format_args!("{what} built in {:.0?}", start.elapsed()));
    Ok(())
}

/// `make` in the kernel tree, shielded from cargo's environment and with a
/// fixed build identity so that rebuilds of the same inputs match.
pub fn kmake(tree: &Path) -> Command {
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
}
