//! The one rule both sides apply: is a write, once its first sync has
//! begun (or, where the sync's path decides, ended), settled as ordered?
//! The kernel programs call it to settle a write at its sync; the
//! engine's `judge` calls it for every "ordered" it gives (STYLE 15), so
//! the two cannot drift.

use crate::{
    fs::Fs,
    record::{EVENT_NODES_ALL, EVENT_NODES_WAITED, EVENT_ROLL_FORWARD, EVENT_SYNC_ALONE},
};

/// How the first sync ended, as far as what it wrote lasting goes: only
/// where [`Fs::sync_path_decides`] (f2fs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPath {
    /// Not known (yet): its end was not seen, or it failed.
    Unknown,
    /// It took a checkpoint: the inode lasts as it was then.
    Checkpoint,
    /// It wrote node pages for roll-forward recovery, which rebuilds the
    /// size from the write's blocks: they last if it waited for them
    /// (`waited`) and either no other sync on the device ran beside it
    /// (`alone`) or it waited for every node page numbered so far (`all`).
    RollForward { alone: bool, waited: bool, all: bool },
}

impl SyncPath {
    /// From a sync step's `EVENT_*` flags and `pos` (f2fs's `cp_reason`,
    /// negative where its end was not seen).
    pub const fn of(flags: u32, cp_reason: i64) -> SyncPath {
        if flags & EVENT_ROLL_FORWARD != 0 {
            SyncPath::RollForward {
                alone: flags & EVENT_SYNC_ALONE != 0,
                waited: flags & EVENT_NODES_WAITED != 0,
                all: flags & EVENT_NODES_ALL != 0,
            }
        } else if cp_reason > 0 {
            SyncPath::Checkpoint
        } else {
            SyncPath::Unknown
        }
    }
}

/// What the kernel keeps of a write at its first sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstSync {
    pub fs: Fs,
    /// The write's end: the size that must last.
    pub end: i64,
    /// Counted for new or unwritten blocks inside the file: no size to
    /// update, its sync alone orders it.
    pub new_extent: bool,
    /// A size update covering `end` came before the sync.
    pub sized_before: bool,
    /// The size field a crash leaves ([`Fs::disk_size_field`]) as the
    /// sync found it; negative where it could not be read.
    pub sync_size: i64,
    pub path: SyncPath,
}

impl FirstSync {
    /// Did the size (or the new blocks) come first: a covering size update
    /// before the sync, nothing to update, or a sync that writes the size
    /// it finds and found it covering ([`Fs::sync_carries_size`])?
    pub const fn sized(&self) -> bool {
        self.new_extent || self.sized_before || self.fs.sync_carries_size(self.sync_size, self.end)
    }
}

/// Settled and ordered: the write's size (or new blocks) was made durable
/// by or before its first sync, and where the sync's path decides what
/// lasts, that path keeps it. A checkpoint keeps the inode as it was, so
/// only a size raised before it; a roll-forward that waited, and was alone
/// or waited for every numbered node page, rebuilds the size from the
/// blocks, so it keeps the write either way.
/// `false` is not a violation: the write is still open, or the engine
/// names why it is not ordered.
pub const fn settled_ordered(s: &FirstSync) -> bool {
    let sized = s.sized();
    if !s.fs.sync_path_decides() {
        return sized;
    }
    match s.path {
        SyncPath::RollForward { waited, alone, all } => waited && (alone || all),
        SyncPath::Checkpoint => sized,
        SyncPath::Unknown => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(fs: Fs, sized_before: bool, sync_size: i64, path: SyncPath) -> FirstSync {
        FirstSync {
            fs,
            end: 8192,
            new_extent: false,
            sized_before,
            sync_size,
            path,
        }
    }

    #[test]
    fn each_filesystem_by_its_facts() {
        let ok = |s| settled_ordered(&s);
        assert!(ok(first(Fs::Ext4, true, 4096, SyncPath::Unknown)));
        assert!(
            !ok(first(Fs::Ext4, false, 8192, SyncPath::Unknown)),
            "ext4's sync does not carry the size"
        );
        assert!(ok(first(Fs::Btrfs, false, 8192, SyncPath::Unknown)));
        assert!(!ok(first(Fs::Btrfs, false, 8191, SyncPath::Unknown)));
        assert!(!ok(first(Fs::Btrfs, false, -1, SyncPath::Unknown)));
        assert!(
            !ok(first(Fs::F2fs, true, 8192, SyncPath::Unknown)),
            "f2fs waits for the sync's end"
        );
        assert!(ok(first(Fs::F2fs, true, 0, SyncPath::Checkpoint)));
        assert!(!ok(first(Fs::F2fs, false, 0, SyncPath::Checkpoint)));
        let rf = |alone, waited, all| SyncPath::RollForward { alone, waited, all };
        assert!(ok(first(Fs::F2fs, false, 0, rf(true, true, false))));
        assert!(
            ok(first(Fs::F2fs, false, 0, rf(false, true, true))),
            "beside others, every page waited"
        );
        for (a, w, all) in [
            (false, true, false),
            (true, false, false),
            (false, false, false),
            (true, false, true),
        ] {
            assert!(!ok(first(Fs::F2fs, true, 8192, rf(a, w, all))), "{a} {w} {all}");
        }
        let into_blocks = FirstSync {
            new_extent: true,
            ..first(Fs::Xfs, false, 0, SyncPath::Unknown)
        };
        assert!(ok(into_blocks));
    }

    #[test]
    fn a_sync_step_tells_its_path() {
        assert_eq!(SyncPath::of(0, -1), SyncPath::Unknown);
        assert_eq!(SyncPath::of(0, 0), SyncPath::Unknown);
        assert_eq!(SyncPath::of(0, 3), SyncPath::Checkpoint);
        assert_eq!(
            SyncPath::of(EVENT_ROLL_FORWARD | EVENT_SYNC_ALONE, 0),
            SyncPath::RollForward {
                alone: true,
                waited: false,
                all: false
            }
        );
        assert_eq!(
            SyncPath::of(EVENT_ROLL_FORWARD | EVENT_NODES_WAITED | EVENT_NODES_ALL, 0),
            SyncPath::RollForward {
                alone: false,
                waited: true,
                all: true
            }
        );
    }
}
