//! Reading kernel structs through offsets the loader took from BTF.
//!
//! Two ways to read, chosen by what the pointer is ([`Via`]). Either way a
//! wrong offset gives a wrong value, never a crash.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes};
use dio_trace_common::{
    arm::{ArmedWrite, InodeKey},
    config::{CONFIG_PROBE_READS, FS_DISK_SIZE_IS_I_SIZE, FsFacts, IOCB_LAYOUTS, IocbBits},
    fs::{FS_SLOTS, Fs},
    probe::Mechanism,
    record::{EVENT_FS_MASK, EVENT_FS_SHIFT, EVENT_NO_DISKSIZE},
};

use crate::maps::{DIO_CONFIG, FS_TYPE, config};

/// How a program reads kernel memory.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A plain load. For BTF-typed pointers (tp_btf and fentry/fexit
    /// arguments, and pointers loaded through them): the verifier checks
    /// each load against the kernel's BTF at the offset `config!` makes a
    /// known constant, and the JIT turns a fault into a 0. About ten times
    /// cheaper than a helper call, and a write's start makes a dozen reads.
    Btf,
    /// `bpf_probe_read_kernel`: for kprobes' untyped registers, stashed
    /// addresses, and `container_of` (a negative offset BTF cannot check).
    Probe,
}

impl Via {
    /// What a mechanism's arguments allow, unless the loader asked for
    /// probe reads only (`CONFIG_PROBE_READS`: the verifier prunes the
    /// branch not taken, so the refused loads are never checked).
    #[inline(always)]
    pub fn of(mechanism: Mechanism) -> Via {
        if config!(flags) & CONFIG_PROBE_READS != 0 {
            return Via::Probe;
        }
        match mechanism {
            Mechanism::Kprobe | Mechanism::Kretprobe | Mechanism::RawTracepoint => Via::Probe,
            Mechanism::Fentry | Mechanism::Fexit | Mechanism::Tracepoint => Via::Btf,
        }
    }
}

/// Read a `T` at `base + off`.
#[inline(always)]
pub fn read<T>(via: Via, base: *const u8, off: u32) -> Result<T, i32> {
    let at = base.wrapping_add(off as usize) as *const T;
    match via {
        // SAFETY: the verifier accepts this load only where BTF says a `T`
        // lies, and the JIT catches faults (PROBE_MEM).
        Via::Btf => Ok(unsafe { core::ptr::read_volatile(at) }),
        // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an Err.
        Via::Probe => unsafe { bpf_probe_read_kernel(at) },
    }
}

/// Candidate `ki_flags` layout `i`.
#[inline(always)]
fn layout(i: usize) -> IocbBits {
    // SAFETY: a read of a plain static; volatile for the loader's value.
    unsafe { core::ptr::read_volatile(&DIO_CONFIG.iocb[i]) }
}

/// The `ki_flags` layout of a direct write, told by the kernel's own
/// flags: the first candidate whose `IOCB_DIRECT` is set and whose
/// `IOCB_DSYNC`/`IOCB_SYNC` agree with the file's UAPI open flags (which
/// the kernel copies into `ki_flags`; `RWF_*` can only add to them).
/// `None`: no candidate fits, the write cannot be classified.
#[inline(always)]
pub fn iocb_layout(ki_flags: u32, f_flags: u32) -> Option<IocbBits> {
    let open_dsync = f_flags & config!(open.dsync) != 0;
    let open_sync = f_flags & config!(open.sync) != 0;
    for i in 0..IOCB_LAYOUTS {
        let bits = layout(i);
        if ki_flags & bits.direct == 0
            || (open_dsync && ki_flags & bits.dsync == 0)
            || (open_sync && ki_flags & bits.sync == 0)
        {
            continue;
        }
        return Some(bits);
    }
    None
}

/// The `iov_iter` direction byte's "write" mask (the same in every layout).
#[inline(always)]
pub fn dir_mask() -> u32 {
    layout(0).dir_mask
}

/// Is a direct write's `ki_flags` sync-flavoured (`IOCB_DSYNC`)? For the
/// completion side, which only needs to skip what cannot be armed: the
/// first candidate whose `IOCB_DIRECT` is set decides, as at the start.
#[inline(always)]
pub fn is_dsync(ki_flags: u32) -> bool {
    for i in 0..IOCB_LAYOUTS {
        let bits = layout(i);
        if ki_flags & bits.direct != 0 {
            return ki_flags & bits.dsync != 0;
        }
    }
    false
}

/// `file->f_inode`.
#[inline(always)]
pub fn file_inode(via: Via, file: *const u8) -> Result<*const u8, i32> {
    read(via, file, config!(offsets.file_f_inode))
}

/// `iocb->ki_filp`.
#[inline(always)]
pub fn iocb_file(via: Via, iocb: *const u8) -> Result<*const u8, i32> {
    read(via, iocb, config!(offsets.kiocb_ki_filp))
}

/// `inode->i_sb`.
#[inline(always)]
pub fn inode_sb(via: Via, inode: *const u8) -> Result<*const u8, i32> {
    read(via, inode, config!(offsets.inode_i_sb))
}

/// (device, inode number) of an inode on superblock `sb`.
#[inline(always)]
pub fn inode_key(via: Via, inode: *const u8, sb: *const u8) -> Result<InodeKey, i32> {
    let dev = sb_dev(via, sb)?;
    let ino: u64 = read(via, inode, config!(offsets.inode_i_ino))?;
    Ok(InodeKey { dev, _pad: 0, ino })
}

/// `sb->s_dev`.
#[inline(always)]
pub fn sb_dev(via: Via, sb: *const u8) -> Result<u32, i32> {
    read(via, sb, config!(offsets.super_block_s_dev))
}

/// `inode->i_sb->s_dev`.
#[inline(always)]
pub fn inode_dev(via: Via, inode: *const u8) -> Option<u32> {
    sb_dev(via, inode_sb(via, inode).ok()?).ok()
}

/// Which known filesystem the superblock is: `sb->s_type->name`, the
/// only test that needs no symbol address (kallsyms often lists text
/// symbols only) and that mounts served by other drivers (ext2 by ext4's
/// code, for instance, is still "ext2") cannot pass. The first match
/// remembers the filesystem's `s_type`, so later ones compare a pointer.
/// `None`: a filesystem dio-trace has no facts for.
#[inline(always)]
pub fn fs_of(via: Via, sb: *const u8) -> Result<Option<Fs>, i32> {
    let fs_type: *const u8 = read(via, sb, config!(offsets.super_block_s_type))?;
    if fs_type.is_null() {
        return Ok(None);
    }
    for fs in Fs::ALL {
        if let Some(known) = FS_TYPE.get(fs.slot() as u32)
            && *known == fs_type as u64
        {
            return Ok(Some(fs));
        }
    }
    let name = type_name(via, fs_type)?;
    for fs in Fs::ALL {
        let want = fs.type_name();
        if name[..want.len()] == *want {
            if let Some(known) = FS_TYPE.get_ptr_mut(fs.slot() as u32) {
                // SAFETY: array slot, valid while the program runs; every
                // CPU would store the same value.
                unsafe { *known = fs_type as u64 };
            }
            return Ok(Some(fs));
        }
    }
    Ok(None)
}

/// What the loader read about a filesystem.
#[inline(always)]
pub fn fs_facts(fs: Fs) -> FsFacts {
    // One read per filesystem at a constant index, not one at a computed
    // one: the verifier then knows each value (the loader froze them), and
    // `sizes` may subtract the offset from a BTF pointer, which it refuses
    // for an offset it cannot bound.
    // SAFETY: reads of a plain static; volatile for the loader's value.
    unsafe {
        match fs {
            Fs::Ext4 => core::ptr::read_volatile(&DIO_CONFIG.fs[0]),
            Fs::Xfs => core::ptr::read_volatile(&DIO_CONFIG.fs[1]),
            Fs::F2fs => core::ptr::read_volatile(&DIO_CONFIG.fs[2]),
            Fs::Btrfs => core::ptr::read_volatile(&DIO_CONFIG.fs[3]),
        }
    }
}
const _: () = assert!(FS_SLOTS == 4, "fs_facts reads one slot per filesystem");

/// The filesystem an armed write is on (kept in its record's flags).
#[inline(always)]
pub fn entry_fs(entry: *const ArmedWrite) -> Fs {
    // SAFETY: map value pointer, valid while the program runs.
    let flags = unsafe { (*entry).rec.begin.flags };
    Fs::from_u32((flags & EVENT_FS_MASK) >> EVENT_FS_SHIFT).unwrap_or(Fs::Ext4)
}

/// The VFS inode inside a filesystem's own inode (`&ip->i_vnode` for XFS's
/// `struct xfs_inode *`), as the armed map knows it.
#[inline(always)]
pub fn vfs_inode(fs: Fs, fs_inode: *const u8) -> *const u8 {
    fs_inode.wrapping_add(fs_facts(fs).vfs_inode as usize)
}

/// `fs_type->name`, NUL-padded (names longer than 15 bytes are cut).
#[inline(always)]
fn type_name(via: Via, fs_type: *const u8) -> Result<[u8; 16], i32> {
    let name: *const u8 = read(via, fs_type, config!(offsets.file_system_type_name))?;
    let mut buf = [0u8; 16];
    // SAFETY: reads at most buf.len() bytes of a kernel string.
    unsafe { bpf_probe_read_kernel_str_bytes(name, &mut buf) }?;
    Ok(buf)
}

/// `sb->s_type->name`, for `--debug` messages (empty if unreadable).
#[inline(always)]
pub fn fs_name(via: Via, sb: *const u8) -> [u8; 16] {
    read::<*const u8>(via, sb, config!(offsets.super_block_s_type))
        .and_then(|fs_type| type_name(via, fs_type))
        .unwrap_or([0; 16])
}

/// `--debug`: the loader set aya-log's level (a frozen global, so the
/// verifier drops every message when it is off).
#[inline(always)]
pub fn debug_on() -> bool {
    aya_log_ebpf::macro_support::level_enabled(aya_log_ebpf::macro_support::Level::Debug)
}

/// The two sizes the verdict is about, read at one instant.
pub struct Sizes {
    /// `inode->i_size`: what `stat` says now.
    pub i_size: i64,
    /// What a crash would leave ([`Fs::disk_size_field`]).
    pub i_disksize: i64,
    /// `EVENT_NO_DISKSIZE` when it could not be read.
    pub flags: u32,
}

/// Callers guarantee an inode of `fs`: an armed one, or one a tracepoint
/// of that filesystem handed over.
#[inline(always)]
pub fn sizes(via: Via, inode: *const u8, fs: Fs) -> Sizes {
    let i_size: i64 = read(via, inode, config!(offsets.inode_i_size)).unwrap_or(-1);
    let facts = fs_facts(fs);
    if facts.flags & FS_DISK_SIZE_IS_I_SIZE != 0 {
        return Sizes {
            i_size,
            i_disksize: i_size,
            flags: if i_size < 0 { EVENT_NO_DISKSIZE } else { 0 },
        };
    }
    // container_of(inode, <fs inode>, vfs_inode)-><disk size>
    let fi = inode.wrapping_sub(facts.vfs_inode as usize);
    match read::<i64>(Via::Probe, fi, facts.disk_size) {
        Ok(d) => Sizes {
            i_size,
            i_disksize: d,
            flags: 0,
        },
        Err(_) => Sizes {
            i_size,
            i_disksize: -1,
            flags: EVENT_NO_DISKSIZE,
        },
    }
}

/// [`sizes`] of an armed write's inode.
#[inline(always)]
pub fn entry_sizes(via: Via, inode: *const u8, entry: *const ArmedWrite) -> Sizes {
    sizes(via, inode, entry_fs(entry))
}
