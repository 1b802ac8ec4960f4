//! Reading kernel structs through offsets the loader took from BTF.
//!
//! Every read goes through `bpf_probe_read_kernel`, so a wrong offset gives a
//! wrong value or an error, never a crash; errors are counted by callers.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes};
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

/// (device, inode number) of an inode.
#[inline(always)]
pub fn inode_key(cfg: &Config, inode: *const u8) -> Result<InodeKey, i32> {
    let sb: *const u8 = read(inode, cfg.offsets.inode_i_sb)?;
    let dev: u32 = read(sb, cfg.offsets.super_block_s_dev)?;
    let ino: u64 = read(inode, cfg.offsets.inode_i_ino)?;
    Ok(InodeKey { dev, _pad: 0, ino })
}

/// Is the inode on ext4? `sb->s_type->name == "ext4"`: the only test that
/// needs no symbol address (kallsyms often lists text symbols only) and
/// that ext2/ext3 mounts served by other drivers cannot pass.
#[inline(always)]
pub fn is_ext4(cfg: &Config, inode: *const u8) -> Result<bool, i32> {
    let sb: *const u8 = read(inode, cfg.offsets.inode_i_sb)?;
    let fs_type: *const u8 = read(sb, cfg.offsets.super_block_s_type)?;
    let name: *const u8 = read(fs_type, cfg.offsets.file_system_type_name)?;
    let mut buf = [0u8; 8];
    // SAFETY: reads at most buf.len() bytes of a kernel string.
    unsafe { bpf_probe_read_kernel_str_bytes(name, &mut buf) }?;
    Ok(buf[..5] == *b"ext4\0")
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
pub fn sizes(cfg: &Config, inode: *const u8) -> Sizes {
    let i_size: i64 = read(inode, cfg.offsets.inode_i_size).unwrap_or(-1);
    // container_of(inode, struct ext4_inode_info, vfs_inode)->i_disksize
    let ei = inode.wrapping_sub(cfg.offsets.ext4_inode_info_vfs_inode as usize);
    let disksize = read::<i64>(ei, cfg.offsets.ext4_inode_info_i_disksize).ok();
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
