//! The sync `generic_write_sync` runs (it is inline: what we see is
//! `vfs_fsync_range` -> `ext4_sync_file`).
//!
//! Per filesystem, the tracepoints of its `->fsync` (`ext4:ext4_sync_file_enter(struct
//! file *, int datasync)` and `ext4:ext4_sync_file_exit(struct inode *, int
//! ret)`; `xfs:xfs_file_fsync(struct xfs_inode *)`;
//! `f2fs:f2fs_sync_file_enter(struct inode *)` and
//! `f2fs:f2fs_sync_file_exit(struct inode *, int cp_reason, int datasync,
//! int ret)`); for every filesystem at once, fentry/fexit and kprobe on
//! `vfs_fsync_range`, the function `generic_write_sync` calls.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, fentry, fexit, kprobe, raw_tracepoint},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RawTracePointContext},
};
use dio_trace_common::{
    arm::{ARM_SIZE_SEEN, ARM_SYNC_SEEN, ArmedWrite},
    fs::Fs,
    kind::RecordKind,
    probe::Mechanism,
    record::{DATASYNC_UNKNOWN, EVENT_NODES_ALL, EVENT_NODES_WAITED, EVENT_ROLL_FORWARD, EVENT_SYNC_ALONE},
    verdict::{FirstSync, SyncPath, settled_ordered},
};

use crate::{
    emit::{
        Fact, counts_ordered, full_timeline, settle, settle_counted, stack, step, step_time, wants_stack,
    },
    facts::{Via, entry_fs, entry_sizes, file_inode, inode_dev, read, vfs_inode},
    maps::{
        F2FS_NODE_WAIT, F2FS_NODES_NUMBERED, NODES_PENDING, NODES_UNWAITED, NODES_WAITED, NODES_WAITED_ALL,
        config, f2fs_sync_ended, f2fs_sync_started,
    },
    probes::armed,
};

#[btf_tracepoint(function = "ext4_sync_file_enter")]
pub fn tp_ext4_sync_file_enter(ctx: BtfTracePointContext) -> i32 {
    sync_file_enter(ctx.as_ptr(), ctx.arg(0), ctx.arg(1), Mechanism::Tracepoint);
    0
}

#[btf_tracepoint(function = "ext4_sync_file_exit")]
pub fn tp_ext4_sync_file_exit(ctx: BtfTracePointContext) -> i32 {
    sync_file_exit(ctx.as_ptr(), ctx.arg(0), ctx.arg(1), Mechanism::Tracepoint);
    0
}

/// The same tracepoints, raw: where ext4 is a module.
#[raw_tracepoint(tracepoint = "ext4_sync_file_enter")]
pub fn raw_ext4_sync_file_enter(ctx: RawTracePointContext) -> i32 {
    sync_file_enter(ctx.as_ptr(), ctx.arg(0), ctx.arg(1), Mechanism::RawTracepoint);
    0
}

#[raw_tracepoint(tracepoint = "ext4_sync_file_exit")]
pub fn raw_ext4_sync_file_exit(ctx: RawTracePointContext) -> i32 {
    sync_file_exit(ctx.as_ptr(), ctx.arg(0), ctx.arg(1), Mechanism::RawTracepoint);
    0
}

/// `xfs:xfs_file_fsync(struct xfs_inode *)`: no datasync argument.
#[btf_tracepoint(function = "xfs_file_fsync")]
pub fn tp_xfs_file_fsync(ctx: BtfTracePointContext) -> i32 {
    let ip: *const u8 = ctx.arg(0);
    sync_enter_untyped(ctx.as_ptr(), vfs_inode(Fs::Xfs, ip), Mechanism::Tracepoint);
    0
}

#[raw_tracepoint(tracepoint = "xfs_file_fsync")]
pub fn raw_xfs_file_fsync(ctx: RawTracePointContext) -> i32 {
    let ip: *const u8 = ctx.arg(0);
    sync_enter_untyped(ctx.as_ptr(), vfs_inode(Fs::Xfs, ip), Mechanism::RawTracepoint);
    0
}

/// `f2fs:f2fs_sync_file_enter(struct inode *)`: no datasync argument.
#[btf_tracepoint(function = "f2fs_sync_file_enter")]
pub fn tp_f2fs_sync_file_enter(ctx: BtfTracePointContext) -> i32 {
    sync_enter_untyped(ctx.as_ptr(), ctx.arg(0), Mechanism::Tracepoint);
    0
}

#[raw_tracepoint(tracepoint = "f2fs_sync_file_enter")]
pub fn raw_f2fs_sync_file_enter(ctx: RawTracePointContext) -> i32 {
    sync_enter_untyped(ctx.as_ptr(), ctx.arg(0), Mechanism::RawTracepoint);
    0
}

/// `btrfs:btrfs_sync_file(const struct file *, int datasync)`, renamed
/// `btrfs_sync_file_enter` in 7.0: the same arguments.
#[btf_tracepoint(function = "btrfs_sync_file")]
pub fn tp_btrfs_sync_file(ctx: BtfTracePointContext) -> i32 {
    sync_file_enter(ctx.as_ptr(), ctx.arg(0), ctx.arg(1), Mechanism::Tracepoint);
    0
}

#[btf_tracepoint(function = "btrfs_sync_file_enter")]
pub fn tp_btrfs_sync_file_enter(ctx: BtfTracePointContext) -> i32 {
    sync_file_enter(ctx.as_ptr(), ctx.arg(0), ctx.arg(1), Mechanism::Tracepoint);
    0
}

#[raw_tracepoint(tracepoint = "btrfs_sync_file")]
pub fn raw_btrfs_sync_file(ctx: RawTracePointContext) -> i32 {
    sync_file_enter(ctx.as_ptr(), ctx.arg(0), ctx.arg(1), Mechanism::RawTracepoint);
    0
}

#[raw_tracepoint(tracepoint = "btrfs_sync_file_enter")]
pub fn raw_btrfs_sync_file_enter(ctx: RawTracePointContext) -> i32 {
    sync_file_enter(ctx.as_ptr(), ctx.arg(0), ctx.arg(1), Mechanism::RawTracepoint);
    0
}

/// Every f2fs sync is counted on its device, traced file or not, so that
/// each exit knows whether another ran beside it ([`f2fs_sync_exit`]).
/// A program of its own: the sync's start may be served by another hook
/// (`vfs_fsync_range`), and this count must not depend on which.
#[btf_tracepoint(function = "f2fs_sync_file_enter")]
pub fn tp_f2fs_sync_count(ctx: BtfTracePointContext) -> i32 {
    count_f2fs_sync(ctx.arg(0), Mechanism::Tracepoint);
    0
}

#[raw_tracepoint(tracepoint = "f2fs_sync_file_enter")]
pub fn raw_f2fs_sync_count(ctx: RawTracePointContext) -> i32 {
    count_f2fs_sync(ctx.arg(0), Mechanism::RawTracepoint);
    0
}

#[inline(always)]
fn count_f2fs_sync(inode: *const u8, mechanism: Mechanism) {
    if let Some(dev) = inode_dev(Via::of(mechanism), inode) {
        f2fs_sync_started(dev);
    }
    let id = bpf_get_current_pid_tgid();
    let _ = F2FS_NODE_WAIT.insert(id, NODES_PENDING, 0);
    let _ = F2FS_NODES_NUMBERED.remove(id);
}

/// `f2fs_need_inode_block_update(struct f2fs_sb_info *, nid_t)`, which
/// `f2fs_do_sync_file` calls after `f2fs_fsync_node_pages` has written
/// (and so allocated) the sync's node pages, and before its wait: the
/// last number given then bounds every page ahead of the sync's own in
/// the node chain ([`F2FS_NODES_NUMBERED`]). Called again before (the
/// sync's skip test) and on each retry; the call before the wait is the
/// last.
#[kprobe]
pub fn kprobe_f2fs_need_inode_block_update(ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: map value read, valid while the program runs.
    if unsafe { F2FS_NODE_WAIT.get(id) }.is_some()
        && let Some(sbi) = ctx.arg::<*const u8>(0)
        && let Some(last) = last_numbered(sbi)
    {
        let _ = F2FS_NODES_NUMBERED.insert(id, last, 0);
    }
    0
}

/// `f2fs_wait_on_node_pages_writeback(struct f2fs_sb_info *, unsigned int
/// seq_id)`, which an fsync that rolls forward calls before its flush:
/// with `seq_id` 0 it waits for nothing ([`F2FS_NODE_WAIT`]).
#[kprobe]
pub fn kprobe_f2fs_wait_on_node_pages_writeback(ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // Only inside a sync the count saw start (not a checkpoint's own call).
    // SAFETY: map value read, valid while the program runs.
    if unsafe { F2FS_NODE_WAIT.get(id) }.is_some()
        && let (Some(sbi), Some(seq_id)) = (ctx.arg::<*const u8>(0), ctx.arg::<u32>(1))
    {
        // SAFETY: map value read, valid while the program runs.
        let bound = unsafe { F2FS_NODES_NUMBERED.get(id) }.copied();
        let v = match seq_id {
            0 => NODES_UNWAITED,
            s if bound.or_else(|| last_numbered(sbi)).is_some_and(|last| s >= last) => NODES_WAITED_ALL,
            _ => NODES_WAITED,
        };
        let _ = F2FS_NODE_WAIT.insert(id, v, 0);
    }
    0
}

/// The last number f2fs gave a node page (`sbi->fsync_seg_id`, which
/// counts up from 1 with patches/f2fs-fsync-seq-from-one.patch, so that
/// stock numbering, one behind, never passes). A wait up to it waits for
/// every block ahead of the sync's own in the node chain, if read after
/// the sync's pages were allocated: best where they were
/// ([`F2FS_NODES_NUMBERED`]), else at the wait itself, where a page
/// numbered between f2fs's own reading and this one makes it say no,
/// which is safe (that page's block comes after the sync's).
#[inline(always)]
fn last_numbered(sbi: *const u8) -> Option<u32> {
    let off = config!(offsets.f2fs_sb_fsync_seg_id);
    (off != 0)
        .then(|| read::<u32>(Via::Probe, sbi, off).ok())
        .flatten()
}

/// How the f2fs sync this task is leaving waited for node pages, as
/// `EVENT_NODES_*` bits. Read once, at its exit.
#[inline(always)]
fn f2fs_nodes_waited() -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: map value read, valid while the program runs.
    let v = unsafe { F2FS_NODE_WAIT.get(id) }.copied();
    let _ = F2FS_NODE_WAIT.remove(id);
    let _ = F2FS_NODES_NUMBERED.remove(id);
    match v {
        Some(NODES_WAITED) => EVENT_NODES_WAITED,
        Some(NODES_WAITED_ALL) => EVENT_NODES_WAITED | EVENT_NODES_ALL,
        _ => 0,
    }
}

/// `f2fs:f2fs_sync_file_exit(struct inode *, int cp_reason, int datasync,
/// int ret)`: `cp_reason` says whether the sync took a checkpoint (not 0)
/// or wrote node pages for roll-forward recovery (0), which decides what
/// a crash keeps.
#[btf_tracepoint(function = "f2fs_sync_file_exit")]
pub fn tp_f2fs_sync_file_exit(ctx: BtfTracePointContext) -> i32 {
    let (cp_reason, ret): (i32, i32) = (ctx.arg(1), ctx.arg(3));
    f2fs_sync_exit(ctx.arg(0), cp_reason, ret, Mechanism::Tracepoint);
    0
}

#[raw_tracepoint(tracepoint = "f2fs_sync_file_exit")]
pub fn raw_f2fs_sync_file_exit(ctx: RawTracePointContext) -> i32 {
    let (cp_reason, ret): (i32, i32) = (ctx.arg(1), ctx.arg(3));
    f2fs_sync_exit(ctx.arg(0), cp_reason, ret, Mechanism::RawTracepoint);
    0
}

/// A sync's start from a hook that does not say whether it is a datasync.
#[inline(always)]
fn sync_enter_untyped(ctx: *mut c_void, inode: *const u8, mechanism: Mechanism) {
    try_sync(ctx, inode, RecordKind::SyncEnter, DATASYNC_UNKNOWN, mechanism);
}

/// `ext4_sync_file_enter(struct file *, int datasync)`, either kind.
#[inline(always)]
fn sync_file_enter(ctx: *mut c_void, file: *const u8, datasync: i32, mechanism: Mechanism) {
    file_sync(ctx, file, RecordKind::SyncEnter, datasync as u64, mechanism);
}

/// `ext4_sync_file_exit(struct inode *, int ret)`, either kind.
#[inline(always)]
fn sync_file_exit(ctx: *mut c_void, inode: *const u8, ret: i32, mechanism: Mechanism) {
    try_sync(ctx, inode, RecordKind::SyncExit, ret as i64 as u64, mechanism);
}

/// `vfs_fsync_range(struct file *, loff_t start, loff_t end, int datasync)`:
/// what `generic_write_sync` (inline, no symbol) calls.
#[fentry(function = "vfs_fsync_range")]
pub fn fentry_vfs_fsync_range(ctx: FEntryContext) -> i32 {
    let datasync: i32 = ctx.arg(3);
    file_sync(
        ctx.as_ptr(),
        ctx.arg(0),
        RecordKind::SyncEnter,
        datasync as u64,
        Mechanism::Fentry,
    );
    0
}

/// fexit's context: the four arguments, then the return value.
#[fexit(function = "vfs_fsync_range")]
pub fn fexit_vfs_fsync_range(ctx: FExitContext) -> i32 {
    let ret: i32 = ctx.arg(4);
    file_sync(
        ctx.as_ptr(),
        ctx.arg(0),
        RecordKind::SyncExit,
        ret as i64 as u64,
        Mechanism::Fexit,
    );
    0
}

#[kprobe]
pub fn kprobe_vfs_fsync_range(ctx: ProbeContext) -> u32 {
    if let (Some(file), Some(datasync)) = (ctx.arg::<*const u8>(0), ctx.arg::<i32>(3)) {
        file_sync(
            ctx.as_ptr(),
            file,
            RecordKind::SyncEnter,
            datasync as u64,
            Mechanism::Kprobe,
        );
    }
    0
}

#[inline(always)]
fn file_sync(ctx: *mut c_void, file: *const u8, kind: RecordKind, arg: u64, mechanism: Mechanism) {
    if let Ok(inode) = file_inode(Via::of(mechanism), file) {
        try_sync(ctx, inode, kind, arg, mechanism);
    }
}

/// How an f2fs sync made things durable: `cp_reason` 0 wrote node pages
/// for roll-forward recovery (which rebuilds the size from the write's
/// blocks), anything else took a checkpoint of the in-memory inode, with
/// whatever `i_size` it had. A roll-forward counts only if no other f2fs
/// sync on the device was running when it returned (`EVENT_SYNC_ALONE`)
/// or it waited for every numbered node page (`EVENT_NODES_ALL`), and it
/// waited for its own (`EVENT_NODES_WAITED`).
/// Without a full timeline the exit only amends the first sync's step,
/// which the write's record carries.
#[inline(always)]
fn f2fs_sync_exit(inode: *const u8, cp_reason: i32, ret: i32, mechanism: Mechanism) {
    let alone = inode_dev(Via::of(mechanism), inode).is_some_and(f2fs_sync_ended);
    let waited = f2fs_nodes_waited();
    let flags = if cp_reason == 0 && ret == 0 {
        EVENT_ROLL_FORWARD | if alone { EVENT_SYNC_ALONE } else { 0 } | waited
    } else {
        0
    };
    if full_timeline() {
        let via = Via::of(mechanism);
        let Some(entry) = armed(via, inode) else {
            return;
        };
        let sz = entry_sizes(via, inode, entry);
        step(
            entry,
            &sz,
            Fact {
                pos: cp_reason as i64,
                flags,
                ..Fact::new(RecordKind::SyncExit, mechanism, ret as i64 as u64)
            },
            step_time(entry),
        );
        return;
    }
    let Some(entry) = armed(Via::of(mechanism), inode) else {
        return;
    };
    // SAFETY: map value pointer, valid while the program runs.
    // The exit of the write's first sync (whose step it amends), and
    // whether the write's size update came before that sync.
    let (first_sync, sized_first) = unsafe {
        let sync = &raw mut (*entry).rec.sync;
        if (*sync).ts_ns != 0 && (*sync).pos < 0 {
            (*sync).pos = cp_reason as i64;
            (*sync).flags |= flags;
            (true, (*entry).state & ARM_SIZE_SEEN != 0)
        } else {
            (false, false)
        }
    };
    if !first_sync {
        return;
    }
    // The first sync's exit: the shared rule says whether the write is
    // ordered by the path the sync took (a failed sync fails the write:
    // never ordered). Where its size update came first its verdict cannot
    // change now ([`try_sync`] leaves it to this). A roll-forward the rule
    // calls ordered without one rebuilds the size from the write's blocks,
    // so nothing later changes that verdict either; it still waits for its
    // completion and size update when they are to be shown, and is counted
    // now when they are not.
    let first = at_first_sync(entry, sized_first, -1, SyncPath::of(flags, cp_reason as i64));
    let ordered = ret == 0 && settled_ordered(&first);
    if sized_first || (ordered && counts_ordered()) {
        settle(entry, ordered);
    }
}

/// `arg` is datasync for `SyncEnter`, the return value for `SyncExit`.
/// The step's `pos` is -1: how the sync ended is not known yet (f2fs's
/// exit fills it in, [`f2fs_sync_exit`]). `ctx` is the program's context,
/// for the stack of a sync that comes before the write's size update (the
/// buggy order).
#[inline(always)]
pub fn try_sync(ctx: *mut c_void, inode: *const u8, kind: RecordKind, arg: u64, mechanism: Mechanism) {
    let full = full_timeline();
    // Sync exits are timeline detail.
    if kind == RecordKind::SyncExit && !full {
        return;
    }
    let via = Via::of(mechanism);
    let Some(entry) = armed(via, inode) else {
        return;
    };
    // Only the first sync counts for the verdict: skip the reads for the rest.
    // SAFETY: map value pointer, valid while the program runs.
    if !full && unsafe { (*entry).rec.sync.ts_ns } != 0 {
        return;
    }
    // Its covering size update came first: the shared rule needs nothing
    // this sync would read, and a write it settles as ordered is counted,
    // not sent, when the run counts them. Same rule, same answer as below,
    // which a sync of a write that is still open takes.
    // SAFETY: as above.
    if !full
        && kind == RecordKind::SyncEnter
        && counts_ordered()
        && unsafe { (*entry).state } & ARM_SIZE_SEEN != 0
        && settled_ordered(&at_first_sync(entry, true, -1, SyncPath::Unknown))
        && settle_counted(entry)
    {
        return;
    }
    let sz = entry_sizes(via, inode, entry);
    let ts = step_time(entry);
    // SAFETY: as above.
    let state = unsafe { (*entry).state };
    // The shared rule, at the sync's start (its path is not known yet):
    // the size came first (its update was seen, or this sync writes the
    // size it finds and finds it covering the write, btrfs).
    let sync_size = if kind == RecordKind::SyncEnter {
        sz.i_disksize
    } else {
        -1
    };
    let first = at_first_sync(entry, state & ARM_SIZE_SEEN != 0, sync_size, SyncPath::Unknown);
    let sized = first.sized();
    if kind == RecordKind::SyncEnter && state & ARM_SYNC_SEEN == 0 {
        // SAFETY: as above.
        unsafe { (*entry).state |= ARM_SYNC_SEEN };
        if wants_stack(!sized) {
            stack(ctx, entry, kind, mechanism, ts);
        }
    }
    step(
        entry,
        &sz,
        Fact {
            pos: -1,
            ..Fact::new(kind, mechanism, arg)
        },
        ts,
    );
    // A sync after the covering size update settles the verdict (ordered):
    // send the write now, and its completion finds nothing armed, which
    // is cheap. Otherwise the write waits for its completion and size
    // update, which make the violation's timeline. Where the sync's path
    // decides what lasts (f2fs), its exit settles it instead.
    if !full && kind == RecordKind::SyncEnter && settled_ordered(&first) {
        settle(entry, true);
    }
}

/// What the shared rule needs of an armed write at its first sync.
/// `sync_size`: the on-disk size the sync found, negative where not read.
#[inline(always)]
fn at_first_sync(entry: *const ArmedWrite, sized_before: bool, sync_size: i64, path: SyncPath) -> FirstSync {
    FirstSync {
        fs: entry_fs(entry),
        // SAFETY: map value pointer, valid while the program runs.
        end: unsafe { (*entry).end },
        new_extent: false,
        sized_before,
        sync_size,
        path,
    }
}
