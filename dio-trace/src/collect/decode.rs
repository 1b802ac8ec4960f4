//! Raw record bytes to typed records. Pure and total: any byte string gets
//! a record or an error, never a panic (trace files go through here too).

use dio_trace_common::{
    kind::RecordKind,
    probe::Mechanism,
    record::{InodeEvent, PathRecord, RecordHeader},
};
use thiserror::Error;

use crate::analysis::Event;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than a header")]
    Short(usize),
    #[error("unknown record kind {0}")]
    Kind(u32),
    #[error("unknown mechanism {0}")]
    Mechanism(u32),
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
    /// Dentry names, leaf first; `complete` when the walk reached the root.
    Path {
        dev: u32,
        ino: u64,
        tgid: u32,
        names: Vec<String>,
        complete: bool,
    },
}

fn pod<T: Copy>(bytes: &[u8], kind: &'static str) -> Result<T, DecodeError> {
    let want = std::mem::size_of::<T>();
    if bytes.len() < want {
        return Err(DecodeError::Size {
            kind,
            len: bytes.len(),
            want,
        });
    }
    // SAFETY: length checked; T is a #[repr(C)] record of integers and byte
    // arrays, for which every bit pattern is valid; read_unaligned copes
    // with any alignment of the source.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let header: RecordHeader = pod(bytes, "header").map_err(|_| DecodeError::Short(bytes.len()))?;
    let kind = RecordKind::from_u32(header.kind).ok_or(DecodeError::Kind(header.kind))?;
    let mechanism = Mechanism::from_u32(header.mechanism).ok_or(DecodeError::Mechanism(header.mechanism))?;
    if kind == RecordKind::WritePath {
        let r: PathRecord = pod(bytes, kind.name())?;
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
    let r: InodeEvent = pod(bytes, kind.name())?;
    Ok(Decoded::Event(Event {
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
        comm: c_str(&r.comm),
        caller: None,
    }))
}

/// Bytes up to the first NUL, lossily as UTF-8.
fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a repr(C) POD value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
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
            (e.kind, e.ino, e.comm.as_str(), e.ts_ns),
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
