//! Keys and values of the kernel's armed-inode map.
//!
//! An inode is "armed" while a size-extending, sync-flavoured direct write
//! to it is in flight: only armed inodes' events leave the kernel. The map
//! is keyed by the inode's address, which every later hook holds already;
//! a counting filter by inode number in front of it lets an event of an
//! unarmed inode leave after one read and an array lookup. The entry
//! carries the write's record, (dev, ino) included.

use crate::record::WriteRecord;

/// (device, inode number): how writes, size updates and syncs are matched.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}
const _: () = assert!(core::mem::size_of::<InodeKey>() == 16);

/// What the kernel remembers of an armed write: the record it will send,
/// filled in step by step.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArmedWrite {
    /// End of the write (pos + len): the size a sync must find journaled.
    pub end: i64,
    /// `ARM_*` bits.
    pub state: u32,
    /// The process whose cgroup the entry's last writer found already
    /// sent (`cg_id`), and the count of cgroup records sent in all then
    /// (`cg_epoch`): while no cgroup record has gone out since, that
    /// process's next write here skips the lookup of what was sent.
    pub cg_tgid: u32,
    pub cg_id: u64,
    pub cg_epoch: u64,
    /// The writer's cgroup id at this write's start (0 without cgroups):
    /// what an ordered write is counted under
    /// ([`crate::ordered::OrderedKey`]).
    pub cg_write: u64,
    /// The file whose path is known to be sent (number, device, generation),
    /// as last found by a write through this entry: a file written again,
    /// the entry reused, skips the lookup of sent paths.
    pub path_ino: u64,
    pub path_dev: u32,
    pub path_gen: u32,
    /// Sent when the write has nothing more to tell; `begin` names the
    /// inode and carries the count of this write's lost records.
    pub rec: WriteRecord,
}

const _: () = assert!(core::mem::size_of::<ArmedWrite>() == 56 + 296);

/// A size update covering `end` was seen.
pub const ARM_SIZE_SEEN: u32 = 1 << 0;
/// The completion finished (`iomap_dio_complete` returned).
pub const ARM_COMPLETED: u32 = 1 << 1;
/// The write was sent (or is being set up): the entry stays in the map, so
/// the inode's next write reuses it instead of inserting, but no probe
/// records into it.
pub const ARM_SENT: u32 = 1 << 2;

/// The first sync was seen (with a full timeline the step slot stays
/// empty, so this bit is what later probes ask).
pub const ARM_SYNC_SEEN: u32 = 1 << 3;

/// Default capacity of the armed map (LRU: the oldest entry makes room).
pub const ARM_MAP_ENTRIES: u32 = 16384;
