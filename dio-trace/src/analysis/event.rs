//! Decoded records, independent of the wire layout and of the mechanism
//! that produced them.
//!
//! Every counted write makes a few of these, so they carry no heap memory
//! of their own: the command name is inline ([`Comm`]), names shared by
//! many writes (path, cgroup, caller) are reference-counted, and the rare
//! stack is boxed to keep the common event small to move.

use std::{borrow::Cow, sync::Arc};

use dio_trace_common::{
    fs::Fs,
    kind::RecordKind,
    probe::Mechanism,
    record::{EVENT_FS_MASK, EVENT_FS_SHIFT, EVENT_NEW_EXTENT, EVENT_NO_DISKSIZE, EVENT_SYNC},
};

/// One inode fact, as any backend reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: RecordKind,
    pub mechanism: Mechanism,
    pub ts_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub cpu: u32,
    /// Records of this inode the kernel could not send before this one.
    pub lost: u32,
    pub dev: u32,
    pub ino: u64,
    pub flags: u32,
    pub i_size: i64,
    pub i_disksize: i64,
    pub pos: i64,
    pub len: u64,
    pub arg: u64,
    pub comm: Comm,
    /// Symbolized `arg` for size updates (`ext4_dio_write_end_io+0x..`).
    pub caller: Option<Arc<str>>,
    /// The writer's cgroup v2 path (`WriteBegin` only), from the root of
    /// the cgroup2 mount, when the kernel sent it and it could be named.
    pub cgroup: Option<Arc<str>>,
    /// The kernel call stack at this event, when the kernel sent one
    /// (the sync, size update or completion of a write that is not
    /// ordered; every sync and size update with `--stacks`).
    pub stack: Option<Box<Stack>>,
}

/// A task's command name as the kernel keeps it (`TASK_COMM_LEN`, 16
/// bytes): inline and `Copy`, read as text only when a report shows it.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Comm {
    len: u8,
    bytes: [u8; 16],
}

impl Comm {
    /// The kernel's 16 bytes, up to their first NUL. Masked, not cut to
    /// length: a copy of variable length is a call to `memcpy` per write.
    pub fn new(b: &[u8; 16]) -> Self {
        let len = b.iter().position(|&c| c == 0).unwrap_or(16);
        let mask = u128::MAX.checked_shr(128 - 8 * len as u32).unwrap_or(0);
        Self {
            len: len as u8,
            bytes: (u128::from_le_bytes(*b) & mask).to_le_bytes(),
        }
    }

    /// As text, lossily as UTF-8 (the kernel cuts names at 15 bytes, also
    /// inside a character): borrowed unless a byte had to be replaced.
    pub fn as_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes[..self.len as usize])
    }
}

impl From<&str> for Comm {
    /// Its first 16 bytes.
    fn from(s: &str) -> Self {
        let mut b = [0; 16];
        let n = s.len().min(16);
        b[..n].copy_from_slice(&s.as_bytes()[..n]);
        Self::new(&b)
    }
}

impl PartialEq<&str> for Comm {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.as_str())
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.as_str(), f)
    }
}

impl serde::Serialize for Comm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

/// A kernel call stack, innermost frame first. Annotation only: no verdict
/// reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stack {
    pub frames: Vec<Frame>,
    /// The negative errno `bpf_get_stack` returned, when it could not walk
    /// the stack (then `frames` is empty).
    pub error: Option<i64>,
}

/// One return address, and its `name+0xoff [module]` when kernel symbols
/// could be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub addr: u64,
    pub symbol: Option<Arc<str>>,
}

impl Frame {
    /// The frame as reports show it: its symbol; with `raw` (or without a
    /// symbol and `raw`) the address too. `None`: nothing may be shown
    /// (no symbol, and raw addresses are off: KASLR).
    pub fn display(&self, raw: bool) -> Option<String> {
        match (&self.symbol, raw) {
            (Some(s), false) => Some(s.to_string()),
            (Some(s), true) => Some(format!("{:#x} {s}", self.addr)),
            (None, true) => Some(format!("{:#x}", self.addr)),
            (None, false) => None,
        }
    }
}

impl Event {
    /// Where the write this event belongs to ends (`WriteBegin` only).
    pub fn end(&self) -> i64 {
        self.pos.saturating_add(self.len as i64)
    }

    /// The on-disk size (`i_disksize` on ext4), if the kernel could read it.
    pub fn disksize(&self) -> Option<i64> {
        (self.flags & EVENT_NO_DISKSIZE == 0).then_some(self.i_disksize)
    }

    /// The filesystem of the write (`WriteBegin`): 0 in traces before
    /// format 3 means ext4; decoding refuses numbers it does not know.
    pub fn fs(&self) -> Fs {
        fs_in(self.flags)
    }

    /// Counted for going into new or unwritten blocks inside the file, not
    /// for extending it (`WriteBegin` only): it needs a sync, no size update.
    pub fn new_extent(&self) -> bool {
        new_extent_in(self.flags)
    }

    /// "sync" for O_SYNC/RWF_SYNC, "dsync" for O_DSYNC/RWF_DSYNC.
    pub fn sync_flavour(&self) -> &'static str {
        sync_flavour_in(self.flags)
    }

    /// Key the engine matches events by.
    pub fn key(&self) -> (u32, u64) {
        (self.dev, self.ino)
    }
}

/// What the engine consumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Event(Event),
    /// The path of an armed write's file; `None` when it could not be
    /// resolved.
    Path {
        dev: u32,
        ino: u64,
        path: Option<Arc<str>>,
    },
    /// The write open on this inode has said all it will (the kernel sent
    /// it whole and forgot it): judge it now.
    Done {
        dev: u32,
        ino: u64,
    },
    /// The kernel lost `records` records (ring buffer full) up to `ts_ns`:
    /// every write in flight may miss some of its events.
    Lost {
        records: u64,
        ts_ns: u64,
    },
}

/// The filesystem a write start's `EVENT_*` bits name (0: ext4, as in
/// traces before format 3). Also what the kernel's ordered-write counts
/// are keyed by (`collect::ordered`).
pub fn fs_in(flags: u32) -> Fs {
    Fs::from_u32((flags & EVENT_FS_MASK) >> EVENT_FS_SHIFT).unwrap_or(Fs::Ext4)
}

/// Counted for its new or unwritten blocks, not for extending the file.
pub fn new_extent_in(flags: u32) -> bool {
    flags & EVENT_NEW_EXTENT != 0
}

/// "sync" for O_SYNC/RWF_SYNC, "dsync" for O_DSYNC/RWF_DSYNC.
pub fn sync_flavour_in(flags: u32) -> &'static str {
    if flags & EVENT_SYNC != 0 { "sync" } else { "dsync" }
}

#[cfg(test)]
mod tests {
    use super::Comm;

    #[test]
    fn a_comm_ends_at_its_nul_and_reads_lossily() {
        let mut b = *b"psql\0garbage!!!!";
        assert_eq!(Comm::new(&b), "psql");
        b[5] = b'x';
        assert_eq!(
            Comm::new(&b),
            Comm::from("psql"),
            "bytes past the NUL are not part of it"
        );
        assert_eq!(Comm::new(b"sixteen-bytes-ok"), "sixteen-bytes-ok");
        assert_eq!(Comm::new(&[0; 16]), "");
        // Cut by the kernel inside a two-byte character.
        let mut cut = [0; 16];
        cut[..3].copy_from_slice(&[b'a', 0xc3, 0]);
        assert_eq!(Comm::new(&cut).to_string(), "a\u{fffd}");
    }

    // Found by `cargo xtask mutants` (issue 23): a comparison that always
    // matched, and a Debug that printed nothing.
    #[test]
    fn a_comm_equals_only_its_own_name_and_debugs_as_a_string() {
        assert!(Comm::from("psql") != "postgres");
        assert!(Comm::from("psql") != "psq");
        assert!(Comm::from("psql") == "psql");
        assert_eq!(format!("{:?}", Comm::from("psql")), "\"psql\"");
        assert_eq!(format!("{:>6}|", Comm::from("dd")), "    dd|");
    }
}
