//! Every map and global the programs share, declared here and only here.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use dio_trace_common::{
    arm::{ARM_MAP_ENTRIES, ArmedWrite, InodeKey},
    config::Config,
    counters::{Counter, CounterSlots},
    fs::FS_SLOTS,
    ordered::{ORDERED_KEYS, OrderedKey},
    record::CpuBatch,
};

/// Written by the loader (offsets from BTF, ki_flags bits, filters) into
/// `.rodata`, which aya freezes before any program loads. Read it with
/// [`config!`], one field at a time: the verifier then knows each value as
/// a constant, which lets BTF-typed pointers be read directly at these
/// offsets and prunes the branches a flag turns off.
#[unsafe(no_mangle)]
pub static DIO_CONFIG: Config = Config::ZERO;

/// One field of [`DIO_CONFIG`], e.g. `config!(offsets.kiocb_ki_flags)`.
macro_rules! config {
    ($($field:ident).+) => {
        // SAFETY: a read of a plain static; volatile, so the compiler keeps
        // the loader's value instead of folding the zero it was built with.
        unsafe { core::ptr::read_volatile(&$crate::maps::DIO_CONFIG.$($field).+) }
    };
}
pub(crate) use config;

/// Records for user space. The loader resizes it (`--ringbuf-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// What the kernel side saw but did not send, and what it lost.
#[map]
pub static COUNTERS: PerCpuArray<CounterSlots> = PerCpuArray::with_max_entries(1, 0);

/// Inodes with a size-extending sync-flavoured direct write in flight, by
/// the inode's address, and (marked `ARM_SENT`) inodes whose last such
/// write was sent, for their next write to reuse. User space reads the
/// unsent ones left at the end.
#[map]
pub static ARMED: LruHashMap<u64, ArmedWrite> = LruHashMap::with_max_entries(ARM_MAP_ENTRIES, 0);

/// A counting filter over [`ARMED`]: how many armed inodes' numbers hash
/// to each slot (see [`maybe_armed`]); entries marked sent are not
/// counted. By number, not address: the verifier allows no arithmetic on
/// a pointer's value. Size updates and syncs of other inodes, most of what
/// those hooks see, then cost an array read (inlined by the verifier)
/// instead of a hash lookup. Counts only ever err high (an entry the LRU
/// evicted), which costs a lookup, never a missed write.
#[map]
pub static MAYBE_ARMED: Array<u64> = Array::with_max_entries(FILTER_SLOTS, 0);

/// A power of two: the hash's top bits index it.
const FILTER_SLOTS: u32 = 4096;

/// `key`'s slot among `slots` (a power of two): Fibonacci hashing, so that
/// neighbouring numbers (new files' inodes, a host's devices) spread out.
#[inline(always)]
fn slot_of(key: u64, slots: u32) -> u32 {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - slots.trailing_zeros())) as u32
}

#[inline(always)]
fn filter_slot(ino: u64) -> Option<*mut u64> {
    MAYBE_ARMED.get_ptr_mut(slot_of(ino, FILTER_SLOTS))
}

/// Could the inode numbered `ino` be in [`ARMED`]? `false` is certain.
#[inline(always)]
pub fn maybe_armed(ino: u64) -> bool {
    // SAFETY: array slot, valid while the program runs.
    filter_slot(ino).is_some_and(|c| unsafe { core::ptr::read_volatile(c) } != 0)
}

/// Note that the inode numbered `ino` was added to (`+1`) or removed from
/// (`-1`) [`ARMED`].
#[inline(always)]
pub fn filter_add(ino: u64, delta: i64) {
    if let Some(c) = filter_slot(ino) {
        atomic_add(c, delta);
    }
}

/// f2fs syncs running now, by a hash of their device number: whether
/// another sync ran beside one decides whether its roll-forward counts
/// (`EVENT_SYNC_ALONE`). Every f2fs sync is counted, traced file or not.
/// Devices that share a slot only make a sync look less alone, which
/// costs a verdict ("inconclusive"), never a false "ordered".
#[map]
pub static F2FS_SYNCS: Array<u64> = Array::with_max_entries(F2FS_SYNC_SLOTS, 0);

/// A power of two: the hash's top bits index it.
const F2FS_SYNC_SLOTS: u32 = 64;

#[inline(always)]
fn f2fs_sync_slot(dev: u32) -> Option<*mut u64> {
    F2FS_SYNCS.get_ptr_mut(slot_of(dev as u64, F2FS_SYNC_SLOTS))
}

/// An f2fs sync on device `dev` starts.
#[inline(always)]
pub fn f2fs_sync_started(dev: u32) {
    if let Some(c) = f2fs_sync_slot(dev) {
        atomic_add(c, 1);
    }
}

/// An f2fs sync on device `dev` returns: was it the only one running?
/// Read, then decremented (5.10's BPF has no fetching add): two exits
/// racing both see the other, which errs towards "not alone". A count of
/// 0 means this sync's start was not seen (it began before the probes
/// attached): not alone, and not decremented below zero.
#[inline(always)]
pub fn f2fs_sync_ended(dev: u32) -> bool {
    let Some(c) = f2fs_sync_slot(dev) else {
        return false;
    };
    // SAFETY: array slot, valid while the program runs.
    let running = unsafe { core::ptr::read_volatile(c) };
    if running != 0 {
        atomic_add(c, -1);
    }
    running == 1
}

/// The inode of each task's last btrfs direct write that reached iomap
/// (by `pid_tgid`): a btrfs sync of a direct, sync-flavoured file that is
/// not that inode follows a write btrfs wrote through the page cache
/// (`probes/fallback.rs`, where no hook in `btrfs_buffered_write` loads).
#[map]
pub static BTRFS_DIRECT: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// How the f2fs sync a task is in waited for the node pages it wrote, by
/// task (`pid_tgid`): [`NODES_PENDING`] from its start, then what its call
/// of `f2fs_wait_on_node_pages_writeback(sbi, seq_id)` showed. That call
/// waits for nothing when `seq_id` is 0, which is the number the first
/// node page after a checkpoint gets (`fsync_seg_id` restarts at 0): the
/// sync's flush may then go before its own node page is written, and a
/// power cut loses what it synced (docs/verifying-a-kernel.md).
#[map]
pub static F2FS_NODE_WAIT: LruHashMap<u64, u8> = LruHashMap::with_max_entries(4096, 0);

/// The last node-page number f2fs had given (`sbi->fsync_seg_id`) when
/// the f2fs sync a task is in had written its own node pages, by task
/// (`pid_tgid`): read at `f2fs_need_inode_block_update`, which
/// `f2fs_do_sync_file` calls right after `f2fs_fsync_node_pages`. Every
/// block ahead of the sync's own in the node chain was allocated, and so
/// numbered, by then; a wait up to this number waits for all of them,
/// whatever was numbered after (docs/f2fs-dio-size.md).
#[map]
pub static F2FS_NODES_NUMBERED: LruHashMap<u64, u32> = LruHashMap::with_max_entries(4096, 0);

/// [`F2FS_NODE_WAIT`] values.
pub const NODES_PENDING: u8 = 0;
pub const NODES_WAITED: u8 = 1;
pub const NODES_UNWAITED: u8 = 2;
/// Waited, and for every node page numbered so far (its number the last
/// one given, `f2fs_sb_info.fsync_seg_id`).
pub const NODES_WAITED_ALL: u8 = 3;

/// Ordered writes counted instead of sent (`CONFIG_COUNT_ORDERED`), per
/// CPU, by what the summary and the metrics label them with.
#[map]
pub static ORDERED: PerCpuHashMap<OrderedKey, u64> = PerCpuHashMap::with_max_entries(ORDERED_KEYS, 0);

/// One more ordered write under `key` on this CPU. False when the map has
/// no room for a new key: the write must then be sent. Atomic, and the
/// first insert refuses to overwrite, because programs that run
/// preemptible (fentry, 7.x tracepoints) can interleave on one CPU.
#[inline(always)]
pub fn count_ordered(key: &OrderedKey) -> bool {
    const BPF_NOEXIST: u64 = 1;
    for _ in 0..2 {
        if let Some(c) = ORDERED.get_ptr_mut(key) {
            atomic_add(c, 1);
            return true;
        }
        if ORDERED.insert(key, 1, BPF_NOEXIST).is_ok() {
            return true;
        }
    }
    false
}

/// `*c += delta`, atomically: CPUs arm and retire concurrently.
#[inline(always)]
fn atomic_add(c: *mut u64, delta: i64) {
    // SAFETY: callers pass map value pointers, valid while the program
    // runs. core's atomics lack read-modify-write on BPF; the intrinsic is
    // the BPF atomic add.
    #[cfg(target_arch = "bpf")]
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            c,
            delta as u64,
        )
    };
    // SAFETY: as above (host builds: lints and tests only).
    #[cfg(not(target_arch = "bpf"))]
    unsafe { core::sync::atomic::AtomicU64::from_ptr(c) }
        .fetch_add(delta as u64, core::sync::atomic::Ordering::Relaxed);
}

/// The blank a new armed entry is inserted from (too big for the stack);
/// the write's start then fills it in place in the map.
#[map]
pub static SCRATCH: PerCpuArray<ArmedWrite> = PerCpuArray::with_max_entries(1, 0);

/// The address of each known filesystem's `struct file_system_type`, by
/// `Fs::slot`, once a superblock of that name was seen: later writes
/// compare pointers instead of strings.
#[map]
pub static FS_TYPE: Array<u64> = Array::with_max_entries(FS_SLOTS as u32, 0);

/// Process ids to trace when `Filter::follow` is set; children join on fork.
#[map]
pub static FOLLOW: LruHashMap<u32, u8> = LruHashMap::with_max_entries(8192, 0);

/// The cgroup v2 ids `--cgroup` keeps, whatever their level
/// (`Filter::cgroup_levels` says which levels to look at). Set by the
/// loader before tracing starts.
#[map]
pub static CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(MAX_CGROUPS, 0);

/// How many `--cgroup` directories one run can keep.
pub const MAX_CGROUPS: u32 = 64;

/// Cgroup records sent so far, in all: an armed entry that remembers its
/// writer's cgroup as sent at this count needs no [`CGROUP_SENT`] lookup.
#[map]
pub static CGROUP_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// The value of [`CGROUP_EPOCH`] (0 if unreadable).
#[inline(always)]
pub fn cgroup_epoch() -> u64 {
    // SAFETY: array slot, valid while the program runs.
    CGROUP_EPOCH
        .get_ptr_mut(0)
        .map_or(0, |c| unsafe { core::ptr::read_volatile(c) })
}

/// One more cgroup record went out.
#[inline(always)]
pub fn cgroup_epoch_bump() {
    if let Some(c) = CGROUP_EPOCH.get_ptr_mut(0) {
        atomic_add(c, 1);
    }
}

/// The cgroup id last sent for each process (by tgid): a process's cgroup
/// goes out once, before its first counted write, and again when it moves.
#[map]
pub static CGROUP_SENT: LruHashMap<u32, u64> = LruHashMap::with_max_entries(8192, 0);

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

/// A sync-flavoured direct write that does not extend its file, by task
/// (`pid_tgid`): it is counted only if the blocks it goes into turn out
/// to be new or unwritten (`probes/extent.rs`), which the kernel decides
/// after the write's start, while it maps the write.
#[map]
pub static PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(4096, 0);

/// How many notes [`PENDING`] may hold: every counted write's start, its
/// completion and every mapping of the kernel would otherwise each pay a
/// hash lookup (or a delete, which also takes the bucket lock) for a note
/// that only non-extending sync writes leave. Errs high, never low (a note
/// the LRU evicted, a note replaced): that costs a lookup, not a miss.
#[map]
pub static PENDING_NOTES: Array<u64> = Array::with_max_entries(1, 0);

/// Could [`PENDING`] hold a note? `false` is certain.
#[inline(always)]
pub fn pending_maybe() -> bool {
    // SAFETY: array slot, valid while the program runs.
    PENDING_NOTES
        .get_ptr_mut(0)
        .is_some_and(|c| unsafe { core::ptr::read_volatile(c) } != 0)
}

/// Leave a note for the task `id`.
#[inline(always)]
pub fn pending_insert(id: u64, note: &Pending) {
    if PENDING.insert(id, note, 0).is_ok()
        && let Some(c) = PENDING_NOTES.get_ptr_mut(0)
    {
        atomic_add(c, 1);
    }
}

/// Drop the note of the task `id`, if [`PENDING`] may hold one.
#[inline(always)]
pub fn pending_remove(id: u64) {
    if pending_maybe()
        && PENDING.remove(id).is_ok()
        && let Some(c) = PENDING_NOTES.get_ptr_mut(0)
    {
        atomic_add(c, -1);
    }
}

/// Where the write's start builds a [`Pending`] note: too big for its stack.
#[map]
pub static PENDING_SCRATCH: PerCpuArray<Pending> = PerCpuArray::with_max_entries(1, 0);

/// What the write's start knew of a [`PENDING`] write.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    /// The inode's address ([`ARMED`]'s key) and the file's dentry (for
    /// the path record; the open file holds it while the write runs).
    pub inode: u64,
    pub dentry: u64,
    pub key: InodeKey,
    pub pos: i64,
    pub len: u64,
    pub i_size: i64,
    pub i_disksize: i64,
    pub size_flags: u32,
    pub ki_flags: u32,
    pub flags: u32,
    pub mechanism: u32,
    pub generation: u32,
    pub _pad: u32,
}

/// The `struct iomap_iter *` a kprobe on `iomap_iter`'s entry saw, by
/// task, for the kretprobe (which has only the return value).
#[map]
pub static ITER_CALL: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// Each CPU's settled writes not sent yet (`emit::batched`).
#[map]
pub static BATCH: PerCpuArray<CpuBatch> = PerCpuArray::with_max_entries(1, 0);

/// Add one to a counter. Never fails: a missing slot is a build bug.
#[inline(always)]
pub fn count(counter: Counter) {
    count_n(counter, 1);
}

/// Add `n` to a counter.
#[inline(always)]
pub fn count_n(counter: Counter, n: u64) {
    if let Some(slots) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it while we run; the
        // index is a constant below COUNTER_SLOTS (checked in common).
        unsafe { (*slots).0[counter as usize] += n };
    }
}
