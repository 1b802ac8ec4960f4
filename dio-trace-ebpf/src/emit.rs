//! Reserve, fill, submit. A failed reservation is counted globally and
//! against the armed inode, so user space can mark exactly that write as
//! having holes instead of judging it on half a timeline.

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
    bpf_probe_read_kernel_str_bytes,
};
use dio_trace_common::{
    arm::ArmedWrite,
    config::Config,
    counters::Counter,
    kind::RecordKind,
    probe::Mechanism,
    record::{InodeEvent, PATH_DEPTH, PathRecord, RecordHeader},
};

use crate::{
    facts::{Sizes, read},
    maps::{EVENTS, count},
};

#[inline(always)]
fn header(kind: RecordKind, mechanism: Mechanism, lost: u32) -> RecordHeader {
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

/// Do not wake user space for this record: most records of a write wait in
/// the ring for its completion (or the next tick), so a write costs one
/// wake-up, not one per record.
const BPF_RB_NO_WAKEUP: u64 = 1;

/// What one [`InodeEvent`] says beyond its header and inode.
pub struct Fact {
    pub kind: RecordKind,
    pub mechanism: Mechanism,
    pub pos: i64,
    pub len: u64,
    pub arg: u64,
    pub flags: u32,
}

/// Send one fact of an armed inode. The record carries the entry's loss
/// count, which grows when the ring buffer is full.
#[inline(always)]
pub fn inode_event(armed: *mut ArmedWrite, sizes: &Sizes, fact: Fact) {
    // SAFETY: map value pointers stay valid while the program runs.
    let (key, lost) = unsafe { ((*armed).key, (*armed).lost) };
    let Some(mut entry) = EVENTS.reserve::<InodeEvent>(0) else {
        lost_one(armed);
        return;
    };
    entry.write(InodeEvent {
        header: header(fact.kind, fact.mechanism, lost),
        dev: key.dev,
        flags: fact.flags | sizes.flags,
        ino: key.ino,
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
    let wake = if fact.kind == RecordKind::CompleteExit {
        0
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(wake);
    count(Counter::Sent);
}

/// Send the file's path as dentry names, leaf first, walking `d_parent`
/// until the filesystem root (or `PATH_DEPTH` names).
#[inline(always)]
pub fn path_record(cfg: &Config, dentry: *const u8, mechanism: Mechanism, armed: *mut ArmedWrite) {
    // SAFETY: map value pointer, valid while the program runs.
    let key = unsafe { (*armed).key };
    let Some(mut entry) = EVENTS.reserve::<PathRecord>(0) else {
        lost_one(armed);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at a reserved, writable PathRecord in the ring.
    unsafe {
        (*rec).header = header(RecordKind::WritePath, mechanism, 0);
        (*rec).dev = key.dev;
        (*rec).ino = key.ino;
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
            let Ok(parent) = read::<*const u8>(d, cfg.offsets.dentry_d_parent) else {
                break;
            };
            if parent == d || parent.is_null() {
                (*rec).complete = 1;
                break;
            }
            if let Ok(name) = read::<*const u8>(d, cfg.offsets.dentry_d_name_name) {
                let _ = bpf_probe_read_kernel_str_bytes(name, &mut (*rec).names[i]);
            }
            (*rec).depth = (i + 1) as u32;
            d = parent;
            i += 1;
        }
        if i == PATH_DEPTH {
            if let Ok(parent) = read::<*const u8>(d, cfg.offsets.dentry_d_parent) {
                if parent == d {
                    (*rec).complete = 1;
                }
            }
        }
    }
    entry.submit(BPF_RB_NO_WAKEUP);
    count(Counter::Sent);
}

#[inline(always)]
fn lost_one(armed: *mut ArmedWrite) {
    count(Counter::RingbufFull);
    // SAFETY: map value pointer, valid while the program runs.
    unsafe { (*armed).lost = (*armed).lost.wrapping_add(1) };
}
