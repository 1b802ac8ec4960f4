//! Size updates: `__ext4_mark_inode_dirty` copies the in-memory inode,
//! `i_disksize` included, into the running journal transaction. The one
//! that matters is the first whose `i_disksize` covers the write's end.
//!
//! Tracepoint `ext4:ext4_mark_inode_dirty(struct inode *, unsigned long IP)`.

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, kprobe, raw_tracepoint},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext},
};
use dio_trace_common::{
    arm::{ARM_COMPLETED, ARM_SIZE_SEEN},
    kind::RecordKind,
    probe::Mechanism,
};

use crate::{
    emit::{Fact, full_timeline, retire, step},
    facts::{Via, read, sizes},
    probes::armed,
};

#[btf_tracepoint(function = "ext4_mark_inode_dirty")]
pub fn tp_ext4_mark_inode_dirty(ctx: BtfTracePointContext) -> i32 {
    try_size_update(
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
    try_size_update(ctx.arg(1), 0, RecordKind::MarkDirty, Mechanism::Fentry);
    0
}

#[kprobe]
pub fn kprobe_ext4_mark_inode_dirty(ctx: ProbeContext) -> u32 {
    if let Some(inode) = ctx.arg(1) {
        try_size_update(
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
    try_size_update(ctx.arg(0), 0, RecordKind::InodeExtension, Mechanism::Fentry);
    0
}

#[kprobe]
pub fn kprobe_ext4_handle_inode_extension(ctx: ProbeContext) -> u32 {
    if let Some(inode) = ctx.arg(0) {
        try_size_update(
            inode,
            return_address(&ctx),
            RecordKind::InodeExtension,
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
pub fn try_size_update(inode: *const u8, ip: u64, kind: RecordKind, mechanism: Mechanism) {
    let via = Via::of(mechanism);
    let Some(entry) = armed(via, inode) else {
        return;
    };
    let sz = sizes(via, inode);
    // SAFETY: map value pointer, valid while the program runs.
    let (state, first_cover) = unsafe {
        let covers = kind == RecordKind::MarkDirty && sz.i_disksize >= (*entry).end;
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
    step(entry, &sz, Fact::new(kind, mechanism, ip));
    // Completed and size seen: this write has nothing more to tell.
    if state & ARM_COMPLETED != 0 && state & ARM_SIZE_SEEN != 0 {
        retire(entry);
    }
}
