//! Reading a trace file. Total: every malformed input is a [`TraceError`]
//! naming what is wrong and where, never a panic.

use std::io::Read;

use dio_trace_common::{FORMAT_VERSION, OLDEST_FORMAT_VERSION};
use thiserror::Error;

use super::{CGROUP, END, HEADER, Header, LOST, MAGIC, MAX_FRAME, PATH, RECORD, SYMBOL, Trailer};

#[derive(Debug, Error)]
pub enum TraceError {
    #[error("empty file: not a dio-trace trace")]
    Empty,
    #[error("not a dio-trace trace (no DIOTRACE signature)")]
    NotATrace,
    #[error(
        "trace format version {found}; this dio-trace reads versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}"
    )]
    Version { found: u32 },
    #[error("truncated at byte {at}: the recording was cut short (no end marker)")]
    Truncated { at: u64 },
    #[error("corrupt at byte {at}: {what}")]
    Corrupt { at: u64, what: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One frame, decoded as far as the container goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Record(Vec<u8>),
    Symbol {
        addr: u64,
        name: String,
    },
    Path {
        dev: u32,
        ino: u64,
        path: Option<String>,
    },
    Lost {
        records: u64,
        ts_ns: u64,
    },
    Cgroup {
        id: u64,
        path: Option<String>,
    },
}

/// A whole trace, read and checked.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub header: Header,
    pub frames: Vec<Frame>,
    pub trailer: Trailer,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn at(&self) -> u64 {
        self.pos as u64
    }
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

fn u64_le(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

pub fn read(mut input: impl Read) -> Result<Trace, TraceError> {
    let mut data = Vec::new();
    input.read_to_end(&mut data)?;
    parse(&data)
}

pub fn parse(data: &[u8]) -> Result<Trace, TraceError> {
    if data.is_empty() {
        return Err(TraceError::Empty);
    }
    let mut c = Cursor { data, pos: 0 };
    match c.take(MAGIC.len()) {
        Some(m) if m == MAGIC => {}
        _ => return Err(TraceError::NotATrace),
    }
    let version = c
        .take(4)
        .map(u32_le)
        .ok_or(TraceError::Truncated { at: c.at() })?;
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(TraceError::Version { found: version });
    }
    let mut trace = Trace::default();
    let mut seen_header = false;
    loop {
        let at = c.at();
        let Some(head) = c.take(5) else {
            return Err(TraceError::Truncated { at });
        };
        let (kind, len) = (head[0], u32_le(&head[1..]));
        if len > MAX_FRAME {
            return Err(TraceError::Corrupt {
                at,
                what: format!("frame of {len} bytes"),
            });
        }
        let payload = c.take(len as usize).ok_or(TraceError::Truncated { at })?;
        let crc = c.take(4).map(u32_le).ok_or(TraceError::Truncated { at })?;
        let corrupt = |what: &str| TraceError::Corrupt {
            at,
            what: what.to_owned(),
        };
        let mut h = crc32fast::Hasher::new();
        h.update(head);
        h.update(payload);
        if h.finalize() != crc {
            return Err(corrupt("checksum mismatch"));
        }
        if !seen_header && kind != HEADER {
            return Err(corrupt("the first frame is not the header"));
        }
        match kind {
            HEADER if !seen_header => {
                trace.header =
                    serde_json::from_slice(payload).map_err(|e| corrupt(&format!("header: {e}")))?;
                seen_header = true;
            }
            RECORD => trace.frames.push(Frame::Record(payload.to_vec())),
            SYMBOL if payload.len() >= 8 => trace.frames.push(Frame::Symbol {
                addr: u64_le(payload),
                name: String::from_utf8_lossy(&payload[8..]).into_owned(),
            }),
            PATH if payload.len() >= 12 => {
                let path = String::from_utf8_lossy(&payload[12..]).into_owned();
                trace.frames.push(Frame::Path {
                    dev: u32_le(payload),
                    ino: u64_le(&payload[4..]),
                    path: (!path.is_empty()).then_some(path),
                });
            }
            CGROUP if payload.len() >= 8 => {
                let path = String::from_utf8_lossy(&payload[8..]).into_owned();
                trace.frames.push(Frame::Cgroup {
                    id: u64_le(payload),
                    path: (!path.is_empty()).then_some(path),
                });
            }
            LOST if payload.len() >= 16 => trace.frames.push(Frame::Lost {
                records: u64_le(payload),
                ts_ns: u64_le(&payload[8..]),
            }),
            END => {
                trace.trailer =
                    serde_json::from_slice(payload).map_err(|e| corrupt(&format!("end marker: {e}")))?;
                if c.at() != data.len() as u64 {
                    return Err(TraceError::Corrupt {
                        at: c.at(),
                        what: "data after the end marker".into(),
                    });
                }
                return Ok(trace);
            }
            other => return Err(corrupt(&format!("unknown or malformed frame type {other}"))),
        }
    }
}
