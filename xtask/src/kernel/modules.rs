//! Kernel modules a Debian kernel needs from the initramfs.
//!
//! Debian's cloud kernels build virtio as modules. There is no `depmod`
//! output in the package, so the load order comes from each module's own
//! `depends=` entry in its `.modinfo` section (what `modinfo` prints).
//! Modules listed in `modules.builtin` are part of the kernel and skipped
//! (on 6.12 the virtio core is built in). 6.12 ships `.ko.xz` files: they
//! are decompressed on the host, since busybox `insmod` cannot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use object::{Object as _, ObjectSection as _};

use super::host;

/// Modules needed to see the scratch disk as `/dev/vda`. The disk's
/// filesystem comes on top, and only it: generic kernels build ext4 (and
/// jbd2, mbcache) as modules too, and a guest with an XFS or f2fs disk
/// must never load ext4, as a host running those alone never does.
pub const GUEST: &[&str] = &["virtio_pci", "virtio_blk"];
/// Loaded where they exist: ext4's (and XFS's) checksums need a crc32c
/// driver, f2fs's a crc32 one, which they ask for by name (a soft
/// dependency `depends=` does not list);
/// `nvme` serves `--disk nvme` where it is a module.
pub const GUEST_OPTIONAL: &[&str] = &[
    "crc32c_generic",
    "crc32_generic",
    "nvme",
    "loop",
    "dm_mod",
    "dm_log_writes",
];

/// One module to load: its name and uncompressed bytes.
pub struct Module {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Modules of `dir` (`lib/modules/<release>`) that `wanted` needs, each
/// after the modules it depends on.
pub fn load_order(dir: &Path, wanted: &[&str], optional: &[&str]) -> Result<Vec<Module>> {
    let index = Index::read(dir)?;
    let mut order = Vec::new();
    let mut visiting = BTreeSet::new();
    let present = optional
        .iter()
        .filter(|n| index.files.contains_key(&normalize(n)));
    for name in present.chain(wanted) {
        index.visit(&normalize(name), &mut visiting, &mut order)?;
    }
    Ok(order)
}

/// Module names use `_`; file names may use `-` (`virtio-rng.ko`).
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Module name of a file name: `virtio_blk.ko.xz` -> `virtio_blk`.
fn module_name(file: &str) -> Option<String> {
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
    Some(normalize(stem))
}

/// The module files and built-in names of one `lib/modules/<release>`.
struct Index {
    files: BTreeMap<String, PathBuf>,
    /// `None`: no modules.builtin (a split linux-modules package without
    /// its linux-base): a module that is no file is taken as built in.
    builtin: Option<BTreeSet<String>>,
}

impl Index {
    fn read(dir: &Path) -> Result<Self> {
        let mut files = BTreeMap::new();
        walk(&dir.join("kernel"), &mut |path| {
            if let Some(name) = path.file_name().and_then(|n| module_name(&n.to_string_lossy())) {
                files.insert(name, path.to_owned());
            }
        })?;
        let builtin = std::fs::read_to_string(dir.join("modules.builtin"))
            .ok()
            .map(|text| {
                text.lines()
                    .filter_map(|l| l.rsplit('/').next().and_then(module_name))
                    .collect()
            });
        Ok(Self { files, builtin })
    }

    /// Depth-first: dependencies land in `order` before their users.
    fn visit(&self, name: &str, visiting: &mut BTreeSet<String>, order: &mut Vec<Module>) -> Result<()> {
        let builtin = self.builtin.as_ref().is_some_and(|b| b.contains(name));
        if builtin || order.iter().any(|m| m.name == name) {
            return Ok(());
        }
        if self.builtin.is_none() && !self.files.contains_key(name) {
            host::progress(format_args!(
                "module {name}: no file and no modules.builtin to check; taking it as built in"
            ));
            return Ok(());
        }
        if !visiting.insert(name.to_owned()) {
            bail!("module dependency cycle through {name}");
        }
        let path = self.files.get(name).with_context(|| {
            format!("module {name} is neither a file under kernel/ nor in modules.builtin")
        })?;
        let bytes = read_module(path)?;
        for dep in depends(&bytes).with_context(|| format!("reading .modinfo of {}", path.display()))? {
            self.visit(&dep, visiting, order)
                .with_context(|| format!("{name} depends on {dep}"))?;
        }
        order.push(Module {
            name: name.to_owned(),
            bytes,
        });
        Ok(())
    }
}

/// Calls `f` on every file below `dir`.
pub(super) fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, f)?;
        } else {
            f(&path);
        }
    }
    Ok(())
}

/// A module file's bytes, decompressed if it is `.ko.xz`.
pub(super) fn read_module(path: &Path) -> Result<Vec<u8>> {
    if path.extension().is_some_and(|e| e == "xz") {
        host::ensure_packages(&["xz-utils"])?;
        let out = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .with_context(|| format!("running xz -dc {}", path.display()))?;
        if !out.status.success() {
            bail!(
                "xz -dc {} failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        return Ok(out.stdout);
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The `depends=` list of a module's `.modinfo` section.
fn depends(module: &[u8]) -> Result<Vec<String>> {
    let elf = object::File::parse(module).context("not an ELF file")?;
    let Some(section) = elf.section_by_name(".modinfo") else {
        bail!("no .modinfo section");
    };
    let data = section.data().context("unreadable .modinfo section")?;
    Ok(parse_depends(data))
}

/// `.modinfo` is NUL-separated `key=value` strings.
fn parse_depends(modinfo: &[u8]) -> Vec<String> {
    modinfo
        .split(|b| *b == 0)
        .filter_map(|kv| kv.strip_prefix(b"depends="))
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty())
        .map(|d| normalize(&d))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_are_split() {
        let info = b"license=GPL\0depends=virtio,virtio_ring\0intree=Y\0";
        assert_eq!(parse_depends(info), ["virtio", "virtio_ring"]);
        assert!(parse_depends(b"depends=\0name=virtio_ring\0").is_empty());
    }

    #[test]
    fn names_come_from_files() {
        assert_eq!(module_name("virtio_blk.ko.xz").as_deref(), Some("virtio_blk"));
        assert_eq!(module_name("virtio-rng.ko").as_deref(), Some("virtio_rng"));
        assert_eq!(module_name("modules.order"), None);
    }

    #[test]
    fn missing_module_is_an_error() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("kernel"))?;
        std::fs::write(
            dir.path().join("modules.builtin"),
            "kernel/drivers/virtio/virtio_pci.ko\n",
        )?;
        // Built in: nothing to load.
        assert!(load_order(dir.path(), &["virtio_pci"], &["crc32c_generic"])?.is_empty());
        let err = load_order(dir.path(), &["virtio_blk"], &[])
            .err()
            .context("expected an error")?;
        assert!(format!("{err:#}").contains("virtio_blk"), "{err:#}");
        Ok(())
    }
}
