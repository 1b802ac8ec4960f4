//! Struct field offsets from the running kernel's BTF.
//!
//! Rust eBPF gets no CO-RE relocations, so user space does the relocation:
//! each offset the programs read is looked up here by name, through
//! anonymous unions and nested structs, and passed in as a global.

use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use dio_trace_common::config::Offsets;

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The running kernel's types.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    /// Parse `/sys/kernel/btf/vmlinux`.
    pub fn load() -> Result<Self> {
        Self::from_file(VMLINUX_BTF)
    }

    pub fn from_file(path: &str) -> Result<Self> {
        let btf = Btf::from_file(path).with_context(|| {
            format!("cannot read kernel BTF at {path}: dio-trace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")
        })?;
        Ok(Self { btf })
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
        let mut ty = self.named_struct(name)?;
        let mut total = 0u32;
        let mut parts = path.split('.').peekable();
        while let Some(field) = parts.next() {
            let (bits, member_ty) = self
                .find_member(&ty, field)?
                .ok_or_else(|| anyhow!("struct {name} has no field {path} in this kernel's BTF"))?;
            if bits % 8 != 0 {
                bail!("{name}.{path} is a bitfield; cannot read it");
            }
            total += bits / 8;
            if parts.peek().is_some() {
                ty = self.strip(member_ty)?;
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
            ext4_inode_info_vfs_inode: self
                .offset("ext4_inode_info", "vfs_inode")
                .context("ext4's types are missing from BTF (ext4 built as a module and not loaded?)")?,
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
            inode_i_generation: self.offset("inode", "i_generation")?,
        })
    }

    fn named_struct(&self, name: &str) -> Result<Type> {
        self.btf
            .resolve_types_by_name(name)
            .with_context(|| format!("struct {name} not found in kernel BTF"))?
            .into_iter()
            .find(|t| matches!(t, Type::Struct(_)))
            .ok_or_else(|| anyhow!("struct {name} not found in kernel BTF"))
    }

    /// Follow typedefs and qualifiers to the struct or union underneath.
    fn strip(&self, mut ty: Type) -> Result<Type> {
        for _ in 0..16 {
            match &ty {
                Type::Struct(_) | Type::Union(_) => return Ok(ty),
                Type::Typedef(_)
                | Type::Const(_)
                | Type::Volatile(_)
                | Type::Restrict(_)
                | Type::TypeTag(_) => {
                    let inner = ty.as_btf_type().ok_or_else(|| anyhow!("bad BTF chain"))?;
                    ty = self.btf.resolve_chained_type(inner)?;
                }
                other => bail!("expected a struct, found a BTF {}", other.name()),
            }
        }
        bail!("BTF type chain too long")
    }

    /// Bit offset and type of `field` in `ty`, searching anonymous members.
    fn find_member(&self, ty: &Type, field: &str) -> Result<Option<(u32, Type)>> {
        let members = match ty {
            Type::Struct(s) | Type::Union(s) => &s.members,
            _ => return Ok(None),
        };
        for m in members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            let mty = self.btf.resolve_chained_type(m)?;
            if name == field {
                return Ok(Some((m.bit_offset(), mty)));
            }
            if name.is_empty() {
                let inner = self.strip(mty)?;
                if let Some((bits, t)) = self.find_member(&inner, field)? {
                    return Ok(Some((m.bit_offset() + bits, t)));
                }
            }
        }
        Ok(None)
    }
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
        let btf = KernelBtf::load().unwrap();
        let off = btf.offsets().unwrap();
        // Fields that start their structs or follow them closely on every
        // kernel in scope; the rest must at least be distinct and non-zero.
        assert_eq!(off.kiocb_ki_filp, 0);
        assert!(off.inode_i_size > off.inode_i_sb);
        assert!(off.ext4_inode_info_i_disksize > 0);
        assert!(off.dentry_d_name_name > off.dentry_d_parent);
        assert!(btf.offset("inode", "no_such_field").is_err());
        assert!(btf.has_function("iomap_dio_complete"));
    }
}
