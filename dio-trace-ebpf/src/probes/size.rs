//! Size updates: the step of each filesystem that makes the new size
//! durable at the next sync. The one that matters is the first whose size
//! covers the write's end.
//!
//! - ext4: `__ext4_mark_inode_dirty` copies the in-memory inode,
//!   `i_disksize` included, into the running journal transaction
//!   (tracepoint `ext4:ext4_mark_inode_dirty(struct inode *, unsigned long IP)`).
//! - XFS: `xfs_iomap_write_unwritten(ip, offset, count, update_isize)` logs
//!   the size with the extent conversion, `xfs_setfilesize(ip, offset,
//!   size)` for written blocks (tracepoints `xfs:xfs_unwritten_convert`,
//!   `xfs:xfs_setfilesize(struct xfs_inode *, xfs_off_t, ssize_t)`). Both
//!   fire before the assignment: the size they log is `offset + count`
//!   (the converting call raises `i_size` to it first), never below
//!   `i_disk_size`.
//! - f2fs: `f2fs_i_size_write` (inline) raises `i_size` and calls
//!   `f2fs_mark_inode_dirty_sync(inode, sync)`; the next sync copies that
//!   `i_size` into the node page it writes.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    macros::{btf_tracepoint, fentry, kprobe, raw_tracepoint},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext},
};
use dio_trace_common::{
    arm::{ARM_COMPLETED, ARM_SIZE_SEEN, ARM_SYNC_SEEN},
    kind::RecordKind,
    probe::Mechanism,
};

use crate::{
    emit::{Fact, full_timeline, retire, stack, step, step_time, wants_stack},
    facts::{Sizes, Via, entry_fs, entry_sizes, read, vfs_inode},
    maps::config,
    probes::armed,
};
use dio_trace_common::fs::Fs;

#[btf_tracepoint(function = "ext4_mark_inode_dirty")]
pub fn tp_ext4_mark_inode_dirty(ctx: BtfTracePointContext) -> i32 {
    try_size_update(
        ctx.as_ptr(),
        ctx.arg(0),
        ctx.arg(1),
        RecordKind::MarkDirty,
        Mechanism::Tracepoint,
    );
    0
}

/// The same tracepoint, raw: where ext4 is a module.
#[raw_tracepoint(tracepoint = "ext4_mark_inode_dirty")]
pub fn raw_ext4_mark_inode_dirty(ctx: RawTracePointContext) -> i32 {
    try_size_update(
        ctx.as_ptr(),
        ctx.arg(0),
        ctx.arg(1),
        RecordKind::MarkDirty,
        Mechanism::RawTracepoint,
    );
    0
}

/// `__ext4_mark_inode_dirty(handle_t *, struct inode *, const char *func,
/// unsigned int line)` (5.8+; `ext4_mark_inode_dirty` is a macro for it).
/// fentry cannot see its caller's address: timelines show none.
#[fentry(function = "__ext4_mark_inode_dirty")]
pub fn fentry_ext4_mark_inode_dirty(ctx: FEntryContext) -> i32 {
    try_size_update(
        ctx.as_ptr(),
        ctx.arg(1),
        0,
        RecordKind::MarkDirty,
        Mechanism::Fentry,
    );
    0
}

#[kprobe]
pub fn kprobe_ext4_mark_inode_dirty(ctx: ProbeContext) -> u32 {
    if let Some(inode) = ctx.arg(1) {
        try_size_update(
            ctx.as_ptr(),
            inode,
            return_address(&ctx),
            RecordKind::MarkDirty,
            Mechanism::Kprobe,
        );
    }
    0
}

/// `ext4_handle_inode_extension(struct inode *, ...)`: static, maybe
/// inlined, and its arguments after the inode differ between releases, so
/// only the inode is read and the probe is optional (timelines only).
#[fentry(function = "ext4_handle_inode_extension")]
pub fn fentry_ext4_handle_inode_extension(ctx: FEntryContext) -> i32 {
    try_size_update(
        ctx.as_ptr(),
        ctx.arg(0),
        0,
        RecordKind::InodeExtension,
        Mechanism::Fentry,
    );
    0
}

#[kprobe]
pub fn kprobe_ext4_handle_inode_extension(ctx: ProbeContext) -> u32 {
    if let Some(inode) = ctx.arg(0) {
        try_size_update(
            ctx.as_ptr(),
            inode,
            return_address(&ctx),
            RecordKind::InodeExtension,
            Mechanism::Kprobe,
        );
    }
    0
}

/// `xfs:xfs_unwritten_convert(struct xfs_inode *, xfs_off_t, ssize_t)`:
/// also fired by buffered writeback's conversions, which the range test
/// in [`try_xfs_size`] keeps out.
#[btf_tracepoint(function = "xfs_unwritten_convert")]
pub fn tp_xfs_unwritten_convert(ctx: BtfTracePointContext) -> i32 {
    try_xfs_size(
        ctx.as_ptr(),
        ctx.arg(0),
        ctx.arg(1),
        ctx.arg(2),
        RecordKind::XfsUnwrittenConvert,
        Mechanism::Tracepoint,
    );
    0
}

#[raw_tracepoint(tracepoint = "xfs_unwritten_convert")]
pub fn raw_xfs_unwritten_convert(ctx: RawTracePointContext) -> i32 {
    try_xfs_size(
        ctx.as_ptr(),
        ctx.arg(0),
        ctx.arg(1),
        ctx.arg(2),
        RecordKind::XfsUnwrittenConvert,
        Mechanism::RawTracepoint,
    );
    0
}

#[btf_tracepoint(function = "xfs_setfilesize")]
pub fn tp_xfs_setfilesize(ctx: BtfTracePointContext) -> i32 {
    try_xfs_size(
        ctx.as_ptr(),
        ctx.arg(0),
        ctx.arg(1),
        ctx.arg(2),
        RecordKind::XfsSetFilesize,
        Mechanism::Tracepoint,
    );
    0
}

#[raw_tracepoint(tracepoint = "xfs_setfilesize")]
pub fn raw_xfs_setfilesize(ctx: RawTracePointContext) -> i32 {
    try_xfs_size(
        ctx.as_ptr(),
        ctx.arg(0),
        ctx.arg(1),
        ctx.arg(2),
        RecordKind::XfsSetFilesize,
        Mechanism::RawTracepoint,
    );
    0
}

/// `xfs_iomap_write_unwritten(struct xfs_inode *, xfs_off_t offset,
/// xfs_off_t count, bool update_isize)`: only calls that log the size.
#[fentry(function = "xfs_iomap_write_unwritten")]
pub fn fentry_xfs_iomap_write_unwritten(ctx: FEntryContext) -> i32 {
    let update_isize: u8 = ctx.arg(3);
    if update_isize != 0 {
        try_xfs_size(
            ctx.as_ptr(),
            ctx.arg(0),
            ctx.arg(1),
            ctx.arg(2),
            RecordKind::XfsUnwrittenConvert,
            Mechanism::Fentry,
        );
    }
    0
}

#[kprobe]
pub fn kprobe_xfs_iomap_write_unwritten(ctx: ProbeContext) -> u32 {
    if let (Some(ip), Some(offset), Some(count), Some(update)) = (
        ctx.arg::<*const u8>(0),
        ctx.arg::<i64>(1),
        ctx.arg::<i64>(2),
        ctx.arg::<u64>(3),
    ) && update & 0xff != 0
    {
        try_xfs_size(
            ctx.as_ptr(),
            ip,
            offset,
            count,
            RecordKind::XfsUnwrittenConvert,
            Mechanism::Kprobe,
        );
    }
    0
}

/// `xfs_setfilesize(struct xfs_inode *, xfs_off_t offset, size_t size)`.
#[fentry(function = "xfs_setfilesize")]
pub fn fentry_xfs_setfilesize(ctx: FEntryContext) -> i32 {
    try_xfs_size(
        ctx.as_ptr(),
        ctx.arg(0),
        ctx.arg(1),
        ctx.arg(2),
        RecordKind::XfsSetFilesize,
        Mechanism::Fentry,
    );
    0
}

#[kprobe]
pub fn kprobe_xfs_setfilesize(ctx: ProbeContext) -> u32 {
    if let (Some(ip), Some(offset), Some(size)) =
        (ctx.arg::<*const u8>(0), ctx.arg::<i64>(1), ctx.arg::<i64>(2))
    {
        try_xfs_size(
            ctx.as_ptr(),
            ip,
            offset,
            size,
            RecordKind::XfsSetFilesize,
            Mechanism::Kprobe,
        );
    }
    0
}

/// `f2fs_mark_inode_dirty_sync(struct inode *, bool sync)`: f2fs marks
/// inodes dirty for many reasons; the one that matters is the first whose
/// `i_size` covers the write (`f2fs_i_size_write`).
#[fentry(function = "f2fs_mark_inode_dirty_sync")]
pub fn fentry_f2fs_mark_inode_dirty_sync(ctx: FEntryContext) -> i32 {
    try_size_update(
        ctx.as_ptr(),
        ctx.arg(0),
        0,
        RecordKind::F2fsMarkDirty,
        Mechanism::Fentry,
    );
    0
}

#[kprobe]
pub fn kprobe_f2fs_mark_inode_dirty_sync(ctx: ProbeContext) -> u32 {
    if let Some(inode) = ctx.arg(0) {
        try_size_update(
            ctx.as_ptr(),
            inode,
            return_address(&ctx),
            RecordKind::F2fsMarkDirty,
            Mechanism::Kprobe,
        );
    }
    0
}

/// At a kprobe on a function's first instruction (x86-64), the stack
/// pointer points at the caller's return address.
#[inline(always)]
fn return_address(ctx: &ProbeContext) -> u64 {
    // SAFETY: `regs` is the kprobe's pt_regs, valid while the program runs.
    let sp = unsafe { (*ctx.regs).rsp } as *const u8;
    read::<u64>(Via::Probe, sp, 0).unwrap_or(0)
}

#[inline(always)]
/// `ctx`: the program's context, for the stack of a size update that
/// comes after the write's sync (the buggy order).
pub fn try_size_update(ctx: *mut c_void, inode: *const u8, ip: u64, kind: RecordKind, mechanism: Mechanism) {
    let via = Via::of(mechanism);
    let Some(entry) = armed(via, inode) else {
        return;
    };
    if size_known(entry) || !may_cover(via, inode, entry) {
        return;
    }
    let sz = entry_sizes(via, inode, entry);
    size_step(ctx, entry, &sz, kind, mechanism, ip);
}

/// Can this update cover the write? Not while `i_size` is short of its
/// end: the on-disk size never runs ahead of `i_size` (ext4 raises
/// `i_size` first, `ext4_update_inode_size`, and warns in its direct-write
/// completion when the two are the other way round; f2fs has only
/// `i_size`). So the update before the write's I/O (block allocation
/// dirties the inode) leaves after a plain load instead of a
/// `bpf_probe_read_kernel` of the on-disk size, about 35 ns. Only where
/// nothing else wants the step (no full timeline) and the load is plain
/// (tp_btf, fentry): through a helper it would cost what it saves.
#[inline(always)]
fn may_cover(via: Via, inode: *const u8, entry: *const dio_trace_common::arm::ArmedWrite) -> bool {
    if via != Via::Btf || full_timeline() {
        return true;
    }
    let Ok(i_size) = read::<i64>(via, inode, config!(offsets.inode_i_size)) else {
        return true;
    };
    // SAFETY: map value pointer, valid while the program runs.
    i_size >= unsafe { (*entry).end }
}

/// The write's covering size update was seen and only the first counts
/// (no full timeline): later ones (timestamps, extent changes) leave
/// without reading the sizes.
#[inline(always)]
fn size_known(entry: *const dio_trace_common::arm::ArmedWrite) -> bool {
    // SAFETY: map value pointer, valid while the program runs.
    !full_timeline() && unsafe { (*entry).state } & ARM_SIZE_SEEN != 0
}

/// XFS logs the size of `[offset, offset + count)`: the write's own range,
/// as its completion converts it. Other ranges of an armed file (buffered
/// writeback, which converts without a size update first) are not its size
/// update.
#[inline(always)]
fn try_xfs_size(
    ctx: *mut c_void,
    ip: *const u8,
    offset: i64,
    count: i64,
    kind: RecordKind,
    mechanism: Mechanism,
) {
    let via = Via::of(mechanism);
    let inode = vfs_inode(Fs::Xfs, ip);
    let Some(entry) = armed(via, inode) else {
        return;
    };
    if entry_fs(entry) != Fs::Xfs || size_known(entry) {
        return;
    }
    // SAFETY: map value pointer, valid while the program runs.
    let (pos, end) = unsafe { ((*entry).rec.begin.pos, (*entry).end) };
    let last = offset.wrapping_add(count);
    if offset >= end || last <= pos {
        return;
    }
    let mut sz = entry_sizes(via, inode, entry);
    // The size this call logs: its end (it raises i_size to it first when
    // converting; xfs_setfilesize's caller did), and only ever growing.
    if last > sz.i_disksize {
        sz.i_disksize = last;
    }
    size_step(ctx, entry, &sz, kind, mechanism, 0);
}

/// Record a size update into the write's entry when it is the first to
/// cover the write (or with a full timeline), and retire the write when
/// that was all it waited for. The first covering one sends its stack
/// when the sync came before it (the buggy order), or with `--stacks`.
#[inline(always)]
fn size_step(
    ctx: *mut c_void,
    entry: *mut dio_trace_common::arm::ArmedWrite,
    sz: &Sizes,
    kind: RecordKind,
    mechanism: Mechanism,
    ip: u64,
) {
    // SAFETY: map value pointer, valid while the program runs.
    let (state, first_cover) = unsafe {
        let covers = kind.is_size_update() && sz.i_disksize >= (*entry).end;
        let first = covers && (*entry).state & ARM_SIZE_SEEN == 0;
        if covers {
            (*entry).state |= ARM_SIZE_SEEN;
        }
        ((*entry).state, first)
    };
    // The verdict needs only the first update that covers the write's end;
    // the rest (timestamps, extent changes) are timeline detail.
    if !(first_cover || full_timeline()) {
        return;
    }
    let ts = step_time(entry);
    if first_cover && wants_stack(state & ARM_SYNC_SEEN != 0) {
        stack(ctx, entry, kind, mechanism, ts);
    }
    step(entry, sz, Fact::new(kind, mechanism, ip), ts);
    // Completed and size seen: this write has nothing more to tell.
    if state & ARM_COMPLETED != 0 && state & ARM_SIZE_SEEN != 0 {
        retire(entry);
    }
}
