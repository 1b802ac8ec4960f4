//! The end of `iomap_dio_complete`: on a correct kernel the size update and
//! the sync both happened before it.
//!
//! Tracepoint `iomap:iomap_dio_complete(struct kiocb *, int error,
//! ssize_t ret)`, Linux 6.4+; it fires after the sync.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use dio_trace_common::{
    arm::{ARM_COMPLETED, ARM_SIZE_SEEN},
    kind::RecordKind,
    probe::Mechanism,
};

use crate::{
    emit::{Fact, inode_event},
    facts::{file_inode, inode_key, iocb_file, sizes},
    maps::{ARMED, DIO_CONFIG},
    probes::armed,
};

#[btf_tracepoint(function = "iomap_dio_complete")]
pub fn tp_iomap_dio_complete(ctx: BtfTracePointContext) -> i32 {
    let iocb: *const u8 = ctx.arg(0);
    let error: i32 = ctx.arg(1);
    let ret: i64 = ctx.arg(2);
    try_complete(iocb, error, ret, RecordKind::CompleteExit, Mechanism::Tracepoint);
    0
}

/// `pos` carries the completion's error, `arg` its return value.
#[inline(always)]
pub fn try_complete(iocb: *const u8, error: i32, ret: i64, kind: RecordKind, mechanism: Mechanism) {
    let cfg = DIO_CONFIG.load();
    let Ok(file) = iocb_file(&cfg, iocb) else {
        return;
    };
    let Ok(inode) = file_inode(&cfg, file) else {
        return;
    };
    let Ok(key) = inode_key(&cfg, inode) else {
        return;
    };
    let Some(entry) = armed(&key) else {
        return;
    };
    let sz = sizes(&cfg, inode);
    let done = kind == RecordKind::CompleteExit;
    // SAFETY: map value pointer, valid while the program runs.
    let state = unsafe {
        if done {
            (*entry).state |= ARM_COMPLETED;
        }
        (*entry).state
    };
    inode_event(
        &key,
        &sz,
        Fact {
            kind,
            mechanism,
            pos: error as i64,
            len: 0,
            arg: ret as u64,
            flags: 0,
        },
        Some(entry),
    );
    if done && state & ARM_SIZE_SEEN != 0 {
        let _ = ARMED.remove(&key);
    }
}
