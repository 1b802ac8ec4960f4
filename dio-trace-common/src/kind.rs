//! Record kinds, numbered in ranges per family with holes left for growth.
//!
//! Retired numbers stay reserved: never reuse one, trace files outlive code.

/// What a record says happened.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    // 1..=9: the write itself.
    /// A direct write that is size-extending and sync-flavoured started
    /// (`iomap:iomap_dio_rw_begin`, or entry of the iomap/ext4 write path).
    WriteBegin = 1,
    /// The path of the inode a [`RecordKind::WriteBegin`] targets.
    WritePath = 2,
    /// A whole write: start, size update, sync, completion
    /// ([`crate::record::WriteRecord`]).
    Write = 3,
    /// The cgroup (v2) of the process whose counted write follows
    /// ([`crate::record::CgroupRecord`]): sent once per process and cgroup,
    /// not with every write (format 3).
    TaskCgroup = 4,
    /// A whole write settled at its sync, compactly
    /// ([`crate::record::SettledWrite`], format 4): what most counted
    /// writes send.
    Settled = 5,
    /// Several settled writes of one CPU in one record
    /// ([`crate::record::SettledBatch`]): split into [`RecordKind::Settled`]
    /// records as it arrives, so never in a trace (the format is 4's).
    SettledBatch = 6,

    // 10..=19: size updates.
    /// `__ext4_mark_inode_dirty` ran for an armed inode (tracepoint
    /// `ext4:ext4_mark_inode_dirty`): the on-disk inode, with `i_disksize`,
    /// was put into the running journal transaction.
    MarkDirty = 10,
    /// `ext4_handle_inode_extension` entered (fentry/kprobe only).
    InodeExtension = 11,
    /// XFS logs the size with the write's extent conversion
    /// (`xfs_iomap_write_unwritten(..., update_isize=true)`, tracepoint
    /// `xfs:xfs_unwritten_convert`): `i_disksize` is the size it logs.
    XfsUnwrittenConvert = 12,
    /// XFS logs the size of a write into written blocks past EOF
    /// (`xfs_setfilesize`, tracepoint `xfs:xfs_setfilesize`).
    XfsSetFilesize = 13,
    /// f2fs marks the inode dirty after `f2fs_i_size_write` raised
    /// `i_size` (`f2fs_mark_inode_dirty_sync`).
    F2fsMarkDirty = 14,

    // 20..=29: syncs.
    /// The sync that `generic_write_sync` reaches started
    /// (`ext4:ext4_sync_file_enter`, `vfs_fsync_range`, `ext4_sync_file`).
    SyncEnter = 20,
    /// That sync returned.
    SyncExit = 21,

    // 30..=39: completion.
    /// `iomap_dio_complete` entered (fentry/kprobe only).
    CompleteEnter = 30,
    /// `iomap_dio_complete` finished (tracepoint `iomap:iomap_dio_complete`
    /// or fexit/kretprobe).
    CompleteExit = 31,

    // 40..=49: explanations.
    /// The kernel call stack at one step of a counted write
    /// ([`crate::record::StackRecord`]): sent before the write's own record.
    Stack = 40,
}

impl RecordKind {
    /// Every kind, for decoders and tests.
    pub const ALL: [RecordKind; 16] = [
        RecordKind::WriteBegin,
        RecordKind::WritePath,
        RecordKind::Write,
        RecordKind::TaskCgroup,
        RecordKind::Settled,
        RecordKind::SettledBatch,
        RecordKind::MarkDirty,
        RecordKind::InodeExtension,
        RecordKind::XfsUnwrittenConvert,
        RecordKind::XfsSetFilesize,
        RecordKind::F2fsMarkDirty,
        RecordKind::SyncEnter,
        RecordKind::SyncExit,
        RecordKind::CompleteEnter,
        RecordKind::CompleteExit,
        RecordKind::Stack,
    ];

    /// The kind with this number, if any.
    pub fn from_u32(n: u32) -> Option<Self> {
        let mut i = 0;
        while i < Self::ALL.len() {
            if Self::ALL[i] as u32 == n {
                return Some(Self::ALL[i]);
            }
            i += 1;
        }
        None
    }

    /// A step that makes a size durable, whatever the filesystem: the
    /// verdict's "size update". Its `i_disksize` is the size it makes so.
    pub fn is_size_update(self) -> bool {
        matches!(
            self,
            RecordKind::MarkDirty
                | RecordKind::XfsUnwrittenConvert
                | RecordKind::XfsSetFilesize
                | RecordKind::F2fsMarkDirty
        )
    }

    /// Short stable name used in reports and NDJSON.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::WriteBegin => "write_begin",
            RecordKind::WritePath => "write_path",
            RecordKind::Write => "write",
            RecordKind::TaskCgroup => "task_cgroup",
            RecordKind::Settled => "settled_write",
            RecordKind::SettledBatch => "settled_batch",
            RecordKind::MarkDirty => "mark_inode_dirty",
            RecordKind::InodeExtension => "handle_inode_extension",
            RecordKind::XfsUnwrittenConvert => "xfs_unwritten_convert",
            RecordKind::XfsSetFilesize => "xfs_setfilesize",
            RecordKind::F2fsMarkDirty => "f2fs_mark_inode_dirty",
            RecordKind::SyncEnter => "sync_enter",
            RecordKind::SyncExit => "sync_exit",
            RecordKind::CompleteEnter => "dio_complete_enter",
            RecordKind::CompleteExit => "dio_complete_exit",
            RecordKind::Stack => "stack",
        }
    }
}
