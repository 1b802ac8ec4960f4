//! One row per probe: what fact it gives, whether the verdict needs it, and
//! the mechanisms that can serve it in order of preference. `select.rs`
//! applies this table; nothing else decides how a probe attaches.

use dio_trace_common::probe::Mechanism;

/// How badly the verdict needs a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Without it no write can be judged.
    Required,
    /// Without it some verdicts become inconclusive (the coverage says which).
    Verdict,
    /// Nice to have in timelines only.
    Optional,
    /// Needed only when following processes (`run`, `--pid`).
    Follow,
}

/// One way to attach a probe.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    pub mechanism: Mechanism,
    /// Program name in the object file.
    pub program: &'static str,
    /// Tracepoint name (tp_btf) or kernel function.
    pub target: &'static str,
    /// First kernel that has the target, for messages.
    pub since: &'static str,
}

#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    pub name: &'static str,
    pub need: Need,
    /// What it tells, for `dio-trace info` and errors.
    pub about: &'static str,
    pub hooks: &'static [Hook],
}

pub const WRITE_BEGIN: &str = "write_begin";
pub const SIZE_UPDATE: &str = "size_update";
pub const SYNC_ENTER: &str = "sync_enter";
pub const SYNC_EXIT: &str = "sync_exit";
pub const COMPLETE: &str = "dio_complete";
pub const FOLLOW_FORK: &str = "follow_fork";

const fn tp(program: &'static str, target: &'static str, since: &'static str) -> Hook {
    Hook {
        mechanism: Mechanism::Tracepoint,
        program,
        target,
        since,
    }
}

pub static CATALOG: &[ProbeSpec] = &[
    ProbeSpec {
        name: WRITE_BEGIN,
        need: Need::Required,
        about: "a direct write starts: offset, length, ki_flags, i_size, i_disksize",
        hooks: &[tp("tp_iomap_dio_rw_begin", "iomap_dio_rw_begin", "6.4")],
    },
    ProbeSpec {
        name: SIZE_UPDATE,
        need: Need::Verdict,
        about: "__ext4_mark_inode_dirty: the size is journaled (i_disksize)",
        hooks: &[tp("tp_ext4_mark_inode_dirty", "ext4_mark_inode_dirty", "2.6.32")],
    },
    ProbeSpec {
        name: SYNC_ENTER,
        need: Need::Verdict,
        about: "generic_write_sync -> vfs_fsync_range -> ext4_sync_file starts",
        hooks: &[tp("tp_ext4_sync_file_enter", "ext4_sync_file_enter", "2.6.32")],
    },
    ProbeSpec {
        name: SYNC_EXIT,
        need: Need::Optional,
        about: "ext4_sync_file returns",
        hooks: &[tp("tp_ext4_sync_file_exit", "ext4_sync_file_exit", "2.6.32")],
    },
    ProbeSpec {
        name: COMPLETE,
        need: Need::Verdict,
        about: "iomap_dio_complete finishes (after the sync on every kernel)",
        hooks: &[tp("tp_iomap_dio_complete", "iomap_dio_complete", "6.4")],
    },
    ProbeSpec {
        name: FOLLOW_FORK,
        need: Need::Follow,
        about: "a followed process forks: its child is followed too",
        hooks: &[tp("tp_sched_process_fork", "sched_process_fork", "2.6.32")],
    },
];
