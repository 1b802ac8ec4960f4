//! One row per probe: what fact it gives, whether the verdict needs it, and
//! the mechanisms that can serve it in order of preference. `select.rs`
//! applies this table; nothing else decides how a probe attaches.

use dio_trace_common::{
    fs::{FS_SLOTS, Fs},
    probe::Mechanism,
};

use crate::analysis::{Coverage, FsCoverage};

/// How badly the verdict needs a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Without it no write can be judged.
    Required,
    /// Without it some verdicts become inconclusive (the coverage says which).
    Verdict,
    /// Timeline detail only: attached with `--full-timeline`, else not at
    /// all (an attached program costs on every hit, even when it sends nothing).
    Timeline,
    /// Needed only when following processes (`run`, `--pid`).
    Follow,
    /// Counts writes that are not judged (a filesystem's buffered
    /// fallback): attached where it can be; without it those writes go
    /// unnamed, which the answer says where it judged nothing (they are no
    /// reason against the writes it did judge).
    Count,
}

/// One way to attach a probe: one program, or an entry/exit pair that
/// only works together (the exit reads what the entry stashed).
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    /// The mechanism reported for the probe.
    pub mechanism: Mechanism,
    /// Tracepoint name (tp_btf) or kernel function; `a+b` when the
    /// programs attach to different targets (the i-th program to the i-th).
    pub target: &'static str,
    /// First kernel that has the target, for messages.
    pub since: &'static str,
    /// Programs to load and attach, in order: (how, name in the object).
    pub programs: &'static [(Mechanism, &'static str)],
    /// The one filesystem whose events the target sees (a filesystem's
    /// own function standing in for iomap's); `None`: every filesystem's.
    pub only: Option<Fs>,
}

#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    pub name: &'static str,
    /// The filesystem whose fact it gives; `None`: every filesystem's
    /// (iomap's write start and completion). A filesystem's missing probe
    /// matters only to that filesystem's writes.
    pub fs: Option<Fs>,
    pub need: Need,
    /// What it tells, for `dio-trace info` and errors.
    pub about: &'static str,
    pub hooks: &'static [Hook],
}

pub const WRITE_BEGIN: &str = "write_begin";
pub const SIZE_UPDATE: &str = "size_update";
pub const INODE_EXTENSION: &str = "inode_extension";
pub const SYNC_ENTER: &str = "sync_enter";
pub const SYNC_EXIT: &str = "sync_exit";
pub const COMPLETE: &str = "dio_complete";
pub const NEW_EXTENT: &str = "new_extent";
pub const FOLLOW_FORK: &str = "follow_fork";
pub const XFS_SIZE_UPDATE: &str = "xfs_size_update";
pub const XFS_SYNC_ENTER: &str = "xfs_sync_enter";
pub const F2FS_SIZE_UPDATE: &str = "f2fs_size_update";
pub const F2FS_SYNC_ENTER: &str = "f2fs_sync_enter";
pub const F2FS_SYNC_EXIT: &str = "f2fs_sync_exit";
pub const F2FS_SYNC_COUNT: &str = "f2fs_sync_count";
pub const F2FS_NODE_WAIT: &str = "f2fs_node_wait";
pub const BTRFS_SYNC_ENTER: &str = "btrfs_sync_enter";
pub const BTRFS_FALLBACK: &str = "btrfs_buffered_fallback";

/// Each filesystem's (size update, sync, how the sync ended) rows, by
/// [`Fs::slot`]; the last only where the sync's path decides what lasts
/// ([`Fs::sync_path_decides`]), and all of its rows are needed for it.
/// ext4's keep the names they had when ext4 was the only filesystem:
/// recorded traces name them so.
pub const FS_FACT_PROBES: [(Fs, &str, &str, &[&str]); FS_SLOTS] = [
    (Fs::Ext4, SIZE_UPDATE, SYNC_ENTER, &[]),
    (Fs::Xfs, XFS_SIZE_UPDATE, XFS_SYNC_ENTER, &[]),
    (
        Fs::F2fs,
        F2FS_SIZE_UPDATE,
        F2FS_SYNC_ENTER,
        &[F2FS_SYNC_EXIT, F2FS_SYNC_COUNT, F2FS_NODE_WAIT],
    ),
    // btrfs's sync logs the i_size it finds (`Fs::sync_logs_size`): its
    // start is the size fact too.
    (Fs::Btrfs, BTRFS_SYNC_ENTER, BTRFS_SYNC_ENTER, &[]),
];

/// What the verdict can rest on, given which probes are served.
pub fn coverage(served: impl Fn(&str) -> bool) -> Coverage {
    let mut fs = Coverage::ALL.fs;
    for (f, size, sync, path) in FS_FACT_PROBES {
        fs[f.slot()] = FsCoverage {
            size_update: served(size),
            sync: served(sync),
            sync_path: path.iter().all(|p| served(p)),
        };
    }
    Coverage {
        complete: served(COMPLETE),
        fs,
    }
}

use Mechanism::{Fentry, Fexit, Kprobe, Kretprobe, RawTracepoint, Tracepoint};

const fn hook(
    mechanism: Mechanism,
    target: &'static str,
    since: &'static str,
    programs: &'static [(Mechanism, &'static str)],
) -> Hook {
    Hook {
        mechanism,
        target,
        since,
        programs,
        only: None,
    }
}

/// `vfs_fsync_range`, what `generic_write_sync` calls: every filesystem's
/// sync at once, so each filesystem's sync row starts and ends with it.
const VFS_FSYNC_KPROBE: Hook = hook(
    Kprobe,
    "vfs_fsync_range",
    "2.6.32",
    &[(Kprobe, "kprobe_vfs_fsync_range")],
);
const VFS_FSYNC_FENTRY: Hook = hook(
    Fentry,
    "vfs_fsync_range",
    "2.6.32",
    &[(Fentry, "fentry_vfs_fsync_range")],
);

/// Preference within each row: kprobes, then tracepoints (tp_btf), then
/// fentry/fexit, by which programs the kernel can skip. A program that is
/// preempted on a CPU is skipped for every other task entering its hook
/// there until it finishes (`recursion_misses`). kprobe programs run with
/// preemption disabled; fentry/fexit programs (5.12+) never do, and 7.x
/// runs tracepoint programs preemptible too. Measured on Debian 7.3.4, 8
/// writers on 2 CPUs: kprobes skipped nothing in 18 runs, tp_btf skipped
/// in 10 of 12, fentry in 5 of 6 (9 of 12 in another series). Tracepoints
/// still serve every probe where kprobes are off (this project's hosts),
/// fentry what nothing else can, and any skip is counted and named.
pub static CATALOG: &[ProbeSpec] = &[
    ProbeSpec {
        name: WRITE_BEGIN,
        fs: None,
        need: Need::Required,
        about: "a direct write starts: offset, length, ki_flags, i_size, on-disk size",
        hooks: &[
            // __iomap_dio_rw first: f2fs calls it directly, ext4 and XFS
            // through iomap_dio_rw.
            hook(
                Kprobe,
                "__iomap_dio_rw",
                "5.13",
                &[(Kprobe, "kprobe_iomap_dio_rw_core")],
            ),
            hook(Kprobe, "iomap_dio_rw", "5.5", &[(Kprobe, "kprobe_iomap_dio_rw")]),
            hook(
                Tracepoint,
                "iomap_dio_rw_begin",
                "6.4",
                &[(Tracepoint, "tp_iomap_dio_rw_begin")],
            ),
            hook(
                Fentry,
                "__iomap_dio_rw",
                "5.13",
                &[(Fentry, "fentry_iomap_dio_rw_core")],
            ),
            hook(Fentry, "iomap_dio_rw", "5.5", &[(Fentry, "fentry_iomap_dio_rw")]),
            Hook {
                only: Some(Fs::Ext4),
                ..hook(
                    Fentry,
                    "ext4_file_write_iter",
                    "5.5",
                    &[(Fentry, "fentry_ext4_file_write_iter")],
                )
            },
        ],
    },
    ProbeSpec {
        name: SIZE_UPDATE,
        fs: Some(Fs::Ext4),
        need: Need::Verdict,
        about: "__ext4_mark_inode_dirty: the size is journaled (i_disksize)",
        hooks: &[
            hook(
                Kprobe,
                "__ext4_mark_inode_dirty",
                "5.8",
                &[(Kprobe, "kprobe_ext4_mark_inode_dirty")],
            ),
            hook(
                Kprobe,
                "ext4_mark_inode_dirty",
                "5.5",
                &[(Kprobe, "kprobe_ext4_mark_inode_dirty")],
            ),
            hook(
                Tracepoint,
                "ext4_mark_inode_dirty",
                "2.6.32",
                &[(Tracepoint, "tp_ext4_mark_inode_dirty")],
            ),
            hook(
                RawTracepoint,
                "ext4_mark_inode_dirty",
                "2.6.32",
                &[(RawTracepoint, "raw_ext4_mark_inode_dirty")],
            ),
            hook(
                Fentry,
                "__ext4_mark_inode_dirty",
                "5.8",
                &[(Fentry, "fentry_ext4_mark_inode_dirty")],
            ),
            // 5.5..5.7: a function, not yet a macro for __ext4_mark_inode_dirty.
            hook(
                Fentry,
                "ext4_mark_inode_dirty",
                "5.5",
                &[(Fentry, "fentry_ext4_mark_inode_dirty")],
            ),
        ],
    },
    ProbeSpec {
        name: INODE_EXTENSION,
        fs: Some(Fs::Ext4),
        need: Need::Timeline,
        about: "ext4_handle_inode_extension starts (static; absent where inlined)",
        hooks: &[
            hook(
                Kprobe,
                "ext4_handle_inode_extension",
                "5.5",
                &[(Kprobe, "kprobe_ext4_handle_inode_extension")],
            ),
            hook(
                Fentry,
                "ext4_handle_inode_extension",
                "5.5",
                &[(Fentry, "fentry_ext4_handle_inode_extension")],
            ),
        ],
    },
    ProbeSpec {
        name: SYNC_ENTER,
        fs: Some(Fs::Ext4),
        need: Need::Verdict,
        about: "generic_write_sync -> vfs_fsync_range -> ext4_sync_file starts",
        hooks: &[
            VFS_FSYNC_KPROBE,
            hook(
                Tracepoint,
                "ext4_sync_file_enter",
                "2.6.32",
                &[(Tracepoint, "tp_ext4_sync_file_enter")],
            ),
            hook(
                RawTracepoint,
                "ext4_sync_file_enter",
                "2.6.32",
                &[(RawTracepoint, "raw_ext4_sync_file_enter")],
            ),
            VFS_FSYNC_FENTRY,
        ],
    },
    ProbeSpec {
        name: SYNC_EXIT,
        fs: Some(Fs::Ext4),
        need: Need::Timeline,
        about: "that sync returns",
        hooks: &[
            hook(
                Tracepoint,
                "ext4_sync_file_exit",
                "2.6.32",
                &[(Tracepoint, "tp_ext4_sync_file_exit")],
            ),
            hook(
                RawTracepoint,
                "ext4_sync_file_exit",
                "2.6.32",
                &[(RawTracepoint, "raw_ext4_sync_file_exit")],
            ),
            hook(
                Fexit,
                "vfs_fsync_range",
                "2.6.32",
                &[(Fexit, "fexit_vfs_fsync_range")],
            ),
        ],
    },
    ProbeSpec {
        name: XFS_SIZE_UPDATE,
        fs: Some(Fs::Xfs),
        need: Need::Verdict,
        about: "XFS logs the size (i_disk_size) with the write's extent conversion or xfs_setfilesize",
        hooks: &[
            hook(
                Kprobe,
                "xfs_iomap_write_unwritten+xfs_setfilesize",
                "2.6.32",
                &[
                    (Kprobe, "kprobe_xfs_iomap_write_unwritten"),
                    (Kprobe, "kprobe_xfs_setfilesize"),
                ],
            ),
            hook(
                Tracepoint,
                "xfs_unwritten_convert+xfs_setfilesize",
                "2.6.32",
                &[
                    (Tracepoint, "tp_xfs_unwritten_convert"),
                    (Tracepoint, "tp_xfs_setfilesize"),
                ],
            ),
            hook(
                RawTracepoint,
                "xfs_unwritten_convert+xfs_setfilesize",
                "2.6.32",
                &[
                    (RawTracepoint, "raw_xfs_unwritten_convert"),
                    (RawTracepoint, "raw_xfs_setfilesize"),
                ],
            ),
            hook(
                Fentry,
                "xfs_iomap_write_unwritten+xfs_setfilesize",
                "2.6.32",
                &[
                    (Fentry, "fentry_xfs_iomap_write_unwritten"),
                    (Fentry, "fentry_xfs_setfilesize"),
                ],
            ),
        ],
    },
    ProbeSpec {
        name: XFS_SYNC_ENTER,
        fs: Some(Fs::Xfs),
        need: Need::Verdict,
        about: "generic_write_sync -> vfs_fsync_range -> xfs_file_fsync starts",
        hooks: &[
            VFS_FSYNC_KPROBE,
            hook(
                Tracepoint,
                "xfs_file_fsync",
                "2.6.32",
                &[(Tracepoint, "tp_xfs_file_fsync")],
            ),
            hook(
                RawTracepoint,
                "xfs_file_fsync",
                "2.6.32",
                &[(RawTracepoint, "raw_xfs_file_fsync")],
            ),
            VFS_FSYNC_FENTRY,
        ],
    },
    ProbeSpec {
        name: F2FS_SIZE_UPDATE,
        fs: Some(Fs::F2fs),
        need: Need::Verdict,
        about: "f2fs_i_size_write raises i_size and marks the inode dirty (the next sync writes it)",
        hooks: &[
            hook(
                Kprobe,
                "f2fs_mark_inode_dirty_sync",
                "4.9",
                &[(Kprobe, "kprobe_f2fs_mark_inode_dirty_sync")],
            ),
            hook(
                Fentry,
                "f2fs_mark_inode_dirty_sync",
                "4.9",
                &[(Fentry, "fentry_f2fs_mark_inode_dirty_sync")],
            ),
        ],
    },
    ProbeSpec {
        name: F2FS_SYNC_ENTER,
        fs: Some(Fs::F2fs),
        need: Need::Verdict,
        about: "generic_write_sync -> vfs_fsync_range -> f2fs_sync_file starts",
        hooks: &[
            VFS_FSYNC_KPROBE,
            hook(
                Tracepoint,
                "f2fs_sync_file_enter",
                "3.8",
                &[(Tracepoint, "tp_f2fs_sync_file_enter")],
            ),
            hook(
                RawTracepoint,
                "f2fs_sync_file_enter",
                "3.8",
                &[(RawTracepoint, "raw_f2fs_sync_file_enter")],
            ),
            VFS_FSYNC_FENTRY,
        ],
    },
    ProbeSpec {
        name: F2FS_SYNC_EXIT,
        fs: Some(Fs::F2fs),
        need: Need::Verdict,
        about: "f2fs_sync_file returns, with cp_reason: node pages for roll-forward (0) or a checkpoint (why)",
        hooks: &[
            hook(
                Tracepoint,
                "f2fs_sync_file_exit",
                "3.8",
                &[(Tracepoint, "tp_f2fs_sync_file_exit")],
            ),
            hook(
                RawTracepoint,
                "f2fs_sync_file_exit",
                "3.8",
                &[(RawTracepoint, "raw_f2fs_sync_file_exit")],
            ),
        ],
    },
    ProbeSpec {
        name: F2FS_SYNC_COUNT,
        fs: Some(Fs::F2fs),
        need: Need::Verdict,
        about: "every f2fs_sync_file start, counted per device: whether another sync ran beside a roll-forward",
        hooks: &[
            hook(
                Tracepoint,
                "f2fs_sync_file_enter",
                "3.8",
                &[(Tracepoint, "tp_f2fs_sync_count")],
            ),
            hook(
                RawTracepoint,
                "f2fs_sync_file_enter",
                "3.8",
                &[(RawTracepoint, "raw_f2fs_sync_count")],
            ),
        ],
    },
    ProbeSpec {
        name: F2FS_NODE_WAIT,
        fs: Some(Fs::F2fs),
        need: Need::Verdict,
        about: "f2fs_wait_on_node_pages_writeback: did the sync wait for its node pages (seq_id 0 waits for none), \
                and for every one numbered before its own were written (seq_id at least the last given, \
                f2fs_sb_info.fsync_seg_id, read at f2fs_need_inode_block_update, or else at the wait)",
        hooks: &[
            // The bound read once the sync's node pages are allocated: a
            // page another sync numbers after that cannot come first in
            // the chain, so it does not leave the write unproven.
            hook(
                Kprobe,
                "f2fs_need_inode_block_update+f2fs_wait_on_node_pages_writeback",
                "4.19",
                &[
                    (Kprobe, "kprobe_f2fs_need_inode_block_update"),
                    (Kprobe, "kprobe_f2fs_wait_on_node_pages_writeback"),
                ],
            ),
            hook(
                Kprobe,
                "f2fs_wait_on_node_pages_writeback",
                "4.19",
                &[(Kprobe, "kprobe_f2fs_wait_on_node_pages_writeback")],
            ),
        ],
    },
    ProbeSpec {
        name: BTRFS_SYNC_ENTER,
        fs: Some(Fs::Btrfs),
        need: Need::Verdict,
        about: "generic_write_sync -> vfs_fsync_range -> btrfs_sync_file starts; the i_size it finds is what it logs",
        hooks: &[
            VFS_FSYNC_KPROBE,
            // Renamed btrfs_sync_file_enter in 7.0 (with an exit beside it).
            hook(
                Tracepoint,
                "btrfs_sync_file_enter",
                "7.0",
                &[(Tracepoint, "tp_btrfs_sync_file_enter")],
            ),
            hook(
                Tracepoint,
                "btrfs_sync_file",
                "3.0",
                &[(Tracepoint, "tp_btrfs_sync_file")],
            ),
            hook(
                RawTracepoint,
                "btrfs_sync_file_enter",
                "7.0",
                &[(RawTracepoint, "raw_btrfs_sync_file_enter")],
            ),
            hook(
                RawTracepoint,
                "btrfs_sync_file",
                "3.0",
                &[(RawTracepoint, "raw_btrfs_sync_file")],
            ),
            VFS_FSYNC_FENTRY,
        ],
    },
    ProbeSpec {
        name: BTRFS_FALLBACK,
        fs: Some(Fs::Btrfs),
        need: Need::Count,
        about: "direct writes btrfs wrote through the page cache: btrfs_buffered_write for a direct kiocb, or inferred from its sync",
        hooks: &[
            hook(
                Kprobe,
                "btrfs_buffered_write",
                "6.1",
                &[(Kprobe, "kprobe_btrfs_buffered_write")],
            ),
            hook(
                Fentry,
                "btrfs_buffered_write",
                "6.1",
                &[(Fentry, "fentry_btrfs_buffered_write")],
            ),
            // Inferred, where neither hook above loads: a btrfs sync of a
            // direct, sync-flavoured file its task made no direct write to
            // (probes/fallback.rs says what it cannot tell apart).
            hook(
                Tracepoint,
                "btrfs_sync_file_enter",
                "7.0",
                &[(Tracepoint, "tp_btrfs_fallback_sync_enter")],
            ),
            hook(
                Tracepoint,
                "btrfs_sync_file",
                "3.0",
                &[(Tracepoint, "tp_btrfs_fallback_sync")],
            ),
            hook(
                RawTracepoint,
                "btrfs_sync_file_enter",
                "7.0",
                &[(RawTracepoint, "raw_btrfs_fallback_sync_enter")],
            ),
            hook(
                RawTracepoint,
                "btrfs_sync_file",
                "3.0",
                &[(RawTracepoint, "raw_btrfs_fallback_sync")],
            ),
        ],
    },
    ProbeSpec {
        name: COMPLETE,
        fs: None,
        need: Need::Verdict,
        about: "iomap_dio_complete: runs end_io and the sync, then finishes",
        hooks: &[
            hook(
                Kretprobe,
                "iomap_dio_complete",
                "5.5",
                &[
                    (Kprobe, "kprobe_iomap_dio_complete"),
                    (Kretprobe, "kretprobe_iomap_dio_complete"),
                ],
            ),
            hook(
                Tracepoint,
                "iomap_dio_complete",
                "6.4",
                &[(Tracepoint, "tp_iomap_dio_complete")],
            ),
            hook(
                Fexit,
                "iomap_dio_complete",
                "5.5",
                &[
                    (Fentry, "fentry_iomap_dio_complete"),
                    (Fexit, "fexit_iomap_dio_complete"),
                ],
            ),
        ],
    },
    ProbeSpec {
        name: NEW_EXTENT,
        fs: None,
        need: Need::Verdict,
        about: "the blocks a direct write goes into: new or unwritten ones count a write that does not extend",
        hooks: &[
            hook(
                Kretprobe,
                "iomap_iter",
                "5.15",
                &[(Kprobe, "kprobe_iomap_iter"), (Kretprobe, "kretprobe_iomap_iter")],
            ),
            hook(
                Kprobe,
                "iomap_dio_actor",
                "5.5",
                &[(Kprobe, "kprobe_iomap_dio_actor")],
            ),
            hook(
                Tracepoint,
                "iomap_iter_dstmap",
                "5.15",
                &[(Tracepoint, "tp_iomap_iter_dstmap")],
            ),
            hook(
                Tracepoint,
                "iomap_apply_dstmap",
                "5.5",
                &[(Tracepoint, "tp_iomap_apply_dstmap")],
            ),
            hook(Fexit, "iomap_iter", "5.15", &[(Fexit, "fexit_iomap_iter")]),
            hook(
                Fentry,
                "iomap_dio_actor",
                "5.5",
                &[(Fentry, "fentry_iomap_dio_actor")],
            ),
        ],
    },
    ProbeSpec {
        name: FOLLOW_FORK,
        fs: None,
        need: Need::Follow,
        about: "a followed process forks: its child is followed too",
        hooks: &[hook(
            Tracepoint,
            "sched_process_fork",
            "2.6.32",
            &[(Tracepoint, "tp_sched_process_fork")],
        )],
    },
];

impl Hook {
    /// What the `i`-th program attaches to.
    pub fn target_of(&self, i: usize) -> &'static str {
        let mut parts = self.target.split('+');
        match parts.clone().nth(1) {
            None => self.target,
            Some(_) => parts.nth(i).unwrap_or(self.target),
        }
    }
}

/// The probe a program (by its name in the object) serves.
pub fn probe_of_program(program: &str) -> Option<&'static str> {
    CATALOG
        .iter()
        .find(|spec| {
            spec.hooks
                .iter()
                .any(|h| h.programs.iter().any(|(_, p)| *p == program))
        })
        .map(|spec| spec.name)
}
