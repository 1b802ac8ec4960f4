//! Every map and global the programs share, declared here and only here.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use dio_trace_common::{
    arm::{ARM_MAP_ENTRIES, ArmedWrite, InodeKey},
    config::Config,
    counters::{COUNTER_SLOTS, Counter},
};

/// Written by the loader (offsets from BTF, ki_flags bits, filters).
#[unsafe(no_mangle)]
pub static DIO_CONFIG: Global<Config> = Global::new(Config::ZERO);

/// Records for user space. The loader resizes it (`--ringbuf-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// What the kernel side saw but did not send, and what it lost.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Inodes with a size-extending sync-flavoured direct write in flight, by
/// the inode's address.
#[map]
pub static ARMED: LruHashMap<u64, ArmedWrite> = LruHashMap::with_max_entries(ARM_MAP_ENTRIES, 0);

/// Process ids to trace when `Filter::follow` is set; children join on fork.
#[map]
pub static FOLLOW: LruHashMap<u32, u8> = LruHashMap::with_max_entries(8192, 0);

/// Files whose path was already sent, by (dev, ino) with the inode's
/// generation as value: a path goes out once per file, not once per write,
/// and again when an inode number is reused by a new file.
#[map]
pub static PATH_SENT: LruHashMap<InodeKey, u32> = LruHashMap::with_max_entries(16384, 0);

/// The inode an entry probe saw, by task (`pid_tgid`), for its exit probe:
/// exit probes cannot always read their arguments (`iomap_dio_complete`
/// frees its `dio` before it returns).
#[map]
pub static IN_CALL: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// Add one to a counter. Never fails: a missing slot is a build bug.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *slot += 1 };
    }
}
