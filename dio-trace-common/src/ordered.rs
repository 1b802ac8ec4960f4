//! Ordered writes counted in the kernel instead of sent
//! ([`crate::config::CONFIG_COUNT_ORDERED`]).
//!
//! A run that prints only problems needs of an ordered write nothing but
//! what its summary and metrics count it under. The kernel programs
//! already know, by the shared rule, that the write is settled and
//! ordered; sending it so that user space can reach the same answer and
//! print nothing costs both sides most of what tracing costs. So such a
//! write adds one to a per-CPU counter under this key, and user space adds
//! the counts to its tally at every tick.

use crate::record::{EVENT_DSYNC, EVENT_FS_MASK, EVENT_NEW_EXTENT, EVENT_SYNC};

/// What an ordered write is counted under: every label the summary and the
/// metrics give a write (filesystem, device, cgroup, sync flavour, counted
/// for new blocks or for extending), and nothing per write.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderedKey {
    /// The writer's cgroup v2 id at the write's start (0 without cgroups).
    pub cgroup_id: u64,
    /// Kernel `dev_t` of the file's superblock.
    pub dev: u32,
    /// The write start's `EVENT_*` bits that label it ([`KEY_FLAGS`]).
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<OrderedKey>() == 16);

/// The begin bits a key keeps: the sync flavour, new blocks, the filesystem.
pub const KEY_FLAGS: u32 = EVENT_SYNC | EVENT_DSYNC | EVENT_NEW_EXTENT | EVENT_FS_MASK;

/// Keys the kernel's map holds. A write whose key finds no room is sent
/// instead, as in any other run: nothing is lost, it only costs more.
pub const ORDERED_KEYS: u32 = 4096;

impl OrderedKey {
    /// The key of a write that started with `flags` on `dev` in `cgroup_id`.
    pub const fn new(cgroup_id: u64, dev: u32, flags: u32) -> Self {
        OrderedKey {
            cgroup_id,
            dev,
            flags: flags & KEY_FLAGS,
        }
    }
}
