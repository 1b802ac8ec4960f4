//! Trace files: what `dio-trace record` writes and `dio-trace check` reads.
//!
//! # Format (version [`dio_trace_common::FORMAT_VERSION`])
//!
//! ```text
//! magic    8 bytes  "DIOTRACE"
//! version  u32 LE   format version; readers refuse versions they do not know
//!                   (4 added the compact record of a write settled at its
//!                   sync; 3 added the filesystem and step kinds to
//!                   whole-write records, cgroup records and frames, and
//!                   stack records; 2 added whole-write records; 3, 2 and 1
//!                   are still read)
//! frames   ...      until the end frame
//! ```
//!
//! Each frame is `type: u8`, `len: u32 LE`, `len` bytes of payload, then
//! `crc: u32 LE`, the CRC-32 (IEEE) of type, len and payload, so a flipped
//! bit anywhere is caught rather than replayed as a different fact:
//!
//! | type | payload |
//! |---|---|
//! | 1 `HEADER` (first) | JSON [`Header`]: kernel release, dio-trace version, probes and the mechanism that served each, start time |
//! | 2 `RECORD` | one ring-buffer record, byte for byte as the kernel wrote it (layouts in `dio-trace-common`) |
//! | 3 `SYMBOL` | u64 LE address, then the UTF-8 name live tracing gave it (callers, stack frames) |
//! | 4 `PATH` | u32 LE dev, u64 LE ino, then the UTF-8 path (empty: unresolved) |
//! | 5 `LOST` | u64 LE records lost, u64 LE kernel time (ns) |
//! | 6 `END` (last) | JSON [`Trailer`]: final kernel counters, problems seen live |
//! | 7 `CGROUP` | u64 LE cgroup id, then the UTF-8 path from the cgroup2 root live tracing gave it (empty: unresolved) |
//!
//! Annotation frames (SYMBOL, PATH, CGROUP) come before the RECORD they annotate,
//! so a reader replays in one pass. A file without an END frame was cut
//! short and is refused: its writes may be incomplete.

pub mod reader;
pub mod writer;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"DIOTRACE";

pub const HEADER: u8 = 1;
pub const RECORD: u8 = 2;
pub const SYMBOL: u8 = 3;
pub const PATH: u8 = 4;
pub const LOST: u8 = 5;
pub const END: u8 = 6;
pub const CGROUP: u8 = 7;

/// Largest frame a reader accepts (a header with many probes is < 64 KiB).
pub const MAX_FRAME: u32 = 1 << 20;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format_version: u32,
    pub dio_trace_version: String,
    /// `uname -r` of the traced kernel.
    pub kernel: String,
    /// Seconds since the epoch when recording started.
    pub started_at: u64,
    /// Probe name -> "mechanism:target", or null when it did not attach.
    pub probes: BTreeMap<String, Option<String>>,
    /// What was traced (the command, or "watch").
    pub target: String,
    /// Why kernel addresses could not be named when recording (then the
    /// file has no SYMBOL frames), if so. Added in format 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbols_unreadable: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    /// Kernel counters at the end (`Counter::name` -> value).
    pub counters: BTreeMap<String, u64>,
    /// Problems live tracing found (probes that did not attach, ...).
    pub problems: Vec<String>,
    /// Program runs the kernel skipped, by probe ([`RunInfo::skipped`]);
    /// absent from traces written before it was kept.
    ///
    /// [`RunInfo::skipped`]: crate::report::RunInfo::skipped
    #[serde(default)]
    pub skipped: BTreeMap<String, u64>,
    pub ended_at: u64,
}
