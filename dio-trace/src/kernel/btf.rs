//! Struct field offsets from the running kernel's BTF.
//!
//! Rust eBPF gets no CO-RE relocations, so user space does the relocation:
//! each offset the programs read is looked up here by name, through
//! anonymous unions and nested structs, and passed in as a global.
//!
//! A filesystem's own types (`ext4_inode_info`, `xfs_inode`) live where
//! the filesystem does: in `vmlinux` when it is built in, in the module's
//! split BTF (`/sys/kernel/btf/ext4`, 5.11+ with
//! `CONFIG_DEBUG_INFO_BTF_MODULES`) when it is a module, or, on a kernel
//! that publishes no module BTF, in a BTF file the user makes from the
//! debug package (`--btf FILE`, as bpftrace's `BPFTRACE_BTF` and libbpf's
//! `btf_custom_path`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use dio_trace_common::{
    config::{FS_DISK_SIZE_IS_I_SIZE, FS_KNOWN, FsFacts, Offsets},
    fs::Fs,
};

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// Where a module's BTF is, split on top of vmlinux's.
pub fn module_btf(module: &str) -> PathBuf {
    Path::new("/sys/kernel/btf").join(module)
}

/// Where a filesystem's types came from, for `dio-trace info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Types {
    /// Built in.
    Vmlinux,
    /// A module with its own BTF.
    Module,
    /// A file given with `--btf`.
    File(PathBuf),
}

/// One filesystem's facts for the programs, or why there are none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsStatus {
    pub fs: Fs,
    pub facts: FsFacts,
    /// Where its types came from, or why its facts are missing.
    pub source: Result<Types, String>,
}

/// The running kernel's types.
pub struct KernelBtf {
    btf: Btf,
    /// Filesystem types that are not in `btf`: split module BTF (which
    /// also resolves vmlinux's) or the `--btf` file, searched first.
    extra: Vec<(Types, Btf)>,
    pub ext4_types: Types,
}

impl KernelBtf {
    /// Parse `/sys/kernel/btf/vmlinux`, and ext4's types from wherever
    /// they are: `external` (`--btf`) first, then vmlinux, then the module.
    pub fn load(external: Option<&Path>) -> Result<Self> {
        let btf = Btf::from_file(VMLINUX_BTF).with_context(|| {
            format!("cannot read kernel BTF at {VMLINUX_BTF}: dio-trace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")
        })?;
        let mut me = Self {
            btf,
            extra: Vec::new(),
            ext4_types: Types::Vmlinux,
        };
        if let Some(path) = external {
            if !path.is_file() {
                bail!("--btf {}: no such file", path.display());
            }
            let ext = Btf::from_file(path)
                .or_else(|_| Btf::from_split_file(path, &me.btf))
                .with_context(|| {
                    format!(
                        "--btf {}: not a BTF file (raw BTF, as `pahole --btf_encode_detached` writes)",
                        path.display()
                    )
                })?;
            me.extra.push((Types::File(path.to_owned()), ext));
        }
        // Filesystem modules with their own BTF (the ones loaded now).
        for fs in Fs::ALL {
            let path = module_btf(fs.name());
            if path.exists() {
                let split = Btf::from_split_file(&path, &me.btf).with_context(|| {
                    format!("cannot read {}'s module BTF at {}", fs.name(), path.display())
                })?;
                me.extra.push((Types::Module, split));
            }
        }
        me.ext4_types = match (me.named_struct_from("ext4_inode_info"), external) {
            (Some(types), _) => types,
            (None, Some(path)) => bail!("--btf {}: it has no struct ext4_inode_info", path.display()),
            (None, None) => bail!("{}", missing_ext4_types()),
        };
        Ok(me)
    }

    /// Where `struct name` is found.
    fn named_struct_from(&self, name: &str) -> Option<Types> {
        // --btf first, as for offsets; then vmlinux before the modules,
        // whose split BTF resolves vmlinux's types too.
        let found = |(t, btf): &&(Types, Btf)| self.named_struct_in(btf, name).is_ok().then(|| t.clone());
        let mut extra = self.extra.iter();
        extra
            .clone()
            .filter(|(t, _)| matches!(t, Types::File(_)))
            .find_map(|e| found(&e))
            .or_else(|| {
                self.named_struct_in(&self.btf, name)
                    .is_ok()
                    .then_some(Types::Vmlinux)
            })
            .or_else(|| extra.find_map(|e| found(&e)))
    }

    /// Each filesystem's facts: where its on-disk size lives.
    pub fn fs_facts(&self) -> Vec<FsStatus> {
        Fs::ALL.iter().map(|&fs| self.fs_status(fs)).collect()
    }

    fn fs_status(&self, fs: Fs) -> FsStatus {
        let known = |vfs_inode, disk_size, flags, source| FsStatus {
            fs,
            facts: FsFacts {
                flags: FS_KNOWN | flags,
                vfs_inode,
                disk_size,
                _pad: 0,
            },
            source: Ok(source),
        };
        let missing = |why: String| FsStatus {
            fs,
            facts: FsFacts::default(),
            source: Err(why),
        };
        match fs {
            Fs::Ext4 => match (
                self.offset("ext4_inode_info", "vfs_inode"),
                self.offset("ext4_inode_info", "i_disksize"),
            ) {
                (Ok(v), Ok(d)) => known(v, d, 0, self.ext4_types.clone()),
                (Err(e), _) | (_, Err(e)) => missing(format!("{e:#}")),
            },
            Fs::Xfs => {
                let Some(types) = self.named_struct_from("xfs_inode") else {
                    return missing(missing_module_types("xfs", "struct xfs_inode"));
                };
                // i_disk_size since 5.13; before, the on-disk copy i_d.di_size.
                let disk = self
                    .offset("xfs_inode", "i_disk_size")
                    .or_else(|_| self.offset("xfs_inode", "i_d.di_size"));
                match (self.offset("xfs_inode", "i_vnode"), disk) {
                    (Ok(v), Ok(d)) => known(v, d, 0, types),
                    (Err(e), _) | (_, Err(e)) => missing(format!("{e:#}")),
                }
            }
            // f2fs writes the VFS i_size into the node page at the sync:
            // nothing of its own to read.
            Fs::F2fs => known(0, 0, FS_DISK_SIZE_IS_I_SIZE, Types::Vmlinux),
        }
    }

    /// Does a function of this name exist (as BTF `FUNC`)?
    pub fn has_function(&self, name: &str) -> bool {
        self.btf
            .resolve_types_by_name(name)
            .map(|ts| ts.iter().any(|t| matches!(t, Type::Func(_))))
            .unwrap_or(false)
    }

    /// Byte offset of `path` (dot-separated, e.g. `f_path.dentry`) in `struct name`.
    pub fn offset(&self, name: &str, path: &str) -> Result<u32> {
        let (btf, mut ty) = self.named_struct(name)?;
        let mut total = 0u32;
        let mut parts = path.split('.').peekable();
        while let Some(field) = parts.next() {
            let (bits, member_ty) = find_member(btf, &ty, field)?
                .ok_or_else(|| anyhow!("struct {name} has no field {path} in this kernel's BTF"))?;
            if bits % 8 != 0 {
                bail!("{name}.{path} is a bitfield; cannot read it");
            }
            total += bits / 8;
            if parts.peek().is_some() {
                ty = strip(btf, member_ty)?;
            }
        }
        Ok(total)
    }

    /// The offsets every program needs.
    pub fn offsets(&self) -> Result<Offsets> {
        Ok(Offsets {
            kiocb_ki_filp: self.offset("kiocb", "ki_filp")?,
            kiocb_ki_pos: self.offset("kiocb", "ki_pos")?,
            kiocb_ki_flags: self.offset("kiocb", "ki_flags")?,
            iov_iter_count: self.offset("iov_iter", "count")?,
            file_f_inode: self.offset("file", "f_inode")?,
            file_f_path_dentry: self.offset("file", "f_path.dentry")?,
            inode_i_sb: self.offset("inode", "i_sb")?,
            inode_i_ino: self.offset("inode", "i_ino")?,
            inode_i_size: self.offset("inode", "i_size")?,
            super_block_s_dev: self.offset("super_block", "s_dev")?,
            super_block_s_type: self.offset("super_block", "s_type")?,
            dentry_d_parent: self.offset("dentry", "d_parent")?,
            dentry_d_name_name: self.offset("dentry", "d_name.name")?,
            task_struct_pid: self.offset("task_struct", "pid")?,
            file_system_type_name: self.offset("file_system_type", "name")?,
            iov_iter_dir: self
                .offset("iov_iter", "data_source")
                .or_else(|_| self.offset("iov_iter", "type"))?,
            // Private to fs/iomap/direct-io.c but in vmlinux BTF when iomap is
            // built in (always, when ext4 is). Only fentry/kprobe need it.
            iomap_dio_iocb: self.offset("iomap_dio", "iocb").unwrap_or(0),
            // 0: unknown, and the completion leaves the write's position as
            // its start said (`settle` in complete.rs).
            iomap_dio_size: self.offset("iomap_dio", "size").unwrap_or(0),
            inode_i_generation: self.offset("inode", "i_generation")?,
            file_f_flags: self.offset("file", "f_flags")?,
            iomap_offset: self.offset("iomap", "offset")?,
            iomap_length: self.offset("iomap", "length")?,
            iomap_type: self.offset("iomap", "type")?,
            iomap_flags: self.offset("iomap", "flags")?,
            // 0: no iomap_iter (before 5.15); its hooks then do not load.
            iomap_iter_inode: self.offset("iomap_iter", "inode").unwrap_or(0),
            iomap_iter_iomap: self.offset("iomap_iter", "iomap").unwrap_or(0),
        })
    }

    /// `struct name` and the BTF it was found in: modules' and `--btf`'s first.
    fn named_struct(&self, name: &str) -> Result<(&Btf, Type)> {
        for btf in self
            .extra
            .iter()
            .map(|(_, b)| b)
            .chain(std::iter::once(&self.btf))
        {
            if let Ok(ty) = self.named_struct_in(btf, name) {
                return Ok((btf, ty));
            }
        }
        Err(anyhow!("struct {name} not found in kernel BTF"))
    }

    fn named_struct_in(&self, btf: &Btf, name: &str) -> Result<Type> {
        btf.resolve_types_by_name(name)
            .with_context(|| format!("struct {name} not found in kernel BTF"))?
            .into_iter()
            .find(|t| matches!(t, Type::Struct(_)))
            .ok_or_else(|| anyhow!("struct {name} not found in kernel BTF"))
    }
}

/// Why a module filesystem's types are missing (not fatal: its writes are
/// then counted and reported, never judged).
fn missing_module_types(module: &str, what: &str) -> String {
    if !Path::new("/sys/module").join(module).exists() {
        return format!(
            "{module} was not loaded when dio-trace started, so {what} is not in BTF: mount it (or `modprobe {module}`) first"
        );
    }
    format!(
        "{module} is a module and the kernel publishes no BTF for it (no {}), so {what} cannot be read; \
         give its types with --btf (made with `pahole --btf_encode_detached` from the -dbg package's {module}.ko)",
        module_btf(module).display()
    )
}

/// Why ext4's types cannot be had, and how to get them.
fn missing_ext4_types() -> String {
    let release = super::release();
    if !Path::new("/sys/module/ext4").exists() {
        return format!(
            "ext4 is a module on this kernel ({release}) and it is not loaded, so its types are not in BTF: \
             mount an ext4 filesystem (or `modprobe ext4`) and run again"
        );
    }
    format!(
        "ext4 is a module on this kernel ({release}) and the kernel publishes no BTF for modules \
         (no /sys/kernel/btf/ext4; CONFIG_DEBUG_INFO_BTF_MODULES came in 5.11), so the offsets of \
         struct ext4_inode_info (i_disksize, the size a crash leaves) cannot be read. Give dio-trace \
         ext4's types with --btf FILE, made from the kernel's debug package: \
         `apt-get install linux-image-{release}-dbg dwarves && pahole --btf_encode_detached=ext4.btf \
         /usr/lib/debug/lib/modules/{release}/kernel/fs/ext4/ext4.ko`, then `dio-trace ... --btf ext4.btf`"
    )
}

/// Follow typedefs and qualifiers to the struct or union underneath.
fn strip(btf: &Btf, mut ty: Type) -> Result<Type> {
    for _ in 0..16 {
        match &ty {
            Type::Struct(_) | Type::Union(_) => return Ok(ty),
            Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::Restrict(_) | Type::TypeTag(_) => {
                let inner = ty.as_btf_type().ok_or_else(|| anyhow!("bad BTF chain"))?;
                ty = btf.resolve_chained_type(inner)?;
            }
            other => bail!("expected a struct, found a BTF {}", other.name()),
        }
    }
    bail!("BTF type chain too long")
}

/// Bit offset and type of `field` in `ty`, searching anonymous members.
fn find_member(btf: &Btf, ty: &Type, field: &str) -> Result<Option<(u32, Type)>> {
    let members = match ty {
        Type::Struct(s) | Type::Union(s) => &s.members,
        _ => return Ok(None),
    };
    for m in members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let mty = btf.resolve_chained_type(m)?;
        if name == field {
            return Ok(Some((m.bit_offset(), mty)));
        }
        if name.is_empty() {
            let inner = strip(btf, mty)?;
            if let Some((bits, t)) = find_member(btf, &inner, field)? {
                return Ok(Some((m.bit_offset() + bits, t)));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dio_trace_common::fs::FS_SLOTS;

    /// Reads this machine's BTF; skipped (loudly) where there is none.
    #[test]
    fn offsets_resolve_on_this_kernel() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            return super::super::skip_or_fail("offsets", &format!("no {VMLINUX_BTF} on this machine"));
        }
        let btf = KernelBtf::load(None).unwrap();
        let off = btf.offsets().unwrap();
        // Fields that start their structs or follow them closely on every
        // kernel in scope; the rest must at least be distinct and non-zero.
        assert_eq!(off.kiocb_ki_filp, 0);
        assert!(off.inode_i_size > off.inode_i_sb);
        let fs = btf.fs_facts();
        assert!(fs[Fs::Ext4.slot()].facts.disk_size > 0);
        assert_eq!(fs.len(), FS_SLOTS);
        assert!(off.dentry_d_name_name > off.dentry_d_parent);
        assert!(btf.offset("inode", "no_such_field").is_err());
        assert!(btf.has_function("iomap_dio_complete"));
        assert!(off.file_f_flags > 0 && off.iomap_dio_size > off.iomap_dio_iocb);
        assert!(off.iomap_flags > off.iomap_type && off.iomap_type > off.iomap_length);
        assert!(off.iomap_iter_iomap > off.iomap_iter_inode);
    }

    /// `--btf` takes a standalone BTF file; vmlinux's own is one.
    #[test]
    fn an_external_btf_file_serves_ext4s_types() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            return super::super::skip_or_fail("external BTF", &format!("no {VMLINUX_BTF} on this machine"));
        }
        let btf = KernelBtf::load(Some(Path::new(VMLINUX_BTF))).unwrap();
        assert_eq!(btf.ext4_types, Types::File(VMLINUX_BTF.into()));
        let disk = |b: &KernelBtf| b.fs_facts()[Fs::Ext4.slot()].facts.disk_size;
        assert_eq!(disk(&btf), disk(&KernelBtf::load(None).unwrap()));
        let err = KernelBtf::load(Some(Path::new("/etc/hostname"))).err().unwrap();
        assert!(format!("{err:#}").contains("not a BTF file"), "{err:#}");
        let err = KernelBtf::load(Some(Path::new("/nonexistent.btf")))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("no such file"), "{err:#}");
    }
}
