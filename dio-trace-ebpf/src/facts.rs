//! Reading kernel structs through offsets the loader took from BTF.
//!
//! Every read goes through `bpf_probe_read_kernel`, so a wrong offset gives a
//! wrong value or an error, never a crash; errors are counted by callers.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use dio_trace_common::{arm::InodeKey, config::Config, record::EVENT_NO_DISKSIZE};

/// Read a `T` at `base + off`.
#[inline(always)]
pub fn read<T>(base: *const u8, off: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an Err.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T) }
}

/// `file->f_inode`.
#[inline(always)]
pub fn file_inode(cfg: &Config, file: *const u8) -> Result<*const u8, i32> {
    read(file, cfg.offsets.file_f_inode)
}

/// `iocb->ki_filp`.
#[inline(always)]
pub fn iocb_file(cfg: &Config, iocb: *const u8) -> Result<*const u8, i32> {
    read(iocb, cfg.offsets.kiocb_ki_filp)
}

/// Identity of an inode: its device and number, and whether it is ext4.
pub struct InodeId {
    pub key: InodeKey,
    pub ext4: bool,
}

#[inline(always)]
pub fn inode_id(cfg: &Config, inode: *const u8) -> Result<InodeId, i32> {
    let sb: *const u8 = read(inode, cfg.offsets.inode_i_sb)?;
    let dev: u32 = read(sb, cfg.offsets.super_block_s_dev)?;
    let ino: u64 = read(inode, cfg.offsets.inode_i_ino)?;
    let s_type: u64 = read(sb, cfg.offsets.super_block_s_type)?;
    Ok(InodeId {
        key: InodeKey { dev, _pad: 0, ino },
        ext4: cfg.ext4_fs_type != 0 && s_type == cfg.ext4_fs_type,
    })
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

#[inline(always)]
pub fn sizes(cfg: &Config, inode: *const u8, ext4: bool) -> Sizes {
    let i_size: i64 = read(inode, cfg.offsets.inode_i_size).unwrap_or(-1);
    let disksize = if ext4 {
        // container_of(inode, struct ext4_inode_info, vfs_inode)->i_disksize
        let ei = inode.wrapping_sub(cfg.offsets.ext4_inode_info_vfs_inode as usize);
        read::<i64>(ei, cfg.offsets.ext4_inode_info_i_disksize).ok()
    } else {
        None
    };
    match disksize {
        Some(d) => Sizes {
            i_size,
            i_disksize: d,
            flags: 0,
        },
        None => Sizes {
            i_size,
            i_disksize: -1,
            flags: EVENT_NO_DISKSIZE,
        },
    }
}
