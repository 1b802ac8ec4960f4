//! Struct field offsets from the running kernel's BTF.
//!
//! Rust eBPF gets no CO-RE relocations, so user space does the relocation:
//! each offset the programs read is looked up here by name, through
//! anonymous unions and nested structs, and passed in as a global.
//!
//! ext4's own types (`ext4_inode_info`) live where ext4 does: in
//! `vmlinux` when it is built in, in the module's split BTF
//! (`/sys/kernel/btf/ext4`, 5.11+ with `CONFIG_DEBUG_INFO_BTF_MODULES`)
//! when it is a module, or, on a kernel that publishes no module BTF, in a
//! BTF file the user makes from the debug package (`--btf FILE`, as
//! bpftrace's `BPFTRACE_BTF` and libbpf's `btf_custom_path`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use dio_trace_common::config::Offsets;

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// ext4's module BTF, split on top of vmlinux's.
pub const EXT4_MODULE_BTF: &str = "/sys/kernel/btf/ext4";

/// Where ext4's types came from, for `dio-trace info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ext4Types {
    /// ext4 is built in.
    Vmlinux,
    /// ext4 is a module with its own BTF.
    Module,
    /// A file given with `--btf`.
    File(PathBuf),
}

/// The running kernel's types.
pub struct KernelBtf {
    btf: Btf,
    /// ext4's types when they are not in `btf`: split module BTF (which
    /// also resolves vmlinux's) or a standalone file.
    ext4: Option<Btf>,
    pub ext4_types: Ext4Types,
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
            ext4: None,
            ext4_types: Ext4Types::Vmlinux,
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
            me.ext4 = Some(ext);
            me.ext4_types = Ext4Types::File(path.to_owned());
            me.require_ext4()?;
            return Ok(me);
        }
        if me.named_struct_in(&me.btf, "ext4_inode_info").is_ok() {
            return Ok(me);
        }
        if Path::new(EXT4_MODULE_BTF).exists() {
            let split = Btf::from_split_file(EXT4_MODULE_BTF, &me.btf)
                .with_context(|| format!("cannot read ext4's module BTF at {EXT4_MODULE_BTF}"))?;
            me.ext4 = Some(split);
            me.ext4_types = Ext4Types::Module;
            me.require_ext4()?;
            return Ok(me);
        }
        bail!("{}", missing_ext4_types())
    }

    fn require_ext4(&self) -> Result<()> {
        self.named_struct("ext4_inode_info").map(|_| ()).with_context(|| {
            format!(
                "ext4's types ({:?}) have no struct ext4_inode_info",
                self.ext4_types
            )
        })
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
            ext4_inode_info_vfs_inode: self.offset("ext4_inode_info", "vfs_inode")?,
            ext4_inode_info_i_disksize: self.offset("ext4_inode_info", "i_disksize")?,
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
        })
    }

    /// `struct name` and the BTF it was found in: ext4's types first.
    fn named_struct(&self, name: &str) -> Result<(&Btf, Type)> {
        for btf in self.ext4.iter().chain(std::iter::once(&self.btf)) {
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
         (no {EXT4_MODULE_BTF}; CONFIG_DEBUG_INFO_BTF_MODULES came in 5.11), so the offsets of \
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

    /// Reads this machine's BTF; skipped (loudly) where there is none.
    #[test]
    fn offsets_resolve_on_this_kernel() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("SKIPPED: no {VMLINUX_BTF} on this machine");
            return;
        }
        let btf = KernelBtf::load(None).unwrap();
        let off = btf.offsets().unwrap();
        // Fields that start their structs or follow them closely on every
        // kernel in scope; the rest must at least be distinct and non-zero.
        assert_eq!(off.kiocb_ki_filp, 0);
        assert!(off.inode_i_size > off.inode_i_sb);
        assert!(off.ext4_inode_info_i_disksize > 0);
        assert!(off.dentry_d_name_name > off.dentry_d_parent);
        assert!(btf.offset("inode", "no_such_field").is_err());
        assert!(btf.has_function("iomap_dio_complete"));
        assert!(off.file_f_flags > 0 && off.iomap_dio_size > off.iomap_dio_iocb);
    }

    /// `--btf` takes a standalone BTF file; vmlinux's own is one.
    #[test]
    fn an_external_btf_file_serves_ext4s_types() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("SKIPPED: no {VMLINUX_BTF} on this machine");
            return;
        }
        let btf = KernelBtf::load(Some(Path::new(VMLINUX_BTF))).unwrap();
        assert_eq!(btf.ext4_types, Ext4Types::File(VMLINUX_BTF.into()));
        assert_eq!(
            btf.offsets().unwrap().ext4_inode_info_i_disksize,
            KernelBtf::load(None)
                .unwrap()
                .offsets()
                .unwrap()
                .ext4_inode_info_i_disksize
        );
        let err = KernelBtf::load(Some(Path::new("/etc/hostname"))).err().unwrap();
        assert!(format!("{err:#}").contains("not a BTF file"), "{err:#}");
        let err = KernelBtf::load(Some(Path::new("/nonexistent.btf")))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("no such file"), "{err:#}");
    }
}
