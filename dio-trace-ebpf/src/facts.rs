//! Reading kernel structs through offsets the loader took from BTF.
//!
//! Two ways to read, chosen by what the pointer is ([`Via`]). Either way a
//! wrong offset gives a wrong value, never a crash.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes};
use dio_trace_common::{
    arm::InodeKey,
    config::{CONFIG_PROBE_READS, IOCB_LAYOUTS, IocbBits},
    probe::Mechanism,
    record::EVENT_NO_DISKSIZE,
};

use crate::maps::{DIO_CONFIG, EXT4_TYPE, config};

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
    let dev: u32 = read(via, sb, config!(offsets.super_block_s_dev))?;
    let ino: u64 = read(via, inode, config!(offsets.inode_i_ino))?;
    Ok(InodeKey { dev, _pad: 0, ino })
}

/// Is the superblock ext4's? `sb->s_type->name == "ext4"`: the only test
/// that needs no symbol address (kallsyms often lists text symbols only)
/// and that ext2/ext3 mounts served by other drivers cannot pass. The
/// first match remembers ext4's `s_type`, so later ones compare a pointer.
#[inline(always)]
pub fn is_ext4(via: Via, sb: *const u8) -> Result<bool, i32> {
    let fs_type: *const u8 = read(via, sb, config!(offsets.super_block_s_type))?;
    let known = EXT4_TYPE.get_ptr_mut(0);
    if let Some(known) = known {
        // SAFETY: array slot, valid while the program runs.
        if unsafe { *known } == fs_type as u64 && !fs_type.is_null() {
            return Ok(true);
        }
    }
    let ext4 = type_name(via, fs_type)?[..5] == *b"ext4\0";
    if let (true, Some(known)) = (ext4, known) {
        // SAFETY: as above; every CPU would store the same value.
        unsafe { *known = fs_type as u64 };
    }
    Ok(ext4)
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
    /// `EXT4_I(inode)->i_disksize`: what a crash would leave.
    pub i_disksize: i64,
    /// `EVENT_NO_DISKSIZE` when `i_disksize` could not be read.
    pub flags: u32,
}

/// Callers guarantee an ext4 inode: an armed one, or one an ext4
/// tracepoint handed over.
#[inline(always)]
pub fn sizes(via: Via, inode: *const u8) -> Sizes {
    let i_size: i64 = read(via, inode, config!(offsets.inode_i_size)).unwrap_or(-1);
    // container_of(inode, struct ext4_inode_info, vfs_inode)->i_disksize
    let ei = inode.wrapping_sub(config!(offsets.ext4_inode_info_vfs_inode) as usize);
    match read::<i64>(Via::Probe, ei, config!(offsets.ext4_inode_info_i_disksize)) {
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
