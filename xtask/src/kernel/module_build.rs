//! A packaged Debian kernel with the modules of one source directory
//! rebuilt from Debian's own source with a patch, the way DKMS builds an
//! out-of-tree module: no kernel of our own, Debian's `vmlinuz` boots.
//!
//! Inputs: the kernel package set (`debian.rs`), its source package
//! (`linux-source-X.Y`, the same Debian version), a patch, and a module
//! directory (`fs/f2fs`). Steps, in the source tree `source.rs` keeps:
//!
//! 1. `.config` is the kernel's own (`linux-base-*`'s `config` or
//!    `boot/config-*`), brought to this host's compiler with `make
//!    olddefconfig`; the options the module directory's `Kconfig`
//!    declares must come out as Debian set them;
//! 2. `make KERNELRELEASE=<release> modules_prepare` builds the host tools
//!    here (the packaged `linux-kbuild-*` binaries may need a newer glibc
//!    than the host's);
//! 3. `Module.symvers` comes from `linux-headers-<release>` (the symbols
//!    the kernel exports, and their CRCs where it has MODVERSIONS), and
//!    `vmlinux` from `scripts/extract-vmlinux` on the packaged `vmlinuz`:
//!    its `.BTF` is the base kbuild makes the module's BTF against;
//! 4. `make M=<dir> modules`; each module is stripped of DWARF (its `.BTF`
//!    stays) and checked against the packaged module of the same name:
//!    equal `vermagic`, and BTF where the packaged one has it.
//!
//! The result is cached under `<name>/<key>/`, the key hashing every
//! input, as a `lib/modules/<release>` laid out like the package's:
//! symbolic links to the packaged files, but for the rebuilt modules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use object::{Object as _, ObjectSection as _};

use super::apt::Apt;
use super::cache::{Cache, hash_parts};
use super::debian::{Packaged, fetch_deb};
use super::host::{self, ensure_packages, progress};
use super::modules::walk;
use super::source::{BUILD_DEPS, Patched, extract_member, kmake, make_logged, unmet};

/// How one set of modules is rebuilt for a packaged kernel.
#[derive(Debug, PartialEq, Eq)]
pub struct Recipe {
    /// Its name in the cache.
    pub name: &'static str,
    /// Debian's source package for the kernel (`linux-source-7.3`).
    pub source_package: &'static str,
    /// The change, and its file name for messages.
    pub patch: &'static str,
    pub patch_name: &'static str,
    /// The source directory whose modules are rebuilt (`fs/f2fs`).
    pub module_dir: &'static str,
    /// Bump when the build steps change in a way the inputs do not show.
    pub steps: &'static str,
}

/// The steps every recipe here takes (part of each cache key).
const MODULE_STEPS: &str = "olddefconfig, modules_prepare, M=dir modules, strip -g, v1";

/// f2fs updates the size of an extending direct write in `->end_io`,
/// before iomap's completion syncs; an fsync waits for the first node
/// page after a checkpoint too, and for every node page numbered before
/// it waits, not only up to its own (each patch's message says why).
/// Three patches in one series (`patch` applies them in turn): the pair
/// of kernels proves them against the stock one.
pub const F2FS_FIX_73: Recipe = Recipe {
    name: "f2fs-fix-7.3",
    source_package: "linux-source-7.3",
    patch: concat!(
        include_str!("../../patches/f2fs-dio-size-in-end-io.patch"),
        include_str!("../../patches/f2fs-fsync-seq-from-one.patch"),
        include_str!("../../patches/f2fs-fsync-wait-all-numbered.patch")
    ),
    patch_name: "patches/f2fs-dio-size-in-end-io.patch + patches/f2fs-fsync-seq-from-one.patch + \
                 patches/f2fs-fsync-wait-all-numbered.patch",
    module_dir: "fs/f2fs",
    steps: MODULE_STEPS,
};

/// ext4 with 91562895f803 undone, so that an O_DIRECT|O_SYNC append is
/// synced before its new size is journaled (NOTES §1, §4), for Debian's
/// generic 6.1, whose ext4 is a module: the bug without a kernel build.
pub const BUGGY_61: Recipe = Recipe {
    name: "buggy-6.1",
    source_package: "linux-source-6.1",
    patch: include_str!("../../patches/ext4-undo-91562895f803.patch"),
    patch_name: "patches/ext4-undo-91562895f803.patch",
    module_dir: "fs/ext4",
    steps: MODULE_STEPS,
};

/// Packages beyond the kernel build's: `extract-vmlinux` decompresses
/// zstd, xz or gzip kernels.
const MORE_DEPS: &[&str] = &["zstd", "binutils"];

impl Recipe {
    /// `kernel`'s `lib/modules/<release>` with this recipe's modules
    /// rebuilt (built, or found cached).
    pub fn build(&self, apt: &Apt, kernel: &Packaged, cache: &Cache) -> Result<PathBuf> {
        let (vmlinuz, modules, release) = kernel.layout()?;
        let modules = modules.with_context(|| {
            format!(
                "{} {} ships no modules: nothing for {} to replace",
                kernel.package, kernel.version, self.name
            )
        })?;
        let source_version = apt
            .candidate_version(self.source_package)?
            .with_context(|| format!("apt offers no {} package", self.source_package))?;
        if let Some(why) = version_mismatch(&kernel.version, &source_version) {
            bail!(
                "{}: {} is {source_version} but {} is {}: {why}",
                self.name,
                self.source_package,
                kernel.package,
                kernel.version
            );
        }
        let key = self.key(&kernel.package, &kernel.version, &source_version);
        let what = format!(
            "{} modules for {} {} (key {})",
            self.name,
            kernel.package,
            kernel.version,
            &key[..16]
        );
        let dir = cache.entry(format!("{}/{}", self.name, &key[..16]), &what, |out| {
            ensure_packages(BUILD_DEPS)?;
            ensure_packages(MORE_DEPS)?;
            let source = Patched {
                name: self.name,
                source_package: self.source_package,
                patch: self.patch,
                patch_name: self.patch_name,
            };
            let _lock = source.lock(cache)?;
            let tree = source.tree(cache, apt, &source_version)?;
            self.configure(&tree, &kernel.config(&release)?, out)?;
            let release_arg = format!("KERNELRELEASE={release}");
            make_logged(
                &tree,
                &[release_arg.clone(), "modules_prepare".into()],
                "kbuild host tools",
                "about a minute",
            )?;
            let symvers = self.symvers(apt, cache, &release, &kernel.version, out)?;
            std::fs::copy(&symvers, tree.join("Module.symvers")).context("copying Module.symvers")?;
            extract_vmlinux(&tree, &vmlinuz)?;
            make_logged(
                &tree,
                &[release_arg, format!("M={}", self.module_dir), "modules".into()],
                self.module_dir,
                "a few minutes",
            )?;
            let built = self.collect(&tree, out)?;
            overlay(
                &modules,
                &out.join("lib/modules").join(&release),
                &format!("kernel/{}", self.module_dir),
                &built,
            )
        })?;
        Ok(dir.join("lib/modules").join(&release))
    }

    /// Hash of every input: the kernel package and version, the source
    /// version, the patch, the module directory and the steps.
    fn key(&self, package: &str, version: &str, source_version: &str) -> String {
        hash_parts(&[
            package.as_bytes(),
            version.as_bytes(),
            self.source_package.as_bytes(),
            source_version.as_bytes(),
            self.patch.as_bytes(),
            self.module_dir.as_bytes(),
            self.steps.as_bytes(),
        ])
    }

    /// The kernel's config, `make olddefconfig` for this host's
    /// toolchain, and the module directory's own options checked.
    fn configure(&self, tree: &Path, config: &Path, out: &Path) -> Result<()> {
        progress(format_args!(
            "configuring {} with {}",
            self.name,
            config.display()
        ));
        let debian =
            std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
        std::fs::write(tree.join(".config"), &debian).context("writing .config")?;
        host::output(kmake(tree).arg("olddefconfig"))?;
        let ours = std::fs::read_to_string(tree.join(".config")).context("reading .config")?;
        let kconfig_path = tree.join(self.module_dir).join("Kconfig");
        let kconfig = std::fs::read_to_string(&kconfig_path)
            .with_context(|| format!("reading {}", kconfig_path.display()))?;
        let missing = unmet(&own_options(&debian, &kconfig_symbols(&kconfig)), &ours);
        if !missing.is_empty() {
            bail!(
                "after olddefconfig, options of {}/Kconfig are not as the packaged kernel has them \
                 (this host's toolchain cannot build them as configured):\n  {}",
                self.module_dir,
                missing.join("\n  ")
            );
        }
        std::fs::write(out.join("config"), &ours).context("keeping the config")?;
        Ok(())
    }

    /// `Module.symvers` of `linux-headers-<release>` (same version).
    fn symvers(&self, apt: &Apt, cache: &Cache, release: &str, version: &str, out: &Path) -> Result<PathBuf> {
        let headers = format!("linux-headers-{release}");
        let deb = fetch_deb(apt, &headers, version, cache)
            .with_context(|| format!("{headers} {version} holds the kernel's Module.symvers"))?;
        let member = format!("./usr/src/linux-headers-{release}/Module.symvers");
        extract_member(&deb, &member, out)?;
        let path = out.join(&member);
        if !path.is_file() {
            bail!("{} has no {member}", deb.display());
        }
        let kept = out.join("Module.symvers");
        std::fs::rename(&path, &kept).context("moving Module.symvers")?;
        std::fs::remove_dir_all(out.join("usr")).context("removing the unpacked headers")?;
        Ok(kept)
    }

    /// The modules `make M=` left in the module directory, stripped of
    /// DWARF into `out/ko/`: module name -> file.
    fn collect(&self, tree: &Path, out: &Path) -> Result<BTreeMap<String, PathBuf>> {
        let dir = out.join("ko");
        std::fs::create_dir_all(&dir).context("creating ko/")?;
        let mut built = BTreeMap::new();
        let mut found = Vec::new();
        walk(&tree.join(self.module_dir), &mut |p| {
            if p.extension().is_some_and(|e| e == "ko") {
                found.push(p.to_owned());
            }
        })?;
        for ko in found {
            let file = ko.file_name().context("module without a name")?;
            let stripped = dir.join(file);
            host::run(
                Command::new("strip")
                    .arg("--strip-debug")
                    .arg("-o")
                    .arg(&stripped)
                    .arg(&ko),
            )?;
            let name = file.to_string_lossy().trim_end_matches(".ko").replace('-', "_");
            built.insert(name, stripped);
        }
        if built.is_empty() {
            bail!("make M={} built no module", self.module_dir);
        }
        Ok(built)
    }
}

/// Why a kernel package and a source package of these versions do not
/// make one kernel, or None where they do (the same Debian version).
fn version_mismatch(kernel: &str, source: &str) -> Option<&'static str> {
    (kernel != source).then_some(
        "a module must be built from the very source of the kernel it loads into; \
         ask apt for the source package of the kernel's version, or pin the kernel row to the source's",
    )
}

/// Option names a `Kconfig` file declares (`config X`, `menuconfig X`).
fn kconfig_symbols(kconfig: &str) -> Vec<String> {
    kconfig
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("config ")
                .or_else(|| l.strip_prefix("menuconfig "))
                .map(|s| s.trim().to_owned())
        })
        .collect()
}

/// The lines of `config` that set one of `symbols` (`CONFIG_X=...`): what
/// the rebuilt configuration must keep.
fn own_options(config: &str, symbols: &[String]) -> String {
    config
        .lines()
        .filter(|l| {
            l.strip_prefix("CONFIG_")
                .and_then(|r| r.split_once('='))
                .is_some_and(|(name, _)| symbols.iter().any(|s| s == name))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `vmlinux` at the tree's root from the packaged `vmlinuz`, for the
/// modules' BTF; it must carry `.BTF`.
fn extract_vmlinux(tree: &Path, vmlinuz: &Path) -> Result<()> {
    let out = Command::new("sh")
        .arg("scripts/extract-vmlinux")
        .arg(vmlinuz)
        .current_dir(tree)
        .output()
        .context("running scripts/extract-vmlinux")?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!(
            "scripts/extract-vmlinux {} failed: {}",
            vmlinuz.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sections = sections(&out.stdout).context("extract-vmlinux gave no ELF")?;
    if !sections.btf {
        bail!(
            "the vmlinux in {} has no .BTF section: modules built against it get no BTF",
            vmlinuz.display()
        );
    }
    std::fs::write(tree.join("vmlinux"), &out.stdout).context("writing vmlinux")
}

/// What the checks read from a module or kernel ELF.
#[derive(Debug, Default, PartialEq, Eq)]
struct Sections {
    vermagic: Option<String>,
    btf: bool,
}

fn sections(elf: &[u8]) -> Result<Sections> {
    let file = object::File::parse(elf).context("not an ELF file")?;
    let vermagic = file
        .section_by_name(".modinfo")
        .and_then(|s| s.data().ok())
        .and_then(|d| {
            d.split(|b| *b == 0)
                .find_map(|kv| kv.strip_prefix(b"vermagic="))
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
    Ok(Sections {
        vermagic,
        btf: file.section_by_name(".BTF").is_some(),
    })
}

/// What keeps a rebuilt module from standing in for the packaged one.
fn mismatches(name: &str, stock: &Sections, built: &Sections) -> Vec<String> {
    let mut why = Vec::new();
    if built.vermagic != stock.vermagic {
        why.push(format!(
            "{name}: vermagic {:?}, the packaged module's is {:?} (the kernel would refuse it)",
            built.vermagic, stock.vermagic
        ));
    }
    if stock.btf && !built.btf {
        why.push(format!(
            "{name}: no .BTF section, the packaged module has one (pahole missing, or no vmlinux at the tree root)"
        ));
    }
    why
}

/// `out` laid out like `base` (symbolic links), but for the directory
/// `rel` (`kernel/fs/f2fs`), whose modules named in `built` are those
/// files instead. Each rebuilt module is checked against the packaged one
/// it replaces.
fn overlay(base: &Path, out: &Path, rel: &str, built: &BTreeMap<String, PathBuf>) -> Result<()> {
    let stock_dir = base.join(rel);
    let mut replaced = Vec::new();
    let mut kept = Vec::new();
    for entry in std::fs::read_dir(&stock_dir).with_context(|| format!("listing {}", stock_dir.display()))? {
        let path = entry?.path();
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
            .iter()
            .find_map(|ext| file.strip_suffix(ext))
            .map(|n| n.replace('-', "_"));
        match name {
            Some(n) if built.contains_key(&n) => replaced.push((n, path)),
            _ => kept.push(path),
        }
    }
    let mut why = Vec::new();
    for name in built.keys() {
        let Some((_, stock)) = replaced.iter().find(|(n, _)| n == name) else {
            why.push(format!("{name}: the package has no such module under {rel}"));
            continue;
        };
        let stock = sections(&host_module_bytes(stock)?)?;
        let ours = sections(&std::fs::read(&built[name])?)?;
        why.extend(mismatches(name, &stock, &ours));
    }
    if !why.is_empty() {
        bail!(
            "rebuilt modules do not fit the packaged kernel:\n  {}",
            why.join("\n  ")
        );
    }
    // Real folders along `rel`, links beside them.
    let mut from = base.to_owned();
    let mut to = out.to_owned();
    std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
    for part in Path::new(rel).components() {
        let part = part.as_os_str();
        for entry in std::fs::read_dir(&from).with_context(|| format!("listing {}", from.display()))? {
            let entry = entry?;
            if entry.file_name() != part {
                symlink(&entry.path(), &to.join(entry.file_name()))?;
            }
        }
        from = from.join(part);
        to = to.join(part);
        std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
    }
    for path in kept {
        symlink(&path, &to.join(path.file_name().context("nameless file")?))?;
    }
    for (name, file) in built {
        std::fs::copy(file, to.join(format!("{name}.ko"))).with_context(|| format!("placing {name}.ko"))?;
    }
    Ok(())
}

fn symlink(target: &Path, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("linking {} to {}", link.display(), target.display()))
}

/// A packaged module's bytes (`.ko.xz` decompressed).
fn host_module_bytes(path: &Path) -> Result<Vec<u8>> {
    super::modules::read_module(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_f2fs_fix_touches_f2fs_only() {
        let files: Vec<&str> = F2FS_FIX_73
            .patch
            .lines()
            .filter(|l| l.starts_with("+++ "))
            .collect();
        assert_eq!(
            files,
            [
                "+++ b/fs/f2fs/file.c",
                "+++ b/fs/f2fs/node.c",
                "+++ b/fs/f2fs/file.c"
            ]
        );
        assert!(
            F2FS_FIX_73
                .patch
                .contains("\nFixes: a1e09b03e6f5 (\"f2fs: use iomap for direct I/O\")\n")
        );
    }

    /// A patch must stay inside the directory whose modules are rebuilt:
    /// a change elsewhere would be built into no module and go untested.
    #[test]
    fn each_patch_stays_in_its_module_dir() {
        for r in [&F2FS_FIX_73, &BUGGY_61] {
            let files: Vec<&str> = r.patch.lines().filter(|l| l.starts_with("+++ ")).collect();
            assert!(!files.is_empty(), "{}", r.name);
            for f in files {
                assert!(
                    f.starts_with(&format!("+++ b/{}/", r.module_dir)),
                    "{}: {f} is outside {}",
                    r.name,
                    r.module_dir
                );
            }
        }
    }

    #[test]
    fn the_key_covers_every_input() {
        let r = &F2FS_FIX_73;
        let base = r.key("linux-binary-7.3.4+deb13-amd64", "7.3.4-1", "7.3.4-1");
        assert_ne!(
            base,
            r.key("linux-binary-7.3.4+deb13-amd64", "7.3.4-2", "7.3.4-1")
        );
        assert_ne!(
            base,
            r.key("linux-binary-7.3.4+deb13-amd64", "7.3.4-1", "7.3.4-2")
        );
        assert_ne!(
            base,
            r.key("linux-binary-7.3.4+deb13-cloud-amd64", "7.3.4-1", "7.3.4-1")
        );
        let other = Recipe {
            patch: "",
            ..F2FS_FIX_73
        };
        assert_ne!(
            base,
            other.key("linux-binary-7.3.4+deb13-amd64", "7.3.4-1", "7.3.4-1")
        );
        let other = Recipe {
            module_dir: "fs/ext4",
            ..F2FS_FIX_73
        };
        assert_ne!(
            base,
            other.key("linux-binary-7.3.4+deb13-amd64", "7.3.4-1", "7.3.4-1")
        );
    }

    #[test]
    fn source_and_kernel_must_be_one_version() {
        assert_eq!(version_mismatch("7.3.4-1~bpo13+1", "7.3.4-1~bpo13+1"), None);
        assert!(version_mismatch("7.3.4-1~bpo13+1", "7.3.5-1~bpo13+1").is_some());
    }

    #[test]
    fn the_module_directory_options_are_what_must_be_kept() {
        let kconfig = "config F2FS_FS\n\ttristate \"F2FS\"\n\tselect X\nmenuconfig F2FS_FS_COMPRESSION\n\
                       \thelp\n\t  config in help text is indented\n";
        let symbols = kconfig_symbols(kconfig);
        assert_eq!(
            symbols,
            ["F2FS_FS", "F2FS_FS_COMPRESSION", "in help text is indented"]
        );
        let debian = "CONFIG_F2FS_FS=m\n# CONFIG_F2FS_CHECK_FS is not set\nCONFIG_F2FS_FS_COMPRESSION=y\n\
                      CONFIG_RUST=y\nCONFIG_F2FS_FS_LZO=y\n";
        let wanted = own_options(debian, &symbols);
        assert_eq!(wanted, "CONFIG_F2FS_FS=m\nCONFIG_F2FS_FS_COMPRESSION=y\n");
        // The toolchain may drop options elsewhere (Rust); the module's own
        // must stay.
        assert!(unmet(&wanted, "CONFIG_F2FS_FS=m\nCONFIG_F2FS_FS_COMPRESSION=y\n").is_empty());
        assert_eq!(
            unmet(
                &wanted,
                "CONFIG_F2FS_FS=m\n# CONFIG_F2FS_FS_COMPRESSION is not set\n"
            ),
            ["CONFIG_F2FS_FS_COMPRESSION=y"]
        );
    }

    #[test]
    fn a_module_must_match_vermagic_and_keep_btf() {
        let stock = Sections {
            vermagic: Some("7.3.4+deb13-amd64 SMP preempt mod_unload ".into()),
            btf: true,
        };
        let same = Sections {
            vermagic: stock.vermagic.clone(),
            btf: true,
        };
        assert!(mismatches("f2fs", &stock, &same).is_empty());
        let other = Sections {
            vermagic: Some("7.3.4 SMP preempt mod_unload ".into()),
            btf: false,
        };
        let why = mismatches("f2fs", &stock, &other);
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(why[0].contains("vermagic") && why[1].contains(".BTF"), "{why:?}");
    }

    #[test]
    fn the_overlay_replaces_only_the_rebuilt_module() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let base = tmp.path().join("base");
        std::fs::create_dir_all(base.join("kernel/fs/f2fs"))?;
        std::fs::create_dir_all(base.join("kernel/fs/xfs"))?;
        std::fs::create_dir_all(base.join("kernel/drivers"))?;
        std::fs::write(base.join("modules.builtin"), "")?;
        // Not ELF: the check reads them, so use a module-free directory
        // for the replacement and expect the ELF error elsewhere.
        std::fs::write(base.join("kernel/fs/f2fs/other.ko"), b"x")?;
        std::fs::write(base.join("kernel/fs/xfs/xfs.ko"), b"x")?;
        let out = tmp.path().join("out");
        let built = BTreeMap::from([("f2fs".to_owned(), tmp.path().join("f2fs.ko"))]);
        std::fs::write(&built["f2fs"], b"x")?;
        let err = overlay(&base, &out, "kernel/fs/f2fs", &built).unwrap_err();
        assert!(format!("{err:#}").contains("has no such module"), "{err:#}");
        assert!(!out.exists(), "nothing is laid out when a check fails");
        let built = BTreeMap::new();
        overlay(&base, &out, "kernel/fs/f2fs", &built)?;
        assert!(out.join("modules.builtin").is_symlink());
        assert!(out.join("kernel/drivers").is_symlink());
        assert!(out.join("kernel/fs/xfs").is_symlink());
        assert!(!out.join("kernel/fs/f2fs").is_symlink());
        assert!(out.join("kernel/fs/f2fs/other.ko").is_symlink());
        Ok(())
    }
}
