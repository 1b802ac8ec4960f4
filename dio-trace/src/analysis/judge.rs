//! The rule itself: one write's events in, one verdict out.

use dio_trace_common::{
    fs::{FS_SLOTS, Fs},
    kind::RecordKind,
    record::{EVENT_NODES_WAITED, EVENT_ROLL_FORWARD, EVENT_SYNC_ALONE},
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

/// How the sync at the head of `from` ended, as far as roll-forward
/// recovery goes: its own step says so (whole-write records) or its exit
/// does (full timelines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RollForward {
    /// It failed, or its end was not seen.
    No,
    /// It took a checkpoint (f2fs's `cp_reason` not 0), which keeps the
    /// inode as it was.
    Checkpoint,
    /// It wrote the file's node pages for roll-forward, and no other sync
    /// on the device was running when it returned: the chain to them is
    /// durable.
    Alone,
    /// It wrote them, but beside another sync that may hold an earlier,
    /// not yet durable, link of the chain ([`EVENT_SYNC_ALONE`]).
    Shared,
    /// It wrote them, alone, but f2fs did not wait for them before its
    /// flush ([`EVENT_NODES_WAITED`]).
    Unwaited,
}

fn roll_forward(from: &[Event]) -> RollForward {
    // `pos` is the exit's `cp_reason` (on a whole-write record's sync
    // step too, which the exit amends), -1 where no exit was seen. A
    // failed sync fails the write, which is judged before this.
    let of = |e: &Event| {
        let has = |bit: u32| e.flags & bit != 0;
        match (
            has(EVENT_ROLL_FORWARD),
            has(EVENT_SYNC_ALONE),
            has(EVENT_NODES_WAITED),
        ) {
            (false, _, _) if e.pos > 0 => RollForward::Checkpoint,
            (false, _, _) => RollForward::No,
            (true, false, _) => RollForward::Shared,
            (true, true, false) => RollForward::Unwaited,
            (true, true, true) => RollForward::Alone,
        }
    };
    match of(&from[0]) {
        RollForward::No => from[1..]
            .iter()
            .find(|e| matches!(e.kind, RecordKind::SyncExit | RecordKind::SyncEnter))
            .filter(|e| e.kind == RecordKind::SyncExit)
            .map_or(RollForward::No, of),
        flagged => flagged,
    }
}

/// Why a roll-forward that is not [`RollForward::Alone`] is not "ordered".
fn unproven_roll_forward(fs: Fs, how: RollForward) -> String {
    let why = if how == RollForward::Unwaited {
        "but it did not wait for them before its flush (f2fs_wait_on_node_pages_writeback with \
         seq_id 0, as the first sync after a checkpoint gets), so the flush may have gone first"
    } else {
        "but another sync on the device was running when it returned (or its start was not seen): \
         recovery walks one chain of node blocks and stops at the first one not on disk"
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
/// alone on its device and having waited for them ([`roll_forward`]).
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
    if begin.new_extent() {
        return match sync_at {
            Some(s) => synced_in_order(fs, fs_cov, &events[s..]),
            None => no_sync(fs, complete.is_some(), cov, ViolationKind::SyncMissingNewExtent),
        };
    }
    let covers = |e: &Event| e.kind.is_size_update() && e.disksize().is_some_and(|d| d >= end);
    let carries = |e: &Event| e.disksize().is_some_and(|d| fs.sync_carries_size(d, end));
    match sync_at {
        // A size update covering the write came before the sync, or the
        // sync writes the size it finds and found it covering (btrfs):
        // ordered, where the sync's path cannot lose what it wrote.
        Some(s) if events[..s].iter().any(covers) || carries(&events[s]) => {
            synced_in_order(fs, fs_cov, &events[s..])
        }
        Some(s) => {
            if !fs_cov.size_update {
                return Verdict::Inconclusive(format!(
                    "the {} size-update probe ({}) is not attached",
                    fs.name(),
                    fs.size_step()
                ));
            }
            match roll_forward(&events[s..]) {
                RollForward::Alone => return Verdict::Ordered,
                how @ (RollForward::Shared | RollForward::Unwaited) => {
                    return Verdict::Inconclusive(unproven_roll_forward(fs, how));
                }
                RollForward::No | RollForward::Checkpoint => {}
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
        None => no_sync(fs, complete.is_some(), cov, ViolationKind::SyncMissing),
    }
}

/// A write whose first sync (the head of `from`) came after all it needed
/// (its covering size update; for a new-extent write, nothing): ordered,
/// where the sync's path cannot lose what it wrote
/// ([`Fs::sync_path_decides`]).
fn synced_in_order(fs: Fs, fs_cov: FsCoverage, from: &[Event]) -> Verdict {
    if !fs.sync_path_decides() {
        return Verdict::Ordered;
    }
    match roll_forward(from) {
        RollForward::Alone | RollForward::Checkpoint => Verdict::Ordered,
        how @ (RollForward::Shared | RollForward::Unwaited) => {
            Verdict::Inconclusive(unproven_roll_forward(fs, how))
        }
        RollForward::No if !fs_cov.sync_path => Verdict::Inconclusive(format!(
            "how the {} sync ended (its sync-exit probe) is not attached: what it wrote lasts by its \
             path (a checkpoint, or node pages for roll-forward recovery)",
            fs.name()
        )),
        RollForward::No => Verdict::Inconclusive(format!(
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
