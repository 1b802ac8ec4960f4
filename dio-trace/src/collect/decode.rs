//! Raw record bytes to typed records. Pure and total: any byte string gets
//! a record or an error, never a panic (trace files go through here too).

use dio_trace_common::{
    fs::Fs,
    kind::RecordKind,
    probe::Mechanism,
    record::{
        CgroupRecord, EVENT_FS_MASK, EVENT_FS_SHIFT, InodeEvent, PathRecord, RecordHeader, SETTLED_BATCH,
        SettledBatch, SettledWrite, StackRecord, Step, WriteRecord,
    },
};
use std::borrow::Cow;

use thiserror::Error;

use crate::analysis::{Comm, Event};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than a header")]
    Short(usize),
    #[error("unknown record kind {0}")]
    Kind(u32),
    #[error("unknown mechanism {0}")]
    Mechanism(u32),
    #[error("unknown filesystem {0}")]
    Filesystem(u32),
    #[error("batch of {count} settled writes in {len} bytes")]
    Batch { count: u32, len: usize },
    #[error("{kind} record of {len} bytes, expected {want}")]
    Size {
        kind: &'static str,
        len: usize,
        want: usize,
    },
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    Event(Event),
    /// A whole write ([`RecordKind::Write`]): its begin; the steps it saw
    /// are in the buffer [`decode_into`] was given, in kernel order.
    Write(Event),
    /// Dentry names, leaf first; `complete` when the walk reached the root.
    Path {
        dev: u32,
        ino: u64,
        tgid: u32,
        names: Vec<String>,
        complete: bool,
    },
    /// The cgroup v2 id of process `tgid`, for its writes that follow.
    Cgroup {
        tgid: u32,
        id: u64,
    },
    /// The kernel stack at the step of `step` kind and time `step_ts` of
    /// the write on (`dev`, `ino`): return addresses, innermost first, or
    /// the negative errno of a walk that failed.
    Stack {
        dev: u32,
        ino: u64,
        step: RecordKind,
        step_ts: u64,
        ips: Result<Vec<u64>, i64>,
    },
}

/// `bytes` as a `T`: read in place where they are aligned for it (the
/// ring buffer's records are), else copied out.
fn pod<'a, T: Copy>(bytes: &'a [u8], kind: &'static str) -> Result<Cow<'a, T>, DecodeError> {
    let want = std::mem::size_of::<T>();
    if bytes.len() < want {
        return Err(DecodeError::Size {
            kind,
            len: bytes.len(),
            want,
        });
    }
    let p = bytes.as_ptr().cast::<T>();
    // SAFETY: length checked; T is a #[repr(C)] record of integers and byte
    // arrays, for which every bit pattern is valid; the reference is used
    // only where `p` is aligned for T, and lives no longer than `bytes`;
    // read_unaligned copes with any alignment of the source.
    Ok(if p.is_aligned() {
        Cow::Borrowed(unsafe { &*p })
    } else {
        Cow::Owned(unsafe { std::ptr::read_unaligned(p) })
    })
}

/// A record's bytes as the ring buffer carries them: what [`decode`] reads
/// back. For records that come from elsewhere (the armed map at the end of
/// a session, benches, tests).
pub fn record_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: `T` is a #[repr(C)] record of integers and byte arrays with
    // explicit padding: all of its bytes are initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// The settled writes of a batch record (its first `count` slots), each a
/// record of its own; `None` when `bytes` is not a batch. A batch of
/// another length or a count past its slots is refused whole.
pub fn batch_slots(bytes: &[u8]) -> Option<Result<std::slice::ChunksExact<'_, u8>, DecodeError>> {
    let head: [u8; SettledBatch::HEADER] = bytes.get(..SettledBatch::HEADER)?.try_into().ok()?;
    let [k0, k1, k2, k3, c0, c1, c2, c3] = head;
    if u32::from_ne_bytes([k0, k1, k2, k3]) != RecordKind::SettledBatch as u32 {
        return None;
    }
    let count = u32::from_ne_bytes([c0, c1, c2, c3]);
    let slot = std::mem::size_of::<SettledWrite>();
    if count as usize > SETTLED_BATCH || bytes.len() != std::mem::size_of::<SettledBatch>() {
        return Some(Err(DecodeError::Batch {
            count,
            len: bytes.len(),
        }));
    }
    let filled = SettledBatch::HEADER + count as usize * slot;
    Some(Ok(bytes[SettledBatch::HEADER..filled].chunks_exact(slot)))
}

/// When the kernel made a record: a whole write once its last step was
/// seen (a settled one at its sync), a stack at its step, any other at its
/// header's time. `None`: no header to tell.
pub fn sent_at(bytes: &[u8]) -> Option<u64> {
    let header = pod::<RecordHeader>(bytes, "header").ok()?;
    Some(match RecordKind::from_u32(header.kind) {
        Some(RecordKind::Settled) => pod::<SettledWrite>(bytes, "settled").ok()?.sync.ts_ns,
        Some(RecordKind::Write) => {
            let r = pod::<WriteRecord>(bytes, "write").ok()?;
            [r.size.ts_ns, r.sync.ts_ns, r.complete.ts_ns]
                .into_iter()
                .fold(r.begin.header.ts_ns, u64::max)
        }
        Some(RecordKind::Stack) => pod::<StackRecord>(bytes, "stack").ok()?.step_ts,
        _ => header.ts_ns,
    })
}

/// The CPU that settled a [`SettledWrite`] (ran its sync): the CPU whose
/// batch it came in.
pub fn settled_cpu(bytes: &[u8]) -> Option<u32> {
    Some(pod::<SettledWrite>(bytes, "settled").ok()?.sync.cpu.into())
}

/// `bytes` decoded; a whole write's steps are appended to `steps` (a
/// buffer the caller reuses: no allocation per write).
pub fn decode_into(bytes: &[u8], steps: &mut Vec<Event>) -> Result<Decoded, DecodeError> {
    let header: RecordHeader = *pod(bytes, "header").map_err(|_| DecodeError::Short(bytes.len()))?;
    let kind = RecordKind::from_u32(header.kind).ok_or(DecodeError::Kind(header.kind))?;
    // Compact: its kind is all it shares with the header.
    if kind == RecordKind::Settled {
        let r = pod::<SettledWrite>(bytes, kind.name())?;
        // Straight from the compact form: building the whole record first
        // cost a tenth of user space's time per write.
        let (size, sync) = (r.size_step(), r.sync_step());
        return write(
            &r.begin(),
            [(RecordKind::MarkDirty, &size), (RecordKind::SyncEnter, &sync)],
            steps,
        )
        .map(Decoded::Write);
    }
    // Split first ([`batch_slots`]): a batch is its writes.
    if kind == RecordKind::SettledBatch {
        return Err(DecodeError::Batch {
            count: header.mechanism,
            len: bytes.len(),
        });
    }
    let mechanism = Mechanism::from_u32(header.mechanism).ok_or(DecodeError::Mechanism(header.mechanism))?;
    if kind == RecordKind::WritePath {
        let r = pod::<PathRecord>(bytes, kind.name())?;
        let depth = (r.depth as usize).min(r.names.len());
        let names = r.names[..depth].iter().map(|n| c_str(n)).collect();
        return Ok(Decoded::Path {
            dev: r.dev,
            ino: r.ino,
            tgid: r.header.tgid,
            names,
            complete: r.complete != 0,
        });
    }
    if kind == RecordKind::TaskCgroup {
        let r = pod::<CgroupRecord>(bytes, kind.name())?;
        return Ok(Decoded::Cgroup {
            tgid: r.header.tgid,
            id: r.cgroup_id,
        });
    }
    if kind == RecordKind::Write {
        let r = pod::<WriteRecord>(bytes, kind.name())?;
        return write(
            &r.begin,
            [
                (RecordKind::MarkDirty, &r.size),
                (RecordKind::SyncEnter, &r.sync),
                (RecordKind::CompleteExit, &r.complete),
            ],
            steps,
        )
        .map(Decoded::Write);
    }
    if kind == RecordKind::Stack {
        return stack(&*pod::<StackRecord>(bytes, kind.name())?);
    }
    Ok(Decoded::Event(event(
        kind,
        mechanism,
        &*pod::<InodeEvent>(bytes, kind.name())?,
    )))
}

fn event(kind: RecordKind, mechanism: Mechanism, r: &InodeEvent) -> Event {
    Event {
        kind,
        mechanism,
        ts_ns: r.header.ts_ns,
        pid: r.header.pid,
        tgid: r.header.tgid,
        cpu: r.header.cpu,
        lost: r.header.lost,
        dev: r.dev,
        ino: r.ino,
        flags: r.flags,
        i_size: r.i_size,
        i_disksize: r.i_disksize,
        pos: r.pos,
        len: r.len,
        arg: r.arg,
        comm: Comm::new(&r.comm),
        caller: None,
        cgroup: None,
        stack: None,
    }
}

/// A whole write (a [`WriteRecord`]'s start and step slots, each with the
/// kind its slot stands for) as the events a full timeline would have sent
/// for the same facts: the begin, then each step seen (appended to
/// `steps`), by time. On error `steps` is left as it was.
fn write<const N: usize>(
    b: &InodeEvent,
    slots: [(RecordKind, &Step); N],
    steps: &mut Vec<Event>,
) -> Result<Event, DecodeError> {
    let mechanism = |m: u32| Mechanism::from_u32(m).ok_or(DecodeError::Mechanism(m));
    let fs = (b.flags & EVENT_FS_MASK) >> EVENT_FS_SHIFT;
    if Fs::from_u32(fs).is_none() {
        return Err(DecodeError::Filesystem(fs));
    }
    let begin = event(RecordKind::WriteBegin, mechanism(b.header.mechanism)?, b);
    let first = steps.len();
    for (kind, s) in slots {
        if s.ts_ns != 0 {
            let e = match s.kind {
                0 => Ok(kind),
                n => RecordKind::from_u32(n).ok_or(DecodeError::Kind(n)),
            }
            .and_then(|kind| Ok(step(kind, mechanism(s.mechanism)?, s, &begin)));
            match e {
                Ok(e) => steps.push(e),
                Err(e) => {
                    steps.truncate(first);
                    return Err(e);
                }
            }
        }
    }
    // Stable: equal times keep the order above.
    steps[first..].sort_by_key(|e| e.ts_ns);
    Ok(begin)
}

fn step(kind: RecordKind, mechanism: Mechanism, s: &Step, begin: &Event) -> Event {
    Event {
        kind,
        mechanism,
        ts_ns: s.ts_ns,
        pid: s.pid,
        tgid: s.tgid,
        cpu: s.cpu,
        lost: begin.lost,
        dev: begin.dev,
        ino: begin.ino,
        flags: s.flags,
        i_size: s.i_size,
        i_disksize: s.i_disksize,
        pos: s.pos,
        len: 0,
        arg: s.arg,
        comm: Comm::default(),
        caller: None,
        cgroup: None,
        stack: None,
    }
}

fn stack(r: &StackRecord) -> Result<Decoded, DecodeError> {
    let step = RecordKind::from_u32(r.step).ok_or(DecodeError::Kind(r.step))?;
    let ips = if r.ret < 0 {
        Err(r.ret)
    } else {
        let n = (r.ret as usize / 8).min(r.ips.len());
        Ok(r.ips[..n].iter().copied().filter(|&ip| ip != 0).collect())
    };
    Ok(Decoded::Stack {
        dev: r.dev,
        ino: r.ino,
        step,
        step_ts: r.step_ts,
        ips,
    })
}

/// Bytes up to the first NUL, lossily as UTF-8.
fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dio_trace_common::record::{EVENT_FINAL, EVENT_SYNC};

    fn as_bytes<T: Copy>(v: &T) -> Vec<u8> {
        record_bytes(v).to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
        decode_into(bytes, &mut Vec::new())
    }

    /// A whole write's begin and steps, as one list.
    fn write_events(bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        let Decoded::Write(begin) = decode_into(bytes, &mut events).unwrap() else {
            panic!("not a write")
        };
        events.insert(0, begin);
        events
    }

    fn event(kind: RecordKind) -> InodeEvent {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"writer");
        InodeEvent {
            header: RecordHeader {
                kind: kind as u32,
                mechanism: Mechanism::Tracepoint as u32,
                ts_ns: 42,
                pid: 7,
                tgid: 7,
                cpu: 1,
                lost: 0,
            },
            dev: 7 << 20,
            flags: 0,
            ino: 12,
            i_size: 4096,
            i_disksize: 4096,
            pos: 4096,
            len: 4096,
            arg: 0,
            comm,
        }
    }

    #[test]
    fn round_trips_an_event() {
        let Decoded::Event(e) = decode(&as_bytes(&event(RecordKind::SyncEnter))).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(
            (e.kind, e.ino, &*e.comm.as_str(), e.ts_ns),
            (RecordKind::SyncEnter, 12, "writer", 42)
        );
    }

    #[test]
    fn round_trips_a_path() {
        let mut r = PathRecord {
            header: RecordHeader {
                kind: RecordKind::WritePath as u32,
                mechanism: Mechanism::Tracepoint as u32,
                ..RecordHeader::default()
            },
            dev: 1,
            depth: 2,
            ino: 9,
            complete: 1,
            _pad: 0,
            names: [[0; 48]; 8],
        };
        r.names[0][..4].copy_from_slice(b"file");
        r.names[1][..3].copy_from_slice(b"dir");
        let d = decode(&as_bytes(&r)).unwrap();
        assert!(matches!(d, Decoded::Path { ref names, complete: true, .. } if names == &["file", "dir"]));
    }

    #[test]
    fn cgroup_records_name_their_process() {
        let r = CgroupRecord {
            header: RecordHeader {
                kind: RecordKind::TaskCgroup as u32,
                mechanism: Mechanism::Kprobe as u32,
                tgid: 42,
                ..RecordHeader::default()
            },
            cgroup_id: 7_777,
        };
        assert_eq!(decode(&as_bytes(&r)), Ok(Decoded::Cgroup { tgid: 42, id: 7_777 }));
        assert!(matches!(
            decode(&as_bytes(&r)[..36]),
            Err(DecodeError::Size {
                kind: "task_cgroup",
                ..
            })
        ));
    }

    fn step(ts_ns: u64, i_disksize: i64, arg: u64) -> Step {
        Step {
            ts_ns,
            i_size: 8192,
            i_disksize,
            arg,
            pid: 9,
            tgid: 7,
            mechanism: Mechanism::Fentry as u32,
            ..Step::default()
        }
    }

    #[test]
    fn a_write_record_becomes_its_events_in_time_order() {
        let mut begin = event(RecordKind::Write);
        begin.flags = EVENT_FINAL;
        // The buggy order: sync (t=50), completion (t=60), size update (t=70).
        let r = WriteRecord {
            begin,
            size: step(70, 8192, 0xffff),
            sync: step(50, 4096, 1),
            complete: step(60, 4096, 4096),
        };
        let events = write_events(&as_bytes(&r));
        let kinds: Vec<_> = events.iter().map(|e| (e.kind, e.ts_ns)).collect();
        assert_eq!(
            kinds,
            [
                (RecordKind::WriteBegin, 42),
                (RecordKind::SyncEnter, 50),
                (RecordKind::CompleteExit, 60),
                (RecordKind::MarkDirty, 70),
            ]
        );
        assert!(events.iter().all(|e| e.key() == (7 << 20, 12)));
        assert_eq!(events[0].comm, "writer");
        assert_eq!((events[1].pid, events[1].mechanism), (9, Mechanism::Fentry));
    }

    #[test]
    fn a_settled_write_decodes_as_the_whole_record_would() {
        let mut begin = event(RecordKind::Write);
        begin.flags = EVENT_FINAL | EVENT_SYNC;
        begin.arg = 0x2_0006;
        let mut sync = step(60, 8192, 1);
        sync.pos = -1;
        sync.kind = RecordKind::SyncEnter as u32;
        sync.cpu = 3;
        let mut size = step(50, 8192, 0xffff_ffff_8123_4567);
        size.kind = RecordKind::MarkDirty as u32;
        let whole = WriteRecord {
            begin,
            size,
            sync,
            ..WriteRecord::default()
        };
        let compact = SettledWrite::of(&whole).expect("a write settled at its sync");
        assert_eq!(
            (compact.kind, compact.sync.cpu, compact.ki_flags),
            (RecordKind::Settled as u32, 3, 0x2_0006)
        );
        assert_eq!(compact.to_write_record(), whole);
        assert_eq!(write_events(&as_bytes(&compact)), write_events(&as_bytes(&whole)));
        assert!(matches!(
            decode(&as_bytes(&compact)[..100]),
            Err(DecodeError::Size {
                kind: "settled_write",
                ..
            })
        ));
        let completed = WriteRecord {
            complete: step(70, 8192, 4096),
            ..whole
        };
        assert_eq!(SettledWrite::of(&completed), None, "a completion does not fit");
    }

    #[test]
    fn a_batch_is_its_settled_writes() {
        let mut begin = event(RecordKind::Write);
        begin.flags = EVENT_FINAL;
        let write = |ino: u64| {
            let mut size = step(50, 8192, 1);
            size.kind = RecordKind::MarkDirty as u32;
            let mut sync = step(60, 8192, 1);
            sync.pos = -1;
            sync.kind = RecordKind::SyncEnter as u32;
            let mut w = WriteRecord {
                begin,
                size,
                sync,
                ..WriteRecord::default()
            };
            w.begin.ino = ino;
            SettledWrite::of(&w).expect("settled")
        };
        let mut batch = SettledBatch {
            kind: RecordKind::SettledBatch as u32,
            count: 2,
            writes: [SettledWrite::default(); SETTLED_BATCH],
        };
        batch.writes[0] = write(12);
        batch.writes[1] = write(13);
        let bytes = as_bytes(&batch);
        let slots: Vec<&[u8]> = batch_slots(&bytes).expect("a batch").expect("whole").collect();
        assert_eq!(
            slots,
            [as_bytes(&write(12)), as_bytes(&write(13))],
            "the filled slots only"
        );
        assert!(
            batch_slots(&as_bytes(&write(12))).is_none(),
            "a settled write is no batch"
        );
        assert!(
            matches!(decode(&bytes), Err(DecodeError::Batch { count: 2, .. })),
            "split, not decoded"
        );
        assert!(matches!(
            batch_slots(&bytes[..bytes.len() - 8]),
            Some(Err(DecodeError::Batch { .. }))
        ));
        batch.count = SETTLED_BATCH as u32 + 1;
        assert!(matches!(
            batch_slots(&as_bytes(&batch)),
            Some(Err(DecodeError::Batch { .. }))
        ));
        assert!(batch_slots(&bytes[..4]).is_none(), "shorter than a batch header");
    }

    #[test]
    fn steps_not_seen_are_left_out() {
        let r = WriteRecord {
            begin: event(RecordKind::Write),
            sync: step(50, 4096, 1),
            ..WriteRecord::default()
        };
        assert_eq!(write_events(&as_bytes(&r)).len(), 2);
        let mut bad = r;
        bad.sync.mechanism = 77;
        let mut steps = Vec::new();
        assert_eq!(
            decode_into(&as_bytes(&bad), &mut steps),
            Err(DecodeError::Mechanism(77))
        );
        assert!(steps.is_empty(), "a bad record leaves no steps behind");
    }

    fn stack_record(ret: i64, step: u32) -> StackRecord {
        let mut ips = [0u64; dio_trace_common::record::STACK_DEPTH];
        ips[..3].copy_from_slice(&[
            0xffff_ffff_8100_0010,
            0xffff_ffff_8100_0020,
            0xffff_ffff_8100_0030,
        ]);
        StackRecord {
            header: RecordHeader {
                kind: RecordKind::Stack as u32,
                mechanism: Mechanism::Kprobe as u32,
                ..RecordHeader::default()
            },
            dev: 1,
            step,
            ino: 9,
            step_ts: 77,
            ret,
            ips,
        }
    }

    #[test]
    fn a_stack_keeps_the_frames_the_kernel_wrote() {
        let d = decode(&as_bytes(&stack_record(16, RecordKind::SyncEnter as u32))).unwrap();
        assert_eq!(
            d,
            Decoded::Stack {
                dev: 1,
                ino: 9,
                step: RecordKind::SyncEnter,
                step_ts: 77,
                ips: Ok(vec![0xffff_ffff_8100_0010, 0xffff_ffff_8100_0020]),
            }
        );
        let failed = decode(&as_bytes(&stack_record(-14, RecordKind::SyncEnter as u32))).unwrap();
        assert!(matches!(failed, Decoded::Stack { ips: Err(-14), .. }));
        assert_eq!(
            decode(&as_bytes(&stack_record(16, 99))),
            Err(DecodeError::Kind(99))
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(decode(&[1, 2, 3]), Err(DecodeError::Short(3)));
        let mut b = as_bytes(&event(RecordKind::SyncEnter));
        b[0] = 99;
        assert_eq!(decode(&b), Err(DecodeError::Kind(99)));
        let b = as_bytes(&event(RecordKind::SyncEnter));
        assert!(matches!(decode(&b[..50]), Err(DecodeError::Size { .. })));
        let mut p = as_bytes(&event(RecordKind::WritePath));
        p.truncate(100);
        assert!(decode(&p).is_err());
    }
}
