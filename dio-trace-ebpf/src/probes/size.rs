//! Size updates: `__ext4_mark_inode_dirty` copies the in-memory inode,
//! `i_disksize` included, into the running journal transaction. The one
//! that matters is the first whose `i_disksize` covers the write's end.
//!
//! Tracepoint `ext4:ext4_mark_inode_dirty(struct inode *, unsigned long IP)`.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use dio_trace_common::{
    arm::{ARM_COMPLETED, ARM_SIZE_SEEN},
    kind::RecordKind,
    probe::Mechanism,
};

use crate::{
    emit::{Fact, inode_event},
    facts::{inode_key, sizes},
    maps::{ARMED, DIO_CONFIG},
    probes::armed,
};

#[btf_tracepoint(function = "ext4_mark_inode_dirty")]
pub fn tp_ext4_mark_inode_dirty(ctx: BtfTracePointContext) -> i32 {
    let inode: *const u8 = ctx.arg(0);
    let ip: u64 = ctx.arg(1);
    try_size_update(inode, ip, RecordKind::MarkDirty, Mechanism::Tracepoint);
    0
}

#[inline(always)]
pub fn try_size_update(inode: *const u8, ip: u64, kind: RecordKind, mechanism: Mechanism) {
    let cfg = DIO_CONFIG.load();
    let Ok(key) = inode_key(&cfg, inode) else {
        return;
    };
    let Some(entry) = armed(&key) else {
        return;
    };
    let sz = sizes(&cfg, inode);
    // SAFETY: map value pointer, valid while the program runs.
    let state = unsafe {
        if sz.i_disksize >= (*entry).end {
            (*entry).state |= ARM_SIZE_SEEN;
        }
        (*entry).state
    };
    inode_event(
        &key,
        &sz,
        Fact {
            kind,
            mechanism,
            pos: 0,
            len: 0,
            arg: ip,
            flags: 0,
        },
        Some(entry),
    );
    // Completed and size seen: this write has nothing more to tell.
    if state & ARM_COMPLETED != 0 && state & ARM_SIZE_SEEN != 0 {
        let _ = ARMED.remove(&key);
    }
}
