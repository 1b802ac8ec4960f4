//! What the loader writes into the kernel programs before they load.
//!
//! Rust eBPF gets no CO-RE relocations, so every struct field offset the
//! programs need is read from the running kernel's BTF in user space and
//! handed over here. Nothing in the kernel programs hard-codes an offset.

use crate::fs::FS_SLOTS;

/// Byte offsets of the kernel struct fields the programs read.
///
/// Nested members are flattened: `file_f_path_dentry` is
/// `offsetof(struct file, f_path) + offsetof(struct path, dentry)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    pub kiocb_ki_filp: u32,
    pub kiocb_ki_pos: u32,
    pub kiocb_ki_flags: u32,
    pub iov_iter_count: u32,
    pub file_f_inode: u32,
    pub file_f_path_dentry: u32,
    pub inode_i_sb: u32,
    pub inode_i_ino: u32,
    pub inode_i_size: u32,
    pub super_block_s_dev: u32,
    pub super_block_s_type: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_name_name: u32,
    pub task_struct_pid: u32,
    pub file_system_type_name: u32,
    /// Byte of `struct iov_iter` that holds the direction: `data_source`
    /// (5.14+), or the low byte of `type` before that.
    pub iov_iter_dir: u32,
    /// `struct iomap_dio.iocb`, for fentry/kprobe on `iomap_dio_complete`.
    pub iomap_dio_iocb: u32,
    /// `inode.i_generation`: tells a reused inode number from its old file.
    pub inode_i_generation: u32,
    /// `struct iomap_dio.size`: the bytes the write really submitted.
    pub iomap_dio_size: u32,
    /// `file.f_flags`: the open flags, whose values are UAPI (stable), so
    /// they check which `ki_flags` layout the kernel uses.
    pub file_f_flags: u32,
    /// `struct iomap`'s `offset`, `length`, `type` (u16) and `flags`
    /// (u16): the mapping a direct write goes into (`new_extent` probe).
    pub iomap_offset: u32,
    pub iomap_length: u32,
    pub iomap_type: u32,
    pub iomap_flags: u32,
    /// `struct iomap_iter`'s `inode` and `iomap` (5.15+; 0 before), for
    /// kprobe/fexit on `iomap_iter`.
    pub iomap_iter_inode: u32,
    pub iomap_iter_iomap: u32,
    /// `task_struct.journal_info`, where btrfs before 5.16 leaves a stub
    /// while it writes a sync direct write with `IOCB_DSYNC` taken off.
    /// 0 on later kernels, which never do (the loader's choice): the write
    /// start then skips the read.
    pub task_struct_journal_info: u32,
    /// `f2fs_sb_info.fsync_seg_id`, the last number f2fs gave a node page
    /// (f2fs's BTF; 0: unknown, and no f2fs sync counts as having waited
    /// for every numbered page).
    pub f2fs_sb_fsync_seg_id: u32,
}
const _: () = assert!(core::mem::size_of::<Offsets>() == 112);

/// Where one filesystem keeps the size a crash leaves, read from the
/// running kernel's BTF (vmlinux, the module's split BTF, or `--btf`).
/// One per [`crate::fs::Fs`] slot in [`Config::fs`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsFacts {
    /// `FS_*` bits; 0: nothing known, its writes are counted
    /// (`Counter::NoFsFacts`) and never judged.
    pub flags: u32,
    /// Offset of the VFS `struct inode` inside the filesystem's own inode
    /// (`ext4_inode_info.vfs_inode`, `xfs_inode.i_vnode`).
    pub vfs_inode: u32,
    /// Offset of the on-disk size in the filesystem's own inode
    /// (`ext4_inode_info.i_disksize`, `xfs_inode.i_disk_size`); unused with
    /// [`FS_DISK_SIZE_IS_I_SIZE`].
    pub disk_size: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FsFacts>() == 16);

/// The loader read this filesystem's facts: its writes can be judged.
pub const FS_KNOWN: u32 = 1 << 0;
/// The size a sync makes durable is the VFS `i_size` the sync finds
/// (f2fs: `f2fs_update_inode` copies it into the node page it writes).
pub const FS_DISK_SIZE_IS_I_SIZE: u32 = 1 << 1;

/// Bit values of `kiocb.ki_flags` in one layout. They moved with "fs:
/// align IOCB_* flags with RWF_* flags" (5.19 upstream, and backported to
/// some distribution kernels: Debian's 5.10.218 has it), so neither the
/// version nor memory can say which layout a kernel has: the programs pick,
/// per write, the candidate the kernel's own flags agree with ([`Config::iocb`]).
///
/// The direction is not among them: `IOCB_WRITE` is not set on every write
/// path (plain `pwrite` on 6.18 lacks it), so writes are told from reads by
/// the `iov_iter` (`Offsets::iov_iter_dir`, `dir_mask`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IocbBits {
    pub direct: u32,
    /// Mask for the `iov_iter` direction byte: 1 means "data source" (write).
    pub dir_mask: u32,
    pub dsync: u32,
    pub sync: u32,
    /// `IOCB_APPEND`: the kernel moves the write to the end of the file
    /// after a probe at a filesystem's `write_iter` entry has run.
    pub append: u32,
}
const _: () = assert!(core::mem::size_of::<IocbBits>() == 20);

/// How many `ki_flags` layouts the programs can choose from.
pub const IOCB_LAYOUTS: usize = 2;

/// UAPI open-flag values (`O_DIRECT`, `O_DSYNC`, `__O_SYNC`) of the
/// architecture, from user space's libc: the kernel sets `IOCB_DIRECT`,
/// `IOCB_DSYNC` and `IOCB_SYNC` from exactly these `f_flags` bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenFlags {
    pub direct: u32,
    pub dsync: u32,
    pub sync: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<OpenFlags>() == 16);

/// Kernel-side filters: a write that fails one is counted, never sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// 1: only tasks whose process id is in the `FOLLOW` map (and their
    /// children, added on fork).
    pub follow: u32,
    /// Kernel `dev_t` to keep, 0 for any.
    pub dev: u32,
    /// Bytes of `comm` to compare, 0 for any.
    pub comm_len: u32,
    /// Bit `n` set: keep tasks whose cgroup v2 ancestor at level `n` (the
    /// root is level 0) is in the `CGROUPS` map. 0 keeps every cgroup.
    /// The levels of the `--cgroup` directories: each costs a helper call
    /// and a lookup per direct write, so only those levels are tried.
    pub cgroup_levels: u32,
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<Filter>() == 32);

/// Everything the loader sets, in one global (`DIO_CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub offsets: Offsets,
    /// Per filesystem, by [`crate::fs::Fs::slot`].
    pub fs: [FsFacts; FS_SLOTS],
    /// Candidate `ki_flags` layouts, in the order the programs try them. A
    /// write's layout is the first whose `direct` bit is set and whose sync
    /// bits agree with the file's open flags; a write no candidate fits is
    /// counted (`Counter::FlagsUnknown`), never guessed. One known layout
    /// (from a tracepoint format) is given twice.
    pub iocb: [IocbBits; IOCB_LAYOUTS],
    pub open: OpenFlags,
    pub filter: Filter,
    /// `CONFIG_*` bits.
    pub flags: u32,
    /// Wake user space once this many bytes wait in the ring buffer. Below
    /// it records wait for user space's next poll (every 100 ms): a wake-up
    /// per record would cost more than the record (an IPI, in a VM a VM exit).
    pub wake_bytes: u32,
}
const _: () = assert!(core::mem::size_of::<Config>() == 208 + 16 * FS_SLOTS);

/// Send every event of a counted write (all `mark_inode_dirty` calls, sync
/// exits, completion entries), not only the ones the verdict rests on.
pub const CONFIG_FULL_TIMELINE: u32 = 1 << 0;

/// Read kernel memory with `bpf_probe_read_kernel` only, never with plain
/// loads through BTF-typed pointers: the loader's fallback for a kernel
/// whose verifier refuses those loads.
pub const CONFIG_PROBE_READS: u32 = 1 << 1;

/// `--debug`: the kernel programs say, through aya-log, why each direct
/// write they saw was not counted.
pub const CONFIG_DEBUG: u32 = 1 << 2;

/// The kernel has cgroups (`CONFIG_CGROUPS`): the programs send each
/// writer's cgroup id. Without them the cgroup helpers do not exist and a
/// program that calls one is refused, so the call must be dead code.
pub const CONFIG_CGROUP_IDS: u32 = 1 << 3;
/// `--stacks`: capture the kernel stack at the size update and the sync
/// of every counted write, not only of those that are not ordered.
pub const CONFIG_STACKS: u32 = 1 << 4;

/// Count, do not send, the writes the shared rule settles as ordered
/// ([`crate::verdict::settled_ordered`]): one more in this CPU's
/// [`crate::ordered::OrderedKey`] slot instead of a record. Set only for
/// runs that print no ordered write (a default `watch`, `--metrics`,
/// `--show problems`); user space adds the counts to its tally.
pub const CONFIG_COUNT_ORDERED: u32 = 1 << 5;

/// aya-log's level global in the kernel programs (frozen at load).
pub const LOG_LEVEL_GLOBAL: &str = "AYA_LOG_LEVEL";
/// aya-log's `Level::Debug`: messages at it and above are sent.
pub const LOG_LEVEL_DEBUG: u8 = 4;

/// Name of the global the loader overrides.
pub const CONFIG_GLOBAL: &str = "DIO_CONFIG";

impl Config {
    /// All zero: what the object file carries until the loader overrides it.
    pub const ZERO: Config = Config {
        offsets: Offsets {
            kiocb_ki_filp: 0,
            kiocb_ki_pos: 0,
            kiocb_ki_flags: 0,
            iov_iter_count: 0,
            file_f_inode: 0,
            file_f_path_dentry: 0,
            inode_i_sb: 0,
            inode_i_ino: 0,
            inode_i_size: 0,
            super_block_s_dev: 0,
            super_block_s_type: 0,
            dentry_d_parent: 0,
            dentry_d_name_name: 0,
            task_struct_pid: 0,
            file_system_type_name: 0,
            iov_iter_dir: 0,
            iomap_dio_iocb: 0,
            inode_i_generation: 0,
            iomap_dio_size: 0,
            file_f_flags: 0,
            iomap_offset: 0,
            iomap_length: 0,
            iomap_type: 0,
            iomap_flags: 0,
            iomap_iter_inode: 0,
            iomap_iter_iomap: 0,
            task_struct_journal_info: 0,
            f2fs_sb_fsync_seg_id: 0,
        },
        fs: [FsFacts {
            flags: 0,
            vfs_inode: 0,
            disk_size: 0,
            _pad: 0,
        }; FS_SLOTS],
        iocb: [IocbBits {
            direct: 0,
            dir_mask: 0,
            dsync: 0,
            sync: 0,
            append: 0,
        }; IOCB_LAYOUTS],
        open: OpenFlags {
            direct: 0,
            dsync: 0,
            sync: 0,
            _pad: 0,
        },
        filter: Filter {
            follow: 0,
            dev: 0,
            comm_len: 0,
            cgroup_levels: 0,
            comm: [0; 16],
        },
        flags: 0,
        wake_bytes: 0,
    };
}
