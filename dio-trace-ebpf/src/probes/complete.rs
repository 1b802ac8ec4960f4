//! The completion: `iomap_dio_complete` runs `->end_io` (where fixed
//! kernels update the size) and `generic_write_sync`, then returns.
//!
//! - tracepoint `iomap:iomap_dio_complete(struct kiocb *, int error,
//!   ssize_t ret)`, 6.4+: fires at the very end, after the sync.
//! - fentry/fexit and kprobe/kretprobe on `iomap_dio_complete(struct
//!   iomap_dio *dio)`: the entry stashes the inode for the exit, because the
//!   function frees `dio` before it returns.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use dio_trace_common::{
    arm::{ARM_COMPLETED, ARM_SIZE_SEEN, ARM_SYNC_SEEN, ArmedWrite},
    kind::RecordKind,
    probe::Mechanism,
};

use crate::{
    emit::{Fact, full_timeline, retire, stack, step, step_time},
    facts::{Via, entry_sizes, file_inode, iocb_file, is_dsync, read},
    maps::{IN_CALL, config, pending_remove},
    probes::armed,
};

#[btf_tracepoint(function = "iomap_dio_complete")]
pub fn tp_iomap_dio_complete(ctx: BtfTracePointContext) -> i32 {
    let iocb: *const u8 = ctx.arg(0);
    let error: i32 = ctx.arg(1);
    let ret: i64 = ctx.arg(2);
    let via = Via::of(Mechanism::Tracepoint);
    if let Some(inode) = sync_write_inode(via, iocb) {
        forget_pending();
        emit(
            ctx.as_ptr(),
            via,
            inode,
            error,
            ret,
            RecordKind::CompleteExit,
            Mechanism::Tracepoint,
        );
    }
    0
}

#[fentry(function = "iomap_dio_complete")]
pub fn fentry_iomap_dio_complete(ctx: FEntryContext) -> i32 {
    enter(ctx.as_ptr(), ctx.arg(0), Mechanism::Fentry);
    0
}

#[fexit(function = "iomap_dio_complete")]
pub fn fexit_iomap_dio_complete(ctx: FExitContext) -> i32 {
    // fexit's context holds the arguments, then the return value.
    let ret: i64 = ctx.arg(1);
    exit(ctx.as_ptr(), ret, Mechanism::Fexit);
    0
}

#[kprobe]
pub fn kprobe_iomap_dio_complete(ctx: ProbeContext) -> u32 {
    if let Some(dio) = ctx.arg::<*const u8>(0) {
        enter(ctx.as_ptr(), dio, Mechanism::Kprobe);
    }
    0
}

#[kretprobe]
pub fn kretprobe_iomap_dio_complete(ctx: RetProbeContext) -> u32 {
    let ret: i64 = ctx.ret();
    exit(ctx.as_ptr(), ret, Mechanism::Kretprobe);
    0
}

/// Entry: note the inode for the exit probe and, with a full timeline,
/// report the entry.
#[inline(always)]
fn enter(ctx: *mut c_void, dio: *const u8, mechanism: Mechanism) {
    let via = Via::of(mechanism);
    let Ok(iocb) = read::<*const u8>(via, dio, config!(offsets.iomap_dio_iocb)) else {
        return;
    };
    let Some(inode) = sync_write_inode(via, iocb) else {
        return;
    };
    forget_pending();
    let Some(entry) = armed(via, inode) else {
        return;
    };
    settle(via, dio, iocb, entry);
    let _ = IN_CALL.insert(bpf_get_current_pid_tgid(), inode as u64, 0);
    // The entry is timeline detail; the exit is what the verdict needs.
    if full_timeline() {
        emit(ctx, via, inode, 0, 0, RecordKind::CompleteEnter, mechanism);
    }
}

/// The position and length the kernel really writes, for a write armed at
/// a hook that ran before the kernel settled them (an `O_APPEND` write
/// seen at `ext4_file_write_iter`'s entry): here `ki_pos` is still the
/// write's start (this function advances it) and `dio->size` is what was
/// submitted. Before any size update can be judged against the write's end.
#[inline(always)]
fn settle(via: Via, dio: *const u8, iocb: *const u8, entry: *mut ArmedWrite) {
    if config!(offsets.iomap_dio_size) == 0 {
        return;
    }
    let (Ok(pos), Ok(size)) = (
        read::<i64>(via, iocb, config!(offsets.kiocb_ki_pos)),
        read::<i64>(via, dio, config!(offsets.iomap_dio_size)),
    ) else {
        return;
    };
    if pos < 0 || size <= 0 {
        return;
    }
    // SAFETY: map value pointer, valid while the program runs.
    unsafe {
        (*entry).rec.begin.pos = pos;
        (*entry).rec.begin.len = size as u64;
        (*entry).end = pos + size;
    }
}

/// Exit: the inode comes from the entry's stash, as a plain number.
#[inline(always)]
fn exit(ctx: *mut c_void, ret: i64, mechanism: Mechanism) {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: read-only copy of a plain value.
    let Some(inode) = (unsafe { IN_CALL.get(id) }).copied() else {
        return;
    };
    let _ = IN_CALL.remove(id);
    emit(
        ctx,
        Via::Probe,
        inode as *const u8,
        0,
        ret,
        RecordKind::CompleteExit,
        mechanism,
    );
}

/// A sync write of this task is completing: whatever it left pending
/// (`extent.rs`) was mapped by now, and must not be matched by a later
/// mapping of the inode.
#[inline(always)]
fn forget_pending() {
    pending_remove(bpf_get_current_pid_tgid());
}

/// The inode of a sync-flavoured write's kiocb. Only those can be armed,
/// so every other completion leaves after one read.
#[inline(always)]
fn sync_write_inode(via: Via, iocb: *const u8) -> Option<*const u8> {
    let ki_flags: u32 = read(via, iocb, config!(offsets.kiocb_ki_flags)).ok()?;
    if !is_dsync(ki_flags) {
        return None;
    }
    let file = iocb_file(via, iocb).ok()?;
    file_inode(via, file).ok()
}

/// `pos` carries the completion's error, `arg` its return value. A write
/// is done when it completed and its size update was seen (fixed kernels
/// update the size inside the completion, buggy ones after it), or when it
/// failed (nothing to update). A completion that ends with no sync seen
/// sends its stack: the path that completed the write without syncing.
#[inline(always)]
fn emit(
    ctx: *mut c_void,
    via: Via,
    inode: *const u8,
    error: i32,
    ret: i64,
    kind: RecordKind,
    mechanism: Mechanism,
) {
    let Some(entry) = armed(via, inode) else {
        return;
    };
    let sz = entry_sizes(via, inode, entry);
    let done = kind == RecordKind::CompleteExit;
    // SAFETY: map value pointer, valid while the program runs.
    let state = unsafe {
        if done {
            (*entry).state |= ARM_COMPLETED;
        }
        (*entry).state
    };
    let ts = step_time(entry);
    if done && state & ARM_SYNC_SEEN == 0 {
        stack(ctx, entry, kind, mechanism, ts);
    }
    step(
        entry,
        &sz,
        Fact {
            pos: error as i64,
            ..Fact::new(kind, mechanism, ret as u64)
        },
        ts,
    );
    if done && (state & ARM_SIZE_SEEN != 0 || ret < 0 || error < 0) {
        retire(entry);
    }
}
