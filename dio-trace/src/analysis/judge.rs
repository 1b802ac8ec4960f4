//! The rule itself: one write's events in, one verdict out.

use dio_trace_common::{
    fs::{FS_SLOTS, Fs},
    kind::RecordKind,
    verdict::{FirstSync, SyncPath, settled_ordered},
};

use super::event::Event;

/// Which facts the attached probes can deliver, per filesystem where the
/// fact is the filesystem's own. A verdict that needs a missing fact is
/// inconclusive, never "ordered".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coverage {
    /// The completion (iomap's, shared by every filesystem).
    pub complete: bool,
    /// By [`Fs::slot`].
    pub fs: [FsCoverage; FS_SLOTS],
}

/// A filesystem's own facts: its size update and its sync, and, where
/// the sync's path decides what lasts (f2fs: roll-forward or checkpoint),
/// how the sync ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsCoverage {
    pub size_update: bool,
    pub sync: bool,
    /// How the sync ended is known (always, where it does not matter).
    pub sync_path: bool,
}

impl Coverage {
    pub const ALL: Coverage = Coverage {
        complete: true,
        fs: [FsCoverage {
            size_update: true,
            sync: true,
            sync_path: true,
        }; FS_SLOTS],
    };

    pub fn of(&self, fs: Fs) -> FsCoverage {
        self.fs[fs.slot()]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// The sync ran while the on-disk size still lacked the write (the
    /// ext4 bug of 5.5..6.6, fixed by 91562895f803).
    SyncBeforeSizeUpdate,
    /// A size-extending write's completion finished without any sync (the
    /// O_DSYNC appends of 6.15's d279c80e0bac).
    SyncMissing,
    /// A write into new or unwritten blocks inside the file (fallocated
    /// space, holes) finished without any sync: its extent conversion or
    /// allocation was never made durable (the other writes d279c80e0bac
    /// broke, which need no size update at all).
    SyncMissingNewExtent,
}

impl ViolationKind {
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::SyncBeforeSizeUpdate => "sync_before_size_update",
            ViolationKind::SyncMissing => "sync_missing",
            ViolationKind::SyncMissingNewExtent => "sync_missing_new_extent",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ordered,
    Violation(ViolationKind),
    Inconclusive(String),
    /// The write returned an error: it extended nothing, so it is not judged.
    Failed(i64),
}

impl Verdict {
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Ordered => "ordered",
            Verdict::Violation(_) => "violation",
            Verdict::Inconclusive(_) => "inconclusive",
            Verdict::Failed(_) => "failed",
        }
    }
}

/// How the sync at the head of `from` ended: its own step says so
/// (whole-write records, which its exit amends) or its exit does (full
/// timelines). `pos` is the exit's `cp_reason`, -1 where no exit was
/// seen; a failed sync fails the write, which is judged before this.
fn sync_path(from: &[Event]) -> SyncPath {
    let of = |e: &Event| SyncPath::of(e.flags, e.pos);
    match of(&from[0]) {
        SyncPath::Unknown => from[1..]
            .iter()
            .find(|e| matches!(e.kind, RecordKind::SyncExit | RecordKind::SyncEnter))
            .filter(|e| e.kind == RecordKind::SyncExit)
            .map_or(SyncPath::Unknown, of),
        known => known,
    }
}

/// The shared rule's view of the write's first sync, the head of
/// `events[s..]`.
fn first_sync(begin: &Event, events: &[Event], s: usize) -> FirstSync {
    let end = begin.end();
    FirstSync {
        fs: begin.fs(),
        end,
        new_extent: begin.new_extent(),
        sized_before: events[..s]
            .iter()
            .any(|e| e.kind.is_size_update() && e.disksize().is_some_and(|d| d >= end)),
        sync_size: events[s].disksize().unwrap_or(-1),
        path: sync_path(&events[s..]),
    }
}

/// Why a roll-forward is not "ordered": another sync ran beside it and it
/// did not wait for every numbered page, or (alone, or having waited for
/// every one) it did not wait for its own.
fn unproven_roll_forward(fs: Fs, alone: bool, all: bool) -> String {
    let why = if alone || all {
        "but it did not wait for them before its flush (f2fs_wait_on_node_pages_writeback with \
         seq_id 0, as the first sync after a checkpoint gets), so the flush may have gone first"
    } else {
        "but another sync on the device was running when it returned (or its start was not seen), \
         and it waited only up to its own node page, not for every one numbered before its flush: \
         recovery walks one chain of node blocks and stops at the first one not on disk, and a page \
         numbered after ours can come first in the chain"
    };
    format!(
        "the {} sync wrote node pages for roll-forward recovery, {why}; this write may not survive a crash",
        fs.name()
    )
}

/// Judge one write from its `WriteBegin` and the events of its inode that
/// followed, in kernel order. `lost` says records of it may be missing.
///
/// Ordered: the first sync is preceded by a size update (the write's
/// filesystem's: `mark_inode_dirty` on ext4) whose on-disk size covers the
/// write's end, or it writes the size it finds and finds it covering
/// ([`Fs::sync_carries_size`], btrfs), or the kernel says that sync made the write's blocks
/// durable for roll-forward recovery, which rebuilds the size (f2fs),
/// alone on its device and having waited for them ([`sync_path`]); the
/// shared rule decides each "ordered" ([`settled_ordered`]).
/// Violation: that sync comes first and took no such path, or the
/// completion ends with no sync at all. A write counted for its new or
/// unwritten blocks ([`Event::new_extent`]) needs no size update: its sync
/// alone makes it ordered.
pub fn judge(begin: &Event, events: &[Event], lost: bool, cov: Coverage) -> Verdict {
    let end = begin.end();
    let fs = begin.fs();
    let fs_cov = cov.of(fs);
    let complete = events.iter().find(|e| e.kind == RecordKind::CompleteExit);
    if let Some(c) = complete {
        let ret = c.arg as i64;
        if ret < 0 {
            return Verdict::Failed(ret);
        }
    }
    if lost || events.iter().any(|e| e.lost > begin.lost) {
        return Verdict::Inconclusive(
            "some of this write's records were lost (ring buffer full); raise --ringbuf-size".into(),
        );
    }
    let sync_at = events.iter().position(|e| e.kind == RecordKind::SyncEnter);
    let Some(s) = sync_at else {
        let kind = if begin.new_extent() {
            ViolationKind::SyncMissingNewExtent
        } else {
            ViolationKind::SyncMissing
        };
        return no_sync(fs, complete.is_some(), cov, kind);
    };
    let first = first_sync(begin, events, s);
    // Its size (or new blocks) came first, or the sync writes the size it
    // finds and found it covering (btrfs): ordered where the sync's path
    // cannot lose what it wrote.
    if first.sized() {
        return synced_in_order(fs, fs_cov, &first);
    }
    // The sync came first: only a roll-forward, alone and waited for,
    // rebuilds the size, from the write's blocks: no size update needed,
    // so none needs to have been watched for (the kernel programs settle
    // such a write at the sync's exit by the same rule).
    if settled_ordered(&first) {
        return Verdict::Ordered;
    }
    if !fs_cov.size_update {
        return Verdict::Inconclusive(format!(
            "the {} size-update probe ({}) is not attached",
            fs.name(),
            fs.size_step()
        ));
    }
    if let SyncPath::RollForward { alone, all, .. } = first.path {
        return Verdict::Inconclusive(unproven_roll_forward(fs, alone, all));
    }
    if !fs_cov.sync_path {
        return Verdict::Inconclusive(format!(
            "the {} sync ran before the size update, and how it ended (its sync-exit probe) is not \
             attached: a sync that writes node pages for roll-forward recovery keeps the size",
            fs.name()
        ));
    }
    match events[s].disksize() {
        Some(d) if d >= end => Verdict::Inconclusive(format!(
            "{} covered the write when the sync began, but no size update was seen before it",
            fs.disk_size_field()
        )),
        _ => Verdict::Violation(ViolationKind::SyncBeforeSizeUpdate),
    }
}

/// A write whose first sync came after all it needed (its covering size
/// update; for a new-extent write, nothing): ordered by the shared rule
/// ([`settled_ordered`]) where the sync's path cannot lose what it wrote
/// ([`Fs::sync_path_decides`]), else why not.
fn synced_in_order(fs: Fs, fs_cov: FsCoverage, first: &FirstSync) -> Verdict {
    if settled_ordered(first) {
        return Verdict::Ordered;
    }
    match first.path {
        SyncPath::RollForward { alone, all, .. } => {
            Verdict::Inconclusive(unproven_roll_forward(fs, alone, all))
        }
        _ if !fs_cov.sync_path => Verdict::Inconclusive(format!(
            "how the {} sync ended (its sync-exit probe) is not attached: what it wrote lasts by its \
             path (a checkpoint, or node pages for roll-forward recovery)",
            fs.name()
        )),
        _ => Verdict::Inconclusive(format!(
            "how the {} sync ended was not seen (it failed, or its exit was missed): what it wrote \
             lasts by its path",
            fs.name()
        )),
    }
}

/// A write that saw no sync: `kind` if it completed without one and the
/// probes could have seen both, else why it cannot be judged.
fn no_sync(fs: Fs, completed: bool, cov: Coverage, kind: ViolationKind) -> Verdict {
    if !cov.of(fs).sync {
        Verdict::Inconclusive(format!(
            "the {} sync probe ({}) is not attached",
            fs.name(),
            fs.sync_step()
        ))
    } else if completed {
        Verdict::Violation(kind)
    } else if !cov.complete {
        Verdict::Inconclusive(
            "no sync seen and the completion probe (iomap_dio_complete) is not attached".into(),
        )
    } else {
        Verdict::Inconclusive("the write's completion was not observed".into())
    }
}

#[cfg(test)]
mod tests {
    use dio_trace_common::{
        probe::Mechanism,
        record::{
            EVENT_DSYNC, EVENT_FS_SHIFT, EVENT_NEW_EXTENT, EVENT_NODES_WAITED, EVENT_ROLL_FORWARD,
            EVENT_SYNC_ALONE,
        },
    };
    use proptest::prelude::*;

    use super::*;

    /// One step of a random write: (kind, the size field's value, flags
    /// of a sync, `pos` of a sync: f2fs's `cp_reason` or -1).
    fn step() -> impl Strategy<Value = (u8, i64, u32, i64)> {
        (
            0u8..4,
            prop_oneof![
                Just(0i64),
                Just(4096),
                Just(8191),
                Just(8192),
                Just(12288),
                Just(-1)
            ],
            (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(r, a, w)| {
                [
                    (r, EVENT_ROLL_FORWARD),
                    (a, EVENT_SYNC_ALONE),
                    (w, EVENT_NODES_WAITED),
                ]
                .iter()
                .filter(|(on, _)| *on)
                .fold(0, |bits, (_, b)| bits | b)
            }),
            prop_oneof![Just(-1i64), Just(0), Just(3), Just(7)],
        )
    }

    fn event(kind: RecordKind, ts: u64, disk: i64, flags: u32, pos: i64) -> Event {
        Event {
            kind,
            mechanism: Mechanism::Kprobe,
            ts_ns: ts,
            pid: 1,
            tgid: 1,
            cpu: 0,
            lost: 0,
            dev: 1,
            ino: 1,
            pos,
            len: 0,
            i_size: disk.max(0),
            i_disksize: disk,
            flags: if disk < 0 {
                flags | dio_trace_common::record::EVENT_NO_DISKSIZE
            } else {
                flags
            },
            arg: 0,
            comm: "writer".into(),
            caller: None,
            cgroup: None,
            stack: None,
        }
    }

    proptest! {
        // The cases that tell (an f2fs roll-forward, its flags, its probes)
        // are a few in a hundred: enough runs to meet each of them.
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Wherever a write's first sync was seen and nothing of it was
        /// lost, the shared rule says "ordered" exactly where the engine's
        /// whole verdict does, whichever of the probes were attached: the
        /// kernel, which settles (and, showing only problems, counts) by
        /// the rule without knowing which were, and the engine cannot
        /// drift.
        #[test]
        fn the_shared_rule_and_the_verdict_agree(
            fs in prop::sample::select(Fs::ALL.to_vec()),
            new_extent in any::<bool>(),
            steps in prop::collection::vec(step(), 1..6),
            (complete, size_update, sync, sync_path) in (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        ) {
            let begin = Event {
                kind: RecordKind::WriteBegin,
                pos: 4096,
                len: 4096,
                flags: EVENT_DSYNC
                    | (fs as u32) << EVENT_FS_SHIFT
                    | if new_extent { EVENT_NEW_EXTENT } else { 0 },
                ..event(RecordKind::WriteBegin, 0, 4096, 0, 4096)
            };
            let kinds = [
                RecordKind::MarkDirty,
                RecordKind::SyncEnter,
                RecordKind::SyncExit,
                RecordKind::CompleteExit,
            ];
            let events: Vec<Event> = steps
                .iter()
                .enumerate()
                .map(|(i, &(k, disk, flags, pos))| {
                    let kind = kinds[usize::from(k)];
                    let sync = matches!(kind, RecordKind::SyncEnter | RecordKind::SyncExit);
                    event(kind, i as u64 + 1, disk, if sync { flags } else { 0 }, if sync { pos } else { 0 })
                })
                .collect();
            let Some(s) = events.iter().position(|e| e.kind == RecordKind::SyncEnter) else {
                return Ok(());
            };
            let mut cov = Coverage { complete, ..Coverage::ALL };
            cov.fs[fs.slot()] = FsCoverage { size_update, sync, sync_path };
            let verdict = judge(&begin, &events, false, cov);
            let rule = settled_ordered(&first_sync(&begin, &events, s));
            prop_assert_eq!(rule, verdict == Verdict::Ordered, "{:?} {:?}", verdict, events);
        }
    }
}
