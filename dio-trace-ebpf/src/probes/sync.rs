//! The sync `generic_write_sync` runs (it is inline: what we see is
//! `vfs_fsync_range` -> `ext4_sync_file`).
//!
//! Tracepoints `ext4:ext4_sync_file_enter(struct file *, int datasync)` and
//! `ext4:ext4_sync_file_exit(struct inode *, int ret)`.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use dio_trace_common::{kind::RecordKind, probe::Mechanism};

use crate::{
    emit::{Fact, inode_event},
    facts::{file_inode, inode_key, sizes},
    maps::DIO_CONFIG,
    probes::armed,
};

#[btf_tracepoint(function = "ext4_sync_file_enter")]
pub fn tp_ext4_sync_file_enter(ctx: BtfTracePointContext) -> i32 {
    let file: *const u8 = ctx.arg(0);
    let datasync: i32 = ctx.arg(1);
    let cfg = DIO_CONFIG.load();
    if let Ok(inode) = file_inode(&cfg, file) {
        try_sync(
            inode,
            RecordKind::SyncEnter,
            datasync as u64,
            Mechanism::Tracepoint,
        );
    }
    0
}

#[btf_tracepoint(function = "ext4_sync_file_exit")]
pub fn tp_ext4_sync_file_exit(ctx: BtfTracePointContext) -> i32 {
    let inode: *const u8 = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    try_sync(
        inode,
        RecordKind::SyncExit,
        ret as i64 as u64,
        Mechanism::Tracepoint,
    );
    0
}

/// `arg` is datasync for `SyncEnter`, the return value for `SyncExit`.
#[inline(always)]
pub fn try_sync(inode: *const u8, kind: RecordKind, arg: u64, mechanism: Mechanism) {
    let cfg = DIO_CONFIG.load();
    let Ok(key) = inode_key(&cfg, inode) else {
        return;
    };
    let Some(entry) = armed(&key) else {
        return;
    };
    let sz = sizes(&cfg, inode);
    inode_event(
        &key,
        &sz,
        Fact {
            kind,
            mechanism,
            pos: 0,
            len: 0,
            arg,
            flags: 0,
        },
        Some(entry),
    );
}
