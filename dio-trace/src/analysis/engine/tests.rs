//! Engine tests over hand-built sequences: the orders of NOTES §1 and the
//! ways a trace can be incomplete.

use dio_trace_common::{
    fs::Fs,
    kind::RecordKind::{self, *},
    probe::Mechanism,
    record::{
        EVENT_DSYNC, EVENT_FS_SHIFT, EVENT_NEW_EXTENT, EVENT_NO_DISKSIZE, EVENT_NODES_ALL,
        EVENT_NODES_WAITED, EVENT_ROLL_FORWARD, EVENT_SYNC, EVENT_SYNC_ALONE,
    },
};

use super::*;
use crate::analysis::judge::ViolationKind;

const DEV: u32 = 7 << 20;

fn ev(kind: RecordKind, ino: u64, ts: u64) -> Event {
    Event {
        kind,
        mechanism: Mechanism::Tracepoint,
        ts_ns: ts,
        pid: 100,
        tgid: 100,
        cpu: 0,
        lost: 0,
        dev: DEV,
        ino,
        flags: 0,
        i_size: 4096,
        i_disksize: 4096,
        pos: 0,
        len: 0,
        arg: 0,
        comm: "writer".into(),
        caller: None,
        cgroup: None,
        stack: None,
    }
}

/// A 4 KiB O_SYNC append at 4096 to a 4096-byte file.
fn begin(ino: u64, ts: u64, flags: u32) -> Event {
    Event {
        pos: 4096,
        len: 4096,
        flags,
        ..ev(WriteBegin, ino, ts)
    }
}

fn dirty(ino: u64, ts: u64, disksize: i64) -> Event {
    Event {
        i_size: 8192,
        i_disksize: disksize,
        ..ev(MarkDirty, ino, ts)
    }
}

fn sync(ino: u64, ts: u64, disksize: i64) -> Event {
    Event {
        i_size: 8192,
        i_disksize: disksize,
        ..ev(SyncEnter, ino, ts)
    }
}

fn complete(ino: u64, ts: u64) -> Event {
    Event {
        arg: 4096,
        ..ev(CompleteExit, ino, ts)
    }
}

fn run(inputs: Vec<Input>) -> (Vec<WriteReport>, Tally) {
    let mut e = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    for i in inputs {
        out.extend(e.push(i));
    }
    out.extend(e.finish());
    (out, e.tally().clone())
}

fn events(evs: Vec<Event>) -> Vec<Input> {
    evs.into_iter().map(Input::Event).collect()
}

#[test]
fn fixed_order_is_ordered() {
    // end_io journals the size, then the sync, then the completion ends.
    let (out, t) = run(events(vec![
        begin(1, 0, EVENT_SYNC | EVENT_DSYNC),
        dirty(1, 5, 4096), // block allocation: old size
        dirty(1, 10, 8192),
        sync(1, 20, 8192),
        complete(1, 30),
    ]));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].verdict, Verdict::Ordered);
    assert_eq!(out[0].events.len(), 4);
    assert_eq!((t.ordered, t.violations, t.counted()), (1, 0, 1));
}

#[test]
fn buggy_order_is_a_violation_with_the_late_update_in_its_timeline() {
    let (out, t) = run(events(vec![
        begin(1, 0, EVENT_DSYNC),
        sync(1, 20, 4096),
        complete(1, 30),
        dirty(1, 40, 8192),
    ]));
    assert_eq!(
        out[0].verdict,
        Verdict::Violation(ViolationKind::SyncBeforeSizeUpdate)
    );
    assert_eq!(out[0].events.last().unwrap().kind, MarkDirty);
    assert_eq!(t.violations, 1);
}

#[test]
fn completion_without_any_sync_is_a_violation() {
    let (out, _) = run(events(vec![
        begin(1, 0, EVENT_DSYNC),
        dirty(1, 10, 8192),
        complete(1, 30),
    ]));
    assert_eq!(out[0].verdict, Verdict::Violation(ViolationKind::SyncMissing));
}

/// A 4 KiB O_DSYNC write at 0 into fallocated (unwritten) blocks of an
/// 8192-byte file: it extends nothing.
fn into_fallocated(ino: u64) -> Event {
    Event {
        pos: 0,
        i_size: 8192,
        i_disksize: 8192,
        ..begin(ino, 0, EVENT_DSYNC | EVENT_NEW_EXTENT)
    }
}

#[test]
fn a_write_into_new_blocks_is_ordered_by_its_sync_alone() {
    // No size update is seen or needed: i_disksize covers the write.
    let (out, t) = run(events(vec![
        into_fallocated(1),
        sync(1, 20, 8192),
        complete(1, 30),
    ]));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].verdict, Verdict::Ordered);
    assert_eq!((t.ordered, t.counted()), (1, 1));
}

#[test]
fn a_write_into_new_blocks_without_a_sync_has_its_own_kind() {
    let (out, t) = run(events(vec![into_fallocated(1), complete(1, 30)]));
    assert_eq!(
        out[0].verdict,
        Verdict::Violation(ViolationKind::SyncMissingNewExtent)
    );
    assert_eq!(t.violations, 1);
    // Without the sync probe it cannot be judged; without its completion
    // it is not yet a violation.
    let mut blind = Coverage::ALL;
    blind.fs[Fs::Ext4.slot()].sync = false;
    let v = crate::analysis::judge::judge(&into_fallocated(1), &[complete(1, 30)], false, blind);
    assert!(matches!(v, Verdict::Inconclusive(_)), "{v:?}");
    let (out, _) = run(events(vec![into_fallocated(1)]));
    assert!(
        matches!(out[0].verdict, Verdict::Inconclusive(_)),
        "{:?}",
        out[0].verdict
    );
}

#[test]
fn a_write_into_written_blocks_inside_the_file_is_not_counted() {
    // The FUA overwrite a kernel may rightly leave unsynced: no new blocks.
    let plain = Event {
        flags: EVENT_DSYNC,
        ..into_fallocated(1)
    };
    let (out, t) = run(events(vec![plain, complete(1, 30)]));
    assert!(out.is_empty());
    assert_eq!((t.counted(), t.not_counted), (0, 1));
}

#[test]
fn non_extending_writes_are_not_counted() {
    let overwrite = Event {
        pos: 0,
        ..begin(1, 0, EVENT_SYNC | EVENT_DSYNC)
    };
    let (out, t) = run(events(vec![overwrite, sync(1, 10, 4096), complete(1, 20)]));
    assert!(out.is_empty());
    assert_eq!((t.not_counted, t.counted()), (1, 0));
}

#[test]
fn writes_without_sync_semantics_are_not_counted() {
    let (out, t) = run(events(vec![begin(1, 0, 0), dirty(1, 10, 8192), complete(1, 20)]));
    assert!(out.is_empty());
    assert_eq!((t.not_counted, t.counted()), (1, 0));
}

#[test]
fn extending_past_disksize_alone_counts() {
    // i_size already covers the write (delalloc), i_disksize does not.
    let b = Event {
        pos: 0,
        i_size: 8192,
        i_disksize: 0,
        ..begin(1, 0, EVENT_DSYNC)
    };
    let (out, _) = run(events(vec![b, sync(1, 10, 0), complete(1, 20)]));
    assert_eq!(
        out[0].verdict,
        Verdict::Violation(ViolationKind::SyncBeforeSizeUpdate)
    );
}

#[test]
fn two_inodes_interleaved_are_judged_apart() {
    let (out, t) = run(events(vec![
        begin(1, 0, EVENT_DSYNC),
        begin(2, 1, EVENT_DSYNC),
        sync(2, 2, 4096), // inode 2: sync first
        dirty(1, 3, 8192),
        sync(1, 4, 8192),
        complete(1, 5),
        complete(2, 6),
        dirty(2, 7, 8192),
    ]));
    let verdict = |ino| out.iter().find(|w| w.begin.ino == ino).unwrap().verdict.clone();
    assert_eq!(verdict(1), Verdict::Ordered);
    assert_eq!(
        verdict(2),
        Verdict::Violation(ViolationKind::SyncBeforeSizeUpdate)
    );
    assert_eq!((t.ordered, t.violations), (1, 1));
}

#[test]
fn a_lost_event_marker_makes_writes_in_flight_inconclusive() {
    let mut inputs = events(vec![begin(1, 0, EVENT_DSYNC)]);
    inputs.push(Input::Lost { records: 3, ts_ns: 5 });
    inputs.extend(events(vec![sync(1, 20, 4096), complete(1, 30)]));
    let (out, t) = run(inputs);
    assert!(
        matches!(out[0].verdict, Verdict::Inconclusive(_)),
        "{:?}",
        out[0].verdict
    );
    assert_eq!((t.inconclusive, t.violations, t.lost_records), (1, 0, 3));
}

#[test]
fn a_per_inode_loss_count_makes_that_write_inconclusive() {
    let lost_sync = Event {
        lost: 1,
        ..sync(1, 20, 8192)
    };
    let (out, _) = run(events(vec![
        begin(1, 0, EVENT_DSYNC),
        dirty(1, 10, 8192),
        lost_sync,
        complete(1, 30),
    ]));
    assert!(matches!(out[0].verdict, Verdict::Inconclusive(_)));
}

#[test]
fn a_completion_that_never_arrives_is_inconclusive() {
    let (out, t) = run(events(vec![begin(1, 0, EVENT_DSYNC), dirty(1, 10, 8192)]));
    assert_eq!(
        out[0].verdict,
        Verdict::Inconclusive("the write's completion was not observed".into())
    );
    assert_eq!(t.inconclusive, 1);
}

#[test]
fn a_stalled_write_is_closed_by_tick() {
    let mut e = Engine::new(EngineConfig::default());
    assert!(e.push(Input::Event(begin(1, 0, EVENT_DSYNC))).is_empty());
    assert!(e.tick(1_000_000_000).is_empty());
    let out = e.tick(31_000_000_000);
    assert!(matches!(out[0].verdict, Verdict::Inconclusive(_)));
    assert_eq!(e.open_writes(), 0);
}

#[test]
fn a_violation_closes_after_lingering_for_the_late_update() {
    let mut e = Engine::new(EngineConfig::default());
    for ev in [begin(1, 0, EVENT_DSYNC), sync(1, 10, 4096), complete(1, 20)] {
        assert!(e.push(Input::Event(ev)).is_empty());
    }
    let out = e.tick(20 + 300_000_000);
    assert_eq!(
        out[0].verdict,
        Verdict::Violation(ViolationKind::SyncBeforeSizeUpdate)
    );
}

#[test]
fn a_missing_size_probe_is_inconclusive_not_a_violation() {
    let mut coverage = Coverage::ALL;
    coverage.fs[Fs::Ext4.slot()].size_update = false;
    let mut e = Engine::new(EngineConfig {
        coverage,
        ..EngineConfig::default()
    });
    for ev in [begin(1, 0, EVENT_DSYNC), sync(1, 10, 4096), complete(1, 20)] {
        e.push(Input::Event(ev));
    }
    let out = e.finish();
    assert!(matches!(out[0].verdict, Verdict::Inconclusive(_)));
}

/// The filesystem of a write, as its record's flags carry it.
fn on(fs: Fs, flags: u32) -> u32 {
    flags | (fs as u32) << EVENT_FS_SHIFT
}

#[test]
fn each_filesystem_s_size_update_counts_for_its_writes() {
    for (fs, kind) in [
        (Fs::Xfs, XfsUnwrittenConvert),
        (Fs::Xfs, XfsSetFilesize),
        (Fs::F2fs, F2fsMarkDirty),
    ] {
        let size = Event {
            kind,
            ..dirty(1, 5, 8192)
        };
        // f2fs's sync lasts by its path: here it rolled forward alone.
        let synced = Event {
            flags: if fs.sync_path_decides() {
                EVENT_ROLL_FORWARD | EVENT_SYNC_ALONE | EVENT_NODES_WAITED
            } else {
                0
            },
            pos: if fs.sync_path_decides() { 0 } else { -1 },
            ..sync(1, 10, 8192)
        };
        let (out, t) = run(events(vec![
            begin(1, 0, on(fs, EVENT_DSYNC)),
            size,
            synced,
            complete(1, 20),
        ]));
        assert_eq!(out[0].verdict, Verdict::Ordered, "{fs:?} {kind:?}");
        assert_eq!(t.by_fs[fs.slot()], 1);
        // f2fs's order (NOTES §8): the sync finds the old size, the size
        // write comes after the completion.
        let late = Event {
            kind,
            ..dirty(1, 30, 8192)
        };
        let (out, _) = run(events(vec![
            begin(1, 0, on(fs, EVENT_DSYNC)),
            sync(1, 10, 4096),
            complete(1, 20),
            late,
        ]));
        assert_eq!(
            out[0].verdict,
            Verdict::Violation(ViolationKind::SyncBeforeSizeUpdate),
            "{fs:?}"
        );
    }
}

/// btrfs raises i_size before the I/O and its sync logs the i_size it
/// finds: no size update of its own comes, the sync's size decides. A
/// btrfs that synced before raising i_size (f2fs's order) is a violation.
#[test]
fn a_btrfs_sync_that_finds_the_size_covering_orders_the_write() {
    let (out, t) = run(events(vec![
        begin(1, 0, on(Fs::Btrfs, EVENT_DSYNC)),
        sync(1, 10, 8192),
        complete(1, 20),
    ]));
    assert_eq!(out[0].verdict, Verdict::Ordered);
    assert_eq!(t.by_fs[Fs::Btrfs.slot()], 1);
    // Closed at its completion: nothing more is waited for.
    let mut e = Engine::new(EngineConfig::default());
    let mut closed = Vec::new();
    for x in [
        begin(1, 0, on(Fs::Btrfs, EVENT_DSYNC)),
        sync(1, 10, 8192),
        complete(1, 20),
    ] {
        closed.extend(e.push(Input::Event(x)));
    }
    assert_eq!(closed.len(), 1, "closed without lingering");
    for short in [4096, 8191] {
        let (out, _) = run(events(vec![
            begin(1, 0, on(Fs::Btrfs, EVENT_DSYNC)),
            sync(1, 10, short),
            complete(1, 20),
        ]));
        assert_eq!(
            out[0].verdict,
            Verdict::Violation(ViolationKind::SyncBeforeSizeUpdate),
            "{short}"
        );
    }
    // The same sync's size on ext4 is no size update (its journal holds
    // i_disksize, which only its size update sets).
    let (out, _) = run(events(vec![
        begin(1, 0, EVENT_DSYNC),
        sync(1, 10, 8192),
        complete(1, 20),
    ]));
    assert!(
        matches!(out[0].verdict, Verdict::Inconclusive(_)),
        "{:?}",
        out[0].verdict
    );
    // A size unread is no size, whatever the write's end (a 1-byte
    // write at 0 too).
    let (out, _) = run(events(vec![
        Event {
            pos: 0,
            len: 1,
            i_size: 0,
            i_disksize: 0,
            ..begin(1, 0, on(Fs::Btrfs, EVENT_DSYNC))
        },
        Event {
            flags: EVENT_NO_DISKSIZE,
            ..sync(1, 10, 8192)
        },
        complete(1, 20),
    ]));
    assert_ne!(out[0].verdict, Verdict::Ordered);
    let (out, _) = run(events(vec![
        begin(1, 0, on(Fs::Btrfs, EVENT_DSYNC)),
        Event {
            flags: EVENT_NO_DISKSIZE,
            ..sync(1, 10, 8192)
        },
        complete(1, 20),
    ]));
    assert_ne!(out[0].verdict, Verdict::Ordered);
}

/// f2fs syncs before its size write; what lasts depends on the sync's
/// path (docs/filesystems.md: the crash ground truth).
#[test]
fn an_f2fs_sync_that_rolls_forward_keeps_the_write_one_that_checkpoints_does_not() {
    let late = Event {
        kind: F2fsMarkDirty,
        ..dirty(1, 30, 8192)
    };
    let case = |sync_flags: u32, exit: Option<u32>, cov: Coverage| {
        let mut evs = vec![
            begin(1, 0, on(Fs::F2fs, EVENT_SYNC | EVENT_DSYNC)),
            Event {
                flags: sync_flags,
                ..sync(1, 10, 4096)
            },
        ];
        if let Some(flags) = exit {
            evs.push(Event {
                flags,
                pos: if flags == 0 { 3 } else { 0 },
                ..ev(SyncExit, 1, 15)
            });
        }
        evs.extend([complete(1, 20), late.clone()]);
        first_verdict(evs, cov)
    };
    let all = Coverage::ALL;
    let alone = EVENT_ROLL_FORWARD | EVENT_SYNC_ALONE | EVENT_NODES_WAITED;
    // Whole-write records: the exit amended the sync's own step.
    assert_eq!(case(alone, None, all), Verdict::Ordered);
    // Full timelines: the exit is its own event.
    assert_eq!(case(0, Some(alone), all), Verdict::Ordered);
    // Beside another sync, having waited for every node page numbered
    // before its flush (patches/f2fs-fsync-wait-all-numbered.patch): the
    // chain ahead of its page is on disk.
    let all_waited = EVENT_ROLL_FORWARD | EVENT_NODES_WAITED | EVENT_NODES_ALL;
    assert_eq!(case(all_waited, None, all), Verdict::Ordered);
    assert_eq!(case(0, Some(all_waited), all), Verdict::Ordered);
    // Every page numbered, but its own not waited for: not proven.
    assert!(matches!(
        case(EVENT_ROLL_FORWARD | EVENT_NODES_ALL, None, all),
        Verdict::Inconclusive(_)
    ));
    // Beside another sync, the chain to the write's node pages may break:
    // neither ordered nor a violation, in either shape.
    for (step, exit) in [(EVENT_ROLL_FORWARD, None), (0, Some(EVENT_ROLL_FORWARD))] {
        let Verdict::Inconclusive(why) = case(step, exit, all) else {
            panic!("a roll-forward beside another sync must be inconclusive");
        };
        assert!(why.contains("another sync"), "{why}");
    }
    // Alone without a roll-forward (a checkpoint) is still a violation.
    assert_eq!(
        case(0, Some(EVENT_SYNC_ALONE), all),
        Verdict::Violation(ViolationKind::SyncBeforeSizeUpdate)
    );
    let checkpoint = Verdict::Violation(ViolationKind::SyncBeforeSizeUpdate);
    assert_eq!(case(0, Some(0), all), checkpoint);
    assert_eq!(case(0, None, all), checkpoint);
    let mut blind = all;
    blind.fs[Fs::F2fs.slot()].sync_path = false;
    assert!(matches!(case(0, None, blind), Verdict::Inconclusive(_)));
}

/// With its size update first, an f2fs write is ordered only once its
/// sync's path is known to keep it: a checkpoint, or a roll-forward with
/// no other sync beside it (the chain of node blocks).
#[test]
fn an_f2fs_write_sized_first_is_judged_by_how_its_sync_ended() {
    let case = |flags: u32, pos: i64, cov: Coverage| {
        let evs = vec![
            begin(1, 0, on(Fs::F2fs, EVENT_SYNC | EVENT_DSYNC)),
            Event {
                kind: F2fsMarkDirty,
                ..dirty(1, 5, 8192)
            },
            Event {
                flags,
                pos,
                ..sync(1, 10, 8192)
            },
            complete(1, 20),
        ];
        first_verdict(evs, cov)
    };
    let all = Coverage::ALL;
    let alone = EVENT_ROLL_FORWARD | EVENT_SYNC_ALONE | EVENT_NODES_WAITED;
    assert_eq!(case(alone, 0, all), Verdict::Ordered);
    // A checkpoint (cp_reason 3, a hard link) keeps the inode as it is.
    assert_eq!(case(0, 3, all), Verdict::Ordered);
    let why = |v: Verdict| match v {
        Verdict::Inconclusive(w) => w,
        other => panic!("want inconclusive, got {other:?}"),
    };
    assert!(why(case(EVENT_ROLL_FORWARD | EVENT_NODES_WAITED, 0, all)).contains("another sync"));
    // Alone, but the node pages were not waited for (seq_id 0).
    assert!(why(case(EVENT_ROLL_FORWARD | EVENT_SYNC_ALONE, 0, all)).contains("did not wait"));
    assert!(why(case(0, -1, all)).contains("was not seen"));
    let mut blind = all;
    blind.fs[Fs::F2fs.slot()].sync_path = false;
    assert!(why(case(0, -1, blind)).contains("not attached"));
    // A write into new blocks needs no size update, only a sync that lasts.
    let new_extent = |flags: u32, pos: i64| {
        let evs = vec![
            begin(1, 0, on(Fs::F2fs, EVENT_DSYNC | EVENT_NEW_EXTENT)),
            Event {
                flags,
                pos,
                ..sync(1, 10, 8192)
            },
            complete(1, 20),
        ];
        first_verdict(evs, Coverage::ALL)
    };
    assert_eq!(new_extent(alone, 0), Verdict::Ordered);
    assert!(why(new_extent(EVENT_ROLL_FORWARD | EVENT_NODES_WAITED, 0)).contains("another sync"));
    // ext4 commits its journal whatever the path: its exit is not needed.
    let ext4 = vec![
        begin(1, 0, on(Fs::Ext4, EVENT_SYNC)),
        dirty(1, 5, 8192),
        sync(1, 10, 8192),
        complete(1, 20),
    ];
    assert_eq!(first_verdict(ext4, Coverage::ALL), Verdict::Ordered);
}

/// The verdict of the first write `evs` make, judged with `cov`.
fn first_verdict(evs: Vec<Event>, cov: Coverage) -> Verdict {
    let mut e = Engine::new(EngineConfig {
        coverage: cov,
        ..EngineConfig::default()
    });
    let mut out = Vec::new();
    for x in evs {
        out.extend(e.push(Input::Event(x)));
    }
    out.extend(e.finish());
    out[0].verdict.clone()
}

#[test]
fn a_missing_probe_of_one_filesystem_leaves_the_others_judged() {
    let mut coverage = Coverage::ALL;
    coverage.fs[Fs::F2fs.slot()] = crate::analysis::FsCoverage {
        size_update: false,
        sync: false,
        sync_path: false,
    };
    let mut e = Engine::new(EngineConfig {
        coverage,
        ..EngineConfig::default()
    });
    let ext4 = [
        begin(1, 0, EVENT_DSYNC),
        dirty(1, 5, 8192),
        sync(1, 10, 8192),
        complete(1, 20),
    ];
    let f2fs = [begin(2, 0, on(Fs::F2fs, EVENT_DSYNC)), complete(2, 20)];
    let mut out = Vec::new();
    for ev in ext4.into_iter().chain(f2fs) {
        out.extend(e.push(Input::Event(ev)));
    }
    out.extend(e.finish());
    let verdict = |ino| out.iter().find(|w| w.begin.ino == ino).unwrap().verdict.clone();
    assert_eq!(verdict(1), Verdict::Ordered);
    let Verdict::Inconclusive(why) = verdict(2) else {
        panic!("{:?}", verdict(2))
    };
    assert!(why.contains("f2fs sync probe"), "{why}");
}

#[test]
fn a_failed_write_is_not_judged() {
    let failed = Event {
        arg: (-28i64) as u64,
        ..complete(1, 20)
    };
    let (out, t) = run(events(vec![begin(1, 0, EVENT_DSYNC), failed]));
    assert_eq!(out[0].verdict, Verdict::Failed(-28));
    assert_eq!((t.failed, t.counted()), (1, 0));
}

#[test]
fn path_filter_keeps_only_the_tree() {
    let mut e = Engine::new(EngineConfig {
        path_prefix: Some("/mnt/a".into()),
        ..EngineConfig::default()
    });
    e.push(Input::Event(begin(1, 0, EVENT_DSYNC)));
    e.push(Input::Path {
        dev: DEV,
        ino: 1,
        path: Some("/mnt/ab/f".into()),
    });
    e.push(Input::Event(begin(2, 0, EVENT_DSYNC)));
    e.push(Input::Path {
        dev: DEV,
        ino: 2,
        path: Some("/mnt/a/f".into()),
    });
    // Outside the tree, the buggy order: were it judged, a violation.
    e.push(Input::Event(sync(1, 1, 4096)));
    e.push(Input::Event(complete(1, 2)));
    e.push(Input::Event(dirty(1, 3, 8192)));
    e.push(Input::Event(dirty(2, 1, 8192)));
    e.push(Input::Event(sync(2, 2, 8192)));
    e.push(Input::Event(complete(2, 3)));
    let out = e.finish();
    assert!(out.is_empty(), "closed on completion already");
    let t = e.tally();
    assert_eq!((t.filtered, t.ordered, t.violations), (1, 1, 0));
}

/// Only a size update settles the size: a sync that found the on-disk
/// size already past the write keeps the write open for the size update
/// that comes late, so its timeline shows it.
#[test]
fn a_late_size_update_stays_on_the_timeline() {
    let (out, _) = run(events(vec![
        begin(1, 0, EVENT_SYNC | EVENT_DSYNC),
        sync(1, 10, 8192),
        complete(1, 20),
        dirty(1, 30, 8192),
    ]));
    assert_eq!(out.len(), 1);
    let kinds: Vec<RecordKind> = out[0].events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [SyncEnter, CompleteExit, MarkDirty]);
}

#[test]
fn bounded_open_writes_evict_the_oldest() {
    let mut e = Engine::new(EngineConfig {
        max_open: 2,
        ..EngineConfig::default()
    });
    let mut out = Vec::new();
    for ino in 1..=3 {
        out.extend(e.push(Input::Event(begin(ino, ino, EVENT_DSYNC))));
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].begin.ino, 1);
    assert_eq!(e.open_writes(), 2);
    assert_eq!(e.tally().evicted, 1);
}

#[test]
fn an_attempt_retried_before_any_event_is_not_judged() {
    // io_uring: a NOWAIT try refused with EAGAIN, then the worker's retry.
    let (out, t) = run(events(vec![
        begin(1, 0, EVENT_DSYNC),
        begin(1, 5, EVENT_DSYNC),
        dirty(1, 10, 8192),
        sync(1, 20, 8192),
        complete(1, 30),
    ]));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].verdict, Verdict::Ordered);
    assert_eq!((t.abandoned, t.counted()), (1, 1));
}

#[test]
fn a_superseded_write_that_had_events_is_still_judged() {
    let (out, t) = run(events(vec![
        begin(1, 0, EVENT_DSYNC),
        sync(1, 3, 4096),
        begin(1, 5, EVENT_DSYNC),
        dirty(1, 10, 8192),
        sync(1, 20, 8192),
        complete(1, 30),
    ]));
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[0].verdict,
        Verdict::Violation(ViolationKind::SyncBeforeSizeUpdate)
    );
    assert_eq!((t.abandoned, t.violations, t.ordered), (0, 1, 1));
}

#[test]
fn a_nowait_try_retried_at_the_same_offset_is_not_judged() {
    // As seen on 6.1 with io_uring: the submitter's try updates the
    // timestamps (mark_inode_dirty, old size), gets EAGAIN, and io-wq
    // retries the same write.
    let (out, t) = run(events(vec![
        begin(1, 0, EVENT_DSYNC),
        dirty(1, 2, 4096),
        begin(1, 5, EVENT_DSYNC),
        dirty(1, 10, 8192),
        sync(1, 20, 8192),
        complete(1, 30),
    ]));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].verdict, Verdict::Ordered);
    assert_eq!((t.abandoned, t.counted()), (1, 1));
}

#[test]
fn a_different_write_after_one_without_completion_is_no_retry() {
    let next = Event {
        pos: 8192,
        ..begin(1, 5, EVENT_DSYNC)
    };
    let (out, t) = run(events(vec![begin(1, 0, EVENT_DSYNC), dirty(1, 2, 4096), next]));
    assert_eq!(t.abandoned, 0);
    assert!(matches!(out[0].verdict, Verdict::Inconclusive(_)));
}

#[test]
fn done_judges_a_write_at_once() {
    // A whole-write record of an ordered write: sent at its sync, so no
    // completion will come; `Done` closes it without waiting.
    let mut e = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    for i in events(vec![
        begin(1, 0, EVENT_DSYNC),
        dirty(1, 10, 8192),
        sync(1, 20, 8192),
    ]) {
        out.extend(e.push(i));
    }
    assert!(out.is_empty(), "no completion yet: still open");
    out.extend(e.push(Input::Done { dev: DEV, ino: 1 }));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].verdict, Verdict::Ordered);
    assert_eq!(e.open_writes(), 0);
    // Done for an inode with nothing open is a no-op.
    assert!(e.push(Input::Done { dev: DEV, ino: 2 }).is_empty());
}

/// Each case as `Engine::write` sees it and as the same inputs pushed one
/// by one: the same reports, the same tally. `before`: inputs pushed to
/// both engines first.
fn write_matches_pushes(
    cfg: EngineConfig,
    before: Vec<Input>,
    begin: Event,
    steps: Vec<Event>,
    path: Option<&str>,
    done: bool,
) {
    let path = path.map(|p| Some(Arc::<str>::from(p)));
    let (mut whole, mut pushed) = (Engine::new(cfg.clone()), Engine::new(cfg));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in before {
        whole.push_into(i.clone(), &mut a);
        pushed.push_into(i, &mut b);
    }
    let key = begin.key();
    let mut inputs = vec![Input::Event(begin.clone())];
    inputs.extend(path.clone().map(|path| Input::Path {
        dev: key.0,
        ino: key.1,
        path,
    }));
    inputs.extend(steps.iter().cloned().map(Input::Event));
    if done {
        inputs.push(Input::Done {
            dev: key.0,
            ino: key.1,
        });
    }
    for i in inputs {
        pushed.push_into(i, &mut b);
    }
    let mut buf = steps;
    whole.write(begin, &mut buf, path, done, &mut a);
    assert!(buf.is_empty(), "the steps are taken");
    assert_eq!(whole.last_ts(), pushed.last_ts());
    assert_eq!(whole.open_writes(), pushed.open_writes());
    a.extend(whole.finish());
    b.extend(pushed.finish());
    assert_eq!(a, b);
    assert_eq!(whole.tally(), pushed.tally());
}

#[test]
fn a_whole_write_is_judged_as_its_events_would_be() {
    let cfg = EngineConfig::default;
    let flags = EVENT_SYNC | EVENT_DSYNC;
    // Ordered, and the buggy order.
    write_matches_pushes(
        cfg(),
        vec![],
        begin(1, 0, flags),
        vec![dirty(1, 10, 8192), sync(1, 20, 8192)],
        Some("/db/wal"),
        true,
    );
    write_matches_pushes(
        cfg(),
        vec![],
        begin(1, 0, flags),
        vec![sync(1, 20, 4096), complete(1, 30), dirty(1, 40, 8192)],
        None,
        true,
    );
    // Settled by its completion before its last step, which carries a loss.
    let late = Event {
        lost: 1,
        ..sync(1, 40, 8192)
    };
    write_matches_pushes(
        cfg(),
        vec![],
        begin(1, 0, flags),
        vec![dirty(1, 10, 8192), complete(1, 30), late],
        None,
        true,
    );
    // Another write open on the inode; one on another inode past max_open.
    let open = vec![Input::Event(begin(1, 0, flags)), Input::Event(dirty(1, 5, 8192))];
    write_matches_pushes(
        cfg(),
        open,
        begin(1, 10, flags),
        vec![sync(1, 20, 8192)],
        None,
        true,
    );
    let other = vec![Input::Event(begin(2, 0, flags))];
    let one = EngineConfig { max_open: 1, ..cfg() };
    write_matches_pushes(
        one,
        other,
        begin(1, 10, flags),
        vec![dirty(1, 15, 8192), sync(1, 20, 8192)],
        None,
        true,
    );
    // Outside --path; a path sent but unresolved; not counted; not settled.
    let under_db = EngineConfig {
        path_prefix: Some("/db".into()),
        ..cfg()
    };
    write_matches_pushes(
        under_db.clone(),
        vec![],
        begin(1, 0, flags),
        vec![sync(1, 20, 8192)],
        Some("/tmp/x"),
        true,
    );
    write_matches_pushes(
        under_db,
        vec![],
        begin(1, 0, flags),
        vec![sync(1, 20, 8192)],
        Some("/db/x"),
        true,
    );
    write_matches_pushes(
        cfg(),
        vec![],
        begin(1, 0, 0),
        vec![Event {
            lost: 2,
            ..sync(1, 20, 8192)
        }],
        None,
        true,
    );
    write_matches_pushes(
        cfg(),
        vec![],
        begin(1, 0, flags),
        vec![dirty(1, 10, 8192)],
        None,
        false,
    );
}

#[test]
fn a_whole_write_that_arrives_after_a_later_one_leaves_it_open() {
    // The kernel held the first write back in one CPU's batch while the
    // next write to the inode, from another CPU, was sent unfinished (an
    // attempt that will be retried): the late one is judged alone, and the
    // open one still ends as what it is.
    let flags = EVENT_DSYNC;
    let mut e = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    e.push_into(Input::Event(begin(1, 50, flags)), &mut out);
    let mut steps = vec![dirty(1, 10, 8192), sync(1, 20, 8192)];
    e.write(begin(1, 0, flags), &mut steps, None, true, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].begin.ts_ns, &out[0].verdict), (0, &Verdict::Ordered));
    assert_eq!(e.open_writes(), 1, "the later write is still open");
    for i in events(vec![
        begin(1, 55, flags),
        dirty(1, 60, 8192),
        sync(1, 70, 8192),
        complete(1, 80),
    ]) {
        e.push_into(i, &mut out);
    }
    assert_eq!(e.tally().abandoned, 1, "the attempt at 50 was retried at 55");
    assert_eq!(e.tally().ordered, 2);
}

// Found by `cargo xtask mutants` (issue 23): the flavour reports print and
// the verdicts' names had no test that could fail.
#[test]
fn o_sync_and_o_dsync_writes_are_named_apart() {
    // The kernel sets DSYNC for O_SYNC too (__O_SYNC | O_DSYNC).
    assert_eq!(begin(1, 0, EVENT_SYNC | EVENT_DSYNC).sync_flavour(), "sync");
    assert_eq!(begin(1, 0, EVENT_DSYNC).sync_flavour(), "dsync");
    assert_eq!(
        begin(1, 0, EVENT_DSYNC | EVENT_NEW_EXTENT).sync_flavour(),
        "dsync"
    );
}

#[test]
fn verdicts_are_named_as_ndjson_and_the_vm_cells_read_them() {
    assert_eq!(Verdict::Ordered.name(), "ordered");
    assert_eq!(Verdict::Violation(ViolationKind::SyncMissing).name(), "violation");
    assert_eq!(Verdict::Inconclusive("x".into()).name(), "inconclusive");
    assert_eq!(Verdict::Failed(-5).name(), "failed");
}

// Found by `cargo xtask mutants` (issue 23): only a negative return is a
// failed write, and only a size update orders one.
#[test]
fn a_completion_returning_zero_is_no_failure() {
    let (out, t) = run(events(vec![
        begin(1, 1, EVENT_SYNC | EVENT_DSYNC),
        dirty(1, 5, 8192),
        sync(1, 10, 8192),
        Event {
            arg: 0,
            ..complete(1, 20)
        },
    ]));
    assert_eq!(out[0].verdict, Verdict::Ordered);
    assert_eq!(t.failed, 0);
}

#[test]
fn a_step_showing_the_size_is_no_size_update() {
    // The completion began with the on-disk size already covering the
    // write, and no size update was seen: that proves no order.
    let (out, _) = run(events(vec![
        begin(1, 1, EVENT_SYNC | EVENT_DSYNC),
        Event {
            i_disksize: 8192,
            ..ev(CompleteEnter, 1, 5)
        },
        sync(1, 10, 8192),
        complete(1, 20),
    ]));
    assert!(
        matches!(out[0].verdict, Verdict::Inconclusive(_)),
        "{:?}",
        out[0].verdict
    );
}

// Found by `cargo xtask mutants` (issue 23): what engine.rs's survivors
// showed untested.
#[test]
fn inconclusive_writes_count_as_counted() {
    let t = Tally {
        inconclusive: 2,
        ..Tally::default()
    };
    assert_eq!(t.counted(), 2);
    let t = Tally {
        ordered: 1,
        violations: 3,
        inconclusive: 2,
        ..Tally::default()
    };
    assert_eq!(t.counted(), 6);
}

#[test]
fn shown_event_lists_are_kept_for_reuse_up_to_a_bound() {
    let mut e = Engine::new(EngineConfig::default());
    assert_eq!(e.spare_events().capacity(), 0, "nothing kept yet");
    let mut used = Vec::with_capacity(8);
    used.push(ev(SyncEnter, 1, 0));
    e.recycle(used);
    let again = e.spare_events();
    assert!(again.is_empty() && again.capacity() >= 8, "kept, emptied");
    assert_eq!(e.spare_events().capacity(), 0, "given out once");
    // A list that never held anything is not worth keeping.
    e.recycle(Vec::new());
    assert_eq!(e.spare_events().capacity(), 0);
    for _ in 0..MAX_SPARE + 5 {
        e.recycle(Vec::with_capacity(1));
    }
    let mut kept = 0;
    while e.spare_events().capacity() > 0 {
        kept += 1;
    }
    assert_eq!(kept, MAX_SPARE, "no more than MAX_SPARE lists are kept");
}

#[test]
fn a_whole_write_meets_an_open_one_of_its_time_and_a_step_of_another_inode() {
    let flags = EVENT_SYNC | EVENT_DSYNC;
    // An open write on the inode that began at the same time is not a
    // later one: the whole write goes through it, as pushed.
    write_matches_pushes(
        EngineConfig::default(),
        vec![Input::Event(begin(1, 10, flags))],
        begin(1, 10, flags),
        vec![dirty(1, 15, 8192), sync(1, 20, 8192)],
        None,
        true,
    );
    // A step of another inode among its steps: pushed one by one.
    write_matches_pushes(
        EngineConfig::default(),
        vec![Input::Event(begin(2, 0, flags))],
        begin(1, 10, flags),
        vec![dirty(1, 15, 8192), sync(2, 18, 8192), sync(1, 20, 8192)],
        None,
        true,
    );
}

#[test]
fn only_events_that_lost_records_count_as_orphaned_losses() {
    // An event of no open write, with nothing lost, is no loss.
    let (_, t) = run(events(vec![sync(9, 5, 4096)]));
    assert_eq!(t.orphaned_lost, 0);
    let (_, t) = run(events(vec![Event {
        lost: 1,
        ..sync(9, 5, 4096)
    }]));
    assert_eq!(t.orphaned_lost, 1);
    // The same for a whole write's steps after the one that settled it.
    write_matches_pushes(
        EngineConfig::default(),
        vec![],
        begin(1, 0, EVENT_SYNC | EVENT_DSYNC),
        vec![dirty(1, 10, 8192), complete(1, 30), sync(1, 40, 8192)],
        None,
        true,
    );
}

#[test]
fn lingering_and_stalled_writes_close_only_past_their_limits() {
    let cfg = EngineConfig {
        linger_ns: 100,
        stall_ns: 1000,
        ..EngineConfig::default()
    };
    let flags = EVENT_SYNC | EVENT_DSYNC;
    let mut e = Engine::new(cfg);
    let mut out = Vec::new();
    // Completed at 10, its size update never came: it lingers.
    for i in events(vec![begin(1, 0, flags), complete(1, 10)]) {
        e.push_into(i, &mut out);
    }
    // Begun at 0 on another inode, never completed: it stalls.
    e.push_into(Input::Event(begin(2, 0, flags)), &mut out);
    assert!(out.is_empty());
    assert_eq!(e.last_ts(), 10, "the newest kernel time seen");
    assert!(e.tick(110).is_empty(), "exactly the linger: not past it");
    assert_eq!(e.tick(111).len(), 1, "past the linger");
    assert!(e.tick(1000).is_empty(), "exactly the stall: not past it");
    assert_eq!(e.tick(1001).len(), 1, "past the stall");
    assert_eq!(e.open_writes(), 0);
}

#[test]
fn closing_or_dropping_one_write_keeps_the_others_to_finish() {
    let flags = EVENT_SYNC | EVENT_DSYNC;
    // Inode 2 stays open while inode 1's write settles and closes.
    let (reports, _) = run(events(vec![
        begin(2, 0, flags),
        begin(1, 1, flags),
        dirty(1, 2, 8192),
        sync(1, 3, 8192),
        complete(1, 4),
    ]));
    let inos: Vec<u64> = reports.iter().map(|r| r.begin.ino).collect();
    assert_eq!(inos.len(), 2, "{inos:?}");
    assert!(
        inos.contains(&2),
        "the open write on inode 2 is closed at the end"
    );
    // Inode 1's first attempt is abandoned and retried; inode 2 still ends.
    let (reports, t) = run(events(vec![
        begin(2, 0, flags),
        begin(1, 1, flags),
        begin(1, 2, flags),
    ]));
    assert_eq!(t.abandoned, 1);
    let inos: Vec<u64> = reports.iter().map(|r| r.begin.ino).collect();
    assert!(inos.contains(&2) && inos.contains(&1), "{inos:?}");
}

#[test]
fn an_empty_list_never_takes_the_place_of_a_used_one() {
    let mut e = Engine::new(EngineConfig::default());
    for _ in 0..MAX_SPARE {
        e.recycle(Vec::new());
    }
    e.recycle(Vec::with_capacity(4));
    assert!(e.spare_events().capacity() >= 4, "the used list was kept");
}
