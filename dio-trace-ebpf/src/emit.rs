//! What leaves the kernel, and when.
//!
//! By default a counted write leaves as one [`WriteRecord`]: each probe
//! fills its step into the write's armed entry, and the entry is sent once
//! the write has nothing more to tell. With a full timeline every event
//! leaves at once as an [`InodeEvent`]. A failed send is counted, and with
//! a full timeline also carried by the write's later records, so user space
//! can mark exactly that write as having holes.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_get_stack,
    bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes,
};
use dio_trace_common::{
    arm::{ARM_SENT, ArmedWrite},
    config::{CONFIG_COUNT_ORDERED, CONFIG_FULL_TIMELINE, CONFIG_STACKS},
    counters::Counter,
    kind::RecordKind,
    ordered::OrderedKey,
    probe::Mechanism,
    record::{
        CgroupRecord, CpuBatch, EVENT_FINAL, InodeEvent, PATH_DEPTH, PathRecord, RecordHeader, SETTLED_BATCH,
        SETTLED_CPU_MASK, STACK_DEPTH, SettledBatch, SettledStep, SettledWrite, StackRecord, Step,
        WriteRecord,
    },
};

use crate::{
    facts::{Sizes, Via, read},
    maps::{BATCH, EVENTS, config, count, count_n, count_ordered, filter_add},
};

/// Every event leaves as it happens (`--full-timeline`).
#[inline(always)]
pub fn full_timeline() -> bool {
    config!(flags) & CONFIG_FULL_TIMELINE != 0
}

#[inline(always)]
pub fn header(kind: RecordKind, mechanism: Mechanism, lost: u32) -> RecordHeader {
    let id = bpf_get_current_pid_tgid();
    RecordHeader {
        kind: kind as u32,
        mechanism: mechanism as u32,
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid: id as u32,
        tgid: (id >> 32) as u32,
        // SAFETY: helper without preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        lost,
    }
}

/// How to submit a record: wake user space only when a quarter of the ring
/// is waiting (`Config::wake_bytes`); otherwise it finds the record at its
/// next poll. The kernel's default would wake it for every record that
/// lands in an empty ring, which with one record per write is every write.
#[inline(always)]
fn wake() -> u64 {
    const BPF_RB_NO_WAKEUP: u64 = 1;
    const BPF_RB_FORCE_WAKEUP: u64 = 2;
    const BPF_RB_AVAIL_DATA: u64 = 0;
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= config!(wake_bytes) as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// What one step of a write says beyond the inode and its sizes.
pub struct Fact {
    pub kind: RecordKind,
    pub mechanism: Mechanism,
    pub pos: i64,
    pub len: u64,
    pub arg: u64,
    pub flags: u32,
}

impl Fact {
    /// A fact with only its kind and argument: what size updates, syncs
    /// and completions report.
    #[inline(always)]
    pub fn new(kind: RecordKind, mechanism: Mechanism, arg: u64) -> Self {
        Fact {
            kind,
            mechanism,
            pos: 0,
            len: 0,
            arg,
            flags: 0,
        }
    }
}

/// A step of an armed write, at `ts` ([`step_time`]): sent now with a full
/// timeline, otherwise kept in the entry's slot for its kind (the first
/// one only: the verdict rests on the first covering size update, the
/// first sync, the completion).
#[inline(always)]
pub fn step(armed: *mut ArmedWrite, sizes: &Sizes, fact: Fact, ts: u64) {
    if full_timeline() {
        inode_event(armed, sizes, fact, ts);
        return;
    }
    // SAFETY: map value pointer, valid while the program runs.
    let slot = unsafe {
        match fact.kind {
            k if k.is_size_update() => &raw mut (*armed).rec.size,
            RecordKind::SyncEnter => &raw mut (*armed).rec.sync,
            RecordKind::CompleteExit => &raw mut (*armed).rec.complete,
            _ => return,
        }
    };
    // SAFETY: as above.
    unsafe {
        if (*slot).ts_ns != 0 {
            return;
        }
        let id = bpf_get_current_pid_tgid();
        *slot = Step {
            ts_ns: ts,
            i_size: sizes.i_size,
            i_disksize: sizes.i_disksize,
            pos: fact.pos,
            arg: fact.arg,
            pid: id as u32,
            tgid: (id >> 32) as u32,
            cpu: bpf_get_smp_processor_id(),
            mechanism: fact.mechanism as u32,
            flags: fact.flags | sizes.flags,
            kind: fact.kind as u32,
        };
    }
}

/// Now, but later than every step the write has already recorded: user
/// space orders a write's steps by time, and the verdict is that order. A
/// coarse clock (a VM whose TSC was found unstable falls back to jiffies,
/// 4 ms) would otherwise give a sync and a size update the same time and
/// let user space guess their order; the probes run in the kernel's order,
/// so arrival order is the truth. A step's stack carries the same time,
/// which is how user space finds the step it belongs to.
#[inline(always)]
pub fn step_time(armed: *const ArmedWrite) -> u64 {
    // SAFETY: helper without preconditions; map value pointer, valid while
    // the program runs.
    unsafe {
        let now = bpf_ktime_get_ns();
        let r = &raw const (*armed).rec;
        let last = [
            (*r).begin.header.ts_ns,
            (*r).size.ts_ns,
            (*r).sync.ts_ns,
            (*r).complete.ts_ns,
        ]
        .into_iter()
        .fold(0, u64::max);
        if now > last { now } else { last + 1 }
    }
}

/// The write has nothing more to tell: send it (unless its events already
/// left one by one) and mark it sent. The entry stays for the inode's next
/// write to reuse (the LRU makes room when it must); the filter stops
/// counting it, so the completion that follows an ordered write's sync
/// costs no lookup.
#[inline(always)]
pub fn retire(armed: *mut ArmedWrite) {
    finish(armed, Settled::No);
}

/// [`retire`] at the sync of a write whose covering size update came
/// first: its verdict can no longer change, and it leaves as the compact
/// [`SettledWrite`] (a third fewer bytes through the ring and into user
/// space, for the record most writes send) when that holds it exactly.
/// `ordered`: the shared rule settled it as ordered
/// ([`dio_trace_common::verdict::settled_ordered`]), not only as final;
/// then a run that prints no ordered write counts it instead of sending it
/// ([`count_settled`]).
#[inline(always)]
pub fn settle(armed: *mut ArmedWrite, ordered: bool) {
    finish(armed, if ordered { Settled::Ordered } else { Settled::Final });
}

/// How far a write is settled when it leaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// It may still learn more (it leaves at its completion, or evicted).
    No,
    /// Its verdict can no longer change.
    Final,
    /// And the shared rule says ordered.
    Ordered,
}

#[inline(always)]
fn finish(armed: *mut ArmedWrite, settled: Settled) {
    // SAFETY: map value pointer, valid while the program runs.
    unsafe {
        if (*armed).state & ARM_SENT != 0 {
            return; // another probe retired it a moment ago
        }
        if settled == Settled::Ordered && settle_counted(armed) {
            return;
        }
        (*armed).state |= ARM_SENT;
        if !full_timeline() {
            (*armed).rec.begin.flags |= EVENT_FINAL;
            let gone = settled != Settled::No && send_settled(armed);
            if !gone {
                send_write(armed);
            }
        }
        filter_add((*armed).rec.begin.ino, -1);
    }
}

/// Settle a write the shared rule calls ordered by counting it
/// ([`count_settled`]), where the run counts ordered writes. It needs
/// nothing of the step that settled it, so a sync after the covering size
/// update calls this before reading anything for its step (the on-disk
/// size is a `bpf_probe_read_kernel` of about 35 ns). False, with nothing
/// changed, when the write must be sent after all: the caller records the
/// step and [`settle`]s it.
#[inline(always)]
pub fn settle_counted(armed: *mut ArmedWrite) -> bool {
    // SAFETY: map value pointer, valid while the program runs.
    unsafe {
        if (*armed).state & ARM_SENT != 0 {
            return true; // another probe retired it a moment ago
        }
        if full_timeline() || !count_settled(armed) {
            return false;
        }
        (*armed).state |= ARM_SENT;
        (*armed).rec.begin.flags |= EVENT_FINAL;
        filter_add((*armed).rec.begin.ino, -1);
    }
    true
}

/// The run counts ordered writes instead of sending them
/// ([`CONFIG_COUNT_ORDERED`]): nobody is shown their timelines.
#[inline(always)]
pub fn counts_ordered() -> bool {
    config!(flags) & CONFIG_COUNT_ORDERED != 0
}

/// Count an ordered write instead of sending it, where the run asked
/// ([`CONFIG_COUNT_ORDERED`]) and the write has nothing user space must
/// see: none of its records was lost (user space marks such a write).
/// False when it must be sent after all.
#[inline(always)]
fn count_settled(armed: *const ArmedWrite) -> bool {
    if !counts_ordered() {
        return false;
    }
    // SAFETY: map value pointer, valid while the program runs.
    let (lost, key) = unsafe {
        let b = &raw const (*armed).rec.begin;
        (
            (*b).header.lost,
            OrderedKey::new((*armed).cg_write, (*b).dev, (*b).flags),
        )
    };
    let counted = lost == 0 && count_ordered(&key);
    if counted {
        count(Counter::OrderedCounted);
    }
    counted
}

/// Send a settled write as a [`SettledWrite`]: into this CPU's batch
/// ([`batched`]), else filled straight into the ring. False when the
/// compact record cannot hold it exactly (lost records, a CPU number past
/// 16 bits, a step `pos` of its own), and the whole record must go instead.
#[inline(always)]
fn send_settled(armed: *const ArmedWrite) -> bool {
    // SAFETY: map value pointer, valid while the program runs.
    let fits = unsafe {
        let r = &raw const (*armed).rec;
        (*r).begin.header.lost == 0
            && (*r).size.pos == 0
            && (*r).sync.pos == -1
            && (*r).size.cpu <= SETTLED_CPU_MASK
            && (*r).sync.cpu <= SETTLED_CPU_MASK
    };
    if !fits {
        return false;
    }
    if batched(armed) {
        return true;
    }
    let Some(mut entry) = EVENTS.reserve::<SettledWrite>(0) else {
        sent(false, 1);
        return true;
    };
    fill_settled(entry.as_mut_ptr(), armed);
    entry.submit(wake());
    sent(true, 1);
    true
}

/// Put a settled write into this CPU's batch, and send the batch when it
/// is full. False, and nothing done, when batching is off or another
/// program on this CPU is in the middle of changing the batch (then the
/// write goes alone). Records sent alone meanwhile overtake the batch:
/// user space holds every record and puts them back in the order they
/// were made (`collect/hold.rs`).
#[inline(always)]
fn batched(armed: *const ArmedWrite) -> bool {
    let Some(b) = BATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU map value, valid while the program runs; `busy`
    // keeps every other program on this CPU out until it is cleared.
    unsafe {
        if (*b).on == 0 || (*b).busy != 0 {
            return false;
        }
        (*b).busy = 1;
        let n = (*b).batch.count as usize;
        if n < SETTLED_BATCH {
            fill_settled((&raw mut (*b).batch.writes).cast::<SettledWrite>().add(n), armed);
            (*b).batch.count = n as u32 + 1;
            if n + 1 == SETTLED_BATCH {
                send_batch(b);
            }
        }
        (*b).busy = 0;
        n < SETTLED_BATCH
    }
}

/// Send what this CPU's batch holds, as one record, and empty it. For the
/// flush user space runs on each CPU (`probes/flush.rs`), which holds
/// `busy`, as [`batched`] does.
#[inline(always)]
pub fn send_batch(b: *mut CpuBatch) {
    // SAFETY: per-CPU map value, valid while the program runs, `busy` held.
    unsafe {
        let n = (*b).batch.count as usize;
        if n == 0 || n > SETTLED_BATCH {
            return;
        }
        (*b).batch.kind = RecordKind::SettledBatch as u32;
        // Whole, also when not full (a flush at a tick): a length that
        // varies with `count` is one the verifier cannot bound.
        sent(
            EVENTS.output::<SettledBatch>(&(*b).batch, wake()).is_ok(),
            n as u64,
        );
        (*b).batch.count = 0;
    }
}

/// Fill `out` (reserved in the ring, or a batch slot) with a settled
/// write.
#[inline(always)]
fn fill_settled(out: *mut SettledWrite, armed: *const ArmedWrite) {
    // SAFETY: `out` points at a writable SettledWrite, filled in place;
    // `armed` is a map value pointer, valid while the program runs.
    unsafe {
        let b = &raw const (*armed).rec.begin;
        (*out).kind = RecordKind::Settled as u32;
        (*out).flags = (*b).flags;
        (*out).dev = (*b).dev;
        (*out).ki_flags = (*b).arg as u32;
        (*out).ino = (*b).ino;
        (*out).pos = (*b).pos;
        (*out).len = (*b).len;
        (*out).i_size = (*b).i_size;
        (*out).i_disksize = (*b).i_disksize;
        // As two aligned words: a plain array copy becomes a byte-loop
        // memmove subprogram in BPF.
        const _: () = assert!(
            core::mem::offset_of!(SettledWrite, comm) % 8 == 0
                && core::mem::offset_of!(InodeEvent, comm) % 8 == 0
        );
        let (from, to) = (
            (&raw const (*b).comm).cast::<u64>(),
            (&raw mut (*out).comm).cast::<u64>(),
        );
        to.write(from.read());
        to.add(1).write(from.add(1).read());
        (*out).ts_ns = (*b).header.ts_ns;
        (*out).pid = (*b).header.pid;
        (*out).tgid = (*b).header.tgid;
        (*out).cpu = (*b).header.cpu;
        (*out).mechanism = (*b).header.mechanism;
        (&raw mut (*out).size).write(SettledStep::of(&(*armed).rec.size));
        (&raw mut (*out).sync).write(SettledStep::of(&(*armed).rec.sync));
    }
}

/// Count `writes` whole writes sent, or lost to a full ring (a batch
/// counts as the records its writes would have been alone).
#[inline(always)]
fn sent(ok: bool, writes: u64) {
    if ok {
        count_n(Counter::Sent, writes);
    } else {
        count_n(Counter::RingbufFull, writes);
        count_n(Counter::WritesLost, writes);
    }
}

/// Send an armed write as one record, whatever it has seen so far.
#[inline(always)]
pub fn send_write(armed: *mut ArmedWrite) {
    // SAFETY: map value pointer, valid while the program runs.
    let ok = EVENTS
        .output::<WriteRecord>(unsafe { &(*armed).rec }, wake())
        .is_ok();
    sent(ok, 1);
}

/// Send one event of an armed inode at once (full timeline), at `ts`. The
/// record carries the entry's loss count, which grows when the ring buffer
/// is full.
#[inline(always)]
pub fn inode_event(armed: *mut ArmedWrite, sizes: &Sizes, fact: Fact, ts: u64) {
    // SAFETY: map value pointer, valid while the program runs.
    let (dev, ino, lost) = unsafe {
        let b = &(*armed).rec.begin;
        (b.dev, b.ino, b.header.lost)
    };
    let Some(mut entry) = EVENTS.reserve::<InodeEvent>(0) else {
        lost_one(armed);
        return;
    };
    entry.write(InodeEvent {
        header: RecordHeader {
            ts_ns: ts,
            ..header(fact.kind, fact.mechanism, lost)
        },
        dev,
        flags: fact.flags | sizes.flags,
        ino,
        i_size: sizes.i_size,
        i_disksize: sizes.i_disksize,
        pos: fact.pos,
        len: fact.len,
        arg: fact.arg,
        // Who wrote is the begin's business; later records would only
        // repeat it (or name a kworker), at a helper call each.
        comm: if fact.kind == RecordKind::WriteBegin {
            bpf_get_current_comm().unwrap_or([0; 16])
        } else {
            [0; 16]
        },
    });
    entry.submit(wake());
    count(Counter::Sent);
}

/// Send the cgroup of the task making a counted write, before the write's
/// own record: once per process and cgroup (`CGROUP_SENT`). False when
/// the ring was full (counted, and tried again at the next write).
#[inline(always)]
pub fn cgroup_record(cgroup_id: u64, mechanism: Mechanism, armed: *mut ArmedWrite) -> bool {
    let Some(mut entry) = EVENTS.reserve::<CgroupRecord>(0) else {
        lost_one(armed);
        return false;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at a reserved, writable CgroupRecord in the ring;
    // filled in place, with no copy on the stack.
    unsafe {
        (*rec).header = header(RecordKind::TaskCgroup, mechanism, 0);
        (*rec).cgroup_id = cgroup_id;
    }
    entry.submit(wake());
    count(Counter::Sent);
    true
}

/// Send the file's path as dentry names, leaf first, walking `d_parent`
/// until the filesystem root (or `PATH_DEPTH` names). Once per file, so
/// plain probe reads. Not inlined: a BPF subprogram keeps the unrolled walk
/// out of the way of every write's hot path.
#[inline(never)]
pub fn path_record(dentry: *const u8, mechanism: Mechanism, armed: *mut ArmedWrite) {
    // SAFETY: map value pointer, valid while the program runs.
    let (dev, ino) = unsafe { ((*armed).rec.begin.dev, (*armed).rec.begin.ino) };
    let Some(mut entry) = EVENTS.reserve::<PathRecord>(0) else {
        lost_one(armed);
        return;
    };
    let d_parent = config!(offsets.dentry_d_parent);
    let d_name = config!(offsets.dentry_d_name_name);
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at a reserved, writable PathRecord in the ring.
    unsafe {
        (*rec).header = header(RecordKind::WritePath, mechanism, 0);
        (*rec).dev = dev;
        (*rec).ino = ino;
        (*rec).depth = 0;
        (*rec).complete = 0;
        (*rec)._pad = 0;
        let mut d = dentry;
        let mut i = 0;
        while i < PATH_DEPTH {
            (*rec).names[i][0] = 0;
            i += 1;
        }
        i = 0;
        while i < PATH_DEPTH {
            let Ok(parent) = read::<*const u8>(Via::Probe, d, d_parent) else {
                break;
            };
            if parent == d || parent.is_null() {
                (*rec).complete = 1;
                break;
            }
            if let Ok(name) = read::<*const u8>(Via::Probe, d, d_name) {
                let _ = bpf_probe_read_kernel_str_bytes(name, &mut (*rec).names[i]);
            }
            (*rec).depth = (i + 1) as u32;
            d = parent;
            i += 1;
        }
        if i == PATH_DEPTH
            && let Ok(parent) = read::<*const u8>(Via::Probe, d, d_parent)
            && parent == d
        {
            (*rec).complete = 1;
        }
    }
    entry.submit(wake());
    count(Counter::Sent);
}

/// Is the stack at a step worth its cost? Where the step shows the write
/// is not ordered (`unordered`), always; otherwise only with `--stacks`.
/// An ordered write pays this test and nothing more.
#[inline(always)]
pub fn wants_stack(unordered: bool) -> bool {
    unordered || config!(flags) & CONFIG_STACKS != 0
}

/// Send the kernel stack of the step of `kind` at `ts` of an armed write,
/// before the step's own record. `ctx` is the program's context, which
/// `bpf_get_stack` walks from. Written straight into the ring: 256 bytes
/// do not fit beside the rest on the BPF stack. A full ring loses only the
/// stack (`Counter::StacksLost`): no verdict rests on it.
#[inline(never)]
pub fn stack(ctx: *mut c_void, armed: *const ArmedWrite, kind: RecordKind, mechanism: Mechanism, ts: u64) {
    let Some(mut entry) = EVENTS.reserve::<StackRecord>(0) else {
        count(Counter::StacksLost);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at a reserved, writable StackRecord in the ring;
    // `armed` is a map value pointer, valid while the program runs.
    unsafe {
        (*rec).header = header(RecordKind::Stack, mechanism, 0);
        (*rec).dev = (*armed).rec.begin.dev;
        (*rec).ino = (*armed).rec.begin.ino;
        (*rec).step = kind as u32;
        (*rec).step_ts = ts;
        let ips = &raw mut (*rec).ips;
        (*rec).ret = bpf_get_stack(ctx, ips.cast(), (STACK_DEPTH * 8) as u32, 0);
    }
    entry.submit(wake());
    count(Counter::Sent);
}

/// A reservation failed. With a full timeline the write's later records
/// say so; a lost path only makes the path unknown.
#[inline(always)]
fn lost_one(armed: *mut ArmedWrite) {
    count(Counter::RingbufFull);
    if full_timeline() {
        // SAFETY: map value pointer, valid while the program runs.
        unsafe { (*armed).rec.begin.header.lost = (*armed).rec.begin.header.lost.wrapping_add(1) };
    }
}
