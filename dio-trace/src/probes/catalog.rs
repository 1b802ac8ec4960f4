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
    /// Timeline detail only: attached with `--full-timeline`, else not at
    /// all (an attached program costs on every hit, even when it sends nothing).
    Timeline,
    /// Needed only when following processes (`run`, `--pid`).
    Follow,
}

/// One way to attach a probe: one program, or an entry/exit pair that
/// only works together (the exit reads what the entry stashed).
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    /// The mechanism reported for the probe.
    pub mechanism: Mechanism,
    /// Tracepoint name (tp_btf) or kernel function.
    pub target: &'static str,
    /// First kernel that has the target, for messages.
    pub since: &'static str,
    /// Programs to load and attach, in order: (how, name in the object).
    pub programs: &'static [(Mechanism, &'static str)],
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
pub const INODE_EXTENSION: &str = "inode_extension";
pub const SYNC_ENTER: &str = "sync_enter";
pub const SYNC_EXIT: &str = "sync_exit";
pub const COMPLETE: &str = "dio_complete";
pub const FOLLOW_FORK: &str = "follow_fork";

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
    }
}

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
        need: Need::Required,
        about: "a direct write starts: offset, length, ki_flags, i_size, i_disksize",
        hooks: &[
            hook(Kprobe, "iomap_dio_rw", "5.5", &[(Kprobe, "kprobe_iomap_dio_rw")]),
            hook(
                Tracepoint,
                "iomap_dio_rw_begin",
                "6.4",
                &[(Tracepoint, "tp_iomap_dio_rw_begin")],
            ),
            hook(Fentry, "iomap_dio_rw", "5.5", &[(Fentry, "fentry_iomap_dio_rw")]),
            hook(
                Fentry,
                "ext4_file_write_iter",
                "5.5",
                &[(Fentry, "fentry_ext4_file_write_iter")],
            ),
        ],
    },
    ProbeSpec {
        name: SIZE_UPDATE,
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
        need: Need::Verdict,
        about: "generic_write_sync -> vfs_fsync_range -> ext4_sync_file starts",
        hooks: &[
            hook(
                Kprobe,
                "vfs_fsync_range",
                "2.6.32",
                &[(Kprobe, "kprobe_vfs_fsync_range")],
            ),
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
            hook(
                Fentry,
                "vfs_fsync_range",
                "2.6.32",
                &[(Fentry, "fentry_vfs_fsync_range")],
            ),
        ],
    },
    ProbeSpec {
        name: SYNC_EXIT,
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
        name: COMPLETE,
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
        name: FOLLOW_FORK,
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
