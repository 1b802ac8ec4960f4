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
//!
//! A filesystem whose types are nowhere (a module not loaded, or loaded on
//! a kernel without module BTF) is no reason to refuse the others: its
//! facts are missing, with the reason ([`fs_status`]), and only its own
//! writes go unjudged. A generic distribution kernel running f2fs or XFS
//! alone never loads ext4.

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
}

impl KernelBtf {
    /// Parse `/sys/kernel/btf/vmlinux`, `external` (`--btf`, which must
    /// hold a filesystem's types) and the split BTF of every filesystem
    /// module loaded now. A filesystem whose types are in none of them is
    /// no error here: [`Self::fs_facts`] says why, and only its own writes
    /// go unjudged.
    pub fn load(external: Option<&Path>) -> Result<Self> {
        let btf = Btf::from_file(VMLINUX_BTF).with_context(|| {
            format!("cannot read kernel BTF at {VMLINUX_BTF}: dio-trace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")
        })?;
        let mut me = Self {
            btf,
            extra: Vec::new(),
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
            let inodes: Vec<&str> = Fs::ALL.into_iter().filter_map(layout).map(|l| l.inode).collect();
            if !inodes.iter().any(|i| me.named_struct_in(&ext, i).is_ok()) {
                bail!(
                    "--btf {}: it has none of the filesystem types dio-trace reads (struct {})",
                    path.display(),
                    inodes.join(", struct ")
                );
            }
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

    /// Each filesystem's facts: where its on-disk size lives, or why that
    /// cannot be known. Where `/proc/filesystems` cannot be read, every
    /// filesystem is taken as registered and BTF alone decides.
    pub fn fs_facts(&self) -> Vec<FsStatus> {
        let registered = std::fs::read_to_string("/proc/filesystems")
            .ok()
            .map(|t| parse_filesystems(&t));
        let release = super::release();
        Fs::ALL
            .iter()
            .map(|&fs| {
                let has = registered
                    .as_ref()
                    .is_none_or(|r| r.iter().any(|n| n == fs.name()));
                fs_status(fs, self, has, &release)
            })
            .collect()
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
            task_struct_journal_info: self.offset("task_struct", "journal_info")?,
            // f2fs's own struct: in its module's BTF where f2fs is loaded.
            f2fs_sb_fsync_seg_id: self.offset("f2fs_sb_info", "fsync_seg_id").unwrap_or(0),
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

impl TypeLookup for KernelBtf {
    fn struct_source(&self, name: &str) -> Option<Types> {
        self.named_struct_from(name)
    }

    fn field_offset(&self, name: &str, path: &str) -> Result<u32> {
        self.offset(name, path)
    }
}

impl FsStatus {
    /// Why this filesystem's writes cannot be judged, as reports say it;
    /// `None` when they can.
    pub fn missing(&self) -> Option<String> {
        self.source
            .as_ref()
            .err()
            .map(|why| format!("{}'s facts are missing: {why}", self.fs.name()))
    }
}

/// Where a filesystem keeps the size a crash leaves: its own inode struct,
/// the VFS inode inside it, and the on-disk size field (alternatives in
/// order: the field was renamed).
struct Layout {
    inode: &'static str,
    vfs_inode: &'static str,
    disk_size: &'static [&'static str],
}

/// `None`: nothing of its own to read.
fn layout(fs: Fs) -> Option<Layout> {
    match fs {
        Fs::Ext4 => Some(Layout {
            inode: "ext4_inode_info",
            vfs_inode: "vfs_inode",
            disk_size: &["i_disksize"],
        }),
        // i_disk_size since 5.13; before, the on-disk copy i_d.di_size.
        Fs::Xfs => Some(Layout {
            inode: "xfs_inode",
            vfs_inode: "i_vnode",
            disk_size: &["i_disk_size", "i_d.di_size"],
        }),
        // f2fs writes the VFS i_size into the node page at the sync, and
        // btrfs into its tree log (`Fs::sync_logs_size`).
        Fs::F2fs | Fs::Btrfs => None,
    }
}

/// The type lookups a filesystem's facts rest on: the running kernel's
/// BTF ([`KernelBtf`]), or a fake kernel in tests.
pub trait TypeLookup {
    /// Where `struct name` is, if anywhere.
    fn struct_source(&self, name: &str) -> Option<Types>;
    /// Byte offset of `path` (dot-separated) in `struct name`.
    fn field_offset(&self, name: &str, path: &str) -> Result<u32>;
}

/// One filesystem's facts, or why there are none. `registered`: the
/// kernel has the filesystem now (`/proc/filesystems`: built in, or its
/// module loaded). One that is not has neither types nor functions to
/// probe, and a module loaded later is not picked up: its writes are
/// counted and never judged, with this reason (`Counter::NoFsFacts`).
/// Only a run that names the filesystem (`--path`, `--dev`) is refused.
pub fn fs_status(fs: Fs, types: &dyn TypeLookup, registered: bool, release: &str) -> FsStatus {
    let missing = |why: String| FsStatus {
        fs,
        facts: FsFacts::default(),
        source: Err(why),
    };
    let name = fs.name();
    if !registered {
        return missing(format!(
            "{name} is not in /proc/filesystems on this kernel ({release}): it is a module and was not loaded \
             when dio-trace started (or the kernel lacks it), so neither its types nor its functions were there \
             to read and probe; to judge its writes, load it (`modprobe {name}`, or mount a filesystem of that \
             type) and start dio-trace again"
        ));
    }
    let Some(l) = layout(fs) else {
        return FsStatus {
            fs,
            facts: FsFacts {
                flags: FS_KNOWN | FS_DISK_SIZE_IS_I_SIZE,
                ..FsFacts::default()
            },
            source: Ok(Types::Vmlinux),
        };
    };
    let Some(source) = types.struct_source(l.inode) else {
        return missing(no_module_btf(fs, l.inode, release));
    };
    let disk = l
        .disk_size
        .iter()
        .map(|f| types.field_offset(l.inode, f))
        .reduce(|a, b| a.or(b))
        .unwrap_or_else(|| Err(anyhow!("no on-disk size field named for {name}")));
    match (types.field_offset(l.inode, l.vfs_inode), disk) {
        (Ok(vfs_inode), Ok(disk_size)) => FsStatus {
            fs,
            facts: FsFacts {
                flags: FS_KNOWN,
                vfs_inode,
                disk_size,
                _pad: 0,
            },
            source: Ok(source),
        },
        (Err(e), _) | (_, Err(e)) => missing(format!("{e:#}")),
    }
}

/// Why a registered filesystem's own struct is not in BTF (a module on a
/// kernel that publishes no module BTF), and how to get it.
fn no_module_btf(fs: Fs, inode: &str, release: &str) -> String {
    let name = fs.name();
    format!(
        "{name} is a module on this kernel ({release}) and the kernel publishes no BTF for modules \
         (no {}; CONFIG_DEBUG_INFO_BTF_MODULES came in 5.11), so the offsets of struct {inode} \
         ({}, the size a crash leaves) cannot be read. Give dio-trace {name}'s types with --btf FILE, \
         made from the kernel's debug package: `apt-get install linux-image-{release}-dbg dwarves && \
         pahole --btf_encode_detached={name}.btf /usr/lib/debug/lib/modules/{release}/kernel/fs/{name}/{name}.ko`, \
         then `dio-trace ... --btf {name}.btf`",
        module_btf(name).display(),
        fs.disk_size_field()
    )
}

/// The filesystem names of `/proc/filesystems` (`nodev\tproc`, `\text4`).
pub fn parse_filesystems(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(str::to_owned)
        .collect()
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

    /// A struct of a faked kernel: name, where it is, fields' offsets.
    type FakeStruct = (&'static str, Types, &'static [(&'static str, u32)]);
    /// A faked kernel: the structs it has.
    struct Fake(&'static [FakeStruct]);

    impl TypeLookup for Fake {
        fn struct_source(&self, name: &str) -> Option<Types> {
            self.0
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, t, _)| t.clone())
        }
        fn field_offset(&self, name: &str, path: &str) -> Result<u32> {
            let (_, _, fields) = self
                .0
                .iter()
                .find(|(n, _, _)| *n == name)
                .ok_or_else(|| anyhow!("struct {name} not found in kernel BTF"))?;
            fields
                .iter()
                .find(|(f, _)| *f == path)
                .map(|(_, o)| *o)
                .ok_or_else(|| anyhow!("struct {name} has no field {path} in this kernel's BTF"))
        }
    }

    /// Debian 6.1 generic with only XFS loaded: ext4 and f2fs are modules
    /// nobody loaded.
    const XFS_ONLY: Fake = Fake(&[(
        "xfs_inode",
        Types::Module,
        &[("i_vnode", 256), ("i_disk_size", 24)],
    )]);

    #[test]
    fn a_filesystem_not_loaded_is_missing_and_says_how_to_load_it() {
        let st = fs_status(Fs::Ext4, &XFS_ONLY, false, "6.1.0-44-amd64");
        assert_eq!(st.facts, FsFacts::default(), "its writes go unjudged");
        let why = st.missing().unwrap();
        assert!(
            why.starts_with("ext4's facts are missing: ext4 is not in /proc/filesystems"),
            "{why}"
        );
        assert!(
            why.contains("6.1.0-44-amd64") && why.contains("`modprobe ext4`"),
            "{why}"
        );
        // f2fs has nothing of its own to read, but no functions to probe either.
        let st = fs_status(Fs::F2fs, &XFS_ONLY, false, "6.1.0-44-amd64");
        assert_eq!(st.facts.flags, 0);
        assert!(st.missing().unwrap().contains("`modprobe f2fs`"));
        // The loaded one is judged.
        let st = fs_status(Fs::Xfs, &XFS_ONLY, true, "6.1.0-44-amd64");
        assert_eq!(
            (st.facts.flags, st.facts.vfs_inode, st.facts.disk_size),
            (FS_KNOWN, 256, 24)
        );
        assert_eq!((st.missing(), st.source), (None, Ok(Types::Module)));
    }

    #[test]
    fn a_loaded_module_without_btf_asks_for_its_types() {
        // Debian 5.10 generic: ext4 loaded, no /sys/kernel/btf/ext4.
        let st = fs_status(Fs::Ext4, &Fake(&[]), true, "5.10.0-30-amd64");
        assert_eq!(st.facts.flags, 0);
        let why = st.missing().unwrap();
        assert!(
            why.contains("--btf") && why.contains("kernel/fs/ext4/ext4.ko"),
            "{why}"
        );
        let st = fs_status(Fs::Xfs, &Fake(&[]), true, "5.10.0-30-amd64");
        assert!(st.missing().unwrap().contains("kernel/fs/xfs/xfs.ko"));
        // A registered f2fs is always judged: the size is the VFS i_size.
        let st = fs_status(Fs::F2fs, &Fake(&[]), true, "5.10.0-30-amd64");
        assert_eq!(st.facts.flags, FS_KNOWN | FS_DISK_SIZE_IS_I_SIZE);
    }

    #[test]
    fn renamed_and_missing_fields() {
        // Before 5.13 XFS's on-disk size is i_d.di_size.
        let old = Fake(&[(
            "xfs_inode",
            Types::Vmlinux,
            &[("i_vnode", 200), ("i_d.di_size", 72)],
        )]);
        assert_eq!(fs_status(Fs::Xfs, &old, true, "5.10").facts.disk_size, 72);
        let odd = Fake(&[("ext4_inode_info", Types::Vmlinux, &[("vfs_inode", 400)])]);
        let why = fs_status(Fs::Ext4, &odd, true, "9.9").missing().unwrap();
        assert!(why.contains("no field i_disksize"), "{why}");
    }

    #[test]
    fn proc_filesystems_parses() {
        let text = "nodev\tsysfs\nnodev\tproc\n\text4\n\tf2fs\nnodev\tbpf\n";
        assert_eq!(parse_filesystems(text), ["sysfs", "proc", "ext4", "f2fs", "bpf"]);
    }

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
        assert_eq!(
            btf.struct_source("ext4_inode_info"),
            Some(Types::File(VMLINUX_BTF.into()))
        );
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
