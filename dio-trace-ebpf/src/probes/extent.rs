//! Where a direct write goes: the mapping the filesystem returned for it.
//!
//! A sync-flavoured direct write that does not extend its file is counted
//! only when its blocks are new or unwritten (`IOMAP_F_NEW`,
//! `IOMAP_UNWRITTEN`: holes, fallocated space): those need metadata made
//! durable, and 6.15's d279c80e0bac skipped exactly their sync for
//! O_DSYNC (NOTES §9). A pure overwrite of written blocks is not counted:
//! on a FUA device the kernel may rightly skip its sync.
//!
//! - tracepoint `iomap:iomap_iter_dstmap(struct inode *, struct iomap *)`
//!   (5.15+), `iomap:iomap_apply_dstmap` before it (5.5..5.14);
//! - kprobe+kretprobe or fexit on `iomap_iter(struct iomap_iter *, ...)`
//!   (5.15+), which returns with the next mapping in `iter->iomap`;
//! - kprobe or fentry on `iomap_dio_actor(struct inode *, loff_t, loff_t,
//!   void *, struct iomap *, struct iomap *)` (5.5..5.14).
//!
//! The write's start left a [`Pending`] note for its task; the first
//! mapping of that inode overlapping the write that is new or unwritten
//! turns it into a counted write, which needs no size update, only a sync.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use dio_trace_common::{
    arm::ARM_SIZE_SEEN,
    probe::Mechanism,
    record::{EVENT_NEW_EXTENT, IOMAP_F_NEW, IOMAP_UNWRITTEN},
};

use crate::{
    facts::{Sizes, Via, read},
    maps::{ITER_CALL, PENDING, Pending, config, pending_maybe, pending_remove},
    probes::{
        armed,
        write::{Counted, count_write},
    },
};

#[btf_tracepoint(function = "iomap_iter_dstmap")]
pub fn tp_iomap_iter_dstmap(ctx: BtfTracePointContext) -> i32 {
    try_new_extent(ctx.arg(0), ctx.arg(1), Mechanism::Tracepoint);
    0
}

#[btf_tracepoint(function = "iomap_apply_dstmap")]
pub fn tp_iomap_apply_dstmap(ctx: BtfTracePointContext) -> i32 {
    try_new_extent(ctx.arg(0), ctx.arg(1), Mechanism::Tracepoint);
    0
}

#[kprobe]
pub fn kprobe_iomap_iter(ctx: ProbeContext) -> u32 {
    if !pending_maybe() {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    // SAFETY: read-only lookup; only tasks with a pending write stash.
    if unsafe { PENDING.get(id) }.is_some()
        && let Some(iter) = ctx.arg::<u64>(0)
    {
        let _ = ITER_CALL.insert(id, iter, 0);
    }
    0
}

#[kretprobe]
pub fn kretprobe_iomap_iter(ctx: RetProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: read-only copy of a plain value.
    let Some(iter) = (unsafe { ITER_CALL.get(id) }).copied() else {
        return 0;
    };
    let _ = ITER_CALL.remove(id);
    let ret: i32 = ctx.ret();
    iter_mapped(iter as *const u8, ret, Mechanism::Kretprobe);
    0
}

#[fexit(function = "iomap_iter")]
pub fn fexit_iomap_iter(ctx: FExitContext) -> i32 {
    let iter: *const u8 = ctx.arg(0);
    // fexit's context holds the arguments, then the return value.
    let ret: i32 = ctx.arg(2);
    iter_mapped(iter, ret, Mechanism::Fexit);
    0
}

#[kprobe]
pub fn kprobe_iomap_dio_actor(ctx: ProbeContext) -> u32 {
    if let (Some(inode), Some(iomap)) = (ctx.arg(0), ctx.arg(4)) {
        try_new_extent(inode, iomap, Mechanism::Kprobe);
    }
    0
}

#[fentry(function = "iomap_dio_actor")]
pub fn fentry_iomap_dio_actor(ctx: FEntryContext) -> i32 {
    try_new_extent(ctx.arg(0), ctx.arg(4), Mechanism::Fentry);
    0
}

/// `iomap_iter` returned: a positive value means `iter->iomap` holds the
/// next mapping to write into.
#[inline(always)]
fn iter_mapped(iter: *const u8, ret: i32, mechanism: Mechanism) {
    if ret <= 0 || config!(offsets.iomap_iter_iomap) == 0 {
        return;
    }
    let Ok(inode) = read::<*const u8>(Via::Probe, iter, config!(offsets.iomap_iter_inode)) else {
        return;
    };
    let iomap = iter.wrapping_add(config!(offsets.iomap_iter_iomap) as usize);
    try_new_extent_via(Via::Probe, inode, iomap, mechanism);
}

#[inline(always)]
fn try_new_extent(inode: *const u8, iomap: *const u8, mechanism: Mechanism) {
    try_new_extent_via(Via::of(mechanism), inode, iomap, mechanism);
}

/// Count the current task's pending write to `inode` if `iomap` overlaps
/// it with new or unwritten blocks. Everything else leaves after one
/// lookup: most mappings belong to tasks with nothing pending.
#[inline(always)]
fn try_new_extent_via(via: Via, inode: *const u8, iomap: *const u8, mechanism: Mechanism) {
    if !pending_maybe() {
        return;
    }
    let id = bpf_get_current_pid_tgid();
    // SAFETY: read-only copy of a plain value.
    let Some(p) = (unsafe { PENDING.get(id) }).copied() else {
        return;
    };
    if p.inode != inode as u64 {
        return;
    }
    let (Ok(kind), Ok(flags), Ok(offset), Ok(length)) = (
        read::<u16>(via, iomap, config!(offsets.iomap_type)),
        read::<u16>(via, iomap, config!(offsets.iomap_flags)),
        read::<i64>(via, iomap, config!(offsets.iomap_offset)),
        read::<u64>(via, iomap, config!(offsets.iomap_length)),
    ) else {
        return;
    };
    let end = p.pos.wrapping_add(p.len as i64);
    // Other iomap users of the inode (fiemap, SEEK_HOLE) by a task whose
    // pending write was never completed map other ranges.
    if offset >= end || offset.wrapping_add(length as i64) <= p.pos {
        return;
    }
    if kind != IOMAP_UNWRITTEN && flags & IOMAP_F_NEW == 0 {
        return; // written blocks, so far: a later mapping may still be new
    }
    pending_remove(id);
    if armed(Via::Probe, inode).is_some() {
        return;
    }
    // The write's start, as its own hook saw it, is the record's start.
    promote(&p, Mechanism::from_u32(p.mechanism).unwrap_or(mechanism));
}

/// The pending write becomes a counted one. Its size needs no update (it
/// ends inside the on-disk size), so it starts with that step settled:
/// its sync sends it, or its completion does when no sync came.
#[inline(always)]
fn promote(p: &Pending, mechanism: Mechanism) {
    let sz = Sizes {
        i_size: p.i_size,
        i_disksize: p.i_disksize,
        flags: p.size_flags,
    };
    count_write(
        Counted {
            addr: p.inode,
            end: p.pos.wrapping_add(p.len as i64),
            key: p.key,
            pos: p.pos,
            len: p.len,
            ki_flags: p.ki_flags,
            flags: p.flags | EVENT_NEW_EXTENT,
            state: ARM_SIZE_SEEN,
            generation: p.generation,
            mechanism,
        },
        &sz,
        || p.dentry as *const u8,
    );
}
