//! The start of a direct write: decide whether it is counted and arm it.
//!
//! Tracepoint `iomap:iomap_dio_rw_begin(struct kiocb *, struct iov_iter *,
//! unsigned int dio_flags, size_t done_before)`, Linux 6.4+; before that,
//! the entry of `iomap_dio_rw` with the same two first arguments.

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, kprobe},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext},
};
use dio_trace_common::{
    arm::ArmedWrite,
    counters::Counter,
    kind::RecordKind,
    probe::Mechanism,
    record::{EVENT_DSYNC, EVENT_SYNC},
};

use crate::{
    emit::{Fact, inode_event, path_record},
    facts::{file_inode, inode_key, iocb_file, is_ext4, read, sizes},
    maps::{ARMED, DIO_CONFIG, PATH_SENT, count},
    probes::{armed, task_passes},
};

#[btf_tracepoint(function = "iomap_dio_rw_begin")]
pub fn tp_iomap_dio_rw_begin(ctx: BtfTracePointContext) -> i32 {
    try_write_begin(ctx.arg(0), ctx.arg(1), Mechanism::Tracepoint);
    0
}

/// `iomap_dio_rw(struct kiocb *, struct iov_iter *, ...)`: every kernel
/// with iomap direct I/O (5.5+), also those without the tracepoint.
#[fentry(function = "iomap_dio_rw")]
pub fn fentry_iomap_dio_rw(ctx: FEntryContext) -> i32 {
    try_write_begin(ctx.arg(0), ctx.arg(1), Mechanism::Fentry);
    0
}

/// `ext4_file_write_iter(struct kiocb *, struct iov_iter *)`: for fentry
/// where `iomap_dio_rw` cannot be traced (7 arguments: BPF trampolines
/// took at most 6 before 6.x). Buffered writes pass here too and leave at
/// the `IOCB_DIRECT` test.
#[fentry(function = "ext4_file_write_iter")]
pub fn fentry_ext4_file_write_iter(ctx: FEntryContext) -> i32 {
    try_write_begin(ctx.arg(0), ctx.arg(1), Mechanism::Fentry);
    0
}

#[kprobe]
pub fn kprobe_iomap_dio_rw(ctx: ProbeContext) -> u32 {
    if let (Some(iocb), Some(iter)) = (ctx.arg(0), ctx.arg(1)) {
        try_write_begin(iocb, iter, Mechanism::Kprobe);
    }
    0
}

/// A write is counted when it is direct, sync-flavoured (`IOCB_DSYNC`,
/// which the kernel also sets for `O_SYNC` and `IS_SYNC` inodes) and ends
/// past the smaller of `i_size` and `i_disksize` (ext4's own test for an
/// extending write, `ext4_extending_io`). The cheap tests come first: a
/// direct write without sync semantics, the common case on busy hosts,
/// costs two reads and a counter.
#[inline(always)]
pub fn try_write_begin(iocb: *const u8, iter: *const u8, mechanism: Mechanism) {
    let cfg = DIO_CONFIG.load();
    let Ok(ki_flags) = read::<u32>(iocb, cfg.offsets.kiocb_ki_flags) else {
        count(Counter::ReadFailed);
        return;
    };
    if ki_flags & cfg.iocb.direct == 0 {
        return;
    }
    let Ok(dir) = read::<u8>(iter, cfg.offsets.iov_iter_dir) else {
        count(Counter::ReadFailed);
        return;
    };
    if u32::from(dir) & cfg.iocb.dir_mask == 0 {
        return; // a direct read
    }
    if !task_passes(&cfg) {
        count(Counter::Filtered);
        return;
    }
    count(Counter::DirectWrites);
    if ki_flags & cfg.iocb.dsync == 0 {
        count(Counter::NotSync);
        return;
    }
    let Ok(file) = iocb_file(&cfg, iocb) else {
        count(Counter::ReadFailed);
        return;
    };
    let Ok(inode) = file_inode(&cfg, file) else {
        count(Counter::ReadFailed);
        return;
    };
    let Ok(key) = inode_key(&cfg, inode) else {
        count(Counter::ReadFailed);
        return;
    };
    if cfg.filter.dev != 0 && key.dev != cfg.filter.dev {
        count(Counter::Filtered);
        return;
    }
    match is_ext4(&cfg, inode) {
        Ok(true) => {}
        Ok(false) => {
            count(Counter::OtherFs);
            return;
        }
        Err(_) => {
            count(Counter::ReadFailed);
            return;
        }
    }
    let pos: i64 = read(iocb, cfg.offsets.kiocb_ki_pos).unwrap_or(-1);
    let len: u64 = read(iter, cfg.offsets.iov_iter_count).unwrap_or(0);
    let sz = sizes(&cfg, inode);
    let end = pos.wrapping_add(len as i64);
    let on_disk = if sz.i_disksize < sz.i_size {
        sz.i_disksize
    } else {
        sz.i_size
    };
    let addr = inode as u64;
    if pos < 0 || end <= on_disk {
        count(Counter::NotExtending);
        // A later write supersedes whatever this inode was armed for.
        let _ = ARMED.remove(&addr);
        return;
    }
    let arm = ArmedWrite {
        end,
        lost: 0,
        state: 0,
        key,
    };
    if ARMED.insert(&addr, &arm, 0).is_err() {
        count(Counter::ArmFailed);
        return;
    }
    let Some(entry) = armed(inode) else {
        count(Counter::ArmFailed);
        return;
    };
    count(Counter::Armed);
    let mut flags = EVENT_DSYNC;
    if ki_flags & cfg.iocb.sync != 0 {
        flags |= EVENT_SYNC;
    }
    inode_event(
        entry,
        &sz,
        Fact {
            kind: RecordKind::WriteBegin,
            mechanism,
            pos,
            len,
            arg: ki_flags as u64,
            flags,
        },
    );
    let generation = read::<u32>(inode, cfg.offsets.inode_i_generation).unwrap_or(0);
    // SAFETY: read-only copy of a plain value.
    let sent = unsafe { PATH_SENT.get(&key) }.copied();
    if sent != Some(generation)
        && let Ok(dentry) = read::<*const u8>(file, cfg.offsets.file_f_path_dentry)
    {
        path_record(&cfg, dentry, mechanism, entry);
        let _ = PATH_SENT.insert(&key, &generation, 0);
    }
}
