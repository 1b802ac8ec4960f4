//! Direct writes a filesystem wrote through the page cache instead.
//!
//! btrfs sends a direct write to `btrfs_buffered_write` when it will not
//! write it directly: a checksummed file on kernels that refuse direct
//! writes to them (6.x before bounce buffers), a misaligned write, or the
//! rest of a short one. The `kiocb` still says `IOCB_DIRECT` there (a
//! buffered write's never does), and none of it reaches iomap's direct
//! I/O, so the write probe never sees it: counted here, so an answer says
//! so instead of "no direct write was seen".
//!
//! Where neither hook on `btrfs_buffered_write` loads (no kprobes, and
//! fentry refused), btrfs's sync tracepoint infers it: `btrfs_do_write_iter`
//! syncs a sync-flavoured write after writing it either way, so a sync of
//! a file opened `O_DIRECT` with `O_SYNC`/`O_DSYNC`, by a task whose last
//! btrfs direct write at iomap was not to that file ([`BTRFS_DIRECT`]),
//! follows a write btrfs wrote through the page cache. It cannot tell that
//! from an `fsync(2)` of such a file with no write before it, and misses
//! `RWF_DSYNC` writes (their file's flags say nothing): a count that
//! explains, never a verdict.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, fentry, kprobe, raw_tracepoint},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext},
};
use aya_log_ebpf::debug;
use dio_trace_common::{counters::Counter, probe::Mechanism};

use crate::{
    facts::{Via, debug_on, file_inode, inode_sb, iocb_file, iocb_layout, read, sb_dev},
    maps::{BTRFS_DIRECT, config, count},
    probes::task_passes,
};

/// `btrfs_buffered_write(struct kiocb *, struct iov_iter *)`.
#[kprobe]
pub fn kprobe_btrfs_buffered_write(ctx: ProbeContext) -> u32 {
    if let Some(iocb) = ctx.arg::<*const u8>(0) {
        try_fallback(iocb, Mechanism::Kprobe);
    }
    0
}

#[fentry(function = "btrfs_buffered_write")]
pub fn fentry_btrfs_buffered_write(ctx: FEntryContext) -> i32 {
    try_fallback(ctx.arg(0), Mechanism::Fentry);
    0
}

/// `btrfs:btrfs_sync_file(const struct file *, int datasync)` (from 7.0
/// `btrfs_sync_file_enter`), for the inference above.
#[btf_tracepoint(function = "btrfs_sync_file")]
pub fn tp_btrfs_fallback_sync(ctx: BtfTracePointContext) -> i32 {
    sync_after_fallback(ctx.arg(0), Mechanism::Tracepoint);
    0
}

#[btf_tracepoint(function = "btrfs_sync_file_enter")]
pub fn tp_btrfs_fallback_sync_enter(ctx: BtfTracePointContext) -> i32 {
    sync_after_fallback(ctx.arg(0), Mechanism::Tracepoint);
    0
}

#[raw_tracepoint(tracepoint = "btrfs_sync_file")]
pub fn raw_btrfs_fallback_sync(ctx: RawTracePointContext) -> i32 {
    sync_after_fallback(ctx.arg(0), Mechanism::RawTracepoint);
    0
}

#[raw_tracepoint(tracepoint = "btrfs_sync_file_enter")]
pub fn raw_btrfs_fallback_sync_enter(ctx: RawTracePointContext) -> i32 {
    sync_after_fallback(ctx.arg(0), Mechanism::RawTracepoint);
    0
}

/// A btrfs direct write reached iomap: its task's syncs of that file are
/// its own ([`BTRFS_DIRECT`]).
#[inline(always)]
pub fn note_direct(inode: u64) {
    let _ = BTRFS_DIRECT.insert(bpf_get_current_pid_tgid(), inode, 0);
}

#[inline(always)]
fn sync_after_fallback(file: *const u8, mechanism: Mechanism) {
    let via = Via::of(mechanism);
    let Ok(f_flags) = read::<u32>(via, file, config!(offsets.file_f_flags)) else {
        return;
    };
    let sync = config!(open.dsync) | config!(open.sync);
    if f_flags & config!(open.direct) == 0 || f_flags & sync == 0 {
        return;
    }
    let Ok(inode) = file_inode(via, file) else {
        return;
    };
    // SAFETY: map value read, valid while the program runs.
    if unsafe { BTRFS_DIRECT.get(bpf_get_current_pid_tgid()) }.is_some_and(|i| *i == inode as u64) {
        return;
    }
    if !task_passes() {
        return;
    }
    let Ok(sb) = inode_sb(via, inode) else {
        return;
    };
    counted_fallback(
        via,
        sb,
        "inferred: a btrfs sync of a direct, sync-flavoured file with no direct write to it",
    );
}

/// Count a sync-flavoured direct write the traced tasks made, on the
/// traced device, that went to the page cache.
#[inline(always)]
fn try_fallback(iocb: *const u8, mechanism: Mechanism) {
    let via = Via::of(mechanism);
    let Ok(file) = iocb_file(via, iocb) else {
        return;
    };
    let (Ok(ki_flags), Ok(f_flags)) = (
        read::<u32>(via, iocb, config!(offsets.kiocb_ki_flags)),
        read::<u32>(via, file, config!(offsets.file_f_flags)),
    ) else {
        return;
    };
    // A buffered write's kiocb has no IOCB_DIRECT: no layout fits it.
    let Some(bits) = iocb_layout(ki_flags, f_flags) else {
        return;
    };
    if ki_flags & bits.dsync == 0 || !task_passes() {
        return;
    }
    let Ok(sb) = file_inode(via, file).and_then(|inode| inode_sb(via, inode)) else {
        return;
    };
    counted_fallback(via, sb, "btrfs_buffered_write with a direct kiocb");
}

/// Count one fallback on `sb`'s device, if that is the traced one.
#[inline(always)]
fn counted_fallback(via: Via, sb: *const u8, how: &'static str) {
    let dev = sb_dev(via, sb).unwrap_or(0);
    let dev_filter = config!(filter.dev);
    if dev_filter != 0 && dev != dev_filter {
        return;
    }
    count(Counter::BufferedFallback);
    if debug_on() {
        debug!(
            &(),
            "sync direct write written through the page cache by btrfs ({}; dev {}:{}): not a direct write, not judged",
            how,
            dev >> 20,
            dev & 0xfffff
        );
    }
}
