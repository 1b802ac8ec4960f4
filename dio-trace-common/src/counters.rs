//! Indices into the kernel's per-CPU counter array.
//!
//! Everything the kernel side decides not to send is counted here, so a
//! report can say what it did not see and why.

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Direct writes by the traced tasks (pid/comm filters), on any
    /// filesystem: proof that the write probe sees writes at all.
    DirectWrites = 0,
    /// Direct writes that the filters kept out.
    Filtered = 1,
    /// Direct writes without SYNC/DSYNC semantics.
    NotSync = 2,
    /// Sync-flavoured direct writes that did not extend the file.
    NotExtending = 3,
    /// Writes armed: size-extending, sync-flavoured, direct.
    Armed = 4,
    /// Ring-buffer reservations that failed (records lost).
    RingbufFull = 5,
    /// Kernel memory reads that failed (records sent without that fact).
    ReadFailed = 6,
    /// Arm-map inserts that failed.
    ArmFailed = 7,
    /// Records sent.
    Sent = 8,
    /// Sync-flavoured direct writes to a filesystem dio-trace has no
    /// facts for (not ext4, XFS or f2fs): not judged.
    OtherFs = 9,
    /// [`crate::record::WriteRecord`]s the ring buffer could not take: whole
    /// writes lost (also counted in `RingbufFull`).
    WritesLost = 10,
    /// Direct writes whose `ki_flags` fit no candidate layout: not
    /// classified, so the run cannot be called clean.
    FlagsUnknown = 11,
    /// Sync-flavoured direct writes to a known filesystem whose facts the
    /// loader did not have (not loaded when the programs were, or no BTF
    /// for its on-disk size's offset): not judged.
    NoFsFacts = 12,
    /// [`crate::record::StackRecord`]s the ring buffer could not take: the
    /// step is shown without its stack; no verdict rests on one, so they
    /// are not counted in `RingbufFull`.
    StacksLost = 13,
    /// Sync-flavoured direct writes the filesystem wrote through the page
    /// cache instead (btrfs: checksummed files on kernels that refuse
    /// direct writes to them, misaligned writes, the rest of a short
    /// one): no direct write happened, so the ordering in question does
    /// not apply. Counted where `btrfs_buffered_write` runs for a
    /// direct `kiocb`.
    BufferedFallback = 14,
    /// Writes the shared rule settled as ordered that were counted by
    /// their labels instead of sent (`CONFIG_COUNT_ORDERED`,
    /// [`crate::ordered::OrderedKey`]): user space tallies them from those
    /// counts.
    OrderedCounted = 15,
}

/// Length of the counter array.
pub const COUNTER_SLOTS: u32 = 16;

/// Every counter of one CPU, in one value of the kernel's per-CPU array:
/// user space reads them all with one syscall (per-slot entries took one
/// per counter, fourteen every 100 ms).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSlots(pub [u64; COUNTER_SLOTS as usize]);
const _: () = assert!(Counter::ALL.len() <= COUNTER_SLOTS as usize);

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 16] = [
        Counter::DirectWrites,
        Counter::Filtered,
        Counter::NotSync,
        Counter::NotExtending,
        Counter::Armed,
        Counter::RingbufFull,
        Counter::ReadFailed,
        Counter::ArmFailed,
        Counter::Sent,
        Counter::OtherFs,
        Counter::WritesLost,
        Counter::FlagsUnknown,
        Counter::NoFsFacts,
        Counter::StacksLost,
        Counter::BufferedFallback,
        Counter::OrderedCounted,
    ];

    /// Short stable name used in reports and NDJSON.
    pub fn name(self) -> &'static str {
        match self {
            Counter::DirectWrites => "direct_writes",
            Counter::Filtered => "filtered",
            Counter::NotSync => "not_sync",
            Counter::NotExtending => "not_extending",
            Counter::Armed => "armed",
            Counter::RingbufFull => "ringbuf_full",
            Counter::ReadFailed => "read_failed",
            Counter::ArmFailed => "arm_failed",
            Counter::Sent => "sent",
            Counter::OtherFs => "other_fs",
            Counter::WritesLost => "writes_lost",
            Counter::FlagsUnknown => "flags_unknown",
            Counter::NoFsFacts => "no_fs_facts",
            Counter::StacksLost => "stacks_lost",
            Counter::BufferedFallback => "buffered_fallback",
            Counter::OrderedCounted => "ordered_counted",
        }
    }
}
