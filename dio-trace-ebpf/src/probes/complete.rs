//! The completion: `iomap_dio_complete` runs `->end_io` (where fixed
//! kernels update the size) and `generic_write_sync`, then returns.
//!
//! - tracepoint `iomap:iomap_dio_complete(struct kiocb *, int error,
//!   ssize_t ret)`, 6.4+: fires at the very end, after the sync.
//! - fentry/fexit and kprobe/kretprobe on `iomap_dio_complete(struct
//!   iomap_dio *dio)`: the entry stashes the inode for the exit, because the
//!   function frees `dio` before it returns.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use dio_trace_common::{
    arm::{ARM_COMPLETED, ARM_SIZE_SEEN},
    config::{CONFIG_FULL_TIMELINE, Config},
    kind::RecordKind,
    probe::Mechanism,
};

use crate::{
    emit::{Fact, inode_event},
    facts::{file_inode, iocb_file, read, sizes},
    maps::{ARMED, DIO_CONFIG, IN_CALL},
    probes::armed,
};

#[btf_tracepoint(function = "iomap_dio_complete")]
pub fn tp_iomap_dio_complete(ctx: BtfTracePointContext) -> i32 {
    let iocb: *const u8 = ctx.arg(0);
    let error: i32 = ctx.arg(1);
    let ret: i64 = ctx.arg(2);
    let cfg = DIO_CONFIG.load();
    if let Some(inode) = sync_write_inode(&cfg, iocb) {
        emit(
            &cfg,
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
    enter(ctx.arg(0), Mechanism::Fentry);
    0
}

#[fexit(function = "iomap_dio_complete")]
pub fn fexit_iomap_dio_complete(ctx: FExitContext) -> i32 {
    // fexit's context holds the arguments, then the return value.
    let ret: i64 = ctx.arg(1);
    exit(ret, Mechanism::Fexit);
    0
}

#[kprobe]
pub fn kprobe_iomap_dio_complete(ctx: ProbeContext) -> u32 {
    if let Some(dio) = ctx.arg::<*const u8>(0) {
        enter(dio, Mechanism::Kprobe);
    }
    0
}

#[kretprobe]
pub fn kretprobe_iomap_dio_complete(ctx: RetProbeContext) -> u32 {
    let ret: i64 = ctx.ret();
    exit(ret, Mechanism::Kretprobe);
    0
}

/// Entry: note the inode for the exit probe and, with a full timeline,
/// report the entry.
#[inline(always)]
fn enter(dio: *const u8, mechanism: Mechanism) {
    let cfg = DIO_CONFIG.load();
    let Ok(iocb) = read::<*const u8>(dio, cfg.offsets.iomap_dio_iocb) else {
        return;
    };
    let Some(inode) = sync_write_inode(&cfg, iocb) else {
        return;
    };
    if armed(inode).is_none() {
        return;
    }
    let _ = IN_CALL.insert(&bpf_get_current_pid_tgid(), &(inode as u64), 0);
    // The entry is timeline detail; the exit is what the verdict needs.
    if cfg.flags & CONFIG_FULL_TIMELINE != 0 {
        emit(&cfg, inode, 0, 0, RecordKind::CompleteEnter, mechanism);
    }
}

/// Exit: the inode comes from the entry's stash.
#[inline(always)]
fn exit(ret: i64, mechanism: Mechanism) {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: read-only copy of a plain value.
    let Some(inode) = (unsafe { IN_CALL.get(&id) }).copied() else {
        return;
    };
    let _ = IN_CALL.remove(&id);
    let cfg = DIO_CONFIG.load();
    emit(
        &cfg,
        inode as *const u8,
        0,
        ret,
        RecordKind::CompleteExit,
        mechanism,
    );
}

/// The inode of a sync-flavoured write's kiocb. Only those can be armed,
/// so every other completion leaves after one read.
#[inline(always)]
fn sync_write_inode(cfg: &Config, iocb: *const u8) -> Option<*const u8> {
    let ki_flags: u32 = read(iocb, cfg.offsets.kiocb_ki_flags).ok()?;
    if ki_flags & cfg.iocb.dsync == 0 {
        return None;
    }
    let file = iocb_file(cfg, iocb).ok()?;
    file_inode(cfg, file).ok()
}

/// `pos` carries the completion's error, `arg` its return value.
#[inline(always)]
fn emit(cfg: &Config, inode: *const u8, error: i32, ret: i64, kind: RecordKind, mechanism: Mechanism) {
    let Some(entry) = armed(inode) else {
        return;
    };
    let sz = sizes(cfg, inode);
    let done = kind == RecordKind::CompleteExit;
    // SAFETY: map value pointer, valid while the program runs.
    let state = unsafe {
        if done {
            (*entry).state |= ARM_COMPLETED;
        }
        (*entry).state
    };
    inode_event(
        entry,
        &sz,
        Fact {
            kind,
            mechanism,
            pos: error as i64,
            len: 0,
            arg: ret as u64,
            flags: 0,
        },
    );
    if done && state & ARM_SIZE_SEEN != 0 {
        let _ = ARMED.remove(&(inode as u64));
    }
}
