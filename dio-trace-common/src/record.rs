//! The records that travel through the ring buffer (and into trace files).

/// First in every record: what it is, where and when it happened.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// A [`crate::kind::RecordKind`] number.
    pub kind: u32,
    /// A [`crate::probe::Mechanism`] number: which mechanism emitted it.
    pub mechanism: u32,
    /// `bpf_ktime_get_ns()`: monotonic, comparable across CPUs.
    pub ts_ns: u64,
    /// Thread id of the task the kernel ran this in.
    pub pid: u32,
    /// Process id (thread-group id) of that task.
    pub tgid: u32,
    /// Which CPU ran it.
    pub cpu: u32,
    /// Ring-buffer reservations that failed for this inode before this
    /// record (kept in the armed-inode map): non-zero means this write's
    /// timeline has holes.
    pub lost: u32,
}
const _: () = assert!(core::mem::size_of::<RecordHeader>() == 32);

/// Every kind but [`crate::kind::RecordKind::WritePath`]: one inode fact.
///
/// Field use by kind:
/// - `WriteBegin`: `pos`/`len` of the write, `arg` = raw `kiocb.ki_flags`,
///   `flags` = [`EVENT_SYNC`]/[`EVENT_DSYNC`].
/// - `MarkDirty`: `arg` = caller's return address (symbolize with kallsyms).
/// - `SyncEnter`: `arg` = datasync ([`DATASYNC_UNKNOWN`] when the hook
///   does not say); `pos`/`len` = the range when known.
/// - `SyncExit`: `arg` = return value; `pos` = f2fs's `cp_reason` (how the
///   sync made things durable: 0 node pages for roll-forward, else a
///   checkpoint and why), -1 elsewhere.
/// - `CompleteExit`: `arg` = return value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InodeEvent {
    pub header: RecordHeader,
    /// Kernel `dev_t` (major << 20 | minor) of the inode's superblock.
    pub dev: u32,
    /// `EVENT_*` bits.
    pub flags: u32,
    pub ino: u64,
    /// `inode.i_size` (in memory) when the record was made.
    pub i_size: i64,
    /// The size a crash would leave then: ext4's `i_disksize`, XFS's
    /// `i_disk_size`, f2fs's `i_size` (see [`crate::fs::Fs::disk_size_field`]).
    pub i_disksize: i64,
    pub pos: i64,
    pub len: u64,
    pub arg: u64,
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<InodeEvent>() == 104);
const _: () = assert!(core::mem::align_of::<InodeEvent>() == 8);

/// One step of a counted write after its start, kept in the kernel's
/// armed entry until the write has nothing more to tell, then sent inside
/// its [`WriteRecord`]. Fields mean what they mean in an [`InodeEvent`] of
/// the step's kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// `bpf_ktime_get_ns()`; 0 when the step was not seen.
    pub ts_ns: u64,
    pub i_size: i64,
    pub i_disksize: i64,
    pub pos: i64,
    pub arg: u64,
    pub pid: u32,
    pub tgid: u32,
    pub cpu: u32,
    /// A [`crate::probe::Mechanism`] number.
    pub mechanism: u32,
    /// `EVENT_*` bits.
    pub flags: u32,
    /// The step's [`crate::kind::RecordKind`] number: which filesystem's
    /// size update it was. 0 (traces before format 3): the kind its slot
    /// had then (`MarkDirty`, `SyncEnter`, `CompleteExit`).
    pub kind: u32,
}

const _: () = assert!(core::mem::size_of::<Step>() == 64);

/// A whole counted write in one record ([`crate::kind::RecordKind::Write`]):
/// its start, and the first covering size update, first sync and
/// completion, each when seen. One record per write instead of one per
/// event is most of what tracing costs the kernel; a full timeline
/// (`CONFIG_FULL_TIMELINE`) sends [`InodeEvent`]s instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteRecord {
    /// The start, as a `WriteBegin` event would carry it, but with
    /// `header.kind` = `Write`.
    pub begin: InodeEvent,
    pub size: Step,
    pub sync: Step,
    pub complete: Step,
}

const _: () = assert!(core::mem::size_of::<WriteRecord>() == 104 + 3 * 64);

/// A counted write whose verdict was settled at its sync: the covering
/// size update came first, so nothing the write does later can change it
/// ([`crate::kind::RecordKind::Settled`], format 4). Most counted writes
/// end this way, so this is the record the kernel sends most: the facts of
/// a [`WriteRecord`] that such a write has (its start, size update and
/// sync; the completion has not run yet), without the empty completion
/// and the padding, 192 bytes instead of 296. Every fact the larger record
/// carries for such a write is here: [`SettledWrite::to_write_record`]
/// gives it back exactly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SettledWrite {
    /// [`crate::kind::RecordKind::Settled`].
    pub kind: u32,
    /// The begin's `EVENT_*` bits ([`EVENT_FINAL`] included).
    pub flags: u32,
    pub dev: u32,
    /// `kiocb.ki_flags`.
    pub ki_flags: u32,
    pub ino: u64,
    pub pos: i64,
    pub len: u64,
    /// `i_size` and on-disk size when the write began.
    pub i_size: i64,
    pub i_disksize: i64,
    pub comm: [u8; 16],
    /// When and where the write began.
    pub ts_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub cpu: u32,
    /// A [`crate::probe::Mechanism`] number.
    pub mechanism: u32,
    pub size: SettledStep,
    pub sync: SettledStep,
}
const _: () = assert!(core::mem::size_of::<SettledWrite>() == 192);

/// Settled writes a CPU collects before it sends them, in one
/// [`SettledBatch`].
pub const SETTLED_BATCH: usize = 16;

/// Up to [`SETTLED_BATCH`] settled writes of one CPU in one record
/// ([`crate::kind::RecordKind::SettledBatch`]). The ring costs per record
/// (its lock, positions and header), not per byte: one record for sixteen
/// writes is the kernel's share of batching. The record is always whole
/// (the first `count` slots filled), and each 192-byte slot is a whole
/// [`SettledWrite`] record of its own (its `kind` is `Settled`): user
/// space splits a batch into them, and trace files hold the slots, never
/// the batch.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettledBatch {
    /// [`crate::kind::RecordKind::SettledBatch`].
    pub kind: u32,
    /// Slots filled, from the first.
    pub count: u32,
    pub writes: [SettledWrite; SETTLED_BATCH],
}
const _: () = assert!(core::mem::size_of::<SettledBatch>() == 8 + SETTLED_BATCH * 192);

impl SettledBatch {
    /// Bytes before the first slot.
    pub const HEADER: usize = 8;
}

/// A CPU's batch as the kernel keeps it (a per-CPU map value).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuBatch {
    pub batch: SettledBatch,
    /// Set while a program on this CPU changes the batch, so that another
    /// one that interrupts it (the flush user space runs on each CPU, in
    /// an interrupt; a task that preempts an fentry program) leaves it
    /// alone: an interrupting write is sent on its own, and the flush
    /// waits for the next tick.
    pub busy: u32,
    /// Set by user space, before any probe is attached, once it has
    /// flushed a batch on this kernel: a batch nobody can flush would hold
    /// an idle CPU's writes until the end.
    pub on: u32,
}

/// A [`Step`] without what a settled write's steps never carry: the size
/// update's `pos` is 0 and the sync's -1 (how it ended is not known at
/// its start), so `pos` goes; CPU, mechanism and kind share a word.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SettledStep {
    pub ts_ns: u64,
    pub i_size: i64,
    pub i_disksize: i64,
    pub arg: u64,
    pub pid: u32,
    pub tgid: u32,
    /// `EVENT_*` bits.
    pub flags: u32,
    /// The CPU, below [`SETTLED_CPU_MASK`]`+1`.
    pub cpu: u16,
    /// A [`crate::probe::Mechanism`] number.
    pub mechanism: u8,
    /// The step's [`crate::kind::RecordKind`] number (all are below 256).
    pub kind: u8,
}
const _: () = assert!(core::mem::size_of::<SettledStep>() == 48);

/// The largest CPU number a [`SettledStep`] holds; a step on a higher one
/// is sent in a [`WriteRecord`] instead.
pub const SETTLED_CPU_MASK: u32 = 0xffff;

impl SettledStep {
    /// `s` in compact form (its `pos` dropped; CPU, mechanism and kind
    /// cut to their widths: [`SettledWrite::of`] checks nothing was lost).
    pub const fn of(s: &Step) -> Self {
        SettledStep {
            ts_ns: s.ts_ns,
            i_size: s.i_size,
            i_disksize: s.i_disksize,
            arg: s.arg,
            pid: s.pid,
            tgid: s.tgid,
            flags: s.flags,
            cpu: s.cpu as u16,
            mechanism: s.mechanism as u8,
            kind: s.kind as u8,
        }
    }

    /// The step of a [`WriteRecord`] it came from; `pos` is what a settled
    /// write's step of that kind always has.
    pub const fn to_step(&self, pos: i64) -> Step {
        Step {
            ts_ns: self.ts_ns,
            i_size: self.i_size,
            i_disksize: self.i_disksize,
            pos,
            arg: self.arg,
            pid: self.pid,
            tgid: self.tgid,
            cpu: self.cpu as u32,
            mechanism: self.mechanism as u32,
            flags: self.flags,
            kind: self.kind as u32,
        }
    }
}

impl SettledWrite {
    /// The compact record of `w`, if it says exactly what `w` says (no
    /// completion yet, no lost records, steps' `pos` as at a settled
    /// sync, numbers that fit): what the kernel's `settle` sends in place
    /// of such a record. For user space (tests, benches).
    pub fn of(w: &WriteRecord) -> Option<Self> {
        let b = &w.begin;
        let c = SettledWrite {
            kind: crate::kind::RecordKind::Settled as u32,
            flags: b.flags,
            dev: b.dev,
            ki_flags: b.arg as u32,
            ino: b.ino,
            pos: b.pos,
            len: b.len,
            i_size: b.i_size,
            i_disksize: b.i_disksize,
            comm: b.comm,
            ts_ns: b.header.ts_ns,
            pid: b.header.pid,
            tgid: b.header.tgid,
            cpu: b.header.cpu,
            mechanism: b.header.mechanism,
            size: SettledStep::of(&w.size),
            sync: SettledStep::of(&w.sync),
        };
        (c.to_write_record() == *w).then_some(c)
    }

    /// The start of the write, as [`WriteRecord::begin`] holds it.
    pub const fn begin(&self) -> InodeEvent {
        InodeEvent {
            header: RecordHeader {
                kind: crate::kind::RecordKind::Write as u32,
                mechanism: self.mechanism,
                ts_ns: self.ts_ns,
                pid: self.pid,
                tgid: self.tgid,
                cpu: self.cpu,
                lost: 0,
            },
            dev: self.dev,
            flags: self.flags,
            ino: self.ino,
            i_size: self.i_size,
            i_disksize: self.i_disksize,
            pos: self.pos,
            len: self.len,
            arg: self.ki_flags as u64,
            comm: self.comm,
        }
    }

    /// The covering size update, as [`WriteRecord::size`] holds it.
    pub const fn size_step(&self) -> Step {
        self.size.to_step(0)
    }

    /// The sync, as [`WriteRecord::sync`] holds it (its end not yet known).
    pub const fn sync_step(&self) -> Step {
        self.sync.to_step(-1)
    }

    /// The [`WriteRecord`] the kernel would have sent for the same write.
    pub const fn to_write_record(&self) -> WriteRecord {
        WriteRecord {
            begin: self.begin(),
            size: self.size_step(),
            sync: self.sync_step(),
            complete: Step {
                ts_ns: 0,
                i_size: 0,
                i_disksize: 0,
                pos: 0,
                arg: 0,
                pid: 0,
                tgid: 0,
                cpu: 0,
                mechanism: 0,
                flags: 0,
                kind: 0,
            },
        }
    }
}

/// The write asked for `O_SYNC`/`RWF_SYNC` semantics.
pub const EVENT_SYNC: u32 = 1 << 0;
/// The write asked for `O_DSYNC`/`RWF_DSYNC` semantics (also set with SYNC).
pub const EVENT_DSYNC: u32 = 1 << 1;
/// The on-disk size could not be read (the read failed).
pub const EVENT_NO_DISKSIZE: u32 = 1 << 2;

/// On a [`WriteRecord`]'s begin: the kernel forgot the write as it sent
/// it, so nothing more will come of it. Records without it were sent
/// because a new write to the inode took the entry's place, or read from
/// the armed map at the end of a session.
pub const EVENT_FINAL: u32 = 1 << 3;

/// On a sync (its `SyncExit`, or in a whole-write record its sync step):
/// the sync made the write's blocks durable for roll-forward recovery
/// (f2fs's `cp_reason` 0, `CP_NO_NEEDED`: it wrote the file's node pages
/// with fsync marks, and mounting after a crash rebuilds the size from
/// them) instead of taking a checkpoint of the in-memory inode.
pub const EVENT_ROLL_FORWARD: u32 = 1 << 4;

/// On a sync, beside [`EVENT_ROLL_FORWARD`]: no other f2fs sync on the
/// same device was running when this one returned. Roll-forward recovery
/// walks one chain of node blocks from the checkpoint and stops at the
/// first block that is not on disk, and a sync waits only for the node
/// blocks numbered before its own: a sync still running elsewhere may
/// hold an earlier link that is not durable yet, which makes this write
/// unreachable after a crash (seen with 8 concurrent writers on Debian's
/// 6.1, docs/verifying-a-kernel.md). Without this bit (another sync ran,
/// its start was not seen, or a trace from before the bit existed) a
/// roll-forward does not make the write ordered.
pub const EVENT_SYNC_ALONE: u32 = 1 << 6;

/// On a sync, beside [`EVENT_ROLL_FORWARD`]: f2fs waited for the node
/// pages it wrote before its flush. `f2fs_wait_on_node_pages_writeback`
/// waits for nothing when the sync's sequence number is 0, which the
/// first node page after each checkpoint gets: the flush may then go
/// before the node page is written, and a power cut loses the write
/// (seen on Debian's 6.1 in 2 of 3 runs, with a dm-log-writes replay:
/// docs/verifying-a-kernel.md). Without this bit a roll-forward does not
/// make the write ordered.
pub const EVENT_NODES_WAITED: u32 = 1 << 7;

/// On a sync, beside [`EVENT_NODES_WAITED`]: f2fs waited for every node
/// page numbered when its wait began (its sequence number was the last
/// one given, `f2fs_sb_info.fsync_seg_id`, as with
/// patches/f2fs-fsync-wait-all-numbered.patch). A node page numbered
/// after ours may sit before ours in the chain (numbers are taken before
/// block addresses); with none numbered after, every block ahead of ours
/// was waited for, so the roll-forward lasts beside other syncs too.
pub const EVENT_NODES_ALL: u32 = 1 << 12;

/// Bits 8..=11 of a write's flags: its filesystem, a [`crate::fs::Fs`]
/// number (0 in traces older than format 3: ext4).
pub const EVENT_FS_SHIFT: u32 = 8;
pub const EVENT_FS_MASK: u32 = 0xf << EVENT_FS_SHIFT;

/// A sync hook that does not say whether the sync was a datasync.
pub const DATASYNC_UNKNOWN: u64 = u64::MAX;

/// On a [`WriteRecord`]'s begin: a write that does not extend the file,
/// counted because its blocks were new or unwritten (`iomap->type ==
/// IOMAP_UNWRITTEN` or `IOMAP_F_NEW`: fallocated space, holes). It needs no
/// size update, only its sync; one that completes without a sync is the
/// 6.15 O_DSYNC regression (d279c80e0bac). Files written before this bit
/// existed (formats 1 and 2, early format 3) never carry it.
pub const EVENT_NEW_EXTENT: u32 = 1 << 5;

/// `iomap.type` of an unwritten extent (`IOMAP_UNWRITTEN`, stable since 4.8).
pub const IOMAP_UNWRITTEN: u16 = 3;
/// `iomap.flags` bit of blocks allocated by this very mapping (`IOMAP_F_NEW`).
pub const IOMAP_F_NEW: u16 = 1;

/// How many path components a [`PathRecord`] carries.
pub const PATH_DEPTH: usize = 8;
/// Bytes kept of each component (NUL-terminated when shorter).
pub const PATH_NAME_LEN: usize = 48;

/// Dentry names of a write's file, leaf first, up to the filesystem root.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathRecord {
    pub header: RecordHeader,
    pub dev: u32,
    /// How many entries of `names` are filled.
    pub depth: u32,
    pub ino: u64,
    /// 1 when the walk reached the filesystem root, 0 when it was cut.
    pub complete: u32,
    pub _pad: u32,
    pub names: [[u8; PATH_NAME_LEN]; PATH_DEPTH],
}
const _: () = assert!(core::mem::size_of::<PathRecord>() == 32 + 24 + PATH_DEPTH * PATH_NAME_LEN);

/// The cgroup v2 id (the inode number of its directory under the cgroup2
/// mount) of the process `header.tgid`: sent before that process's first
/// counted write, and again when it moved to another cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupRecord {
    pub header: RecordHeader,
    pub cgroup_id: u64,
}
const _: () = assert!(core::mem::size_of::<CgroupRecord>() == 40);
/// Frames a [`StackRecord`] holds at most: deep enough for a write that
/// io_uring's worker or AIO's completion runs, plus the BPF frames above.
pub const STACK_DEPTH: usize = 32;

/// The kernel call stack at one step of a counted write
/// ([`crate::kind::RecordKind::Stack`]), innermost frame first, as
/// `bpf_get_stack` wrote it. Taken only where it explains something: at
/// the sync and the size update of a write that is not ordered (a sync
/// before the size update, a size update after the sync, a completion
/// with no sync), or at both steps of every write with `CONFIG_STACKS`.
/// An ordered write sends none. It leaves before the step's own record,
/// which user space finds by (`dev`, `ino`, `step`, `step_ts`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackRecord {
    pub header: RecordHeader,
    pub dev: u32,
    /// The [`crate::kind::RecordKind`] of the step: `MarkDirty`,
    /// `SyncEnter` or `CompleteExit`.
    pub step: u32,
    pub ino: u64,
    /// The step's `ts_ns`, exactly as its own record carries it.
    pub step_ts: u64,
    /// What `bpf_get_stack` returned: bytes written (8 per frame), or a
    /// negative errno when it could not walk the stack.
    pub ret: i64,
    pub ips: [u64; STACK_DEPTH],
}
const _: () = assert!(core::mem::size_of::<StackRecord>() == 32 + 32 + STACK_DEPTH * 8);
